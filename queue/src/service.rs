//! The start-up every daemon shares (Postfix's skeleton servers): parse
//! `-c DIR -n service -t type -o name=value -v`, load and validate the
//! configuration (a bad configuration is fatal, with every problem logged),
//! set up logging as `$syslog_name/<program>`, take the listening sockets the
//! supervisor opened (`POSTERN_LISTEN_FDS=n`, descriptors 3 .. 3+n), when
//! started as root drop privileges to `mail_owner` for good, and forbid
//! core dumps.

use crate::layout::Queue;
use conf::{Config, Origin};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Environment variable with the number of inherited listening sockets.
pub const LISTEN_FDS_ENV: &str = "POSTERN_LISTEN_FDS";

/// Environment variable with the pid of the supervisor that started the
/// daemon (see [`follow_supervisor`]).
pub const MASTER_PID_ENV: &str = "POSTERN_MASTER_PID";

/// Command-line arguments of a daemon.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// Configuration directory.
    pub config_dir: PathBuf,
    /// master.cf service name (`smtp`, `relay`, `127.0.0.1:2525`, ...).
    pub service: String,
    /// master.cf service type (`unix`, `inet`, ...).
    pub kind: String,
    /// `-o name=value` overrides.
    pub overrides: Vec<(String, String, Origin)>,
    /// `-v`: verbose logging.
    pub verbose: bool,
    /// Remaining arguments.
    pub rest: Vec<String>,
}

/// Parses daemon arguments.
///
/// # Errors
/// An unknown option or a missing value, described in words.
pub fn parse_args(program: &str, argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        service: program.to_string(),
        kind: "unix".into(),
        ..Args::default()
    };
    let mut cfg_dir: Option<PathBuf> = None;
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        let mut value = |flag: &str| -> Result<String, String> {
            i += 1;
            argv.get(i)
                .cloned()
                .ok_or_else(|| format!("option {flag} needs a value"))
        };
        match arg.as_str() {
            "-c" => cfg_dir = Some(PathBuf::from(value("-c")?)),
            "-n" => a.service = value("-n")?,
            "-t" => a.kind = value("-t")?,
            "-o" => {
                let v = value("-o")?;
                let (n, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("-o {v}: expected name=value"))?;
                a.overrides.push((
                    n.trim().to_string(),
                    val.trim().to_string(),
                    Origin::CommandLine,
                ));
            }
            "-v" => a.verbose = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => a.rest.push(s.to_string()),
        }
        i += 1;
    }
    a.config_dir = conf::config_dir(cfg_dir.as_deref());
    Ok(a)
}

/// A started daemon: its arguments, configuration, queue and sockets.
#[derive(Debug)]
pub struct Started {
    /// Arguments.
    pub args: Args,
    /// The validated configuration (main.cf plus the service's overrides).
    pub cfg: Config,
    /// The queue directory.
    pub queue: Queue,
    /// Listening sockets handed over by the supervisor, in master.cf order.
    pub listeners: Vec<OwnedFd>,
}

/// Starts a daemon: arguments, configuration, logging, sockets, privileges.
/// Exits with status 1 (logging why) when the configuration is bad or
/// privileges cannot be dropped.
pub fn start(program: &str) -> Started {
    start_with_ident(program, false, |_| ()).0
}

/// Like [`start`], but runs `before_drop` with the configuration while the
/// process still has the privileges it was started with (root, under
/// `postern start`): smtpd loads its TLS key there, as Postfix does, so
/// the key may stay readable by root only.
pub fn start_with<T>(program: &str, before_drop: impl FnOnce(&Config) -> T) -> (Started, T) {
    start_with_ident(program, false, before_drop)
}

/// Like [`start`], but a delivery agent logs as its master.cf service name
/// (`postern/relay`, `postern/maildir`), as Postfix's agents do.
pub fn start_agent(program: &str) -> Started {
    start_agent_with(program, |_| ()).0
}

/// [`start_agent`] with `before_drop` run before privileges are dropped,
/// as [`start_with`]: the SMTP client loads its TLS client key there
/// (`smtp_tls_key_file` may stay readable by root only, as in Postfix).
pub fn start_agent_with<T>(program: &str, before_drop: impl FnOnce(&Config) -> T) -> (Started, T) {
    start_with_ident(program, true, before_drop)
}

fn start_with_ident<T>(
    program: &str,
    ident_is_service: bool,
    before_drop: impl FnOnce(&Config) -> T,
) -> (Started, T) {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(program, &argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{program}: fatal: {e}");
            std::process::exit(1);
        }
    };
    let cfg = match conf::load(&args.config_dir, &args.overrides) {
        Ok(c) => c,
        Err(errs) => {
            // Logging is not set up yet: use the defaults' syslog name so
            // the admin still finds the reason in the mail log.
            let d = Config::defaults();
            crate::log::init(&d, program, crate::log::Options::default());
            for e in &errs.0 {
                crate::log::log(crate::log::Level::Error, &e.to_string());
            }
            crate::log::fatal(
                1,
                &format!(
                    "{}: configuration errors; fix them (postern check lists them all)",
                    args.config_dir.join("main.cf").display()
                ),
            );
        }
    };
    let ident = if ident_is_service {
        args.service.clone()
    } else {
        program.to_string()
    };
    crate::log::init(
        &cfg,
        &ident,
        crate::log::Options {
            stderr_name: None,
            verbose_stderr: false,
        },
    );
    let listeners = take_listeners();
    let early = before_drop(&cfg);
    if let Err(e) = drop_privileges(&cfg) {
        crate::log::fatal(1, &e);
    }
    // After the privilege drop: changing credentials clears the setting.
    follow_supervisor();
    forbid_core_dumps();
    let queue = Queue::new(&cfg.queue_directory);
    (
        Started {
            args,
            cfg,
            queue,
            listeners,
        },
        early,
    )
}

/// Makes a daemon stop (SIGTERM, its ordinary graceful stop) when the
/// supervisor that started it dies, as Postfix's daemons exit on "master
/// disconnect". Without this, a supervisor killed with SIGKILL (OOM killer,
/// `kill -9`, a crash) left its daemons running: the next `postern start`
/// could not bind the smtpd ports and, worse, replaced the qmgr and pickup
/// wake-up sockets under the orphans' feet, or ran a second queue manager
/// beside the old one. A daemon not started by the supervisor
/// ([`MASTER_PID_ENV`] unset) is left alone.
///
/// Must run after [`drop_privileges`]: the kernel clears the parent-death
/// signal when the credentials change. The supervisor may already have died
/// before the signal was armed; then the parent is no longer the pid it
/// passed, and the daemon exits at once (it has done nothing yet).
pub fn follow_supervisor() {
    let Some(master) = std::env::var(MASTER_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: only this process runs at start-up; the variable is ours.
    unsafe { std::env::remove_var(MASTER_PID_ENV) };
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) };
    if r != 0 {
        crate::log::warning(&format!(
            "cannot follow the supervisor (prctl PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    if nix::unistd::getppid().as_raw() != master {
        crate::log::info(&format!(
            "the supervisor (pid {master}) has gone away -- exiting"
        ));
        std::process::exit(0);
    }
}

/// Marks the process not dumpable (`PR_SET_DUMPABLE` 0): no core file, no
/// ptrace by the same user, the files in /proc/PID owned by root. The
/// daemons hold relay passwords, OAuth2 tokens and TLS keys in memory.
/// Started by root they lose dumpability anyway when they switch to
/// `mail_owner`; started by an ordinary user (the embedded default) they
/// would otherwise keep it, and a crash with core dumps enabled would write
/// those secrets to disk.
/// A failure is logged and start-up goes on.
pub fn forbid_core_dumps() {
    // SAFETY: prctl(PR_SET_DUMPABLE) with a valid value; no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) };
    if r != 0 {
        crate::log::warning(&format!(
            "cannot disable core dumps (prctl PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// Takes the descriptors named by `POSTERN_LISTEN_FDS` and clears the variable.
pub fn take_listeners() -> Vec<OwnedFd> {
    let n: i32 = std::env::var(LISTEN_FDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: only this process runs at start-up; the variable is ours.
    unsafe { std::env::remove_var(LISTEN_FDS_ENV) };
    (0..n.clamp(0, 64))
        .filter_map(|i| {
            let fd = 3 + i;
            // SAFETY: the supervisor passed these descriptors open; fcntl
            // checks that each is valid before we take ownership.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return None;
            }
            // SAFETY: fd is open and owned by nobody else in this process.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// The uid and gid of `mail_owner`.
///
/// # Errors
/// The account does not exist or is root.
pub fn mail_owner_ids(cfg: &Config) -> Result<(u32, u32), String> {
    let user = nix::unistd::User::from_name(&cfg.mail_owner)
        .map_err(|e| format!("mail_owner {}: {e}", cfg.mail_owner))?
        .ok_or_else(|| {
            format!(
                "mail_owner {}: no such user; create the account (useradd --system {}) or set mail_owner in main.cf",
                cfg.mail_owner, cfg.mail_owner
            )
        })?;
    if user.uid.is_root() {
        return Err(format!(
            "mail_owner {} must not be a privileged account (uid 0)",
            cfg.mail_owner
        ));
    }
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// When running as root, switches irrevocably to `mail_owner` (supplementary
/// groups, gid, uid). An ordinary user stays who they are.
///
/// # Errors
/// The account is missing or the switch fails.
pub fn drop_privileges(cfg: &Config) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let (uid, gid) = mail_owner_ids(cfg)?;
    let gid = nix::unistd::Gid::from_raw(gid);
    let uid = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid: {e}"))?;
    if nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err("privileges could not be dropped for good".into());
    }
    Ok(())
}

/// Loads the configuration for a command run by a user or an admin
/// (sendmail, postqueue, postsuper, postcat). A bad value does not stop the
/// command: it is reported on stderr and replaced by its default, so that a
/// typo in an unrelated parameter never makes sendmail refuse a message and
/// the queue tools keep working while the admin fixes main.cf. An
/// unreadable main.cf is fatal: the error is printed and `Err(exit status)`
/// returned (`unreadable_status`, e.g. 75 for sendmail so callers retry).
///
/// # Errors
/// main.cf cannot be read or parsed.
pub fn load_for_command(
    prog: &str,
    dir: &std::path::Path,
    unreadable_status: i32,
) -> Result<Config, i32> {
    match conf::load_lenient(dir, &[]) {
        Ok((cfg, warnings)) => {
            for w in &warnings.0 {
                eprintln!("{prog}: warning: {w}; using the default");
            }
            Ok(cfg)
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{prog}: fatal: {e}");
            }
            Err(unreadable_status)
        }
    }
}

/// Finds another postern program: in `dir_param` (daemon_directory or
/// command_directory) when it is set in main.cf, else beside the running
/// executable (a build tree or an installed tree), else in the default
/// directory. Returns the path and the argv[0] to use: commands that are
/// links to one binary (postqueue → postern, mailq → sendmail) are run as
/// that binary with the command's name as argv[0].
pub fn locate_program(cfg: &Config, dir_param: &str, name: &str) -> (PathBuf, String) {
    let aliases: &[(&str, &str)] = &[
        ("postqueue", "postern"),
        ("postsuper", "postern"),
        ("postconf", "postern"),
        ("postcat", "postern"),
        ("postmap", "postern"),
        ("postalias", "postern"),
        ("mailq", "sendmail"),
        ("newaliases", "sendmail"),
    ];
    let target = aliases.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let mut dirs: Vec<PathBuf> = Vec::new();
    if cfg.resolver.is_set(dir_param) {
        if let Some(d) = cfg.get(dir_param) {
            dirs.push(PathBuf::from(d));
        }
    } else {
        if let Ok(exe) = std::env::current_exe()
            && let Some(d) = exe.parent()
        {
            dirs.push(d.to_path_buf());
        }
        if let Some(d) = cfg.get(dir_param) {
            dirs.push(PathBuf::from(d));
        }
    }
    for d in &dirs {
        let p = d.join(name);
        if p.exists() {
            return (p, name.to_string());
        }
        if let Some(t) = target {
            let p = d.join(t);
            if p.exists() {
                return (p, name.to_string());
            }
        }
    }
    let d = dirs
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/usr/sbin"));
    (d.join(name), name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let argv: Vec<String> = [
            "-n",
            "relay",
            "-t",
            "unix",
            "-o",
            "syslog_name=postern/relay",
            "-v",
            "-c",
            "/tmp/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = parse_args("smtp", &argv).unwrap();
        assert_eq!(a.service, "relay");
        assert_eq!(a.overrides[0].0, "syslog_name");
        assert_eq!(a.overrides[0].1, "postern/relay");
        assert!(a.verbose);
        assert_eq!(a.config_dir, PathBuf::from("/tmp/x"));
        assert!(parse_args("smtp", &["-x".to_string()]).is_err());
        assert!(parse_args("smtp", &["-o".to_string()]).is_err());
    }
}

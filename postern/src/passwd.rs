//! `postern passwd add|delete|list|check`: the users that may log in to
//! smtpd with SMTP AUTH, kept in `smtpd_sasl_password_file`
//! ([`conf::passwd`]). smtpd notices changes by itself (it looks at the
//! file at most once a second), so no reload is needed.

use conf::passwd::{self, Users};
use proto::sasl::Secret;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

const USAGE: &str =
    "usage: postern [-c config_dir] passwd add USER | delete USER | list | check USER";

/// One `postern passwd` command.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Add(String),
    Delete(String),
    List,
    Check(String),
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let user = |verb: &str| -> Result<String, String> {
        match args {
            [_, u] => {
                passwd::check_user_name(u).map_err(|e| format!("passwd {verb}: {e}"))?;
                Ok(u.clone())
            }
            [_] => Err(format!("passwd {verb}: no user name given")),
            _ => Err(format!("passwd {verb}: too many arguments")),
        }
    };
    match args.first().map(String::as_str) {
        Some("add") => user("add").map(Cmd::Add),
        Some("delete") => user("delete").map(Cmd::Delete),
        Some("check") => user("check").map(Cmd::Check),
        Some("list") if args.len() == 1 => Ok(Cmd::List),
        Some("list") => Err("passwd list: too many arguments".into()),
        Some(other) => Err(format!("passwd: unknown command: {other}")),
        None => Err("passwd: no command given".into()),
    }
}

/// Runs `postern passwd ARGS` on the configuration in `dir`; returns the
/// exit status (`check`: 0 when the password is right, 1 when not).
pub fn main(dir: &Path, args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let cfg = match queue::service::load_for_command("postern", dir, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.smtpd_sasl_password_file.is_empty() {
        eprintln!("postern: fatal: smtpd_sasl_password_file is empty");
        return 1;
    }
    let path = PathBuf::from(&cfg.smtpd_sasl_password_file);
    let result = match cmd {
        Cmd::Add(user) => {
            read_password(&user, true).and_then(|pw| add(&cfg, dir, &path, &user, &pw))
        }
        Cmd::Delete(user) => delete(&path, &user),
        Cmd::List => list(&path),
        Cmd::Check(user) => load(&path).and_then(|(users, _)| {
            let pw = read_password(&user, false)?;
            Ok(check(&users, &path, &user, &pw))
        }),
    };
    match result {
        Ok(code) => {
            if path.exists()
                && let Err(e) = passwd::check_permissions(&path, readers_gid(&cfg))
            {
                eprintln!("postern: warning: {e}");
            }
            code
        }
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            1
        }
    }
}

/// The group that may read the file: as root, `mail_owner`'s (smtpd reads
/// it after dropping privileges); otherwise the file is the user's own.
fn mail_owner_group(cfg: &conf::Config) -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    match queue::service::mail_owner_ids(cfg) {
        Ok((_, gid)) => Some(gid),
        Err(e) => {
            eprintln!(
                "postern: warning: {e}; the user file is readable by root only, and smtpd (running as mail_owner) cannot read it until you run chown root:<mail_owner's group> and chmod 640 on it"
            );
            None
        }
    }
}

/// The group [`passwd::check_permissions`] accepts for reading.
fn readers_gid(cfg: &conf::Config) -> Option<u32> {
    if nix::unistd::geteuid().is_root() {
        queue::service::mail_owner_ids(cfg).ok().map(|(_, g)| g)
    } else {
        Some(nix::unistd::getegid().as_raw())
    }
}

/// `-c DIR ` for commands to suggest, or nothing for the default directory.
pub fn dash_c(dir: &Path) -> String {
    if dir == Path::new(conf::DEFAULT_CONFIG_DIR) {
        String::new()
    } else {
        format!("-c {} ", dir.display())
    }
}

fn add(
    cfg: &conf::Config,
    dir: &Path,
    path: &Path,
    user: &str,
    password: &Secret,
) -> Result<i32, String> {
    if password.expose().is_empty() {
        return Err("the password is empty".into());
    }
    let p = path.display();
    if std::fs::symlink_metadata(path).is_err() {
        let group = mail_owner_group(cfg);
        passwd::create_file(path, group).map_err(|e| format!("cannot create {p}: {e}"))?;
        match group {
            Some(_) => println!(
                "postern passwd: created {p} (mode 0640, owner root, group of mail_owner {})",
                cfg.mail_owner
            ),
            None => println!("postern passwd: created {p} (mode 0600)"),
        }
    }
    let added = passwd::set_user(path, user, password.expose()).map_err(|e| format!("{p}: {e}"))?;
    if added {
        println!("postern passwd: added user {user} to {p}");
    } else {
        println!("postern passwd: changed the password of {user} in {p}");
    }
    if cfg.smtpd_sasl_auth_enable {
        println!("postern passwd: smtpd reads the change by itself; no postern reload is needed");
    } else {
        let c = dash_c(dir);
        println!(
            "postern passwd: AUTH is off; turn it on with: postconf {c}-e smtpd_sasl_auth_enable=yes && postern {c}reload"
        );
    }
    Ok(0)
}

fn delete(path: &Path, user: &str) -> Result<i32, String> {
    let p = path.display();
    if passwd::remove_user(path, user).map_err(|e| format!("{p}: {e}"))? {
        println!("postern passwd: removed user {user} from {p}");
        Ok(0)
    } else {
        eprintln!("postern passwd: no user {user} in {p}");
        Ok(1)
    }
}

/// Loads the file; bad lines are printed as warnings.
fn load(path: &Path) -> Result<(Users, bool), String> {
    let (users, errors) = Users::load_lenient(path).map_err(|e| e.to_string())?;
    for e in &errors {
        eprintln!("postern: warning: {e}");
    }
    Ok((users, errors.is_empty()))
}

fn list(path: &Path) -> Result<i32, String> {
    let (users, clean) = load(path)?;
    let mut out = std::io::stdout().lock();
    for name in users.names() {
        let _ = writeln!(out, "{name}");
    }
    Ok(if clean { 0 } else { 1 })
}

fn check(users: &Users, path: &Path, user: &str, password: &Secret) -> i32 {
    if !users.contains(user) {
        eprintln!("postern passwd: no user {user} in {}", path.display());
        return 1;
    }
    if users.verify(user, password.expose()) {
        println!("postern passwd: the password of {user} is correct");
        0
    } else {
        eprintln!("postern passwd: wrong password for {user}");
        1
    }
}

/// Reads a password: from the terminal without echo when standard input is
/// one (twice when `confirm`), else the first line of standard input.
fn read_password(user: &str, confirm: bool) -> Result<Secret, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        if line.is_empty() {
            return Err("no password on standard input".into());
        }
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        return Ok(Secret::new(line));
    }
    let first = tty::read_hidden(&format!("Password for {user}: "))
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if confirm {
        let again = tty::read_hidden("Retype the password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the passwords do not match; nothing changed".into());
        }
    }
    Ok(first)
}

/// Reading from the terminal with echo off.
mod tty {
    use proto::sasl::Secret;
    use std::io::{BufRead, Write};
    use std::sync::OnceLock;

    /// The terminal settings to restore if a signal ends the program while
    /// echo is off.
    static SAVED: OnceLock<libc::termios> = OnceLock::new();

    extern "C" fn restore_and_die(sig: libc::c_int) {
        if let Some(t) = SAVED.get() {
            // SAFETY: tcsetattr, signal and raise are async-signal-safe; t
            // is a fully initialised termios that is never written again.
            unsafe {
                libc::tcsetattr(0, libc::TCSAFLUSH, t);
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
    }

    /// Restores the terminal when reading ends, however it ends.
    struct Restore(libc::termios);

    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: fd 0 is the terminal whose settings were saved in self.0.
            unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &self.0) };
        }
    }

    /// Prompts on standard error and reads one line from the terminal on
    /// standard input with echo off.
    pub fn read_hidden(prompt: &str) -> std::io::Result<Secret> {
        // SAFETY: termios is plain data; tcgetattr fills it in on success.
        let mut old: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open; old is valid for writing.
        if unsafe { libc::tcgetattr(0, &mut old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = *SAVED.get_or_init(|| old);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: restore_and_die only makes async-signal-safe calls; a
            // signal the caller ignores (nohup) stays ignored.
            unsafe {
                let handler = restore_and_die as *const () as libc::sighandler_t;
                if libc::signal(sig, handler) == libc::SIG_IGN {
                    libc::signal(sig, libc::SIG_IGN);
                }
            }
        }
        let mut quiet = old;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        // SAFETY: fd 0 is a terminal; quiet is a valid termios.
        if unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _restore = Restore(saved);
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "end of input",
            ));
        }
        let end = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(end);
        Ok(Secret::new(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_commands() {
        assert_eq!(
            parse(&args(&["add", "scanner@contoso.com"])),
            Ok(Cmd::Add("scanner@contoso.com".into()))
        );
        assert_eq!(parse(&args(&["delete", "u"])), Ok(Cmd::Delete("u".into())));
        assert_eq!(parse(&args(&["check", "u"])), Ok(Cmd::Check("u".into())));
        assert_eq!(parse(&args(&["list"])), Ok(Cmd::List));
        for bad in [
            &["add"][..],
            &["add", "a", "b"],
            &["add", "a:b"],
            &["add", "a b"],
            &["add", "#a"],
            &["delete"],
            &["check"],
            &["list", "x"],
            &["frobnicate"],
            &[],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    /// A configuration directory whose user file is `dir/users`; as root,
    /// mail_owner is nobody, which exists everywhere.
    fn setup(dir: &Path) -> PathBuf {
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "smtpd_sasl_password_file = {}/users\nmail_owner = nobody\n",
                dir.display()
            ),
        )
        .unwrap();
        dir.join("users")
    }

    #[test]
    fn add_check_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = setup(dir.path());
        let cfg = conf::load(dir.path(), &[]).unwrap();
        let pw = Secret::new("correct horse");
        assert_eq!(add(&cfg, dir.path(), &path, "app@contoso.com", &pw), Ok(0));
        let m = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        if nix::unistd::geteuid().is_root() {
            // Readable by mail_owner's group, as smtpd needs.
            let (_, gid) = queue::service::mail_owner_ids(&cfg).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, gid, 0o640));
        } else {
            assert_eq!(m.mode() & 0o7777, 0o600);
        }
        assert!(passwd::check_permissions(&path, readers_gid(&cfg)).is_ok());
        assert_eq!(
            add(&cfg, dir.path(), &path, "app@contoso.com", &Secret::new("")),
            Err("the password is empty".into())
        );
        let users = load(&path).unwrap().0;
        assert_eq!(check(&users, &path, "app@contoso.com", &pw), 0);
        assert_eq!(
            check(&users, &path, "app@contoso.com", &Secret::new("wrong")),
            1
        );
        assert_eq!(check(&users, &path, "other", &pw), 1);
        assert_eq!(
            add(
                &cfg,
                dir.path(),
                &path,
                "app@contoso.com",
                &Secret::new("new")
            ),
            Ok(0)
        );
        let users = load(&path).unwrap().0;
        assert_eq!(check(&users, &path, "app@contoso.com", &pw), 1);
        assert_eq!(
            check(&users, &path, "app@contoso.com", &Secret::new("new")),
            0
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# postern SMTP AUTH users"), "{text}");
        assert!(
            !text.contains("correct horse") && !text.contains(":new"),
            "{text}"
        );
    }

    #[test]
    fn delete_list_check_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let users = setup(dir.path());
        assert_eq!(main(dir.path(), &args(&["list"])), 1, "missing file");
        assert_eq!(main(dir.path(), &args(&["delete", "u"])), 1);
        assert!(!users.exists(), "delete does not create the file");
        passwd::create_file(&users, None).unwrap();
        passwd::set_user(&users, "u", "pw").unwrap();
        assert_eq!(main(dir.path(), &args(&["list"])), 0);
        assert_eq!(main(dir.path(), &args(&["delete", "u"])), 0);
        assert!(passwd::Users::load(&users).unwrap().is_empty());
        assert_eq!(main(dir.path(), &args(&["bogus"])), 64);
    }
}

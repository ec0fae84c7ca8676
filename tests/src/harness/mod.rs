//! Running the real postern programs in a temporary installation.
//!
//! [`TestEnv::new`] makes a temporary directory with `etc/` (main.cf and
//! master.cf from a baseline plus the test's settings), `pki/` (a
//! [`TestPki`]), `spool/` (queue_directory, created by `postern start`) and
//! `maillog` (maillog_file). [`TestEnv::start`] runs `postern -c etc
//! start-fg` and waits for the supervisor's and the queue manager's
//! start-up lines in the log; [`TestEnv::stop`] stops it; dropping the
//! environment kills whatever is left and removes the directory (kept when
//! `POSTERN_TEST_KEEP` is set).
//!
//! Binaries are found by [`bin_dir`]; the daemons' account by
//! [`mail_owner`] (see [`owner`] for the root case).

pub mod faults;
mod log;
pub mod owner;
pub mod process;
pub mod secrets;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub use log::{LogMark, Pattern, re};
pub use owner::{Owner, mail_owner, running_as_root};
pub use process::{Output, bin_dir, binary, binary_for, command};

use crate::ca::TestPki;
use crate::fake::{FakeConfig, FakeSmartHost, FakeTokenEndpoint};

/// How long `start()` waits for the daemons.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop()` waits for the supervisor to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command (sendmail, postqueue, ...) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The mailbox [`TestEnv::office365_fake`] authenticates as.
pub const TEST_USER: &str = "scanner@contoso.test";
/// Its password.
pub const TEST_PASSWORD: &str = "Scanner-Pa55word";

/// The Entra ID tenant of [`TestEnv::office365_xoauth2_fake`].
pub const OAUTH2_TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// Its application (client) ID.
pub const OAUTH2_APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// Its client secret.
pub const OAUTH2_SECRET: &str = "s3cr3t~Q8.client-secret-value_0123456789";

/// The daemons the baseline master.cf runs (besides the supervisor).
pub const DAEMONS: &[&str] = &["pickup", "qmgr", "smtp"];

/// The baseline master.cf services.
pub const BASELINE_MASTER_CF: &[&str] = &[
    "pickup    unix  n       -       n       60      1       pickup",
    "qmgr      unix  n       -       n       300     1       qmgr",
    "smtp      unix  -       -       n       -       -       smtp",
    "relay     unix  -       -       n       -       -       smtp",
    "maildir   unix  -       -       n       -       -       smtp",
];

/// A temporary postern installation. See the [module docs](self).
pub struct TestEnv {
    tmp: Option<tempfile::TempDir>,
    /// The temporary directory.
    pub root: PathBuf,
    /// The configuration directory (`-c`, `MAIL_CONFIG`).
    pub etc: PathBuf,
    /// `queue_directory`.
    pub spool: PathBuf,
    /// `maillog_file`.
    pub maillog: PathBuf,
    /// The test CA and server certificate (in `<root>/pki`).
    pub pki: TestPki,
    /// The account the daemons run as.
    pub owner: Owner,
    bin_dir: PathBuf,
    main_cf: Vec<(String, String)>,
    master_cf: Vec<String>,
    env: Vec<(String, String)>,
    daemon: Option<Child>,
    /// Process groups of supervisors killed with SIGKILL, whose daemons
    /// may still run.
    orphans: Vec<i32>,
    /// What must never show in a log, output or core file ([`secrets`]).
    secrets: secrets::Registry,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("root", &self.root)
            .field("running", &self.daemon.is_some())
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// Creates the directory, the PKI and the baseline configuration:
    ///
    /// ```text
    /// queue_directory = <root>/spool        maillog_file = <root>/maillog
    /// myhostname = relay.test.example       mydestination =
    /// inet_protocols = ipv4
    /// mail_owner = <see owner>              alias_maps =   alias_database =
    /// daemon_directory = command_directory = <bin_dir>
    /// minimal_backoff_time = 1s  maximal_backoff_time = 4s  queue_run_delay = 1s
    /// smtp_tls_CAfile = <root>/pki/ca.pem
    /// ```
    ///
    /// No `relayhost` yet: see [`TestEnv::use_relayhost`].
    ///
    /// # Errors
    /// File, PKI or account errors.
    pub fn new() -> Result<TestEnv> {
        let tmp = tempfile::Builder::new()
            .prefix("postern-test-")
            .tempdir()
            .context("create the test directory")?;
        let root = tmp.path().to_path_buf();
        // The daemons may run as another user: they must reach everything.
        chmod(&root, 0o755)?;
        let etc = root.join("etc");
        std::fs::create_dir(&etc).context("create etc")?;
        chmod(&etc, 0o755)?;
        let pki = TestPki::create(&root.join("pki"))?;
        chmod(&root.join("pki"), 0o755)?;
        let owner = mail_owner()?;
        let maillog = root.join("maillog");
        File::create(&maillog).context("create the maillog")?;
        chmod(&maillog, 0o644)?;
        if running_as_root() {
            std::os::unix::fs::chown(&maillog, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
                .context("chown the maillog")?;
        }
        let bin_dir = bin_dir()?;
        let spool = root.join("spool");
        let p = |p: &Path| p.display().to_string();
        let main_cf = [
            ("queue_directory", p(&spool)),
            ("data_directory", p(&root.join("data"))),
            ("maillog_file", p(&maillog)),
            ("myhostname", "relay.test.example".into()),
            ("inet_protocols", "ipv4".into()),
            ("mydestination", String::new()),
            ("mail_owner", owner.name.clone()),
            ("alias_maps", String::new()),
            ("alias_database", String::new()),
            ("daemon_directory", p(&bin_dir)),
            ("command_directory", p(&bin_dir)),
            ("minimal_backoff_time", "1s".into()),
            ("maximal_backoff_time", "4s".into()),
            ("queue_run_delay", "1s".into()),
            ("smtp_tls_CAfile", p(pki.ca_file())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let env = TestEnv {
            tmp: Some(tmp),
            root,
            etc,
            spool,
            maillog,
            pki,
            owner,
            bin_dir,
            main_cf,
            master_cf: BASELINE_MASTER_CF.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            daemon: None,
            orphans: Vec::new(),
            secrets: secrets::Registry::default(),
        };
        env.write_config()?;
        Ok(env)
    }

    /// Starts an Exchange Online fake with this environment's server
    /// certificate and the user [`TEST_USER`]/[`TEST_PASSWORD`], and points
    /// postern at it ([`TestEnv::use_relayhost`]).
    ///
    /// # Errors
    /// The fake cannot start or the configuration cannot be written.
    pub fn office365_fake(&mut self) -> Result<FakeSmartHost> {
        let cfg = FakeConfig::office365(&self.pki.server).user(TEST_USER, TEST_PASSWORD);
        let fake = FakeSmartHost::spawn(cfg)?;
        self.use_relayhost(&fake)?;
        Ok(fake)
    }

    /// Starts an Exchange Online fake that takes XOAUTH2 tokens of `ep`
    /// for the application [`OAUTH2_APP`] (registered there with
    /// [`OAUTH2_SECRET`]), and points postern at it: [`TestEnv::use_relayhost`]
    /// with [`TEST_USER`] signing in by XOAUTH2 only, the client secret in
    /// `etc/oauth2_secret`.
    ///
    /// # Errors
    /// The fake cannot start or the configuration cannot be written.
    pub fn office365_xoauth2_fake(&mut self, ep: &FakeTokenEndpoint) -> Result<FakeSmartHost> {
        ep.register_app(OAUTH2_APP, OAUTH2_SECRET);
        self.watch_token_endpoint(ep);
        let fake = FakeSmartHost::spawn(
            FakeConfig::office365(&self.pki.server)
                .accept_tokens_from(ep)
                .service_principal(OAUTH2_APP),
        )?;
        self.use_relayhost(&fake)?;
        let sasl = self.write_secret(
            "sasl_passwd",
            &format!("{} {TEST_USER}:xoauth2\n", fake.relayhost_name()),
        )?;
        let secret = self.write_secret("oauth2_secret", &format!("{OAUTH2_SECRET}\n"))?;
        self.set_many(&[
            (
                "smtp_sasl_password_maps",
                &format!("texthash:{}", sasl.display()),
            ),
            ("smtp_sasl_mechanism_filter", "xoauth2"),
            ("smtp_oauth2_token_endpoint", &ep.url(OAUTH2_TENANT)),
            ("smtp_oauth2_client_id", OAUTH2_APP),
            (
                "smtp_oauth2_client_secret_file",
                &secret.display().to_string(),
            ),
        ])?;
        Ok(fake)
    }

    /// Sends all mail to `fake`: `relayhost = [localhost]:<port>`, TLS
    /// `verify` against the test CA, SASL (LOGIN/PLAIN) with
    /// [`TEST_USER`] from `etc/sasl_passwd` (mode 0640/0600, see
    /// [`TestEnv::write_secret`]).
    ///
    /// `localhost` rather than `127.0.0.1`: certificate verification
    /// matches DNS names (as Postfix does), as with
    /// `[smtp.office365.com]:587` in production; the baseline's
    /// `inet_protocols = ipv4` keeps `localhost` on 127.0.0.1, where the
    /// fake listens.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn use_relayhost(&mut self, fake: &FakeSmartHost) -> Result<()> {
        let relayhost = fake.relayhost_name();
        let sasl = self.write_secret(
            "sasl_passwd",
            &format!("{relayhost} {TEST_USER}:{TEST_PASSWORD}\n"),
        )?;
        self.set_many(&[
            ("relayhost", &relayhost),
            ("smtp_tls_security_level", "verify"),
            ("smtp_sasl_auth_enable", "yes"),
            (
                "smtp_sasl_password_maps",
                &format!("texthash:{}", sasl.display()),
            ),
            ("smtp_sasl_mechanism_filter", "login, plain"),
            ("smtp_sasl_security_options", "noanonymous"),
        ])
    }

    // ---- configuration ---------------------------------------------------

    /// Sets a main.cf parameter (replacing an earlier value) and rewrites
    /// main.cf.
    ///
    /// # Errors
    /// main.cf cannot be written.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        self.set_many(&[(name, value)])
    }

    /// [`TestEnv::set`] for several parameters.
    ///
    /// # Errors
    /// main.cf cannot be written.
    pub fn set_many(&mut self, params: &[(&str, &str)]) -> Result<()> {
        for (name, value) in params {
            match self.main_cf.iter_mut().find(|(n, _)| n == name) {
                Some(p) => p.1 = value.to_string(),
                None => self.main_cf.push((name.to_string(), value.to_string())),
            }
        }
        self.write_config()
    }

    /// Removes a parameter from main.cf (it takes its default).
    ///
    /// # Errors
    /// main.cf cannot be written.
    pub fn unset(&mut self, name: &str) -> Result<()> {
        self.main_cf.retain(|(n, _)| n != name);
        self.write_config()
    }

    /// The value set in main.cf for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.main_cf
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a master.cf line (a service, or a `-o` continuation).
    ///
    /// # Errors
    /// master.cf cannot be written.
    pub fn add_master_cf(&mut self, line: &str) -> Result<()> {
        self.master_cf.push(line.to_string());
        self.write_config()
    }

    /// Adds an smtpd listener on 127.0.0.1 at a free port, with `-o`
    /// overrides (`name=value`), and returns the port. The listener is
    /// bound by the supervisor at `start()`.
    ///
    /// # Errors
    /// No free port, or master.cf cannot be written.
    pub fn add_smtpd(&mut self, overrides: &[&str]) -> Result<u16> {
        let port = free_port()?;
        let mut line = format!("127.0.0.1:{port} inet n - n - - smtpd");
        for o in overrides {
            line.push_str(&format!(" -o {o}"));
        }
        self.add_master_cf(&line)?;
        Ok(port)
    }

    /// Sets an environment variable for the daemons started from now on,
    /// e.g. `POSTERN_DNS_SERVER` (the test DNS server of [`crate::dns`]);
    /// the test process's own environment stays untouched, so parallel
    /// tests do not see it.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Replaces master.cf with `lines`.
    ///
    /// # Errors
    /// master.cf cannot be written.
    pub fn set_master_cf(&mut self, lines: &[&str]) -> Result<()> {
        self.master_cf = lines.iter().map(|s| s.to_string()).collect();
        self.write_config()
    }

    fn write_config(&self) -> Result<()> {
        let mut main = String::from("# written by postern-tests\n");
        for (n, v) in &self.main_cf {
            main.push_str(&format!("{n} = {v}\n"));
        }
        write_file(&self.etc.join("main.cf"), &main, 0o644)?;
        let mut master = String::from("# written by postern-tests\n");
        for l in &self.master_cf {
            master.push_str(l);
            master.push('\n');
        }
        write_file(&self.etc.join("master.cf"), &master, 0o644)
    }

    /// Writes `etc/<name>` readable by all (lookup tables, aliases).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.etc.join(name);
        write_file(&path, contents, 0o644)?;
        Ok(path)
    }

    /// Writes `etc/<name>` as a secret: as root, owned by root with group
    /// `mail_owner`'s group and mode 0640; otherwise mode 0600.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_secret(&self, name: &str, contents: &str) -> Result<PathBuf> {
        self.secrets.add_file(name, contents);
        let path = self.etc.join(name);
        if running_as_root() {
            write_file(&path, contents, 0o640)?;
            std::os::unix::fs::chown(&path, Some(0), Some(self.owner.gid.as_raw()))
                .with_context(|| format!("chown {}", path.display()))?;
        } else {
            write_file(&path, contents, 0o600)?;
        }
        Ok(path)
    }

    /// The directory the binaries are taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    // ---- the daemons -----------------------------------------------------

    /// Runs `postern -c <etc> start-fg` and waits until the log shows
    /// `daemon started -- version` and `queue manager started`.
    ///
    /// # Errors
    /// A binary is missing, the supervisor exits, or the lines do not come
    /// within [`START_TIMEOUT`]; the message holds the log and stderr.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("postern is already running in {}", self.root.display());
        }
        for d in DAEMONS {
            binary(d)?;
        }
        let mark = self.log_mark();
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.root.join("postern.out"))
            .context("create postern.out")?;
        let mut cmd = command("postern")?;
        cmd.arg("-c")
            .arg(&self.etc)
            .arg("start-fg")
            .env("MAIL_CONFIG", &self.etc)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Core files and other strays land in the test directory (where
            // the secrets scan looks), not in the test's working directory.
            .current_dir(&self.root)
            // Its own process group, so Drop can kill every daemon.
            .process_group(0);
        let child = cmd.spawn().context("run postern start-fg")?;
        self.daemon = Some(child);
        let patterns = [
            (Pattern::from("daemon started -- version"), 1),
            (Pattern::from("queue manager started"), 1),
        ];
        let maillog = self.maillog.clone();
        let r = log::wait(&maillog, mark, &patterns, START_TIMEOUT, || {
            self.check_alive()
        });
        if let Err(e) = r {
            self.kill_all();
            return Err(e.context(format!(
                "postern did not start\n--- postern.out:\n{}",
                self.output_text()
            )));
        }
        Ok(())
    }

    /// Runs `postern -c <etc> stop` and waits for the supervisor to exit.
    ///
    /// # Errors
    /// The command fails or the supervisor outlives [`STOP_TIMEOUT`] (it
    /// is then killed); or daemons outlived the supervisor (also killed).
    pub fn stop(&mut self) -> Result<()> {
        if self.daemon.is_none() {
            return Ok(());
        }
        let out = self.postern(&["stop"])?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let Some(child) = self.daemon.as_mut() else {
                return Ok(());
            };
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    self.kill_all();
                    bail!(
                        "postern did not stop within {STOP_TIMEOUT:?}; killed\n{out}\n--- log:\n{}",
                        log::tail(&self.log_text(), 60)
                    );
                }
            }
        }
        let Some(pg) = self.daemon.take().map(|c| Pid::from_raw(c.id() as i32)) else {
            return Ok(());
        };
        // The supervisor reaps its daemons before it exits; give exiting
        // ones a moment, then kill what is left.
        let deadline = Instant::now() + Duration::from_secs(3);
        while killpg(pg, None).is_ok() {
            if Instant::now() >= deadline {
                let _ = killpg(pg, Signal::SIGKILL);
                bail!(
                    "daemons outlived the supervisor (killed)\n--- log:\n{}",
                    log::tail(&self.log_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Creates the queue directories the way `postern start` does (owners,
    /// modes) by starting and stopping postern, for tests that submit mail
    /// before the daemons run.
    ///
    /// # Errors
    /// As [`TestEnv::start`] and [`TestEnv::stop`].
    pub fn create_queue(&mut self) -> Result<()> {
        self.start()?;
        self.stop()
    }

    /// True while the supervisor started by [`TestEnv::start`] runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The supervisor's pid.
    pub fn master_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|c| c.id() as i32)
    }

    /// Sends SIGHUP through `postern reload` and waits for the supervisor's
    /// `reload` log line.
    ///
    /// # Errors
    /// The command fails or the line does not come.
    pub fn reload(&mut self) -> Result<()> {
        let mark = self.log_mark();
        self.postern(&["reload"])?.ok()?;
        self.wait_log_since(mark, "reload -- version", START_TIMEOUT)?;
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.daemon.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.daemon = None;
            bail!(
                "postern start-fg exited with {status}\n--- log:\n{}",
                log::tail(&self.log_text(), 60)
            );
        }
        Ok(())
    }

    /// Kills the supervisor's process group (every daemon) with SIGKILL
    /// and reaps the supervisor.
    pub fn kill_all(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pid of daemon `prog` (a service name such as `qmgr`, or a
    /// command such as `smtp`; `master` for the supervisor), from
    /// `<spool>/pid/status`, else from the last `postern/<prog>[pid]` log
    /// line whose process is alive.
    pub fn daemon_pid(&self, prog: &str) -> Option<i32> {
        if prog == "master" {
            return self.master_pid();
        }
        let status = std::fs::read_to_string(self.spool.join("pid/status")).unwrap_or_default();
        let from_status = status.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, _, cmd, pid] if *name == prog || *cmd == prog => pid.parse().ok(),
                _ => None,
            }
        });
        from_status.or_else(|| {
            let tag = format!("/{prog}[");
            self.log_lines().iter().rev().find_map(|l| {
                let i = l.find(&tag)? + tag.len();
                let pid: i32 = l[i..].split(']').next()?.parse().ok()?;
                kill(Pid::from_raw(pid), None).is_ok().then_some(pid)
            })
        })
    }

    /// Kills daemon `prog` with SIGKILL (see [`TestEnv::daemon_pid`]);
    /// returns the pid it had.
    ///
    /// # Errors
    /// No such process is running.
    pub fn kill_daemon(&mut self, prog: &str) -> Result<i32> {
        let pid = self
            .daemon_pid(prog)
            .with_context(|| format!("no running {prog} process"))?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)
            .with_context(|| format!("kill -9 {prog}[{pid}]"))?;
        if prog == "master"
            && let Some(mut c) = self.daemon.take()
        {
            let _ = c.wait();
            // Its children now run orphaned; keep their group to kill later.
            self.orphans.push(pid);
        }
        Ok(pid)
    }

    /// Waits until daemon `prog` runs with a pid other than `old`.
    ///
    /// # Errors
    /// Timeout.
    pub fn wait_daemon_restart(&self, prog: &str, old: i32, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.daemon_pid(prog)
                && p != old
                && kill(Pid::from_raw(p), None).is_ok()
            {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{prog} was not restarted within {timeout:?} (old pid {old})\n--- log:\n{}",
                    log::tail(&self.log_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- commands --------------------------------------------------------

    fn tool(&self, program: &str) -> Result<Command> {
        let mut cmd = command(program)?;
        cmd.env("MAIL_CONFIG", &self.etc).current_dir(&self.root);
        Ok(cmd)
    }

    /// Adds `user` with `password` to postern's own SMTP AUTH user file
    /// (`postern passwd add`, the password on standard input).
    ///
    /// # Errors
    /// The command cannot run or fails.
    pub fn add_sasl_user(&self, user: &str, password: &str) -> Result<()> {
        self.secrets.add_login(user, password);
        let etc = self.etc.display().to_string();
        let out = self.run(
            "postern",
            &["-c", &etc, "passwd", "add", user],
            Some(format!("{password}\n").as_bytes()),
        )?;
        if !out.success() {
            bail!("postern passwd add {user} failed: {out}");
        }
        Ok(())
    }

    /// Routes mail for `domain` to a loopback port where nothing listens
    /// (`transport_maps`), so every attempt fails with a connection error.
    ///
    /// # Errors
    /// The table or main.cf cannot be written.
    pub fn route_to_closed_port(&mut self, domain: &str) -> Result<()> {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a port")?;
            l.local_addr()?.port()
        };
        let transport = self.write_file(
            "transport",
            &format!("{domain}  smtp:[127.0.0.1]:{closed}\n"),
        )?;
        self.set(
            "transport_maps",
            &format!("texthash:{}", transport.display()),
        )
    }

    /// Runs `program args...` with `MAIL_CONFIG=<etc>` and `stdin`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
        let mut cmd = self.tool(program)?;
        cmd.args(args);
        self.keep_output(program, process::run(cmd, stdin, COMMAND_TIMEOUT))
    }

    /// `sendmail -C <etc>/main.cf args...` with `stdin` as the message.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Result<Output> {
        let mut cmd = self.tool("sendmail")?;
        cmd.arg("-C").arg(self.etc.join("main.cf")).args(args);
        self.keep_output("sendmail", process::run(cmd, Some(stdin), COMMAND_TIMEOUT))
    }

    /// `mailq` (sendmail as `mailq`; configuration from `MAIL_CONFIG`).
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn mailq(&self) -> Result<Output> {
        self.run("mailq", &[], None)
    }

    /// `newaliases`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn newaliases(&self) -> Result<Output> {
        self.run("newaliases", &[], None)
    }

    fn with_c(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = self.tool(program)?;
        cmd.arg("-c").arg(&self.etc).args(args);
        self.keep_output(program, process::run(cmd, None, COMMAND_TIMEOUT))
    }

    /// `postern -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postern(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postern", args)
    }

    /// `postqueue -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postqueue(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postqueue", args)
    }

    /// `postqueue -j`, parsed: one JSON object per queued message.
    ///
    /// # Errors
    /// The command fails or prints something that is not JSON lines.
    pub fn queue_json(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.postqueue(&["-j"])?.ok()?;
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("postqueue -j line {l:?}")))
            .collect()
    }

    /// `postsuper -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postsuper(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postsuper", args)
    }

    /// `postconf -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postconf(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postconf", args)
    }

    /// `postcat -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postcat(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postcat", args)
    }

    /// `postmap -c <etc> args...`.
    ///
    /// # Errors
    /// It cannot run or exceeds [`COMMAND_TIMEOUT`].
    pub fn postmap(&self, args: &[&str]) -> Result<Output> {
        self.with_c("postmap", args)
    }

    // ---- the log ---------------------------------------------------------

    /// The whole log.
    pub fn log_text(&self) -> String {
        log::read_from(&self.maillog, LogMark(0))
    }

    /// The log's lines.
    pub fn log_lines(&self) -> Vec<String> {
        self.log_text().lines().map(str::to_string).collect()
    }

    /// The current end of the log, for [`TestEnv::wait_log_since`].
    pub fn log_mark(&self) -> LogMark {
        log::mark(&self.maillog)
    }

    /// Waits until a log line matches; returns the first such line.
    ///
    /// # Errors
    /// Timeout (the message holds the log's tail).
    pub fn wait_log(&self, pattern: impl Into<Pattern>, timeout: Duration) -> Result<String> {
        self.wait_log_since(LogMark(0), pattern, timeout)
    }

    /// [`TestEnv::wait_log`] for lines written after `mark`.
    ///
    /// # Errors
    /// Timeout.
    pub fn wait_log_since(
        &self,
        mark: LogMark,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<String> {
        log::wait(&self.maillog, mark, &[(pattern.into(), 1)], timeout, || {
            Ok(())
        })
    }

    /// Waits until at least `n` lines after `mark` match.
    ///
    /// # Errors
    /// Timeout.
    pub fn wait_log_count(
        &self,
        mark: LogMark,
        pattern: impl Into<Pattern>,
        n: usize,
        timeout: Duration,
    ) -> Result<()> {
        log::wait(&self.maillog, mark, &[(pattern.into(), n)], timeout, || {
            Ok(())
        })
        .map(|_| ())
    }

    /// Lines matching `pattern`.
    pub fn log_grep(&self, pattern: impl Into<Pattern>) -> Vec<String> {
        let p = pattern.into();
        self.log_lines()
            .into_iter()
            .filter(|l| p.matches(l))
            .collect()
    }

    /// What the supervisor printed on stdout and stderr.
    pub fn output_text(&self) -> String {
        std::fs::read_to_string(self.root.join("postern.out")).unwrap_or_default()
    }

    /// Creates `<root>/<name>` writable by the daemons (owned by
    /// mail_owner when the tests run as root), for a `maildir:` transport.
    ///
    /// # Errors
    /// File errors.
    pub fn maildir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        if running_as_root() {
            std::os::unix::fs::chown(
                &dir,
                Some(self.owner.uid.as_raw()),
                Some(self.owner.gid.as_raw()),
            )
            .with_context(|| format!("chown {}", dir.display()))?;
        }
        Ok(dir)
    }

    /// Creates the Maildir `<root>/<name>` (see [`TestEnv::maildir`]) and
    /// makes it the `default_transport`, so every message lands there.
    ///
    /// # Errors
    /// File errors.
    pub fn deliver_to_maildir(&mut self, name: &str) -> Result<PathBuf> {
        let dir = self.maildir(name)?;
        self.set("default_transport", &format!("maildir:{}", dir.display()))?;
        Ok(dir)
    }

    /// Files (queue IDs) in queue `name` (`maildrop`, `incoming`,
    /// `active`, `deferred`, `hold`, `corrupt`), searched recursively,
    /// sorted; dot files skipped.
    pub fn queue_files(&self, name: &str) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(n);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.spool.join(name), &mut out);
        out.sort();
        out
    }
}

impl TestEnv {
    // ---- the secrets scan (see [`secrets`]) ------------------------------

    /// The secrets this environment knows.
    pub fn secrets(&self) -> &secrets::Registry {
        &self.secrets
    }

    /// Registers another secret that must never be logged.
    pub fn add_secret(&self, name: &str, value: &str) {
        self.secrets.add(name, value);
    }

    /// Also looks for what `ep` hands out (tokens, refresh tokens, device
    /// codes) and its apps' client secrets.
    pub fn watch_token_endpoint(&self, ep: &FakeTokenEndpoint) {
        self.secrets.watch(ep.secrets());
    }

    /// Appends a command's output (not its arguments, which may hold a
    /// password on purpose) to `<root>/commands.out` for the scan.
    fn keep_output(&self, program: &str, out: Result<Output>) -> Result<Output> {
        if let Ok(o) = &out {
            use std::io::Write;
            if let Ok(mut f) = File::options()
                .create(true)
                .append(true)
                .open(self.root.join("commands.out"))
            {
                let _ = write!(f, "--- {program}\n{}{}", o.stdout, o.stderr);
            }
        }
        out
    }

    /// Scans the log, the captured output and any core file for the
    /// registered secrets (see [`secrets`]).
    pub fn secret_hits(&self) -> Vec<secrets::Hit> {
        self.secrets.scan_dir(&self.root)
    }

    /// Panics, naming file and secret (not its value), on a hit.
    pub fn check_secrets(&self) {
        let hits = self.secret_hits();
        if !hits.is_empty() {
            let list: Vec<String> = hits.iter().map(|h| format!("  {h}")).collect();
            panic!(
                "a secret leaked into postern's output ({}):\n{}",
                self.root.display(),
                list.join("\n")
            );
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(c) = self.daemon.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            let pid = Pid::from_raw(c.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill_all();
        for pg in self.orphans.drain(..) {
            let _ = killpg(Pid::from_raw(pg), Signal::SIGKILL);
        }
        // Everything postern wrote is complete now; a test that failed
        // already keeps its own message.
        let hits = if std::thread::panicking() {
            Vec::new()
        } else {
            self.secret_hits()
        };
        if std::env::var_os("POSTERN_TEST_KEEP").is_some()
            && let Some(t) = self.tmp.take()
        {
            eprintln!("postern-tests: kept {}", t.keep().display());
        }
        if !hits.is_empty() {
            let list: Vec<String> = hits.iter().map(|h| format!("  {h}")).collect();
            panic!(
                "a secret leaked into postern's output (set POSTERN_TEST_KEEP to keep the files):\n{}",
                list.join("\n")
            );
        }
    }
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    chmod(path, mode)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
/// The OS gave no port.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768-60999 by default), so an
    // outgoing connection of a parallel test never takes the port between
    // this check and the daemon's bind; each port is handed out once per
    // test process, starting at a per-process offset.
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {FIRST} and {}", FIRST + COUNT)
}

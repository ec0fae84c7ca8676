//! The supervisor (Postfix's master): reads main.cf and master.cf, creates
//! the queue, opens every listening socket (so ports below 1024 are bound
//! while still root, and a restarting daemon never loses its socket),
//! starts one process per master.cf service, restarts crashed ones with a
//! back-off, reloads on SIGHUP and stops on SIGTERM.

use anyhow::{Context, bail};
use conf::mastercf::{MasterCf, Service, ServiceType};
use queue::layout::Queue;
use queue::log;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running (or waiting to restart) service.
struct Proc {
    service: Service,
    program: PathBuf,
    listeners: Vec<OwnedFd>,
    child: Option<Child>,
    started: Instant,
    restart_at: Option<Instant>,
    backoff: Duration,
}

/// Everything the supervisor owns.
pub struct Master {
    dir: PathBuf,
    cfg: conf::Config,
    queue: Queue,
    procs: Vec<Proc>,
    pid_lock: std::fs::File,
}

/// Loads and validates the whole configuration; every problem is returned.
pub fn load_all(dir: &Path) -> Result<(conf::Config, MasterCf), Vec<String>> {
    let mut errs = Vec::new();
    let cfg = match conf::load(dir, &[]) {
        Ok(c) => Some(c),
        Err(e) => {
            errs.extend(e.0.iter().map(|e| e.to_string()));
            None
        }
    };
    let mc = match MasterCf::load(&dir.join("master.cf")) {
        Ok(m) => Some(m),
        Err(e) => {
            errs.extend(e.iter().map(|e| e.to_string()));
            None
        }
    };
    match (cfg, mc) {
        (Some(c), Some(m)) if errs.is_empty() => Ok((c, m)),
        _ => Err(errs),
    }
}

/// The pid file of the supervisor.
pub fn pid_path(queue: &Queue) -> PathBuf {
    queue.pid_dir().join("master.pid")
}

/// Reads the supervisor's pid if it is running.
pub fn running_pid(queue: &Queue) -> Option<i32> {
    let text = std::fs::read_to_string(pid_path(queue)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // The pid file is locked while the supervisor runs.
    let f = std::fs::File::open(pid_path(queue)).ok()?;
    // SAFETY: fd valid for f's lifetime; LOCK_NB never blocks.
    let locked = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0;
    if locked && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        Some(pid)
    } else {
        None
    }
}

/// How long a new supervisor waits for the daemons of a dead one to stop.
const PREVIOUS_GENERATION_WAIT: Duration = Duration::from_secs(60);

/// Locks the pid file and writes our pid into it.
///
/// The lock's open file description is inherited by every daemon (see
/// [`Master::spawn`]), so the lock is held until the supervisor *and* all
/// its daemons are gone. When the supervisor was killed (SIGKILL, OOM, a
/// crash) its daemons stop on their own (`queue::service::follow_supervisor`)
/// but may take a few seconds to finish deliveries in flight; a new
/// supervisor started meanwhile (systemd's `Restart=`, an admin) waits for
/// them here instead of starting a second queue manager beside the old one
/// or failing to bind the smtpd ports the old smtpd still holds.
fn lock_pid_file(queue: &Queue) -> anyhow::Result<std::fs::File> {
    let path = pid_path(queue);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // Out of the way of the listeners dup2'd to 3, 4, ... in the children.
    let f = std::fs::File::from(high_fd(OwnedFd::from(f))?);
    let try_lock = || {
        // SAFETY: valid fd; non-blocking exclusive lock.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    };
    if !try_lock() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        let pid = pid.trim().to_string();
        let alive = pid
            .parse::<i32>()
            .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if alive {
            bail!("the postern mail system is already running (pid {pid})");
        }
        log::info(&format!(
            "waiting for the daemons of the previous supervisor (pid {pid}) to stop"
        ));
        let until = Instant::now() + PREVIOUS_GENERATION_WAIT;
        while !try_lock() {
            if Instant::now() >= until {
                bail!(
                    "daemons of a previous supervisor (pid {pid}) still hold {} after {}s; stop them (fuser -k {}) and start again",
                    path.display(),
                    PREVIOUS_GENERATION_WAIT.as_secs(),
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    f.set_len(0)?;
    use std::io::Write;
    (&f).write_all(format!("{}\n", std::process::id()).as_bytes())?;
    Ok(f)
}

/// Moves a descriptor to 100 or above, close-on-exec, so that the child
/// set-up (dup2 to 3, 4, ...) never clobbers another listener.
fn high_fd(fd: OwnedFd) -> anyhow::Result<OwnedFd> {
    // SAFETY: fd is valid; F_DUPFD_CLOEXEC returns a new owned descriptor.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: n is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Creates `maillog_file` for the daemons, which run as mail_owner and must
/// be able to append to it.
fn prepare_log_file(cfg: &conf::Config, uid: u32, gid: u32) -> anyhow::Result<()> {
    let path = Path::new(&cfg.maillog_file);
    if cfg.maillog_file.is_empty() || cfg.maillog_file.starts_with("/dev/") {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("maillog_file {}", path.display()))?;
    let meta = f.metadata()?;
    if meta.is_file() {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != uid {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown maillog_file {} to mail_owner", path.display()))?;
        }
    }
    Ok(())
}

/// Creates data_directory (postern's own state outside the queue), 0700 and
/// owned by mail_owner.
fn prepare_data_directory(cfg: &conf::Config, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let d = Path::new(&cfg.data_directory);
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(anyhow::anyhow!(
                "create data_directory {}: {e}",
                d.display()
            ));
        }
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(d, Some(uid), Some(gid))
            .with_context(|| format!("chown data_directory {}", d.display()))?;
    }
    Ok(())
}

/// Which programs listen on a datagram (wake-up) socket rather than a stream.
fn wants_datagram(s: &Service) -> bool {
    matches!(s.kind, ServiceType::UnixDgram | ServiceType::Fifo)
        || matches!(s.command.as_str(), "pickup" | "qmgr")
}

fn bind_service(
    cfg: &conf::Config,
    queue: &Queue,
    s: &Service,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Vec<OwnedFd>> {
    match s.kind {
        ServiceType::Inet => bind_inet(cfg, s),
        _ => {
            let dir = if s.private && !wants_datagram(s) {
                queue.private_dir()
            } else {
                queue.public_dir()
            };
            let path = dir.join(&s.name);
            let _ = std::fs::remove_file(&path);
            let fd: OwnedFd = if wants_datagram(s) {
                std::os::unix::net::UnixDatagram::bind(&path)
                    .with_context(|| format!("bind {}", path.display()))?
                    .into()
            } else {
                std::os::unix::net::UnixListener::bind(&path)
                    .with_context(|| format!("bind {}", path.display()))?
                    .into()
            };
            let mode = if wants_datagram(s) || !s.private {
                0o666
            } else {
                0o600
            };
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
            Ok(vec![high_fd(fd)?])
        }
    }
}

/// Binds an inet service on every address of inet_interfaces (or the
/// address in the service name).
fn bind_inet(cfg: &conf::Config, s: &Service) -> anyhow::Result<Vec<OwnedFd>> {
    let addrs = crate::listen::inet_addresses(cfg, s)?;
    let mut out = Vec::new();
    for a in addrs {
        let l = crate::listen::bind_tcp(a)
            .with_context(|| format!("bind {a} for service {}", s.name))?;
        out.push(high_fd(l)?);
    }
    Ok(out)
}

/// The processes for a master.cf: services that existed before (same name,
/// type and listening addresses) keep their open sockets, so clients of a
/// reloaded service only wait; new services get new sockets.
fn build_procs(
    cfg: &conf::Config,
    mc: &MasterCf,
    queue: &Queue,
    owner: Option<(u32, u32)>,
    mut old: Vec<Proc>,
) -> anyhow::Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for s in &mc.services {
        let (program, _) = queue::service::locate_program(cfg, "daemon_directory", &s.command);
        if !program.exists() {
            bail!(
                "{}:{}: service {}: program {} not found (daemon_directory is {})",
                mc.path.display(),
                s.line,
                s.name,
                program.display(),
                cfg.daemon_directory
            );
        }
        let reuse = old.iter().position(|p| {
            p.service.name == s.name
                && p.service.kind == s.kind
                && wants_datagram(&p.service) == wants_datagram(s)
                && p.service.private == s.private
        });
        let listeners = match reuse {
            Some(i) if s.kind != ServiceType::Inet || same_inet(cfg, &old[i].service, s) => {
                std::mem::take(&mut old.remove(i).listeners)
            }
            _ => bind_service(cfg, queue, s, owner)?,
        };
        procs.push(Proc {
            service: s.clone(),
            program,
            listeners,
            child: None,
            started: Instant::now(),
            restart_at: Some(Instant::now()),
            backoff: Duration::from_secs(1),
        });
    }
    // Services no longer in master.cf: their sockets close with them.
    for p in old {
        if p.service.kind != ServiceType::Inet {
            let dir = if p.service.private && !wants_datagram(&p.service) {
                queue.private_dir()
            } else {
                queue.public_dir()
            };
            let _ = std::fs::remove_file(dir.join(&p.service.name));
        }
        log::info(&format!(
            "service {} removed from master.cf: stopped",
            p.service.name
        ));
    }
    Ok(procs)
}

fn same_inet(cfg: &conf::Config, a: &Service, b: &Service) -> bool {
    matches!((crate::listen::inet_addresses(cfg, a), crate::listen::inet_addresses(cfg, b)), (Ok(x), Ok(y)) if x == y)
}

impl Master {
    /// Prepares everything before processes start: configuration, queue,
    /// pid lock, sockets. Errors here mean nothing was started.
    pub fn prepare(dir: &Path) -> anyhow::Result<Master> {
        let (cfg, mc) = load_all(dir).map_err(|errs| anyhow::anyhow!("{}", errs.join("\n")))?;
        let queue = Queue::new(&cfg.queue_directory);
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            Some(queue::service::mail_owner_ids(&cfg).map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        queue
            .ensure(owner)
            .with_context(|| format!("create the queue in {}", queue.root.display()))?;
        if let Some((uid, gid)) = owner {
            prepare_log_file(&cfg, uid, gid)?;
        }
        prepare_data_directory(&cfg, owner)?;
        let lock = lock_pid_file(&queue)?;
        let procs = build_procs(&cfg, &mc, &queue, owner, Vec::new())?;
        Ok(Master {
            dir: dir.to_path_buf(),
            cfg,
            queue,
            procs,
            pid_lock: lock,
        })
    }

    fn spawn(&self, p: &Proc) -> std::io::Result<Child> {
        let mut cmd = Command::new(&p.program);
        cmd.arg0(&p.service.command);
        cmd.arg("-c").arg(&self.dir);
        cmd.arg("-n").arg(&p.service.name);
        cmd.arg("-t").arg(p.service.kind.as_str());
        for (k, v) in &p.service.overrides {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        cmd.args(&p.service.args);
        cmd.env("MAIL_CONFIG", &self.dir);
        cmd.env(
            queue::service::LISTEN_FDS_ENV,
            p.listeners.len().to_string(),
        );
        cmd.env_remove("NOTIFY_SOCKET");
        // The daemon stops when this supervisor dies (queue::service::follow_supervisor).
        cmd.env(
            queue::service::MASTER_PID_ENV,
            std::process::id().to_string(),
        );
        cmd.stdin(std::process::Stdio::null());
        let fds: Vec<RawFd> = p.listeners.iter().map(|f| f.as_raw_fd()).collect();
        let lock_fd = self.pid_lock.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl, sigprocmask) run in the child.
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in fds.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The daemon shares the pid file lock (see lock_pid_file).
                if libc::fcntl(lock_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Starts due processes.
    fn start_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.procs.len() {
            let due = matches!(self.procs[i].restart_at, Some(t) if t <= now)
                && self.procs[i].child.is_none();
            if !due {
                continue;
            }
            match self.spawn(&self.procs[i]) {
                Ok(c) => {
                    let p = &mut self.procs[i];
                    p.child = Some(c);
                    p.started = now;
                    p.restart_at = None;
                }
                Err(e) => {
                    let p = &mut self.procs[i];
                    log::warning(&format!(
                        "cannot start {} for service {}: {e}",
                        p.program.display(),
                        p.service.name
                    ));
                    p.restart_at = Some(now + p.backoff);
                    p.backoff = (p.backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Reaps exited children and schedules restarts.
    fn reap(&mut self) {
        for p in &mut self.procs {
            let Some(c) = &mut p.child else { continue };
            let Ok(Some(status)) = c.try_wait() else {
                continue;
            };
            let pid = c.id();
            p.child = None;
            use std::os::unix::process::ExitStatusExt;
            let how = match (status.code(), status.signal()) {
                (Some(0), _) => None,
                (Some(code), _) => Some(format!("exit status {code}")),
                (None, Some(sig)) => Some(format!("killed by signal {sig}")),
                _ => Some("terminated".into()),
            };
            if let Some(how) = &how {
                log::warning(&format!("process {} pid {pid} {how}", p.program.display()));
            }
            let quick = p.started.elapsed() < Duration::from_secs(10);
            if quick && how.is_some() {
                log::warning(&format!(
                    "{}: bad command startup -- throttling",
                    p.program.display()
                ));
                p.restart_at = Some(Instant::now() + p.backoff);
                p.backoff = (p.backoff * 2).min(Duration::from_secs(60));
            } else {
                p.restart_at = Some(Instant::now() + Duration::from_millis(100));
                p.backoff = Duration::from_secs(1);
            }
        }
    }

    fn signal_all(&self, sig: nix::sys::signal::Signal, filter: impl Fn(&Service) -> bool) {
        for p in &self.procs {
            if let Some(c) = &p.child
                && filter(&p.service)
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
            }
        }
    }

    /// Stops every process: SIGTERM, then SIGKILL after `grace`. The queue
    /// manager goes first so no new deliveries start while agents finish.
    fn stop_all(&mut self, grace: Duration) {
        use nix::sys::signal::Signal;
        for p in &mut self.procs {
            p.restart_at = None;
        }
        self.signal_all(Signal::SIGTERM, |s| s.command == "qmgr");
        self.wait_children(grace / 2, |s| s.command == "qmgr");
        self.signal_all(Signal::SIGTERM, |_| true);
        self.wait_children(grace, |_| true);
        self.signal_all(Signal::SIGKILL, |_| true);
        self.wait_children(Duration::from_secs(5), |_| true);
    }

    fn wait_children(&mut self, max: Duration, filter: impl Fn(&Service) -> bool) {
        let until = Instant::now() + max;
        loop {
            let mut alive = false;
            for p in &mut self.procs {
                if !filter(&p.service) {
                    continue;
                }
                if let Some(c) = &mut p.child {
                    match c.try_wait() {
                        Ok(Some(_)) | Err(_) => p.child = None,
                        Ok(None) => alive = true,
                    }
                }
            }
            if !alive || Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `pid/status`: one line per service, for `postern status`.
    fn write_status(&self) {
        let mut s = String::new();
        for p in &self.procs {
            let pid = p
                .child
                .as_ref()
                .map(|c| c.id().to_string())
                .unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{} {} {} {}\n",
                p.service.name,
                p.service.kind.as_str(),
                p.service.command,
                pid
            ));
        }
        let path = self.queue.pid_dir().join("status");
        let tmp = self.queue.pid_dir().join(".status.tmp");
        if std::fs::write(&tmp, s).is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }

    /// Re-reads the configuration; on success restarts every process with it.
    fn reload(&mut self) {
        match load_all(&self.dir) {
            Err(errs) => {
                for e in &errs {
                    log::log(log::Level::Error, e);
                }
                log::warning(
                    "reload refused: the configuration has errors (see above); still running the old configuration",
                );
            }
            Ok((cfg, mc)) => {
                log::info(&format!(
                    "reload -- version {}, configuration {}",
                    cfg.mail_version,
                    self.dir.display()
                ));
                // Restart processes so they read the new configuration; the
                // sockets of unchanged services stay open, so clients only wait.
                self.stop_all(Duration::from_secs(10));
                let owner = if nix::unistd::geteuid().is_root() {
                    queue::service::mail_owner_ids(&cfg).ok()
                } else {
                    None
                };
                let old = std::mem::take(&mut self.procs);
                let keep: Vec<(Service, PathBuf)> = old
                    .iter()
                    .map(|p| (p.service.clone(), p.program.clone()))
                    .collect();
                match build_procs(&cfg, &mc, &self.queue, owner, old) {
                    Ok(procs) => {
                        self.procs = procs;
                        self.cfg = cfg;
                    }
                    Err(e) => {
                        log::log(
                            log::Level::Error,
                            &format!("reload: {e:#}; restarting the services of the old master.cf"),
                        );
                        // Rebind what we can of the old set.
                        for (service, program) in keep {
                            match bind_service(&self.cfg, &self.queue, &service, owner) {
                                Ok(listeners) => self.procs.push(Proc {
                                    service,
                                    program,
                                    listeners,
                                    child: None,
                                    started: Instant::now(),
                                    restart_at: Some(Instant::now()),
                                    backoff: Duration::from_secs(1),
                                }),
                                Err(e) => log::log(
                                    log::Level::Error,
                                    &format!("service {}: {e:#}", service.name),
                                ),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Runs until SIGTERM/SIGINT. `ready` is called once everything started.
    pub fn run(mut self, ready: impl FnOnce()) -> anyhow::Result<()> {
        let mut set = nix::sys::signal::SigSet::empty();
        for s in [
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGINT,
        ] {
            set.add(s);
        }
        set.thread_block()?;
        self.start_due();
        log::info(&format!(
            "daemon started -- version {}, configuration {}",
            self.cfg.mail_version,
            self.dir.display()
        ));
        self.write_status();
        ready();
        sd_notify("READY=1");
        loop {
            let sig = wait_signal(&set, Duration::from_millis(500));
            match sig {
                Some(libc::SIGTERM) | Some(libc::SIGINT) => {
                    log::info(&format!("terminating on signal {}", sig.unwrap_or(0)));
                    sd_notify("STOPPING=1");
                    self.stop_all(Duration::from_secs(15));
                    break;
                }
                Some(libc::SIGHUP) => {
                    sd_notify("RELOADING=1");
                    self.reload();
                    self.start_due();
                    sd_notify("READY=1");
                }
                _ => {}
            }
            self.reap();
            self.start_due();
            self.write_status();
        }
        let _ = std::fs::remove_file(self.queue.pid_dir().join("status"));
        let _ = std::fs::remove_file(pid_path(&self.queue));
        Ok(())
    }
}

/// Waits for one of the blocked signals in `set`, up to `timeout`.
fn wait_signal(set: &nix::sys::signal::SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set is a valid sigset; info may be null; ts is a valid timespec.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// Tells systemd about state changes when run as a Type=notify service.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes()) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &p);
    }
}

/// Detaches from the terminal: fork, setsid, fork again, stdio to /dev/null.
/// Returns in the daemon; the original process exits once `ready_fd` is written.
pub fn daemonize() -> anyhow::Result<OwnedFd> {
    use nix::unistd::{ForkResult, fork, pipe2, setsid};
    // Close-on-exec, or the daemons would inherit the write end and the
    // waiting parent would never see end-of-file.
    let (rd, wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: single-threaded at this point; the child only continues the program.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(wr);
            let mut f = std::fs::File::from(rd);
            let mut buf = Vec::new();
            use std::io::Read;
            let _ = f.read_to_end(&mut buf);
            if buf.starts_with(b"ok") {
                std::process::exit(0);
            }
            let msg = String::from_utf8_lossy(&buf);
            eprintln!(
                "postern: fatal: {}",
                if msg.is_empty() {
                    "the mail system did not start; see the mail log"
                } else {
                    msg.trim()
                }
            );
            std::process::exit(1);
        }
        ForkResult::Child => {}
    }
    drop(rd);
    setsid()?;
    // SAFETY: as above.
    if let ForkResult::Parent { .. } = unsafe { fork() }? {
        std::process::exit(0);
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: valid descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    let _ = std::env::set_current_dir("/");
    Ok(wr)
}

/// Maps service names to their current processes, from `pid/status`.
pub fn read_status(queue: &Queue) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(queue.pid_dir().join("status")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v.len() == 4).then(|| {
                (
                    v[0].to_string(),
                    v[1].to_string(),
                    v[2].to_string(),
                    v[3].to_string(),
                )
            })
        })
        .collect()
}

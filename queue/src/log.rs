//! Logging in Postfix's format, built in one place so that pflogsumm,
//! fail2ban and admins' greps work the same for every program.
//!
//! Lines go to syslog (`/dev/log`, ident `$syslog_name/<program>[pid]`,
//! facility `syslog_facility`) or, when `maillog_file` is set, to that file as
//! `Mon dd hh:mm:ss host ident[pid]: text`. Warnings, errors and fatal errors
//! are prefixed `warning: `, `error: `, `fatal: ` as in Postfix. Commands run
//! by users (sendmail, postqueue) also print their problems on stderr as
//! `program: fatal: text`.
//!
//! [`delivery`] and [`opened`] build the `to=<…>, relay=…, delays=…, dsn=…,
//! status=…` and `from=<…>, size=…, nrcpt=…` lines. Never log a password, a
//! token or message content.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something is wrong but work continues.
    Warning,
    /// An error that is counted.
    Error,
    /// The program cannot continue.
    Fatal,
    /// An internal inconsistency.
    Panic,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
            Level::Fatal => "fatal: ",
            Level::Panic => "panic: ",
        }
    }
    fn syslog_severity(self) -> u8 {
        match self {
            Level::Info => 6,
            Level::Warning => 4,
            Level::Error => 3,
            Level::Fatal => 2,
            Level::Panic => 2,
        }
    }
}

/// Where lines go.
#[derive(Debug)]
pub enum Sink {
    /// The syslog socket.
    Syslog {
        /// Socket path, normally `/dev/log`.
        path: PathBuf,
        /// Connected socket, reopened after errors.
        sock: Option<UnixDatagram>,
    },
    /// A log file (`maillog_file`), reopened when it is rotated.
    File {
        /// The file name.
        path: PathBuf,
        /// Open handle.
        file: Option<File>,
        /// Inode of the open handle.
        ino: u64,
        /// When the path was last compared with the handle.
        checked: Instant,
    },
    /// Standard error only.
    Stderr,
}

/// The process-wide logger.
#[derive(Debug)]
pub struct Logger {
    ident: String,
    facility: u8,
    host: String,
    sink: Mutex<Sink>,
    /// When set, problems (not info lines) are also printed on stderr as
    /// `<name>: fatal: text` (commands run by users).
    stderr_name: Option<String>,
    verbose_stderr: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// How a program wants its logging set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print warnings and errors on stderr prefixed with this name (commands).
    pub stderr_name: Option<String>,
    /// Also copy info lines to stderr (sendmail -v, start-fg without a log file).
    pub verbose_stderr: bool,
}

/// Facility number of a syslog facility name.
fn facility_code(name: &str) -> u8 {
    match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => 2,
    }
}

/// Sets up logging for `program` (smtpd, qmgr, ...) from the configuration.
/// Later calls are ignored.
pub fn init(cfg: &conf::Config, program: &str, opts: Options) {
    let sink = if cfg.maillog_file.is_empty() {
        Sink::Syslog {
            // POSTERN_SYSLOG_SOCKET lets the tests capture syslog lines.
            path: std::env::var_os("POSTERN_SYSLOG_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/dev/log")),
            sock: None,
        }
    } else {
        Sink::File {
            path: PathBuf::from(&cfg.maillog_file),
            file: None,
            ino: 0,
            checked: Instant::now(),
        }
    };
    init_with(
        &format!("{}/{}", cfg.syslog_name, program),
        &cfg.syslog_facility,
        &cfg.myhostname,
        sink,
        opts,
    );
}

/// Sets up logging with an explicit sink (tests, early start-up errors).
pub fn init_with(ident: &str, facility: &str, host: &str, sink: Sink, opts: Options) {
    let _ = LOGGER.set(Logger {
        ident: ident.to_string(),
        facility: facility_code(facility),
        host: host.split('.').next().unwrap_or(host).to_string(),
        sink: Mutex::new(sink),
        stderr_name: opts.stderr_name,
        verbose_stderr: opts.verbose_stderr,
    });
}

/// Writes one line at `level`.
pub fn log(level: Level, text: &str) {
    let pid = std::process::id();
    let Some(l) = LOGGER.get() else {
        let _ = writeln!(std::io::stderr(), "{}{}", level.prefix(), text);
        return;
    };
    log_as(l, &l.ident, pid, level, text);
}

/// Writes one line with another ident (e.g. `postern/error` written by qmgr).
pub fn log_ident(program: &str, level: Level, text: &str) {
    let Some(l) = LOGGER.get() else {
        log(level, text);
        return;
    };
    let base = l.ident.split('/').next().unwrap_or("postern");
    log_as(
        l,
        &format!("{base}/{program}"),
        std::process::id(),
        level,
        text,
    );
}

fn log_as(l: &Logger, ident: &str, pid: u32, level: Level, text: &str) {
    // Log lines are single lines: a newline in text (e.g. from a remote
    // reply) must not forge a second line.
    let clean: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if level != Level::Info || l.verbose_stderr {
        if let Some(name) = &l.stderr_name {
            let _ = writeln!(std::io::stderr(), "{name}: {}{clean}", level.prefix());
        } else if l.verbose_stderr {
            let _ = writeln!(
                std::io::stderr(),
                "{ident}[{pid}]: {}{clean}",
                level.prefix()
            );
        }
    }
    let now = SystemTime::now();
    let Ok(mut sink) = l.sink.lock() else { return };
    match &mut *sink {
        Sink::Syslog { path, sock } => {
            let line = format!(
                "<{}>{} {ident}[{pid}]: {}{clean}",
                l.facility * 8 + level.syslog_severity(),
                crate::time::syslog_stamp(now),
                level.prefix()
            );
            for _ in 0..2 {
                if sock.is_none() {
                    *sock = UnixDatagram::unbound()
                        .ok()
                        .filter(|s| s.connect(&*path).is_ok());
                }
                match sock {
                    Some(s) if s.send(line.as_bytes()).is_ok() => return,
                    Some(_) => *sock = None,
                    None => break,
                }
            }
            // No syslog daemon (a container, a minimal system): a daemon
            // writes the line to stderr, which `postern start-fg` passes to
            // its own (the journal or the container log); nothing is lost
            // silently.
            if l.stderr_name.is_none() {
                let _ = writeln!(
                    std::io::stderr(),
                    "{} {} {ident}[{pid}]: {}{clean}",
                    crate::time::file_stamp(now),
                    l.host,
                    level.prefix()
                );
            }
        }
        Sink::File {
            path,
            file,
            ino,
            checked,
        } => {
            if file.is_some()
                && checked.elapsed() > Duration::from_secs(1)
                && !path.starts_with("/dev/")
            {
                *checked = Instant::now();
                let same = std::fs::metadata(&*path)
                    .map(|m| m.ino() == *ino)
                    .unwrap_or(false);
                if !same {
                    *file = None;
                }
            }
            if file.is_none()
                && let Ok(f) = open_log_file(path)
            {
                *ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                *file = Some(f);
                *checked = Instant::now();
            }
            let line = format!(
                "{} {} {ident}[{pid}]: {}{clean}\n",
                crate::time::file_stamp(now),
                l.host,
                level.prefix()
            );
            match file {
                // One write(2) per line: O_APPEND keeps lines of several
                // processes whole.
                Some(f) => {
                    let _ = f.write_all(line.as_bytes());
                }
                None => {
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
            }
        }
        Sink::Stderr => {
            if l.stderr_name.is_none() || level == Level::Info {
                let _ = writeln!(
                    std::io::stderr(),
                    "{ident}[{pid}]: {}{clean}",
                    level.prefix()
                );
            }
        }
    }
}

/// Opens maillog_file for appending. `/dev/stdout` and `/dev/stderr` use
/// the inherited descriptors (as Postfix's container recipe expects), so a
/// daemon running as mail_owner needs no permission on the terminal.
fn open_log_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::fd::AsFd;
    match path.to_str() {
        Some("/dev/stdout") => Ok(File::from(std::io::stdout().as_fd().try_clone_to_owned()?)),
        Some("/dev/stderr") => Ok(File::from(std::io::stderr().as_fd().try_clone_to_owned()?)),
        _ => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path),
    }
}

/// Logs at info level.
pub fn info(text: &str) {
    log(Level::Info, text);
}

/// Logs a warning.
pub fn warning(text: &str) {
    log(Level::Warning, text);
}

/// Logs an error.
pub fn error(text: &str) {
    log(Level::Error, text);
}

/// Logs a fatal error and exits with `status`.
pub fn fatal(status: i32, text: &str) -> ! {
    log(Level::Fatal, text);
    std::process::exit(status);
}

/// `info!` with format arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(&format!($($arg)*)) };
}

/// `warning!` with format arguments.
#[macro_export]
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::warning(&format!($($arg)*)) };
}

/// Formats a delay as Postfix does: whole seconds for large values, two
/// significant digits for small ones, at most `max_decimals` decimals.
pub fn format_delay(d: Duration, max_decimals: u32) -> String {
    const MILLION: u64 = 1_000_000;
    let max_decimals = max_decimals.min(6);
    let mut sec = d.as_secs();
    let mut usec = u64::from(d.subsec_micros());
    let sig_digits = 2u32;
    let mut ures = MILLION / 10u64.pow(max_decimals);
    let wid = 10u64.pow(sig_digits);
    if ures < MILLION {
        if sec > 0 {
            let mut n = 1;
            while sec >= n && n <= wid / 10 {
                n *= 10;
            }
            ures = (MILLION / wid) * n;
        } else {
            while usec >= wid * ures {
                ures *= 10;
            }
        }
    }
    if ures > 1 {
        usec += ures / 2;
        if usec >= MILLION {
            sec += 1;
            usec -= MILLION;
        }
    }
    let mut out = sec.to_string();
    if usec >= ures {
        out.push('.');
        let mut rem = usec;
        let mut n = MILLION / 10;
        while rem >= ures && n > 0 {
            out.push(char::from(b'0' + (rem / n) as u8));
            rem %= n;
            n /= 10;
        }
    }
    out
}

/// Time stamps of one delivery, for `delay=` and `delays=a/b/c/d`.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    /// Message arrival.
    pub arrival: SystemTime,
    /// When the queue manager activated the message.
    pub active: Option<SystemTime>,
    /// When the delivery agent received the request.
    pub handoff: Option<SystemTime>,
    /// When the connection (and TLS, AUTH) was ready.
    pub conn_done: Option<SystemTime>,
    /// When the delivery finished.
    pub done: SystemTime,
}

fn delta(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_default()
}

/// `delay=..., delays=a/b/c/d` for a delivery.
pub fn format_delays(d: &Delays, res: u32) -> String {
    let total = delta(d.done, d.arrival);
    let zero = Duration::ZERO;
    let (a, b, c, x) = match d.active {
        Some(active) => {
            let a = delta(active, d.arrival);
            match d.handoff {
                Some(h) => {
                    let b = delta(h, active);
                    match d.conn_done {
                        Some(cd) => (a, b, delta(cd, h), delta(d.done, cd)),
                        None => (a, b, zero, delta(d.done, h)),
                    }
                }
                None => (a, delta(d.done, active), zero, zero),
            }
        }
        None => (total, zero, zero, zero),
    };
    format!(
        "delay={}, delays={}/{}/{}/{}",
        format_delay(total, res),
        format_delay(a, res),
        format_delay(b, res),
        format_delay(c, res),
        format_delay(x, res)
    )
}

/// One delivery result, as logged by a delivery agent.
#[derive(Debug, Clone)]
pub struct DeliveryLine<'a> {
    /// Queue ID.
    pub id: &'a str,
    /// Recipient as delivered.
    pub to: &'a str,
    /// Original recipient, when it differs.
    pub orig_to: Option<&'a str>,
    /// `host[addr]:port`, or `none`.
    pub relay: &'a str,
    /// How many times the connection was used (1 = first use).
    pub conn_use: u32,
    /// Timings.
    pub delays: Delays,
    /// Enhanced status code.
    pub dsn: &'a str,
    /// sent, deferred, bounced, expired, undeliverable, ...
    pub status: &'a str,
    /// The reason: the server's full reply or a local explanation.
    pub reason: &'a str,
}

/// Builds `ID: to=<…>, [orig_to=<…>, ]relay=…, [conn_use=N, ]delay=…, delays=…, dsn=…, status=… (reason)`.
pub fn delivery(l: &DeliveryLine<'_>, res: u32) -> String {
    let mut s = format!("{}: to=<{}>", l.id, l.to);
    if let Some(o) = l.orig_to
        && !o.is_empty()
        && !o.eq_ignore_ascii_case(l.to)
    {
        s.push_str(&format!(", orig_to=<{o}>"));
    }
    s.push_str(&format!(", relay={}", l.relay));
    if l.conn_use > 1 {
        s.push_str(&format!(", conn_use={}", l.conn_use));
    }
    s.push_str(&format!(
        ", {}, dsn={}, status={} ({})",
        format_delays(&l.delays, res),
        l.dsn,
        l.status,
        l.reason
    ));
    s
}

/// Builds `ID: from=<sender>, size=N, nrcpt=M (text)`.
pub fn opened(id: &str, sender: &str, size: u64, nrcpt: usize, text: &str) -> String {
    if text.is_empty() {
        format!("{id}: from=<{sender}>, size={size}, nrcpt={nrcpt}")
    } else {
        format!("{id}: from=<{sender}>, size={size}, nrcpt={nrcpt} ({text})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn delay_formatting_matches_postfix() {
        let f = |s: u64, us: u32| format_delay(Duration::new(s, us * 1000), 2);
        assert_eq!(f(0, 0), "0");
        assert_eq!(f(0, 4_000), "0");
        assert_eq!(f(0, 5_000), "0.01");
        assert_eq!(f(0, 12_345), "0.01");
        assert_eq!(f(0, 123_456), "0.12");
        assert_eq!(f(1, 400_000), "1.4");
        assert_eq!(f(1, 449_000), "1.4");
        assert_eq!(f(9, 960_000), "10");
        assert_eq!(f(12, 345_678), "12");
        assert_eq!(f(123, 0), "123");
        assert_eq!(format_delay(Duration::new(0, 1_000), 6), "0.000001");
        assert_eq!(format_delay(Duration::new(0, 123_456_000), 6), "0.12");
        assert_eq!(format_delay(Duration::new(0, 400_000_000), 0), "0");
    }

    #[test]
    fn delivery_line_layout() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let line = delivery(
            &DeliveryLine {
                id: "8F3A21C09B",
                to: "bob@contoso.com",
                orig_to: Some("bob@contoso.com"),
                relay: "smtp.office365.com[52.98.1.2]:587",
                conn_use: 1,
                delays: Delays {
                    arrival: t0,
                    active: Some(t0 + Duration::from_millis(20)),
                    handoff: Some(t0 + Duration::from_millis(30)),
                    conn_done: Some(t0 + Duration::from_millis(930)),
                    done: t0 + Duration::from_millis(1430),
                },
                dsn: "2.0.0",
                status: "sent",
                reason: "250 2.0.0 OK <x@y>",
            },
            2,
        );
        assert_eq!(
            line,
            "8F3A21C09B: to=<bob@contoso.com>, relay=smtp.office365.com[52.98.1.2]:587, delay=1.4, delays=0.02/0.01/0.9/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK <x@y>)"
        );
        assert_eq!(
            opened("8F3A21C09B", "scan@contoso.com", 48211, 1, "queue active"),
            "8F3A21C09B: from=<scan@contoso.com>, size=48211, nrcpt=1 (queue active)"
        );
    }
}

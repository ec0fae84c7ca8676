//! Helpers for the fault tests (`tests/tests/faults_*.rs`): the postern
//! processes of one installation (to kill them at random or to measure
//! their CPU time), a strict SMTP client that tells a broken reply from a
//! cleanly closed connection, a load generator that records which messages
//! were acknowledged (a `250` to the end of DATA, or sendmail's exit 0),
//! counting deliveries by a unique id, and a small tmpfs for the queue.
//!
//! Every message the load sends carries `X-Fault-Id: <id>`; the fake
//! smart host's records are matched against the acknowledged ids by
//! [`tally`].
//!
//! The long variants of the fault tests run when [`LONG_ENV`]
//! (`POSTERN_TEST_LONG=1`) is set; see [`long`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::fake::Message;

/// Set to `1` to run the long variants of the fault tests (e.g. the full
/// 200 kills of the crash loop instead of the CI default).
pub const LONG_ENV: &str = "POSTERN_TEST_LONG";

/// True when [`LONG_ENV`] is set to something other than `0` or empty.
pub fn long() -> bool {
    std::env::var(LONG_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

// ---- randomness --------------------------------------------------------------

/// A small xorshift generator; the seed is printed by the tests so a
/// failing run can be repeated (`POSTERN_TEST_SEED`).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `POSTERN_TEST_SEED` when set, else from the clock.
    pub fn from_env() -> Rng {
        let seed = std::env::var("POSTERN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
            });
        Rng::new(seed)
    }

    /// A generator with this seed (0 is replaced by 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed it started from (meaningful before the first draw only).
    pub fn seed(&self) -> u64 {
        self.0
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
}

// ---- processes ---------------------------------------------------------------

/// One running postern process of an installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// `master` (the supervisor, `postern start-fg`/`start`), `smtpd`,
    /// `pickup`, `qmgr` or `smtp` (every delivery agent service).
    pub kind: String,
    /// The master.cf service name (`-n`), empty for the supervisor.
    pub service: String,
}

/// The kinds [`processes`] reports.
pub const KINDS: &[&str] = &["master", "smtpd", "pickup", "qmgr", "smtp"];

fn read_stat(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The live (not zombie) postern processes whose command line names the
/// configuration directory `etc` (`-c <etc>`): the supervisor and every
/// daemon it started, including orphans of a killed supervisor. Commands
/// such as `postern -c <etc> stop` or `postqueue` are not included.
pub fn processes(etc: &Path) -> Vec<Proc> {
    let etc = etc.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = args.windows(2).any(|w| w[0] == "-c" && w[1] == etc);
        if !ours {
            continue;
        }
        let argv0 = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_default();
        let kind = match argv0.as_str() {
            "postern" if args.iter().any(|a| a == "start-fg" || a == "start") => "master",
            "smtpd" | "pickup" | "qmgr" | "smtp" => argv0.as_str(),
            _ => continue,
        };
        let Some(stat) = read_stat(pid) else { continue };
        // Fields after the name: state, ppid, ...
        if stat.first().is_some_and(|s| s == "Z" || s == "X") {
            continue;
        }
        let ppid = stat.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let service = args
            .windows(2)
            .find(|w| w[0] == "-n")
            .map(|w| w[1].clone())
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            kind: kind.to_string(),
            service,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// User plus system CPU time of `pid` so far, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = read_stat(pid)?;
    // utime and stime are fields 14 and 15 of /proc/PID/stat; `stat` starts
    // at field 3.
    let utime: u64 = stat.get(11)?.parse().ok()?;
    let stime: u64 = stat.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Measures the CPU time the postern processes of an installation use over
/// a period: [`CpuMeter::start`], wait, [`CpuMeter::stop`].
#[derive(Debug)]
pub struct CpuMeter {
    etc: PathBuf,
    start: HashMap<i32, (String, u64)>,
    at: Instant,
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone)]
pub struct CpuReport {
    /// Wall time of the period.
    pub wall: Duration,
    /// CPU time of all postern processes over the period (processes that
    /// started during the period count from zero).
    pub total: Duration,
    /// The same per process kind.
    pub per_kind: BTreeMap<String, Duration>,
    /// Processes that exited during the period (their time is missing).
    pub exited: usize,
}

impl std::fmt::Display for CpuReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3}s CPU in {:.1}s (",
            self.total.as_secs_f64(),
            self.wall.as_secs_f64()
        )?;
        for (i, (k, d)) in self.per_kind.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k} {:.3}s", d.as_secs_f64())?;
        }
        write!(f, "; {} exited)", self.exited)
    }
}

impl CpuMeter {
    /// Takes the first reading.
    pub fn start(etc: &Path) -> CpuMeter {
        let start = processes(etc)
            .into_iter()
            .filter_map(|p| cpu_ticks(p.pid).map(|t| (p.pid, (p.kind, t))))
            .collect();
        CpuMeter {
            etc: etc.to_path_buf(),
            start,
            at: Instant::now(),
        }
    }

    /// Takes the second reading.
    pub fn stop(&self) -> CpuReport {
        let hz = ticks_per_second();
        let now = processes(&self.etc);
        let mut per_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen = HashSet::new();
        for p in &now {
            let Some(t) = cpu_ticks(p.pid) else { continue };
            seen.insert(p.pid);
            let before = self.start.get(&p.pid).map(|(_, t)| *t).unwrap_or(0);
            *per_kind.entry(p.kind.clone()).or_default() += t.saturating_sub(before);
        }
        let exited = self.start.keys().filter(|p| !seen.contains(p)).count();
        let d = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / hz);
        CpuReport {
            wall: self.at.elapsed(),
            total: d(per_kind.values().sum()),
            per_kind: per_kind.into_iter().map(|(k, v)| (k, d(v))).collect(),
            exited,
        }
    }
}

// ---- a strict SMTP client ----------------------------------------------------

/// Why a [`Client`] call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, timed out connecting).
    Connect(String),
    /// The server closed the connection (or reset it) between replies.
    Closed,
    /// No complete reply within the read timeout.
    Timeout,
    /// A reply that is not a well-formed SMTP reply: a truncated line, a
    /// line without CRLF, a bad code, a continuation line with another
    /// code, or the connection lost in the middle of a reply.
    Garbled(String),
    /// A write failed (the server is gone).
    Write(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Closed => write!(f, "connection closed"),
            Failure::Timeout => write!(f, "timeout"),
            Failure::Garbled(e) => write!(f, "garbled reply: {e}"),
            Failure::Write(e) => write!(f, "write: {e}"),
        }
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The code.
    pub code: u16,
    /// The text of each line (after the code and separator).
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined by `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// A blocking SMTP client that checks every reply strictly (see
/// [`Failure::Garbled`]).
pub struct Client {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

impl Client {
    /// Connects to 127.0.0.1:`port` and reads the greeting; `timeout` is
    /// the connect and read timeout.
    ///
    /// # Errors
    /// As [`Failure`].
    pub fn connect(port: u16, timeout: Duration) -> Result<(Client, Reply), Failure> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Failure::Connect(e.to_string()))?;
        tcp.set_read_timeout(Some(timeout))
            .map_err(|e| Failure::Connect(e.to_string()))?;
        tcp.set_write_timeout(Some(timeout))
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let wr = tcp
            .try_clone()
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let mut c = Client {
            rd: BufReader::new(tcp),
            wr,
        };
        let greeting = c.reply()?;
        Ok((c, greeting))
    }

    /// Sends raw bytes.
    ///
    /// # Errors
    /// [`Failure::Write`].
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.wr
            .write_all(bytes)
            .and_then(|()| self.wr.flush())
            .map_err(|e| Failure::Write(e.to_string()))
    }

    /// Sends a command line and reads its reply.
    ///
    /// # Errors
    /// As [`Failure`].
    pub fn cmd(&mut self, line: &str) -> Result<Reply, Failure> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// Reads one complete reply, checking its form.
    ///
    /// # Errors
    /// As [`Failure`].
    pub fn reply(&mut self) -> Result<Reply, Failure> {
        let mut code: Option<u16> = None;
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let r = self.rd.read_until(b'\n', &mut raw);
            let started = code.is_some() || !raw.is_empty();
            match r {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(if started {
                        Failure::Garbled(format!(
                            "reply incomplete after the read timeout: {lines:?} {:?}",
                            String::from_utf8_lossy(&raw)
                        ))
                    } else {
                        Failure::Timeout
                    });
                }
                Err(e) if is_reset(&e) && !started => return Err(Failure::Closed),
                Err(e) => {
                    return Err(Failure::Garbled(format!(
                        "{e} in the middle of a reply: {lines:?} {:?}",
                        String::from_utf8_lossy(&raw)
                    )));
                }
            }
            if raw.is_empty() {
                return Err(if started {
                    Failure::Garbled(format!(
                        "connection closed inside a multi-line reply {lines:?}"
                    ))
                } else {
                    Failure::Closed
                });
            }
            let line = String::from_utf8_lossy(&raw).into_owned();
            let Some(body) = line.strip_suffix("\r\n") else {
                return Err(Failure::Garbled(format!(
                    "reply line not ended by CRLF: {line:?}"
                )));
            };
            let b = body.as_bytes();
            let digits = b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit);
            let sep = b.get(3).copied();
            if !digits
                || !matches!(sep, None | Some(b' ') | Some(b'-'))
                || !(b'2'..=b'5').contains(&b[0])
            {
                return Err(Failure::Garbled(format!("bad reply line {body:?}")));
            }
            let c: u16 = body[..3].parse().unwrap_or(0);
            if code.is_some_and(|k| k != c) {
                return Err(Failure::Garbled(format!(
                    "continuation line with another code: {body:?} after {code:?}"
                )));
            }
            code = Some(c);
            lines.push(body.get(4..).unwrap_or("").to_string());
            if sep != Some(b'-') {
                return Ok(Reply { code: c, lines });
            }
        }
    }
}

// ---- messages and counting -----------------------------------------------------

/// The header carrying a message's unique id.
pub const ID_HEADER: &str = "X-Fault-Id";

/// A message with `X-Fault-Id: id` (CRLF line ends, about `size` bytes).
pub fn message(id: &str, size: usize) -> String {
    let mut m = format!(
        "From: load@contoso.test\r\nTo: bob@contoso.test\r\nSubject: fault test {id}\r\n{ID_HEADER}: {id}\r\n\r\nmessage {id}\r\n"
    );
    let line = format!("{}\r\n", "0123456789".repeat(7));
    while m.len() < size {
        m.push_str(&line);
    }
    m
}

/// The `X-Fault-Id` of a delivered message.
pub fn fault_id(m: &Message) -> Option<String> {
    m.header(ID_HEADER)
}

/// The postern queue ID a delivered message had: from the `Received:`
/// header smtpd adds (`with ESMTP id ID`) or the `Message-Id` pickup adds
/// (`<date.ID@host>`).
pub fn queue_id_of(m: &Message) -> Option<String> {
    let text = m.text();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let re = regex::Regex::new(r"(?:\bid |<\d{14}\.)([0-9A-F]{12})\b").ok()?;
    re.captures(head).map(|c| c[1].to_string())
}

/// Acknowledged ids against delivered messages.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Acknowledged messages.
    pub acked: usize,
    /// Acknowledged messages delivered at least once.
    pub delivered: usize,
    /// Acknowledged messages never delivered.
    pub lost: Vec<String>,
    /// Extra copies (a message delivered three times counts two).
    pub duplicates: usize,
    /// The ids delivered more than once, with their counts.
    pub duplicated: BTreeMap<String, usize>,
    /// Messages delivered without an acknowledgement (e.g. smtpd killed
    /// after the queue file was safe but before its `250` went out): fine.
    pub unacked_delivered: usize,
}

impl Tally {
    /// Duplicates as a percentage of the acknowledged messages.
    pub fn duplicate_percent(&self) -> f64 {
        if self.acked == 0 {
            0.0
        } else {
            100.0 * self.duplicates as f64 / self.acked as f64
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acked, {} delivered, {} lost, {} duplicates ({:.2}%), {} delivered without an ack",
            self.acked,
            self.delivered,
            self.lost.len(),
            self.duplicates,
            self.duplicate_percent(),
            self.unacked_delivered
        )
    }
}

/// Counts deliveries per id.
pub fn tally(acked: &[String], delivered: &[Message]) -> Tally {
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in delivered.iter().filter(|m| m.accepted()) {
        if let Some(id) = fault_id(m) {
            *count.entry(id).or_default() += 1;
        }
    }
    let acked_set: HashSet<&String> = acked.iter().collect();
    let mut t = Tally {
        acked: acked_set.len(),
        ..Tally::default()
    };
    for id in &acked_set {
        match count.get(*id) {
            Some(_) => t.delivered += 1,
            None => t.lost.push((*id).clone()),
        }
    }
    t.lost.sort();
    for (id, n) in &count {
        if *n > 1 {
            t.duplicates += n - 1;
            t.duplicated.insert(id.clone(), *n);
        }
        if !acked_set.contains(id) {
            t.unacked_delivered += 1;
        }
    }
    t
}

// ---- load ----------------------------------------------------------------------

/// What a [`Load`] sends.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The smtpd port.
    pub smtp_port: u16,
    /// Threads sending over SMTP.
    pub smtp_threads: usize,
    /// Threads running sendmail.
    pub sendmail_threads: usize,
    /// The configuration directory (`MAIL_CONFIG`).
    pub etc: PathBuf,
    /// Messages per SMTP session before QUIT.
    pub per_session: usize,
    /// Pause between two messages of one thread.
    pub pause: Duration,
    /// Approximate message size.
    pub size: usize,
    /// Prefix of the ids (`<prefix>-s<thread>-<n>`, `<prefix>-m<thread>-<n>`).
    pub prefix: String,
    /// Connect and read timeout of the SMTP clients.
    pub timeout: Duration,
}

impl LoadConfig {
    /// Defaults: 3 SMTP threads, 2 sendmail threads, 5 messages per
    /// session, 200 ms pause, 2 KB messages, 10 s timeout.
    pub fn new(smtp_port: u16, etc: &Path, prefix: &str) -> LoadConfig {
        LoadConfig {
            smtp_port,
            smtp_threads: 3,
            sendmail_threads: 2,
            etc: etc.to_path_buf(),
            per_session: 5,
            pause: Duration::from_millis(200),
            size: 2048,
            prefix: prefix.to_string(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Ids acknowledged by smtpd (`250` to the end of DATA).
    pub smtp_acked: Vec<String>,
    /// Ids acknowledged by sendmail (exit 0).
    pub sendmail_acked: Vec<String>,
    /// Messages tried without an acknowledgement.
    pub unacked: usize,
    /// Broken replies (see [`Failure::Garbled`]) and replies out of
    /// protocol (a code that cannot answer the command).
    pub garbled: Vec<String>,
    /// Sessions that ended with a `421` before the message was acknowledged.
    pub got_421: usize,
    /// Other failures by kind (connect, closed, timeout, 4xx, ...).
    pub failures: BTreeMap<String, usize>,
    /// sendmail exit codes other than 0.
    pub sendmail_exits: BTreeMap<String, usize>,
    /// Greetings seen, by text (without the code).
    pub banners: BTreeMap<String, usize>,
}

impl LoadReport {
    /// Every acknowledged id.
    pub fn acked(&self) -> Vec<String> {
        let mut v = self.smtp_acked.clone();
        v.extend(self.sendmail_acked.iter().cloned());
        v
    }

    fn merge(&mut self, o: LoadReport) {
        self.smtp_acked.extend(o.smtp_acked);
        self.sendmail_acked.extend(o.sendmail_acked);
        self.unacked += o.unacked;
        self.garbled.extend(o.garbled);
        self.got_421 += o.got_421;
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in o.sendmail_exits {
            *self.sendmail_exits.entry(k).or_default() += v;
        }
        for (k, v) in o.banners {
            *self.banners.entry(k).or_default() += v;
        }
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acked over SMTP, {} by sendmail, {} not acked, {} x 421, {} garbled; failures {:?}; sendmail exits {:?}",
            self.smtp_acked.len(),
            self.sendmail_acked.len(),
            self.unacked,
            self.got_421,
            self.garbled.len(),
            self.failures,
            self.sendmail_exits
        )
    }
}

/// Steady submission over SMTP and sendmail until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Load {
    /// Starts the threads.
    pub fn start(cfg: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for t in 0..cfg.smtp_threads {
            let (cfg, stop, live) = (cfg.clone(), stop.clone(), live.clone());
            threads.push(std::thread::spawn(move || {
                smtp_thread(&cfg, t, &stop, &live)
            }));
        }
        for t in 0..cfg.sendmail_threads {
            let (cfg, stop, live) = (cfg.clone(), stop.clone(), live.clone());
            threads.push(std::thread::spawn(move || {
                sendmail_thread(&cfg, t, &stop, &live)
            }));
        }
        Load {
            stop,
            threads,
            live,
        }
    }

    /// Messages acknowledged so far.
    pub fn acked_so_far(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Stops the threads (each finishes the message in hand) and returns
    /// what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut r = LoadReport::default();
        for t in self.threads {
            match t.join() {
                Ok(x) => r.merge(x),
                Err(_) => r.garbled.push("a load thread panicked".into()),
            }
        }
        r
    }
}

fn bump(live: &AtomicUsize) {
    live.fetch_add(1, Ordering::SeqCst);
}

/// The replies a command may get without being out of protocol.
fn plausible(expected: u16, r: &Reply) -> bool {
    r.code == expected || r.code >= 400
}

fn smtp_thread(cfg: &LoadConfig, t: usize, stop: &AtomicBool, live: &AtomicUsize) -> LoadReport {
    let mut rep = LoadReport::default();
    let mut n = 0usize;
    let fail = |rep: &mut LoadReport, what: String| *rep.failures.entry(what).or_default() += 1;
    'sessions: while !stop.load(Ordering::SeqCst) {
        let (mut c, greeting) = match Client::connect(cfg.smtp_port, cfg.timeout) {
            Ok(x) => x,
            Err(e) => {
                note(&mut rep, &e, "connect");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if greeting.code != 220 {
            if greeting.code == 421 {
                rep.got_421 += 1;
            } else {
                fail(&mut rep, format!("greeting {}", greeting.code));
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        *rep.banners.entry(greeting.text()).or_default() += 1;
        let step = |c: &mut Client, rep: &mut LoadReport, line: &str, want: u16| -> Option<Reply> {
            match c.cmd(line) {
                Ok(r) if r.code == want => Some(r),
                Ok(r) => {
                    if !plausible(want, &r) {
                        rep.garbled.push(format!("{line} -> {r}"));
                    } else if r.code == 421 {
                        rep.got_421 += 1;
                    } else {
                        *rep.failures
                            .entry(format!("{} to {line}", r.code))
                            .or_default() += 1;
                    }
                    None
                }
                Err(e) => {
                    note(rep, &e, line.split(' ').next().unwrap_or(line));
                    None
                }
            }
        };
        if step(&mut c, &mut rep, "EHLO load.test", 250).is_none() {
            continue;
        }
        for _ in 0..cfg.per_session.max(1) {
            if stop.load(Ordering::SeqCst) {
                let _ = c.cmd("QUIT");
                break 'sessions;
            }
            let id = format!("{}-s{t}-{n}", cfg.prefix);
            n += 1;
            rep.unacked += 1;
            if step(&mut c, &mut rep, "MAIL FROM:<load@contoso.test>", 250).is_none()
                || step(&mut c, &mut rep, "RCPT TO:<bob@contoso.test>", 250).is_none()
                || step(&mut c, &mut rep, "DATA", 354).is_none()
            {
                continue 'sessions;
            }
            let body = format!("{}.\r\n", message(&id, cfg.size));
            if let Err(e) = c.send(body.as_bytes()) {
                note(&mut rep, &e, "message");
                continue 'sessions;
            }
            match c.reply() {
                Ok(r) if r.code == 250 => {
                    rep.unacked -= 1;
                    rep.smtp_acked.push(id);
                    bump(live);
                }
                Ok(r) => {
                    if !plausible(250, &r) {
                        rep.garbled.push(format!("end of data -> {r}"));
                    } else if r.code == 421 {
                        rep.got_421 += 1;
                    } else {
                        fail(&mut rep, format!("{} to end of data", r.code));
                    }
                    continue 'sessions;
                }
                Err(e) => {
                    note(&mut rep, &e, "end of data");
                    continue 'sessions;
                }
            }
            std::thread::sleep(cfg.pause);
        }
        let _ = c.cmd("QUIT");
    }
    rep
}

fn note(rep: &mut LoadReport, e: &Failure, when: &str) {
    match e {
        Failure::Garbled(g) => rep.garbled.push(format!("{when}: {g}")),
        Failure::Connect(_) => *rep.failures.entry("connect".into()).or_default() += 1,
        other => {
            let k = match other {
                Failure::Closed => "closed",
                Failure::Timeout => "timeout",
                _ => "write",
            };
            *rep.failures.entry(format!("{k} at {when}")).or_default() += 1;
        }
    }
}

/// A `sendmail` command for the installation at `etc`.
///
/// # Errors
/// The binary is missing.
pub fn sendmail_command(etc: &Path) -> Result<Command> {
    let mut cmd = super::command("sendmail")?;
    cmd.env("MAIL_CONFIG", etc)
        .arg("-C")
        .arg(etc.join("main.cf"));
    Ok(cmd)
}

fn sendmail_thread(
    cfg: &LoadConfig,
    t: usize,
    stop: &AtomicBool,
    live: &AtomicUsize,
) -> LoadReport {
    let mut rep = LoadReport::default();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("{}-m{t}-{n}", cfg.prefix);
        n += 1;
        let body = message(&id, cfg.size).replace("\r\n", "\n");
        let out = sendmail_command(&cfg.etc).and_then(|mut cmd| {
            cmd.args(["-f", "load@contoso.test", "bob@contoso.test"]);
            super::process::run(cmd, Some(body.as_bytes()), Duration::from_secs(60))
        });
        match out {
            Ok(o) if o.success() => {
                rep.sendmail_acked.push(id);
                bump(live);
            }
            Ok(o) => {
                rep.unacked += 1;
                let k = o
                    .code()
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_else(|| "signal".into());
                *rep.sendmail_exits.entry(k).or_default() += 1;
            }
            Err(e) => {
                rep.unacked += 1;
                *rep.sendmail_exits.entry(format!("error {e}")).or_default() += 1;
            }
        }
        std::thread::sleep(cfg.pause);
    }
    rep
}

// ---- a small file system for the queue -----------------------------------------

/// A tmpfs mounted by [`mount_tmpfs`]; unmounted (lazily: daemons may
/// still hold files) when dropped.
#[derive(Debug)]
pub struct Mount(PathBuf);

impl Mount {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. `4m`) on `dir` (created if needed).
/// Needs root.
///
/// # Errors
/// `mount` fails.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Result<Mount> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .context("run mount")?;
    if !st.success() {
        bail!("mount a tmpfs on {} failed ({st})", dir.display());
    }
    Ok(Mount(dir.to_path_buf()))
}

/// Fills the file system holding `dir` with `dir/<name>` until a write
/// fails with ENOSPC; returns the bytes written.
///
/// # Errors
/// Any other error.
pub fn fill(dir: &Path, name: &str) -> Result<u64> {
    let path = dir.join(name);
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let block = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut chunk = block.len();
    loop {
        match f.write(&block[..chunk]) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Down to single bytes, so not a byte is left.
                if chunk == 1 {
                    break;
                }
                chunk = (chunk / 4).max(1);
            }
            Err(e) => return Err(e).with_context(|| format!("write {}", path.display())),
        }
    }
    let _ = f.sync_all();
    Ok(total)
}

//! What the queue manager knows, for monitoring: queue sizes per queue and
//! per route, deliveries by outcome and reply class since qmgr started,
//! each mailbox's use of its limits, and the expiry of each cached OAuth2
//! access token.
//!
//! qmgr holds the live counters and the accounts' windows, so qmgr answers:
//!
//! - `metrics_listen` set: an HTTP endpoint ([`http`]) serving
//!   `/metrics` (Prometheus text format) and `/status` (the JSON below).
//!   The socket is bound before qmgr gives up root, like smtpd's.
//! - always: the status file `pid/qmgr.status.json` (mode 0600), written
//!   when `postern status --json` asks with a `S<token>` wake-up (the file
//!   then lists the token) and after each scrape.
//!
//! Nothing is collected in between: a request marks the snapshot wanted,
//! the event loop builds it once per turn, committing the index first (so
//! the index it reads is current) and hands it to the waiting requests.
//! Scrapes never touch the manager's state themselves, and a hung
//! scheduler shows as a stale snapshot, not as a hung endpoint.
//!
//! Tokens are never read into the output: only a cache file's account,
//! client ID and times are.

mod http;
mod render;

use crate::accounts::{Account, Hold, Limits, Usage};
use crate::manager::{Manager, Outcome};
use queue::explain::Treatment;
use queue::layout::{Queue, QueueName};
use queue::log;
use queue::route::Route;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};
use tokio::sync::{Notify, watch};

pub use http::bind;

/// Delivery outcomes, in the order of [`Metrics`]' counters.
pub const STATUSES: [&str; 3] = ["sent", "deferred", "bounced"];
/// Reply classes (`queue::explain::Treatment`), in counter order.
pub const CLASSES: [&str; 4] = ["normal", "hold_route", "hold_account", "slow_down"];

/// More missing messages than this are read with one query for all
/// recipients rather than one query each.
const BULK_READ: usize = 200;

/// Shared between the event loop and the HTTP tasks.
#[derive(Debug, Default)]
struct Shared {
    /// A scrape wants a new snapshot.
    pending: AtomicBool,
    /// Wakes the event loop for it.
    want: Notify,
}

/// A rendered snapshot.
#[derive(Debug)]
pub struct Published {
    /// Counts up with each snapshot.
    generation: u64,
    /// When it was built (`None`: nothing built yet).
    built: Option<Instant>,
    /// `/status` and the status file.
    json: String,
    /// `/metrics`.
    text: String,
}

/// qmgr's monitoring state (a field of the manager).
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    /// Recipients by outcome and reply class since start.
    deliveries: [[u64; CLASSES.len()]; STATUSES.len()],
    /// Tokens of `postern status --json` requests not yet answered.
    answer: Vec<String>,
    shared: Arc<Shared>,
    publish: watch::Sender<Arc<Published>>,
    /// Routes of deferred and held messages by queue ID, with the queue
    /// and attempt count they were computed for.
    routes: HashMap<String, CachedRoutes>,
    status_file: PathBuf,
}

#[derive(Debug, Clone)]
struct CachedRoutes {
    queue: String,
    attempts: i64,
    /// Pending recipients per route.
    counts: Vec<(String, u64)>,
}

/// Messages and recipients waiting for one route in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLoad {
    /// Messages with at least one pending recipient for the route.
    pub messages: u64,
    /// Pending recipients.
    pub recipients: u64,
}

/// One mailbox (SASL account).
#[derive(Debug, Clone)]
pub struct AccountStatus {
    /// The SASL user.
    pub name: String,
    /// Its limits (main.cf's until the account was used since start).
    pub limits: Limits,
    /// What it used.
    pub usage: Usage,
}

/// One cached OAuth2 access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// The account (SASL user) it signs in as.
    pub account: String,
    /// The app registration's client ID.
    pub client_id: String,
    /// When it expires.
    pub expires_at: SystemTime,
    /// When it was issued.
    pub obtained_at: SystemTime,
}

/// Everything one snapshot reports.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub time: SystemTime,
    /// When qmgr started.
    pub started: SystemTime,
    /// qmgr's pid.
    pub pid: u32,
    /// Messages per queue, in [`QueueName::ALL`] order.
    pub queues: Vec<(QueueName, u64)>,
    /// Load per (route, queue): `transport:nexthop`, or `error`/`discard`.
    pub routes: BTreeMap<(String, &'static str), RouteLoad>,
    /// Recipients by outcome and class since start.
    pub deliveries: [[u64; CLASSES.len()]; STATUSES.len()],
    /// Mailboxes, by name.
    pub accounts: Vec<AccountStatus>,
    /// Routes without an account that are held: (route, hold).
    pub held_routes: Vec<(String, Hold)>,
    /// Cached access tokens.
    pub tokens: Vec<TokenStatus>,
    /// The `postern status --json` tokens this snapshot answers.
    pub answered: Vec<String>,
}

impl Metrics {
    /// The state, serving `listener` (bound by [`bind`]) if any. Must run
    /// inside the event loop's runtime.
    pub fn new(queue: &Queue, listener: Option<std::net::TcpListener>) -> Metrics {
        let (publish, rx) = watch::channel(Arc::new(Published {
            generation: 0,
            built: None,
            json: String::new(),
            text: String::new(),
        }));
        let shared = Arc::new(Shared::default());
        if let Some(l) = listener {
            http::spawn(l, shared.clone(), rx);
        }
        Metrics {
            started: SystemTime::now(),
            deliveries: Default::default(),
            answer: Vec::new(),
            shared,
            publish,
            routes: HashMap::new(),
            status_file: queue.pid_dir().join(queue::wake::STATUS_FILE),
        }
    }

    /// Counts one recipient's outcome of a delivery attempt (as logged:
    /// `status=sent|deferred|bounced`), with the class of the reply.
    pub fn count(&mut self, outcome: &Outcome) {
        let (status, failure) = match outcome {
            Outcome::Sent => (0, None),
            Outcome::Deferred(f) => (1, Some(f)),
            Outcome::Bounced(f) => (2, Some(f)),
        };
        let class = failure
            .map(|f| queue::explain::treatment(f.diagnostic.as_deref().unwrap_or(&f.reason)))
            .unwrap_or(Treatment::Normal);
        let c = match class {
            Treatment::Normal => 0,
            Treatment::HoldRoute => 1,
            Treatment::HoldAccount => 2,
            Treatment::SlowDown => 3,
        };
        self.deliveries[status][c] += 1;
    }

    /// `postern status --json` asks (the `S` wake-up with its token).
    pub fn request(&mut self, token: &str) {
        let t: String = token
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(64)
            .collect();
        if self.answer.len() < 64 {
            self.answer.push(t);
        }
    }

    /// What the event loop waits on besides its own events: a scrape
    /// wanting a snapshot.
    pub fn wanted(&self) -> Wanted {
        Wanted(self.shared.clone())
    }
}

/// A scrape's wake-up for the event loop (see [`Metrics::wanted`]).
#[derive(Debug, Clone)]
pub struct Wanted(Arc<Shared>);

impl Wanted {
    /// Resolves when a snapshot is wanted.
    pub async fn notified(&self) {
        self.0.want.notified().await
    }
}

/// Builds and publishes a snapshot if one was asked for since the last
/// turn. Called by the event loop once per turn.
pub fn refresh(m: &mut Manager) {
    let scraped = m.metrics.shared.pending.swap(false, Ordering::SeqCst);
    if !scraped && m.metrics.answer.is_empty() {
        return;
    }
    let answered = std::mem::take(&mut m.metrics.answer);
    // The snapshot reads the index: commit what is pending first.
    m.commit();
    let snap = snapshot(m, answered);
    let json = render::json(&snap).to_string();
    let text = render::prometheus(&snap);
    if let Err(e) = write_status_file(&m.metrics.status_file, &json) {
        log::warning(&format!(
            "cannot write the status file {}: {e}",
            m.metrics.status_file.display()
        ));
    }
    let generation = m.metrics.publish.borrow().generation + 1;
    m.metrics.publish.send_replace(Arc::new(Published {
        generation,
        built: Some(Instant::now()),
        json,
        text,
    }));
}

/// Replaces the status file atomically (temporary file, rename), mode 0600.
fn write_status_file(path: &Path, json: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(json.as_bytes())?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Takes a snapshot of the manager.
fn snapshot(m: &mut Manager, answered: Vec<String>) -> Snapshot {
    let now = SystemTime::now();
    Snapshot {
        time: now,
        started: m.metrics.started,
        pid: std::process::id(),
        queues: queue_sizes(m),
        routes: route_loads(m),
        deliveries: m.metrics.deliveries,
        accounts: accounts(m, now),
        held_routes: held_routes(m, now),
        tokens: tokens(m),
        answered,
    }
}

/// maildrop, incoming and corrupt from their directories (qmgr has not
/// indexed those files); active, deferred and hold from the index.
fn queue_sizes(m: &Manager) -> Vec<(QueueName, u64)> {
    let indexed: HashMap<String, u64> = match m.index.queue_counts() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            log::warning(&format!("{e}; queue sizes are counted from the files"));
            HashMap::new()
        }
    };
    QueueName::ALL
        .iter()
        .map(|&q| {
            let n = match q {
                QueueName::Active | QueueName::Deferred | QueueName::Hold
                    if !indexed.is_empty() =>
                {
                    indexed.get(q.as_str()).copied().unwrap_or(0)
                }
                _ => m.queue.list(q).map(|v| v.len() as u64).unwrap_or(0),
            };
            (q, n)
        })
        .collect()
}

/// The route label of a recipient: `transport:nexthop`, `error`,
/// `discard`, or `unresolved` when a table lookup failed.
fn route_label(m: &Manager, rcpt: &str, fixed: Option<&str>, sender: &str) -> String {
    match m.router.resolve(&m.cfg, rcpt, fixed, sender) {
        Ok(Route::Agent { transport, nexthop }) => format!("{transport}:{nexthop}"),
        Ok(Route::Error { .. }) => "error".into(),
        Ok(Route::Discard { .. }) => "discard".into(),
        Err(_) => "unresolved".into(),
    }
}

fn add_counts(
    out: &mut BTreeMap<(String, &'static str), RouteLoad>,
    queue: &'static str,
    counts: &[(String, u64)],
) {
    for (route, n) in counts {
        let e = out.entry((route.clone(), queue)).or_default();
        e.messages += 1;
        e.recipients += n;
    }
}

fn tally(routes: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for r in routes {
        *by.entry(r).or_default() += 1;
    }
    by.into_iter().collect()
}

/// Pending recipients per route: active messages from memory (their
/// recipients finish as we speak), deferred and held ones from the index,
/// resolved once per message and attempt.
fn route_loads(m: &mut Manager) -> BTreeMap<(String, &'static str), RouteLoad> {
    let mut out = BTreeMap::new();
    for msg in m.msgs.values() {
        let pending = msg.env.recipients.iter().enumerate().filter(|(i, r)| {
            !r.done
                && !matches!(
                    msg.outcomes.get(i),
                    Some(Outcome::Sent | Outcome::Bounced(_))
                )
        });
        let counts = tally(
            pending.map(|(_, r)| route_label(m, &r.addr, r.route.as_deref(), &msg.env.sender)),
        );
        add_counts(&mut out, "active", &counts);
    }
    let keys = match m.index.message_keys() {
        Ok(k) => k,
        Err(e) => {
            log::warning(&format!("{e}; routes of deferred mail not counted"));
            return out;
        }
    };
    let mut cache = std::mem::take(&mut m.metrics.routes);
    let waiting: Vec<_> = keys
        .into_iter()
        .filter(|k| k.queue == "deferred" || k.queue == "hold")
        .collect();
    let missing: Vec<&queue::index::MessageKey> = waiting
        .iter()
        .filter(|k| {
            cache
                .get(&k.id)
                .is_none_or(|c| c.queue != k.queue || c.attempts != k.attempts)
        })
        .collect();
    let mut bulk = if missing.len() > BULK_READ {
        m.index.all_recipients().unwrap_or_default()
    } else {
        HashMap::new()
    };
    for k in missing {
        let rows = match bulk.remove(&k.id) {
            Some(r) => r,
            None => m.index.recipients(&k.id).unwrap_or_default(),
        };
        let counts = tally(
            rows.iter()
                .filter(|r| !r.done)
                .map(|r| route_label(m, &r.addr, None, &k.sender)),
        );
        cache.insert(
            k.id.clone(),
            CachedRoutes {
                queue: k.queue.clone(),
                attempts: k.attempts,
                counts,
            },
        );
    }
    // Forget messages that left.
    let live: std::collections::HashSet<&str> = waiting.iter().map(|k| k.id.as_str()).collect();
    cache.retain(|id, _| live.contains(id.as_str()));
    for c in cache.values() {
        let q = if c.queue == "hold" {
            "hold"
        } else {
            "deferred"
        };
        add_counts(&mut out, q, &c.counts);
    }
    m.metrics.routes = cache;
    out
}

/// Mailboxes in use since start, and those with ledger entries not yet
/// used since start (with main.cf's limits).
fn accounts(m: &Manager, now: SystemTime) -> Vec<AccountStatus> {
    let mut out: Vec<AccountStatus> = m
        .accounts
        .iter()
        .filter(|(name, _)| !name.starts_with("dest:"))
        .map(|(name, a)| AccountStatus {
            name: name.clone(),
            limits: a.limits,
            usage: a.usage(now),
        })
        .collect();
    let main_limits = Limits::from_config(&m.cfg);
    for (name, rows) in &m.ledger_rows {
        if name.starts_with("dest:") || m.accounts.contains_key(name) {
            continue;
        }
        let a = Account::new(name, main_limits, rows);
        out.push(AccountStatus {
            name: name.clone(),
            limits: main_limits,
            usage: a.usage(now),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Routes without a mailbox whose deliveries are held.
fn held_routes(m: &Manager, now: SystemTime) -> Vec<(String, Hold)> {
    let mut out: Vec<(String, Hold)> = m
        .accounts
        .iter()
        .filter_map(|(name, a)| {
            let route = name.strip_prefix("dest:")?;
            a.usage(now).hold.map(|h| (route.to_string(), h))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The access tokens in the token cache directories of main.cf and of the
/// transports in use.
fn tokens(m: &mut Manager) -> Vec<TokenStatus> {
    let mut dirs = vec![m.cfg.smtp_oauth2_token_cache_directory.clone()];
    let transports: Vec<String> = m.dests.keys().map(|k| k.transport.clone()).collect();
    for t in transports {
        let d = m
            .transports
            .get(&t)
            .cfg
            .smtp_oauth2_token_cache_directory
            .clone();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        let d = PathBuf::from(d.trim());
        if d.is_absolute() {
            out.extend(read_token_dir(&d));
        }
    }
    out.sort_by(|a, b| (&a.account, &a.client_id).cmp(&(&b.account, &b.client_id)));
    out.dedup();
    out
}

/// Token cache files (`<key>.json`; not the `rt-*.json` copies of rotated
/// refresh tokens). Only regular files, never through a symbolic link.
pub fn read_token_dir(dir: &Path) -> Vec<TokenStatus> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with("rt-") || name.starts_with('.') {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Some(t) = read_token_file(&e.path()) {
            out.push(t);
        }
    }
    out
}

fn read_token_file(path: &Path) -> Option<TokenStatus> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut bytes).ok()?;
    let j: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if j["version"] != 1 {
        return None;
    }
    let ms = |k: &str| {
        j[k].as_u64()
            .map(|v| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(v))
    };
    Some(TokenStatus {
        account: j["user"].as_str()?.to_string(),
        client_id: j["client_id"].as_str().unwrap_or("").to_string(),
        expires_at: ms("expires_at_ms")?,
        obtained_at: ms("obtained_at_ms").unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::Failure;

    #[test]
    fn outcomes_are_counted_by_status_and_reply_class() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut m = Metrics::new(&Queue::new(dir.path()), None);
        m.count(&Outcome::Sent);
        m.count(&Outcome::Sent);
        let throttled = Failure::local(
            "a@b",
            "4.3.2",
            "host x[1.2.3.4] said: 432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        );
        m.count(&Outcome::Deferred(throttled));
        m.count(&Outcome::Bounced(Failure::local(
            "a@b",
            "5.1.10",
            "host x[1.2.3.4] said: 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found",
        )));
        assert_eq!(m.deliveries[0], [2, 0, 0, 0]);
        assert_eq!(m.deliveries[1][3], 1, "{:?}", m.deliveries);
        assert_eq!(m.deliveries[2], [1, 0, 0, 0]);
    }

    #[test]
    fn token_files_give_times_and_never_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let rec = serde_json::json!({
            "version": 1, "user": "scanner@contoso.com", "endpoint": "https://x",
            "client_id": "app", "scope": "s", "access_token": "eyJ.secret.token",
            "expires_at_ms": 1_800_000_000_000u64, "obtained_at_ms": 1_799_996_400_000u64,
        });
        std::fs::write(dir.path().join("k1.json"), rec.to_string()).unwrap();
        std::fs::write(dir.path().join("rt-1.json"), rec.to_string()).unwrap();
        std::fs::write(dir.path().join("k1.lock"), "").unwrap();
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        std::os::unix::fs::symlink(dir.path().join("k1.json"), dir.path().join("link.json"))
            .unwrap();
        let t = read_token_dir(dir.path());
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].account, "scanner@contoso.com");
        assert_eq!(
            t[0].expires_at,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
        );
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn status_tokens_are_sanitised() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut m = Metrics::new(&Queue::new(dir.path()), None);
        m.request("123-abc\"\n<x>");
        assert_eq!(m.answer, vec!["123-abcx".to_string()]);
    }
}

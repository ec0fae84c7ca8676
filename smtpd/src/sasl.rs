//! Inbound SMTP AUTH: [`Authenticator`] checks user names and passwords
//! against `smtpd_sasl_password_file` ([`conf::passwd`]), and
//! [`FailureLimiter`] counts failed attempts per client address
//! (`smtpd_client_auth_failure_limit` per `anvil_rate_time_unit`).
//!
//! The password hash (scrypt, tens of milliseconds and 16 MiB) runs on
//! tokio's blocking pool, at most one per CPU at a time, so neither the
//! runtime nor memory suffer when many clients authenticate at once.
//! Successful checks are remembered for a few minutes under a keyed hash
//! of the password (never the password), so a device that connects for
//! every message does not pay the hash each time. The file is re-read by
//! itself when it changes (`postern passwd` needs no `postern reload`).

use conf::passwd::{self, Users};
use openssl::pkey::{PKey, Private};
use proto::sasl::Secret;
use queue::log;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a successful check is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most remembered successes; beyond it, expired ones are dropped, then all.
const CACHE_MAX: usize = 10_000;
/// How often the file's identity (inode, size, times) is looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Most client addresses [`FailureLimiter`] tracks.
const LIMITER_MAX_CLIENTS: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (plain
    // assignments), so a panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Verifies SMTP AUTH credentials against `smtpd_sasl_password_file`.
/// Cheap to clone; clones share the users, the cache and the hash slots.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    mail_owner_gid: Option<u32>,
    state: Mutex<State>,
    cache: Mutex<Cache>,
    /// Random per-process HMAC key for the cache.
    cache_key: PKey<Private>,
    /// One permit per concurrent scrypt run.
    kdf_slots: Arc<Semaphore>,
}

/// (user, HMAC of user and password) → (expiry, generation of the file).
type Cache = HashMap<(String, [u8; 32]), (Instant, u64)>;

struct State {
    users: Arc<Users>,
    stamp: Option<Stamp>,
    /// Bumped at every reload; cache entries of older generations are void.
    generation: u64,
    checked: Instant,
}

/// What identifies one version of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The group that may read secret files: `mail_owner`'s as root, else the
/// process's own (smtpd has already become `mail_owner`, or runs as an
/// ordinary user).
fn mail_owner_gid(cfg: &conf::Config) -> Option<u32> {
    if nix::unistd::geteuid().is_root() {
        queue::service::mail_owner_ids(cfg).ok().map(|(_, g)| g)
    } else {
        Some(nix::unistd::getegid().as_raw())
    }
}

/// As root, before privileges are dropped: can `mail_owner` read `path`?
/// Later reloads happen as `mail_owner`.
fn check_mail_owner_can_read(cfg: &conf::Config, path: &Path) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    // A missing account is reported when privileges are dropped.
    let Ok((uid, gid)) = queue::service::mail_owner_ids(cfg) else {
        return Ok(());
    };
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = m.mode();
    let readable = (m.uid() == uid && mode & 0o400 != 0)
        || (m.gid() == gid && mode & 0o040 != 0)
        || mode & 0o004 != 0;
    if readable {
        return Ok(());
    }
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    let p = path.display();
    Err(format!(
        "smtpd_sasl_password_file {p}: smtpd reads it as mail_owner {} and cannot; run: chown root:{group} {p} && chmod 640 {p}",
        cfg.mail_owner
    ))
}

impl Authenticator {
    /// Checks the permissions of `smtpd_sasl_password_file` (DESIGN §7: 0600
    /// or 0640, owned by root or by smtpd's user, readable by `mail_owner`)
    /// and loads it.
    ///
    /// # Errors
    /// The file is missing, unsafe, unreadable or has bad lines; the text
    /// says what to do and never quotes a hash.
    pub fn new(cfg: &conf::Config) -> Result<Authenticator, String> {
        let path = PathBuf::from(&cfg.smtpd_sasl_password_file);
        if path.as_os_str().is_empty() {
            return Err(
                "smtpd_sasl_auth_enable = yes but smtpd_sasl_password_file is empty".into(),
            );
        }
        let p = path.display();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "smtpd_sasl_auth_enable = yes but smtpd_sasl_password_file {p} does not exist; add a user with: postern passwd add USER"
                ));
            }
            _ => {}
        }
        let gid = mail_owner_gid(cfg);
        passwd::check_permissions(&path, gid)
            .map_err(|e| format!("smtpd_sasl_password_file {e}"))?;
        check_mail_owner_can_read(cfg, &path)?;
        let stamp = stamp(&path);
        let users = Users::load(&path).map_err(|errs| {
            errs.iter()
                .map(|e| match e {
                    conf::Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        format!(
                            "smtpd_sasl_password_file {p}: {source}; smtpd reads it as mail_owner {}: chown root:<its group> {p} && chmod 640 {p}",
                            cfg.mail_owner
                        )
                    }
                    e => format!("smtpd_sasl_password_file {e}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        if users.is_empty() {
            log::warning(&format!(
                "smtpd_sasl_password_file {p} has no users: every AUTH fails (postern passwd add USER)"
            ));
        }
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).map_err(|e| format!("random key: {e}"))?;
        let cache_key = PKey::hmac(&key).map_err(|e| format!("HMAC key: {e}"))?;
        let slots = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        Ok(Authenticator {
            inner: Arc::new(Inner {
                path,
                mail_owner_gid: gid,
                state: Mutex::new(State {
                    users: Arc::new(users),
                    stamp,
                    generation: 0,
                    checked: Instant::now(),
                }),
                cache: Mutex::new(HashMap::new()),
                cache_key,
                kdf_slots: Arc::new(Semaphore::new(slots)),
            }),
        })
    }

    /// True when `user` exists and `password` is theirs. Unknown users
    /// cost as much as known ones. Never blocks the runtime: the file check
    /// and the hash run on the blocking pool.
    pub async fn verify(&self, user: &str, password: &Secret) -> bool {
        self.refresh().await;
        let tag = self.inner.tag(user, password);
        let (users, generation) = {
            let s = lock(&self.inner.state);
            (s.users.clone(), s.generation)
        };
        if let Some(tag) = tag
            && self.inner.cached(user, &tag, generation)
        {
            return true;
        }
        let Ok(permit) = self.inner.kdf_slots.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return false;
        };
        let (u, pw) = (user.to_string(), password.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            users.verify(&u, pw.expose())
        })
        .await
        .unwrap_or(false);
        if ok && let Some(tag) = tag {
            self.inner.remember(user, tag, generation);
        }
        ok
    }

    /// Re-reads the file when it changed, looking at most once a second.
    async fn refresh(&self) {
        {
            let mut s = lock(&self.inner.state);
            let now = Instant::now();
            if now.duration_since(s.checked) < RELOAD_CHECK {
                return;
            }
            s.checked = now;
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.reload_if_changed()).await;
    }
}

impl Inner {
    /// HMAC-SHA256(per-process key, user NUL password).
    fn tag(&self, user: &str, password: &Secret) -> Option<[u8; 32]> {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.cache_key)
                .ok()?;
        s.update(user.as_bytes()).ok()?;
        s.update(b"\0").ok()?;
        s.update(password.expose().as_bytes()).ok()?;
        let v = s.sign_to_vec().ok()?;
        v.try_into().ok()
    }

    fn cached(&self, user: &str, tag: &[u8; 32], generation: u64) -> bool {
        let cache = lock(&self.cache);
        matches!(
            cache.get(&(user.to_string(), *tag)),
            Some(&(expiry, g)) if g == generation && Instant::now() < expiry
        )
    }

    fn remember(&self, user: &str, tag: [u8; 32], generation: u64) {
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (expiry, _)| now < *expiry);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert((user.to_string(), tag), (now + CACHE_TTL, generation));
    }

    /// Runs on the blocking pool. A file that disappeared, became unsafe or
    /// unreadable leaves no user able to log in (fail closed) until fixed;
    /// bad lines are skipped and logged.
    fn reload_if_changed(&self) {
        let new_stamp = stamp(&self.path);
        if lock(&self.state).stamp == new_stamp {
            return;
        }
        let p = self.path.display();
        let users = match new_stamp {
            None => {
                log::error(&format!(
                    "smtpd_sasl_password_file {p} is gone or cannot be examined: every AUTH fails until it is back"
                ));
                Users::default()
            }
            Some(_) => match passwd::check_permissions(&self.path, self.mail_owner_gid) {
                Err(e) => {
                    log::error(&format!(
                        "smtpd_sasl_password_file {e}; every AUTH fails until this is fixed"
                    ));
                    Users::default()
                }
                Ok(()) => match Users::load_lenient(&self.path) {
                    Ok((users, errors)) => {
                        for e in &errors {
                            log::warning(&format!(
                                "smtpd_sasl_password_file {e}; the line is ignored"
                            ));
                        }
                        log::info(&format!(
                            "smtpd_sasl_password_file {p} reloaded: {} users",
                            users.len()
                        ));
                        users
                    }
                    Err(e) => {
                        log::error(&format!(
                            "smtpd_sasl_password_file {e}; every AUTH fails until this is fixed"
                        ));
                        Users::default()
                    }
                },
            },
        };
        {
            let mut s = lock(&self.state);
            s.users = Arc::new(users);
            s.stamp = new_stamp;
            s.generation += 1;
        }
        // A changed or removed password must not live on in the cache.
        lock(&self.cache).clear();
    }
}

/// Counts failed AUTH attempts per client address in a sliding window:
/// a client with `smtpd_client_auth_failure_limit` failures within the
/// last `anvil_rate_time_unit` is [`blocked`](FailureLimiter::blocked)
/// until the oldest of them leaves the window. IPv4-mapped IPv6
/// addresses count as IPv4. Memory is bounded: idle clients are
/// forgotten, and at most 100,000 clients are tracked (when full, those
/// whose last failure is oldest are dropped first).
pub struct FailureLimiter {
    limit: usize,
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
    /// One password check at a time per client address (see [`Turn`]).
    turns: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// A client's turn to have a password checked, from [`FailureLimiter::turn`].
///
/// Without turns, parallel connections from one address all passed the
/// [`FailureLimiter::blocked`] check before any of their failures was
/// counted, so an attacker got as many guesses as connections (24 with
/// 20 connections and a limit of 5, tests/tests/hostile_resources.rs).
/// Holding the turn from the check to [`FailureLimiter::record_failure`]
/// makes check and count one step per address; other addresses are not
/// affected, and a client's checks only queue behind its own.
pub struct Turn<'a> {
    limiter: &'a FailureLimiter,
    ip: IpAddr,
    slot: Option<(
        Arc<tokio::sync::Mutex<()>>,
        tokio::sync::OwnedMutexGuard<()>,
    )>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some((slot, guard)) = self.slot.take() {
            drop(guard);
            let mut turns = lock(&self.limiter.turns);
            // The table's reference and ours: nobody else waits.
            if Arc::strong_count(&slot) <= 2 {
                turns.remove(&self.ip);
            }
        }
    }
}

struct Table {
    /// The most recent failures of each client, oldest first, at most `limit`.
    clients: HashMap<IpAddr, VecDeque<Instant>>,
    swept: Instant,
}

impl FailureLimiter {
    /// `smtpd_client_auth_failure_limit` (0: no limit) per
    /// `anvil_rate_time_unit`.
    pub fn new(cfg: &conf::Config) -> FailureLimiter {
        FailureLimiter::with_limits(
            usize::try_from(cfg.smtpd_client_auth_failure_limit).unwrap_or(usize::MAX),
            cfg.anvil_rate_time_unit,
            LIMITER_MAX_CLIENTS,
        )
    }

    /// `limit` failures (0: no limit) per `window`, tracking at most
    /// `capacity` clients.
    pub fn with_limits(limit: usize, window: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            limit,
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table {
                clients: HashMap::new(),
                swept: Instant::now(),
            }),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for `ip`'s turn to have a password checked; hold it until the
    /// outcome is counted.
    pub async fn turn(&self, ip: IpAddr) -> Turn<'_> {
        let ip = canonical(ip);
        if !self.enabled() {
            return Turn {
                limiter: self,
                ip,
                slot: None,
            };
        }
        let slot = lock(&self.turns).entry(ip).or_default().clone();
        let guard = slot.clone().lock_owned().await;
        Turn {
            limiter: self,
            ip,
            slot: Some((slot, guard)),
        }
    }

    fn enabled(&self) -> bool {
        self.limit > 0 && !self.window.is_zero()
    }

    /// Counts one failed AUTH attempt by `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.record_failure_at(canonical(ip), Instant::now());
    }

    /// True when `ip` has reached the limit and AUTH must be refused.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.blocked_at(canonical(ip), Instant::now())
    }

    fn record_failure_at(&self, ip: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let window = self.window;
        let mut t = lock(&self.table);
        if now.duration_since(t.swept) >= window {
            t.sweep(now, window);
        }
        if !t.clients.contains_key(&ip) && t.clients.len() >= self.capacity {
            t.sweep(now, window);
            if t.clients.len() >= self.capacity {
                t.evict_oldest((self.capacity / 8).max(1));
            }
        }
        let q = t.clients.entry(ip).or_default();
        expire(q, now, window);
        if q.len() >= self.limit {
            q.pop_front();
        }
        q.push_back(now);
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut t = lock(&self.table);
        let Some(q) = t.clients.get_mut(&ip) else {
            return false;
        };
        expire(q, now, self.window);
        let n = q.len();
        if n == 0 {
            t.clients.remove(&ip);
        }
        n >= self.limit
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.table).clients.len()
    }
}

impl Table {
    /// Forgets clients without a failure in the window.
    fn sweep(&mut self, now: Instant, window: Duration) {
        self.clients.retain(|_, q| {
            expire(q, now, window);
            !q.is_empty()
        });
        self.swept = now;
    }

    /// Drops the `n` clients whose last failure is oldest.
    fn evict_oldest(&mut self, n: usize) {
        let mut last: Vec<(Option<Instant>, IpAddr)> = self
            .clients
            .iter()
            .map(|(ip, q)| (q.back().copied(), *ip))
            .collect();
        let n = n.min(last.len());
        if n == 0 {
            return;
        }
        last.select_nth_unstable(n - 1);
        for (_, ip) in &last[..n] {
            self.clients.remove(ip);
        }
    }
}

fn expire(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while let Some(&first) = q.front() {
        if now.duration_since(first) >= window {
            q.pop_front();
        } else {
            break;
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(path: &Path) -> conf::Config {
        let mut cfg = conf::Config::defaults();
        cfg.smtpd_sasl_password_file = path.display().to_string();
        // As root, the file must be readable by mail_owner: use an account
        // that exists everywhere and root's group.
        cfg.mail_owner = "nobody".into();
        cfg
    }

    /// A user file with `users`, mode 0640 root:<nobody's group> as root,
    /// else 0600.
    fn user_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
        let path = dir.join("smtpd_passwd");
        let group = if nix::unistd::geteuid().is_root() {
            queue::service::mail_owner_ids(&config(&path))
                .ok()
                .map(|(_, g)| g)
        } else {
            None
        };
        passwd::create_file(&path, group).unwrap();
        for (u, p) in users {
            passwd::set_user(&path, u, p).unwrap();
        }
        path
    }

    /// Makes the next verify look at the file again (the check runs at
    /// most once a second).
    fn let_a_second_pass(auth: &Authenticator) {
        lock(&auth.inner.state).checked = Instant::now() - RELOAD_CHECK;
    }

    #[tokio::test]
    async fn refuses_missing_or_unsafe_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smtpd_passwd");
        let e = Authenticator::new(&config(&path)).err().unwrap();
        assert!(
            e.contains("does not exist") && e.contains("postern passwd add"),
            "{e}"
        );
        let path = user_file(dir.path(), &[]);
        assert!(Authenticator::new(&config(&path)).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Authenticator::new(&config(&path)).err().unwrap();
        assert!(
            e.contains("other users can access it") && e.contains("chmod"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(&path, "x:$1$weak\n").unwrap();
        let e = Authenticator::new(&config(&path)).err().unwrap();
        assert!(e.contains(":1: user x: unsupported"), "{e}");
        let mut cfg = config(&path);
        cfg.smtpd_sasl_password_file.clear();
        assert!(Authenticator::new(&cfg).is_err());
    }

    #[tokio::test]
    async fn root_checks_that_mail_owner_can_read() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smtpd_passwd");
        passwd::create_file(&path, None).unwrap(); // 0600 root:root
        let e = Authenticator::new(&config(&path)).err().unwrap();
        assert!(
            e.contains("as mail_owner nobody and cannot; run: chown root:"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn verify_cache_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = user_file(dir.path(), &[("scanner@contoso.com", "pw1")]);
        let auth = Authenticator::new(&config(&path)).unwrap();
        let user = "scanner@contoso.com";
        assert!(auth.verify(user, &Secret::new("pw1")).await);
        assert!(!auth.verify(user, &Secret::new("pw2")).await);
        assert!(!auth.verify("nobody@contoso.com", &Secret::new("pw1")).await);
        assert!(
            !auth
                .verify("SCANNER@contoso.com", &Secret::new("pw1"))
                .await
        );
        // Only the success is cached, keyed by a MAC, not the password.
        {
            let cache = lock(&auth.inner.cache);
            assert_eq!(cache.len(), 1);
            let ((u, tag), _) = cache.iter().next().unwrap();
            assert_eq!(u, user);
            assert!(!tag.windows(3).any(|w| w == b"pw1"));
        }
        assert!(auth.verify(user, &Secret::new("pw1")).await);

        // A changed password applies without a reload command, once the
        // once-a-second check has come round.
        passwd::set_user(&path, user, "pw2").unwrap();
        passwd::set_user(&path, "app", "app-pw").unwrap();
        let_a_second_pass(&auth);
        assert!(!auth.verify(user, &Secret::new("pw1")).await, "stale cache");
        assert!(auth.verify(user, &Secret::new("pw2")).await);
        assert!(auth.verify("app", &Secret::new("app-pw")).await);

        // Cached successes expire.
        let tag = auth.inner.tag(user, &Secret::new("pw2")).unwrap();
        assert!(auth.inner.cached(user, &tag, 1));
        for (expiry, _) in lock(&auth.inner.cache).values_mut() {
            *expiry = Instant::now() - Duration::from_secs(1);
        }
        assert!(!auth.inner.cached(user, &tag, 1));

        // A removed user is gone at once.
        passwd::remove_user(&path, "app").unwrap();
        let_a_second_pass(&auth);
        assert!(!auth.verify("app", &Secret::new("app-pw")).await);
        assert!(auth.verify(user, &Secret::new("pw2")).await);

        // Unsafe permissions or a deleted file: nobody gets in.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let_a_second_pass(&auth);
        assert!(!auth.verify(user, &Secret::new("pw2")).await);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let_a_second_pass(&auth);
        assert!(auth.verify(user, &Secret::new("pw2")).await);
        std::fs::remove_file(&path).unwrap();
        let_a_second_pass(&auth);
        assert!(!auth.verify(user, &Secret::new("pw2")).await);
    }

    #[tokio::test]
    async fn bad_lines_added_later_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = user_file(dir.path(), &[("a", "pa")]);
        let auth = Authenticator::new(&config(&path)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}garbage line\n")).unwrap();
        let_a_second_pass(&auth);
        assert!(auth.verify("a", &Secret::new("pa")).await);
        assert_eq!(lock(&auth.inner.state).generation, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hashing_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = user_file(dir.path(), &[]);
        let auth = Authenticator::new(&config(&path)).unwrap();
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t2 = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        // Unknown users cost a full hash (tens of milliseconds).
        for _ in 0..3 {
            assert!(!auth.verify("ghost", &Secret::new("x")).await);
        }
        ticker.abort();
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 5);
    }

    /// Parallel attempts from one address: with turns, no more checks
    /// than the limit; the turn table empties afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limiter_turns_serialize_one_client() {
        let l = Arc::new(FailureLimiter::with_limits(5, Duration::from_secs(60), 100));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (l, checked) = (l.clone(), checked.clone());
                tokio::spawn(async move {
                    let _turn = l.turn(ip).await;
                    if l.blocked(ip) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    checked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    l.record_failure(ip);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(lock(&l.turns).is_empty());
    }

    #[test]
    fn limiter_sliding_window() {
        let l = FailureLimiter::with_limits(3, Duration::from_secs(60), 100);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        l.record_failure_at(ip, at(0));
        l.record_failure_at(ip, at(30));
        assert!(!l.blocked_at(ip, at(31)));
        l.record_failure_at(ip, at(50));
        assert!(l.blocked_at(ip, at(50)));
        assert!(l.blocked_at(ip, at(59)));
        assert!(!l.blocked_at(other, at(59)));
        // The failure at 0 leaves the window at 60.
        assert!(!l.blocked_at(ip, at(60)));
        l.record_failure_at(ip, at(61));
        assert!(l.blocked_at(ip, at(61)));
        assert!(!l.blocked_at(ip, at(90)));
        assert!(!l.blocked_at(ip, at(200)));
        assert_eq!(l.tracked(), 0, "idle clients are forgotten");
    }

    #[test]
    fn limiter_off_and_mapped_addresses() {
        let off = FailureLimiter::with_limits(0, Duration::from_secs(60), 100);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            off.record_failure(ip);
        }
        assert!(!off.blocked(ip));
        assert_eq!(off.tracked(), 0);
        let l = FailureLimiter::with_limits(2, Duration::from_secs(60), 100);
        l.record_failure("::ffff:192.0.2.7".parse().unwrap());
        l.record_failure(ip);
        assert!(l.blocked(ip));
        assert!(l.blocked("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!l.blocked("2001:db8::1".parse().unwrap()));
        let cfg = conf::Config::defaults();
        let d = FailureLimiter::new(&cfg);
        assert_eq!((d.limit, d.window), (5, Duration::from_secs(60)));
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let l = FailureLimiter::with_limits(1000, Duration::from_secs(60), 64);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure_at(ip, t0 + Duration::from_millis(u64::from(i)));
            assert!(l.tracked() <= 64);
        }
        // The most recent client is tracked; a single attacker's history
        // is bounded by the limit.
        let last = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 999));
        assert_eq!(lock(&l.table).clients[&last].len(), 1);
        let one = FailureLimiter::with_limits(3, Duration::from_secs(60), 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..100 {
            one.record_failure_at(ip, t0 + Duration::from_millis(i));
        }
        assert_eq!(lock(&one.table).clients[&ip].len(), 3);
        // Later sweeps forget everyone once the window has passed.
        l.record_failure_at(last, t0 + Duration::from_secs(120));
        assert_eq!(l.tracked(), 1);
    }
}

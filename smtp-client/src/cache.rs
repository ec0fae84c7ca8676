//! Connection reuse (Postfix's scache): after a transaction a session may
//! wait idle, keyed by (next hop, TLS level, SASL user), for
//! `smtp_connection_cache_time_limit`; the next delivery with the same key
//! takes it instead of connecting, within `smtp_connection_reuse_time_limit`
//! and `smtp_connection_reuse_count_limit`. Idle sessions past their time
//! are closed with QUIT by [`Cache::reap`].

use crate::session::Session;
use crate::settings::{CacheSettings, TlsLevel};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What makes two deliveries able to share a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The next hop as requested, lower case.
    pub nexthop: String,
    /// The TLS level the session was opened with.
    pub level: TlsLevel,
    /// The SASL user that the next hop's credentials name, if any.
    pub sasl_user: Option<String>,
}

#[derive(Debug)]
struct Idle {
    session: Session,
    since: Instant,
}

/// The cache of idle sessions.
#[derive(Debug)]
pub struct Cache {
    limits: CacheSettings,
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl Cache {
    /// An empty cache.
    pub fn new(limits: CacheSettings) -> Cache {
        Cache {
            limits,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn reusable(&self, s: &Session, now: Instant) -> bool {
        let count_ok = self.limits.reuse_count_limit == 0 || s.uses < self.limits.reuse_count_limit;
        count_ok && now.duration_since(s.created) < self.limits.reuse_time_limit
    }

    /// True when a session with `uses` deliveries, made at `created`, may
    /// be kept for another delivery.
    pub fn accepts(&self, s: &Session) -> bool {
        !self.limits.idle_limit.is_zero() && self.reusable(s, Instant::now())
    }

    /// Takes an idle session for `key`, the most recently used first.
    /// Sessions found expired are returned in `stale` for closing.
    pub fn take(&self, key: &Key, stale: &mut Vec<Session>) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(key)?;
        let mut found = None;
        while let Some(i) = list.pop() {
            if now.duration_since(i.since) < self.limits.idle_limit
                && self.reusable(&i.session, now)
            {
                found = Some(i.session);
                break;
            }
            stale.push(i.session);
        }
        if list.is_empty() {
            map.remove(key);
        }
        found
    }

    /// Keeps `session` for reuse under `key`; returns it when it may not
    /// be kept (the caller closes it).
    pub fn put(&self, key: Key, session: Session) -> Option<Session> {
        if !self.accepts(&session) {
            return Some(session);
        }
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().push(Idle {
            session,
            since: Instant::now(),
        });
        None
    }

    /// Removes the sessions idle longer than the limit (or all of them
    /// with `all`), for the caller to close.
    pub fn expired(&self, all: bool) -> Vec<Session> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for list in map.values_mut() {
            let (keep, gone): (Vec<Idle>, Vec<Idle>) = list.drain(..).partition(|i| {
                !all && now.duration_since(i.since) < self.limits.idle_limit
                    && self.reusable(&i.session, now)
            });
            *list = keep;
            out.extend(gone.into_iter().map(|i| i.session));
        }
        map.retain(|_, l| !l.is_empty());
        out
    }

    /// Number of idle sessions.
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Closes expired sessions with QUIT every half second, forever.
    pub async fn reap(&self, quit_limit: Duration) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for s in self.expired(false) {
                s.chat.quit(quit_limit).await;
            }
        }
    }

    /// Closes every idle session with QUIT (at shutdown).
    pub async fn close_all(&self, quit_limit: Duration) {
        let all = self.expired(true);
        let closing = all.into_iter().map(|s| s.chat.quit(quit_limit));
        for q in closing {
            q.await;
        }
    }
}

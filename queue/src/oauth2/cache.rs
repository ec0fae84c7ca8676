//! The access-token cache every delivery agent shares.
//!
//! Each account's token is kept in memory and in a file
//! `<cache directory>/<Account::cache_key>.json` (directory 0700, file
//! 0600, replaced atomically), so it survives restarts and one process's
//! token serves the others. A token is reused while more than
//! min(`smtp_oauth2_refresh_margin`, a quarter of its lifetime) remains.
//!
//! Refreshing takes an exclusive `flock` on `<key>.lock` beside the file,
//! then reads the file again — another process may have just refreshed —
//! and only then asks the endpoint. So across threads and processes there
//! is one request per expiry, and after a `535` the agents that all saw the
//! same token refused fetch one replacement between them (see
//! [`TokenCache::token`]).

use super::account::Account;
use super::endpoint::Http;
use super::error::OAuthError;
use super::files;
use super::grant::{self, Env};
use proto::sasl::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An access token. `Debug` never shows the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token for XOAUTH2.
    pub access_token: Secret,
    /// When the endpoint said it expires.
    pub expires_at: SystemTime,
    /// When it was issued (requested); orders tokens of one account.
    pub obtained_at: SystemTime,
}

impl Token {
    /// Its whole lifetime, as issued.
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default()
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// True while more than min(`margin`, a quarter of the lifetime)
    /// remains: a 60-minute token is replaced 10 minutes before it
    /// expires, a 4-second test token in its last second.
    pub fn is_fresh(&self, margin: Duration, now: SystemTime) -> bool {
        self.remaining(now) > margin.min(self.lifetime() / 4)
    }
}

/// Where [`TokenCache::get`] found the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// This process's memory.
    Memory,
    /// The cache file (another process, or an earlier run, fetched it).
    CacheFile,
    /// The token endpoint, just now.
    Endpoint,
}

/// The per-account tokens held in memory.
type Entries = Mutex<HashMap<String, Arc<Mutex<Option<Token>>>>>;

/// The shared token cache (see the module documentation). Thread-safe;
/// one per process is enough.
#[derive(Debug)]
pub struct TokenCache {
    env: Env,
    margin: Duration,
    entries: Entries,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding the lock left a complete value
    // (every write is a single assignment), so the data is still good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCache {
    /// A cache in `smtp_oauth2_token_cache_directory` using
    /// `smtp_oauth2_refresh_margin` and `smtp_oauth2_timeout`. As root,
    /// what it creates belongs to `mail_owner`, whose delivery agents share
    /// it. Nothing is created until a token is needed.
    pub fn new(cfg: &conf::Config) -> TokenCache {
        let owner = if nix::unistd::geteuid().is_root() {
            crate::service::mail_owner_ids(cfg).ok()
        } else {
            None
        };
        let dir = PathBuf::from(cfg.smtp_oauth2_token_cache_directory.trim());
        if !dir.as_os_str().is_empty() && !dir.is_absolute() {
            crate::log::warning(&format!(
                "smtp_oauth2_token_cache_directory {} is not an absolute path; tokens are kept in memory only",
                dir.display()
            ));
        }
        TokenCache {
            env: Env {
                http: Http::new(cfg.smtp_oauth2_timeout),
                readers_gid: files::readers_gid(cfg),
                cache_dir: dir,
                owner,
            },
            margin: cfg.smtp_oauth2_refresh_margin,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cache directory.
    pub fn directory(&self) -> &Path {
        &self.env.cache_dir
    }

    /// False when `smtp_oauth2_token_cache_directory` is empty (or not
    /// absolute): tokens are then kept in memory only, per process.
    pub fn has_files(&self) -> bool {
        self.env.cache_dir.is_absolute()
    }

    /// The cache file of `account`.
    pub fn file(&self, account: &Account) -> PathBuf {
        self.env
            .cache_dir
            .join(format!("{}.json", account.cache_key()))
    }

    pub(crate) fn env(&self) -> &Env {
        &self.env
    }

    /// A usable access token for `account`: cached while fresh, else
    /// fetched (blocking, at most `smtp_oauth2_timeout`).
    ///
    /// `rejected` is for after the server refused a token (`535` to
    /// XOAUTH2): pass that token, and a new one is fetched unless the cache
    /// already holds a newer one — so when several agents had the same
    /// token refused, the first fetches and the others take its result.
    ///
    /// # Errors
    /// No token could be had; [`OAuthError::is_transient`] says whether
    /// waiting helps.
    pub fn token(&self, account: &Account, rejected: Option<&Token>) -> Result<Token, OAuthError> {
        self.get(account, rejected).map(|(t, _)| t)
    }

    /// Like [`TokenCache::token`], also saying where the token came from.
    ///
    /// # Errors
    /// As [`TokenCache::token`].
    pub fn get(
        &self,
        account: &Account,
        rejected: Option<&Token>,
    ) -> Result<(Token, Obtained), OAuthError> {
        let usable = |t: &Token, now: SystemTime| {
            t.is_fresh(self.margin, now)
                && rejected.is_none_or(|r| {
                    // The file keeps milliseconds: compare at that precision.
                    t.access_token != r.access_token
                        && millis(t.obtained_at) >= millis(r.obtained_at)
                })
        };
        self.obtain(account, usable)
    }

    /// Fetches a new token for `account` whatever the cache holds (an admin
    /// checking a changed credential).
    ///
    /// # Errors
    /// As [`TokenCache::token`].
    pub fn refresh(&self, account: &Account) -> Result<Token, OAuthError> {
        self.obtain(account, |_, _| false).map(|(t, _)| t)
    }

    /// Puts `token` in the cache for `account` (after a sign-in).
    pub(crate) fn store(&self, account: &Account, token: &Token) {
        let entry = self.entry(account);
        let mut mem = guard(&entry);
        let _lock = self.lock(account);
        self.write_file(account, token);
        *mem = Some(token.clone());
    }

    fn entry(&self, account: &Account) -> Arc<Mutex<Option<Token>>> {
        guard(&self.entries)
            .entry(account.cache_key())
            .or_default()
            .clone()
    }

    fn obtain(
        &self,
        account: &Account,
        usable: impl Fn(&Token, SystemTime) -> bool,
    ) -> Result<(Token, Obtained), OAuthError> {
        let entry = self.entry(account);
        // Threads of this process wanting this account's token wait here
        // while one of them refreshes, then find its token in memory.
        let mut mem = guard(&entry);
        if let Some(t) = mem.as_ref()
            && usable(t, SystemTime::now())
        {
            return Ok((t.clone(), Obtained::Memory));
        }
        let _lock = self.lock(account);
        if let Some(t) = self.read_file(account)
            && usable(&t, SystemTime::now())
        {
            *mem = Some(t.clone());
            return Ok((t, Obtained::CacheFile));
        }
        let t = grant::fetch(&self.env, account)?;
        self.write_file(account, &t);
        *mem = Some(t.clone());
        Ok((t, Obtained::Endpoint))
    }

    /// The cross-process refresh lock of `account`. When it cannot be had
    /// (directory not writable, another process stuck holding it), the
    /// refresh goes ahead without it: a duplicate request is better than
    /// no mail.
    fn lock(&self, account: &Account) -> Option<files::Lock> {
        if !self.has_files() {
            return None;
        }
        let dir = &self.env.cache_dir;
        let path = dir.join(format!("{}.lock", account.cache_key()));
        // The holder's request ends within the timeout; allow for reading
        // files and writing the result too.
        let wait = self.env.http.timeout() + Duration::from_secs(10);
        match files::ensure_dir(dir, self.env.owner)
            .and_then(|()| files::lock(&path, self.env.owner, wait))
        {
            Ok(l) => Some(l),
            Err(e) => {
                crate::log::warning(&format!(
                    "OAuth2 token cache {}: {e}; refreshing without the lock",
                    path.display()
                ));
                None
            }
        }
    }

    fn read_file(&self, account: &Account) -> Option<Token> {
        if !self.has_files() {
            return None;
        }
        let path = self.file(account);
        let bytes = match files::read_private(&path) {
            Ok(b) => b?,
            Err(e) => {
                crate::log::warning(&format!("OAuth2 token cache: {e}"));
                return None;
            }
        };
        let j: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let same = j["user"] == account.user.as_str()
            && j["endpoint"] == account.token_endpoint.as_str()
            && j["client_id"] == account.client_id.as_str()
            && j["scope"] == account.scope.as_str();
        if !same || j["version"] != 1 {
            return None;
        }
        Some(Token {
            access_token: Secret::new(j["access_token"].as_str().filter(|s| !s.is_empty())?),
            expires_at: from_millis(j["expires_at_ms"].as_u64()?),
            obtained_at: from_millis(j["obtained_at_ms"].as_u64()?),
        })
    }

    fn write_file(&self, account: &Account, t: &Token) {
        if !self.has_files() {
            return;
        }
        let path = self.file(account);
        let record = serde_json::json!({
            "version": 1,
            "user": account.user,
            "endpoint": account.token_endpoint,
            "client_id": account.client_id,
            "scope": account.scope,
            "access_token": t.access_token.expose(),
            "expires_at_ms": millis(t.expires_at),
            "obtained_at_ms": millis(t.obtained_at),
        });
        let written = files::ensure_dir(&self.env.cache_dir, self.env.owner).and_then(|()| {
            files::replace(&path, record.to_string().as_bytes(), self.env.owner, 0o600)
        });
        if let Err(e) = written {
            crate::log::warning(&format!(
                "OAuth2 token cache {}: cannot write: {e}; other processes fetch their own token",
                path.display()
            ));
        }
    }
}

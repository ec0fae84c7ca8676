//! A fake Exchange Online smart host (OFFICE365.md §2, §7, `submission`
//! listener), in-process, on 127.0.0.1 with an OS-assigned port.
//!
//! - [`FakeConfig`]: host name, TLS, AUTH mechanisms and users, limits.
//! - [`FakeSmartHost`]: the running server; scripts, faults, records,
//!   waits, stop and start on the same port. Dropping it stops everything.
//! - [`Phase`], [`Event`], [`Action`]: scripted replies and faults
//!   (see [`script`]).
//! - [`Message`], [`SessionLog`], [`Stats`], [`Records`]: what it saw.
//!
//! The server runs on its own thread with its own Tokio runtime, so it
//! serves synchronous `#[test]`s that run real programs as well as async
//! tests; every method takes `&self` and may be called from any thread.
//!
//! Later work: XOAUTH2 token checks plug in as a [`TokenCheck`]; per-mailbox
//! rate and recipient limits go with the concurrency accounting in
//! `state.rs`; an `mx` listener is another [`FakeConfig`] profile.

mod config;
mod conn;
mod listener;
mod record;
pub mod replies;
pub mod script;
mod session;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use config::{EXO_MAILBOX_CONCURRENCY, EXO_MAX_SIZE, FakeConfig, TlsVersion, TokenCheck};
pub use record::{Message, Records, SessionLog, Stats};
pub use script::{Action, Event, Hook, Phase, parse_reply};

use crate::ca::CertFiles;
use listener::Listening;
use state::Shared;

/// A running fake smart host. See the [module docs](self).
pub struct FakeSmartHost {
    shared: Arc<Shared>,
    rt: Handle,
    port: u16,
    listening: Mutex<Listening>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeSmartHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSmartHost")
            .field("port", &self.port)
            .field("config", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl FakeSmartHost {
    /// Starts the server on 127.0.0.1 with a free port.
    ///
    /// # Errors
    /// Bad TLS material, or no runtime or socket.
    pub fn spawn(cfg: FakeConfig) -> Result<FakeSmartHost> {
        let acceptor = match &cfg.cert {
            Some(c) => Some(conn::acceptor(&cfg, c).context("TLS set-up of the fake smart host")?),
            None => None,
        };
        let shared = Arc::new(Shared::new(cfg, acceptor));
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-smarthost".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-smarthost-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = shutdown_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .context("start the fake smart host's thread")?;
        let rt = handle_rx
            .recv()
            .context("the fake smart host's thread died")?
            .context("build the fake smart host's runtime")?;
        let sock = listener::bind(0)?;
        let port = sock.local_addr()?.port();
        let listening = listener::start(&rt, shared.clone(), sock);
        Ok(FakeSmartHost {
            shared,
            rt,
            port,
            listening: Mutex::new(listening),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    // ---- where it is -----------------------------------------------------

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port (the same across [`stop`](Self::stop) and [`start`](Self::start)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[127.0.0.1]:<port>`, for main.cf's `relayhost` and `sasl_passwd`.
    pub fn relayhost(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    /// `[localhost]:<port>`: the name the test server certificate is
    /// valid for, so clients can verify it.
    pub fn relayhost_name(&self) -> String {
        format!("[localhost]:{}", self.port)
    }

    /// The server name in its replies.
    pub fn hostname(&self) -> &str {
        &self.shared.cfg.hostname
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &FakeConfig {
        &self.shared.cfg
    }

    // ---- up and down -----------------------------------------------------

    fn listening(&self) -> MutexGuard<'_, Listening> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The smart host goes down: new connections are refused and open
    /// sessions are cut. The port stays reserved for [`start`](Self::start).
    ///
    /// # Errors
    /// The accept loop did not stop.
    pub fn stop(&self) -> Result<()> {
        self.stop_listening()?;
        self.shared.abort_sessions();
        Ok(())
    }

    /// Refuses new connections but lets open sessions finish.
    ///
    /// # Errors
    /// The accept loop did not stop.
    pub fn stop_listening(&self) -> Result<()> {
        let mut g = self.listening();
        let state = std::mem::replace(&mut *g, Listening::No { _placeholder: None });
        *g = listener::stop(state, self.port)?;
        Ok(())
    }

    /// Accepts connections again, on the same port.
    ///
    /// # Errors
    /// The port could not be bound again.
    pub fn start(&self) -> Result<()> {
        let mut g = self.listening();
        if matches!(*g, Listening::Yes { .. }) {
            return Ok(());
        }
        let sock = listener::reopen(self.port)
            .with_context(|| format!("restart the fake smart host on port {}", self.port))?;
        // Dropping the old state closes the placeholder.
        *g = listener::start(&self.rt, self.shared.clone(), sock);
        Ok(())
    }

    /// True unless stopped.
    pub fn is_listening(&self) -> bool {
        matches!(*self.listening(), Listening::Yes { .. })
    }

    // ---- scripts ---------------------------------------------------------

    /// Queues a one-shot action for the next event of `phase` (queued
    /// actions of one phase are used in order).
    pub fn script(&self, phase: Phase, action: Action) {
        self.shared
            .update(|g| g.scripts.entry(phase).or_default().push_back(action));
    }

    /// Uses `action` for every event of `phase` (after the one-shot queue).
    pub fn always(&self, phase: Phase, action: Action) {
        self.shared.update(|g| {
            g.always.insert(phase, action);
        });
    }

    /// Uses `action` at every RCPT TO for `address` (case-insensitive),
    /// e.g. `Action::text("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found")`.
    pub fn on_rcpt(&self, address: &str, action: Action) {
        self.shared.update(|g| {
            g.rcpt_actions.insert(address.to_ascii_lowercase(), action);
        });
    }

    /// Consults `hook` for every event not settled by [`script`](Self::script)
    /// or [`always`](Self::always), e.g. to refuse one recipient:
    /// `fake.set_hook(|e| (e.rcpt.as_deref() == Some("x@y")).then(|| Action::text("550 5.1.1 no")))`.
    pub fn set_hook(&self, hook: impl Fn(&Event) -> Option<Action> + Send + Sync + 'static) {
        let hook: Hook = Arc::new(hook);
        self.shared.update(|g| g.hook = Some(hook));
    }

    /// Removes queued and persistent actions and the hook.
    pub fn clear_scripts(&self) {
        self.shared.update(|g| {
            g.scripts.clear();
            g.always.clear();
            g.rcpt_actions.clear();
            g.hook = None;
        });
    }

    /// Adds a user or changes its password (LOGIN and PLAIN).
    pub fn set_password(&self, user: &str, password: &str) {
        self.shared.update(|g| {
            g.users.insert(user.into(), password.into());
        });
    }

    /// Removes a user.
    pub fn remove_user(&self, user: &str) {
        self.shared.update(|g| {
            g.users.remove(user);
        });
    }

    /// Replaces the XOAUTH2 decision.
    pub fn set_xoauth2(&self, check: TokenCheck) {
        self.shared.update(|g| g.xoauth2 = Some(check));
    }

    /// Presents `cert` from the next handshake on (e.g. an expired or
    /// untrusted one).
    ///
    /// # Errors
    /// OpenSSL refuses the certificate or key.
    pub fn set_certificate(&self, cert: &CertFiles) -> Result<()> {
        let a = conn::acceptor(&self.shared.cfg, cert)?;
        self.shared.set_acceptor(a);
        Ok(())
    }

    // ---- records ---------------------------------------------------------

    /// A copy of everything recorded.
    pub fn records(&self) -> Records {
        self.shared.read(|g| g.rec.clone())
    }

    /// Accepted messages, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.read(|g| g.rec.messages.clone())
    }

    /// Messages refused or dropped at the end of data.
    pub fn refused(&self) -> Vec<Message> {
        self.shared.read(|g| g.rec.refused.clone())
    }

    /// Every session so far, with transcripts.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.shared.read(|g| g.rec.sessions.clone())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.read(|g| g.rec.stats.clone())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.read(|g| g.rec.stats.connections)
    }

    /// AUTH commands so far.
    pub fn auth_attempts(&self) -> u64 {
        self.shared.read(|g| g.rec.stats.auth_attempts)
    }

    /// The most connections open at once.
    pub fn max_concurrent(&self) -> usize {
        self.shared.read(|g| g.rec.stats.max_concurrent)
    }

    /// Per-mailbox concurrency violations (see [`Stats::violations`]).
    pub fn violations(&self) -> u64 {
        self.shared.read(|g| g.rec.stats.violations)
    }

    /// A human-readable account for failure messages.
    pub fn summary(&self) -> String {
        self.records().summary()
    }

    // ---- waiting ---------------------------------------------------------

    /// Blocks until at least `n` messages were accepted; returns them all.
    ///
    /// # Errors
    /// Timeout; the error shows what the fake saw.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.wait_until(&format!("{n} accepted messages"), timeout, |r| {
            r.messages.len() >= n
        })
        .map(|r| r.messages)
    }

    /// Blocks until `pred` holds for the records; returns a copy of them.
    ///
    /// # Errors
    /// Timeout; the error names `what` and shows what the fake saw.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&Records) -> bool,
    ) -> Result<Records> {
        self.shared
            .wait_until(timeout, pred)
            .map_err(|r| timeout_error(what, timeout, &r))
    }

    /// [`wait_messages`](Self::wait_messages) for async tests.
    ///
    /// # Errors
    /// Timeout.
    pub async fn wait_messages_async(&self, n: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.wait_until_async(&format!("{n} accepted messages"), timeout, |r| {
            r.messages.len() >= n
        })
        .await
        .map(|r| r.messages)
    }

    /// [`wait_until`](Self::wait_until) for async tests.
    ///
    /// # Errors
    /// Timeout.
    pub async fn wait_until_async(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&Records) -> bool,
    ) -> Result<Records> {
        self.shared
            .wait_until_async(timeout, pred)
            .await
            .map_err(|r| timeout_error(what, timeout, &r))
    }
}

fn timeout_error(what: &str, timeout: Duration, r: &Records) -> anyhow::Error {
    anyhow!(
        "timed out after {timeout:?} waiting for {what}\n{}",
        r.summary()
    )
}

impl Drop for FakeSmartHost {
    fn drop(&mut self) {
        self.shared.abort_sessions();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

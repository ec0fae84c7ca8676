//! A fake Exchange Online (OFFICE365.md §2, §3, §7), in-process, on
//! 127.0.0.1 with OS-assigned ports.
//!
//! - [`FakeConfig`]: the listener profile — [`FakeConfig::office365`]
//!   (`submission`), [`FakeConfig::mx`] (Direct Send and connector relay),
//!   [`FakeConfig::hve`], [`FakeConfig::acs`], [`FakeConfig::generic`] —
//!   with host name, TLS, AUTH mechanisms and users, tenant and limits.
//! - [`FakeSmartHost`]: the running SMTP server; scripts (per phase, per
//!   mailbox, for the next sessions), faults, records, waits, stop and
//!   start on the same port. Dropping it stops everything.
//! - [`FakeTokenEndpoint`]: a fake Entra ID token endpoint issuing RS256
//!   JWTs (client secret, certificate assertion, refresh token, device
//!   code); [`FakeConfig::accept_tokens_from`] makes the smart host check
//!   XOAUTH2 tokens against it ([`Xoauth2Policy`]).
//! - [`Phase`], [`Event`], [`Action`]: scripted replies and faults
//!   (see [`script`]); [`replies`] holds the exact texts of §5.
//! - [`Message`], [`SessionLog`], [`Stats`], [`Records`], [`Violation`]:
//!   what it saw, including which mailbox sent what and when, and every
//!   breach of a per-mailbox limit ([`ViolationKind`]).
//!
//! The servers run on their own threads with their own Tokio runtimes, so
//! they serve synchronous `#[test]`s that run real programs as well as
//! async tests; every method takes `&self` and may be called from any
//! thread.
//!
//! Gaps (OFFICE365.md marks these [U] or the fake leaves them out): the
//! tenant switches of §7 (SMTP AUTH disabled, security defaults, lockout,
//! restricted senders, continuous-error throttles, FullAccess and its
//! `430 4.2.0`, mailbox quota, max send size) are not modelled as state —
//! script their exact replies ([`replies`]) per mailbox or session
//! instead; the message rate is counted, never refused or delayed; the
//! `legacy` listener is `office365` with `tls_handshake_min` and
//! `auth_tls_floor`; HVE and ACS texts for external recipients, unknown
//! senders and per-subscription limits are guesses; ACS XOAUTH2 is not
//! offered.

mod config;
mod conn;
pub mod jwt;
mod listener;
pub mod oauth;
mod record;
pub mod replies;
pub mod script;
mod session;
mod state;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

pub use config::{
    AcsConfig, EXO_MAILBOX_CONCURRENCY, EXO_MAX_SIZE, EXO_MESSAGE_RATE, EXO_RECIPIENT_BUDGET,
    EXO_RECIPIENT_LIMIT, FakeConfig, Profile, TlsVersion, Window,
};
pub use oauth::{TokenCheck, TokenError, TokenVerifier, Xoauth2Policy};
pub use record::{
    Attribution, AuthCounts, Message, Records, SessionLog, Stats, Violation, ViolationKind,
    Xoauth2Attempt,
};
pub use script::{Action, Event, Hook, Phase, parse_reply};
pub use token::{FakeTokenEndpoint, Fault, TokenConfig, TokenRecords, TokenRequest};

use crate::ca::CertFiles;
use listener::{OnAccept, Server};
use state::{Rule, Shared};

/// A running fake smart host. See the [module docs](self).
pub struct FakeSmartHost {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for FakeSmartHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSmartHost")
            .field("port", &self.port())
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
        let s = shared.clone();
        let on_accept: OnAccept = Arc::new(move |tcp, peer| {
            let id = s.session_opened(peer);
            let h = tokio::spawn(session::run(s.clone(), tcp, peer, id));
            s.add_task(id, h.abort_handle());
        });
        let server = Server::spawn("fake-smarthost", on_accept)?;
        Ok(FakeSmartHost { shared, server })
    }

    // ---- where it is -----------------------------------------------------

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The port (the same across [`stop`](Self::stop) and [`start`](Self::start)).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `[127.0.0.1]:<port>`, for main.cf's `relayhost` and `sasl_passwd`.
    pub fn relayhost(&self) -> String {
        format!("[127.0.0.1]:{}", self.port())
    }

    /// `[localhost]:<port>`: the name the test server certificate is
    /// valid for, so clients can verify it.
    pub fn relayhost_name(&self) -> String {
        format!("[localhost]:{}", self.port())
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
        self.server.stop_listening()
    }

    /// Accepts connections again, on the same port.
    ///
    /// # Errors
    /// The port could not be bound again.
    pub fn start(&self) -> Result<()> {
        self.server.start()
    }

    /// True unless stopped.
    pub fn is_listening(&self) -> bool {
        self.server.is_listening()
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

    /// Uses `action` at every event of `phase` in sessions of `mailbox`
    /// (the authenticated user, case-insensitive; at [`Phase::Auth`] the
    /// user trying), e.g. a restricted sender:
    /// `fake.on_mailbox("a@contoso.test", Phase::DataEnd, Action::exo(replies::BAD_OUTBOUND_SENDER))`.
    pub fn on_mailbox(&self, mailbox: &str, phase: Phase, action: Action) {
        self.add_mailbox_rule(mailbox, phase, action, None);
    }

    /// [`on_mailbox`](Self::on_mailbox) for the next `times` events only.
    pub fn on_mailbox_times(&self, mailbox: &str, phase: Phase, action: Action, times: u64) {
        if times > 0 {
            self.add_mailbox_rule(mailbox, phase, action, Some(times));
        }
    }

    fn add_mailbox_rule(&self, mailbox: &str, phase: Phase, action: Action, n: Option<u64>) {
        self.shared.update(|g| {
            g.mailbox_rules
                .entry(mailbox.to_ascii_lowercase())
                .or_default()
                .push(Rule {
                    phase,
                    action,
                    remaining: n,
                })
        });
    }

    /// Removes the actions of `mailbox`.
    pub fn clear_mailbox(&self, mailbox: &str) {
        self.shared.update(|g| {
            g.mailbox_rules.remove(&mailbox.to_ascii_lowercase());
        });
    }

    /// Uses `action` at every event of `phase` in each of the next `n`
    /// sessions (connections accepted from now on), e.g. a PRX4 outage:
    /// `fake.script_sessions(2, Phase::Connect, Action::exo(replies::PRX4).then_close())`.
    pub fn script_sessions(&self, n: u64, phase: Phase, action: Action) {
        if n > 0 {
            self.shared
                .update(|g| g.next_sessions.push((n, phase, action)));
        }
    }

    /// Removes queued, per-session, per-mailbox and persistent actions and
    /// the hook.
    pub fn clear_scripts(&self) {
        self.shared.update(|g| {
            g.scripts.clear();
            g.always.clear();
            g.rcpt_actions.clear();
            g.mailbox_rules.clear();
            g.next_sessions.clear();
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

    /// Replaces the XOAUTH2 decision (wins over the token policy).
    pub fn set_xoauth2(&self, check: TokenCheck) {
        self.shared.update(|g| g.xoauth2 = Some(check));
    }

    /// Changes the token policy (e.g. a service principal registered or
    /// an HVE app access granted mid-test).
    ///
    /// # Errors
    /// No token policy configured.
    pub fn with_oauth_policy(&self, f: impl FnOnce(&mut Xoauth2Policy)) -> Result<()> {
        self.shared.update(|g| match g.oauth.as_mut() {
            Some(p) => {
                f(p);
                Ok(())
            }
            None => Err(anyhow!("the fake has no token policy (accept_tokens_from)")),
        })
    }

    /// Lets `mailbox` send as `address` from now on.
    pub fn grant_send_as(&self, mailbox: &str, address: &str) {
        self.shared.update(|g| {
            g.send_as
                .entry(mailbox.to_ascii_lowercase())
                .or_default()
                .push(address.to_ascii_lowercase())
        });
    }

    /// Withdraws a send-as grant.
    pub fn revoke_send_as(&self, mailbox: &str, address: &str) {
        self.shared.update(|g| {
            if let Some(l) = g.send_as.get_mut(&mailbox.to_ascii_lowercase()) {
                l.retain(|a| !a.eq_ignore_ascii_case(address));
            }
        });
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

    /// All violations of per-mailbox limits, every kind (see
    /// [`ViolationKind`]); postern must keep this at zero.
    pub fn violations(&self) -> u64 {
        self.shared.read(|g| g.rec.stats.violations)
    }

    /// Violations of one kind.
    pub fn violations_of(&self, kind: ViolationKind) -> u64 {
        self.shared.read(|g| g.rec.violations_of(kind))
    }

    /// Violations per kind.
    pub fn violations_by_kind(&self) -> std::collections::HashMap<ViolationKind, u64> {
        self.shared.read(|g| g.rec.stats.violations_by_kind.clone())
    }

    /// Every violation, in order (kind, mailbox, session, time).
    pub fn violation_log(&self) -> Vec<Violation> {
        self.shared.read(|g| g.rec.violations.clone())
    }

    /// XOAUTH2 successes and failures of `user` (case-insensitive).
    pub fn xoauth2_counts(&self, user: &str) -> AuthCounts {
        self.shared.read(|g| {
            g.rec
                .stats
                .xoauth2
                .get(&user.to_ascii_lowercase())
                .copied()
                .unwrap_or_default()
        })
    }

    /// Every XOAUTH2 attempt, with the reason for refusals.
    pub fn xoauth2_attempts(&self) -> Vec<Xoauth2Attempt> {
        self.shared.read(|g| g.rec.xoauth2.clone())
    }

    /// Accepted messages sent by `mailbox` (the authenticated user,
    /// case-insensitive), in order, with their times ([`Message::at`]).
    pub fn messages_of(&self, mailbox: &str) -> Vec<Message> {
        self.shared
            .read(|g| g.rec.messages_of(mailbox).into_iter().cloned().collect())
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
        // Then `server` drops: the runtime stops.
        self.shared.abort_sessions();
    }
}

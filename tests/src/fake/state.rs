//! State shared by the sessions and the test: records, scripts, users,
//! per-mailbox session accounting, and the wake-ups for waiters.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use openssl::ssl::SslAcceptor;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::config::FakeConfig;
use super::oauth::{TokenCheck, Xoauth2Policy};
use super::record::{Message, Records, SessionLog, Violation, ViolationKind, Xoauth2Attempt};
use super::script::{Action, Event, Hook, Phase};

/// A scripted action bound to a session or a mailbox, used `remaining`
/// times (`None`: always).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub phase: Phase,
    pub action: Action,
    pub remaining: Option<u64>,
}

/// Takes the first rule for `phase` from `rules`, counting its use.
fn take_rule(rules: &mut Vec<Rule>, phase: Phase) -> Option<Action> {
    let i = rules.iter().position(|r| r.phase == phase)?;
    let r = &mut rules[i];
    let a = r.action.clone();
    if let Some(n) = r.remaining.as_mut() {
        *n -= 1;
        if *n == 0 {
            rules.remove(i);
        }
    }
    Some(a)
}

/// The mutable part, behind one mutex.
#[derive(Default)]
pub(crate) struct Inner {
    pub rec: Records,
    pub scripts: HashMap<Phase, VecDeque<Action>>,
    pub always: HashMap<Phase, Action>,
    /// Per-recipient actions at RCPT, keyed by lower-cased address.
    pub rcpt_actions: HashMap<String, Action>,
    /// Per-mailbox actions, keyed by lower-cased mailbox.
    pub mailbox_rules: HashMap<String, Vec<Rule>>,
    /// Actions for the next sessions: (sessions left, phase, action).
    pub next_sessions: Vec<(u64, Phase, Action)>,
    /// Actions bound to open sessions.
    session_rules: HashMap<u64, Vec<Rule>>,
    pub hook: Option<Hook>,
    pub users: HashMap<String, String>,
    pub xoauth2: Option<TokenCheck>,
    pub oauth: Option<Xoauth2Policy>,
    /// Mailbox → send-as addresses, all lower case.
    pub send_as: HashMap<String, Vec<String>>,
    /// Open authenticated sessions per mailbox, oldest first.
    mailbox_sessions: HashMap<String, Vec<u64>>,
    /// Accepted messages per mailbox, for the message rate.
    accepted_at: HashMap<String, VecDeque<Instant>>,
    /// Recipients charged per P2 sender, for the recipient budget.
    rcpt_ledger: HashMap<String, VecDeque<(Instant, usize)>>,
    next_session: u64,
}

impl Inner {
    fn session_mut(&mut self, id: u64) -> Option<&mut SessionLog> {
        self.rec.sessions.iter_mut().rev().find(|s| s.id == id)
    }

    /// Records a violation.
    pub fn violation(&mut self, kind: ViolationKind, mailbox: &str, session: u64) {
        self.rec.violations.push(Violation {
            kind,
            mailbox: mailbox.to_ascii_lowercase(),
            session,
            at: SystemTime::now(),
        });
        self.rec.stats.violations += 1;
        *self.rec.stats.violations_by_kind.entry(kind).or_default() += 1;
    }
}

/// Shared by the listener, the sessions and the [`FakeSmartHost`](super::FakeSmartHost).
pub(crate) struct Shared {
    pub cfg: FakeConfig,
    inner: Mutex<Inner>,
    cond: Condvar,
    changed: watch::Sender<u64>,
    acceptor: Mutex<Option<Arc<SslAcceptor>>>,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
}

/// Locks, ignoring poisoning: a panicking hook must not wedge the fake.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(cfg: FakeConfig, acceptor: Option<SslAcceptor>) -> Shared {
        let inner = Inner {
            users: cfg.users.clone(),
            xoauth2: cfg.xoauth2.clone(),
            oauth: cfg.oauth.clone(),
            send_as: cfg.send_as.clone(),
            ..Inner::default()
        };
        Shared {
            cfg,
            inner: Mutex::new(inner),
            cond: Condvar::new(),
            changed: watch::channel(0).0,
            acceptor: Mutex::new(acceptor.map(Arc::new)),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&lock(&self.inner))
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let r = f(&mut lock(&self.inner));
        self.cond.notify_all();
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        r
    }

    pub fn acceptor(&self) -> Option<Arc<SslAcceptor>> {
        lock(&self.acceptor).clone()
    }

    pub fn set_acceptor(&self, a: SslAcceptor) {
        *lock(&self.acceptor) = Some(Arc::new(a));
    }

    pub fn add_task(&self, id: u64, h: AbortHandle) {
        lock(&self.tasks).insert(id, h);
    }

    /// Aborts every session task (their guards record the close).
    pub fn abort_sessions(&self) {
        for (_, h) in lock(&self.tasks).drain() {
            h.abort();
        }
    }

    /// The scripted action for `ev`, if any: the one-shot queue, the
    /// session's rules, the mailbox's rules, the recipient's action, the
    /// persistent action, then the hook (which runs outside the lock).
    pub fn action(&self, ev: &Event) -> Option<Action> {
        let hook = {
            let mut g = lock(&self.inner);
            if let Some(a) = g.scripts.get_mut(&ev.phase).and_then(VecDeque::pop_front) {
                return Some(a);
            }
            if let Some(a) = g
                .session_rules
                .get_mut(&ev.session)
                .and_then(|r| take_rule(r, ev.phase))
            {
                return Some(a);
            }
            if let Some(user) = &ev.auth_user
                && let Some(a) = g
                    .mailbox_rules
                    .get_mut(&user.to_ascii_lowercase())
                    .and_then(|r| take_rule(r, ev.phase))
            {
                return Some(a);
            }
            if ev.phase == Phase::Rcpt
                && let Some(a) = ev
                    .rcpt
                    .as_ref()
                    .and_then(|r| g.rcpt_actions.get(&r.to_ascii_lowercase()))
            {
                return Some(a.clone());
            }
            if let Some(a) = g.always.get(&ev.phase) {
                return Some(a.clone());
            }
            g.hook.clone()
        };
        hook.and_then(|h| h(ev))
    }

    /// Registers a new connection; returns its id.
    pub fn session_opened(&self, peer: SocketAddr) -> u64 {
        self.update(|g| {
            g.next_session += 1;
            let id = g.next_session;
            g.rec.sessions.push(SessionLog {
                id,
                peer,
                started: SystemTime::now(),
                open: true,
                helo: None,
                tls: None,
                sni: None,
                tls_error: None,
                plaintext_after_starttls: false,
                auth_user: None,
                auth_mechanism: None,
                auth_app: None,
                client_cert_names: Vec::new(),
                client_cert_verified: false,
                attribution: None,
                accepted: 0,
                transcript: Vec::new(),
            });
            let mut rules = Vec::new();
            for (left, phase, action) in g.next_sessions.iter_mut() {
                if *left > 0 {
                    *left -= 1;
                    rules.push(Rule {
                        phase: *phase,
                        action: action.clone(),
                        remaining: None,
                    });
                }
            }
            g.next_sessions.retain(|(left, _, _)| *left > 0);
            if !rules.is_empty() {
                g.session_rules.insert(id, rules);
            }
            let st = &mut g.rec.stats;
            st.connections += 1;
            st.open_sessions += 1;
            st.max_concurrent = st.max_concurrent.max(st.open_sessions);
            id
        })
    }

    /// Records the end of a connection.
    pub fn session_closed(&self, id: u64) {
        lock(&self.tasks).remove(&id);
        self.update(|g| {
            let was_open = match g.session_mut(id) {
                Some(s) => std::mem::replace(&mut s.open, false),
                None => false,
            };
            if was_open {
                g.rec.stats.open_sessions -= 1;
            }
            for list in g.mailbox_sessions.values_mut() {
                list.retain(|&s| s != id);
            }
            g.session_rules.remove(&id);
        });
    }

    /// Changes the session's log entry.
    pub fn with_session(&self, id: u64, f: impl FnOnce(&mut SessionLog)) {
        self.update(|g| {
            if let Some(s) = g.session_mut(id) {
                f(s);
            }
        });
    }

    /// Appends a transcript line.
    pub fn transcript(&self, id: u64, line: String) {
        self.with_session(id, |s| s.transcript.push(line));
    }

    /// Counts an AUTH command.
    pub fn auth_attempt(&self) {
        self.update(|g| g.rec.stats.auth_attempts += 1);
    }

    /// Records a failed AUTH.
    pub fn auth_failed(&self) {
        self.update(|g| g.rec.stats.auth_failures += 1);
    }

    /// Records a successful AUTH: registers the session with its mailbox
    /// and counts a violation when the mailbox already had its limit of
    /// sessions open.
    pub fn auth_succeeded(&self, id: u64, user: &str, mechanism: &str, app: Option<&str>) {
        let limit = self.cfg.mailbox_concurrency_limit;
        self.update(|g| {
            g.rec.stats.auth_successes += 1;
            let key = user.to_ascii_lowercase();
            let list = g.mailbox_sessions.entry(key.clone()).or_default();
            list.push(id);
            let n = list.len();
            if limit > 0 && n > limit {
                g.violation(ViolationKind::Concurrency, &key, id);
            }
            let max = g
                .rec
                .stats
                .max_concurrent_per_mailbox
                .entry(key)
                .or_default();
            *max = (*max).max(n);
            if let Some(s) = g.session_mut(id) {
                s.auth_user = Some(user.to_string());
                s.auth_mechanism = Some(mechanism.to_string());
                s.auth_app = app.map(str::to_string);
            }
        });
    }

    /// Records an XOAUTH2 attempt and counts it for its user.
    pub fn xoauth2_attempt(&self, a: Xoauth2Attempt) {
        self.update(|g| {
            let c = g
                .rec
                .stats
                .xoauth2
                .entry(a.user.to_ascii_lowercase())
                .or_default();
            if a.ok {
                c.successes += 1;
            } else {
                c.failures += 1;
            }
            g.rec.xoauth2.push(a);
        });
    }

    /// Counts a violation.
    pub fn violation(&self, kind: ViolationKind, mailbox: &str, session: u64) {
        self.update(|g| g.violation(kind, mailbox, session));
    }

    /// True when `mailbox` may send as `from` (itself or a send-as grant).
    pub fn may_send_as(&self, mailbox: &str, from: &str) -> bool {
        mailbox.eq_ignore_ascii_case(from)
            || self.read(|g| {
                g.send_as
                    .get(&mailbox.to_ascii_lowercase())
                    .is_some_and(|l| l.iter().any(|a| a.eq_ignore_ascii_case(from)))
            })
    }

    /// True when charging `n` more recipients to `sender` would exceed the
    /// recipient budget.
    pub fn over_budget(&self, sender: &str, n: usize) -> bool {
        let Some(w) = self.cfg.recipient_budget else {
            return false;
        };
        let now = Instant::now();
        self.update(|g| {
            let l = g
                .rcpt_ledger
                .entry(sender.to_ascii_lowercase())
                .or_default();
            while l
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= w.period)
            {
                l.pop_front();
            }
            l.iter().map(|(_, k)| k).sum::<usize>() + n > w.count
        })
    }

    /// Accounts for an accepted message: charges its recipients to
    /// `sender` and counts a message-rate violation for `mailbox` when it
    /// had its limit of messages accepted in the preceding window.
    pub fn accepted(&self, session: u64, mailbox: Option<&str>, sender: Option<&str>, n: usize) {
        let now = Instant::now();
        let rate = self.cfg.message_rate;
        let budget = self.cfg.recipient_budget.is_some();
        self.update(|g| {
            if let (Some(w), Some(m)) = (rate, mailbox) {
                let key = m.to_ascii_lowercase();
                let l = g.accepted_at.entry(key.clone()).or_default();
                while l
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= w.period)
                {
                    l.pop_front();
                }
                let before = l.len();
                l.push_back(now);
                if before >= w.count {
                    g.violation(ViolationKind::MessageRate, &key, session);
                }
            }
            if let (true, Some(s)) = (budget, sender) {
                g.rcpt_ledger
                    .entry(s.to_ascii_lowercase())
                    .or_default()
                    .push_back((now, n));
            }
        });
    }

    /// True when the session is beyond its mailbox's limit: more than
    /// `limit` sessions of the mailbox authenticated before it are open.
    pub fn over_limit(&self, id: u64, user: &str) -> bool {
        let limit = self.cfg.mailbox_concurrency_limit;
        if limit == 0 {
            return false;
        }
        self.read(|g| {
            g.mailbox_sessions
                .get(&user.to_ascii_lowercase())
                .and_then(|l| l.iter().position(|&s| s == id))
                .is_some_and(|rank| rank >= limit)
        })
    }

    /// Records a message at the end of data.
    pub fn message(&self, m: Message) {
        self.update(|g| {
            if m.accepted() {
                if let Some(s) = g.session_mut(m.session) {
                    s.accepted += 1;
                }
                g.rec.messages.push(m);
            } else {
                g.rec.refused.push(m);
            }
        });
    }

    /// Blocks until `pred` holds or `timeout` passes; returns a copy of the
    /// records either way (`Err` on timeout).
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Records) -> bool,
    ) -> Result<Records, Box<Records>> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.inner);
        loop {
            if pred(&g.rec) {
                return Ok(g.rec.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Box::new(g.rec.clone()));
            }
            g = self
                .cond
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`Shared::wait_until`] for async callers.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Records) -> bool,
    ) -> Result<Records, Box<Records>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.changed.subscribe();
        loop {
            {
                let g = lock(&self.inner);
                if pred(&g.rec) {
                    return Ok(g.rec.clone());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(Box::new(lock(&self.inner).rec.clone())),
            }
        }
    }
}

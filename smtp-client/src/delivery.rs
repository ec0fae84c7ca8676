//! One delivery request from qmgr, start to finish: read the queue file,
//! deliver by SMTP (cached session or a new one) or into a Maildir, log
//! Postfix's `to=<...>, relay=..., delays=..., dsn=..., status=...` line per
//! recipient, and build the [`Response`].

use crate::auth::{PasswordMaps, TokenSource};
use crate::cache::{Cache, Key};
use crate::connect;
use crate::maildir;
use crate::outcome::{Outcome, SiteFailure};
use crate::resolve;
use crate::session::{Session, Setup};
use crate::settings::Settings;
use crate::tls::TlsEngine;
use crate::transaction::{self, After, Job};
use conf::nexthop::Nexthop;
use hickory_resolver::TokioResolver;
use queue::QueueFile;
use queue::deliver::{RcptRequest, RcptResult, Request, Response, Status};
use queue::file::Ret;
use queue::log::{self, Delays, DeliveryLine};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Queue files up to this size are read on the event loop.
pub(crate) const INLINE_READ_LIMIT: u64 = 256 * 1024;

/// The delivery agent's long-lived state, shared by all deliveries.
#[derive(Debug)]
pub struct Agent {
    /// Configuration.
    pub settings: Settings,
    resolver: Result<TokioResolver, String>,
    tls: TlsEngine,
    passwords: PasswordMaps,
    tokens: Option<Arc<dyn TokenSource>>,
    rewriter: Result<crate::rewrite::Rewriter, String>,
    /// Idle sessions.
    pub cache: Cache,
    stopping: AtomicBool,
    /// Recipients being delivered now, by queue file and envelope position.
    busy: Mutex<HashSet<(String, usize)>>,
}

/// The result for one recipient, before logging.
struct Done {
    outcome: Outcome,
    relay: String,
    conn_use: u32,
    conn_done: Option<SystemTime>,
}

impl Agent {
    /// Builds the agent from the configuration; `dns_server` replaces the
    /// system resolvers (tests). Returns the problems to log at start.
    #[cfg(test)]
    pub fn new(cfg: &conf::Config, dns_server: Option<SocketAddr>) -> (Agent, Vec<String>) {
        let (settings, _) = Settings::from_config(cfg);
        let tls = TlsEngine::new(&settings.tls);
        Agent::with_tls(cfg, dns_server, tls)
    }

    /// [`Agent::new`] with TLS contexts built earlier (before privileges
    /// were dropped, so the client key may be readable by root only).
    pub fn with_tls(
        cfg: &conf::Config,
        dns_server: Option<SocketAddr>,
        tls: TlsEngine,
    ) -> (Agent, Vec<String>) {
        let (settings, mut warnings) = Settings::from_config(cfg);
        if settings.tls.level > crate::settings::TlsLevel::None || settings.tls.wrappermode {
            warnings.extend(tls.problems());
        }
        let passwords = PasswordMaps::open(cfg);
        if settings.sasl.enable {
            if let Some(p) = passwords.problem() {
                warnings.push(format!("cannot open smtp_sasl_password_maps: {p}"));
            }
            if cfg.smtp_sasl_password_maps.is_empty() {
                warnings.push("smtp_sasl_auth_enable = yes, but smtp_sasl_password_maps is empty: no credentials, mail goes out without AUTH".into());
            }
        }
        let resolver = queue::dns::resolver(dns_server);
        if let Err(e) = &resolver
            && settings.lookup_dns
        {
            warnings.push(e.clone());
        }
        let cache = Cache::new(settings.cache);
        let tokens: Option<Arc<dyn TokenSource>> = match crate::oauth::OAuthTokens::from_config(cfg)
        {
            Some(Ok(t)) => Some(Arc::new(t)),
            Some(Err(e)) => {
                warnings.push(format!("XOAUTH2 is not available: {e}"));
                None
            }
            None => None,
        };
        let rewriter = crate::rewrite::Rewriter::new(cfg);
        if let Err(e) = &rewriter {
            warnings.push(format!("cannot open smtp_generic_maps: {e}"));
        }
        (
            Agent {
                settings,
                resolver,
                tls,
                passwords,
                tokens,
                rewriter,
                cache,
                stopping: AtomicBool::new(false),
                busy: Mutex::new(HashSet::new()),
            },
            warnings,
        )
    }

    /// Uses `tokens` for XOAUTH2.
    #[cfg(test)]
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> Agent {
        self.tokens = Some(tokens);
        self
    }

    /// Stops caching sessions (shutdown).
    pub fn stop_caching(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Handles one request; never fails: every problem becomes a result.
    pub async fn deliver(&self, req: &Request) -> Response {
        let handoff = SystemTime::now();
        // A small file was just written and is in the page cache: reading
        // it here costs less than handing it to the blocking pool; a large
        // one is read there, so that it does not hold up other deliveries.
        let small = std::fs::metadata(&req.path).is_ok_and(|m| m.len() <= INLINE_READ_LIMIT);
        let read = if small {
            Ok(QueueFile::read(Path::new(&req.path)))
        } else {
            let path = req.path.clone();
            tokio::task::spawn_blocking(move || QueueFile::read(Path::new(&path))).await
        };
        let qf = match read {
            Ok(Ok(qf)) => qf,
            Ok(Err(e)) => {
                let o =
                    Outcome::local("4.3.0", format!("cannot read queue file {}: {e}", req.path));
                return self.finish(req, handoff, self.all(req, o, "none", 0, None), false);
            }
            Err(e) => {
                let o = Outcome::local("4.3.0", format!("queue file reader failed: {e}"));
                return self.finish(req, handoff, self.all(req, o, "none", 0, None), false);
            }
        };
        // A queue manager that died can leave a request for this message
        // behind it (in this agent's queue, or being delivered by another
        // task) while the queue manager that replaced it asks again. The
        // queue file says what was delivered (mark_sent), and `busy` what
        // is being delivered: neither is sent a second time.
        let mut skipped = Vec::new();
        let mut todo = Vec::with_capacity(req.recipients.len());
        {
            let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &req.recipients {
                if qf.envelope.recipients.get(r.idx).is_some_and(|e| e.done) {
                    skipped.push(already(
                        r,
                        Status::Sent,
                        "2.0.0",
                        "done already (delivered or bounced)",
                    ));
                } else if !busy.insert((req.path.clone(), r.idx)) {
                    skipped.push(already(
                        r,
                        Status::Deferred,
                        "4.3.0",
                        "a delivery of this recipient is in progress",
                    ));
                } else {
                    todo.push(r.clone());
                }
            }
        }
        if !skipped.is_empty() {
            log::info(&format!(
                "{}: {} of {} recipients delivered already or being delivered (a request from a queue manager that has gone): not sent again",
                req.queue_id,
                skipped.len(),
                req.recipients.len()
            ));
        }
        if todo.is_empty() {
            return Response {
                req: req.req,
                results: skipped,
                site_failure: false,
                hold_route: false,
            };
        }
        // Released however this delivery ends (also if it panics).
        let guard = Busy {
            agent: self,
            path: req.path.clone(),
            idxs: todo.iter().map(|r| r.idx).collect(),
        };
        let whole;
        let req = if skipped.is_empty() {
            req
        } else {
            whole = Request {
                recipients: todo,
                ..req.clone()
            };
            &whole
        };
        let (done, site) = if req.transport == "maildir" {
            (self.deliver_maildir(req, &qf).await, false)
        } else {
            self.deliver_smtp(req, &qf).await
        };
        mark_sent(req, &qf, &done);
        drop(guard);
        let mut resp = self.finish(req, handoff, done, site);
        resp.results.extend(skipped);
        resp
    }

    fn all(
        &self,
        req: &Request,
        o: Outcome,
        relay: &str,
        conn_use: u32,
        conn_done: Option<SystemTime>,
    ) -> Vec<Done> {
        req.recipients
            .iter()
            .map(|_| Done {
                outcome: o.clone(),
                relay: relay.to_string(),
                conn_use,
                conn_done,
            })
            .collect()
    }

    async fn deliver_maildir(&self, req: &Request, qf: &QueueFile) -> Vec<Done> {
        let dir = req.nexthop.trim().to_string();
        if !dir.starts_with('/') {
            let o = Outcome::local(
                "4.3.5",
                format!(
                    "maildir transport: next hop \"{dir}\" is not an absolute directory; use maildir:/path/to/Maildir"
                ),
            );
            return self.all(req, o, "maildir", 0, None);
        }
        let host = if self.settings.myhostname.is_empty() {
            "localhost".to_string()
        } else {
            self.settings.myhostname.clone()
        };
        let mut out = Vec::new();
        for r in &req.recipients {
            let (d, h, s, a) = (
                dir.clone(),
                host.clone(),
                req.sender.clone(),
                r.addr.clone(),
            );
            let content = qf.content().to_vec();
            let res = tokio::task::spawn_blocking(move || {
                maildir::deliver(Path::new(&d), &h, &s, &a, &content)
            })
            .await;
            let outcome = match res {
                Ok(Ok(_)) => Outcome::sent_local("delivered to maildir"),
                Ok(Err(e)) => Outcome::local(e.dsn(), format!("maildir delivery failed: {e}")),
                Err(e) => Outcome::local("4.3.0", format!("maildir delivery failed: {e}")),
            };
            out.push(Done {
                outcome,
                relay: "maildir".into(),
                conn_use: 0,
                conn_done: None,
            });
        }
        out
    }

    async fn deliver_smtp(&self, req: &Request, qf: &QueueFile) -> (Vec<Done>, bool) {
        let s = &self.settings;
        let nexthop = match Nexthop::parse(&req.nexthop, s.default_port) {
            Ok(n) => n,
            Err(e) => {
                let mut o = Outcome::local(
                    "4.3.5",
                    format!("bad next hop for transport {}: {e}", req.transport),
                );
                o.hold = true;
                return (self.all(req, o, "none", 0, None), true);
            }
        };
        let written = req.nexthop.trim().to_string();
        let canonical = nexthop.to_string();
        let mut dests = vec![written.clone()];
        if !canonical.eq_ignore_ascii_case(&written) {
            dests.push(canonical);
        }
        let pre_user = if s.sasl.enable {
            let d: Vec<&str> = dests.iter().map(String::as_str).collect();
            let host = (!nexthop.mx).then_some(nexthop.host.as_str());
            self.passwords
                .lookup(s.sasl.sender_dependent, &req.sender, host, &d)
                .ok()
                .flatten()
                .map(|c| c.user)
        } else {
            None
        };
        // What goes out: generic maps, send-as rewriting, header hygiene.
        let rewritten = match &self.rewriter {
            Ok(rw) => rw.apply(
                pre_user.as_deref(),
                &req.sender,
                &req.recipients,
                qf.content(),
            ),
            Err(e) => Err(format!("cannot open smtp_generic_maps: {e}")),
        };
        let rewritten = match rewritten {
            Ok(r) => r,
            Err(e) => {
                let mut o = Outcome::local(
                    "4.3.0",
                    format!("{e}; fix the table and run postern reload"),
                );
                o.hold = true;
                return (self.all(req, o, "none", 0, None), true);
            }
        };
        let sender = rewritten.sender.as_deref().unwrap_or(&req.sender);
        let recipients = rewritten.recipients.as_deref().unwrap_or(&req.recipients);
        let content = rewritten.content.as_deref().unwrap_or(qf.content());
        let key = Key {
            nexthop: written.to_ascii_lowercase(),
            level: s.tls.level,
            sasl_user: pre_user,
        };
        let env = &qf.envelope;
        let ret = env.ret().map(|r| match r {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        });
        let setup = Setup {
            settings: s,
            tls: &self.tls,
            passwords: &self.passwords,
            tokens: self.tokens.as_deref(),
            level: s.tls.level,
            nexthop_host: &nexthop.host,
            dests,
            sender: &req.sender,
        };
        // Recipients still to try, and the last result of each. A server
        // that leaves recipients with a temporary failure passes them to
        // the next server while one is left (Postfix's non-final servers).
        let mut done: Vec<Option<Done>> = recipients.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..recipients.len()).collect();
        let mut walk: Option<connect::Walk> = None;
        let mut use_cache = true;
        loop {
            let batch: Vec<RcptRequest> = pending.iter().map(|&i| recipients[i].clone()).collect();
            let job = Job {
                queue_id: &req.queue_id,
                sender,
                recipients: &batch,
                content,
                body: env.attr("body"),
                envid: env.attr("envid"),
                ret,
                smtputf8: env.attr("smtputf8").is_some_and(|v| {
                    !matches!(v.to_ascii_lowercase().as_str(), "" | "no" | "0" | "false")
                }),
            };
            let (mut session, reused) = match self.cached(&key, use_cache).await {
                Some(sess) => (sess, true),
                None => {
                    let opened = match walk.as_mut() {
                        Some(w) => w.open_next(&setup).await.map_err(connect::no_server),
                        None => match self.walk(&nexthop).await {
                            Ok(w) => walk
                                .insert(w)
                                .open_next(&setup)
                                .await
                                .map_err(connect::no_server),
                            Err(f) => Err(f),
                        },
                    };
                    match opened {
                        Ok(sess) => (sess, false),
                        Err(f) => return self.fail_pending(done, &pending, f),
                    }
                }
            };
            use_cache = false;
            if reused
                && s.tls.loglevel >= 1
                && let Some(info) = &session.tls
            {
                log::info(&crate::tls::summary(
                    &session.chat.peer.namaddrport(),
                    info,
                    true,
                ));
            }
            let conn_done = SystemTime::now();
            let tx = transaction::run(&mut session, s, &job).await;
            if reused && tx.dead_on_arrival {
                log::info(&format!(
                    "{}: cached session with {} is gone; retrying on a new connection",
                    req.queue_id,
                    session.chat.peer.namaddrport()
                ));
                continue;
            }
            session.uses += 1;
            let peer = session.chat.peer.clone();
            let relay = peer.namaddrport();
            let conn_use = session.uses;
            let again: Vec<usize> = pending
                .iter()
                .zip(&tx.outcomes)
                .filter(|(_, o)| next_server_may_help(o))
                .map(|(&i, _)| i)
                .collect();
            let mut move_on = false;
            if !again.is_empty() {
                if reused && walk.is_none() {
                    // A cached session counts as this delivery's first;
                    // the servers left come from a fresh lookup.
                    walk = self.walk(&nexthop).await.ok();
                }
                if let Some(w) = walk.as_mut() {
                    if reused {
                        w.note_session(&peer);
                    }
                    move_on = w.has_more(s);
                }
            }
            if move_on {
                // Closed before the next server is tried: a delivery never
                // holds two connections (per-account concurrency limits
                // count one).
                if tx.after != After::Broken {
                    session.chat.quit(s.timeouts.quit).await;
                }
            } else {
                self.release(key.clone(), session, tx.after, req.more_waiting)
                    .await;
            }
            let first_again = pending
                .iter()
                .zip(&tx.outcomes)
                .find(|(i, _)| again.contains(i))
                .map(|(_, o)| o.reason.clone());
            for (&i, outcome) in pending.iter().zip(tx.outcomes) {
                done[i] = Some(Done {
                    outcome,
                    relay: relay.clone(),
                    conn_use,
                    conn_done: Some(conn_done),
                });
            }
            if !move_on {
                return (done.into_iter().map(finished).collect(), false);
            }
            if let Some(reason) = first_again {
                log::info(&format!(
                    "{}: {reason}; trying the next server",
                    req.queue_id
                ));
            }
            pending = again;
        }
    }

    /// The servers of `nexthop`, best first.
    async fn walk(&self, nexthop: &Nexthop) -> Result<connect::Walk, SiteFailure> {
        let resolver = self.resolver.as_ref().map_err(|e| {
            SiteFailure::no_relay(Outcome::local(
                "4.3.0",
                format!("DNS resolver unavailable: {e}"),
            ))
        })?;
        let targets = resolve::targets(resolver, &self.settings, nexthop)
            .await
            .map_err(|o| SiteFailure::no_relay(o).final_())?;
        Ok(connect::Walk::new(targets))
    }

    /// No (further) server could be reached: the recipients still pending
    /// get `f`, unless an earlier server already answered for them (its
    /// reply says more than a failed connection). A site failure when no
    /// server answered at all.
    fn fail_pending(
        &self,
        mut done: Vec<Option<Done>>,
        pending: &[usize],
        f: SiteFailure,
    ) -> (Vec<Done>, bool) {
        let answered = done.iter().any(Option::is_some);
        if pending.iter().any(|&i| done[i].is_some()) {
            // The earlier server's reply stands; say why no other was used.
            log::info(&f.outcome.reason);
        }
        for &i in pending {
            if done[i].is_none() {
                done[i] = Some(Done {
                    outcome: f.outcome.clone(),
                    relay: f.relay.clone(),
                    conn_use: 0,
                    conn_done: None,
                });
            }
        }
        let site = !answered && f.outcome.status == Status::Deferred;
        (done.into_iter().map(finished).collect(), site)
    }

    /// A live idle session for `key`, if any; dead and expired ones are
    /// dropped on the way.
    async fn cached(&self, key: &Key, use_cache: bool) -> Option<Session> {
        if !use_cache {
            return None;
        }
        loop {
            let mut stale = Vec::new();
            let got = self.cache.take(key, &mut stale);
            let quit = self.settings.timeouts.quit;
            for st in stale {
                tokio::spawn(st.chat.quit(quit));
            }
            let mut sess = got?;
            if sess.chat.idle_check().await {
                return Some(sess);
            }
        }
    }

    /// After a transaction: keep the session for reuse, or close it. QUIT
    /// runs in the background so the result goes to qmgr at once.
    async fn release(&self, key: Key, mut session: Session, after: After, more_waiting: bool) {
        let quit = self.settings.timeouts.quit;
        if after == After::Broken {
            return;
        }
        let keep = (more_waiting || self.settings.cache.on_demand)
            && !self.stopping.load(Ordering::SeqCst)
            && self.cache.accepts(&session);
        if !keep {
            tokio::spawn(session.chat.quit(quit));
            return;
        }
        if after == After::NeedsRset && !transaction::rset(&mut session, &self.settings).await {
            return;
        }
        if let Some(back) = self.cache.put(key, session) {
            tokio::spawn(back.chat.quit(quit));
        }
    }

    /// Logs one line per recipient and builds the response.
    fn finish(
        &self,
        req: &Request,
        handoff: SystemTime,
        done: Vec<Done>,
        site_failure: bool,
    ) -> Response {
        let now = SystemTime::now();
        let mut results = Vec::with_capacity(done.len());
        let mut hold_route = false;
        let mut explained: Vec<&'static str> = Vec::new();
        let some_sent = done
            .iter()
            .any(|d| d.outcome.status == queue::deliver::Status::Sent);
        for (r, mut d) in req.recipients.iter().zip(done) {
            if some_sent {
                d.outcome = d.outcome.recipient_refusal();
            }
            hold_route |= d.outcome.hold;
            let orig = r
                .orcpt
                .as_deref()
                .map(|o| o.split_once(';').map_or(o, |(_, a)| a));
            let line = log::delivery(
                &DeliveryLine {
                    id: &req.queue_id,
                    to: &r.addr,
                    orig_to: orig,
                    relay: &d.relay,
                    conn_use: d.conn_use,
                    delays: Delays {
                        arrival: queue::time::from_micros(req.arrival_us),
                        active: Some(queue::time::from_micros(req.active_us)),
                        handoff: Some(handoff),
                        conn_done: d.conn_done,
                        done: now,
                    },
                    dsn: &d.outcome.dsn,
                    status: d.outcome.status_word(),
                    reason: &d.outcome.reason,
                },
                self.settings.delay_resolution,
            );
            log::info(&line);
            // What the reply means and how to fix it, once per delivery.
            if d.outcome.status != queue::deliver::Status::Sent
                && let Some(help) = queue::explain::explain(
                    d.outcome.diagnostic.as_deref().unwrap_or(&d.outcome.reason),
                )
                && !explained.contains(&help)
            {
                explained.push(help);
                log::info(&format!("{}: explanation: {help}", req.queue_id));
            }
            results.push(RcptResult {
                idx: r.idx,
                status: d.outcome.status,
                dsn: d.outcome.dsn,
                reason: d.outcome.reason,
                relay: d.relay,
                remote_mta: d.outcome.remote_mta,
                diagnostic: d.outcome.diagnostic,
            });
        }
        Response {
            req: req.req,
            results,
            site_failure,
            hold_route,
        }
    }
}

/// Marks delivered recipients done in the queue file before reporting, so a
/// queue manager that dies before it reads the report does not deliver them
/// again. Bounced recipients are left to qmgr: it must send their DSN first.
fn mark_sent(req: &Request, qf: &QueueFile, done: &[Done]) {
    let offsets: Vec<usize> = req
        .recipients
        .iter()
        .zip(done)
        .filter(|(_, d)| d.outcome.status == queue::deliver::Status::Sent)
        .filter_map(|(r, _)| qf.envelope.recipients.get(r.idx).map(|e| e.offset))
        .collect();
    if let Err(e) = queue::file::mark_done(Path::new(&req.path), &offsets) {
        log::warning(&format!(
            "{}: cannot mark delivered recipients in the queue file: {e}",
            req.queue_id
        ));
    }
}

/// Recipients of one request marked busy in [`Agent`]; unmarked on drop.
struct Busy<'a> {
    agent: &'a Agent,
    path: String,
    idxs: Vec<usize>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut busy = self
            .agent
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &i in &self.idxs {
            busy.remove(&(self.path.clone(), i));
        }
    }
}

/// The result for a recipient this request does not deliver (see
/// [`Agent::deliver`]); not logged as a delivery.
fn already(r: &RcptRequest, status: Status, dsn: &str, reason: &str) -> RcptResult {
    RcptResult {
        idx: r.idx,
        status,
        dsn: dsn.to_string(),
        reason: reason.to_string(),
        relay: "none".to_string(),
        remote_mta: None,
        diagnostic: None,
    }
}

/// A result that is always set once the delivery loop ends.
fn finished(d: Option<Done>) -> Done {
    d.unwrap_or_else(|| Done {
        outcome: Outcome::local("4.3.0", "mail transaction ended without a result"),
        relay: "none".into(),
        conn_use: 0,
        conn_done: None,
    })
}

/// A temporary failure another server of the destination may not have:
/// a plain 4xx reply or a lost connection. Replies that mean an account
/// or configuration problem (hold, slow down) would be the same at every
/// server, and sending the mailbox's mail to another one would only add
/// connections.
fn next_server_may_help(o: &Outcome) -> bool {
    o.status == Status::Deferred
        && !o.hold
        && queue::explain::treatment(o.diagnostic.as_deref().unwrap_or(&o.reason))
            == queue::explain::Treatment::Normal
}

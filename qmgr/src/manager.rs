//! The queue manager's state: active messages, their recipients and
//! outcomes, the deferred schedule, and the pending index changes that are
//! committed together, at most every few milliseconds.

use crate::agents::{AgentConn, Event};
use crate::bounce::{self, Addressing, Failure, Kind, Original};
use crate::schedule::{DestKey, Destination};
use conf::Config;
use queue::file::{Envelope, QueueFile};
use queue::index::Index;
use queue::layout::{Queue, QueueName};
use queue::log::{self, Delays, DeliveryLine};
use queue::route::{Route, Router};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// One index change, applied in the next batch.
#[derive(Debug)]
pub enum Op {
    /// A new or re-read message.
    Insert {
        id: String,
        queue: QueueName,
        env: Box<Envelope>,
        size: u64,
        message_id: Option<String>,
    },
    /// Moved between queues.
    SetQueue { id: String, queue: QueueName },
    /// Deferred until `next`.
    Deferred {
        id: String,
        next: i64,
        attempts: i64,
        reason: String,
    },
    /// Due at `next` (flush).
    NextAttempt { id: String, next: i64 },
    /// Delay warning sent.
    Warned { id: String },
    /// Recipient delivered or bounced.
    RcptDone { id: String, idx: usize },
    /// Recipient deferred, with why.
    RcptReason {
        id: String,
        idx: usize,
        reason: String,
    },
    /// Message gone.
    Delete { id: String },
    /// An account ledger entry (new or updated).
    LedgerPut {
        account: String,
        row: queue::index::LedgerRow,
    },
    /// Ledger entries older than this (microseconds) are no longer needed.
    LedgerPrune { before: i64 },
    /// Message tracking (see `track`).
    Track(queue::index::track::TrackOp),
}

/// A recipient's outcome in the current attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Delivered (or discarded).
    Sent,
    /// Temporary failure.
    Deferred(Failure),
    /// Permanent failure.
    Bounced(Failure),
}

/// An active message.
#[derive(Debug)]
pub struct Msg {
    /// Queue ID.
    pub id: String,
    /// The file's envelope (recipients carry done flags).
    pub env: Envelope,
    /// When it was activated (delays= b).
    pub activated: SystemTime,
    /// Outcomes this attempt, by recipient index.
    pub outcomes: HashMap<usize, Outcome>,
    /// Jobs not yet answered.
    pub outstanding: usize,
    /// Attempts so far (including this one).
    pub attempts: i64,
    /// A delay warning was sent already.
    pub warned: bool,
    /// Recipients whose done mark must be written into the file.
    pub newly_done: Vec<usize>,
    /// Not to be retried before this (a held account or route).
    pub not_before: Option<SystemTime>,
    /// What the agents reported this attempt, by recipient (tracking).
    pub reported: HashMap<usize, crate::track::Reported>,
}

/// A request in flight: message, destination, recipient indices, and its
/// account ledger ticket.
pub type InFlight = (String, DestKey, Vec<usize>, i64);

/// The manager.
pub struct Manager {
    /// Configuration.
    pub cfg: Config,
    /// The queue directory.
    pub queue: Queue,
    /// The index (qmgr is its writer).
    pub index: Index,
    /// Routing tables.
    pub router: Router,
    /// Active messages by ID.
    pub msgs: HashMap<String, Msg>,
    /// Destinations.
    pub dests: HashMap<DestKey, Destination>,
    /// Deferred messages by due time.
    pub due: BTreeSet<(i64, String)>,
    /// Due time of each deferred message.
    pub due_of: HashMap<String, i64>,
    /// Attempts and warned flags of deferred messages (from the index).
    pub deferred_meta: HashMap<String, (i64, bool)>,
    /// Messages on hold.
    pub held: BTreeSet<String>,
    /// Agent connections by transport.
    pub agents: HashMap<String, AgentConn>,
    /// Requests in flight: (transport, req) → (message, destination, recipients).
    pub inflight: HashMap<(String, u64), InFlight>,
    /// Next request number.
    pub next_req: u64,
    /// Connection generation counter.
    pub next_conn: u64,
    /// Events from agent tasks.
    pub events: mpsc::UnboundedSender<Event>,
    /// Transports being connected (avoid parallel connects).
    pub connecting: HashMap<String, Instant>,
    /// Pending index changes.
    pub ops: Vec<Op>,
    /// Concurrency limit per transport from master.cf maxproc.
    pub maxproc: HashMap<String, usize>,
    /// Requests in flight per transport.
    pub transport_inflight: HashMap<String, usize>,
    /// Incoming files seen but not taken in (active limit reached).
    pub incoming_backlog: bool,
    /// Where finished queue files go (the spare pool, or unlinked).
    pub recycler: queue::spare::Recycler,
    /// Transports' configurations and account lookups.
    pub transports: crate::transports::Transports,
    /// Per-account shaping state, by account key.
    pub accounts: HashMap<String, crate::accounts::Account>,
    /// Ledger rows read at start, until their account is first used.
    pub ledger_rows: HashMap<String, Vec<queue::index::LedgerRow>>,
    /// Last ledger ticket handed out.
    pub next_ticket: i64,
    /// Earliest time an account waiting for its window can go again.
    pub account_timer: Option<SystemTime>,
    /// Counters and snapshots for `postern status --json` and the metrics
    /// endpoint.
    pub metrics: crate::metrics::Metrics,
}

fn now_us() -> i64 {
    queue::time::micros(SystemTime::now())
}

impl Manager {
    /// Applies the pending index changes in one transaction.
    pub fn commit(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.ops);
        let r = self.index.batch(|b| {
            for op in &ops {
                match op {
                    Op::Insert {
                        id,
                        queue,
                        env,
                        size,
                        message_id,
                    } => b.insert(id, *queue, env, *size, message_id.as_deref())?,
                    Op::SetQueue { id, queue } => b.set_queue(id, *queue)?,
                    Op::Deferred {
                        id,
                        next,
                        attempts,
                        reason,
                    } => b.set_deferred(id, *next, *attempts, reason)?,
                    Op::NextAttempt { id, next } => b.set_next_attempt(id, *next)?,
                    Op::Warned { id } => b.set_warned(id)?,
                    Op::RcptDone { id, idx } => b.recipient_done(id, *idx)?,
                    Op::RcptReason { id, idx, reason } => b.recipient_reason(id, *idx, reason)?,
                    Op::Delete { id } => b.delete(id)?,
                    Op::LedgerPut { account, row } => b.ledger_put(account, *row)?,
                    Op::LedgerPrune { before } => b.ledger_prune(*before)?,
                    Op::Track(t) => b.track(t)?,
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            // The files stay the truth; the index is repaired at next start.
            log::warning(&format!(
                "{e}; the index will be rebuilt from the queue files at the next start"
            ));
        }
    }

    /// Takes a message file in: from incoming/ (new) or deferred/ (due).
    pub fn activate(&mut self, id: &str, from: QueueName) {
        if self.msgs.contains_key(id) {
            return;
        }
        let path = self.queue.path(from, id);
        let qf = match QueueFile::read(&path) {
            Ok(q) => q,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.corrupt(&path, id, &e.to_string());
                return;
            }
        };
        if let Err(e) = self.queue.move_to(id, from, QueueName::Active) {
            log::warning(&format!("{id}: cannot move to active: {e}"));
            return;
        }
        let size = (qf.content_end - qf.content_start) as u64;
        self.track_accepted(id, &qf);
        let (attempts, warned) = self.deferred_meta.remove(id).unwrap_or((0, false));
        self.due_remove(id);
        if from == QueueName::Incoming {
            let mid = message_id_of(qf.content());
            self.ops.push(Op::Insert {
                id: id.to_string(),
                queue: QueueName::Active,
                env: Box::new(qf.envelope.clone()),
                size,
                message_id: mid,
            });
            let pending = qf.envelope.recipients.iter().filter(|r| !r.done).count();
            log::info(&log::opened(
                id,
                &qf.envelope.sender,
                size,
                pending,
                "queue active",
            ));
        } else {
            self.ops.push(Op::SetQueue {
                id: id.to_string(),
                queue: QueueName::Active,
            });
        }
        let msg = Msg {
            id: id.to_string(),
            env: qf.envelope,
            activated: SystemTime::now(),
            outcomes: HashMap::new(),
            outstanding: 0,
            attempts: attempts + 1,
            warned,
            newly_done: Vec::new(),
            not_before: None,
            reported: HashMap::new(),
        };
        self.msgs.insert(id.to_string(), msg);
        self.route(id);
    }

    /// Routes the pending recipients of an active message into jobs.
    fn route(&mut self, id: &str) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        let sender = msg.env.sender.clone();
        let source = msg
            .env
            .attr("client_addr")
            .map(str::to_string)
            .unwrap_or_else(|| sender.clone());
        let pending: Vec<(usize, String, Option<String>)> = msg
            .env
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.done)
            .map(|(i, r)| (i, r.addr.clone(), r.route.clone()))
            .collect();
        let mut groups: HashMap<DestKey, Vec<usize>> = HashMap::new();
        let mut immediate: Vec<(usize, Outcome, String, String)> = Vec::new(); // idx, outcome, dsn, text
        for (idx, addr, fixed) in pending {
            match self
                .router
                .resolve(&self.cfg, &addr, fixed.as_deref(), &sender)
            {
                Ok(Route::Agent { transport, nexthop }) => {
                    let account = self.transports.get(&transport).account(&sender, &nexthop);
                    groups
                        .entry(DestKey {
                            transport,
                            nexthop,
                            account,
                        })
                        .or_default()
                        .push(idx);
                }
                Ok(Route::Error { dsn, text }) => {
                    if dsn.starts_with('4') {
                        let f = Failure::local(&addr, &dsn, &text);
                        immediate.push((idx, Outcome::Deferred(f), dsn, text));
                    } else {
                        immediate.push((
                            idx,
                            Outcome::Bounced(Failure {
                                rcpt: addr.clone(),
                                orcpt: None,
                                dsn: dsn.clone(),
                                reason: text.clone(),
                                remote_mta: None,
                                diagnostic: None,
                            }),
                            dsn,
                            text,
                        ));
                    }
                }
                Ok(Route::Discard { text }) => {
                    immediate.push((idx, Outcome::Sent, "2.0.0".into(), text))
                }
                Err(e) => {
                    let text = format!("address resolver failure: {e}");
                    let f = Failure::local(&addr, "4.3.0", &text);
                    immediate.push((idx, Outcome::Deferred(f), "4.3.0".into(), text));
                }
            }
        }
        // Outcomes decided here are logged as Postfix's error/discard agents do.
        let activated = self.msgs.get(id).map(|m| m.activated);
        for (idx, outcome, dsn, text) in immediate {
            self.track_local(id, idx, &dsn, &text);
            let Some(msg) = self.msgs.get_mut(id) else {
                return;
            };
            let (status, program) = match &outcome {
                Outcome::Sent => ("sent", "discard"),
                Outcome::Deferred(_) => ("deferred", "error"),
                _ => ("bounced", "error"),
            };
            let r = &msg.env.recipients[idx];
            let line = log::delivery(
                &DeliveryLine {
                    id,
                    to: &r.addr,
                    orig_to: r.orcpt.as_deref().and_then(|o| o.strip_prefix("rfc822;")),
                    relay: "none",
                    conn_use: 0,
                    delays: Delays {
                        arrival: msg.env.arrival,
                        active: activated,
                        handoff: None,
                        conn_done: None,
                        done: SystemTime::now(),
                    },
                    dsn: &dsn,
                    status,
                    reason: &text,
                },
                self.cfg.delay_logging_resolution_limit as u32,
            );
            log::log_ident(program, log::Level::Info, &line);
            let outcome = match outcome {
                Outcome::Bounced(mut f) => {
                    f.orcpt = r.orcpt.clone();
                    Outcome::Bounced(f)
                }
                o => o,
            };
            self.metrics.count(&outcome);
            msg.outcomes.insert(idx, outcome);
        }
        let mut jobs = 0;
        let mut groups: Vec<(DestKey, Vec<usize>)> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, idxs) in groups {
            // Postfix's per-destination limit, and the account's
            // recipients-per-message limit (larger messages are split).
            let mut limit = self
                .cfg
                .transport_param(&key.transport, "destination_recipient_limit")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(50)
                .max(1);
            if key.account.is_some() {
                let per_message = self.transports.get(&key.transport).limits().per_message;
                if per_message > 0 {
                    limit = limit.min(per_message);
                }
            }
            for chunk in idxs.chunks(limit) {
                self.enqueue_job(key.clone(), id.to_string(), chunk.to_vec(), source.clone());
                jobs += 1;
            }
        }
        if let Some(msg) = self.msgs.get_mut(id) {
            msg.outstanding += jobs;
            if msg.outstanding == 0 {
                self.finish(id);
            }
        }
    }

    /// Records the outcome of one recipient.
    pub fn record(&mut self, id: &str, idx: usize, outcome: Outcome) {
        let Some(msg) = self.msgs.get_mut(id) else {
            return;
        };
        self.metrics.count(&outcome);
        match &outcome {
            Outcome::Sent | Outcome::Bounced(_) => {}
            Outcome::Deferred(f) => self.ops.push(Op::RcptReason {
                id: id.to_string(),
                idx,
                reason: f.reason.clone(),
            }),
        }
        msg.outcomes.insert(idx, outcome);
    }

    /// Completes an attempt when every job is answered: notifications,
    /// deferral or removal.
    pub fn finish(&mut self, id: &str) {
        let Some(mut msg) = self.msgs.remove(id) else {
            return;
        };
        let now = SystemTime::now();
        let age = now.duration_since(msg.env.arrival).unwrap_or_default();
        let lifetime = if msg.env.sender.is_empty() {
            self.cfg.bounce_queue_lifetime
        } else {
            self.cfg.maximal_queue_lifetime
        };
        let mut bounced: Vec<(usize, Failure)> = Vec::new();
        let mut deferred: Vec<(usize, Failure)> = Vec::new();
        let mut sent: Vec<usize> = Vec::new();
        let mut idxs: Vec<usize> = msg.outcomes.keys().copied().collect();
        idxs.sort_unstable();
        for idx in idxs {
            match msg.outcomes.get(&idx).cloned() {
                Some(Outcome::Sent) => sent.push(idx),
                Some(Outcome::Bounced(f)) => bounced.push((idx, f)),
                Some(Outcome::Deferred(f)) => deferred.push((idx, f)),
                _ => deferred.push((
                    idx,
                    Failure::local(
                        &msg.env.recipients[idx].addr,
                        "4.0.0",
                        "delivery status unknown",
                    ),
                )),
            }
        }
        // Recipients never routed this attempt (should not happen) stay pending.
        for (i, r) in msg.env.recipients.iter().enumerate() {
            if !r.done && !msg.outcomes.contains_key(&i) {
                deferred.push((
                    i,
                    Failure::local(&r.addr, "4.0.0", "delivery was not attempted"),
                ));
            }
        }
        let expired = !deferred.is_empty() && (lifetime.is_zero() || age >= lifetime);
        let expired_idxs: Vec<usize> = if expired {
            deferred.iter().map(|(i, _)| *i).collect()
        } else {
            Vec::new()
        };
        if expired {
            log::info(&format!(
                "{id}: from=<{}>, status=expired, returned to sender",
                msg.env.sender
            ));
            for (idx, f) in std::mem::take(&mut deferred) {
                let r = &msg.env.recipients[idx];
                bounced.push((
                    idx,
                    Failure {
                        rcpt: r.addr.clone(),
                        orcpt: r.orcpt.clone(),
                        reason: format!(
                            "message expired after {} in the queue; last problem: {}",
                            human(age),
                            f.reason
                        ),
                        ..f
                    },
                ));
            }
        }
        // Notifications must be durable before the recipients count as done.
        if !bounced.is_empty() {
            let failures: Vec<Failure> = bounced
                .iter()
                .filter(|(idx, _)| wants_failure_notice(msg.env.recipients[*idx].notify.as_deref()))
                .map(|(idx, f)| {
                    let mut f = f.clone();
                    f.orcpt = f.orcpt.or_else(|| msg.env.recipients[*idx].orcpt.clone());
                    f
                })
                .collect();
            if let Err(e) = self.notify(&msg, Kind::Failed, &failures) {
                log::warning(&format!(
                    "{id}: cannot queue the non-delivery notification ({e}); will retry"
                ));
                for (idx, mut f) in std::mem::take(&mut bounced) {
                    f.dsn = format!("4{}", f.dsn.get(1..).unwrap_or(".0.0"));
                    deferred.push((idx, f));
                }
            }
        }
        self.track_attempt(&msg, &sent, &bounced, &deferred, &expired_idxs);
        for (idx, _) in &bounced {
            sent.push(*idx);
        }
        for idx in sent {
            if !msg.env.recipients[idx].done {
                msg.env.recipients[idx].done = true;
                msg.newly_done.push(idx);
                self.ops.push(Op::RcptDone {
                    id: id.to_string(),
                    idx,
                });
            }
        }
        if deferred.is_empty() {
            // Everything done.
            if let Err(e) = self
                .recycler
                .retire(&self.queue.path(QueueName::Active, id))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warning(&format!("{id}: cannot remove queue file: {e}"));
            }
            self.ops.push(Op::Delete { id: id.to_string() });
            log::info(&format!("{id}: removed"));
            return;
        }
        // Some recipients wait: mark the finished ones in the file, warn
        // the sender if it has been long enough, and schedule a retry.
        if !msg.newly_done.is_empty() {
            mark_done(&self.queue.path(QueueName::Active, id), &msg);
        }
        if !self.cfg.delay_warning_time.is_zero()
            && !msg.warned
            && !msg.env.sender.is_empty()
            && age >= self.cfg.delay_warning_time
        {
            let notices: Vec<Failure> = deferred
                .iter()
                .filter(|(idx, _)| wants_delay_notice(msg.env.recipients[*idx].notify.as_deref()))
                .map(|(idx, f)| {
                    let r = &msg.env.recipients[*idx];
                    Failure {
                        rcpt: r.addr.clone(),
                        orcpt: r.orcpt.clone(),
                        ..f.clone()
                    }
                })
                .collect();
            match self.notify(&msg, Kind::Delayed, &notices) {
                Ok(()) => {
                    msg.warned = true;
                    self.ops.push(Op::Warned { id: id.to_string() });
                }
                Err(e) => log::warning(&format!("{id}: cannot queue the delay notification: {e}")),
            }
        }
        let delay = age.clamp(
            self.cfg.minimal_backoff_time,
            self.cfg
                .maximal_backoff_time
                .max(self.cfg.minimal_backoff_time),
        );
        let mut retry = now + delay;
        if let Some(nb) = msg.not_before
            && nb > retry
        {
            retry = nb;
        }
        let next = queue::time::micros(retry);
        let reason = deferred
            .first()
            .map(|(_, f)| f.reason.clone())
            .unwrap_or_default();
        for (idx, f) in &deferred {
            self.ops.push(Op::RcptReason {
                id: id.to_string(),
                idx: *idx,
                reason: f.reason.clone(),
            });
        }
        if let Err(e) = self
            .queue
            .move_to(id, QueueName::Active, QueueName::Deferred)
        {
            if e.kind() == std::io::ErrorKind::NotFound {
                // Deleted meanwhile (postsuper -d).
                self.ops.push(Op::Delete { id: id.to_string() });
                return;
            }
            log::warning(&format!("{id}: cannot move to deferred: {e}"));
        }
        self.ops.push(Op::Deferred {
            id: id.to_string(),
            next,
            attempts: msg.attempts,
            reason,
        });
        self.deferred_meta
            .insert(id.to_string(), (msg.attempts, msg.warned));
        self.due_insert(id, next);
    }

    /// Queues a notification about `msg` to its sender (and the postmaster
    /// copies `notify_classes` asks for).
    fn notify(&mut self, msg: &Msg, kind: Kind, failures: &[Failure]) -> std::io::Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let path = self.queue.path(QueueName::Active, &msg.id);
        let content = match QueueFile::read(&path) {
            Ok(q) => q.bytes[q.content_start..q.content_end].to_vec(),
            Err(_) => Vec::new(),
        };
        let orig = Original {
            id: &msg.id,
            env: &msg.env,
            content: &content,
        };
        let classes = &self.cfg.notify_classes;
        let double_bounce = self.cfg.double_bounce_sender.clone();
        let is_double_bounce_sender =
            msg.env.sender.split('@').next() == Some(double_bounce.as_str());
        let program = "bounce";
        if msg.env.sender.is_empty() || is_double_bounce_sender {
            if kind == Kind::Delayed || is_double_bounce_sender {
                return Ok(());
            }
            // A bounce that cannot be delivered.
            if classes.iter().any(|c| c == "2bounce") {
                let to = Addressing {
                    sender: qualify(&double_bounce, &self.cfg),
                    to: qualify(&self.cfg.double_bounce_notice_recipient, &self.cfg),
                    postmaster_copy: false,
                };
                let nid =
                    bounce::queue_notification(&self.cfg, &self.queue, kind, &orig, failures, &to)?;
                log::log_ident(
                    program,
                    log::Level::Info,
                    &format!("{}: postmaster non-delivery notification: {nid}", msg.id),
                );
            } else {
                log::log_ident(
                    program,
                    log::Level::Info,
                    &format!(
                        "{}: undeliverable bounce discarded (add 2bounce to notify_classes to receive these)",
                        msg.id
                    ),
                );
            }
            return Ok(());
        }
        let to = Addressing {
            sender: String::new(),
            to: msg.env.sender.clone(),
            postmaster_copy: false,
        };
        let nid = bounce::queue_notification(&self.cfg, &self.queue, kind, &orig, failures, &to)?;
        let what = if kind == Kind::Failed {
            "sender non-delivery notification"
        } else {
            "sender delay notification"
        };
        log::log_ident(
            program,
            log::Level::Info,
            &format!("{}: {what}: {nid}", msg.id),
        );
        let (class, rcpt) = if kind == Kind::Failed {
            ("bounce", &self.cfg.bounce_notice_recipient)
        } else {
            ("delay", &self.cfg.delay_notice_recipient)
        };
        if classes.iter().any(|c| c == class) {
            let to = Addressing {
                sender: qualify(&double_bounce, &self.cfg),
                to: qualify(rcpt, &self.cfg),
                postmaster_copy: true,
            };
            match bounce::queue_notification(&self.cfg, &self.queue, kind, &orig, failures, &to) {
                Ok(pid) => log::log_ident(
                    program,
                    log::Level::Info,
                    &format!(
                        "{}: postmaster {} notification: {pid}",
                        msg.id,
                        if kind == Kind::Failed {
                            "non-delivery"
                        } else {
                            "delay"
                        }
                    ),
                ),
                Err(e) => log::warning(&format!(
                    "{}: cannot queue the postmaster copy: {e}",
                    msg.id
                )),
            }
        }
        queue::wake::wake(&self.queue, "qmgr", &[queue::wake::NEW_MAIL]);
        Ok(())
    }

    /// Moves an unreadable file to corrupt/ and forgets the message.
    pub fn corrupt(&mut self, path: &std::path::Path, id: &str, reason: &str) {
        match self.queue.to_corrupt(path, reason) {
            Ok(dst) => log::warning(&format!(
                "{id}: unreadable queue file: {reason}; moved to {}",
                dst.display()
            )),
            Err(e) => log::warning(&format!(
                "{id}: unreadable queue file: {reason}; cannot move it to corrupt/: {e}"
            )),
        }
        self.ops.push(Op::Delete { id: id.to_string() });
        self.due_remove(id);
    }

    /// Schedules a deferred message.
    pub fn due_insert(&mut self, id: &str, at: i64) {
        self.due_remove(id);
        self.due.insert((at, id.to_string()));
        self.due_of.insert(id.to_string(), at);
    }

    /// Unschedules a deferred message.
    pub fn due_remove(&mut self, id: &str) {
        if let Some(at) = self.due_of.remove(id) {
            self.due.remove(&(at, id.to_string()));
        }
    }

    /// Activates deferred messages that are due, within the active limit.
    pub fn run_due(&mut self) {
        let now = now_us();
        let limit = self.cfg.qmgr_message_active_limit as usize;
        while self.msgs.len() < limit {
            let Some((at, id)) = self.due.iter().next().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.due_remove(&id);
            self.activate(&id, QueueName::Deferred);
        }
    }

    /// Makes every deferred message due now (postqueue -f).
    pub fn flush_all(&mut self) {
        let now = now_us();
        let ids: Vec<String> = self.due_of.keys().cloned().collect();
        for id in ids {
            self.due_insert(&id, now);
            self.ops.push(Op::NextAttempt { id, next: now });
        }
        for a in self.accounts.values_mut() {
            if let Some(line) = a.release() {
                log::info(&line);
            }
        }
        for d in self.dests.values_mut() {
            d.revive();
        }
    }

    /// Makes deferred messages for one site (`-s`, the recipient domain) due now.
    pub fn flush_site(&mut self, site: &str) {
        // Recipients' done flags are read from the index.
        self.commit();
        let now = now_us();
        let ids: Vec<String> = self.due_of.keys().cloned().collect();
        let site = site.to_ascii_lowercase();
        for id in ids {
            let Ok(rows) = self.index.recipients(&id) else {
                continue;
            };
            if rows
                .iter()
                .any(|r| !r.done && queue::route::rcpt_domain(&r.addr).eq_ignore_ascii_case(&site))
            {
                self.due_insert(&id, now);
                self.ops.push(Op::NextAttempt { id, next: now });
            }
        }
        for (k, d) in self.dests.iter_mut() {
            if k.nexthop.to_ascii_lowercase().contains(&site) {
                d.revive();
            }
        }
    }

    /// Makes one deferred message due now (`-i`).
    pub fn flush_one(&mut self, id: &str) {
        if self.due_of.contains_key(id) {
            let now = now_us();
            self.due_insert(id, now);
            self.ops.push(Op::NextAttempt {
                id: id.to_string(),
                next: now,
            });
        }
    }

    /// Next time a deferred message is due.
    pub fn next_due(&self) -> Option<Instant> {
        let (at, _) = self.due.iter().next()?;
        let wait = (*at - now_us()).max(0) as u64;
        Some(Instant::now() + Duration::from_micros(wait))
    }
}

/// Writes `done` over the `rcpt` marker of newly finished recipients.
fn mark_done(path: &std::path::Path, msg: &Msg) {
    let offsets: Vec<usize> = msg
        .newly_done
        .iter()
        .map(|i| msg.env.recipients[*i].offset)
        .collect();
    if let Err(e) = queue::file::mark_done(path, &offsets) {
        log::warning(&format!(
            "{}: cannot mark finished recipients in the queue file: {e}",
            msg.id
        ));
    }
}

fn wants_failure_notice(notify: Option<&str>) -> bool {
    match notify {
        None => true,
        Some(n) => n
            .to_ascii_uppercase()
            .split(',')
            .any(|p| p.trim() == "FAILURE"),
    }
}

fn wants_delay_notice(notify: Option<&str>) -> bool {
    match notify {
        None => true,
        Some(n) => n
            .to_ascii_uppercase()
            .split(',')
            .any(|p| p.trim() == "DELAY"),
    }
}

/// The enhanced status code inside a reason text, if any.
pub fn dsn_from_reason(reason: &str) -> Option<String> {
    reason
        .split_whitespace()
        .find(|w| proto::status::EnhancedCode::parse(w.trim_end_matches([',', ';', ')'])).is_some())
        .map(|w| w.trim_end_matches([',', ';', ')']).to_string())
}

fn qualify(addr: &str, cfg: &Config) -> String {
    if addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{}", cfg.myhostname)
    }
}

/// The Message-ID header of a message, for the index.
pub fn message_id_of(content: &[u8]) -> Option<String> {
    let end = proto::header::header_end(content).unwrap_or(content.len());
    proto::header::parse_headers(&content[..end])
        .into_iter()
        .find(|h| h.name.eq_ignore_ascii_case("message-id"))
        .map(|h| h.value())
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{:.1} days", s as f64 / 86400.0)
    } else if s >= 3600 {
        format!("{:.1} hours", s as f64 / 3600.0)
    } else {
        format!("{s} seconds")
    }
}

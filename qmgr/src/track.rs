//! Message tracking: what the queue manager records for `postern log`.
//! Every message taken in, and each recipient's outcome of every delivery
//! attempt, become rows of the index's tracking tables
//! (`queue::index::track`), queued as [`Op::Track`] and committed with the
//! other pending index changes (one commit at most every 10 ms): no
//! commit, fsync or process of their own. Old rows are pruned in bounded batches at each rescan.
//! `tracking_retention_time = 0` turns all of it off.

use crate::bounce::Failure;
use crate::manager::{Manager, Msg, Op};
use queue::deliver::RcptResult;
use queue::file::QueueFile;
use queue::index::track::{TrackOp, TrackStatus, TrackedAttempt, TrackedMessage};
use std::time::SystemTime;

/// Most rows of each tracking table deleted per rescan (a few
/// milliseconds of the event loop; at the default queue_run_delay that is
/// over a million a day).
const PRUNE_BATCH: i64 = 5000;

/// How a recipient's outcome in the current attempt was reported: the
/// agent's relay and reply, when there was one.
#[derive(Debug, Clone)]
pub struct Reported {
    /// When the answer came.
    pub at: SystemTime,
    /// The server that answered, or `none`.
    pub relay: String,
    /// Enhanced status code.
    pub dsn: String,
    /// The reply or reason.
    pub reply: String,
}

impl Manager {
    fn tracking(&self) -> bool {
        !self.cfg.tracking_retention_time.is_zero()
    }

    /// Records a message being taken into the active queue (a second
    /// record of the same queue ID is ignored by the index, so retries
    /// and restarts do not count it twice).
    pub fn track_accepted(&mut self, id: &str, qf: &QueueFile) {
        if !self.tracking() {
            return;
        }
        let m = TrackedMessage::from_queue_file(
            id,
            &qf.envelope,
            qf.content(),
            self.cfg.tracking_subject,
        );
        self.ops.push(Op::Track(TrackOp::Message(Box::new(m))));
    }

    /// Keeps what a delivery agent said about a recipient, for its attempt
    /// record.
    pub fn track_reported(&mut self, msg_id: &str, r: &RcptResult) {
        if !self.tracking() {
            return;
        }
        if let Some(m) = self.msgs.get_mut(msg_id) {
            m.reported.insert(
                r.idx,
                Reported {
                    at: SystemTime::now(),
                    relay: r.relay.clone(),
                    dsn: r.dsn.clone(),
                    reply: r.reason.clone(),
                },
            );
        }
    }

    /// Keeps the reason of an outcome qmgr decided itself (a discard).
    pub fn track_local(&mut self, msg_id: &str, idx: usize, dsn: &str, reply: &str) {
        if !self.tracking() {
            return;
        }
        if let Some(m) = self.msgs.get_mut(msg_id) {
            m.reported.insert(
                idx,
                Reported {
                    at: SystemTime::now(),
                    relay: "none".into(),
                    dsn: dsn.to_string(),
                    reply: reply.to_string(),
                },
            );
        }
    }

    /// Records the outcome of each recipient of a finished attempt, as the
    /// attempt ends: `bounced` includes the recipients in `expired`.
    pub fn track_attempt(
        &mut self,
        msg: &Msg,
        sent: &[usize],
        bounced: &[(usize, Failure)],
        deferred: &[(usize, Failure)],
        expired: &[usize],
    ) {
        if !self.tracking() {
            return;
        }
        let now = SystemTime::now();
        let mut push = |idx: usize, status: TrackStatus, failure: Option<&Failure>| {
            let Some(r) = msg.env.recipients.get(idx) else {
                return;
            };
            let reported = msg.reported.get(&idx);
            let at = reported.map_or(now, |x| x.at);
            let (dsn, reply) = match (failure, reported) {
                // A failure's text is what the sender is told (and, for an
                // expired recipient, says so); its code may have been
                // turned into a deferral (soft_bounce, a held route).
                (Some(f), _) => (f.dsn.clone(), f.reason.clone()),
                (None, Some(x)) => (x.dsn.clone(), x.reply.clone()),
                (None, None) => ("2.0.0".into(), String::new()),
            };
            let orig = r
                .orcpt
                .as_deref()
                .and_then(|o| o.split_once(';').map(|(_, a)| a))
                .filter(|o| !o.eq_ignore_ascii_case(&r.addr))
                .map(str::to_string);
            let a = TrackedAttempt {
                queue_id: msg.id.clone(),
                ts: queue::time::micros(at),
                rcpt: r.addr.clone(),
                orig_rcpt: orig,
                relay: reported.map_or_else(|| "none".into(), |x| x.relay.clone()),
                delay: at
                    .duration_since(msg.env.arrival)
                    .unwrap_or_default()
                    .as_secs_f64(),
                dsn,
                status,
                reply,
            };
            self.ops.push(Op::Track(TrackOp::Attempt(Box::new(a))));
        };
        for &idx in sent {
            push(idx, TrackStatus::Sent, None);
        }
        for (idx, f) in bounced {
            let status = if expired.contains(idx) {
                TrackStatus::Expired
            } else {
                TrackStatus::Bounced
            };
            push(*idx, status, Some(f));
        }
        for (idx, f) in deferred {
            push(*idx, TrackStatus::Deferred, Some(f));
        }
    }

    /// Forgets tracking rows older than `tracking_retention_time`, one
    /// batch per call.
    pub fn track_prune(&mut self) {
        if !self.tracking() {
            return;
        }
        let before = SystemTime::now()
            .checked_sub(self.cfg.tracking_retention_time)
            .map_or(i64::MIN, queue::time::micros);
        self.ops.push(Op::Track(TrackOp::Prune {
            before,
            limit: PRUNE_BATCH,
        }));
    }
}

//! Destinations and dispatch: jobs (one message, one destination, up to the
//! recipient limit) wait per destination and account (the SASL user the
//! delivery logs in as); within a queue, the sources (client or sender)
//! take turns so one flooding device does not starve the others.
//! Destinations take turns (round robin) within their concurrency window
//! and rate delay, and within their account's limits (see `accounts`); a
//! destination that fails as a whole (no connection, bad greeting) is
//! suspended for minimal_backoff_time and its waiting jobs are deferred
//! without a connection attempt, as Postfix does.

use crate::accounts::{Account, Gate, Limits};
use crate::agents::{self, Event};
use crate::bounce::Failure;
use crate::manager::{Manager, Op, Outcome};
use queue::deliver::{RcptRequest, Request, Response, Status};
use queue::log::{self, Delays, DeliveryLine};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// A destination: transport plus next hop, and the account deliveries
/// there log in as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// master.cf service.
    pub transport: String,
    /// Next hop.
    pub nexthop: String,
    /// SASL user, lower case (`None`: no authentication).
    pub account: Option<String>,
}

impl DestKey {
    /// The account state's key: the SASL user, or the destination itself.
    pub fn account_key(&self) -> String {
        match &self.account {
            Some(a) => a.clone(),
            None => format!("dest:{}:{}", self.transport, self.nexthop),
        }
    }
}

/// One unit of work for a delivery agent.
#[derive(Debug, Clone)]
pub struct Job {
    /// Message.
    pub msg: String,
    /// Recipient indices.
    pub rcpts: Vec<usize>,
    /// Who queued the message (client address or sender), for fairness.
    pub source: String,
}

/// Waiting jobs in turns by source: each source's jobs in order, sources
/// round robin.
#[derive(Debug, Default)]
pub struct FairQueue {
    sources: VecDeque<(String, VecDeque<Job>)>,
    len: usize,
}

impl FairQueue {
    /// Adds a job at the end of its source's line.
    pub fn push_back(&mut self, job: Job) {
        self.len += 1;
        if let Some((_, q)) = self.sources.iter_mut().find(|(s, _)| *s == job.source) {
            q.push_back(job);
        } else {
            self.sources
                .push_back((job.source.clone(), VecDeque::from([job])));
        }
    }

    /// Puts a job back at the head (a start that did not happen).
    pub fn push_front(&mut self, job: Job) {
        self.len += 1;
        if let Some(i) = self.sources.iter().position(|(s, _)| *s == job.source) {
            if let Some((src, mut q)) = self.sources.remove(i) {
                q.push_front(job);
                self.sources.push_front((src, q));
            }
        } else {
            self.sources
                .push_front((job.source.clone(), VecDeque::from([job])));
        }
    }

    /// The next job, without taking it.
    pub fn front(&self) -> Option<&Job> {
        self.sources.front().and_then(|(_, q)| q.front())
    }

    /// Takes the next job; its source goes to the end of the turns.
    pub fn pop_front(&mut self) -> Option<Job> {
        let (src, mut q) = self.sources.pop_front()?;
        let job = q.pop_front();
        if !q.is_empty() {
            self.sources.push_back((src, q));
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }

    /// Takes every job.
    pub fn drain_all(&mut self) -> Vec<Job> {
        self.len = 0;
        self.sources.drain(..).flat_map(|(_, q)| q).collect()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A destination's queue and limits.
#[derive(Debug)]
pub struct Destination {
    /// Waiting jobs.
    pub jobs: FairQueue,
    /// Jobs being delivered.
    pub in_flight: usize,
    /// Current concurrency window (slow start up to `limit`).
    pub window: usize,
    /// Concurrency limit.
    pub limit: usize,
    /// Pause between deliveries.
    pub rate_delay: Duration,
    /// Earliest start of the next delivery (rate delay).
    pub next_start: Instant,
    /// Suspended until, with the reason.
    pub dead: Option<(Instant, String)>,
    /// Site failures in a row.
    pub failures: usize,
}

impl Destination {
    /// Lifts a suspension (flush).
    pub fn revive(&mut self) {
        self.dead = None;
        self.failures = 0;
    }
}

fn micros(t: SystemTime) -> i64 {
    queue::time::micros(t)
}

impl Manager {
    fn new_destination(&self, key: &DestKey) -> Destination {
        let limit = self
            .cfg
            .transport_param(&key.transport, "destination_concurrency_limit")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(20)
            .max(1);
        let rate_delay = self
            .cfg
            .transport_param(&key.transport, "destination_rate_delay")
            .and_then(|v| conf::values::parse_time(&v, 's').ok())
            .unwrap_or_default();
        let initial = (self.cfg.initial_destination_concurrency as usize).clamp(1, limit);
        Destination {
            jobs: FairQueue::default(),
            in_flight: 0,
            window: if rate_delay.is_zero() { initial } else { 1 },
            limit: if rate_delay.is_zero() { limit } else { 1 },
            rate_delay,
            next_start: Instant::now(),
            dead: None,
            failures: 0,
        }
    }

    /// Adds a job to its destination.
    pub fn enqueue_job(&mut self, key: DestKey, msg: String, rcpts: Vec<usize>, source: String) {
        if !self.dests.contains_key(&key) {
            let d = self.new_destination(&key);
            self.dests.insert(key.clone(), d);
        }
        if let Some(d) = self.dests.get_mut(&key) {
            d.jobs.push_back(Job { msg, rcpts, source });
        }
    }

    /// The account state for `key`, created (with its ledger) on first use.
    fn account_mut(&mut self, key: &DestKey) -> &mut Account {
        let name = key.account_key();
        if !self.accounts.contains_key(&name) {
            let limits = match &key.account {
                Some(_) => self.transports.get(&key.transport).limits(),
                None => {
                    let t = self.transports.get(&key.transport);
                    Limits::unlimited(
                        t.cfg.smtp_account_hold_retry_time,
                        t.cfg.smtp_account_throttle_delay,
                    )
                }
            };
            let rows = self.ledger_rows.remove(&name).unwrap_or_default();
            self.accounts
                .insert(name.clone(), Account::new(&name, limits, &rows));
        }
        self.accounts.get_mut(&name).expect("inserted just above")
    }

    /// Starts as many deliveries as the limits allow.
    pub fn dispatch(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        self.account_timer = None;
        let mut keys: Vec<DestKey> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.jobs.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        // Round robin: one job per destination per pass.
        loop {
            let mut progressed = false;
            for key in &keys {
                let Some(d) = self.dests.get_mut(key) else {
                    continue;
                };
                if d.jobs.is_empty() {
                    continue;
                }
                let suspended = match &d.dead {
                    Some((until, reason)) if *until > now => Some(reason.clone()),
                    _ => {
                        d.dead = None;
                        None
                    }
                };
                if suspended.is_none()
                    && (d.in_flight >= d.window.min(d.limit) || d.next_start > now)
                {
                    continue;
                }
                let rcpts = d.jobs.front().map(|j| j.rcpts.len() as u64).unwrap_or(0);
                let gate = self.account_mut(key).gate(wall, rcpts);
                if let Some(reason) = suspended
                    && !matches!(gate, Gate::Held { .. })
                {
                    // Suspended: defer waiting jobs without trying. (A hold
                    // of the account says more, with its explanation.)
                    let reason = format!("delivery temporarily suspended: {reason}");
                    let jobs: Vec<Job> = self
                        .dests
                        .get_mut(key)
                        .map(|d| d.jobs.drain_all())
                        .unwrap_or_default();
                    for job in jobs {
                        self.defer_job(&job, &reason);
                    }
                    continue;
                }
                match gate {
                    Gate::Go => {}
                    Gate::Wait(until) => {
                        if let Some(t) = until {
                            self.account_timer = Some(self.account_timer.map_or(t, |x| x.min(t)));
                        }
                        continue;
                    }
                    Gate::Held { until, reason } => {
                        let shown = format!(
                            "delivery held until {}: {reason}",
                            queue::time::syslog_stamp(until)
                        );
                        let jobs = self
                            .dests
                            .get_mut(key)
                            .map(|d| d.jobs.drain_all())
                            .unwrap_or_default();
                        for job in jobs {
                            if let Some(m) = self.msgs.get_mut(&job.msg) {
                                m.not_before = Some(m.not_before.map_or(until, |x| x.max(until)));
                            }
                            self.defer_job(&job, &shown);
                        }
                        continue;
                    }
                }
                let Some(d) = self.dests.get_mut(key) else {
                    continue;
                };
                let maxproc = self
                    .maxproc
                    .get(&key.transport)
                    .copied()
                    .unwrap_or(self.cfg.default_process_limit as usize);
                if self
                    .transport_inflight
                    .get(&key.transport)
                    .copied()
                    .unwrap_or(0)
                    >= maxproc
                {
                    continue;
                }
                if !self.agents.contains_key(&key.transport) {
                    self.ensure_agent(&key.transport);
                    continue;
                }
                let Some(job) = d.jobs.pop_front() else {
                    continue;
                };
                let more_waiting = !d.jobs.is_empty();
                d.in_flight += 1;
                if !d.rate_delay.is_zero() {
                    d.next_start = now + d.rate_delay;
                }
                self.send_job(key.clone(), job, more_waiting);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    /// Earliest time a rate-limited or suspended destination, or an account
    /// waiting for its window, can move again.
    pub fn next_dest_timer(&self) -> Option<Instant> {
        let dests = self
            .dests
            .values()
            .filter(|d| !d.jobs.is_empty())
            .filter_map(|d| match &d.dead {
                Some((until, _)) => Some(*until),
                None if d.next_start > Instant::now() => Some(d.next_start),
                None => None,
            })
            .min();
        let account = self
            .account_timer
            .map(|t| Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default());
        match (dests, account) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn send_job(&mut self, key: DestKey, job: Job, more_waiting: bool) {
        let Some(msg) = self.msgs.get(&job.msg) else {
            if let Some(d) = self.dests.get_mut(&key) {
                d.in_flight = d.in_flight.saturating_sub(1);
            }
            return;
        };
        self.next_req += 1;
        let req = self.next_req;
        let request = Request {
            req,
            queue_id: msg.id.clone(),
            path: self
                .queue
                .path(queue::layout::QueueName::Active, &msg.id)
                .to_string_lossy()
                .into_owned(),
            transport: key.transport.clone(),
            nexthop: key.nexthop.clone(),
            sender: msg.env.sender.clone(),
            recipients: job
                .rcpts
                .iter()
                .map(|&i| {
                    let r = &msg.env.recipients[i];
                    RcptRequest {
                        idx: i,
                        addr: r.addr.clone(),
                        orcpt: r.orcpt.clone(),
                        notify: r.notify.clone(),
                    }
                })
                .collect(),
            arrival_us: micros(msg.env.arrival),
            active_us: micros(msg.activated),
            more_waiting,
        };
        let sent = self
            .agents
            .get(&key.transport)
            .map(|a| a.send(request))
            .unwrap_or(false);
        if !sent {
            self.agents.remove(&key.transport);
            if let Some(d) = self.dests.get_mut(&key) {
                d.in_flight = d.in_flight.saturating_sub(1);
                d.jobs.push_front(job);
            }
            return;
        }
        *self
            .transport_inflight
            .entry(key.transport.clone())
            .or_default() += 1;
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let account = key.account_key();
        let row = self
            .account_mut(&key)
            .start(ticket, SystemTime::now(), job.rcpts.len() as u64);
        if key.account.is_some() {
            self.ops.push(Op::LedgerPut { account, row });
        }
        self.inflight.insert(
            (key.transport.clone(), req),
            (job.msg, key, job.rcpts, ticket),
        );
    }

    /// Connects to a transport's agent in the background.
    fn ensure_agent(&mut self, transport: &str) {
        if let Some(t) = self.connecting.get(transport)
            && t.elapsed() < Duration::from_secs(5)
        {
            return;
        }
        let Some(path) = agents::socket_path(&self.queue, transport) else {
            // No such service: a configuration error. Defer its mail.
            let reason = format!(
                "mail transport unavailable: no service \"{transport}\" in master.cf (or postern is not running it)"
            );
            log::warning(&format!(
                "connect to transport {transport}: no socket in private/ or public/; check master.cf"
            ));
            let keys: Vec<DestKey> = self
                .dests
                .keys()
                .filter(|k| k.transport == transport)
                .cloned()
                .collect();
            for k in keys {
                let jobs: Vec<Job> = self
                    .dests
                    .get_mut(&k)
                    .map(|d| d.jobs.drain_all())
                    .unwrap_or_default();
                for job in jobs {
                    self.defer_job(&job, &reason);
                }
            }
            return;
        };
        self.connecting
            .insert(transport.to_string(), Instant::now());
        self.next_conn += 1;
        let conn = self.next_conn;
        let events = self.events.clone();
        let t = transport.to_string();
        tokio::spawn(async move {
            match agents::connect(path, t.clone(), conn, events.clone()).await {
                Ok(agent) => {
                    let _ = events.send(Event::Connected {
                        transport: t,
                        agent,
                    });
                }
                Err(e) => {
                    let _ = events.send(Event::ConnectFailed {
                        transport: t,
                        error: e.to_string(),
                    });
                }
            }
        });
    }

    /// An agent connection is ready.
    pub fn on_connected(&mut self, transport: String, agent: crate::agents::AgentConn) {
        self.connecting.remove(&transport);
        self.agents.insert(transport, agent);
    }

    /// Connecting failed: the transport's waiting mail is deferred.
    pub fn on_connect_failed(&mut self, transport: &str, error: &str) {
        let reason = format!(
            "mail transport unavailable: cannot connect to delivery agent {transport}: {error}"
        );
        log::warning(&reason);
        let keys: Vec<DestKey> = self
            .dests
            .keys()
            .filter(|k| k.transport == transport)
            .cloned()
            .collect();
        for k in keys {
            let jobs: Vec<Job> = self
                .dests
                .get_mut(&k)
                .map(|d| d.jobs.drain_all())
                .unwrap_or_default();
            for job in jobs {
                self.defer_job(&job, &reason);
            }
        }
    }

    /// Handles an agent's answer.
    pub fn on_response(&mut self, transport: &str, resp: Response) {
        let Some((msg_id, key, rcpts, ticket)) =
            self.inflight.remove(&(transport.to_string(), resp.req))
        else {
            return;
        };
        self.account_outcome(&key, ticket, &resp);
        if let Some(n) = self.transport_inflight.get_mut(transport) {
            *n = n.saturating_sub(1);
        }
        let mut any_sent = false;
        for r in &resp.results {
            if !rcpts.contains(&r.idx) {
                continue;
            }
            self.track_reported(&msg_id, r);
            let outcome = match r.status {
                Status::Sent => {
                    any_sent = true;
                    Outcome::Sent
                }
                Status::Deferred | Status::Bounced => {
                    let rcpt = self
                        .msgs
                        .get(&msg_id)
                        .and_then(|m| m.env.recipients.get(r.idx))
                        .map(|x| x.addr.clone())
                        .unwrap_or_default();
                    let mut f = Failure {
                        rcpt,
                        orcpt: None,
                        dsn: r.dsn.clone(),
                        reason: r.reason.clone(),
                        remote_mta: r.remote_mta.clone(),
                        diagnostic: r.diagnostic.clone(),
                    };
                    if r.status == Status::Deferred || self.cfg.soft_bounce {
                        if f.dsn.starts_with('5') {
                            f.dsn = format!("4{}", &f.dsn[1..]);
                        }
                        Outcome::Deferred(f)
                    } else {
                        Outcome::Bounced(f)
                    }
                }
            };
            self.record(&msg_id, r.idx, outcome);
        }
        // Recipients the agent did not mention: unknown, so deferred.
        for idx in &rcpts {
            if !resp.results.iter().any(|r| r.idx == *idx) {
                self.record(
                    &msg_id,
                    *idx,
                    Outcome::Deferred(Failure::local(
                        "",
                        "4.3.0",
                        "delivery agent did not report a status",
                    )),
                );
            }
        }
        if let Some(d) = self.dests.get_mut(&key) {
            d.in_flight = d.in_flight.saturating_sub(1);
            if resp.site_failure {
                d.failures += 1;
                let cohort = self.cfg.default_destination_concurrency_failed_cohort_limit as usize;
                if d.failures >= cohort.max(1) && !any_sent {
                    let reason = resp
                        .results
                        .first()
                        .map(|r| r.reason.clone())
                        .unwrap_or_default();
                    d.dead = Some((Instant::now() + self.cfg.minimal_backoff_time, reason));
                    d.window = 1;
                }
            } else {
                d.failures = 0;
                if any_sent && d.window < d.limit {
                    d.window += 1;
                }
            }
        }
        self.job_done(&msg_id);
    }

    /// An agent connection broke: its requests have unknown outcomes.
    pub fn on_agent_down(&mut self, transport: &str, conn: u64, error: &str) {
        self.connecting.remove(transport);
        let current = self.agents.get(transport).map(|a| a.conn);
        if current == Some(conn) {
            self.agents.remove(transport);
        } else if current.is_some() {
            return;
        }
        if !error.starts_with("connect:") {
            log::warning(&format!(
                "delivery agent {transport} connection lost: {error}; its deliveries in progress are deferred"
            ));
        }
        let lost: Vec<(u64, crate::manager::InFlight)> = self
            .inflight
            .iter()
            .filter(|((t, _), _)| t == transport)
            .map(|((_, r), v)| (*r, v.clone()))
            .collect();
        for (req, (msg_id, key, rcpts, ticket)) in lost {
            self.inflight.remove(&(transport.to_string(), req));
            // Unknown outcome: the reservation stays counted as submitted.
            let reserved = rcpts.len() as u64;
            let account = key.account_key();
            let a = self.account_mut(&key);
            a.probe_inconclusive();
            if let Some(row) = a.finish(ticket, SystemTime::now(), reserved)
                && key.account.is_some()
            {
                self.ops.push(Op::LedgerPut { account, row });
            }
            if let Some(n) = self.transport_inflight.get_mut(transport) {
                *n = n.saturating_sub(1);
            }
            if let Some(d) = self.dests.get_mut(&key) {
                d.in_flight = d.in_flight.saturating_sub(1);
            }
            for idx in rcpts {
                self.record(
                    &msg_id,
                    idx,
                    Outcome::Deferred(Failure::local(
                        "",
                        "4.3.0",
                        &format!("delivery temporarily suspended: delivery agent {transport} terminated ({error})"),
                    )),
                );
            }
            self.job_done(&msg_id);
        }
    }

    /// Books a finished delivery on its account: the ledger entry, and what
    /// the server's replies mean for the account (throttle, hold, resume).
    fn account_outcome(&mut self, key: &DestKey, ticket: i64, resp: &Response) {
        let now = SystemTime::now();
        let accepted = resp
            .results
            .iter()
            .filter(|r| r.status == Status::Sent)
            .count() as u64;
        let account = key.account_key();
        // The strongest treatment among the deferrals (a bounce is about
        // its message; the agent already decided so). The agent's own
        // verdict counts too: it holds for failures without a server reply
        // (a token endpoint that refuses the credentials, a broken table).
        let mut worst: Option<(queue::explain::Treatment, String)> = None;
        for r in resp.results.iter().filter(|r| r.status == Status::Deferred) {
            let said = r.diagnostic.as_deref().unwrap_or(&r.reason);
            let t = match queue::explain::treatment(said) {
                queue::explain::Treatment::Normal if resp.hold_route => {
                    queue::explain::Treatment::HoldRoute
                }
                t => t,
            };
            let rank = |t: queue::explain::Treatment| match t {
                queue::explain::Treatment::HoldRoute => 3,
                queue::explain::Treatment::HoldAccount => 2,
                queue::explain::Treatment::SlowDown => 1,
                queue::explain::Treatment::Normal => 0,
            };
            if rank(t) > worst.as_ref().map_or(0, |(w, _)| rank(*w)) {
                worst = Some((t, r.reason.clone()));
            }
        }
        let a = self.account_mut(key);
        let row = a.finish(ticket, now, accepted);
        let mut lines = Vec::new();
        match worst {
            Some((t, reason)) if t.holds() => {
                let help = queue::explain::explain(&reason)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                if let Some(line) = a.hold(now, &format!("{reason}{help}")) {
                    lines.push((true, line));
                }
            }
            Some((queue::explain::Treatment::SlowDown, reason)) => {
                lines.push((true, a.throttled(now, &reason)));
            }
            _ if accepted > 0 => {
                if let Some(line) = a.succeeded() {
                    lines.push((false, line));
                }
            }
            _ => a.probe_inconclusive(),
        }
        if let Some(row) = row
            && key.account.is_some()
        {
            self.ops.push(Op::LedgerPut { account, row });
        }
        for (warn, line) in lines {
            if warn {
                log::warning(&line);
            } else {
                log::info(&line);
            }
        }
    }

    fn job_done(&mut self, msg_id: &str) {
        let finished = match self.msgs.get_mut(msg_id) {
            Some(m) => {
                m.outstanding = m.outstanding.saturating_sub(1);
                m.outstanding == 0
            }
            None => false,
        };
        if finished {
            self.finish(msg_id);
        }
    }

    /// Defers a waiting job without delivery (suspended destination).
    fn defer_job(&mut self, job: &Job, reason: &str) {
        let Some(msg) = self.msgs.get(&job.msg) else {
            return;
        };
        for &idx in &job.rcpts {
            let r = &msg.env.recipients[idx];
            let line = log::delivery(
                &DeliveryLine {
                    id: &msg.id,
                    to: &r.addr,
                    orig_to: r.orcpt.as_deref().and_then(|o| o.strip_prefix("rfc822;")),
                    relay: "none",
                    conn_use: 0,
                    delays: Delays {
                        arrival: msg.env.arrival,
                        active: Some(msg.activated),
                        handoff: None,
                        conn_done: None,
                        done: SystemTime::now(),
                    },
                    dsn: &deferral_dsn(reason),
                    status: "deferred",
                    reason,
                },
                self.cfg.delay_logging_resolution_limit as u32,
            );
            log::info(&line);
        }
        let id = job.msg.clone();
        for &idx in &job.rcpts {
            let dsn = deferral_dsn(reason);
            self.record(
                &id,
                idx,
                Outcome::Deferred(Failure::local("", &dsn, reason)),
            );
        }
        self.job_done(&id);
    }
}

/// The status code of a deferral without delivery: the code in the reason
/// (a held route's reply, e.g. `5.7.139` shown as `4.7.139`: it waits), or
/// `4.4.1` when the reason has none.
fn deferral_dsn(reason: &str) -> String {
    match crate::manager::dsn_from_reason(reason) {
        Some(d) if d.starts_with('4') => d,
        Some(d) if d.starts_with('5') => format!("4{}", &d[1..]),
        _ => "4.4.1".into(),
    }
}

#[cfg(test)]
mod deferral_tests {
    use super::deferral_dsn;

    #[test]
    fn held_replies_keep_their_code_as_a_deferral() {
        assert_eq!(
            deferral_dsn(
                "delivery held until Nov 22 09:30:12: host x[127.0.0.1] said: 535 5.7.139 Authentication unsuccessful"
            ),
            "4.7.139"
        );
        assert_eq!(
            deferral_dsn("delivery temporarily suspended: lost connection"),
            "4.4.1"
        );
        assert_eq!(deferral_dsn("conversation timed out 4.4.2"), "4.4.2");
    }
}

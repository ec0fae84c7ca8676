//! Per-account traffic shaping: the limits Exchange Online puts on one
//! mailbox (the SASL user a delivery logs in as), kept on postern's side so
//! the mailbox is never throttled or blocked (OFFICE365.md §3, §8):
//!
//! - at most `smtp_account_rate_limit` messages in any sliding window: a
//!   delivery occupies its slot from its start until one window after it
//!   finished, so the server, which counts at the end of DATA, never sees
//!   more than the limit in any window of its own;
//! - at most `smtp_account_recipient_limit` recipients in a rolling window,
//!   counted in the index ledger so a restart or reload does not reset it;
//!   mail that must wait long for the window (a minute, or a quarter of a
//!   shorter window) is deferred as held, with the reason in the log and
//!   the queue listing;
//! - at most `smtp_account_concurrency_limit` deliveries at once, lowered by
//!   one (and paused) after a throttling reply, raised again slowly;
//! - holds: a reply that means "configuration error" or "quota" stops the
//!   account's deliveries until `smtp_account_hold_retry_time` has passed,
//!   then one probe delivery decides whether the hold is over.
//!
//! Destinations without an account get an unlimited pseudo-account, so
//! holds work for them too.

use conf::{Config, RateLimit};
use queue::index::LedgerRow;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// Waits longer than this are not spent in the active queue: the waiting
/// mail is deferred until the time comes.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// A recipient-budget wait longer than this is a hold: the waiting mail is
/// deferred with the reason, so `mailq` and the log say why it waits.
/// [`LONG_WAIT`], or a quarter of the window when that is shorter (a short
/// window has its holds scaled down with it).
fn budget_hold_after(per: Duration) -> Duration {
    LONG_WAIT.min(per / 4)
}

/// How long ledger entries are kept (longer than any sensible window).
pub const LEDGER_KEEP: Duration = Duration::from_secs(8 * 86400);

/// Successful deliveries after which a lowered concurrency goes up by one.
const RECOVERY_SUCCESSES: usize = 20;

/// The limits of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages per window.
    pub rate: RateLimit,
    /// Simultaneous deliveries (0: none).
    pub concurrency: usize,
    /// Recipients per rolling window.
    pub recipients: RateLimit,
    /// Recipients per submitted message (0: no split).
    pub per_message: usize,
    /// Pause after a throttling reply.
    pub throttle_delay: Duration,
    /// How long a hold lasts before a probe.
    pub hold_retry: Duration,
}

impl Limits {
    /// The `smtp_account_*` parameters of a transport's configuration.
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            rate: cfg.smtp_account_rate_limit,
            concurrency: usize::try_from(cfg.smtp_account_concurrency_limit).unwrap_or(0),
            recipients: cfg.smtp_account_recipient_limit,
            per_message: usize::try_from(cfg.smtp_account_message_recipient_limit).unwrap_or(0),
            throttle_delay: cfg.smtp_account_throttle_delay,
            hold_retry: cfg.smtp_account_hold_retry_time.max(Duration::from_secs(1)),
        }
    }

    /// No shaping (destinations without an account); holds still apply.
    pub fn unlimited(hold_retry: Duration, throttle_delay: Duration) -> Limits {
        let none = RateLimit {
            count: 0,
            per: Duration::from_secs(1),
        };
        Limits {
            rate: none,
            concurrency: 0,
            recipients: none,
            per_message: 0,
            throttle_delay,
            hold_retry: hold_retry.max(Duration::from_secs(1)),
        }
    }

    fn longest_window(&self) -> Duration {
        let r = if self.rate.unlimited() {
            Duration::ZERO
        } else {
            self.rate.per
        };
        let b = if self.recipients.unlimited() {
            Duration::ZERO
        } else {
            self.recipients.per
        };
        r.max(b)
    }
}

/// Why an account's deliveries stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Until when (then one probe goes).
    pub until: SystemTime,
    /// The server's reply with its explanation, for the queue listing.
    pub reason: String,
    /// A probe delivery is under way.
    pub probing: bool,
}

/// The decision for the next delivery of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start it.
    Go,
    /// Wait in the active queue: until the time, or (None) until one of
    /// the account's deliveries finishes.
    Wait(Option<SystemTime>),
    /// Defer the waiting mail until `until`.
    Held {
        /// When to try again.
        until: SystemTime,
        /// Why, for the log and the queue listing.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ticket: i64,
    ts: SystemTime,
    rcpts: u64,
    in_flight: bool,
}

/// One account's state.
#[derive(Debug)]
pub struct Account {
    /// How the log names it: `account USER`, or `route TRANSPORT:NEXTHOP`
    /// for the pseudo-account `dest:TRANSPORT:NEXTHOP` of a route without
    /// SASL user.
    label: String,
    /// Its limits.
    pub limits: Limits,
    entries: VecDeque<Entry>,
    /// Deliveries in progress.
    pub in_flight: usize,
    conc: usize,
    paused_until: Option<SystemTime>,
    ok_since_throttle: usize,
    /// The current hold.
    pub hold: Option<Hold>,
    /// A SASL user (not a route's pseudo-account): until one delivery
    /// succeeded, one at a time, so a wrong password or a disabled
    /// mailbox costs one failed sign-in, not one per connection (Entra ID
    /// counts them towards the account lockout).
    signs_in: bool,
    /// A delivery succeeded since qmgr started or the last hold.
    proven: bool,
}

fn micros(t: SystemTime) -> i64 {
    queue::time::micros(t)
}

impl Account {
    /// An account with the ledger rows the index kept (entries that were in
    /// flight when qmgr stopped count as finished at their start).
    pub fn new(name: &str, limits: Limits, rows: &[LedgerRow]) -> Account {
        let mut entries: Vec<Entry> = rows
            .iter()
            .map(|r| Entry {
                ticket: r.ticket,
                ts: queue::time::from_micros(r.ts),
                rcpts: u64::try_from(r.rcpts).unwrap_or(0),
                in_flight: false,
            })
            .collect();
        entries.sort_by_key(|e| e.ts);
        Account {
            label: match name.strip_prefix("dest:") {
                Some(route) => format!("route {route}"),
                None => format!("account {name}"),
            },
            limits,
            entries: entries.into(),
            in_flight: 0,
            conc: limits.concurrency,
            paused_until: None,
            ok_since_throttle: 0,
            signs_in: !name.starts_with("dest:"),
            proven: false,
            hold: None,
        }
    }

    /// The concurrency in force now (lowered after throttling).
    #[cfg(test)]
    pub fn concurrency(&self) -> usize {
        self.conc
    }

    fn prune(&mut self, now: SystemTime) {
        let keep = self.limits.longest_window();
        self.entries
            .retain(|e| e.in_flight || now.duration_since(e.ts).unwrap_or_default() < keep);
    }

    /// Entries counting against a window of `per` at `now`, oldest first.
    fn in_window(&self, now: SystemTime, per: Duration) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.in_flight || now.duration_since(e.ts).unwrap_or_default() < per)
    }

    /// Decides whether a delivery of `rcpts` recipients may start now.
    pub fn gate(&mut self, now: SystemTime, rcpts: u64) -> Gate {
        self.prune(now);
        if let Some(h) = &self.hold {
            if now < h.until {
                return Gate::Held {
                    until: h.until,
                    reason: h.reason.clone(),
                };
            }
            if h.probing {
                return Gate::Wait(None);
            }
        }
        if let Some(p) = self.paused_until {
            if now < p {
                return Gate::Wait(Some(p));
            }
            self.paused_until = None;
        }
        if self.conc > 0 && self.in_flight >= self.conc {
            return Gate::Wait(None);
        }
        if self.signs_in && !self.proven && self.in_flight > 0 {
            return Gate::Wait(None);
        }
        let rate = self.limits.rate;
        if !rate.unlimited() {
            let used: Vec<&Entry> = self.in_window(now, rate.per).collect();
            if used.len() as u64 >= rate.count {
                // The first finished entry to leave the window frees a slot.
                return Gate::Wait(
                    used.iter()
                        .filter(|e| !e.in_flight)
                        .map(|e| e.ts + rate.per)
                        .min(),
                );
            }
        }
        let budget = self.limits.recipients;
        if !budget.unlimited() {
            let used: u64 = self.in_window(now, budget.per).map(|e| e.rcpts).sum();
            // A message larger than the whole budget goes when nothing else counts.
            let need = rcpts.min(budget.count);
            if used + need > budget.count {
                let mut free = used;
                let mut until = None;
                for e in self.in_window(now, budget.per).filter(|e| !e.in_flight) {
                    free -= e.rcpts;
                    if free + need <= budget.count {
                        until = Some(e.ts + budget.per);
                        break;
                    }
                }
                return match until {
                    Some(t)
                        if t.duration_since(now).unwrap_or_default()
                            > budget_hold_after(budget.per) =>
                    {
                        Gate::Held {
                            until: t,
                            reason: format!(
                                "{} reached its limit of {} recipients per {}; mail waits until the window frees",
                                self.label,
                                budget.count,
                                human(budget.per)
                            ),
                        }
                    }
                    t => Gate::Wait(t),
                };
            }
        }
        Gate::Go
    }

    /// A delivery starts: its slot and recipients count from now.
    pub fn start(&mut self, ticket: i64, now: SystemTime, rcpts: u64) -> LedgerRow {
        if let Some(h) = &mut self.hold {
            h.probing = true;
        }
        self.in_flight += 1;
        self.entries.push_back(Entry {
            ticket,
            ts: now,
            rcpts,
            in_flight: true,
        });
        LedgerRow {
            ticket,
            ts: micros(now),
            rcpts: i64::try_from(rcpts).unwrap_or(i64::MAX),
        }
    }

    /// A delivery finished with `accepted` recipients: its slot now counts
    /// from `now`, its recipients as accepted. `None` when unknown.
    pub fn finish(&mut self, ticket: i64, now: SystemTime, accepted: u64) -> Option<LedgerRow> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.ticket == ticket && e.in_flight)?;
        e.in_flight = false;
        e.ts = now;
        e.rcpts = accepted;
        let row = LedgerRow {
            ticket,
            ts: micros(now),
            rcpts: i64::try_from(accepted).unwrap_or(i64::MAX),
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        // Keep the deque in time order (finished entries move to the end).
        let mut v: Vec<Entry> = self.entries.drain(..).collect();
        v.sort_by_key(|e| e.ts);
        self.entries = v.into();
        Some(row)
    }

    /// The server throttled the account (`432 4.3.2`): pause, and one
    /// connection fewer. Returns the log line.
    pub fn throttled(&mut self, now: SystemTime, reply: &str) -> String {
        let jitter = jitter(self.limits.throttle_delay / 4);
        let pause = self.limits.throttle_delay + jitter;
        self.paused_until = Some(now + pause);
        if self.conc > 1 {
            self.conc -= 1;
        } else if self.conc == 0 {
            self.conc = self.in_flight.saturating_sub(1).max(1);
        }
        self.ok_since_throttle = 0;
        format!(
            "{}: the server throttles it ({reply}); pausing {}s and allowing {} connection(s) at a time",
            self.label,
            pause.as_secs(),
            self.conc
        )
    }

    /// A delivery was accepted: a probe lifts the hold; lowered concurrency
    /// recovers slowly. Returns a log line when a hold ended.
    pub fn succeeded(&mut self) -> Option<String> {
        self.proven = true;
        self.ok_since_throttle += 1;
        if self.conc < self.limits.concurrency && self.ok_since_throttle >= RECOVERY_SUCCESSES {
            self.conc += 1;
            self.ok_since_throttle = 0;
        }
        self.hold
            .take()
            .map(|_| format!("{}: delivery resumed", self.label))
    }

    /// Holds the account until `until`. Returns the log line when the hold
    /// is new (not a failed probe of the same hold).
    pub fn hold(&mut self, now: SystemTime, reason: &str) -> Option<String> {
        let until = now + self.limits.hold_retry;
        let new = self.hold.is_none();
        self.proven = false;
        self.hold = Some(Hold {
            until,
            reason: reason.to_string(),
            probing: false,
        });
        new.then(|| {
            format!(
                "{}: deliveries held, next try in {}: {reason}",
                self.label,
                human(self.limits.hold_retry)
            )
        })
    }

    /// A probe ended without a verdict on the hold (e.g. the server was
    /// unreachable): the hold is over; ordinary retries take it from here.
    pub fn probe_inconclusive(&mut self) {
        if self.hold.as_ref().is_some_and(|h| h.probing) {
            self.hold = None;
        }
    }

    /// `postqueue -f`: forget holds and pauses (the admin fixed something).
    /// Returns the log line when a hold ended.
    pub fn release(&mut self) -> Option<String> {
        self.paused_until = None;
        self.hold.take().map(|_| {
            format!(
                "{}: hold released by a queue flush; trying again",
                self.label
            )
        })
    }

    /// Recipients counted in the rolling budget now.
    #[cfg(test)]
    pub fn budget_used(&self, now: SystemTime) -> u64 {
        self.in_window(now, self.limits.recipients.per)
            .map(|e| e.rcpts)
            .sum()
    }
}

/// What an account has used of its limits at one moment (`postern status`,
/// the metrics); read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Deliveries counting in the rate window (in flight ones included).
    pub rate_used: u64,
    /// Recipients counting in the rolling budget window.
    pub recipients_used: u64,
    /// Deliveries in progress.
    pub in_flight: usize,
    /// Simultaneous deliveries allowed now (lowered after throttling; 0:
    /// no limit).
    pub concurrency: usize,
    /// Paused after a throttling reply until then.
    pub paused_until: Option<SystemTime>,
    /// The hold in force, if any.
    pub hold: Option<Hold>,
}

impl Account {
    /// The account's use of its limits at `now` (nothing is changed).
    pub fn usage(&self, now: SystemTime) -> Usage {
        let rate_used = if self.limits.rate.unlimited() {
            self.in_window(now, Duration::ZERO).count() as u64
        } else {
            self.in_window(now, self.limits.rate.per).count() as u64
        };
        let recipients_used = if self.limits.recipients.unlimited() {
            0
        } else {
            self.in_window(now, self.limits.recipients.per)
                .map(|e| e.rcpts)
                .sum()
        };
        Usage {
            rate_used,
            recipients_used,
            in_flight: self.in_flight,
            concurrency: self.conc,
            paused_until: self.paused_until.filter(|p| *p > now),
            hold: self.hold.clone().filter(|h| h.until > now || h.probing),
        }
    }
}

/// Up to `max` of pseudo-random delay (from the clock; spreads retries).
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::from(nanos) % max.as_nanos().max(1) as u64)
}

/// `90s`, `10m`, `24h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// As after a first successful delivery (no slow start).
    fn proven(mut a: Account) -> Account {
        a.proven = true;
        a
    }

    fn limits(rate: (u64, u64), conc: usize, budget: (u64, u64)) -> Limits {
        Limits {
            rate: RateLimit {
                count: rate.0,
                per: Duration::from_secs(rate.1),
            },
            concurrency: conc,
            recipients: RateLimit {
                count: budget.0,
                per: Duration::from_secs(budget.1),
            },
            per_message: 500,
            throttle_delay: Duration::from_secs(60),
            hold_retry: Duration::from_secs(600),
        }
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn rate_counts_from_the_end_of_each_delivery() {
        let mut a = proven(Account::new("a", limits((2, 10), 0, (0, 1)), &[]));
        assert_eq!(a.gate(t(0), 1), Gate::Go);
        a.start(1, t(0), 1);
        assert_eq!(a.gate(t(0), 1), Gate::Go);
        a.start(2, t(0), 1);
        // Both in flight: wait for one to finish.
        assert_eq!(a.gate(t(1), 1), Gate::Wait(None));
        a.finish(1, t(2), 1);
        // Its slot frees a window after it finished, not after it started.
        assert_eq!(a.gate(t(5), 1), Gate::Wait(Some(t(12))));
        assert_eq!(a.gate(t(12), 1), Gate::Go);
    }

    #[test]
    fn concurrency_throttling_and_recovery() {
        let mut a = proven(Account::new("a", limits((0, 1), 3, (0, 1)), &[]));
        for i in 0..3 {
            assert_eq!(a.gate(t(0), 1), Gate::Go);
            a.start(i, t(0), 1);
        }
        assert_eq!(a.gate(t(0), 1), Gate::Wait(None));
        a.finish(0, t(1), 0);
        let line = a.throttled(t(1), "432 4.3.2 Concurrent connections limit exceeded");
        assert!(line.contains("allowing 2 connection"), "{line}");
        assert!(matches!(a.gate(t(2), 1), Gate::Wait(Some(_))), "paused");
        a.finish(1, t(3), 1);
        a.finish(2, t(3), 1);
        // After the pause: at most 2 at once.
        a.start(10, t(100), 1);
        a.start(11, t(100), 1);
        assert_eq!(a.gate(t(100), 1), Gate::Wait(None));
        for i in 0..RECOVERY_SUCCESSES {
            a.succeeded();
            let _ = i;
        }
        assert_eq!(a.concurrency(), 3);
    }

    #[test]
    fn recipient_budget_holds_until_the_window_frees_and_survives_a_restart() {
        let mut a = proven(Account::new("a", limits((0, 1), 0, (10, 3600)), &[]));
        let row1 = a.start(1, t(0), 6);
        let row1 = a.finish(row1.ticket, t(1), 6).unwrap();
        let row2 = a.start(2, t(10), 4);
        let row2 = a.finish(row2.ticket, t(11), 4).unwrap();
        // Full: the next recipient waits until the first entry leaves.
        match a.gate(t(20), 1) {
            Gate::Held { until, reason } => {
                assert_eq!(until, t(1) + Duration::from_secs(3600));
                assert!(reason.contains("limit of 10 recipients per 1h"), "{reason}");
            }
            g => panic!("{g:?}"),
        }
        // A restart reads the same ledger and decides the same.
        let mut b = proven(Account::new("a", a.limits, &[row1, row2]));
        assert!(matches!(b.gate(t(20), 1), Gate::Held { .. }));
        assert_eq!(b.budget_used(t(20)), 10);
        assert_eq!(b.gate(t(3602), 1), Gate::Go);
    }

    #[test]
    fn a_short_budget_window_holds_long_waits_and_keeps_short_ones_active() {
        let mut a = proven(Account::new("a", limits((0, 1), 0, (10, 20)), &[]));
        a.start(1, t(0), 10);
        a.finish(1, t(1), 10);
        // 19 s to wait is long for a 20 s window: a hold, with the reason.
        match a.gate(t(2), 1) {
            Gate::Held { until, reason } => {
                assert_eq!(until, t(21));
                assert!(
                    reason.contains("limit of 10 recipients per 20s"),
                    "{reason}"
                );
            }
            g => panic!("{g:?}"),
        }
        // 3 s is not: the mail waits in the active queue.
        assert_eq!(a.gate(t(18), 1), Gate::Wait(Some(t(21))));
        assert_eq!(a.gate(t(21), 1), Gate::Go);
    }

    #[test]
    fn holds_probe_once_then_resume_or_hold_again() {
        let mut a = Account::new("a", limits((0, 1), 0, (0, 1)), &[]);
        assert!(a.hold(t(0), "535 5.7.139 ...").is_some());
        assert!(a.hold(t(1), "535 5.7.139 ...").is_none(), "logged once");
        assert!(matches!(a.gate(t(100), 1), Gate::Held { .. }));
        // Hold time over: one probe, the rest waits.
        assert_eq!(a.gate(t(601), 1), Gate::Go);
        a.start(1, t(601), 1);
        assert_eq!(a.gate(t(601), 1), Gate::Wait(None));
        a.finish(1, t(602), 1);
        assert!(a.succeeded().unwrap().contains("resumed"));
        assert_eq!(a.gate(t(602), 1), Gate::Go);
    }

    #[test]
    fn a_mailbox_signs_in_once_before_using_more_connections() {
        let mut a = Account::new("scanner@contoso.com", limits((0, 1), 3, (0, 1)), &[]);
        assert_eq!(a.gate(t(0), 1), Gate::Go);
        a.start(1, t(0), 1);
        assert_eq!(a.gate(t(0), 1), Gate::Wait(None), "one until proven");
        a.finish(1, t(1), 1);
        a.succeeded();
        for ticket in 2..5 {
            assert_eq!(a.gate(t(1), 1), Gate::Go);
            a.start(ticket, t(1), 1);
        }
        assert_eq!(a.gate(t(1), 1), Gate::Wait(None), "then the limit of 3");
        // A route without a SASL user starts at full concurrency.
        let mut r = Account::new("dest:smtp:[mx.example.com]", limits((0, 1), 3, (0, 1)), &[]);
        r.start(1, t(0), 1);
        assert_eq!(r.gate(t(0), 1), Gate::Go);
    }

    #[test]
    fn usage_reports_the_windows_without_changing_them() {
        let mut a = proven(Account::new("a", limits((30, 60), 3, (100, 3600)), &[]));
        a.start(1, t(0), 5);
        a.finish(1, t(1), 4);
        a.start(2, t(2), 3);
        let u = a.usage(t(10));
        assert_eq!((u.rate_used, u.recipients_used, u.in_flight), (2, 7, 1));
        assert_eq!(u.concurrency, 3);
        assert!(u.hold.is_none() && u.paused_until.is_none());
        // The finished delivery leaves the rate window, not the budget's.
        a.finish(2, t(3), 3);
        let u = a.usage(t(62));
        assert_eq!((u.rate_used, u.recipients_used, u.in_flight), (1, 7, 0));
        a.hold(t(70), "535 5.7.139 ...");
        assert!(a.usage(t(71)).hold.is_some());
        assert!(a.usage(t(70 + 601)).hold.is_none(), "over, until a probe");
    }

    proptest! {
        /// Whatever the timing, no window of the rate's length ever sees
        /// more finished deliveries than the limit.
        #[test]
        fn the_rate_limit_holds_in_every_window(durations in proptest::collection::vec(0u64..5000, 1..60)) {
            let per = 10_000u64; // ms
            let mut a = proven(Account::new("a", limits((3, 10), 0, (0, 1)), &[]));
            let ms = |m: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + m);
            let mut clock = 0u64;
            let mut finished = Vec::new();
            let mut ticket = 0;
            for d in durations {
                // Advance until the gate opens.
                loop {
                    match a.gate(ms(clock), 1) {
                        Gate::Go => break,
                        Gate::Wait(Some(until)) => {
                            clock = until.duration_since(ms(0)).unwrap().as_millis() as u64;
                        }
                        g => prop_assert!(false, "{:?}", g),
                    }
                }
                ticket += 1;
                a.start(ticket, ms(clock), 1);
                clock += d;
                a.finish(ticket, ms(clock), 1);
                finished.push(clock);
            }
            for (i, &end) in finished.iter().enumerate() {
                let in_window = finished[..=i].iter().filter(|&&f| f + per > end).count();
                prop_assert!(in_window <= 3, "{} finished within a window ending at {}", in_window, end);
            }
        }
    }
}

//! Per-client limits (Postfix's anvil, inside the one smtpd process that
//! serves a listener): simultaneous connections, connections, messages and
//! AUTH commands per `anvil_rate_time_unit`. Memory is bounded: idle
//! clients are forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest number of clients remembered at once.
const MAX_CLIENTS: usize = 100_000;

#[derive(Default)]
struct Client {
    open: usize,
    connects: VecDeque<Instant>,
    messages: VecDeque<Instant>,
    auths: VecDeque<Instant>,
}

impl Client {
    fn idle(&self, now: Instant, unit: Duration) -> bool {
        self.open == 0
            && [&self.connects, &self.messages, &self.auths]
                .iter()
                .all(|q| q.back().is_none_or(|t| now.duration_since(*t) > unit))
    }
}

/// The limits and their counters.
pub struct Anvil {
    clients: Mutex<HashMap<IpAddr, Client>>,
    unit: Duration,
    max_open: usize,
    max_connects: usize,
    max_messages: usize,
    max_auths: usize,
}

/// Which limit a client hit, with the count it would have reached (as
/// Postfix logs it: "Connection rate limit exceeded: 31 from ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Simultaneous connections.
    Count(usize),
    /// Connections per time unit.
    Rate(usize),
}

/// Drops events older than `unit`; `Err(count)` when one more would exceed `limit`.
fn within(
    q: &mut VecDeque<Instant>,
    now: Instant,
    unit: Duration,
    limit: usize,
) -> Result<(), usize> {
    while q.front().is_some_and(|t| now.duration_since(*t) >= unit) {
        q.pop_front();
    }
    if limit == 0 || q.len() < limit {
        Ok(())
    } else {
        Err(q.len() + 1)
    }
}

impl Anvil {
    /// The limits from the configuration (0 means no limit).
    pub fn new(cfg: &conf::Config) -> Anvil {
        let n = |v: i64| usize::try_from(v).unwrap_or(0);
        Anvil {
            clients: Mutex::new(HashMap::new()),
            unit: cfg.anvil_rate_time_unit.max(Duration::from_secs(1)),
            max_open: n(cfg.smtpd_client_connection_count_limit),
            max_connects: n(cfg.smtpd_client_connection_rate_limit),
            max_messages: n(cfg.smtpd_client_message_rate_limit),
            max_auths: n(cfg.smtpd_client_auth_rate_limit),
        }
    }

    /// Registers a new connection; `Err` when it exceeds a limit (then
    /// nothing is registered).
    pub fn connect(&self, addr: IpAddr) -> Result<(), Exceeded> {
        let now = Instant::now();
        let Ok(mut map) = self.clients.lock() else {
            return Ok(());
        };
        if map.len() >= MAX_CLIENTS {
            let unit = self.unit;
            map.retain(|_, c| !c.idle(now, unit));
        }
        let c = map.entry(addr).or_default();
        if self.max_open > 0 && c.open >= self.max_open {
            return Err(Exceeded::Count(c.open + 1));
        }
        within(&mut c.connects, now, self.unit, self.max_connects).map_err(Exceeded::Rate)?;
        c.open += 1;
        c.connects.push_back(now);
        Ok(())
    }

    /// A connection ended.
    pub fn disconnect(&self, addr: IpAddr) {
        let Ok(mut map) = self.clients.lock() else {
            return;
        };
        if let Some(c) = map.get_mut(&addr) {
            c.open = c.open.saturating_sub(1);
            let unit = self.unit;
            if c.idle(Instant::now(), unit) {
                map.remove(&addr);
            }
        }
    }

    /// Counts a message (MAIL FROM); `Err(rate)` when over the message rate.
    pub fn message(&self, addr: IpAddr) -> Result<(), usize> {
        self.event(addr, |c| &mut c.messages, self.max_messages)
    }

    /// Counts an AUTH command; `Err(rate)` when over the AUTH rate.
    pub fn auth(&self, addr: IpAddr) -> Result<(), usize> {
        self.event(addr, |c| &mut c.auths, self.max_auths)
    }

    fn event(
        &self,
        addr: IpAddr,
        q: impl Fn(&mut Client) -> &mut VecDeque<Instant>,
        limit: usize,
    ) -> Result<(), usize> {
        if limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut map) = self.clients.lock() else {
            return Ok(());
        };
        let c = map.entry(addr).or_default();
        let q = q(c);
        within(q, now, self.unit, limit)?;
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anvil(extra: &str) -> Anvil {
        let main = conf::MainCf::parse(extra, std::path::Path::new("m")).unwrap();
        Anvil::new(&conf::Config::build(&main, &[]).unwrap())
    }

    #[test]
    fn limits() {
        let a = anvil(
            "smtpd_client_connection_count_limit = 2\nsmtpd_client_connection_rate_limit = 3\nsmtpd_client_message_rate_limit = 2\n",
        );
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        assert!(a.connect(ip).is_ok());
        assert!(a.connect(ip).is_ok());
        assert_eq!(a.connect(ip), Err(Exceeded::Count(3)));
        assert!(a.connect(other).is_ok());
        a.disconnect(ip);
        assert!(a.connect(ip).is_ok());
        a.disconnect(ip);
        a.disconnect(ip);
        assert_eq!(
            a.connect(ip),
            Err(Exceeded::Rate(4)),
            "4th connection within the minute"
        );
        assert!(a.message(ip).is_ok() && a.message(ip).is_ok());
        assert_eq!(a.message(ip), Err(3));
        assert!(a.message(other).is_ok());
    }
}

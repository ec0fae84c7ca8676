//! From a next hop to the list of server addresses to try (Postfix's
//! smtp_addr.c): MX lookup for a domain (falling back to the domain's own
//! address records when it has no MX), A/AAAA for a bracketed `[host]`, in
//! DNS (hickory) and/or through the system resolver (`smtp_host_lookup =
//! native`, getaddrinfo).
//!
//! Name service errors are worded as Postfix words them, e.g. `Host or
//! domain name not found. Name service error for name=example.com type=MX:
//! Host not found` (5.4.4, bounce) or `...: Host not found, try again`
//! (4.4.3, defer).
//!
//! Tests point the resolver at their own DNS server with the environment
//! variable `POSTERN_DNS_SERVER=ip:port` (see `queue::dns`); it is
//! not a main.cf parameter and production systems leave it unset.

use crate::outcome::Outcome;
use crate::settings::Settings;
use conf::nexthop::Nexthop;
use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::IpAddr;

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server's host name (MX exchange or bracketed host).
    pub host: String,
    /// Its address.
    pub addr: IpAddr,
    /// TCP port.
    pub port: u16,
    /// MX preference (0 without MX).
    pub pref: u16,
}

/// How a lookup failed, in Postfix's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Miss {
    /// The name does not exist.
    NotFound,
    /// The name exists but has no record of the type.
    NoData,
    /// A temporary failure.
    TryAgain,
}

impl Miss {
    fn of(e: &NetError) -> Miss {
        if e.is_nx_domain() {
            Miss::NotFound
        } else if e.is_no_records_found() {
            Miss::NoData
        } else {
            Miss::TryAgain
        }
    }

    fn text(&self) -> &'static str {
        match self {
            Miss::NotFound => "Host not found",
            Miss::NoData => "Host found but no data record of requested type",
            Miss::TryAgain => "Host not found, try again",
        }
    }

    fn outcome(&self, name: &str, rtype: &str) -> Outcome {
        let dsn = match self {
            Miss::TryAgain => "4.4.3",
            _ => "5.4.4",
        };
        Outcome::local(
            dsn,
            format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: {}",
                self.text()
            ),
        )
    }
}

/// A name as queried: fully qualified when it has a dot, so the resolver
/// does not append search domains to MX host names.
fn fqdn(name: &str) -> String {
    if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_string()
    }
}

/// Resolves `nexthop` to the addresses to try, best first.
///
/// # Errors
/// The outcome for every recipient when no address was found.
pub async fn targets(
    resolver: &TokioResolver,
    s: &Settings,
    nexthop: &Nexthop,
) -> Result<Vec<Target>, Outcome> {
    if let Ok(ip) = nexthop.host.parse::<IpAddr>() {
        return Ok(vec![Target {
            host: ip.to_string(),
            addr: ip,
            port: nexthop.port,
            pref: 0,
        }]);
    }
    if !nexthop.mx {
        let addrs = host_addrs(resolver, s, &nexthop.host, nexthop.port).await?;
        return Ok(to_targets(&nexthop.host, addrs, nexthop.port, 0));
    }
    if !s.lookup_dns {
        // Without DNS there are no MX records: the domain is the host.
        let addrs = host_addrs(resolver, s, &nexthop.host, nexthop.port).await?;
        return Ok(to_targets(&nexthop.host, addrs, nexthop.port, 0));
    }
    let mut mxs: Vec<(u16, String)> =
        match resolver.lookup(fqdn(&nexthop.host), RecordType::MX).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect(),
            Err(e) => match Miss::of(&e) {
                Miss::NoData => Vec::new(),
                m => return Err(m.outcome(&nexthop.host, "MX")),
            },
        };
    if mxs.is_empty() {
        let addrs = host_addrs(resolver, s, &nexthop.host, nexthop.port).await?;
        return Ok(to_targets(&nexthop.host, addrs, nexthop.port, 0));
    }
    if mxs.len() == 1 && mxs[0].1.is_empty() {
        return Err(Outcome::local(
            "5.1.0",
            format!("Domain {} does not accept mail (nullMX)", nexthop.host),
        ));
    }
    mxs.retain(|(_, h)| !h.is_empty());
    shuffle_equal_preferences(&mut mxs);
    let mut out = Vec::new();
    let mut last_err: Option<Outcome> = None;
    for (pref, host) in mxs {
        match host_addrs(resolver, s, &host, nexthop.port).await {
            Ok(addrs) => out.extend(to_targets(&host, addrs, nexthop.port, pref)),
            Err(o) => {
                // A temporary failure of one MX host dominates a hard one
                // of another (Postfix: a soft error is never overwritten).
                let soft_before = last_err.as_ref().is_some_and(|p| p.dsn.starts_with('4'));
                last_err = Some(if soft_before { o.soften() } else { o });
            }
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(Outcome::local(
            "4.4.3",
            format!(
                "no usable address found for the mail exchangers of {}",
                nexthop.host
            ),
        )),
        (false, _) => Ok(out),
    }
}

fn to_targets(host: &str, addrs: Vec<IpAddr>, port: u16, pref: u16) -> Vec<Target> {
    addrs
        .into_iter()
        .map(|addr| Target {
            host: host.to_string(),
            addr,
            port,
            pref,
        })
        .collect()
}

/// Sorts MX hosts by preference, in random order among equals (RFC 5321
/// 5.1), without a random number crate: the clock's nanoseconds and the
/// process id are plenty to spread load.
fn shuffle_equal_preferences(mxs: &mut [(u16, String)]) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) ^ d.as_secs())
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 32)
        | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let keys: Vec<u64> = (0..mxs.len()).map(|_| next()).collect();
    let mut indexed: Vec<(u16, u64, (u16, String))> = mxs
        .iter()
        .cloned()
        .zip(keys)
        .map(|(m, k)| (m.0, k, m))
        .collect();
    indexed.sort_by_key(|(p, k, _)| (*p, *k));
    for (slot, (_, _, m)) in mxs.iter_mut().zip(indexed) {
        *slot = m;
    }
}

/// The addresses of one host, by the methods of `smtp_host_lookup`, in the
/// order `smtp_address_preference` asks for.
async fn host_addrs(
    resolver: &TokioResolver,
    s: &Settings,
    host: &str,
    port: u16,
) -> Result<Vec<IpAddr>, Outcome> {
    let mut err: Option<Outcome> = None;
    if s.lookup_dns {
        match dns_addrs(resolver, s, host).await {
            Ok(a) => return Ok(order(s, a)),
            Err(Miss::TryAgain) => return Err(Miss::TryAgain.outcome(host, primary_type(s))),
            Err(m) => err = Some(m.outcome(host, primary_type(s))),
        }
    }
    if s.lookup_native {
        match tokio::net::lookup_host((host, port)).await {
            Ok(it) => {
                let a: Vec<IpAddr> = it
                    .map(|sa| sa.ip())
                    .filter(|ip| (ip.is_ipv4() && s.ipv4) || (ip.is_ipv6() && s.ipv6))
                    .fold(Vec::new(), |mut v, ip| {
                        if !v.contains(&ip) {
                            v.push(ip);
                        }
                        v
                    });
                if !a.is_empty() {
                    return Ok(order(s, a));
                }
                err = Some(Outcome::local("5.4.4", format!("{host}: host not found")));
            }
            Err(e) => {
                // getaddrinfo's error code is not available through std, so
                // a failure defers (4.4.4) rather than risk bouncing mail
                // over a resolver hiccup.
                let text = e.to_string();
                let text = text
                    .strip_prefix("failed to lookup address information: ")
                    .unwrap_or(&text)
                    .to_string();
                err = Some(Outcome::local(
                    "4.4.4",
                    format!("unable to look up host {host}: {text}"),
                ));
            }
        }
    }
    Err(err.unwrap_or_else(|| Miss::NotFound.outcome(host, primary_type(s))))
}

fn primary_type(s: &Settings) -> &'static str {
    if s.ipv4 { "A" } else { "AAAA" }
}

async fn dns_addrs(
    resolver: &TokioResolver,
    s: &Settings,
    host: &str,
) -> Result<Vec<IpAddr>, Miss> {
    let mut out = Vec::new();
    let mut miss = Miss::NoData;
    let mut types = Vec::new();
    if s.ipv4 {
        types.push(RecordType::A);
    }
    if s.ipv6 {
        types.push(RecordType::AAAA);
    }
    for t in types {
        match resolver.lookup(fqdn(host), t).await {
            Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })),
            Err(e) => match Miss::of(&e) {
                Miss::NotFound => return Err(Miss::NotFound),
                Miss::TryAgain => miss = Miss::TryAgain,
                Miss::NoData => {}
            },
        }
    }
    if out.is_empty() { Err(miss) } else { Ok(out) }
}

/// Puts the preferred address family first (stable within a family).
fn order(s: &Settings, mut a: Vec<IpAddr>) -> Vec<IpAddr> {
    match s.address_preference.as_str() {
        "ipv6" => a.sort_by_key(|ip| ip.is_ipv4()),
        "ipv4" => a.sort_by_key(|ip| ip.is_ipv6()),
        _ => {}
    }
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::DnsServer;

    fn settings() -> Settings {
        Settings::from_config(&conf::Config::defaults()).0
    }

    #[tokio::test]
    async fn mx_records_in_preference_order_then_a_fallback() {
        let dns = DnsServer::start(&[
            ("example.test", "MX", "20 mx2.example.test"),
            ("example.test", "MX", "10 mx1.example.test"),
            ("mx1.example.test", "A", "127.0.0.1"),
            ("mx2.example.test", "A", "127.0.0.2"),
            ("mx2.example.test", "A", "127.0.0.3"),
            ("nomx.test", "A", "127.0.0.4"),
            ("host.test", "A", "127.0.0.5"),
        ])
        .await;
        let r = queue::dns::resolver(Some(dns.addr)).unwrap();
        let s = settings();
        let t = targets(&r, &s, &Nexthop::parse("example.test:2525", 25).unwrap())
            .await
            .unwrap();
        let got: Vec<(String, String, u16)> = t
            .iter()
            .map(|t| (t.host.clone(), t.addr.to_string(), t.port))
            .collect();
        assert_eq!(
            got[0],
            ("mx1.example.test".into(), "127.0.0.1".into(), 2525)
        );
        assert_eq!(got.len(), 3);
        assert!(got[1..].iter().all(|g| g.0 == "mx2.example.test"));
        let t = targets(&r, &s, &Nexthop::parse("nomx.test", 25).unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t[0].host.as_str(), t[0].addr.to_string().as_str()),
            ("nomx.test", "127.0.0.4")
        );
        let t = targets(&r, &s, &Nexthop::parse("[host.test]:587", 25).unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t[0].addr.to_string().as_str(), t[0].port),
            ("127.0.0.5", 587)
        );
        let t = targets(&r, &s, &Nexthop::parse("[192.0.2.9]", 25).unwrap())
            .await
            .unwrap();
        assert_eq!(t[0].host, "192.0.2.9");
    }

    #[tokio::test]
    async fn nxdomain_bounces_and_server_failure_defers() {
        let dns = DnsServer::start(&[("broken.test", "SERVFAIL", "")]).await;
        let r = queue::dns::resolver(Some(dns.addr)).unwrap();
        let s = settings();
        let e = targets(&r, &s, &Nexthop::parse("nowhere.test", 25).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.dsn, "5.4.4");
        assert_eq!(
            e.reason,
            "Host or domain name not found. Name service error for name=nowhere.test type=MX: Host not found"
        );
        let e = targets(&r, &s, &Nexthop::parse("[nowhere.test]", 25).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            e.reason,
            "Host or domain name not found. Name service error for name=nowhere.test type=A: Host not found"
        );
        let e = targets(&r, &s, &Nexthop::parse("broken.test", 25).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.dsn, "4.4.3");
        assert!(
            e.reason.ends_with("type=MX: Host not found, try again"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn shuffle_keeps_preference_order() {
        let mut v: Vec<(u16, String)> = vec![
            (20, "c".into()),
            (10, "a".into()),
            (10, "b".into()),
            (5, "z".into()),
        ];
        shuffle_equal_preferences(&mut v);
        let prefs: Vec<u16> = v.iter().map(|m| m.0).collect();
        assert_eq!(prefs, vec![5, 10, 10, 20]);
        assert_eq!(v[3].1, "c");
    }
}

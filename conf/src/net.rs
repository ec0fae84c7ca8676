//! IP networks as Postfix writes them in `mynetworks`, client lists and
//! cidr tables: `addr`, `addr/len`, `[addr]`, `[addr]/len` or `[addr/len]`.
//! One parser and one matcher for every place that needs them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network: address bits and prefix length in a common 128-bit form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    v6: bool,
    bits: u128,
    prefix: u32,
}

/// Why a network pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// `[` without `]`.
    MissingBracket,
    /// Something other than `/len` after `]`.
    AfterBracket,
    /// The address part is not a full IPv4 or IPv6 address.
    BadAddress(String),
    /// The prefix length is not a number from 0 to the address width.
    BadMask(u32),
    /// Bits set beyond the prefix; holds the network that was probably meant.
    HostBits(Net),
}

impl NetError {
    /// The reason in words, naming `pattern`; `bracket_v6` writes the
    /// suggested IPv6 network as `[addr]/len` (mynetworks style) instead of
    /// `addr/len` (cidr table style).
    pub fn message(&self, pattern: &str, bracket_v6: bool) -> String {
        match self {
            NetError::MissingBracket => format!("missing ']' in \"{pattern}\""),
            NetError::AfterBracket => format!("unexpected text after ']' in \"{pattern}\""),
            NetError::BadAddress(a) => format!(
                "bad address \"{a}\" in \"{pattern}\" (expected a.b.c.d, a.b.c.d/n, [ipv6] or [ipv6]/n; \
                 partial addresses such as \"10.0.0\" do not match here)"
            ),
            NetError::BadMask(width) => {
                format!("bad mask length in \"{pattern}\" (expected 0 to {width})")
            }
            NetError::HostBits(net) => {
                let addr = net.addr();
                let shown = match addr {
                    IpAddr::V6(a) if bracket_v6 => format!("[{a}]"),
                    a => a.to_string(),
                };
                format!(
                    "non-null host address bits in \"{pattern}\", perhaps you should use \"{shown}/{}\" instead",
                    net.prefix
                )
            }
        }
    }
}

impl Net {
    fn width(v6: bool) -> u32 {
        if v6 { 128 } else { 32 }
    }

    fn mask(v6: bool, prefix: u32) -> u128 {
        if prefix == 0 {
            return 0;
        }
        let all = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        // prefix is 1..=width, so the shift is at most 127.
        all & !((1u128 << (Net::width(v6) - prefix)) - 1)
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            // An IPv4 network's bits fit in 32 bits.
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u32 {
        self.prefix
    }

    /// True when `addr`, taken literally, is of this network's family.
    pub fn same_family(&self, addr: IpAddr) -> bool {
        addr.is_ipv6() == self.v6
    }

    /// True when `addr`, taken literally (as cidr tables do: an
    /// IPv4-mapped IPv6 address is IPv6), is inside this network.
    pub fn contains_literal(&self, addr: IpAddr) -> bool {
        let (v6, bits) = addr_bits(addr);
        self.v6 == v6 && bits & Net::mask(v6, self.prefix) == self.bits
    }

    /// True when `addr` is inside this network (an IPv4-mapped IPv6
    /// address counts as its IPv4 address).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.contains_literal(normalize(addr))
    }

    /// Parses `addr`, `addr/len`, `[addr]`, `[addr]/len` or `[addr/len]`.
    /// A bare address is a network of one. The family follows Postfix: with
    /// a `:` it is IPv6, otherwise dotted-quad IPv4.
    ///
    /// # Errors
    /// What is wrong; [`NetError::message`] words it.
    pub fn parse(pattern: &str) -> Result<Net, NetError> {
        let mut p = pattern;
        let mut mask = None;
        if let Some(rest) = p.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or(NetError::MissingBracket)?;
            if after.is_empty() {
                p = inner;
            } else if let Some(m) = after.strip_prefix('/') {
                p = inner;
                mask = Some(m);
            } else {
                return Err(NetError::AfterBracket);
            }
        }
        let (addr, mask) = match mask {
            Some(m) => (p, Some(m)),
            None => match p.split_once('/') {
                Some((a, m)) => (a, Some(m)),
                None => (p, None),
            },
        };
        let parsed = if addr.contains(':') {
            addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        };
        let a = parsed.ok_or_else(|| NetError::BadAddress(addr.to_string()))?;
        let (v6, bits) = addr_bits(a);
        let width = Net::width(v6);
        let Some(mask) = mask else {
            return Ok(Net {
                v6,
                bits,
                prefix: width,
            });
        };
        let prefix = match mask.parse::<u32>() {
            Ok(n) if n <= width && mask.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(NetError::BadMask(width)),
        };
        let masked = bits & Net::mask(v6, prefix);
        if masked != bits {
            return Err(NetError::HostBits(Net {
                v6,
                bits: masked,
                prefix,
            }));
        }
        Ok(Net { v6, bits, prefix })
    }
}

fn addr_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) become IPv4, as Postfix
/// converts them when IPv4 is enabled.
pub fn normalize(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The address of a listener that must stay private unless the admin says
/// otherwise (`metrics_listen`): empty is off; a bare port or `localhost`
/// means 127.0.0.1; any other host must be an IP address written out, so
/// a non-loopback address (even `0.0.0.0`) is never a default or the
/// result of a name lookup.
///
/// # Errors
/// What is allowed, in words.
pub fn listen_address(value: &str) -> Result<Option<std::net::SocketAddr>, String> {
    use std::net::SocketAddr;
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let allowed =
        "expected a port (127.0.0.1 is used) or IP:port, e.g. 9154, 127.0.0.1:9154 or [::1]:9154";
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("bad port \"{p}\"; {allowed}")),
    };
    if !v.contains(':') {
        return Ok(Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(v)?)));
    }
    let (host, p) = if let Some(rest) = v.strip_prefix('[') {
        rest.split_once("]:")
            .ok_or_else(|| format!("missing \"]:port\"; {allowed}"))?
    } else {
        v.rsplit_once(':').unwrap_or((v, ""))
    };
    let port = port(p)?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(SocketAddr::new(ip, port))),
        Err(_) => Err(format!(
            "\"{host}\" is not an IP address (host names and wildcards are not accepted: write the address, e.g. 127.0.0.1:{port}, or 0.0.0.0:{port} to listen on every interface); {allowed}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forms() {
        for p in ["10.0.0.0/8", "[10.0.0.0]/8", "[10.0.0.0/8]"] {
            let n = Net::parse(p).unwrap();
            assert!(
                n.contains(ip("10.1.2.3")) && !n.contains(ip("11.0.0.1")),
                "{p}"
            );
            assert!(n.contains(ip("::ffff:10.9.9.9")), "{p}: mapped IPv4");
        }
        let one = Net::parse("192.0.2.5").unwrap();
        assert!(one.contains(ip("192.0.2.5")) && !one.contains(ip("192.0.2.6")));
        let v6 = Net::parse("[2001:db8::]/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.1")));
        assert!(!Net::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
    }

    #[test]
    fn errors_in_words() {
        let e = |p: &str, b| Net::parse(p).unwrap_err().message(p, b);
        assert_eq!(
            e("10.0.0.5/24", false),
            r#"non-null host address bits in "10.0.0.5/24", perhaps you should use "10.0.0.0/24" instead"#
        );
        assert!(e("[2001:db8::1]/32", true).contains(r#""[2001:db8::]/32""#));
        assert!(e("2001:db8::1/32", false).contains(r#""2001:db8::/32""#));
        assert_eq!(
            e("10.0.0.0/33", false),
            r#"bad mask length in "10.0.0.0/33" (expected 0 to 32)"#
        );
        assert!(e("10.0.0.0/x", false).starts_with("bad mask length"));
        assert!(e("10.0.0.0/", false).starts_with("bad mask length"));
        assert!(e("10.0.0/24", false).starts_with(r#"bad address "10.0.0""#));
        assert!(e("[::1", false).starts_with("missing ']'"));
        assert!(e("[::1]x", false).starts_with("unexpected text after ']'"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "[0-9a-f:./\\[\\]]{0,40}") {
            let _ = Net::parse(&s).map_err(|e| e.message(&s, true));
        }

        #[test]
        fn a_network_contains_its_addresses(a in any::<u32>(), prefix in 0u32..=32, host in any::<u32>()) {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let net = Net::parse(&format!("{}/{prefix}", Ipv4Addr::from(a & mask))).unwrap();
            let inside = Ipv4Addr::from((a & mask) | (host & !mask));
            prop_assert!(net.contains(IpAddr::V4(inside)));
        }
    }
}

#[cfg(test)]
mod listen_tests {
    use super::listen_address;

    #[test]
    fn loopback_unless_written_out() {
        let a = |v: &str| listen_address(v).map(|o| o.map(|a| a.to_string()));
        assert_eq!(a(""), Ok(None));
        assert_eq!(a("9154"), Ok(Some("127.0.0.1:9154".into())));
        assert_eq!(a("localhost:9154"), Ok(Some("127.0.0.1:9154".into())));
        assert_eq!(a("[::1]:9154"), Ok(Some("[::1]:9154".into())));
        assert_eq!(a("10.0.0.5:9154"), Ok(Some("10.0.0.5:9154".into())));
        assert_eq!(a("0.0.0.0:9154"), Ok(Some("0.0.0.0:9154".into())));
        for bad in [
            "*:9154",
            "all:9154",
            "metrics.example:9154",
            "0",
            "70000",
            "x",
            "[::1]9154",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
        assert!(a("*:9154").unwrap_err().contains("0.0.0.0:9154"));
    }
}

//! The default of `mynetworks`, computed from `mynetworks_style` and this
//! machine's interface addresses, as Postfix does: `host` trusts only the
//! machine's own addresses, `subnet` the networks of its interfaces,
//! `class` their whole class A/B/C networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of an interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of the interface's network.
    pub prefix: u8,
}

/// This machine's interface addresses.
pub fn interface_addresses() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        if let (Some(sin), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            out.push(IfAddr {
                addr: IpAddr::V4(sin.ip()),
                prefix: u32::from(m.ip()).count_ones() as u8,
            });
        } else if let (Some(sin6), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let bits: u32 = m.ip().octets().iter().map(|b| b.count_ones()).sum();
            out.push(IfAddr {
                addr: IpAddr::V6(sin6.ip()),
                prefix: bits as u8,
            });
        }
    }
    out
}

fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn fmt(addr: IpAddr, prefix: u8) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/{prefix}"),
        IpAddr::V6(a) => format!("[{a}]/{prefix}"),
    }
}

/// The default mynetworks for `style` (host, subnet or class) given the
/// interface addresses.
pub fn default_for(style: &str, ifs: &[IfAddr]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    // The loopback networks are always trusted.
    push("127.0.0.0/8".into());
    push("[::1]/128".into());
    for i in ifs {
        if i.addr.is_loopback() {
            continue;
        }
        match style {
            "subnet" => push(fmt(network(i.addr, i.prefix), i.prefix)),
            "class" => match i.addr {
                IpAddr::V4(a) => {
                    let first = a.octets()[0];
                    let p = if first < 128 {
                        8
                    } else if first < 192 {
                        16
                    } else {
                        24
                    };
                    push(fmt(network(i.addr, p), p));
                }
                IpAddr::V6(_) => push(fmt(network(i.addr, i.prefix), i.prefix)),
            },
            _ => push(fmt(i.addr, if i.addr.is_ipv4() { 32 } else { 128 })),
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        let ifs = [
            IfAddr {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 8,
            },
            IfAddr {
                addr: "10.0.0.5".parse().unwrap(),
                prefix: 24,
            },
            IfAddr {
                addr: "172.16.3.4".parse().unwrap(),
                prefix: 20,
            },
            IfAddr {
                addr: "fe80::1".parse().unwrap(),
                prefix: 64,
            },
        ];
        assert_eq!(
            default_for("host", &ifs),
            "127.0.0.0/8 [::1]/128 10.0.0.5/32 172.16.3.4/32 [fe80::1]/128"
        );
        assert_eq!(
            default_for("subnet", &ifs),
            "127.0.0.0/8 [::1]/128 10.0.0.0/24 172.16.0.0/20 [fe80::]/64"
        );
        assert_eq!(
            default_for("class", &ifs),
            "127.0.0.0/8 [::1]/128 10.0.0.0/8 172.16.0.0/16 [fe80::]/64"
        );
        assert!(!interface_addresses().is_empty());
    }
}

//! Next-hop destinations as Postfix writes them in relayhost and
//! transport_maps: `[host]:port` (no MX lookup), `host:port`, `host`
//! (MX lookup), `[192.0.2.1]`, `[ipv6:2001:db8::1]:587`.

use std::fmt;

/// A parsed next hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexthop {
    /// Host name, domain, or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True when the destination is a domain whose MX records are looked up;
    /// false for the bracketed `[host]` form.
    pub mx: bool,
}

/// Port of a service name or a number.
pub fn service_port(s: &str) -> Option<u16> {
    match s {
        "smtp" => Some(25),
        "submission" => Some(587),
        "submissions" | "smtps" | "urd" => Some(465),
        "lmtp" => Some(24),
        _ => s.parse().ok().filter(|p| *p != 0),
    }
}

impl Nexthop {
    /// Parses one next hop; `default_port` applies when none is given.
    ///
    /// # Errors
    /// A description of the accepted forms.
    pub fn parse(s: &str, default_port: u16) -> Result<Nexthop, String> {
        let allowed = || {
            format!(
                "expected [host]:port, host:port or a domain, e.g. [smtp.office365.com]:587 (got \"{s}\")"
            )
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(allowed());
        }
        let (host, port_str, mx) = if let Some(rest) = t.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(allowed)?;
            let inner = &rest[..end];
            let after = &rest[end + 1..];
            let port = if after.is_empty() {
                None
            } else {
                Some(after.strip_prefix(':').ok_or_else(allowed)?)
            };
            let inner = inner
                .strip_prefix("ipv6:")
                .or_else(|| inner.strip_prefix("IPv6:"))
                .unwrap_or(inner);
            (inner.to_string(), port, false)
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p), true),
                Some(_) => return Err(allowed()),
                None => (t.to_string(), None, true),
            }
        };
        if host.is_empty() || host.contains([' ', '\t', ',', '[', ']']) {
            return Err(allowed());
        }
        let port = match port_str {
            Some(p) => service_port(p).ok_or_else(allowed)?,
            None => default_port,
        };
        Ok(Nexthop {
            host: host.to_ascii_lowercase(),
            port,
            mx,
        })
    }

    /// Parses a comma or space separated list of next hops.
    ///
    /// # Errors
    /// The first malformed entry.
    pub fn parse_list(s: &str, default_port: u16) -> Result<Vec<Nexthop>, String> {
        crate::values::split_list(s)
            .iter()
            .map(|h| Nexthop::parse(h, default_port))
            .collect()
    }
}

impl fmt::Display for Nexthop {
    /// The canonical form, as used for `smtp_sasl_password_maps` keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("ipv6:{}", self.host)
        } else {
            self.host.clone()
        };
        if self.mx {
            if self.port == 25 {
                write!(f, "{host}")
            } else {
                write!(f, "{host}:{}", self.port)
            }
        } else if self.port == 25 {
            write!(f, "[{host}]")
        } else {
            write!(f, "[{host}]:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = Nexthop::parse("[smtp.office365.com]:587", 25).unwrap();
        assert_eq!(
            (n.host.as_str(), n.port, n.mx),
            ("smtp.office365.com", 587, false)
        );
        assert_eq!(n.to_string(), "[smtp.office365.com]:587");
        let n = Nexthop::parse("contoso.com", 25).unwrap();
        assert_eq!((n.host.as_str(), n.port, n.mx), ("contoso.com", 25, true));
        let n = Nexthop::parse("mail.example.com:submission", 25).unwrap();
        assert_eq!((n.port, n.mx), (587, true));
        let n = Nexthop::parse("[ipv6:2001:db8::1]:2525", 25).unwrap();
        assert_eq!((n.host.as_str(), n.port), ("2001:db8::1", 2525));
        let n = Nexthop::parse("[127.0.0.1]", 25).unwrap();
        assert_eq!(n.to_string(), "[127.0.0.1]");
        assert!(Nexthop::parse("[unclosed:25", 25).is_err());
        assert!(Nexthop::parse("host:notaport", 25).is_err());
        assert!(Nexthop::parse("", 25).is_err());
        assert!(Nexthop::parse("[h]x", 25).is_err());
        assert_eq!(Nexthop::parse_list("[a]:587, b", 25).unwrap().len(), 2);
    }
}

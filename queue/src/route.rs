//! Where each recipient goes (Postfix's trivial-rewrite resolve): an
//! explicit route from cleanup, then transport_maps, then the address class
//! (local → local_transport, relay_domains → relay_transport, otherwise
//! default_transport with relayhost or the recipient's domain as next hop).

use conf::Config;
use conf::tables::Maps;

/// A resolved route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Deliver through a delivery agent (master.cf service `transport`).
    Agent {
        /// Transport (service) name.
        transport: String,
        /// Next hop, as the agent understands it.
        nexthop: String,
    },
    /// Bounce (5xx) or defer (4xx) with this text (`error:` / `retry:` transports).
    Error {
        /// Enhanced status code.
        dsn: String,
        /// Explanation.
        text: String,
    },
    /// Pretend delivery succeeded (`discard:` transport).
    Discard {
        /// Explanation for the log.
        text: String,
    },
}

/// The routing tables, opened once.
#[derive(Debug)]
pub struct Router {
    transport_maps: Maps,
    sender_relay: Maps,
    sender_transport: Maps,
}

impl Router {
    /// Opens transport_maps and the sender-dependent maps.
    ///
    /// # Errors
    /// Tables that cannot be opened.
    pub fn new(cfg: &Config) -> Result<Router, Vec<conf::Error>> {
        let o = conf::Origin::Default;
        Ok(Router {
            transport_maps: Maps::open(&cfg.transport_maps, &o)?,
            sender_relay: Maps::open(&cfg.sender_dependent_relayhost_maps, &o)?,
            sender_transport: Maps::open(&cfg.sender_dependent_default_transport_maps, &o)?,
        })
    }

    /// Resolves one recipient.
    ///
    /// # Errors
    /// A table lookup failed: defer the recipient.
    pub fn resolve(
        &self,
        cfg: &Config,
        rcpt: &str,
        fixed: Option<&str>,
        sender: &str,
    ) -> Result<Route, String> {
        if let Some(r) = fixed {
            return Ok(parse_transport(r, "", rcpt_domain(rcpt)));
        }
        let domain = rcpt_domain(rcpt);
        let local = cfg
            .mydestination
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain));
        let relay = cfg.relay_domains.iter().any(|d| {
            let d = d.trim_start_matches('.');
            domain.eq_ignore_ascii_case(d)
                || domain
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", d.to_ascii_lowercase()))
        });
        // Class defaults.
        let (mut class_transport, mut class_nexthop) = if local {
            (cfg.local_transport.clone(), cfg.myhostname.clone())
        } else if relay {
            (
                cfg.relay_transport.clone(),
                self.relayhost(cfg, sender)?
                    .unwrap_or_else(|| domain.to_string()),
            )
        } else {
            let t = match self.sender_lookup(&self.sender_transport, sender)? {
                Some(t) => t,
                None => cfg.default_transport.clone(),
            };
            (
                t,
                self.relayhost(cfg, sender)?
                    .unwrap_or_else(|| domain.to_string()),
            )
        };
        // A transport value may carry its own next hop.
        if let Some((t, nh)) = class_transport.clone().split_once(':') {
            if !nh.is_empty() && !matches!(t, "error" | "retry" | "discard") {
                class_nexthop = nh.to_string();
            }
            if matches!(t, "error" | "retry" | "discard") {
                return Ok(parse_transport(&class_transport, "", domain));
            }
            class_transport = t.to_string();
        }
        if !self.transport_maps.is_empty()
            && let Some(v) = self
                .transport_maps
                .find_transport_with(
                    rcpt,
                    &cfg.recipient_delimiter,
                    conf::tables::ParentMatch::DotDomain,
                )
                .map_err(|e| e.to_string())?
        {
            let (t, nh) = match v.split_once(':') {
                Some((t, nh)) => (t.trim(), nh.trim()),
                None => (v.trim(), ""),
            };
            let t = if t.is_empty() {
                class_transport.as_str()
            } else {
                t
            };
            if matches!(t, "error" | "retry" | "discard") {
                return Ok(parse_transport(&format!("{t}:{nh}"), "", domain));
            }
            let nh = if nh.is_empty() {
                class_nexthop.as_str()
            } else {
                nh
            };
            return Ok(Route::Agent {
                transport: t.to_string(),
                nexthop: nh.to_string(),
            });
        }
        Ok(Route::Agent {
            transport: class_transport,
            nexthop: class_nexthop,
        })
    }

    fn relayhost(&self, cfg: &Config, sender: &str) -> Result<Option<String>, String> {
        if let Some(h) = self.sender_lookup(&self.sender_relay, sender)? {
            return Ok(Some(h));
        }
        Ok((!cfg.relayhost.is_empty()).then(|| cfg.relayhost.clone()))
    }

    /// Sender-dependent lookup: the address, then `@domain`; `<>` uses
    /// Postfix's `<>` key.
    fn sender_lookup(&self, maps: &Maps, sender: &str) -> Result<Option<String>, String> {
        if maps.is_empty() {
            return Ok(None);
        }
        if sender.is_empty() {
            return maps.find("<>").map_err(|e| e.to_string());
        }
        maps.find_address(
            sender,
            &conf::tables::AddrSearch {
                recipient_delimiter: String::new(),
                local_domain: false,
            },
        )
        .map(|o| o.map(|(v, _)| v))
        .map_err(|e| e.to_string())
    }
}

/// The domain of an address (empty when it has none).
pub fn rcpt_domain(addr: &str) -> &str {
    crate::cleanup::split_addr(addr).1.unwrap_or("")
}

/// Parses `transport:nexthop` for the special transports and agents.
pub fn parse_transport(value: &str, default_nexthop: &str, domain: &str) -> Route {
    let (t, rest) = value.split_once(':').unwrap_or((value, ""));
    match t {
        "error" | "retry" => {
            let text = rest.trim();
            let (dsn, text) = match text.split_once(' ') {
                Some((code, rest)) if proto::status::EnhancedCode::parse(code).is_some() => {
                    (code.to_string(), rest.trim().to_string())
                }
                _ => (
                    if t == "retry" {
                        "4.3.0".into()
                    } else {
                        "5.0.0".into()
                    },
                    if text.is_empty() {
                        "mail delivery failed".into()
                    } else {
                        text.to_string()
                    },
                ),
            };
            let dsn = if t == "retry" && dsn.starts_with('5') {
                format!("4{}", &dsn[1..])
            } else {
                dsn
            };
            Route::Error { dsn, text }
        }
        "discard" => Route::Discard {
            text: if rest.trim().is_empty() {
                "discarded".into()
            } else {
                rest.trim().to_string()
            },
        },
        _ => Route::Agent {
            transport: t.to_string(),
            nexthop: if rest.is_empty() {
                if default_nexthop.is_empty() {
                    domain.to_string()
                } else {
                    default_nexthop.to_string()
                }
            } else {
                rest.to_string()
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let main = conf::MainCf::parse(
            &format!("myhostname = relay.contoso.com\n{extra}"),
            std::path::Path::new("m"),
        )
        .unwrap();
        Config::build(&main, &[]).unwrap()
    }

    #[test]
    fn classes_and_relayhost() {
        let c = cfg("relayhost = [smtp.office365.com]:587\n");
        let r = Router::new(&c).unwrap();
        assert_eq!(
            r.resolve(&c, "bob@contoso.com", None, "a@b").unwrap(),
            Route::Agent {
                transport: "smtp".into(),
                nexthop: "[smtp.office365.com]:587".into()
            }
        );
        match r
            .resolve(&c, "root@relay.contoso.com", None, "a@b")
            .unwrap()
        {
            Route::Error { dsn, text } => {
                assert_eq!(dsn, "5.1.1");
                assert!(text.contains("alias"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let c = cfg("");
        let r = Router::new(&c).unwrap();
        assert_eq!(
            r.resolve(&c, "bob@contoso.com", None, "").unwrap(),
            Route::Agent {
                transport: "smtp".into(),
                nexthop: "contoso.com".into()
            }
        );
    }

    #[test]
    fn transport_maps_and_special_transports() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("transport");
        std::fs::write(&t, "contoso.com  smtp:[10.0.0.1]:2525\n.sub.example  relay:\nbad.example  error:5.7.1 no mail for you\nslow.example retry:try later\n* maildir:/tmp/md\n").unwrap();
        let c = cfg(&format!("transport_maps = texthash:{}\n", t.display()));
        let r = Router::new(&c).unwrap();
        assert_eq!(
            r.resolve(&c, "bob@contoso.com", None, "").unwrap(),
            Route::Agent {
                transport: "smtp".into(),
                nexthop: "[10.0.0.1]:2525".into()
            }
        );
        assert_eq!(
            r.resolve(&c, "x@a.sub.example", None, "").unwrap(),
            Route::Agent {
                transport: "relay".into(),
                nexthop: "a.sub.example".into()
            }
        );
        assert_eq!(
            r.resolve(&c, "x@bad.example", None, "").unwrap(),
            Route::Error {
                dsn: "5.7.1".into(),
                text: "no mail for you".into()
            }
        );
        assert_eq!(
            r.resolve(&c, "x@slow.example", None, "").unwrap(),
            Route::Error {
                dsn: "4.3.0".into(),
                text: "try later".into()
            }
        );
        assert_eq!(
            r.resolve(&c, "x@elsewhere.example", None, "").unwrap(),
            Route::Agent {
                transport: "maildir".into(),
                nexthop: "/tmp/md".into()
            }
        );
        assert_eq!(
            r.resolve(&c, "x@y", Some("error:5.3.0 unsupported alias"), "")
                .unwrap(),
            Route::Error {
                dsn: "5.3.0".into(),
                text: "unsupported alias".into()
            }
        );
    }

    #[test]
    fn default_transport_with_nexthop() {
        let c = cfg("default_transport = maildir:/var/mail/demo\n");
        let r = Router::new(&c).unwrap();
        assert_eq!(
            r.resolve(&c, "anyone@example.com", None, "").unwrap(),
            Route::Agent {
                transport: "maildir".into(),
                nexthop: "/var/mail/demo".into()
            }
        );
    }
}

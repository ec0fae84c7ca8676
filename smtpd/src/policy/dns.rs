//! Does a domain exist? The DNS lookups of reject_unknown_sender_domain,
//! reject_unknown_recipient_domain (MX, then A, then AAAA, as Postfix's
//! reject_unknown_mailhost()) and reject_unknown_helo_hostname (A, AAAA,
//! then MX).
//!
//! The resolver is the system's (resolv.conf), or the server named by the
//! environment variable `POSTERN_DNS_SERVER=ip:port` (tests). It is built on
//! first use, inside the runtime.

use super::relay::valid_hostname;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::SocketAddr;
use tokio::sync::OnceCell;

pub(crate) use queue::dns::DNS_SERVER_ENV;

/// The outcome of a lookup, ordered as Postfix ranks them: when several
/// record types are tried, the best outcome is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// NXDOMAIN, or no record of any type tried.
    NotFound,
    /// The domain says it accepts no mail (RFC 7505 null MX).
    NullMx,
    /// The name is not a valid domain name (Postfix DNS_INVAL).
    Invalid,
    /// A temporary failure (SERVFAIL, timeout, no resolver).
    TryAgain,
    /// A record was found.
    Found,
}

/// The resolver of the policy checks.
#[derive(Debug)]
pub(crate) struct Dns {
    server: Option<SocketAddr>,
    offline: bool,
    resolver: OnceCell<Option<TokioResolver>>,
}

impl Dns {
    /// Uses `POSTERN_DNS_SERVER` when set, else the system configuration.
    ///
    /// # Errors
    /// The variable is set but is not `ip:port`.
    pub(crate) fn from_env() -> Result<Dns, String> {
        Ok(Dns::with_server(queue::dns::server_from_env()?))
    }

    /// Uses `server` (`None`: the system configuration).
    pub(crate) fn with_server(server: Option<SocketAddr>) -> Dns {
        Dns {
            server,
            offline: false,
            resolver: OnceCell::new(),
        }
    }

    /// A resolver for which every lookup fails temporarily (tests).
    #[cfg(test)]
    pub(crate) fn offline() -> Dns {
        Dns {
            server: None,
            offline: true,
            resolver: OnceCell::new(),
        }
    }

    async fn resolver(&self) -> Option<&TokioResolver> {
        if self.offline {
            return None;
        }
        self.resolver
            .get_or_init(|| async {
                queue::dns::resolver(self.server)
                    .map_err(|e| {
                        queue::log::warning(&format!(
                            "DNS lookups for smtpd restrictions fail: {e}"
                        ))
                    })
                    .ok()
            })
            .await
            .as_ref()
    }

    /// One query.
    async fn query(&self, name: &str, rtype: RecordType) -> Status {
        let Some(r) = self.resolver().await else {
            return Status::TryAgain;
        };
        match r.lookup(fqdn(name), rtype).await {
            Ok(l) => {
                let mut found = false;
                let mut null_mx = false;
                for rec in l.answers() {
                    match &rec.data {
                        RData::MX(mx) if rtype == RecordType::MX => {
                            if mx.exchange.is_root() {
                                null_mx = true;
                            } else {
                                found = true;
                            }
                        }
                        RData::A(_) if rtype == RecordType::A => found = true,
                        RData::AAAA(_) if rtype == RecordType::AAAA => found = true,
                        _ => {}
                    }
                }
                if found {
                    Status::Found
                } else if null_mx {
                    Status::NullMx
                } else {
                    Status::NotFound
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Status::NotFound,
            Err(_) => Status::TryAgain,
        }
    }

    /// Tries `types` in order (Postfix dns_lookup_rv()): stops at a found
    /// record (and, with `stop_null_mx`, at a null MX or an invalid name),
    /// else reports the best outcome.
    async fn lookup(&self, name: &str, types: &[RecordType], stop_null_mx: bool) -> Status {
        if !valid_hostname(name.strip_suffix('.').unwrap_or(name)) {
            return Status::Invalid;
        }
        let mut best = Status::NotFound;
        for t in types {
            let s = self.query(name, *t).await;
            if s == Status::Found || (stop_null_mx && s == Status::NullMx) {
                return s;
            }
            best = best.max(s);
        }
        best
    }

    /// The domain of a mail address can receive mail: MX, else A, else AAAA.
    pub(crate) async fn mail_host(&self, domain: &str) -> Status {
        self.lookup(
            domain,
            &[RecordType::MX, RecordType::A, RecordType::AAAA],
            true,
        )
        .await
    }

    /// A HELO name exists: A, else AAAA, else MX (a null MX counts).
    pub(crate) async fn host(&self, name: &str) -> Status {
        self.lookup(
            name,
            &[RecordType::A, RecordType::AAAA, RecordType::MX],
            false,
        )
        .await
    }
}

/// A name as queried: fully qualified, so the resolver appends no search
/// domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_tests::dns::DnsServer;

    #[tokio::test]
    async fn lookups_against_a_test_server() {
        let srv = DnsServer::start(&[
            ("mx.test", "MX", "10 mail.mx.test"),
            ("aonly.test", "A", "192.0.2.1"),
            ("v6only.test", "AAAA", "2001:db8::1"),
            ("nullmx.test", "MX", "0 ."),
            ("broken.test", "SERVFAIL", ""),
            ("txtonly.test", "TXT", ""),
        ])
        .await;
        let dns = Dns::with_server(Some(srv.addr));
        assert_eq!(dns.mail_host("mx.test").await, Status::Found);
        assert_eq!(dns.mail_host("MX.test.").await, Status::Found);
        assert_eq!(dns.mail_host("aonly.test").await, Status::Found);
        assert_eq!(dns.mail_host("v6only.test").await, Status::Found);
        assert_eq!(dns.mail_host("nullmx.test").await, Status::NullMx);
        assert_eq!(dns.mail_host("nxdomain.test").await, Status::NotFound);
        assert_eq!(dns.mail_host("txtonly.test").await, Status::NotFound);
        assert_eq!(dns.mail_host("broken.test").await, Status::TryAgain);
        assert_eq!(dns.mail_host("bad..name").await, Status::Invalid);
        assert_eq!(dns.host("nullmx.test").await, Status::NullMx);
        assert_eq!(dns.host("aonly.test").await, Status::Found);
        assert_eq!(Dns::offline().mail_host("mx.test").await, Status::TryAgain);
    }
}

//! How a [`FakeSmartHost`](super::FakeSmartHost) behaves: host name, TLS,
//! AUTH, limits. Defaults follow OFFICE365.md §2 and §7 (`submission`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::SslVersion;
use proto::Reply;

use crate::ca::CertFiles;

/// The `SIZE` Exchange Online advertises (150 MiB).
pub const EXO_MAX_SIZE: u64 = 157_286_400;

/// The per-mailbox concurrent connection limit of Exchange Online.
pub const EXO_MAILBOX_CONCURRENCY: usize = 3;

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// The OpenSSL constant.
    pub fn ssl(self) -> SslVersion {
        match self {
            TlsVersion::Tls10 => SslVersion::TLS1,
            TlsVersion::Tls11 => SslVersion::TLS1_1,
            TlsVersion::Tls12 => SslVersion::TLS1_2,
            TlsVersion::Tls13 => SslVersion::TLS1_3,
        }
    }

    /// From OpenSSL's negotiated version; `None` for SSL 3 and unknowns.
    pub fn from_ssl(v: SslVersion) -> Option<TlsVersion> {
        [
            TlsVersion::Tls10,
            TlsVersion::Tls11,
            TlsVersion::Tls12,
            TlsVersion::Tls13,
        ]
        .into_iter()
        .find(|t| t.ssl() == v)
    }
}

impl fmt::Display for TlsVersion {
    /// As Postfix logs it: `TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls10 => "TLSv1",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        })
    }
}

/// Decides an XOAUTH2 attempt: `(user, bearer token)` → `Ok` to accept or
/// the failure reply. The place for later token checks (§4.2, §7).
pub type TokenCheck = Arc<dyn Fn(&str, &str) -> Result<(), Reply> + Send + Sync>;

/// The fake's configuration. Build with [`FakeConfig::office365`] or
/// [`FakeConfig::generic`], then adjust with the builder methods or the
/// public fields.
#[derive(Clone)]
pub struct FakeConfig {
    /// The server name in the greeting, EHLO and replies.
    pub hostname: String,
    /// Certificate for STARTTLS (and implicit TLS); `None`: no TLS offered.
    pub cert: Option<CertFiles>,
    /// TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Lowest version the handshake accepts. Exchange completes TLS 1.0
    /// and 1.1 handshakes and refuses at AUTH, so the default is TLS 1.0.
    pub tls_handshake_min: TlsVersion,
    /// Highest version the handshake accepts (`None`: OpenSSL's maximum).
    pub tls_max: Option<TlsVersion>,
    /// AUTH over a lower TLS version gets `421 4.7.66 ...` and a close.
    pub auth_tls_floor: TlsVersion,
    /// MAIL without AUTH gets `530 5.7.57`.
    pub require_auth: bool,
    /// AUTH is advertised and accepted only after STARTTLS.
    pub auth_requires_tls: bool,
    /// Mechanisms advertised and accepted, in order (`LOGIN`, `PLAIN`,
    /// `XOAUTH2`). Empty: no AUTH at all.
    pub auth_mechanisms: Vec<String>,
    /// user → password for LOGIN and PLAIN.
    pub users: HashMap<String, String>,
    /// XOAUTH2 decision; `None` refuses every token with `535 5.7.3`.
    pub xoauth2: Option<TokenCheck>,
    /// Sessions per authenticated mailbox beyond which end of DATA gets
    /// `432 4.3.2 Concurrent connections limit exceeded` (0: no limit).
    pub mailbox_concurrency_limit: usize,
    /// The `SIZE` advertised; `MAIL ... SIZE=` above it gets `552 5.3.4`.
    pub max_size: u64,
    /// Silence after which the server sends `451 4.7.0` and closes.
    pub idle_timeout: Duration,
    /// Append ` [<16 hex>]` to the greeting (current Exchange).
    pub greeting_id: bool,
}

impl fmt::Debug for FakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeConfig")
            .field("hostname", &self.hostname)
            .field("tls", &self.cert.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .field("auth_tls_floor", &self.auth_tls_floor)
            .field("require_auth", &self.require_auth)
            .field("auth_mechanisms", &self.auth_mechanisms)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("mailbox_concurrency_limit", &self.mailbox_concurrency_limit)
            .finish_non_exhaustive()
    }
}

impl FakeConfig {
    /// smtp.office365.com:587 (SMTP AUTH client submission): STARTTLS with
    /// `cert`, AUTH LOGIN XOAUTH2 only after TLS 1.2+, AUTH required, three
    /// sessions per mailbox. No users yet: add them with [`FakeConfig::user`].
    pub fn office365(cert: &CertFiles) -> FakeConfig {
        FakeConfig {
            hostname: "PH0PR00MB0001.namprd00.prod.outlook.test".into(),
            cert: Some(cert.clone()),
            ..FakeConfig::base()
        }
    }

    /// A generic smart host: no TLS, AUTH optional (PLAIN and LOGIN offered
    /// without TLS), no mailbox limit. Add TLS with [`FakeConfig::tls`].
    pub fn generic() -> FakeConfig {
        FakeConfig {
            hostname: "smarthost.test".into(),
            require_auth: false,
            auth_requires_tls: false,
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            mailbox_concurrency_limit: 0,
            greeting_id: false,
            ..FakeConfig::base()
        }
    }

    /// Exchange Online's submission behaviour, without a certificate.
    fn base() -> FakeConfig {
        FakeConfig {
            hostname: String::new(),
            cert: None,
            implicit_tls: false,
            tls_handshake_min: TlsVersion::Tls10,
            tls_max: None,
            auth_tls_floor: TlsVersion::Tls12,
            require_auth: true,
            auth_requires_tls: true,
            auth_mechanisms: vec!["LOGIN".into(), "XOAUTH2".into()],
            users: HashMap::new(),
            xoauth2: None,
            mailbox_concurrency_limit: EXO_MAILBOX_CONCURRENCY,
            max_size: EXO_MAX_SIZE,
            idle_timeout: Duration::from_secs(300),
            greeting_id: true,
        }
    }

    /// Adds (or replaces) a user for LOGIN and PLAIN.
    pub fn user(mut self, name: &str, password: &str) -> FakeConfig {
        self.users.insert(name.into(), password.into());
        self
    }

    /// Sets the server name.
    pub fn hostname(mut self, name: &str) -> FakeConfig {
        self.hostname = name.into();
        self
    }

    /// Offers STARTTLS with `cert`.
    pub fn tls(mut self, cert: &CertFiles) -> FakeConfig {
        self.cert = Some(cert.clone());
        self
    }

    /// Also offers and accepts AUTH PLAIN (generic smart hosts; Exchange
    /// never offers it).
    pub fn offer_plain(mut self) -> FakeConfig {
        if !self.auth_mechanisms.iter().any(|m| m == "PLAIN") {
            self.auth_mechanisms
                .insert(1.min(self.auth_mechanisms.len()), "PLAIN".into());
        }
        self
    }

    /// Sets the TLS version below which AUTH gets `421 4.7.66`.
    pub fn auth_tls_floor(mut self, v: TlsVersion) -> FakeConfig {
        self.auth_tls_floor = v;
        self
    }

    /// Sets the per-mailbox session limit (0: none).
    pub fn mailbox_concurrency_limit(mut self, n: usize) -> FakeConfig {
        self.mailbox_concurrency_limit = n;
        self
    }

    /// Sets the XOAUTH2 decision.
    pub fn xoauth2(mut self, check: TokenCheck) -> FakeConfig {
        self.xoauth2 = Some(check);
        self
    }

    /// True when STARTTLS is offered (TLS configured, not implicit).
    pub(crate) fn offers_starttls(&self) -> bool {
        self.cert.is_some() && !self.implicit_tls
    }
}

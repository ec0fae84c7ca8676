//! How a [`FakeSmartHost`](super::FakeSmartHost) behaves: listener
//! profile, host name, TLS, AUTH, tenant and limits. Defaults follow
//! OFFICE365.md §2, §3 and §7.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::ssl::SslVersion;

use super::oauth::{TokenCheck, Xoauth2Policy};
use super::token::FakeTokenEndpoint;
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

/// Which Exchange Online (or other) listener the fake plays (§1, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// smtp.office365.com:587, SMTP AUTH client submission.
    Submission,
    /// A generic smart host (not Exchange).
    Generic,
    /// `<tenant>.mail.protection.outlook.com:25`: Direct Send and
    /// connector relay, no AUTH.
    Mx,
    /// High Volume Email (smtp.hve.mx.microsoft:587).
    Hve,
    /// Azure Communication Services (smtp.azurecomm.net:587).
    Acs,
}

/// A count per sliding window, e.g. 30 messages per 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How many.
    pub count: usize,
    /// Per how long.
    pub period: Duration,
}

impl Window {
    /// `count` per `period`.
    pub fn new(count: usize, period: Duration) -> Window {
        Window { count, period }
    }
}

/// Exchange's message rate: 30 messages per minute per mailbox (§3).
pub const EXO_MESSAGE_RATE: Window = Window {
    count: 30,
    period: Duration::from_secs(60),
};

/// Exchange's recipient rate limit: 10,000 recipients per rolling 24 h
/// per (P2) sender (§3).
pub const EXO_RECIPIENT_BUDGET: Window = Window {
    count: 10_000,
    period: Duration::from_secs(86_400),
};

/// Exchange's default recipients per message (`RecipientLimits`, §3).
pub const EXO_RECIPIENT_LIMIT: usize = 500;

/// How the `acs` listener checks AUTH LOGIN passwords: through a token
/// endpoint, as ACS exchanges the client secret itself (§1, §4.1).
#[derive(Debug, Clone)]
pub struct AcsConfig {
    /// The ACS resource name (first part of the user name).
    pub resource: String,
    /// The token endpoint's base URL (`http://127.0.0.1:<port>`).
    pub token_base: String,
    /// The scope ACS asks for.
    pub scope: String,
    /// Provisioned MailFrom addresses (lower case); empty: any.
    pub senders: Vec<String>,
}

/// The fake's configuration. Build with a profile ([`FakeConfig::office365`],
/// [`FakeConfig::mx`], [`FakeConfig::hve`], [`FakeConfig::acs`],
/// [`FakeConfig::generic`]), then adjust with the builder methods or the
/// public fields.
#[derive(Clone)]
pub struct FakeConfig {
    /// Which listener this is.
    pub profile: Profile,
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
    /// A custom XOAUTH2 decision; wins over [`oauth`](Self::oauth).
    pub xoauth2: Option<TokenCheck>,
    /// Exchange's token checks (see [`FakeConfig::accept_tokens_from`]).
    /// With neither this nor [`xoauth2`](Self::xoauth2), every token gets
    /// `535 5.7.3`.
    pub oauth: Option<Xoauth2Policy>,
    /// Sessions per authenticated mailbox beyond which end of DATA gets
    /// `432 4.3.2 Concurrent connections limit exceeded` (0: no limit).
    pub mailbox_concurrency_limit: usize,
    /// Messages per authenticated mailbox: Exchange accepts the excess and
    /// delays it, so the fake accepts too and counts a
    /// [`ViolationKind::MessageRate`](super::ViolationKind::MessageRate)
    /// for every message accepted beyond `count` within `period`.
    pub message_rate: Option<Window>,
    /// Recipients per P2 sender (header `From:`, else the authenticated
    /// mailbox) per rolling window: beyond it, end of DATA gets
    /// `554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; ...`.
    pub recipient_budget: Option<Window>,
    /// Recipients per message; more get `452 4.5.3 Too many recipients`
    /// at RCPT (the real reply is unknown [U]).
    pub max_recipients: Option<usize>,
    /// At end of DATA the header `From:` must be the authenticated mailbox
    /// or one of its [`send_as`](Self::send_as) addresses, else `550 5.7.60`.
    pub send_as_check: bool,
    /// Mailbox (lower case) → addresses it may send as (lower case).
    pub send_as: HashMap<String, Vec<String>>,
    /// The tenant's accepted domains (lower case): mx attribution, HVE's
    /// internal-only rule.
    pub accepted_domains: Vec<String>,
    /// `Some`: the directory of the accepted domains; other local
    /// recipients get `550 5.4.1` on the mx listener.
    pub known_recipients: Option<Vec<String>>,
    /// Recipients outside the accepted domains are refused at RCPT (HVE).
    pub internal_only: bool,
    /// mx: source addresses of an IP-based inbound connector.
    pub connector_ips: Vec<IpAddr>,
    /// mx: certificate names of a certificate-based inbound connector
    /// (`TlsSenderCertificateName`, e.g. `*.contoso.test` or `contoso.test`).
    pub connector_cert_domains: Vec<String>,
    /// CA file that verifies TLS client certificates; setting it makes the
    /// server ask for a client certificate.
    pub client_ca: Option<PathBuf>,
    /// mx: `Set-OrganizationConfig -RejectDirectSend $true`.
    pub reject_direct_send: bool,
    /// acs: how passwords are checked.
    pub acs: Option<AcsConfig>,
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
            .field("profile", &self.profile)
            .field("hostname", &self.hostname)
            .field("tls", &self.cert.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .field("auth_tls_floor", &self.auth_tls_floor)
            .field("require_auth", &self.require_auth)
            .field("auth_mechanisms", &self.auth_mechanisms)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("oauth", &self.oauth.is_some())
            .field("mailbox_concurrency_limit", &self.mailbox_concurrency_limit)
            .field("message_rate", &self.message_rate)
            .field("recipient_budget", &self.recipient_budget)
            .field("send_as_check", &self.send_as_check)
            .field("accepted_domains", &self.accepted_domains)
            .finish_non_exhaustive()
    }
}

impl FakeConfig {
    /// smtp.office365.com:587 (SMTP AUTH client submission): STARTTLS with
    /// `cert`, AUTH LOGIN XOAUTH2 only after TLS 1.2+, AUTH required, three
    /// sessions per mailbox, 30 messages/min per mailbox (counted, not
    /// refused), 10,000 recipients per 24 h per sender, 500 recipients per
    /// message. Send-as checking is off (turn it on with
    /// [`FakeConfig::send_as_check`]). No users yet: add them with
    /// [`FakeConfig::user`]; tokens with [`FakeConfig::accept_tokens_from`].
    pub fn office365(cert: &CertFiles) -> FakeConfig {
        FakeConfig {
            hostname: "PH0PR00MB0001.namprd00.prod.outlook.test".into(),
            cert: Some(cert.clone()),
            ..FakeConfig::base()
        }
    }

    /// The MX endpoint (Direct Send and connector relay): STARTTLS with
    /// `cert`, no AUTH ever, no mailbox limits. Recipients in
    /// [`accepted_domains`](Self::accepted_domains) are taken from anyone;
    /// others only from a session attributed to the tenant by its source
    /// address ([`connector_ip`](Self::connector_ip)) or by a verified TLS
    /// client certificate ([`connector_cert`](Self::connector_cert)),
    /// else `550 5.7.64 TenantAttribution; Relay Access Denied`.
    pub fn mx(cert: &CertFiles) -> FakeConfig {
        FakeConfig {
            profile: Profile::Mx,
            hostname: "VE1EUR01FT034.mail.protection.outlook.test".into(),
            cert: Some(cert.clone()),
            require_auth: false,
            auth_mechanisms: Vec::new(),
            mailbox_concurrency_limit: 0,
            message_rate: None,
            recipient_budget: None,
            max_recipients: None,
            ..FakeConfig::base()
        }
    }

    /// High Volume Email: like [`FakeConfig::office365`] for HVE accounts
    /// (users), but no message rate or recipient budget, recipients only in
    /// the accepted domains (when any are set), and with
    /// [`accept_tokens_from`](Self::accept_tokens_from) HVE's token rules
    /// (`Mail.Send`, `Add-HVEAppAccess`, the 5.5.12x/5.7.14x replies).
    pub fn hve(cert: &CertFiles) -> FakeConfig {
        FakeConfig {
            profile: Profile::Hve,
            hostname: "HV0PR00MB0001.namprd00.prod.outlook.test".into(),
            cert: Some(cert.clone()),
            message_rate: None,
            recipient_budget: None,
            internal_only: true,
            ..FakeConfig::base()
        }
    }

    /// Azure Communication Services: STARTTLS with `cert`, AUTH LOGIN only
    /// (XOAUTH2 not modelled), user `<resource>.<app id>.<tenant>` (or with
    /// `|`), password = the app's client secret, checked against a token
    /// endpoint ([`acs_tokens_from`](Self::acs_tokens_from)); 50 recipients
    /// per message. No concurrency limit (unknown).
    pub fn acs(cert: &CertFiles) -> FakeConfig {
        FakeConfig {
            profile: Profile::Acs,
            hostname: "smtp.azurecomm.test".into(),
            cert: Some(cert.clone()),
            auth_mechanisms: vec!["LOGIN".into()],
            mailbox_concurrency_limit: 0,
            recipient_budget: None,
            max_recipients: Some(50),
            greeting_id: false,
            ..FakeConfig::base()
        }
    }

    /// A generic smart host: no TLS, AUTH optional (PLAIN and LOGIN offered
    /// without TLS), no mailbox limits. Add TLS with [`FakeConfig::tls`].
    pub fn generic() -> FakeConfig {
        FakeConfig {
            profile: Profile::Generic,
            hostname: "smarthost.test".into(),
            require_auth: false,
            auth_requires_tls: false,
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            mailbox_concurrency_limit: 0,
            message_rate: None,
            recipient_budget: None,
            max_recipients: None,
            greeting_id: false,
            ..FakeConfig::base()
        }
    }

    /// Exchange Online's submission behaviour, without a certificate.
    fn base() -> FakeConfig {
        FakeConfig {
            profile: Profile::Submission,
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
            oauth: None,
            mailbox_concurrency_limit: EXO_MAILBOX_CONCURRENCY,
            message_rate: Some(EXO_MESSAGE_RATE),
            recipient_budget: Some(EXO_RECIPIENT_BUDGET),
            max_recipients: Some(EXO_RECIPIENT_LIMIT),
            send_as_check: false,
            send_as: HashMap::new(),
            accepted_domains: Vec::new(),
            known_recipients: None,
            internal_only: false,
            connector_ips: Vec::new(),
            connector_cert_domains: Vec::new(),
            client_ca: None,
            reject_direct_send: false,
            acs: None,
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

    /// Sets a custom XOAUTH2 decision (wins over the token policy).
    pub fn xoauth2(mut self, check: TokenCheck) -> FakeConfig {
        self.xoauth2 = Some(check);
        self
    }

    // ---- OAuth -----------------------------------------------------------

    /// Accepts access tokens `endpoint` signs, with Exchange's checks
    /// (§7): signature, `exp`, `aud` ∈ {outlook.office365.com,
    /// outlook.office.com, outlook.office365.us}; app tokens need `roles` ∋
    /// `SMTP.SendAsApp` (HVE: `Mail.Send` and [`hve_app_access`](Self::hve_app_access)),
    /// delegated tokens `scp` ∋ `SMTP.Send` and `upn` = `user=`.
    pub fn accept_tokens_from(mut self, endpoint: &FakeTokenEndpoint) -> FakeConfig {
        let v = endpoint.verifier();
        self.oauth = Some(match self.profile {
            Profile::Hve => Xoauth2Policy::hve(v),
            _ => Xoauth2Policy::exchange(v),
        });
        if !self.auth_mechanisms.iter().any(|m| m == "XOAUTH2") {
            self.auth_mechanisms.push("XOAUTH2".into());
        }
        self
    }

    /// Sets the token policy.
    pub fn oauth_policy(mut self, policy: Xoauth2Policy) -> FakeConfig {
        self.oauth = Some(policy);
        self
    }

    fn policy(&mut self) -> &mut Xoauth2Policy {
        self.oauth
            .as_mut()
            .expect("call accept_tokens_from before adjusting the token policy")
    }

    /// Only these apps have a service principal in Exchange
    /// (`New-ServicePrincipal`); call once per app, after
    /// [`accept_tokens_from`](Self::accept_tokens_from).
    ///
    /// # Panics
    /// Without a token policy.
    pub fn service_principal(mut self, app_id: &str) -> FakeConfig {
        self.policy()
            .service_principals
            .get_or_insert_with(Vec::new)
            .push(app_id.into());
        self
    }

    /// HVE: `Add-HVEAppAccess -Identity account -AppIds app_id`.
    ///
    /// # Panics
    /// Without a token policy.
    pub fn hve_app_access(mut self, account: &str, app_id: &str) -> FakeConfig {
        self.policy()
            .allowed_apps
            .get_or_insert_with(HashMap::new)
            .entry(account.to_ascii_lowercase())
            .or_default()
            .push(app_id.into());
        self
    }

    /// `upn` may use its delegated token as `user=mailbox` (FullAccess on
    /// a shared mailbox).
    ///
    /// # Panics
    /// Without a token policy.
    pub fn delegate(mut self, mailbox: &str, upn: &str) -> FakeConfig {
        self.policy()
            .delegates
            .entry(mailbox.to_ascii_lowercase())
            .or_default()
            .push(upn.into());
        self
    }

    // ---- limits ----------------------------------------------------------

    /// Sets the per-mailbox message rate (violations counted, mail accepted).
    pub fn message_rate(mut self, count: usize, period: Duration) -> FakeConfig {
        self.message_rate = Some(Window::new(count, period));
        self
    }

    /// Sets the rolling recipient budget per P2 sender.
    pub fn recipient_budget(mut self, count: usize, period: Duration) -> FakeConfig {
        self.recipient_budget = Some(Window::new(count, period));
        self
    }

    /// Sets the recipients-per-message limit.
    pub fn max_recipients(mut self, n: usize) -> FakeConfig {
        self.max_recipients = Some(n);
        self
    }

    /// Turns the header `From:` send-as check on or off.
    pub fn send_as_check(mut self, on: bool) -> FakeConfig {
        self.send_as_check = on;
        self
    }

    /// Lets `mailbox` send as `addresses` (`Add-RecipientPermission -AccessRights SendAs`).
    pub fn send_as(mut self, mailbox: &str, addresses: &[&str]) -> FakeConfig {
        self.send_as
            .entry(mailbox.to_ascii_lowercase())
            .or_default()
            .extend(addresses.iter().map(|a| a.to_ascii_lowercase()));
        self
    }

    // ---- tenant (mx, hve) ------------------------------------------------

    /// Adds an accepted domain.
    pub fn accepted_domain(mut self, domain: &str) -> FakeConfig {
        self.accepted_domains.push(domain.to_ascii_lowercase());
        self
    }

    /// Sets the directory: other recipients in accepted domains get
    /// `550 5.4.1` (mx).
    pub fn known_recipients(mut self, addrs: &[&str]) -> FakeConfig {
        self.known_recipients = Some(addrs.iter().map(|a| a.to_ascii_lowercase()).collect());
        self
    }

    /// mx: an inbound connector for this source address.
    pub fn connector_ip(mut self, ip: IpAddr) -> FakeConfig {
        self.connector_ips.push(ip);
        self
    }

    /// mx: an inbound connector for client certificates whose SAN or CN
    /// matches `name` (`contoso.test` or `*.contoso.test`), verified with
    /// `ca_file`.
    pub fn connector_cert(mut self, name: &str, ca_file: &Path) -> FakeConfig {
        self.connector_cert_domains.push(name.to_ascii_lowercase());
        self.client_ca = Some(ca_file.to_path_buf());
        self
    }

    /// mx: `RejectDirectSend`.
    pub fn reject_direct_send(mut self, on: bool) -> FakeConfig {
        self.reject_direct_send = on;
        self
    }

    // ---- acs -------------------------------------------------------------

    /// acs: the resource name, and the token endpoint that checks the
    /// client secrets (`client_credentials` for
    /// `https://communication.azure.com/.default`).
    pub fn acs_tokens_from(mut self, resource: &str, endpoint: &FakeTokenEndpoint) -> FakeConfig {
        self.acs = Some(AcsConfig {
            resource: resource.into(),
            token_base: endpoint.base_url(),
            scope: "https://communication.azure.com/.default".into(),
            senders: Vec::new(),
        });
        self
    }

    /// acs: a provisioned MailFrom address (once any is set, MAIL FROM
    /// must be one of them).
    ///
    /// # Panics
    /// Before [`acs_tokens_from`](Self::acs_tokens_from).
    pub fn acs_sender(mut self, addr: &str) -> FakeConfig {
        self.acs
            .as_mut()
            .expect("call acs_tokens_from first")
            .senders
            .push(addr.to_ascii_lowercase());
        self
    }

    /// True when STARTTLS is offered (TLS configured, not implicit).
    pub(crate) fn offers_starttls(&self) -> bool {
        self.cert.is_some() && !self.implicit_tls
    }

    /// True when `domain` is an accepted domain.
    pub(crate) fn accepts_domain(&self, domain: &str) -> bool {
        self.accepted_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

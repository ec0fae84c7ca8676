//! The delivery agent's view of main.cf: every `smtp_*` parameter it uses,
//! converted once into typed values (TLS level, SASL options, limits), so the
//! protocol code never parses strings.

use conf::Config;
use conf::tls::{ProtocolRange, TlsVersion, parse_protocols};
use std::net::IpAddr;
use std::time::Duration;

/// `smtp_tls_security_level`, with `dane` and `dane-only` mapped to what
/// postern implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsLevel {
    /// No TLS.
    None,
    /// Opportunistic TLS: STARTTLS when offered, no certificate checks.
    May,
    /// Mandatory TLS, no certificate checks.
    Encrypt,
    /// Mandatory TLS, trusted chain, certificate matches the server name.
    Verify,
    /// Mandatory TLS, trusted chain, certificate matches the next hop.
    Secure,
}

impl TlsLevel {
    /// Maps the parameter value; the second value is a warning to log.
    pub fn parse(s: &str) -> (TlsLevel, Option<String>) {
        match s {
            "none" => (TlsLevel::None, None),
            "encrypt" => (TlsLevel::Encrypt, None),
            "verify" => (TlsLevel::Verify, None),
            "secure" => (TlsLevel::Secure, None),
            "dane" => (
                TlsLevel::May,
                Some("smtp_tls_security_level = dane: postern does not implement DANE; using \"may\" (opportunistic TLS)".into()),
            ),
            "dane-only" => (
                TlsLevel::Encrypt,
                Some("smtp_tls_security_level = dane-only: postern does not implement DANE; using \"encrypt\" (mandatory TLS without certificate checks)".into()),
            ),
            _ => (TlsLevel::May, None),
        }
    }

    /// TLS is mandatory.
    pub fn required(self) -> bool {
        self >= TlsLevel::Encrypt
    }

    /// The certificate must be trusted and match.
    pub fn must_match(self) -> bool {
        self >= TlsLevel::Verify
    }
}

/// TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Security level.
    pub level: TlsLevel,
    /// Implicit TLS from connect (`smtp_tls_wrappermode`).
    pub wrappermode: bool,
    /// `smtp_tls_CAfile`.
    pub cafile: String,
    /// `smtp_tls_CApath`.
    pub capath: String,
    /// `smtp_tls_cert_file`.
    pub cert_file: String,
    /// `smtp_tls_key_file`.
    pub key_file: String,
    /// Protocols at the may level.
    pub protocols: ProtocolRange,
    /// Protocols at encrypt and above.
    pub mandatory_protocols: ProtocolRange,
    /// Cipher grade at the may level.
    pub ciphers: String,
    /// Cipher grade at encrypt and above.
    pub mandatory_ciphers: String,
    /// `smtp_tls_servername`: empty (no SNI), `hostname`, `nexthop` or a name.
    pub servername: String,
    /// Names a certificate must match at the verify level.
    pub verify_match: Vec<String>,
    /// Names a certificate must match at the secure level.
    pub secure_match: Vec<String>,
    /// `smtp_tls_loglevel`.
    pub loglevel: i64,
    /// `smtp_tls_note_starttls_offer`.
    pub note_starttls_offer: bool,
}

/// SASL settings.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// `smtp_sasl_auth_enable`.
    pub enable: bool,
    /// `smtp_sasl_mechanism_filter`, upper-cased; empty allows all.
    pub mechanism_filter: Vec<String>,
    /// `smtp_sasl_security_options`, lower-cased.
    pub security_options: Vec<String>,
    /// `smtp_sasl_tls_security_options`, lower-cased.
    pub tls_security_options: Vec<String>,
    /// `smtp_sender_dependent_authentication`.
    pub sender_dependent: bool,
}

/// Time limits of each protocol phase.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Greeting, EHLO/HELO and AUTH.
    pub helo: Duration,
    /// STARTTLS and the handshake.
    pub starttls: Duration,
    /// MAIL FROM.
    pub mail: Duration,
    /// RCPT TO.
    pub rcpt: Duration,
    /// DATA.
    pub data_init: Duration,
    /// Sending content.
    pub data_xfer: Duration,
    /// The reply to the end of the message.
    pub data_done: Duration,
    /// QUIT and RSET.
    pub quit: Duration,
}

/// Connection cache limits.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// `smtp_connection_cache_on_demand`.
    pub on_demand: bool,
    /// How long an idle session stays open.
    pub idle_limit: Duration,
    /// How long a session may be reused in total.
    pub reuse_time_limit: Duration,
    /// How many deliveries a session may carry (0: no limit).
    pub reuse_count_limit: u32,
}

/// Everything the delivery agent takes from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// EHLO/HELO name.
    pub helo_name: String,
    /// Phase time limits.
    pub timeouts: Timeouts,
    /// Treat a 5xx greeting as 4xx and try the next server.
    pub skip_5xx_greeting: bool,
    /// Send EHLO even when the greeting does not say ESMTP.
    pub always_send_ehlo: bool,
    /// Look addresses up in DNS.
    pub lookup_dns: bool,
    /// Look addresses up with the system resolver (getaddrinfo); tried after
    /// DNS when both are set and DNS finds nothing.
    pub lookup_native: bool,
    /// Use IPv4 addresses.
    pub ipv4: bool,
    /// Use IPv6 addresses.
    pub ipv6: bool,
    /// `smtp_address_preference`: any, ipv4 or ipv6.
    pub address_preference: String,
    /// Addresses tried per delivery (0: no limit).
    pub mx_address_limit: usize,
    /// Sessions tried per delivery (0: no limit).
    pub mx_session_limit: usize,
    /// Longest line sent before it is broken (0: no limit).
    pub line_length_limit: usize,
    /// The port when the next hop names none (`smtp_tcp_port`).
    pub default_port: u16,
    /// `smtp_bind_address`: the local IPv4 address to connect from.
    pub bind_address: Option<IpAddr>,
    /// `smtp_bind_address6`: the local IPv6 address to connect from.
    pub bind_address6: Option<IpAddr>,
    /// `smtp_bind_address_enforce`: a failed bind defers instead of
    /// connecting from any address.
    pub bind_enforce: bool,
    /// TLS.
    pub tls: TlsSettings,
    /// SASL.
    pub sasl: SaslSettings,
    /// Connection cache.
    pub cache: CacheSettings,
    /// Decimals in delay= fields.
    pub delay_resolution: u32,
    /// This machine's name, for maildir file names.
    pub myhostname: String,
}

fn protocols(cfg: &Config, name: &str) -> ProtocolRange {
    // Validated by conf::Config::build; the fallback only matters for a
    // Config built by hand in tests.
    parse_protocols(&cfg.get(name).unwrap_or_default()).unwrap_or(ProtocolRange {
        min: TlsVersion::Tls1_2,
        max: TlsVersion::Tls1_3,
    })
}

fn clamp(v: i64) -> usize {
    usize::try_from(v.max(0)).unwrap_or(usize::MAX)
}

impl Settings {
    /// Builds the settings; returns warnings to log (e.g. an unsupported
    /// TLS level that was mapped to another).
    pub fn from_config(cfg: &Config) -> (Settings, Vec<String>) {
        let mut warnings = Vec::new();
        let (level, warn) = TlsLevel::parse(&cfg.smtp_tls_security_level);
        warnings.extend(warn);
        let all = cfg.inet_protocols.iter().any(|p| p == "all") || cfg.inet_protocols.is_empty();
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        let s = Settings {
            helo_name: cfg.smtp_helo_name.clone(),
            timeouts: Timeouts {
                connect: cfg.smtp_connect_timeout,
                helo: cfg.smtp_helo_timeout,
                starttls: cfg.smtp_starttls_timeout,
                mail: cfg.smtp_mail_timeout,
                rcpt: cfg.smtp_rcpt_timeout,
                data_init: cfg.smtp_data_init_timeout,
                data_xfer: cfg.smtp_data_xfer_timeout,
                data_done: cfg.smtp_data_done_timeout,
                quit: cfg.smtp_quit_timeout,
            },
            skip_5xx_greeting: cfg.smtp_skip_5xx_greeting,
            always_send_ehlo: cfg.smtp_always_send_ehlo,
            lookup_dns: cfg.smtp_host_lookup.iter().any(|m| m == "dns")
                || cfg.smtp_host_lookup.is_empty(),
            lookup_native: cfg.smtp_host_lookup.iter().any(|m| m == "native"),
            ipv4: all || cfg.inet_protocols.iter().any(|p| p == "ipv4"),
            ipv6: all || cfg.inet_protocols.iter().any(|p| p == "ipv6"),
            address_preference: cfg.smtp_address_preference.clone(),
            mx_address_limit: clamp(cfg.smtp_mx_address_limit),
            mx_session_limit: clamp(cfg.smtp_mx_session_limit),
            line_length_limit: clamp(cfg.smtp_line_length_limit),
            // Validated by conf::Config::build (the fallbacks matter only
            // for a Config built by hand).
            default_port: conf::nexthop::service_port(&cfg.smtp_tcp_port).unwrap_or(25),
            bind_address: cfg
                .smtp_bind_address
                .parse::<IpAddr>()
                .ok()
                .filter(IpAddr::is_ipv4),
            bind_address6: cfg
                .smtp_bind_address6
                .parse::<IpAddr>()
                .ok()
                .filter(IpAddr::is_ipv6),
            bind_enforce: cfg.smtp_bind_address_enforce,
            tls: TlsSettings {
                level,
                wrappermode: cfg.smtp_tls_wrappermode,
                cafile: cfg.smtp_tls_cafile.clone(),
                capath: cfg.smtp_tls_capath.clone(),
                cert_file: cfg.smtp_tls_cert_file.clone(),
                key_file: cfg.smtp_tls_key_file.clone(),
                protocols: protocols(cfg, "smtp_tls_protocols"),
                mandatory_protocols: protocols(cfg, "smtp_tls_mandatory_protocols"),
                ciphers: cfg.smtp_tls_ciphers.clone(),
                mandatory_ciphers: cfg.smtp_tls_mandatory_ciphers.clone(),
                servername: cfg.smtp_tls_servername.clone(),
                verify_match: lower(&cfg.smtp_tls_verify_cert_match),
                secure_match: lower(&cfg.smtp_tls_secure_cert_match),
                loglevel: cfg.smtp_tls_loglevel,
                note_starttls_offer: cfg.smtp_tls_note_starttls_offer,
            },
            sasl: SaslSettings {
                enable: cfg.smtp_sasl_auth_enable,
                mechanism_filter: cfg
                    .smtp_sasl_mechanism_filter
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                security_options: lower(&cfg.smtp_sasl_security_options),
                tls_security_options: lower(&cfg.smtp_sasl_tls_security_options),
                sender_dependent: cfg.smtp_sender_dependent_authentication,
            },
            cache: CacheSettings {
                on_demand: cfg.smtp_connection_cache_on_demand,
                idle_limit: cfg.smtp_connection_cache_time_limit,
                reuse_time_limit: cfg.smtp_connection_reuse_time_limit,
                reuse_count_limit: u32::try_from(cfg.smtp_connection_reuse_count_limit.max(0))
                    .unwrap_or(u32::MAX),
            },
            delay_resolution: u32::try_from(cfg.delay_logging_resolution_limit.clamp(0, 6))
                .unwrap_or(2),
            myhostname: cfg.myhostname.clone(),
        };
        (s, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_levels() {
        let (s, w) = Settings::from_config(&Config::defaults());
        assert!(w.is_empty());
        assert_eq!(s.tls.level, TlsLevel::May);
        assert_eq!(s.tls.mandatory_protocols.min, TlsVersion::Tls1_2);
        assert_eq!(s.mx_session_limit, 2);
        assert_eq!(s.sasl.security_options, vec!["noplaintext", "noanonymous"]);
        assert!(s.lookup_dns && !s.lookup_native && s.ipv4 && s.ipv6);
        assert_eq!(
            (s.default_port, s.bind_address, s.bind_enforce),
            (25, None, false)
        );
        let mut c = Config::defaults();
        c.smtp_tcp_port = "submission".into();
        c.smtp_bind_address = "192.0.2.25".into();
        c.smtp_bind_address6 = "192.0.2.26".into();
        let (s, _) = Settings::from_config(&c);
        assert_eq!(s.default_port, 587);
        assert_eq!(s.bind_address, Some("192.0.2.25".parse().unwrap()));
        assert_eq!(s.bind_address6, None);
        assert_eq!(TlsLevel::parse("dane").0, TlsLevel::May);
        assert!(TlsLevel::parse("dane").1.unwrap().contains("DANE"));
        assert!(TlsLevel::Verify.must_match() && TlsLevel::Encrypt.required());
        assert!(!TlsLevel::May.required() && !TlsLevel::Encrypt.must_match());
    }
}

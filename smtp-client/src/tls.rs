//! TLS for the SMTP client (OpenSSL through tokio-openssl): the two client
//! contexts (the `may` level, and `encrypt` and above with the mandatory
//! protocols and ciphers), the handshake, and the certificate checks of the
//! `verify` and `secure` levels.
//!
//! As in Postfix, the handshake itself never fails on a certificate: the
//! chain's verification result and the name match are evaluated afterwards,
//! logged as `Untrusted`, `Trusted` or `Verified`, and enforced only at the
//! levels that require them.

use crate::settings::{TlsLevel, TlsSettings};
use conf::tls::{ProtocolRange, TlsVersion};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509, X509Ref, X509VerifyResult};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// How far the server's certificate was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The chain did not verify.
    Untrusted,
    /// The chain verified, the name was not checked or did not match.
    Trusted,
    /// The chain verified and the name matched.
    Verified,
}

/// What a completed handshake gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, ...
    pub protocol: String,
    /// OpenSSL cipher name.
    pub cipher: String,
    /// Secret bits used.
    pub bits: i32,
    /// Bits of the algorithm.
    pub alg_bits: i32,
    /// The certificate check.
    pub trust: Trust,
    /// Why the certificate is not verified, if it is not.
    pub problem: Option<String>,
}

/// The client contexts, built once at start.
#[derive(Debug)]
pub struct TlsEngine {
    may: Result<SslContext, String>,
    mandatory: Result<SslContext, String>,
}

fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Ssl2 | TlsVersion::Ssl3 | TlsVersion::Tls1 => SslVersion::TLS1,
        TlsVersion::Tls1_1 => SslVersion::TLS1_1,
        TlsVersion::Tls1_2 => SslVersion::TLS1_2,
        TlsVersion::Tls1_3 => SslVersion::TLS1_3,
    }
}

fn cipher_list(grade: &str) -> &'static str {
    match grade {
        "high" => "HIGH:!aNULL:!eNULL:!MD5",
        "low" | "export" => "HIGH:MEDIUM:LOW:!aNULL:!eNULL",
        "null" => "eNULL:!aNULL",
        _ => "HIGH:MEDIUM:!aNULL:!eNULL:!MD5",
    }
}

fn build(t: &TlsSettings, protocols: ProtocolRange, grade: &str) -> Result<SslContext, String> {
    let err = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {e}");
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| err("OpenSSL", e))?;
    b.set_options(SslOptions::NO_COMPRESSION);
    b.set_min_proto_version(Some(ssl_version(protocols.min)))
        .map_err(|e| err("smtp_tls_protocols", e))?;
    b.set_max_proto_version(Some(ssl_version(protocols.max)))
        .map_err(|e| err("smtp_tls_protocols", e))?;
    if protocols.min < TlsVersion::Tls1_2 {
        // OpenSSL 3 refuses TLS 1.0/1.1 at its default security level; the
        // admin asked for them explicitly.
        b.set_security_level(0);
    }
    b.set_cipher_list(cipher_list(grade))
        .map_err(|e| err("smtp_tls_ciphers", e))?;
    if t.cafile.is_empty() && t.capath.is_empty() {
        b.set_default_verify_paths()
            .map_err(|e| err("system trust store", e))?;
    } else {
        let file = (!t.cafile.is_empty()).then(|| Path::new(&t.cafile));
        let dir = (!t.capath.is_empty()).then(|| Path::new(&t.capath));
        b.load_verify_locations(file, dir).map_err(|e| {
            format!(
                "cannot load smtp_tls_CAfile = {} / smtp_tls_CApath = {}: {e}",
                t.cafile, t.capath
            )
        })?;
    }
    if !t.cert_file.is_empty() {
        // Read with std so an unreadable file says why in words
        // ("Permission denied"), not as an OpenSSL error stack.
        let read = |name: &str, path: &str| {
            std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read {name} = {path}: {}",
                    crate::connect::os_text(&e)
                )
            })
        };
        let pem = read("smtp_tls_cert_file", &t.cert_file)?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|e| {
                format!(
                    "smtp_tls_cert_file = {}: not a PEM certificate: {e}",
                    t.cert_file
                )
            })?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| format!("smtp_tls_cert_file = {}: no certificate in it", t.cert_file))?;
        b.set_certificate(&leaf)
            .map_err(|e| format!("smtp_tls_cert_file = {}: {e}", t.cert_file))?;
        for c in certs {
            b.add_extra_chain_cert(c)
                .map_err(|e| format!("smtp_tls_cert_file = {}: {e}", t.cert_file))?;
        }
        let key = if t.key_file.is_empty() {
            &t.cert_file
        } else {
            &t.key_file
        };
        let pem = read("smtp_tls_key_file", key)?;
        let pkey = PKey::private_key_from_pem(&pem)
            .map_err(|e| format!("smtp_tls_key_file = {key}: not a PEM private key: {e}"))?;
        let mismatch = |e: openssl::error::ErrorStack| {
            format!(
                "smtp_tls_key_file = {key} does not belong to smtp_tls_cert_file = {}: {e}",
                t.cert_file
            )
        };
        b.set_private_key(&pkey).map_err(mismatch)?;
        b.check_private_key().map_err(mismatch)?;
    }
    // Verification never stops the handshake: the result is read and
    // enforced afterwards, per security level (as Postfix does).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    Ok(b.build())
}

impl TlsEngine {
    /// Builds the contexts. A context that cannot be built (unreadable
    /// certificate, bad protocol range) is remembered as an error.
    pub fn new(t: &TlsSettings) -> TlsEngine {
        let may = build(t, t.protocols, &t.ciphers);
        // With the default settings both levels ask for the same context:
        // share it (a context holds its own copy of the system trust store,
        // 1.6 MiB per delivery agent).
        let mandatory = if t.protocols == t.mandatory_protocols && t.ciphers == t.mandatory_ciphers
        {
            may.clone()
        } else {
            build(t, t.mandatory_protocols, &t.mandatory_ciphers)
        };
        TlsEngine { may, mandatory }
    }

    /// Problems to log at start.
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Err(e) = &self.may {
            v.push(format!("TLS (may level) is unavailable: {e}"));
        }
        if let Err(e) = &self.mandatory {
            v.push(format!("TLS (encrypt level and above) is unavailable: {e}"));
        }
        v
    }

    /// The context for `level`.
    ///
    /// # Errors
    /// Why the context could not be built.
    pub fn context(&self, level: TlsLevel) -> Result<&SslContext, &str> {
        let c = if level.required() {
            &self.mandatory
        } else {
            &self.may
        };
        c.as_ref().map_err(String::as_str)
    }
}

/// The SNI name to send (`smtp_tls_servername`): none, the server's host
/// name, the next hop, or a literal name.
pub fn sni(t: &TlsSettings, host: &str, nexthop: &str) -> Option<String> {
    let name = match t.servername.as_str() {
        "" => return None,
        "hostname" => host,
        "nexthop" => nexthop,
        literal => literal,
    };
    // SNI carries host names only, never addresses.
    (name.parse::<std::net::IpAddr>().is_err() && !name.is_empty()).then(|| name.to_string())
}

/// Runs the client handshake within `limit`.
///
/// # Errors
/// The OpenSSL error, or a timeout, in words.
pub async fn handshake(
    tcp: TcpStream,
    ctx: &SslContext,
    sni: Option<&str>,
    limit: Duration,
) -> Result<SslStream<TcpStream>, String> {
    let mut ssl = Ssl::new(ctx).map_err(|e| e.to_string())?;
    if let Some(name) = sni {
        ssl.set_hostname(name).map_err(|e| e.to_string())?;
    }
    let mut s = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    match tokio::time::timeout(limit, Pin::new(&mut s).connect()).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(())) => Ok(s),
    }
}

/// The name patterns a certificate must match at `level`: `hostname` is
/// the server's name, `nexthop` the destination, `dot-nexthop` any
/// subdomain of it; other entries are literal names (`.example.com` for
/// subdomains).
pub fn match_patterns(t: &TlsSettings, level: TlsLevel, host: &str, nexthop: &str) -> Vec<String> {
    let list = match level {
        TlsLevel::Secure => &t.secure_match,
        _ => &t.verify_match,
    };
    list.iter()
        .map(|p| match p.as_str() {
            "hostname" => host.to_ascii_lowercase(),
            "nexthop" => nexthop.to_ascii_lowercase(),
            "dot-nexthop" => format!(".{}", nexthop.to_ascii_lowercase()),
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// One certificate name against one pattern (both lower case). A
/// wildcard `*.example.com` stands for exactly one label.
fn name_matches(cert_name: &str, pattern: &str) -> bool {
    if let Some(parent) = pattern.strip_prefix('.') {
        // Any subdomain of `parent`; a wildcard certificate for a
        // subdomain of it qualifies too.
        let name = cert_name.strip_prefix("*.").unwrap_or(cert_name);
        let subdomain = name.len() > parent.len() && name.ends_with(pattern);
        let wildcard_below_parent = cert_name.starts_with("*.") && name == parent;
        return subdomain || wildcard_below_parent;
    }
    if cert_name == pattern {
        return true;
    }
    match (cert_name.strip_prefix("*."), pattern.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && suffix == rest,
        _ => false,
    }
}

/// The DNS names of a certificate: its subjectAltName DNS entries, or its
/// common name when it has none.
pub fn cert_names(cert: &X509Ref) -> Vec<String> {
    let sans: Vec<String> = cert
        .subject_alt_names()
        .map(|s| {
            s.iter()
                .filter_map(|g| g.dnsname().map(|d| d.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
        .collect()
}

/// True when one of `names` matches one of `patterns`.
pub fn matches(names: &[String], patterns: &[String]) -> bool {
    names
        .iter()
        .any(|n| patterns.iter().any(|p| name_matches(n, p)))
}

/// Evaluates a finished handshake: protocol, cipher, and the certificate
/// against `patterns` (checked only when `level` requires a match).
pub fn evaluate(s: &SslStream<TcpStream>, level: TlsLevel, patterns: &[String]) -> TlsInfo {
    let ssl = s.ssl();
    let (cipher, bits, alg_bits) = ssl
        .current_cipher()
        .map(|c| (c.name().to_string(), c.bits().secret, c.bits().algorithm))
        .unwrap_or_else(|| ("unknown".into(), 0, 0));
    let cert = ssl.peer_certificate();
    let result = ssl.verify_result();
    let (trust, problem) = match &cert {
        None => (
            Trust::Untrusted,
            Some("the server presented no certificate".to_string()),
        ),
        Some(_) if result != X509VerifyResult::OK => (
            Trust::Untrusted,
            Some(format!("untrusted certificate: {}", result.error_string())),
        ),
        Some(c) if level.must_match() => {
            let names = cert_names(c);
            if matches(&names, patterns) {
                (Trust::Verified, None)
            } else {
                (
                    Trust::Trusted,
                    Some(format!(
                        "certificate names [{}] do not match [{}]",
                        names.join(", "),
                        patterns.join(", ")
                    )),
                )
            }
        }
        Some(_) => (Trust::Trusted, None),
    };
    TlsInfo {
        protocol: ssl.version_str().to_string(),
        cipher,
        bits,
        alg_bits,
        trust,
        problem,
    }
}

/// Postfix's summary line: `Verified TLS connection established to
/// host[addr]:port: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`
/// (`reused` instead of `established` for a cached session).
pub fn summary(namaddrport: &str, i: &TlsInfo, reused: bool) -> String {
    let trust = match i.trust {
        Trust::Untrusted => "Untrusted",
        Trust::Trusted => "Trusted",
        Trust::Verified => "Verified",
    };
    format!(
        "{trust} TLS connection {} to {namaddrport}: {} with cipher {} ({}/{} bits)",
        if reused { "reused" } else { "established" },
        i.protocol,
        i.cipher,
        i.bits,
        i.alg_bits
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pem() -> Vec<u8> {
        let g = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let k = PKey::from_ec_key(openssl::ec::EcKey::generate(&g).unwrap()).unwrap();
        k.private_key_to_pem_pkcs8().unwrap()
    }

    fn cert_pem(key: &[u8]) -> Vec<u8> {
        let k = PKey::private_key_from_pem(key).unwrap();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, "relay.contoso.test")
            .unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&k).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&k, openssl::hash::MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    #[test]
    fn client_certificate_files_and_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        let (key, other) = (key_pem(), key_pem());
        let f = |n: &str, d: &[u8]| {
            let p = dir.path().join(n);
            std::fs::write(&p, d).unwrap();
            p.display().to_string()
        };
        let (cert_file, key_file, other_file) = (
            f("relay.pem", &cert_pem(&key)),
            f("relay.key", &key),
            f("other.key", &other),
        );
        let mut s = crate::settings::Settings::from_config(&conf::Config::defaults()).0;
        s.tls.cert_file = cert_file.clone();
        s.tls.key_file = key_file;
        assert!(TlsEngine::new(&s.tls).problems().is_empty());
        // Certificate and key in one file.
        s.tls.key_file = String::new();
        let both = f("both.pem", &[cert_pem(&key), key.clone()].concat());
        s.tls.cert_file = both;
        // cert_pem(&key) made a new certificate for the same key.
        assert!(TlsEngine::new(&s.tls).problems().is_empty());
        s.tls.cert_file = cert_file.clone();
        s.tls.key_file = other_file.clone();
        let p = TlsEngine::new(&s.tls).problems();
        assert!(
            p[0].contains(&format!(
                "smtp_tls_key_file = {other_file} does not belong to smtp_tls_cert_file = {cert_file}"
            )),
            "{p:?}"
        );
        s.tls.key_file = "/nonexistent/relay.key".into();
        let p = TlsEngine::new(&s.tls).problems();
        assert!(
            p[0].ends_with(
                "cannot read smtp_tls_key_file = /nonexistent/relay.key: No such file or directory"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn name_matching() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(matches(
            &p(&["smtp.office365.com"]),
            &p(&["smtp.office365.com"])
        ));
        assert!(matches(
            &p(&["*.office365.com"]),
            &p(&["smtp.office365.com"])
        ));
        assert!(!matches(
            &p(&["*.office365.com"]),
            &p(&["a.b.office365.com"])
        ));
        assert!(!matches(&p(&["*.office365.com"]), &p(&["office365.com"])));
        assert!(matches(
            &p(&["mx1.example.com"]),
            &p(&["example.com", ".example.com"])
        ));
        assert!(!matches(&p(&["example.com.evil"]), &p(&[".example.com"])));
        assert!(matches(&p(&["*.example.com"]), &p(&[".example.com"])));
        assert!(!matches(
            &p(&["other.test"]),
            &p(&["example.com", ".example.com"])
        ));
    }

    #[test]
    fn patterns_and_sni() {
        let (s, _) = crate::settings::Settings::from_config(&conf::Config::defaults());
        let t = &s.tls;
        assert_eq!(
            match_patterns(t, TlsLevel::Verify, "MX.example.com", "example.com"),
            vec!["mx.example.com"]
        );
        assert_eq!(
            match_patterns(t, TlsLevel::Secure, "mx.example.com", "Example.com"),
            vec!["example.com", ".example.com"]
        );
        assert_eq!(sni(t, "mx", "example.com"), None);
        let mut t2 = t.clone();
        t2.servername = "hostname".into();
        assert_eq!(
            sni(&t2, "mx.example.com", "example.com").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(sni(&t2, "192.0.2.1", "x"), None);
        t2.servername = "nexthop".into();
        assert_eq!(
            sni(&t2, "mx.example.com", "example.com").as_deref(),
            Some("example.com")
        );
        t2.servername = "smtp.office365.com".into();
        assert_eq!(sni(&t2, "a", "b").as_deref(), Some("smtp.office365.com"));
    }

    #[test]
    fn bad_client_certificate_is_reported() {
        let (mut s, _) = crate::settings::Settings::from_config(&conf::Config::defaults());
        s.tls.cert_file = "/nonexistent/postern-client.pem".into();
        let e = TlsEngine::new(&s.tls);
        let p = e.problems();
        assert_eq!(p.len(), 2);
        assert!(
            p[0].contains(
                "cannot read smtp_tls_cert_file = /nonexistent/postern-client.pem: No such file or directory"
            ),
            "{p:?}"
        );
        assert!(e.context(TlsLevel::May).is_err());
    }
}

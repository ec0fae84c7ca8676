//! Server TLS: one OpenSSL context per listener, from its configuration
//! (master.cf `-o` overrides apply). When a listener allows TLS 1.0 or 1.1
//! for an old device, OpenSSL 3's default security level (which refuses
//! those protocols and SHA-1 signatures) is lowered for that listener only,
//! so the old device really connects; every other listener keeps TLS 1.2+.

use conf::tls::{TlsVersion, parse_protocols};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslOptions, SslRef, SslVersion};

/// The contexts of one listener.
pub struct Tls {
    /// For STARTTLS at the `may` level.
    pub opportunistic: SslAcceptor,
    /// For `encrypt` and wrapper mode.
    pub mandatory: SslAcceptor,
}

fn version(v: TlsVersion) -> Option<SslVersion> {
    match v {
        TlsVersion::Ssl2 | TlsVersion::Ssl3 => None,
        TlsVersion::Tls1 => Some(SslVersion::TLS1),
        TlsVersion::Tls1_1 => Some(SslVersion::TLS1_1),
        TlsVersion::Tls1_2 => Some(SslVersion::TLS1_2),
        TlsVersion::Tls1_3 => Some(SslVersion::TLS1_3),
    }
}

fn cipher_list(grade: &str, legacy: bool) -> String {
    let base = match grade {
        "high" => "HIGH:!aNULL:!MD5:!RC4",
        "low" | "export" | "null" => "ALL:!aNULL:!MD5",
        _ => "HIGH:MEDIUM:!aNULL:!MD5:!RC4",
    };
    if legacy {
        // TLS 1.0/1.1 clients need SHA-1 based suites, which OpenSSL 3
        // only allows at security level 0.
        format!("{base}:@SECLEVEL=0")
    } else {
        base.to_string()
    }
}

fn acceptor(cfg: &conf::Config, protocols: &str, grade: &str) -> Result<SslAcceptor, String> {
    let range =
        parse_protocols(protocols).map_err(|e| format!("TLS protocols \"{protocols}\": {e}"))?;
    let legacy = range.min < TlsVersion::Tls1_2;
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(version(range.min))
        .map_err(|e| e.to_string())?;
    b.set_max_proto_version(version(range.max))
        .map_err(|e| e.to_string())?;
    b.set_cipher_list(&cipher_list(grade, legacy))
        .map_err(|e| format!("cipher grade {grade}: {e}"))?;
    if legacy {
        // mozilla_intermediate_v5 switches the old protocols off by option
        // as well as by minimum version.
        b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
        b.set_security_level(0);
    }
    let key = if cfg.smtpd_tls_key_file.is_empty() {
        &cfg.smtpd_tls_cert_file
    } else {
        &cfg.smtpd_tls_key_file
    };
    check_key_file(key)?;
    b.set_certificate_chain_file(&cfg.smtpd_tls_cert_file)
        .map_err(|e| format!("smtpd_tls_cert_file {}: {e}", cfg.smtpd_tls_cert_file))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("smtpd_tls_key_file {key}: {e}"))?;
    b.check_private_key()
        .map_err(|e| format!("smtpd_tls_key_file {key} does not match smtpd_tls_cert_file: {e}"))?;
    // Old clients that cannot do session tickets or ALPN simply do not use them.
    Ok(b.build())
}

/// DESIGN §7 for the private key: owned by root (or by the user smtpd
/// was started as), not writable by its group and not accessible to other
/// users. Any group may read it (Debian's `ssl-cert` group is common).
fn check_key_file(path: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("smtpd_tls_key_file {path}: {e}"))?;
    let mode = m.mode() & 0o7777;
    let euid = nix::unistd::geteuid().as_raw();
    if m.uid() != 0 && m.uid() != euid {
        return Err(format!(
            "smtpd_tls_key_file {path}: a private key must belong to root (it belongs to uid {}); run: chown root {path}",
            m.uid()
        ));
    }
    if mode & 0o027 != 0 {
        return Err(format!(
            "smtpd_tls_key_file {path}: a private key must not be accessible to other users or writable by its group (mode {mode:04o}); run: chmod 600 {path}"
        ));
    }
    Ok(())
}

impl Tls {
    /// The listener's TLS, or `None` when TLS is off (`smtpd_tls_security_level = none`,
    /// or `may` without a certificate).
    ///
    /// # Errors
    /// A bad protocol list, or a certificate or key that cannot be used.
    pub fn new(cfg: &conf::Config) -> Result<Option<Tls>, String> {
        if cfg.smtpd_tls_security_level == "none" && !cfg.smtpd_tls_wrappermode {
            return Ok(None);
        }
        if cfg.smtpd_tls_cert_file.is_empty() {
            if cfg.smtpd_tls_security_level == "encrypt" || cfg.smtpd_tls_wrappermode {
                return Err(
                    "TLS is required (smtpd_tls_security_level = encrypt or smtpd_tls_wrappermode = yes) but smtpd_tls_cert_file is empty; make a certificate with 'postern tls new-cert'"
                        .into(),
                );
            }
            return Ok(None);
        }
        Ok(Some(Tls {
            opportunistic: acceptor(cfg, &cfg.smtpd_tls_protocols, &cfg.smtpd_tls_ciphers)?,
            mandatory: acceptor(
                cfg,
                &cfg.smtpd_tls_mandatory_protocols,
                &cfg.smtpd_tls_mandatory_ciphers,
            )?,
        }))
    }
}

/// What a finished handshake negotiated, for logs and the Received: header.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Secret bits used and available.
    pub bits: (i32, i32),
}

impl TlsInfo {
    /// Reads the negotiated parameters.
    pub fn of(ssl: &SslRef) -> TlsInfo {
        let (cipher, bits) = match ssl.current_cipher() {
            Some(c) => (c.name().to_string(), (c.bits().secret, c.bits().algorithm)),
            None => ("unknown".into(), (0, 0)),
        };
        TlsInfo {
            version: ssl.version_str().to_string(),
            cipher,
            bits,
        }
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, as Postfix logs it.
    pub fn describe(&self) -> String {
        format!(
            "{} with cipher {} ({}/{} bits)",
            self.version, self.cipher, self.bits.0, self.bits.1
        )
    }
}

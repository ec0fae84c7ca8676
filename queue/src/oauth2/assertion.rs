//! The signed client assertion of certificate credentials (Entra ID's
//! "certificate credentials"): a JWT signed RS256 with the application's
//! private key, naming the certificate by its SHA-1 (`x5t`) and SHA-256
//! (`x5t#S256`) thumbprints, for the token endpoint (`aud`), from and about
//! the client (`iss` = `sub` = client ID), unique (`jti`), valid from now
//! for ten minutes.

use super::error::OAuthError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an assertion is valid.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// The form value of `client_assertion_type`.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A certificate and its private key.
pub(crate) struct Credential {
    pub cert: X509,
    key: PKey<Private>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("cert", &self.cert.subject_name())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Loads the certificate (the first in `cert_file`) and its RSA private
/// key (`key_file`, which may be the same file, checked like every secret
/// file).
///
/// # Errors
/// A file is missing, unsafe or not PEM; the key is not RSA or does not
/// belong to the certificate; the certificate has expired.
pub(crate) fn load(
    cert_file: &Path,
    key_file: &Path,
    readers_gid: Option<u32>,
) -> Result<Credential, OAuthError> {
    let key_pem = super::files::read_checked(key_file, readers_gid, "private key")?;
    let cert_pem = if cert_file == key_file {
        key_pem.clone()
    } else {
        std::fs::read(cert_file).map_err(|e| {
            OAuthError::file(
                cert_file,
                format!("{}: cannot read the certificate: {e}", cert_file.display()),
            )
        })?
    };
    let cert = X509::from_pem(&cert_pem).map_err(|_| {
        OAuthError::file(
            cert_file,
            format!(
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                cert_file.display()
            ),
        )
    })?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|_| {
        OAuthError::file(
            key_file,
            format!(
                "{}: no unencrypted PEM private key in it",
                key_file.display()
            ),
        )
    })?;
    if key.id() != Id::RSA {
        return Err(OAuthError::file(
            key_file,
            format!(
                "{}: the key is not RSA; Entra ID signs certificate credentials with RSA keys (openssl req -x509 -newkey rsa:2048 ...)",
                key_file.display()
            ),
        ));
    }
    let matches = cert
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(OAuthError::file(
            key_file,
            format!(
                "{}: this private key does not belong to the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
        ));
    }
    if let Ok(now) = Asn1Time::days_from_now(0)
        && cert.not_after() < now
    {
        return Err(OAuthError::file(
            cert_file,
            format!(
                "{}: the certificate expired on {}; make a new one, upload it to the application in Entra ID and install it here",
                cert_file.display(),
                cert.not_after()
            ),
        ));
    }
    Ok(Credential { cert, key })
}

/// When a certificate stops being valid.
pub(crate) fn not_after(cert: &X509) -> Option<SystemTime> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(cert.not_after()).ok()?;
    let secs = i64::from(d.days) * 86400 + i64::from(d.secs);
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random (version 4) UUID, the usual form of `jti`.
fn uuid() -> String {
    let mut b = [0u8; 16];
    crate::id::fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = super::account::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Credential {
    /// A client assertion for `client_id` at token endpoint `audience`,
    /// issued at `now`.
    ///
    /// # Errors
    /// OpenSSL cannot hash or sign (the key is unusable).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<String, OAuthError> {
        let fail = |e: openssl::error::ErrorStack| OAuthError::Config {
            user: client_id.to_string(),
            message: format!("cannot sign the client assertion: {e}"),
        };
        let der = self.cert.to_der().map_err(fail)?;
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": b64(&openssl::sha::sha1(&der)),
            "x5t#S256": b64(&openssl::sha::sha256(&der)),
        });
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid(),
            "nbf": iat,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha256(), &self.key).map_err(fail)?;
        signer.update(signing_input.as_bytes()).map_err(fail)?;
        let sig = signer.sign_to_vec().map_err(fail)?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::bn::BigNum;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};

    /// A throw-away RSA key and self-signed certificate, as PEM, valid from
    /// `days_from` to `days_to` days from now.
    pub(crate) fn make_cert(days_from: i64, days_to: i64) -> (Vec<u8>, Vec<u8>) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "postern test app").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        b.set_not_before(&Asn1Time::from_unix(now + days_from * 86400).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now + days_to * 86400).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (
            b.build().to_pem().unwrap(),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    /// Checks a client assertion as Entra ID does: the RS256 signature with
    /// the certificate's public key, the thumbprints, and the claims.
    /// Returns the claims.
    pub(crate) fn verify(jwt: &str, cert_pem: &[u8]) -> serde_json::Value {
        let cert = X509::from_pem(cert_pem).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let der = cert.to_der().unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t"], b64(&openssl::sha::sha1(&der)));
        assert_eq!(header["x5t#S256"], b64(&openssl::sha::sha256(&der)));
        // Cross-check the thumbprints with OpenSSL's own certificate digest.
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(header["x5t"].as_str().unwrap())
                .unwrap(),
            cert.digest(MessageDigest::sha1()).unwrap().to_vec()
        );
        let public = cert.public_key().unwrap();
        let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
        v.update(format!("{}.{}", parts[0], parts[1]).as_bytes())
            .unwrap();
        assert!(v.verify(&sig).unwrap(), "the signature does not verify");
        claims
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        super::super::files::replace(&p, data, None, 0o600).unwrap();
        p
    }

    #[test]
    fn assertion_verifies_with_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make_cert(-1, 30);
        let c = write(dir.path(), "app.pem", &cert);
        let k = write(dir.path(), "app.key", &key);
        let gid = Some(nix::unistd::getegid().as_raw());
        let cred = load(&c, &k, gid).unwrap();
        let now = SystemTime::now();
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = cred.assertion("app-id", aud, now).unwrap();
        let claims = verify(&jwt, &cert);
        let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(claims["iat"], iat);
        assert_eq!(claims["nbf"], iat);
        assert_eq!(claims["exp"], iat + 600);
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 36);
        let again = verify(&cred.assertion("app-id", aud, now).unwrap(), &cert);
        assert_ne!(again["jti"], claims["jti"], "jti is unique");

        // Key and certificate in one file.
        let mut both = key.clone();
        both.extend_from_slice(&cert);
        let b = write(dir.path(), "both.pem", &both);
        let cred = load(&b, &b, gid).unwrap();
        verify(&cred.assertion("x", aud, now).unwrap(), &cert);
        let exp = not_after(&cred.cert).unwrap();
        let days = exp.duration_since(now).unwrap().as_secs() / 86400;
        assert!((29..=30).contains(&days), "{days}");
    }

    #[test]
    fn unusable_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let gid = Some(nix::unistd::getegid().as_raw());
        let (cert, key) = make_cert(-1, 30);
        let (_, other_key) = make_cert(-1, 30);
        let c = write(dir.path(), "app.pem", &cert);
        let k = write(dir.path(), "other.key", &other_key);
        let e = load(&c, &k, gid).unwrap_err().to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        let (old, old_key) = make_cert(-30, -1);
        let c2 = write(dir.path(), "old.pem", &old);
        let k2 = write(dir.path(), "old.key", &old_key);
        let e = load(&c2, &k2, gid).unwrap_err().to_string();
        assert!(e.contains("the certificate expired on"), "{e}");
        let k3 = write(dir.path(), "app.key", &key);
        std::fs::set_permissions(&k3, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let e = load(&c, &k3, gid).unwrap_err().to_string();
        assert!(e.contains("chmod"), "{e}");
        let e = load(&k, &k, gid).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let ec = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let k4 = write(
            dir.path(),
            "ec.key",
            &ec.private_key_to_pem_pkcs8().unwrap(),
        );
        let e = load(&c, &k4, gid).unwrap_err().to_string();
        assert!(e.contains("not RSA"), "{e}");
    }
}

//! Just enough JWS for the fake token endpoint and its clients: compact
//! serialisation, RS256 and PS256 with OpenSSL, certificate thumbprints
//! (`x5t`, `x5t#S256`) and Entra ID client assertions (OFFICE365.md §4.2,
//! Learn "certificate credentials").
//!
//! Tests use [`client_assertion`] for a valid assertion, or
//! [`assertion_header`] + [`assertion_claims`] + [`sign`] to break one on
//! purpose.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{HasPublic, PKeyRef, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::x509::X509Ref;
use serde_json::{Map, Value, json};

use crate::ca::CertFiles;

/// A JSON object: a JWT header or claim set.
pub type Claims = Map<String, Value>;

/// base64url without padding; decoding also takes padded input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// Decodes base64url (padding optional).
///
/// # Errors
/// Not base64url.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>> {
    B64URL.decode(s).context("not base64url")
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A signature algorithm Entra ID takes for client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (older docs, with `x5t`).
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 SHA-256, salt = 32 (current docs,
    /// with `x5t#S256`).
    PS256,
}

impl Alg {
    /// `RS256` or `PS256`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
        }
    }

    /// From a JWS `alg` value.
    pub fn from_name(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::RS256),
            "PS256" => Some(Alg::PS256),
            _ => None,
        }
    }
}

/// `x5t`: base64url of the SHA-1 of the certificate's DER.
///
/// # Errors
/// OpenSSL errors.
pub fn thumbprint_sha1(cert: &X509Ref) -> Result<String> {
    Ok(b64url(&hash(MessageDigest::sha1(), &cert.to_der()?)?))
}

/// `x5t#S256`: base64url of the SHA-256 of the certificate's DER.
///
/// # Errors
/// OpenSSL errors.
pub fn thumbprint_sha256(cert: &X509Ref) -> Result<String> {
    Ok(b64url(&hash(MessageDigest::sha256(), &cert.to_der()?)?))
}

/// Signs `claims` with `key` as a compact JWS. `header` is used as given
/// except that `alg` is set (and `typ` defaults to `JWT`).
///
/// # Errors
/// The key is not RSA, or OpenSSL fails.
pub fn sign(header: &Claims, claims: &Claims, key: &PKeyRef<Private>, alg: Alg) -> Result<String> {
    let mut header = header.clone();
    header.insert("alg".into(), json!(alg.name()));
    header.entry("typ").or_insert_with(|| json!("JWT"));
    let input = format!(
        "{}.{}",
        b64url(serde_json::to_string(&header)?.as_bytes()),
        b64url(serde_json::to_string(claims)?.as_bytes())
    );
    if key.rsa().is_err() {
        bail!("{} needs an RSA key", alg.name());
    }
    let mut s = Signer::new(MessageDigest::sha256(), key)?;
    if alg == Alg::PS256 {
        s.set_rsa_padding(Padding::PKCS1_PSS)?;
        s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
        s.set_rsa_mgf1_md(MessageDigest::sha256())?;
    }
    s.update(input.as_bytes())?;
    let sig = s.sign_to_vec()?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// A parsed (not yet verified) compact JWS.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The protected header.
    pub header: Claims,
    /// The claim set.
    pub claims: Claims,
    input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes `token` (three base64url parts, JSON objects).
    ///
    /// # Errors
    /// A text saying what is malformed.
    pub fn parse(token: &str) -> Result<Jwt, String> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [h, c, s] = parts[..] else {
            return Err(format!("{} parts, not 3", parts.len()));
        };
        let obj = |part: &str, what: &str| -> Result<Claims, String> {
            let bytes = b64url_decode(part).map_err(|_| format!("{what} is not base64url"))?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(format!("{what} is not a JSON object")),
            }
        };
        Ok(Jwt {
            header: obj(h, "header")?,
            claims: obj(c, "payload")?,
            input: format!("{h}.{c}"),
            signature: b64url_decode(s).map_err(|_| "signature is not base64url".to_string())?,
        })
    }

    /// The header's `alg`, if it is RS256 or PS256.
    pub fn alg(&self) -> Option<Alg> {
        self.header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_name)
    }

    /// A string header field.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric claim (seconds), also when sent as a float.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// True when the signature verifies with `key` under the header's `alg`
    /// (false for any other algorithm).
    pub fn verify<T: HasPublic>(&self, key: &PKeyRef<T>) -> bool {
        let Some(alg) = self.alg() else {
            return false;
        };
        let check = || -> Result<bool, openssl::error::ErrorStack> {
            let mut v = Verifier::new(MessageDigest::sha256(), key)?;
            if alg == Alg::PS256 {
                v.set_rsa_padding(Padding::PKCS1_PSS)?;
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                v.set_rsa_mgf1_md(MessageDigest::sha256())?;
            }
            v.update(self.input.as_bytes())?;
            v.verify(&self.signature)
        };
        key.rsa().is_ok() && check().unwrap_or(false)
    }
}

/// The header of a certificate assertion: `x5t` (RS256) or `x5t#S256`
/// (PS256) for `cert`.
///
/// # Errors
/// OpenSSL errors.
pub fn assertion_header(cert: &X509Ref, alg: Alg) -> Result<Claims> {
    let mut h = Claims::new();
    h.insert("typ".into(), json!("JWT"));
    match alg {
        Alg::RS256 => h.insert("x5t".into(), json!(thumbprint_sha1(cert)?)),
        Alg::PS256 => h.insert("x5t#S256".into(), json!(thumbprint_sha256(cert)?)),
    };
    Ok(h)
}

/// The claims of a client assertion as Entra ID wants them: `aud` = the
/// token endpoint URL, `iss` = `sub` = the client id, a fresh `jti`,
/// `nbf` = `iat` = now, `exp` = now + 10 min.
pub fn assertion_claims(client_id: &str, token_url: &str) -> Claims {
    let now = now();
    let mut c = Claims::new();
    c.insert("aud".into(), json!(token_url));
    c.insert("iss".into(), json!(client_id));
    c.insert("sub".into(), json!(client_id));
    c.insert("jti".into(), json!(guid()));
    c.insert("nbf".into(), json!(now));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + 600));
    c
}

/// A valid client assertion for `client_id` signed with `cert`'s key
/// (which must be RSA: `CertOptions { rsa: true, .. }`).
///
/// # Errors
/// Not an RSA key, or OpenSSL fails.
pub fn client_assertion(
    cert: &CertFiles,
    client_id: &str,
    token_url: &str,
    alg: Alg,
) -> Result<String> {
    sign(
        &assertion_header(&cert.cert, alg)?,
        &assertion_claims(client_id, token_url),
        &cert.key,
        alg,
    )
}

/// A random GUID in the usual 8-4-4-4-12 lower-case form.
pub fn guid() -> String {
    let mut b = [0u8; 16];
    // Fails only when OpenSSL's RNG cannot be seeded.
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL RNG");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `n` random bytes as base64url (opaque tokens and codes).
pub fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL RNG");
    b64url(&b)
}

/// Standard base64 (for XOAUTH2 blobs in tests).
pub fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;

    #[test]
    fn sign_and_verify_both_algorithms() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let claims = assertion_claims("app", "http://x/t/oauth2/v2.0/token");
        for alg in [Alg::RS256, Alg::PS256] {
            let t = sign(&Claims::new(), &claims, &key, alg).unwrap();
            let j = Jwt::parse(&t).unwrap();
            assert_eq!(j.alg(), Some(alg));
            assert!(j.verify(&key));
            assert!(!j.verify(&other));
            assert_eq!(j.claim_str("iss"), Some("app"));
        }
        assert!(Jwt::parse("a.b").is_err());
        assert!(Jwt::parse("e30.e30.!!").is_err());
        let g = guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
    }
}

//! A throw-away PKI for TLS tests: a CA, certificates it signs, and
//! certificates it does not (self-signed, wrong name, expired), all written
//! as PEM files.
//!
//! Keys are EC P-256 (fast to generate); [`CertOptions::rsa`] gives RSA 2048.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder};

/// The names the default server certificate of [`TestPki`] is valid for.
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "smtp.office365.test"];

/// A certificate with its key, in memory and as PEM files.
#[derive(Clone)]
pub struct CertFiles {
    /// The certificate alone (`<stem>.crt`).
    pub cert_file: PathBuf,
    /// The private key, PKCS#8 (`<stem>.key`).
    pub key_file: PathBuf,
    /// The certificate followed by its issuer's (`<stem>-chain.pem`); for a
    /// self-signed certificate, the certificate alone.
    pub chain_file: PathBuf,
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
    /// Issuer certificates to send after `cert` (empty when self-signed).
    pub chain: Vec<X509>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// How [`TestCa::issue_with`] makes a certificate.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Start of validity, in days relative to now (negative = past).
    pub not_before_days: i64,
    /// End of validity, in days relative to now (negative = already expired).
    pub not_after_days: i64,
    /// Also valid for TLS client authentication (certificate connectors).
    pub client_auth: bool,
    /// RSA 2048 instead of EC P-256.
    pub rsa: bool,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            not_before_days: -1,
            not_after_days: 365,
            client_auth: true,
            rsa: false,
        }
    }
}

impl CertOptions {
    /// A certificate that expired yesterday.
    pub fn expired() -> CertOptions {
        CertOptions {
            not_before_days: -30,
            not_after_days: -1,
            ..CertOptions::default()
        }
    }
}

/// A certificate authority whose certificate is written to `ca.pem`.
pub struct TestCa {
    dir: PathBuf,
    cert: X509,
    key: PKey<Private>,
    ca_file: PathBuf,
    serial: AtomicU32,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Creates a CA named `postern test CA` and writes `<dir>/ca.pem` (the
    /// directory is created if needed).
    ///
    /// # Errors
    /// OpenSSL or file errors.
    pub fn create(dir: &Path) -> Result<TestCa> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let key = new_key(false)?;
        let name = subject("postern test CA")?;
        let mut b = builder(&name, &name, &key, 1, -1, 3650)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        let cert = b.build();
        let ca_file = dir.join("ca.pem");
        write(&ca_file, &cert.to_pem()?, 0o644)?;
        Ok(TestCa {
            dir: dir.to_path_buf(),
            cert,
            key,
            ca_file,
            serial: AtomicU32::new(2),
        })
    }

    /// The CA certificate file (for `smtp_tls_CAfile`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a certificate for `names` (DNS names or IP addresses; the
    /// first is also the CN), valid for a year, and writes `<stem>.crt`,
    /// `<stem>.key` and `<stem>-chain.pem`.
    ///
    /// # Errors
    /// OpenSSL or file errors, or no names.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Result<CertFiles> {
        self.issue_with(stem, names, &CertOptions::default())
    }

    /// [`TestCa::issue`] with explicit validity, usage and key type.
    ///
    /// # Errors
    /// OpenSSL or file errors, or no names.
    pub fn issue_with(&self, stem: &str, names: &[&str], opts: &CertOptions) -> Result<CertFiles> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let key = new_key(opts.rsa)?;
        let name = subject(first_name(names)?)?;
        let mut b = builder(
            &name,
            self.cert.subject_name(),
            &key,
            serial,
            opts.not_before_days,
            opts.not_after_days,
        )?;
        leaf_extensions(&mut b, names, opts, Some(&self.cert))?;
        b.sign(&self.key, MessageDigest::sha256())?;
        let cert = b.build();
        write_files(&self.dir, stem, cert, key, vec![self.cert.clone()])
    }

    /// A self-signed certificate for `names`, trusted by nobody, written
    /// into this CA's directory like [`TestCa::issue`].
    ///
    /// # Errors
    /// OpenSSL or file errors, or no names.
    pub fn self_signed(&self, stem: &str, names: &[&str]) -> Result<CertFiles> {
        self_signed(&self.dir, stem, names)
    }
}

/// A self-signed certificate for `names` in `dir` (`<stem>.crt`,
/// `<stem>.key`, `<stem>-chain.pem`).
///
/// # Errors
/// OpenSSL or file errors, or no names.
pub fn self_signed(dir: &Path, stem: &str, names: &[&str]) -> Result<CertFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let opts = CertOptions::default();
    let key = new_key(false)?;
    let name = subject(first_name(names)?)?;
    let mut b = builder(&name, &name, &key, 1, -1, 365)?;
    leaf_extensions(&mut b, names, &opts, None)?;
    b.sign(&key, MessageDigest::sha256())?;
    write_files(dir, stem, b.build(), key, Vec::new())
}

/// The PKI most tests need: a CA and a server certificate for
/// [`SERVER_NAMES`], in one directory.
#[derive(Debug)]
pub struct TestPki {
    /// The CA.
    pub ca: TestCa,
    /// `server.crt`: signed by the CA for [`SERVER_NAMES`].
    pub server: CertFiles,
}

impl TestPki {
    /// Creates the CA and the server certificate in `dir`.
    ///
    /// # Errors
    /// OpenSSL or file errors.
    pub fn create(dir: &Path) -> Result<TestPki> {
        let ca = TestCa::create(dir)?;
        let server = ca.issue("server", SERVER_NAMES)?;
        Ok(TestPki { ca, server })
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> &Path {
        self.ca.ca_file()
    }

    /// A certificate signed by the CA but only for `wrong.example.test`.
    ///
    /// # Errors
    /// OpenSSL or file errors.
    pub fn wrong_name(&self) -> Result<CertFiles> {
        self.ca.issue("wrong-name", &["wrong.example.test"])
    }

    /// A self-signed certificate for [`SERVER_NAMES`] (untrusted).
    ///
    /// # Errors
    /// OpenSSL or file errors.
    pub fn untrusted(&self) -> Result<CertFiles> {
        self.ca.self_signed("untrusted", SERVER_NAMES)
    }

    /// A certificate for [`SERVER_NAMES`] that expired yesterday.
    ///
    /// # Errors
    /// OpenSSL or file errors.
    pub fn expired(&self) -> Result<CertFiles> {
        self.ca
            .issue_with("expired", SERVER_NAMES, &CertOptions::expired())
    }
}

fn first_name<'a>(names: &[&'a str]) -> Result<&'a str> {
    names
        .first()
        .copied()
        .context("a certificate needs at least one name")
}

fn new_key(rsa: bool) -> Result<PKey<Private>> {
    Ok(if rsa {
        PKey::from_rsa(Rsa::generate(2048)?)?
    } else {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        PKey::from_ec_key(EcKey::generate(&group)?)?
    })
}

fn subject(cn: &str) -> Result<X509Name> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_nid(Nid::ORGANIZATIONNAME, "postern tests")?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

fn days(d: i64) -> Result<Asn1Time> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs() as i64;
    Ok(Asn1Time::from_unix((now + d * 86_400) as libc::time_t)?)
}

fn builder(
    subject: &X509Name,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    serial: u32,
    not_before_days: i64,
    not_after_days: i64,
) -> Result<X509Builder> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial: Asn1Integer = BigNum::from_u32(serial)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    let (from, until) = (days(not_before_days)?, days(not_after_days)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    Ok(b)
}

fn leaf_extensions(
    b: &mut X509Builder,
    names: &[&str],
    opts: &CertOptions,
    issuer: Option<&X509>,
) -> Result<()> {
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    let mut eku = ExtendedKeyUsage::new();
    eku.server_auth();
    if opts.client_auth {
        eku.client_auth();
    }
    b.append_extension(eku.build()?)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let ext = san.build(&b.x509v3_context(issuer.map(|c| &**c), None))?;
    b.append_extension(ext)?;
    if let Some(ca) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(ca), None))?;
        b.append_extension(aki)?;
    }
    Ok(())
}

fn write_files(
    dir: &Path,
    stem: &str,
    cert: X509,
    key: PKey<Private>,
    chain: Vec<X509>,
) -> Result<CertFiles> {
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    let chain_file = dir.join(format!("{stem}-chain.pem"));
    write(&cert_file, &cert.to_pem()?, 0o644)?;
    write(&key_file, &key.private_key_to_pem_pkcs8()?, 0o600)?;
    let mut all = cert.to_pem()?;
    for c in &chain {
        all.extend_from_slice(&c.to_pem()?);
    }
    write(&chain_file, &all, 0o644)?;
    Ok(CertFiles {
        cert_file,
        key_file,
        chain_file,
        cert,
        key,
        chain,
    })
}

/// Writes a test PEM file: certificates readable by everyone (the daemons
/// may run as another user), keys 0600 as smtpd demands of a key (it loads
/// it before dropping privileges).
fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult};

    fn verify(ca: &X509, cert: &X509) -> X509VerifyResult {
        let mut sb = X509StoreBuilder::new().unwrap();
        sb.add_cert(ca.clone()).unwrap();
        let store = sb.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let chain = Stack::new().unwrap();
        ctx.init(&store, cert, &chain, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap()
    }

    #[test]
    fn issued_verifies_and_self_signed_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(dir.path()).unwrap();
        assert_eq!(
            verify(pki.ca.cert(), &pki.server.cert),
            X509VerifyResult::OK
        );
        assert_ne!(
            verify(pki.ca.cert(), &pki.untrusted().unwrap().cert),
            X509VerifyResult::OK
        );
        assert_ne!(
            verify(pki.ca.cert(), &pki.expired().unwrap().cert),
            X509VerifyResult::OK
        );
        let chain = std::fs::read_to_string(&pki.server.chain_file).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(pki.server.key_file.exists() && pki.ca_file().exists());
        let ips: Vec<_> = pki
            .server
            .cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.ipaddress().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(ips, vec![vec![127, 0, 0, 1]]);
    }
}

//! `postern check` on OAuth2 settings: the real binary on a real
//! configuration directory.

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `postern -c DIR check`: (exit code, stdout).
fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("-c")
        .arg(dir)
        .arg("check")
        .output()
        .expect("run postern check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn setup(extra: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {q}/queue\ndata_directory = {q}/data\n\
             relayhost = [smtp.office365.com]:587\n\
             smtp_tls_security_level = secure\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = static:scanner@contoso.com:xoauth2\n\
             smtp_oauth2_token_endpoint = https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token\n\
             smtp_oauth2_client_id = 11111111-2222-3333-4444-555555555555\n{extra}",
            q = p.display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("master.cf"), "").unwrap();
    d
}

fn write(path: &Path, text: &[u8], mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A self-signed certificate and key valid for `days` more days.
fn cert(days: u32) -> (Vec<u8>, Vec<u8>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "postern-app").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[test]
fn a_good_secret_setup_passes() {
    let d = setup("smtp_oauth2_client_secret_file = SECRET\n");
    let secret = d.path().join("oauth2_secret");
    let main = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        main.replace("SECRET", &secret.display().to_string()),
    )
    .unwrap();
    write(&secret, b"the-secret-value\n", 0o600);
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("OAuth2"), "{out}");
    assert!(!out.contains("the-secret-value"), "{out}");
}

#[test]
fn a_readable_secret_and_a_remote_http_endpoint_are_problems() {
    let d = setup("");
    let secret = d.path().join("oauth2_secret");
    write(&secret, b"the-secret-value\n", 0o644);
    let main = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        format!(
            "{main}smtp_oauth2_client_secret_file = {}\n",
            secret.display()
        ),
    )
    .unwrap();
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mode 644 lets other users read a secret; use chmod 600"),
        "{out}"
    );
    assert!(!out.contains("the-secret-value"), "{out}");

    let main = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        main.replace(
            "https://login.microsoftonline.com",
            "http://login.example.com",
        ),
    )
    .unwrap();
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "OAuth2 settings in main.cf: smtp_oauth2_token_endpoint http://login.example.com"
        ) && out.contains("plain http is allowed only on a loopback address"),
        "{out}"
    );
}

#[test]
fn certificate_expiry_and_missing_refresh_token_are_reported() {
    let d = setup("");
    let (pem, key) = cert(10);
    let cert_file = d.path().join("app.pem");
    let key_file = d.path().join("app.key");
    write(&cert_file, &pem, 0o644);
    write(&key_file, &key, 0o600);
    let main = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        format!(
            "{main}smtp_oauth2_client_certificate_file = {}\nsmtp_oauth2_client_key_file = {}\n\
             smtp_oauth2_refresh_token_file = {}/rt\nsmtp_tls_security_level = may\n",
            cert_file.display(),
            key_file.display(),
            d.path().display()
        ),
    )
    .unwrap();
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(
        out.contains("the certificate expires in 9 days")
            || out.contains("the certificate expires in 10 days"),
        "{out}"
    );
    assert!(
        out.contains("no refresh token yet; run postern oauth2 login MAILBOX"),
        "{out}"
    );
    assert!(
        out.contains("certificate is not verified (smtp_tls_security_level = may)"),
        "{out}"
    );
    // A key others can read is a problem.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("smtp_oauth2_client_key_file"), "{out}");
}

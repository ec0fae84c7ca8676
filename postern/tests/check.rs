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

/// A test DNS server (for the smart-host name checks) and the runtime it
/// runs on, shared by the tests: `smtp.office365.com` and
/// `relay.contoso.test` have addresses, `contoso.test` has an MX,
/// `broken.contoso.test` fails with SERVFAIL, everything else does not
/// exist.
fn dns() -> std::net::SocketAddr {
    static DNS: std::sync::OnceLock<(tokio::runtime::Runtime, std::net::SocketAddr)> =
        std::sync::OnceLock::new();
    DNS.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(postern_tests::dns::DnsServer::start(&[
            ("smtp.office365.com", "A", "52.98.1.2"),
            ("relay.contoso.test", "A", "10.0.0.25"),
            ("contoso.test", "MX", "10 relay.contoso.test"),
            ("broken.contoso.test", "SERVFAIL", ""),
        ]));
        (rt, server.addr)
    })
    .1
}

/// Runs `postern -c DIR check`: (exit code, stdout).
fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("-c")
        .arg(dir)
        .arg("check")
        .env("POSTERN_DNS_SERVER", dns().to_string())
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
    cert_between(
        Asn1Time::days_from_now(0).unwrap(),
        Asn1Time::days_from_now(days).unwrap(),
    )
}

/// A self-signed certificate (CN postern-app) valid from `from` to `to`.
fn cert_between(from: Asn1Time, to: Asn1Time) -> (Vec<u8>, Vec<u8>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "postern-app").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&from).unwrap();
    b.set_not_after(&to).unwrap();
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
fn the_client_secret_expiry_date_is_checked() {
    let secret_setup = |expires: &str| {
        let d = setup(&format!(
            "smtp_oauth2_client_secret_file = SECRET\nsmtp_oauth2_client_secret_expires = {expires}\n"
        ));
        let secret = d.path().join("oauth2_secret");
        let main = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
        std::fs::write(
            d.path().join("main.cf"),
            main.replace("SECRET", &secret.display().to_string()),
        )
        .unwrap();
        write(&secret, b"the-secret-value\n", 0o600);
        d
    };
    let day = |offset: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{}", now + offset * 86400), "+%F"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (code, out) = check(secret_setup(&day(400)).path());
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("client secret"), "{out}");
    let (code, out) = check(secret_setup(&day(10)).path());
    assert_eq!(code, 0, "warning only: {out}");
    assert!(out.contains("the client secret expires in"), "{out}");
    let (code, out) = check(secret_setup(&day(-2)).path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the client secret has expired"), "{out}");
    let (code, out) = check(secret_setup("next week").path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expected a date as YYYY-MM-DD"), "{out}");
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

/// A configuration without OAuth2: main.cf `extra`, a master.cf with the
/// smtp and relay clients.
fn plain_setup(extra: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {q}/queue\ndata_directory = {q}/data\n{extra}",
            q = p.display()
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("master.cf"),
        "smtp      unix  -       -       n       -       -       smtp\n\
         relay     unix  -       -       n       -       -       smtp\n",
    )
    .unwrap();
    d
}

fn append_main(dir: &Path, text: &str) {
    let main = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    std::fs::write(dir.join("main.cf"), format!("{main}{text}")).unwrap();
}

/// Lines of `out` starting with `prefix` (`error: `, `warning: `).
fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn smart_host_names_must_resolve() {
    let d = plain_setup("relayhost = [smtp.office365.com]:587\n");
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "{out}");
    assert!(lines(&out, "error: ").is_empty(), "{out}");

    // A relayhost that does not exist: an error naming it and main.cf's line.
    let d = plain_setup("relayhost = [smtp.office356.com]:587\n");
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    let errs = lines(&out, "error: ");
    assert_eq!(errs.len(), 1, "{out}");
    assert!(
        errs[0].contains("main.cf:3: relayhost = [smtp.office356.com]:587: smart host smtp.office356.com does not resolve: Name service error for name=smtp.office356.com type=A: Host not found"),
        "{out}"
    );

    // An address needs no lookup; a domain resolves through its MX.
    let d = plain_setup("relayhost = [192.0.2.1]:25\n");
    assert_eq!(check(d.path()).0, 0);
    let d = plain_setup("relayhost = contoso.test\n");
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn transport_and_sender_dependent_next_hops_must_resolve() {
    let d = plain_setup("");
    let transport = d.path().join("transport");
    std::fs::write(
        &transport,
        "# routes\ncontoso.test  smtp:[relay.contoso.test]:25\n\
         fabrikam.test relay:[nowhere.fabrikam.test]\n\
         example.test  error:5.1.1 no mail for example.test\n\
         lan.test      smtp:[10.1.2.3]\n",
    )
    .unwrap();
    let sdr = d.path().join("sender_relay");
    std::fs::write(
        &sdr,
        "@contoso.test [smtp.office365.com]:587\n@fabrikam.test [gone.fabrikam.test]:587\n",
    )
    .unwrap();
    append_main(
        d.path(),
        &format!(
            "transport_maps = texthash:{}\nsender_dependent_relayhost_maps = texthash:{}\n",
            transport.display(),
            sdr.display()
        ),
    );
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    let errs = lines(&out, "error: ");
    assert_eq!(errs.len(), 2, "{out}");
    assert!(
        errs.iter().any(|e| e.contains(&format!(
            "{}:3: transport_maps fabrikam.test relay:[nowhere.fabrikam.test]: smart host nowhere.fabrikam.test does not resolve",
            transport.display()
        ))),
        "{out}"
    );
    assert!(
        errs.iter().any(|e| e.contains(&format!(
            "{}:2: sender_dependent_relayhost_maps @fabrikam.test [gone.fabrikam.test]:587: smart host gone.fabrikam.test does not resolve",
            sdr.display()
        ))),
        "{out}"
    );
}

#[test]
fn a_name_server_failure_is_a_warning_not_an_error() {
    let d = plain_setup("relayhost = [broken.contoso.test]:587\n");
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "{out}");
    let warns = lines(&out, "warning: ");
    assert!(
        warns.iter().any(
            |w| w.contains("cannot resolve smart host broken.contoso.test now")
                && w.contains("Host not found, try again")
        ),
        "{out}"
    );
}

#[test]
fn tls_certificates_expired_or_about_to_expire_are_reported() {
    let d = plain_setup("");
    let (soon, soon_key) = cert(10);
    let (old, old_key) = cert_between(
        Asn1Time::from_unix(1_600_000_000).unwrap(),
        Asn1Time::from_unix(1_700_000_000).unwrap(),
    );
    let (good, good_key) = cert(365);
    for (name, pem, key) in [
        ("soon", &soon, &soon_key),
        ("old", &old, &old_key),
        ("good", &good, &good_key),
    ] {
        write(&d.path().join(format!("{name}.pem")), pem, 0o644);
        write(&d.path().join(format!("{name}.key")), key, 0o600);
    }
    let p = |n: &str| d.path().join(n).display().to_string();
    append_main(
        d.path(),
        &format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
            p("soon.pem"),
            p("soon.key")
        ),
    );
    let (code, out) = check(d.path());
    assert_eq!(code, 0, "a warning only: {out}");
    assert!(
        lines(&out, "warning: ").iter().any(|w| w.contains(&format!(
            "smtpd_tls_cert_file = {}: the certificate for postern-app expires in",
            p("soon.pem")
        )) && (w.contains(" 9 days")
            || w.contains(" 10 days"))),
        "{out}"
    );

    // An expired client certificate (a certificate-based connector) and
    // an expired server certificate on one listener: errors.
    append_main(
        d.path(),
        &format!(
            "smtp_tls_cert_file = {}\nsmtp_tls_key_file = {}\n",
            p("old.pem"),
            p("old.key")
        ),
    );
    let master = std::fs::read_to_string(d.path().join("master.cf")).unwrap();
    std::fs::write(
        d.path().join("master.cf"),
        format!(
            "{master}127.0.0.1:2525 inet n - n - - smtpd\n  -o smtpd_tls_cert_file={}\n",
            p("old.pem")
        ),
    )
    .unwrap();
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    let errs = lines(&out, "error: ");
    assert!(
        errs.iter().any(|e| e.contains(&format!(
            "smtp_tls_cert_file = {}: the certificate for postern-app expired on",
            p("old.pem")
        ))),
        "{out}"
    );
    assert!(
        errs.iter().any(|e| e
            .contains("master.cf:3: service 127.0.0.1:2525: -o smtpd_tls_cert_file=")
            && e.contains("expired on")),
        "{out}"
    );

    // Not a certificate at all.
    let d = plain_setup("");
    write(&d.path().join("junk.pem"), b"not a certificate\n", 0o644);
    append_main(
        d.path(),
        &format!("smtpd_tls_cert_file = {}/junk.pem\n", d.path().display()),
    );
    let (code, out) = check(d.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("junk.pem: not a PEM certificate"), "{out}");
}

//! TLS on the LAN side: STARTTLS, implicit TLS (the CRM on "SSL"), and TLS
//! 1.0 only on the listener where the admin allowed it.

use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn tls_env() -> (TestEnv, postern_tests::fake::FakeSmartHost) {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let cert = env.pki.server.cert_file.display().to_string();
    let key = env.pki.server.key_file.display().to_string();
    env.set_many(&[("smtpd_tls_cert_file", &cert), ("smtpd_tls_key_file", &key)])
        .unwrap();
    (env, fake)
}

/// `openssl s_client` with the given protocol options; true when the
/// handshake completed.
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client")
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"QUIT\r\n");
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

#[test]
fn tls_1_0_only_where_the_admin_enabled_it() {
    let (mut env, _fake) = tls_env();
    let modern = env.add_smtpd(&[]).unwrap();
    let legacy = env
        .add_smtpd(&[
            "smtpd_tls_protocols=>=TLSv1",
            "smtpd_tls_mandatory_protocols=>=TLSv1",
            "syslog_name=postern/legacy",
        ])
        .unwrap();
    env.start().unwrap();
    let old = [
        "-starttls",
        "smtp",
        "-tls1",
        "-cipher",
        "DEFAULT@SECLEVEL=0",
    ];
    let (ok, text) = s_client(legacy, &old);
    assert!(ok, "TLS 1.0 refused on the legacy listener:\n{text}");
    assert!(
        text.contains("Protocol  : TLSv1\n") || text.contains("TLSv1, Cipher"),
        "{text}"
    );
    let (ok, text) = s_client(modern, &old);
    assert!(!ok, "TLS 1.0 accepted on the default listener:\n{text}");
    // Modern clients work on both.
    for p in [modern, legacy] {
        let (ok, text) = s_client(p, &["-starttls", "smtp"]);
        assert!(ok, "{text}");
    }
    env.wait_log(re(r"postern/legacy/smtpd\[\d+\]: Anonymous TLS connection established from .*: TLSv1 with cipher "), WAIT).unwrap();
    env.wait_log(re(r"postern/smtpd\[\d+\]: Anonymous TLS connection established from .*: TLSv1\.3 with cipher TLS_"), WAIT).unwrap();
}

#[test]
fn implicit_tls_and_starttls_deliver() {
    let (mut env, fake) = tls_env();
    let plain = env.add_smtpd(&[]).unwrap();
    let smtps = env.add_smtpd(&["smtpd_tls_wrappermode=yes"]).unwrap();
    env.start().unwrap();
    // STARTTLS
    let (mut c, _) = Smtp::connect(plain, None).unwrap();
    c.cmd("EHLO app").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO app").unwrap();
    c.cmd("MAIL FROM:<app@contoso.test>").unwrap();
    c.cmd("RCPT TO:<a@contoso.test>").unwrap();
    c.cmd("DATA").unwrap();
    c.send(b"Subject: starttls\r\n\r\nx\r\n.\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.cmd("QUIT").unwrap();
    // Implicit TLS, as an old CRM "SSL" setting does, and with Python.
    let mut c = Smtp::connect_raw(smtps, None).unwrap();
    c.wrap_tls().unwrap();
    assert_eq!(c.reply().unwrap().code, 220);
    c.cmd("EHLO crm").unwrap();
    c.cmd("MAIL FROM:<crm@contoso.test>").unwrap();
    c.cmd("RCPT TO:<b@contoso.test>").unwrap();
    c.cmd("DATA").unwrap();
    c.send(b"Subject: smtps\r\n\r\nx\r\n.\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.cmd("QUIT").unwrap();
    let script = format!(
        "import smtplib, ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\nwith smtplib.SMTP_SSL('127.0.0.1', {smtps}, context=ctx) as s:\n    s.sendmail('py@contoso.test', ['c@contoso.test'], 'Subject: python smtps\\r\\n\\r\\nx\\r\\n')\nwith smtplib.SMTP('127.0.0.1', {plain}) as s:\n    s.starttls(context=ctx)\n    s.sendmail('py@contoso.test', ['d@contoso.test'], 'Subject: python starttls\\r\\n\\r\\nx\\r\\n')\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = fake.wait_messages(4, WAIT).unwrap();
    assert!(
        msgs.iter().all(|m| m.text().contains("with ESMTPS id")),
        "TLS sessions are ESMTPS"
    );
}

/// A private key other users can read is refused with the command that
/// fixes it; the service does not run with it.
#[test]
fn a_world_readable_key_is_refused() {
    let (mut env, _fake) = tls_env();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        &env.pki.server.key_file,
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    env.wait_log(
        re(r"postern/smtpd\[\d+\]: fatal: smtpd_tls_key_file .*server\.key: a private key must not be accessible to other users or writable by its group \(mode 0644\); run: chmod 600 "),
        WAIT,
    )
    .unwrap();
}

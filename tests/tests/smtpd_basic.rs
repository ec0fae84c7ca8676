//! smtpd end to end: a plain session, pipelining, BDAT, the Received:
//! header, log lines, size limits; swaks and Python's smtplib as real
//! clients.

use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn setup(overrides: &[&str]) -> (TestEnv, postern_tests::fake::FakeSmartHost, u16) {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = env.add_smtpd(overrides).unwrap();
    env.start().unwrap();
    (env, fake, port)
}

#[test]
fn a_scanner_sends_plain_smtp_and_the_message_is_relayed() {
    let (env, fake, port) = setup(&[]);
    let (mut c, greeting) = Smtp::connect(port, None).unwrap();
    assert_eq!(greeting.code, 220);
    assert!(
        greeting
            .text
            .starts_with("relay.test.example ESMTP postern"),
        "{greeting}"
    );
    let ehlo = c.cmd("EHLO scanner.lan").unwrap();
    assert_eq!(ehlo.code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 10240000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
    ] {
        assert!(
            ehlo.text.lines().any(|l| l == ext),
            "EHLO lacks {ext}: {ehlo}"
        );
    }
    assert!(
        !ehlo.text.contains("AUTH"),
        "AUTH must not be offered without TLS: {ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<scan@contoso.test>").unwrap().text,
        "2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@contoso.test>").unwrap().text,
        "2.1.5 Ok"
    );
    let r = c.cmd("DATA").unwrap();
    assert_eq!(r.code, 354, "{r}");
    c.send(b"From: scan@contoso.test\r\nSubject: scan\r\n\r\npage 1\r\n..dotted\r\n.\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert_eq!(r.code, 250, "{r}");
    let id = r
        .text
        .strip_prefix("2.0.0 Ok: queued as ")
        .expect("queued as")
        .to_string();
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);
    let m = fake.wait_messages(1, WAIT).unwrap();
    let text = m[0].text();
    assert!(
        re(&format!(r"^Received: from scanner\.lan \((localhost|unknown) \[127\.0\.0\.1\]\)\r\n\tby relay\.test\.example \(postern\) with ESMTP id {id}\r\n\tfor <bob@contoso\.test>; ")).matches(&text),
        "{text}"
    );
    // mynetworks clients are local_header_rewrite_clients: missing headers are added.
    assert!(
        text.contains("\r\nFrom: scan@contoso.test\r\nSubject: scan\r\nMessage-Id: <"),
        "{text}"
    );
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(text.contains("\r\n\r\npage 1\r\n.dotted\r\n"), "{text}");
    // Postfix-format log lines.
    env.wait_log(re(r"postern/smtpd\[\d+\]: disconnect from (localhost|unknown)\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"), WAIT).unwrap();
    let log = env.log_text();
    assert!(
        re(r"postern/smtpd\[\d+\]: connect from (localhost|unknown)\[127\.0\.0\.1\]").matches(&log),
        "{log}"
    );
    assert!(log.contains(&format!("{id}: client=")), "{log}");
    assert!(log.contains(&format!("{id}: message-id=<")), "{log}");
    env.wait_log(&*format!("{id}: removed"), WAIT).unwrap();
}

#[test]
fn pipelining_in_one_write_and_bdat() {
    let (_env, fake, port) = setup(&[]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO app.lan").unwrap();
    // Everything in one write; replies come back in order.
    c.send(b"MAIL FROM:<app@contoso.test>\r\nRCPT TO:<a@contoso.test>\r\nRCPT TO:<b@contoso.test>\r\nDATA\r\n").unwrap();
    let codes: Vec<u16> = (0..4).map(|_| c.reply().unwrap().code).collect();
    assert_eq!(codes, vec![250, 250, 250, 354]);
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<app@contoso.test>\r\nRCPT TO:<c@contoso.test>\r\nBDAT 22\r\nSubject: chunked\r\n\r\nab").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.reply().unwrap().code, 250);
    let r = c.reply().unwrap();
    assert_eq!(r.text, "2.0.0 Ok: 22 bytes", "{r}");
    c.send(b"BDAT 4 LAST\r\ncd\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(r.text.starts_with("2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT").unwrap();
    let msgs = fake.wait_messages(2, WAIT).unwrap();
    let chunked = msgs
        .iter()
        .find(|m| m.text().contains("Subject: chunked"))
        .expect("the BDAT message");
    assert!(
        chunked.text().ends_with("\r\n\r\nabcd\r\n"),
        "{}",
        chunked.text()
    );
}

#[test]
fn size_limit_and_protocol_errors() {
    let (env, _fake, port) = setup(&["message_size_limit=2000"]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO x").unwrap();
    let r = c.cmd("MAIL FROM:<a@contoso.test> SIZE=5000").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (552, "5.3.4 Message size exceeds fixed limit")
    );
    assert_eq!(
        c.cmd("RCPT TO:<b@contoso.test>").unwrap().text,
        "5.5.1 Error: need MAIL command"
    );
    assert_eq!(c.cmd("DATA").unwrap().code, 503);
    c.cmd("MAIL FROM:<a@contoso.test>").unwrap();
    assert_eq!(
        c.cmd("MAIL FROM:<a@contoso.test>").unwrap().text,
        "5.5.1 Error: nested MAIL command"
    );
    c.cmd("RCPT TO:<b@contoso.test>").unwrap();
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(5000));
    c.send(big.as_bytes()).unwrap();
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (552, "5.3.4 Error: message file too big")
    );
    assert_eq!(
        c.cmd("BOGUS").unwrap().text,
        "5.5.2 Error: command not recognized"
    );
    assert_eq!(
        c.cmd("VRFY root").unwrap().text,
        "5.5.1 VRFY command is disabled"
    );
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);
    env.wait_log(re(r"disconnect from .* ehlo=1 mail=1/3 rcpt=1/2 data=0/2 vrfy=0/1 quit=1 unknown=0/1 commands=4/11"), WAIT).unwrap();
    // Nothing partial is left in the queue.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        env.queue_files("incoming").is_empty(),
        "{:?}",
        env.queue_files("incoming")
    );
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn swaks_plain_and_pipelined() {
    if !have("swaks") {
        panic!("swaks is not installed: apt-get install swaks (.ci/run installs it)");
    }
    let (_env, fake, port) = setup(&[]);
    for extra in [&[][..], &["--pipeline"][..]] {
        let mut cmd = std::process::Command::new("swaks");
        cmd.args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--from",
            "app@contoso.test",
            "--to",
            "bob@contoso.test",
            "--helo",
            "app.lan",
            "--silent",
            "2",
        ]);
        cmd.args(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "swaks {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fake.wait_messages(2, WAIT).unwrap();
}

#[test]
fn python_smtplib_sends() {
    let (_env, fake, port) = setup(&[]);
    let script = format!(
        "import smtplib\nfrom email.message import EmailMessage\nm = EmailMessage()\nm['From'] = 'crm@contoso.test'\nm['To'] = 'bob@contoso.test'\nm['Subject'] = 'from python'\nm.set_content('hello from smtplib')\nwith smtplib.SMTP('127.0.0.1', {port}) as s:\n    s.send_message(m)\n"
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
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert!(m[0].text().contains("hello from smtplib"));
}

/// An unfinished BDAT message is dropped by RSET: a later BDAT LAST starts
/// a new message for the new recipients, and DATA in the middle of BDAT
/// is refused.
#[test]
fn rset_drops_an_unfinished_bdat_message() {
    let (_env, fake, port) = setup(&[]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO app.lan").unwrap();
    c.cmd("MAIL FROM:<app@contoso.test>").unwrap();
    c.cmd("RCPT TO:<old@contoso.test>").unwrap();
    c.send(b"BDAT 20\r\nSubject: abandoned\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    let r = c.cmd("DATA").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (503, "5.5.1 Error: DATA after BDAT")
    );
    assert_eq!(c.cmd("RSET").unwrap().code, 250);
    c.cmd("MAIL FROM:<app@contoso.test>").unwrap();
    c.cmd("RCPT TO:<new@contoso.test>").unwrap();
    c.send(b"BDAT 22 LAST\r\nSubject: fresh\r\n\r\nhi\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert!(r.text.starts_with("2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT").unwrap();
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].rcpt_to, vec!["new@contoso.test"]);
    let text = m[0].text();
    assert!(
        !text.contains("abandoned") && text.contains("Subject: fresh"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.messages().len(), 1, "{}", fake.summary());
}

/// reject_unauth_pipelining: a client that sends MAIL and RCPT before the
/// EHLO reply is refused; one that waits for it may pipeline the rest.
#[test]
fn reject_unauth_pipelining_refuses_clients_that_do_not_wait() {
    let (env, _fake, port) = setup(&[
        "smtpd_recipient_restrictions=reject_unauth_pipelining,permit_mynetworks,reject_unauth_destination",
    ]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.send(b"EHLO bot\r\nMAIL FROM:<bot@contoso.test>\r\nRCPT TO:<x@contoso.test>\r\n")
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.reply().unwrap().code, 250);
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (
            503,
            "5.5.0 <x@contoso.test>: Recipient address rejected: Improper use of SMTP command pipelining"
        )
    );
    c.cmd("QUIT").unwrap();
    env.wait_log(re(r"improper command pipelining after EHLO from (localhost|unknown)\[127\.0\.0\.1\]: MAIL FROM:<bot@contoso\.test>\?\?RCPT"), WAIT).unwrap();
    // A proper client: waits for the EHLO reply, then pipelines.
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO app").unwrap();
    c.send(b"MAIL FROM:<app@contoso.test>\r\nRCPT TO:<x@contoso.test>\r\nDATA\r\n")
        .unwrap();
    let codes: Vec<u16> = (0..3).map(|_| c.reply().unwrap().code).collect();
    assert_eq!(codes, vec![250, 250, 354]);
    c.send(b"Subject: ok\r\n\r\nx\r\n.\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
}

/// An idle client is told and dropped after smtpd_timeout.
#[test]
fn idle_client_times_out() {
    let (env, _fake, port) = setup(&["smtpd_timeout=2s"]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO sleepy").unwrap();
    let started = std::time::Instant::now();
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (421, "4.4.2 relay.test.example Error: timeout exceeded")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    env.wait_log(
        re(r"timeout after EHLO from (localhost|unknown)\[127\.0\.0\.1\]"),
        WAIT,
    )
    .unwrap();
}

/// smtpd_hard_error_limit: the client is told and disconnected.
#[test]
fn too_many_errors_disconnect() {
    let (env, _fake, port) = setup(&[
        "smtpd_hard_error_limit=3",
        "smtpd_soft_error_limit=1",
        "smtpd_error_sleep_time=0",
    ]);
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO noisy").unwrap();
    assert_eq!(c.cmd("BOGUS 1").unwrap().code, 502);
    assert_eq!(c.cmd("BOGUS 2").unwrap().code, 502);
    c.send(b"BOGUS 3\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 502);
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (421, "4.7.0 relay.test.example Error: too many errors")
    );
    assert!(c.reply().is_err(), "the connection is closed");
    env.wait_log(
        re(r"too many errors after UNKNOWN from (localhost|unknown)\[127\.0\.0\.1\]"),
        WAIT,
    )
    .unwrap();
}

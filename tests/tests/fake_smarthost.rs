//! Self-tests of the fake Exchange Online smart host, with a plain Tokio
//! client: they need none of the postern programs.

use std::time::{Duration, Instant};

use postern_tests::ca::{CertFiles, TestPki};
use postern_tests::client::{TestClient, connector};
use postern_tests::fake::{
    Action, Attribution, FakeConfig, FakeSmartHost, Phase, TlsVersion, ViolationKind, replies,
};
use postern_tests::sync_client::Smtp;
use proto::Reply;
use regex::Regex;

const USER: &str = "scanner@contoso.test";
const PASS: &str = "S3cret-pass";
const WAIT: Duration = Duration::from_secs(10);

/// A PKI and an Exchange-like fake with one user. The TempDir must live
/// as long as the fake.
fn office365() -> (tempfile::TempDir, TestPki, FakeSmartHost) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let fake = FakeSmartHost::spawn(FakeConfig::office365(&pki.server).user(USER, PASS)).unwrap();
    (dir, pki, fake)
}

/// A client logged in as USER over TLS.
async fn logged_in(fake: &FakeSmartHost, pki: &TestPki) -> TestClient {
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.login(pki.ca_file(), USER, PASS).await.unwrap();
    c
}

fn lines(r: &proto::Reply) -> Vec<String> {
    String::from_utf8(r.to_wire())
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn greeting_has_exchange_format() {
    let (_d, _pki, fake) = office365();
    let (_c, greeting) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    let re = Regex::new(
        r"^220 (\S+) Microsoft ESMTP MAIL Service ready at (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [1-9]\d? (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000 \[[0-9A-F]{16}\]$",
    )
    .unwrap();
    let text = greeting.one_line();
    let caps = re
        .captures(&text)
        .unwrap_or_else(|| panic!("greeting {text:?}"));
    assert_eq!(&caps[1], fake.hostname());
}

#[tokio::test]
async fn ehlo_before_and_after_starttls_as_exchange() {
    let (_d, pki, fake) = office365();
    let host = fake.hostname().to_string();
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    let before = c.cmd("EHLO x").await.unwrap();
    assert_eq!(
        lines(&before),
        vec![
            format!("250-{host} Hello [127.0.0.1]"),
            "250-SIZE 157286400".into(),
            "250-PIPELINING".into(),
            "250-DSN".into(),
            "250-ENHANCEDSTATUSCODES".into(),
            "250-STARTTLS".into(),
            "250-8BITMIME".into(),
            "250-BINARYMIME".into(),
            "250-CHUNKING".into(),
            "250 SMTPUTF8".into(),
        ]
    );
    // AUTH is not offered, and not accepted, before TLS.
    assert_eq!(
        c.cmd("AUTH LOGIN").await.unwrap().one_line(),
        "504 5.7.4 Unrecognized authentication type"
    );
    let r = c.cmd("STARTTLS").await.unwrap();
    assert_eq!(r.one_line(), "220 2.0.0 SMTP server ready");
    // The handshake itself (the 220 was consumed above).
    let mut c2 = TestClient::connect_greeted(fake.addr()).await.unwrap().0;
    c2.cmd("EHLO x").await.unwrap();
    c2.starttls(pki.ca_file()).await.unwrap();
    assert!(c2.tls_version().unwrap() >= TlsVersion::Tls12);
    let after = c2.cmd("EHLO x").await.unwrap();
    assert_eq!(
        lines(&after),
        vec![
            format!("250-{host} Hello [127.0.0.1]"),
            "250-SIZE 157286400".into(),
            "250-PIPELINING".into(),
            "250-DSN".into(),
            "250-ENHANCEDSTATUSCODES".into(),
            "250-AUTH LOGIN XOAUTH2".into(),
            "250-8BITMIME".into(),
            "250-BINARYMIME".into(),
            "250-CHUNKING".into(),
            "250 SMTPUTF8".into(),
        ]
    );
    // PLAIN is never offered by Exchange.
    assert_eq!(
        c2.cmd("AUTH PLAIN AHVAcA==").await.unwrap().one_line(),
        "504 5.7.4 Unrecognized authentication type"
    );
    assert_eq!(
        c2.cmd("QUIT").await.unwrap().one_line(),
        "221 2.0.0 Service closing transmission channel"
    );
    assert!(c2.closed().await);
    let s = fake
        .wait_until("2 closed sessions", WAIT, |r| r.stats.open_sessions <= 1)
        .unwrap();
    assert_eq!(s.sessions[1].tls, c2.tls_version());
}

#[tokio::test]
async fn auth_login_success_and_wrong_password() {
    let (_d, pki, fake) = office365();
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    c.starttls(pki.ca_file()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    // Challenges exactly as Exchange sends them.
    assert_eq!(
        c.cmd("AUTH LOGIN").await.unwrap().one_line(),
        "334 VXNlcm5hbWU6"
    );
    assert_eq!(
        c.cmd("c2Nhbm5lckBjb250b3NvLnRlc3Q=")
            .await
            .unwrap()
            .one_line(),
        "334 UGFzc3dvcmQ6"
    );
    let bad = c.cmd("d3Jvbmc=").await.unwrap().one_line();
    let re = Regex::new(&format!(
        r"^535 5\.7\.139 Authentication unsuccessful, the user credentials were incorrect\. \[{} \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z [0-9A-F]{{16}}\]$",
        regex::escape(fake.hostname())
    ))
    .unwrap();
    assert!(re.is_match(&bad), "{bad}");
    assert_eq!(
        c.auth_login(USER, PASS).await.unwrap().one_line(),
        "235 2.7.0 Authentication successful"
    );
    let st = fake.stats();
    assert_eq!(
        (st.auth_attempts, st.auth_failures, st.auth_successes),
        (2, 1, 1)
    );
    assert_eq!(fake.auth_attempts(), 2);
}

#[tokio::test]
async fn mail_without_auth_gets_530() {
    let (_d, pki, fake) = office365();
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    let r = c.cmd("MAIL FROM:<a@contoso.test>").await.unwrap();
    assert!(
        r.one_line()
            .starts_with("530 5.7.57 Client not authenticated to send mail."),
        "{}",
        r.one_line()
    );
    c.starttls(pki.ca_file()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    assert_eq!(c.cmd("MAIL FROM:<a@contoso.test>").await.unwrap().code, 530);
    assert_eq!(
        c.cmd("FROB").await.unwrap().one_line(),
        "500 5.3.3 Unrecognized command"
    );
}

#[tokio::test]
async fn pipelined_batch_and_dot_stuffed_message_byte_exact() {
    let (_d, pki, fake) = office365();
    let mut c = logged_in(&fake, &pki).await;
    // One write: the whole envelope.
    c.send(b"MAIL FROM:<scanner@contoso.test> SIZE=100\r\nRCPT TO:<bob@contoso.test> NOTIFY=FAILURE\r\nRCPT TO:<carol@fabrikam.test>\r\nDATA\r\n")
        .await
        .unwrap();
    let replies = [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
        "354 Start mail input; end with <CRLF>.<CRLF>",
    ];
    for want in replies {
        assert_eq!(c.reply().await.unwrap().one_line(), want);
    }
    let body = "From: scanner@contoso.test\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n";
    let mut stuffed = Vec::new();
    proto::dot_stuff(body.as_bytes(), &mut stuffed);
    stuffed.extend_from_slice(b"RSET\r\nQUIT\r\n");
    c.send(&stuffed).await.unwrap();
    let end = c.reply().await.unwrap().one_line();
    let re = Regex::new(&format!(
        r"^250 2\.0\.0 OK <[0-9A-F]{{16}}@{0}> \[Hostname={0}\]$",
        regex::escape(fake.hostname())
    ))
    .unwrap();
    assert!(re.is_match(&end), "{end}");
    assert_eq!(c.reply().await.unwrap().one_line(), "250 2.0.0 Resetting");
    assert_eq!(c.reply().await.unwrap().code, 221);
    let msgs = fake.wait_messages(1, WAIT).unwrap();
    let m = &msgs[0];
    assert_eq!(m.content, body.as_bytes());
    assert_eq!(m.mail_from, "scanner@contoso.test");
    assert_eq!(m.rcpt_to, vec!["bob@contoso.test", "carol@fabrikam.test"]);
    assert_eq!(
        m.rcpt_params[0],
        vec![("NOTIFY".to_string(), Some("FAILURE".to_string()))]
    );
    assert_eq!(m.auth_user.as_deref(), Some(USER));
    assert!(m.tls.unwrap() >= TlsVersion::Tls12);
    assert_eq!(m.session, 1);
    assert!(!m.bdat && !m.bare_lf);
    assert!(end.contains(m.server_id.as_deref().unwrap()));
    assert_eq!(m.header("subject").as_deref(), Some("dots"));
}

#[tokio::test]
async fn bdat_chunks_are_joined() {
    let (_d, pki, fake) = office365();
    let mut c = logged_in(&fake, &pki).await;
    c.send(b"MAIL FROM:<scanner@contoso.test>\r\nRCPT TO:<bob@contoso.test>\r\nBDAT 12\r\nSubject: x\r\nBDAT 9 LAST\r\n\r\n.body\r\n")
        .await
        .unwrap();
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(
        c.reply().await.unwrap().one_line(),
        "250 2.0.0 12 bytes received"
    );
    assert!(
        c.reply()
            .await
            .unwrap()
            .one_line()
            .starts_with("250 2.0.0 OK <")
    );
    let m = &fake.wait_messages(1, WAIT).unwrap()[0];
    assert_eq!(m.content, b"Subject: x\r\n\r\n.body\r\n");
    assert!(m.bdat);
}

#[tokio::test]
async fn scripted_550_at_end_of_data() {
    let (_d, pki, fake) = office365();
    let sendas = "550 5.7.60 SMTP; Client does not have permissions to send as this sender";
    fake.script(Phase::DataEnd, Action::text(sendas));
    let mut c = logged_in(&fake, &pki).await;
    for line in [
        "MAIL FROM:<other@contoso.test>",
        "RCPT TO:<bob@contoso.test>",
        "DATA",
    ] {
        assert!(c.cmd(line).await.unwrap().code < 400);
    }
    let r = c.cmd("Subject: x\r\n\r\nhi\r\n.").await.unwrap();
    assert_eq!(r.one_line(), sendas);
    // One-shot: the next message is accepted.
    for line in [
        "MAIL FROM:<scanner@contoso.test>",
        "RCPT TO:<bob@contoso.test>",
        "DATA",
    ] {
        assert!(c.cmd(line).await.unwrap().code < 400);
    }
    assert_eq!(c.cmd("Subject: y\r\n\r\nhi\r\n.").await.unwrap().code, 250);
    let rec = fake
        .wait_until("one accepted", WAIT, |r| r.messages.len() == 1)
        .unwrap();
    assert_eq!(rec.refused.len(), 1);
    assert_eq!(rec.refused[0].mail_from, "other@contoso.test");
    assert_eq!(rec.refused[0].reply.as_ref().unwrap().one_line(), sendas);
}

#[tokio::test]
async fn per_recipient_and_hook_replies() {
    let (_d, pki, fake) = office365();
    fake.on_rcpt(
        "Nobody@contoso.test",
        Action::text("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"),
    );
    // The hook sees the whole envelope at the end of data.
    fake.set_hook(|e| {
        (e.phase == Phase::DataEnd && e.rcpts.len() != 1)
            .then(|| Action::text("554 5.0.0 expected one recipient"))
    });
    let mut c = logged_in(&fake, &pki).await;
    c.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    assert_eq!(
        c.cmd("RCPT TO:<nobody@contoso.test>").await.unwrap().code,
        550
    );
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").await.unwrap().code, 250);
    c.cmd("DATA").await.unwrap();
    c.cmd("\r\nx\r\n.").await.unwrap();
    let m = &fake.wait_messages(1, WAIT).unwrap()[0];
    assert_eq!(m.rcpt_to, vec!["bob@contoso.test"]);
}

#[tokio::test]
async fn faults_close_delay_and_drop() {
    let (_d, pki, fake) = office365();
    // 421 at connect, then close.
    fake.script(
        Phase::Connect,
        Action::text("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel").then_close(),
    );
    let (mut c, r) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    assert_eq!(r.code, 421);
    assert!(c.closed().await);
    // Close right after the greeting.
    fake.script(Phase::Connect, Action::normal().then_close());
    let (mut c, r) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    assert_eq!(r.code, 220);
    assert!(c.closed().await);
    // A slow reply.
    fake.script(
        Phase::Ehlo,
        Action::normal().after(Duration::from_millis(300)),
    );
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    let t = Instant::now();
    assert_eq!(c.cmd("EHLO x").await.unwrap().code, 250);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Drop in the middle of DATA.
    let mut c = logged_in(&fake, &pki).await;
    fake.script(Phase::Data, Action::drop_mid_data(10));
    c.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    c.cmd("RCPT TO:<bob@contoso.test>").await.unwrap();
    assert_eq!(c.cmd("DATA").await.unwrap().code, 354);
    c.send(b"Subject: this is longer than ten bytes\r\n")
        .await
        .unwrap();
    assert!(c.closed().await);
    assert!(fake.messages().is_empty());
    // 421 then close at end of data.
    let mut c = logged_in(&fake, &pki).await;
    fake.script(
        Phase::DataEnd,
        Action::text("451 4.7.0 Temporary server error. Please try again later. PRX4").then_close(),
    );
    c.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    c.cmd("RCPT TO:<bob@contoso.test>").await.unwrap();
    c.cmd("DATA").await.unwrap();
    assert_eq!(c.cmd("\r\nx\r\n.").await.unwrap().code, 451);
    assert!(c.closed().await);
    assert_eq!(fake.refused().len(), 1);
}

#[tokio::test]
async fn stop_refuses_and_start_reuses_the_port() {
    let (_d, pki, fake) = office365();
    let addr = fake.addr();
    let mut open = logged_in(&fake, &pki).await;
    fake.stop().unwrap();
    assert!(!fake.is_listening());
    let err = TestClient::connect(addr).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // Open sessions were cut.
    assert!(open.closed().await);
    fake.start().unwrap();
    assert_eq!(fake.addr(), addr);
    let (_c, r) = TestClient::connect_greeted(addr).await.unwrap();
    assert_eq!(r.code, 220);
    // Twice, to be sure stop/start cycles.
    fake.stop().unwrap();
    assert!(TestClient::connect(addr).await.is_err());
    fake.start().unwrap();
    let _ = logged_in(&fake, &pki).await;
    assert_eq!(fake.connections(), 3);
}

#[tokio::test]
async fn fourth_concurrent_session_of_a_mailbox_gets_432() {
    let (_d, pki, fake) = office365();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(logged_in(&fake, &pki).await);
    }
    assert_eq!(fake.violations(), 1);
    let mut results = Vec::new();
    for c in clients.iter_mut().rev() {
        c.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
        c.cmd("RCPT TO:<bob@contoso.test>").await.unwrap();
        c.cmd("DATA").await.unwrap();
        results.push(c.cmd("Subject: x\r\n\r\nhi\r\n.").await.unwrap().one_line());
    }
    let want = format!(
        "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname={}]",
        fake.hostname()
    );
    assert_eq!(results[0], want, "the 4th session");
    assert!(results[1..].iter().all(|r| r.starts_with("250 2.0.0 OK")));
    let st = fake.stats();
    assert_eq!(st.max_concurrent, 4);
    assert_eq!(st.max_concurrent_per_mailbox[USER], 4);
    assert_eq!(fake.messages().len(), 3);
    // Once one session closes, a new one is within the limit.
    let mut first = clients.remove(0);
    first.cmd("QUIT").await.unwrap();
    assert!(first.closed().await);
    fake.wait_until("3 open", WAIT, |r| r.stats.open_sessions == 3)
        .unwrap();
    let last = clients.last_mut().unwrap();
    last.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    last.cmd("RCPT TO:<bob@contoso.test>").await.unwrap();
    last.cmd("DATA").await.unwrap();
    assert_eq!(last.cmd("\r\nhi\r\n.").await.unwrap().code, 250);
    assert_eq!(fake.violations(), 1);
    // The session that got the 432 is the one counted.
    assert_eq!(fake.violations_of(ViolationKind::Concurrency), 1);
    let v = &fake.violation_log()[0];
    assert_eq!(
        (v.kind, v.mailbox.as_str()),
        (ViolationKind::Concurrency, USER)
    );
    let refused = fake.refused();
    assert_eq!(refused[0].session, v.session);
    assert_eq!(refused[0].reply.as_ref().unwrap().code, 432);
}

#[tokio::test]
async fn legacy_tls_gets_421_at_auth() {
    let (_d, pki, fake) = office365();
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    let conn = connector(
        Some(pki.ca_file()),
        Some(TlsVersion::Tls10),
        Some(TlsVersion::Tls11),
    )
    .unwrap();
    if let Err(e) = c.starttls_with(&conn, "localhost").await {
        // The local OpenSSL may not do TLS 1.1 at all.
        eprintln!("skipped: TLS 1.1 unavailable here: {e:#}");
        return;
    }
    assert_eq!(c.tls_version(), Some(TlsVersion::Tls11));
    c.cmd("EHLO x").await.unwrap();
    let r = c.cmd("AUTH LOGIN").await.unwrap().one_line();
    assert!(
        r.starts_with("421 4.7.66 TLS 1.0 and 1.1 are not supported."),
        "{r}"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn untrusted_certificate_fails_verification() {
    let (_d, pki, fake) = office365();
    fake.set_certificate(&pki.untrusted().unwrap()).unwrap();
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    assert!(c.starttls(pki.ca_file()).await.is_err());
    let s = fake
        .wait_until("handshake failure", WAIT, |r| {
            r.sessions.first().is_some_and(|s| s.tls_error.is_some())
        })
        .unwrap();
    assert!(s.sessions[0].tls.is_none());
}

#[test]
fn wait_times_out_with_an_account() {
    let (_d, _pki, fake) = office365();
    let err = fake
        .wait_messages(1, Duration::from_millis(50))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timed out") && err.contains("0 accepted"),
        "{err}"
    );
}

#[tokio::test]
async fn generic_smarthost_plain_auth_and_optional_auth() {
    let fake = FakeSmartHost::spawn(FakeConfig::generic().user("relay", "pw")).unwrap();
    let (mut c, greeting) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    assert!(!greeting.one_line().contains('['), "no id on generic hosts");
    let ehlo = lines(&c.cmd("EHLO x").await.unwrap());
    assert!(
        ehlo.contains(&"250-AUTH PLAIN LOGIN".to_string()),
        "{ehlo:?}"
    );
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    // \0relay\0wrong, then \0relay\0pw.
    assert_eq!(
        c.cmd("AUTH PLAIN AHJlbGF5AHdyb25n").await.unwrap().code,
        535
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AHJlbGF5AHB3").await.unwrap().one_line(),
        "235 2.7.0 Authentication successful"
    );
    // Without AUTH, MAIL is fine on a generic host.
    let (mut anon, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    anon.cmd("HELO x").await.unwrap();
    assert_eq!(anon.cmd("MAIL FROM:<>").await.unwrap().code, 250);
    assert_eq!(anon.cmd("RCPT TO:<a@b.test>").await.unwrap().code, 250);
    assert_eq!(anon.cmd("DATA").await.unwrap().code, 354);
    assert_eq!(anon.cmd("x\r\n.").await.unwrap().code, 250);
    let m = &fake.wait_messages(1, WAIT).unwrap()[0];
    assert_eq!((m.mail_from.as_str(), m.auth_user.as_deref()), ("", None));
}

#[tokio::test]
async fn implicit_tls_greets_after_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let mut cfg = FakeConfig::office365(&pki.server).user(USER, PASS);
    cfg.implicit_tls = true;
    let fake = FakeSmartHost::spawn(cfg).unwrap();
    let conn = connector(Some(pki.ca_file()), None, None).unwrap();
    let mut c = TestClient::connect_tls(fake.addr(), &conn, "smtp.office365.test")
        .await
        .unwrap();
    assert_eq!(c.reply().await.unwrap().code, 220);
    let ehlo = lines(&c.cmd("EHLO x").await.unwrap());
    assert!(ehlo.contains(&"250-AUTH LOGIN XOAUTH2".to_string()));
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(c.auth_login(USER, PASS).await.unwrap().code, 235);
    let s = fake.sessions();
    assert_eq!(s[0].sni.as_deref(), Some("smtp.office365.test"));
}

// ---- per-mailbox limits ----------------------------------------------------

/// An Exchange-like fake adjusted by `f`, with USER and a second mailbox.
fn office365_with(
    f: impl FnOnce(FakeConfig) -> FakeConfig,
) -> (tempfile::TempDir, TestPki, FakeSmartHost) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let cfg = FakeConfig::office365(&pki.server)
        .user(USER, PASS)
        .user(OTHER, PASS);
    let fake = FakeSmartHost::spawn(f(cfg)).unwrap();
    (dir, pki, fake)
}

const OTHER: &str = "printer@contoso.test";

async fn logged_in_as(fake: &FakeSmartHost, pki: &TestPki, user: &str) -> TestClient {
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.login(pki.ca_file(), user, PASS).await.unwrap();
    c
}

/// One message: envelope `from`, `rcpts`, header `From: header_from`
/// (none when empty); the end-of-data reply (or the first refusal).
async fn send(c: &mut TestClient, from: &str, rcpts: &[&str], header_from: &str) -> Reply {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await.unwrap();
    if r.code >= 400 {
        return r;
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await.unwrap();
        assert!(r.code < 400, "RCPT {rcpt}: {}", r.one_line());
    }
    assert_eq!(c.cmd("DATA").await.unwrap().code, 354);
    let head = if header_from.is_empty() {
        String::new()
    } else {
        format!("From: {header_from}\r\n")
    };
    c.cmd(&format!("{head}Subject: t\r\n\r\nbody\r\n."))
        .await
        .unwrap()
}

/// ` [<host> <ISO time> <16 hex>]` at the end.
fn suffix_re(host: &str) -> Regex {
    Regex::new(&format!(
        r" \[{} \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z [0-9A-F]{{16}}\]$",
        regex::escape(host)
    ))
    .unwrap()
}

#[tokio::test]
async fn message_rate_is_counted_but_mail_is_accepted() {
    let (_d, pki, fake) = office365_with(|c| c.message_rate(6, Duration::from_secs(10)));
    let mut c = logged_in(&fake, &pki).await;
    for i in 0..8 {
        let r = send(&mut c, USER, &["bob@contoso.test"], USER).await;
        assert!(
            r.one_line().starts_with("250 2.0.0 OK <"),
            "message {i}: {}",
            r.one_line()
        );
    }
    assert_eq!(fake.violations_of(ViolationKind::MessageRate), 2);
    assert!(
        fake.violation_log()
            .iter()
            .all(|v| v.kind == ViolationKind::MessageRate && v.mailbox == USER)
    );
    let mine = fake.messages_of("Scanner@Contoso.test");
    assert_eq!(mine.len(), 8);
    assert!(mine.windows(2).all(|w| w[0].at <= w[1].at));
    // Another mailbox has its own window.
    let mut o = logged_in_as(&fake, &pki, OTHER).await;
    assert_eq!(
        send(&mut o, OTHER, &["bob@contoso.test"], OTHER).await.code,
        250
    );
    assert_eq!(fake.messages_of(OTHER).len(), 1);
    assert_eq!(fake.violations(), 2);
    assert!(fake.summary().contains("MessageRate"));
}

#[tokio::test]
async fn message_rate_window_slides() {
    let (_d, pki, fake) = office365_with(|c| c.message_rate(2, Duration::from_millis(600)));
    let mut c = logged_in(&fake, &pki).await;
    for _ in 0..2 {
        assert_eq!(
            send(&mut c, USER, &["bob@contoso.test"], USER).await.code,
            250
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..2 {
        assert_eq!(
            send(&mut c, USER, &["bob@contoso.test"], USER).await.code,
            250
        );
    }
    assert_eq!(fake.violations(), 0);
    assert_eq!(
        send(&mut c, USER, &["bob@contoso.test"], USER).await.code,
        250
    );
    assert_eq!(fake.violations_of(ViolationKind::MessageRate), 1);
}

#[tokio::test]
async fn recipient_budget_gives_submission_quota_per_p2_sender() {
    let (_d, pki, fake) = office365_with(|c| c.recipient_budget(5, Duration::from_secs(30)));
    let host = fake.hostname().to_string();
    let quota = format!("{} [Hostname={host}]", replies::SUBMISSION_QUOTA);
    assert!(quota.starts_with("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message The message can't be submitted because the sender's submission quota was exceeded."));
    let three = ["a@x.test", "b@x.test", "c@x.test"];
    let mut c = logged_in(&fake, &pki).await;
    assert_eq!(send(&mut c, USER, &three, USER).await.code, 250);
    assert_eq!(send(&mut c, USER, &three, USER).await.one_line(), quota);
    // 3 + 2 = 5 still fits.
    assert_eq!(send(&mut c, USER, &three[..2], USER).await.code, 250);
    assert_eq!(
        send(&mut c, USER, &three[..1], USER).await.one_line(),
        quota
    );
    // Send-as traffic counts against the header From (the P2 sender).
    let shared = "\"Shared\" <Shared@contoso.test>";
    assert_eq!(send(&mut c, USER, &three, shared).await.code, 250);
    assert_eq!(send(&mut c, USER, &three, shared).await.one_line(), quota);
    // Without a From header, the authenticated mailbox is charged.
    assert_eq!(send(&mut c, USER, &three[..1], "").await.code, 554);
    let log = fake.violation_log();
    let who: Vec<(ViolationKind, &str)> =
        log.iter().map(|v| (v.kind, v.mailbox.as_str())).collect();
    assert_eq!(
        who,
        vec![
            (ViolationKind::RecipientBudget, USER),
            (ViolationKind::RecipientBudget, USER),
            (ViolationKind::RecipientBudget, "shared@contoso.test"),
            (ViolationKind::RecipientBudget, USER),
        ]
    );
    let rec = fake.records();
    assert_eq!(rec.messages.len(), 3);
    assert_eq!(
        rec.messages[2].p2_sender.as_deref(),
        Some("shared@contoso.test")
    );
    assert_eq!(rec.refused.len(), 4);
    // A scripted reply wins and counts nothing.
    fake.script(Phase::DataEnd, Action::text("250 2.0.0 OK scripted"));
    assert_eq!(send(&mut c, USER, &three, USER).await.code, 250);
    assert_eq!(fake.violations_of(ViolationKind::RecipientBudget), 4);
}

#[tokio::test]
async fn send_as_checks_the_header_from() {
    let (_d, pki, fake) = office365_with(|c| {
        c.send_as_check(true)
            .send_as(USER, &["Shared@contoso.test"])
    });
    let sfx = suffix_re(fake.hostname());
    let mut c = logged_in(&fake, &pki).await;
    let rcpt = ["bob@contoso.test"];
    assert_eq!(
        send(&mut c, USER, &rcpt, "Scanner <SCANNER@Contoso.test>")
            .await
            .code,
        250
    );
    assert_eq!(
        send(&mut c, USER, &rcpt, "shared@contoso.test").await.code,
        250
    );
    let denied = send(&mut c, USER, &rcpt, "\"Boss, The\" <boss@contoso.test>")
        .await
        .one_line();
    assert!(denied.starts_with(replies::SEND_AS_DENIED), "{denied}");
    assert!(sfx.is_match(&denied), "{denied}");
    // The envelope sender is not what is checked.
    assert_eq!(
        send(&mut c, "boss@contoso.test", &rcpt, USER).await.code,
        250
    );
    fake.grant_send_as(USER, "boss@contoso.test");
    assert_eq!(
        send(&mut c, USER, &rcpt, "boss@contoso.test").await.code,
        250
    );
    fake.revoke_send_as(USER, "BOSS@contoso.test");
    assert_eq!(
        send(&mut c, USER, &rcpt, "boss@contoso.test").await.code,
        550
    );
    // No From header: not checked.
    assert_eq!(send(&mut c, USER, &rcpt, "").await.code, 250);
    // Another mailbox has no grants.
    let mut o = logged_in_as(&fake, &pki, OTHER).await;
    assert_eq!(
        send(&mut o, OTHER, &rcpt, "shared@contoso.test").await.code,
        550
    );
    assert_eq!(fake.violations_of(ViolationKind::SendAs), 3);
    let v = fake.violation_log();
    assert_eq!(v[2].mailbox, OTHER);
    // Off by default.
    let (_d2, pki2, plain) = office365();
    let mut p = logged_in(&plain, &pki2).await;
    assert_eq!(
        send(&mut p, USER, &rcpt, "boss@contoso.test").await.code,
        250
    );
}

#[tokio::test]
async fn too_many_recipients_per_message() {
    let (_d, pki, fake) = office365_with(|c| c.max_recipients(2));
    let mut c = logged_in(&fake, &pki).await;
    c.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    assert_eq!(c.cmd("RCPT TO:<a@x.test>").await.unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@x.test>").await.unwrap().code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<c@x.test>").await.unwrap().one_line(),
        replies::TOO_MANY_RECIPIENTS
    );
    c.cmd("DATA").await.unwrap();
    assert_eq!(c.cmd("\r\nx\r\n.").await.unwrap().code, 250);
    assert_eq!(fake.messages()[0].rcpt_to.len(), 2);
    assert_eq!(fake.violations_of(ViolationKind::RecipientsPerMessage), 1);
    assert_eq!(fake.config().max_recipients, Some(2));
    assert_eq!(FakeConfig::office365(&pki.server).max_recipients, Some(500));
}

// ---- scripting the catalogue of §5 ----------------------------------------

#[tokio::test]
async fn section5_replies_per_mailbox() {
    let (_d, pki, fake) = office365();
    let host = fake.hostname().to_string();
    let sfx = suffix_re(&host);
    let end_of_data = [
        replies::SUBMISSION_QUOTA.to_string(),
        replies::SEND_AS_DENIED.into(),
        replies::SEND_AS_DENIED_STOREDRV.into(),
        replies::send_as_denied_new_text(USER, "boss@contoso.test"),
        replies::THROTTLED_SEND_AS.into(),
        replies::CONCURRENCY.into(),
        replies::CONCURRENCY_OLD.into(),
        replies::BAD_OUTBOUND_SENDER.into(),
        replies::MAILBOX_FULL.into(),
        replies::LOGON_FAILURE.into(),
        replies::TENANT_THRESHOLD.into(),
        replies::PRX4.into(),
    ];
    let mut c = logged_in(&fake, &pki).await;
    for text in &end_of_data {
        fake.on_mailbox_times(USER, Phase::DataEnd, Action::exo(text), 1);
        let r = send(&mut c, USER, &["bob@contoso.test"], USER)
            .await
            .one_line();
        assert!(r.starts_with(text.as_str()), "{text}: {r}");
        assert!(sfx.is_match(&r), "{r}");
        let code: u16 = text[..3].parse().unwrap();
        assert_eq!(&r[..3], &text[..3]);
        assert!(code >= 400);
    }
    // Used up: the next one is accepted.
    assert_eq!(
        send(&mut c, USER, &["bob@contoso.test"], USER).await.code,
        250
    );
    assert_eq!(fake.refused().len(), end_of_data.len());
    // A persistent one for USER does not touch OTHER.
    fake.on_mailbox(
        USER,
        Phase::Mail,
        Action::exo(replies::THROTTLED_INVALID_RECIPIENTS),
    );
    for _ in 0..2 {
        let r = c
            .cmd("MAIL FROM:<scanner@contoso.test>")
            .await
            .unwrap()
            .one_line();
        assert!(r.starts_with("550 5.2.255 Sender throttled"), "{r}");
    }
    // At AUTH the mailbox trying decides.
    fake.on_mailbox(
        USER,
        Phase::Auth,
        Action::exo(replies::SMTP_AUTH_DISABLED_TENANT),
    );
    let (mut a, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    a.cmd("EHLO x").await.unwrap();
    a.starttls(pki.ca_file()).await.unwrap();
    a.cmd("EHLO x").await.unwrap();
    let r = a.auth_login(USER, PASS).await.unwrap().one_line();
    assert!(
        r.starts_with(replies::SMTP_AUTH_DISABLED_TENANT) && sfx.is_match(&r),
        "{r}"
    );
    fake.set_password(OTHER, PASS);
    assert_eq!(a.auth_login(OTHER, PASS).await.unwrap().code, 235);
    assert_eq!(
        send(&mut a, OTHER, &["bob@contoso.test"], OTHER).await.code,
        250
    );
    fake.clear_mailbox(USER);
    assert_eq!(
        c.cmd("MAIL FROM:<scanner@contoso.test>")
            .await
            .unwrap()
            .code,
        250
    );
}

#[tokio::test]
async fn section5_replies_for_the_next_sessions() {
    let (_d, pki, fake) = office365();
    fake.script_sessions(
        2,
        Phase::Connect,
        Action::exo(replies::FOREST_CONCURRENCY).then_close(),
    );
    fake.script_sessions(1, Phase::Auth, Action::exo(replies::BASIC_AUTH_RETIRED));
    for _ in 0..2 {
        let (mut c, r) = TestClient::connect_greeted(fake.addr()).await.unwrap();
        assert!(
            r.one_line().starts_with(replies::FOREST_CONCURRENCY),
            "{}",
            r.one_line()
        );
        assert!(c.closed().await);
    }
    // The third session greets normally but has the AUTH reply (the
    // second rule was bound to the first session already).
    let (mut c, r) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    assert_eq!(r.code, 220);
    c.cmd("EHLO x").await.unwrap();
    c.starttls(pki.ca_file()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    assert_eq!(c.auth_login(USER, PASS).await.unwrap().code, 235);
    // Rules bind at connect: a rule for the next session, twice in it.
    fake.script_sessions(1, Phase::Rcpt, Action::exo(replies::RECIPIENT_REJECTED));
    let mut d = logged_in(&fake, &pki).await;
    d.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    for _ in 0..2 {
        let r = d
            .cmd("RCPT TO:<bob@contoso.test>")
            .await
            .unwrap()
            .one_line();
        assert!(r.starts_with(replies::RECIPIENT_REJECTED), "{r}");
    }
    let mut e = logged_in(&fake, &pki).await;
    e.cmd("MAIL FROM:<scanner@contoso.test>").await.unwrap();
    assert_eq!(e.cmd("RCPT TO:<bob@contoso.test>").await.unwrap().code, 250);
    // clear_scripts drops pending session rules too.
    fake.script_sessions(5, Phase::Connect, Action::text(replies::PRX4).then_close());
    fake.clear_scripts();
    assert_eq!(
        TestClient::connect_greeted(fake.addr())
            .await
            .unwrap()
            .1
            .code,
        220
    );
}

// ---- the mx listener -------------------------------------------------------

fn mx(
    f: impl FnOnce(FakeConfig, &TestPki) -> FakeConfig,
) -> (tempfile::TempDir, TestPki, FakeSmartHost) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let cfg = FakeConfig::mx(&pki.server).accepted_domain("contoso.test");
    let fake = FakeSmartHost::spawn(f(cfg, &pki)).unwrap();
    (dir, pki, fake)
}

#[tokio::test]
async fn mx_direct_send_and_tenant_attribution() {
    let (_d, pki, fake) =
        mx(|c, _| c.known_recipients(&["bob@contoso.test", "carol@contoso.test"]));
    let host = fake.hostname().to_string();
    assert!(host.contains(".mail.protection."));
    let sfx = suffix_re(&host);
    let (mut c, g) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    assert!(g.one_line().starts_with(&format!(
        "220 {host} Microsoft ESMTP MAIL Service ready at "
    )));
    let before = lines(&c.cmd("EHLO x").await.unwrap());
    assert!(before.contains(&"250-STARTTLS".to_string()), "{before:?}");
    assert!(!before.iter().any(|l| l.contains("AUTH")), "{before:?}");
    c.starttls(pki.ca_file()).await.unwrap();
    let after = lines(&c.cmd("EHLO x").await.unwrap());
    assert!(
        !after
            .iter()
            .any(|l| l.contains("AUTH") || l.contains("STARTTLS")),
        "{after:?}"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await.unwrap().code, 504);
    // Anyone may send to the tenant's own mailboxes.
    assert_eq!(
        c.cmd("MAIL FROM:<news@fabrikam.test>").await.unwrap().code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<Bob@Contoso.test>").await.unwrap().code, 250);
    let unknown = c
        .cmd("RCPT TO:<nobody@contoso.test>")
        .await
        .unwrap()
        .one_line();
    assert!(
        unknown.starts_with(replies::RECIPIENT_REJECTED) && sfx.is_match(&unknown),
        "{unknown}"
    );
    let ext = c
        .cmd("RCPT TO:<someone@fabrikam.test>")
        .await
        .unwrap()
        .one_line();
    assert!(
        ext.starts_with(replies::TENANT_ATTRIBUTION) && sfx.is_match(&ext),
        "{ext}"
    );
    // An internal sender (Direct Send) to an external address: the same.
    c.cmd("RSET").await.unwrap();
    c.cmd("MAIL FROM:<printer@contoso.test>").await.unwrap();
    assert_eq!(
        c.cmd("RCPT TO:<someone@fabrikam.test>").await.unwrap().code,
        550
    );
    assert_eq!(
        c.cmd("RCPT TO:<carol@contoso.test>").await.unwrap().code,
        250
    );
    c.cmd("DATA").await.unwrap();
    assert_eq!(
        c.cmd("From: printer@contoso.test\r\n\r\nscan\r\n.")
            .await
            .unwrap()
            .code,
        250
    );
    let m = &fake.wait_messages_async(1, WAIT).await.unwrap()[0];
    assert_eq!(
        (m.auth_user.as_deref(), m.rcpt_to.clone()),
        (None, vec!["carol@contoso.test".to_string()])
    );
    assert_eq!(fake.sessions()[0].attribution, None);
    assert_eq!(fake.violations(), 0);

    // RejectDirectSend: an internal P1 from an unattributed client.
    let (_d2, _pki2, strict) = mx(|c, _| c.reject_direct_send(true));
    let (mut s, _) = TestClient::connect_greeted(strict.addr()).await.unwrap();
    s.cmd("EHLO x").await.unwrap();
    s.cmd("MAIL FROM:<printer@contoso.test>").await.unwrap();
    let r = s
        .cmd("RCPT TO:<bob@contoso.test>")
        .await
        .unwrap()
        .one_line();
    assert!(r.starts_with(replies::DIRECT_SEND_REJECTED), "{r}");
    s.cmd("RSET").await.unwrap();
    s.cmd("MAIL FROM:<news@fabrikam.test>").await.unwrap();
    assert_eq!(s.cmd("RCPT TO:<bob@contoso.test>").await.unwrap().code, 250);
}

#[test]
fn mx_connector_by_source_address() {
    let (_d, _pki, fake) = mx(|c, _| c.connector_ip("127.0.0.2".parse().unwrap()));
    let (mut a, _) = Smtp::connect(fake.port(), Some("127.0.0.2")).unwrap();
    a.cmd("EHLO relay.contoso.test").unwrap();
    assert_eq!(a.cmd("MAIL FROM:<app@contoso.test>").unwrap().code, 250);
    assert_eq!(a.cmd("RCPT TO:<someone@fabrikam.test>").unwrap().code, 250);
    a.cmd("RSET").unwrap();
    // Attributed, but the sender domain is not accepted.
    a.cmd("MAIL FROM:<app@fabrikam.test>").unwrap();
    let r = a.cmd("RCPT TO:<someone@fabrikam.test>").unwrap();
    assert!(
        format!("{r}").starts_with(replies::RELAY_DENIED_ATTR36),
        "{r}"
    );
    // Another address is not attributed.
    let (mut b, _) = Smtp::connect(fake.port(), None).unwrap();
    b.cmd("EHLO x").unwrap();
    b.cmd("MAIL FROM:<app@contoso.test>").unwrap();
    let r = b.cmd("RCPT TO:<someone@fabrikam.test>").unwrap();
    assert!(
        format!("{r}").starts_with(replies::TENANT_ATTRIBUTION),
        "{r}"
    );
    let s = fake.sessions();
    assert_eq!(s[0].attribution, Some(Attribution::Ip));
    assert_eq!(s[1].attribution, None);
}

/// A TLS client presenting `cert`, trusting the test CA.
fn client_cert_connector(pki: &TestPki, cert: Option<&CertFiles>) -> openssl::ssl::SslConnector {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.ca_file()).unwrap();
    if let Some(c) = cert {
        b.set_certificate(&c.cert).unwrap();
        b.set_private_key(&c.key).unwrap();
    }
    b.build()
}

/// Over TLS with `cert`, MAIL from a foreign domain to a foreign address:
/// the RCPT reply.
async fn relay_with(fake: &FakeSmartHost, pki: &TestPki, cert: Option<&CertFiles>) -> String {
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO relay.contoso.test").await.unwrap();
    c.starttls_with(&client_cert_connector(pki, cert), "localhost")
        .await
        .unwrap();
    c.cmd("EHLO relay.contoso.test").await.unwrap();
    c.cmd("MAIL FROM:<app@fabrikam.test>").await.unwrap();
    c.cmd("RCPT TO:<someone@fabrikam.test>")
        .await
        .unwrap()
        .one_line()
}

#[tokio::test]
async fn mx_connector_by_client_certificate() {
    let (_d, pki, fake) = mx(|c, pki| c.connector_cert("*.contoso.test", pki.ca_file()));
    let good = pki.ca.issue("relay", &["relay.contoso.test"]).unwrap();
    let self_signed = pki
        .ca
        .self_signed("relay-self", &["relay.contoso.test"])
        .unwrap();
    let wrong = pki
        .ca
        .issue("relay-wrong", &["relay.fabrikam.test"])
        .unwrap();
    assert_eq!(
        relay_with(&fake, &pki, Some(&good)).await,
        "250 2.1.5 Recipient OK"
    );
    for cert in [Some(&self_signed), Some(&wrong), None] {
        let r = relay_with(&fake, &pki, cert).await;
        assert!(r.starts_with(replies::TENANT_ATTRIBUTION), "{r}");
    }
    // Without TLS there is no certificate.
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    c.cmd("MAIL FROM:<app@fabrikam.test>").await.unwrap();
    assert_eq!(
        c.cmd("RCPT TO:<someone@fabrikam.test>").await.unwrap().code,
        550
    );
    let s = fake.sessions();
    assert_eq!(
        s[0].attribution,
        Some(Attribution::Certificate("*.contoso.test".into()))
    );
    assert!(s[0].client_cert_verified);
    assert!(
        s[0].client_cert_names
            .contains(&"relay.contoso.test".to_string())
    );
    assert!(!s[1].client_cert_verified && !s[1].client_cert_names.is_empty());
    assert!(s[2].client_cert_verified && s[2].attribution.is_none());
    assert!(s[3].client_cert_names.is_empty());
}

//! The story of issue 2: a cron job runs `sendmail -t`; the message is
//! relayed over STARTTLS with SMTP AUTH to the (fake) smart host, byte-exact,
//! and the log says so in Postfix's format.

use postern_tests::harness::{TestEnv, re};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn sendmail_t_is_relayed_byte_exact_with_postfix_log_lines() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.start().unwrap();
    // Lines that need dot-stuffing on the wire, a Bcc that must vanish,
    // an empty line in the body, trailing spaces, 8-bit text.
    let input = "From: Backup Job <backup@contoso.test>\n\
To: Admin <admin@contoso.test>\n\
Bcc: hidden@contoso.test\n\
Subject: backup done\n\
\n\
ok\n\
.hidden line\n\
..two dots\n\
.\r\n\
\n\
trailing   \n\
caf\u{e9}\n";
    let out = env.sendmail(&["-t", "-i"], input.as_bytes()).unwrap();
    assert!(out.success(), "{out}");
    let msgs = fake.wait_messages(1, WAIT).unwrap();
    let m = &msgs[0];
    let mut rcpts = m.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["admin@contoso.test", "hidden@contoso.test"]);
    assert_eq!(
        m.auth_user.as_deref(),
        Some(postern_tests::harness::TEST_USER)
    );
    assert!(m.tls.is_some(), "STARTTLS was not used");
    let text = m.text();
    assert!(!text.contains("Bcc:"), "Bcc header was sent:\n{text}");
    // Received: prepended, original headers kept in order, missing ones added.
    assert!(
        text.starts_with("Received: by relay.test.example (postern, from userid "),
        "{text}"
    );
    let body_start = text.find("\r\n\r\n").unwrap() + 4;
    let headers = &text[..body_start];
    let body = &text[body_start..];
    assert!(headers.contains("From: Backup Job <backup@contoso.test>\r\nTo: Admin <admin@contoso.test>\r\nSubject: backup done\r\n"), "{headers}");
    assert!(headers.contains("\r\nMessage-Id: <"), "{headers}");
    assert!(headers.contains("\r\nDate: "), "{headers}");
    assert_eq!(
        body, "ok\r\n.hidden line\r\n..two dots\r\n.\r\n\r\ntrailing   \r\ncaf\u{e9}\r\n",
        "body changed in transit"
    );
    // Postfix-format log lines, in order.
    env.wait_log(re(r"postern/qmgr\[\d+\]: [0-9A-F]{12}: removed"), WAIT)
        .unwrap();
    let log = env.log_text();
    let id = re_capture(
        &log,
        r"postern/pickup\[\d+\]: ([0-9A-F]{12}): uid=\d+ from=<root>",
    );
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    let patterns = [
        format!(
            r"^\w{{3}} [ 0-9]\d \d\d:\d\d:\d\d relay postern/pickup\[\d+\]: {id}: uid=\d+ from=<root>$"
        ),
        format!(r"postern/pickup\[\d+\]: {id}: message-id=<\d{{14}}\.{id}@relay\.test\.example>$"),
        format!(
            r"postern/qmgr\[\d+\]: {id}: from=<root@relay\.test\.example>, size=\d+, nrcpt=2 \(queue active\)$"
        ),
        format!(
            r"postern/smtp\[\d+\]: {id}: to=<admin@contoso\.test>, relay=localhost\[127\.0\.0\.1\]:{}, (conn_use=\d+, )?delay=[0-9.]+, delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=2\.0\.0, status=sent \(250 2\.0\.0 OK <[^>]+> \[Hostname=[^\]]+\]\)$",
            fake.port()
        ),
        format!(r"postern/qmgr\[\d+\]: {id}: removed$"),
    ];
    let mut pos = 0;
    for p in &patterns {
        let rx = regex::Regex::new(p).unwrap();
        let found = lines[pos..].iter().position(|l| rx.is_match(l));
        assert!(
            found.is_some(),
            "no line matching {p} (in order) in:\n{}",
            lines.join("\n")
        );
        pos += found.unwrap() + 1;
    }
    assert!(env.queue_files("active").is_empty() && env.queue_files("deferred").is_empty());
    env.stop().unwrap();
}

/// The daemons are stopped: sendmail still exits 0 (the message waits in
/// maildrop/); `postern start` delivers it.
#[test]
fn sendmail_works_with_the_daemons_stopped() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.create_queue().unwrap();
    let out = env
        .sendmail(
            &["-t", "admin@contoso.test"],
            b"Subject: backup done\n\nok\n",
        )
        .unwrap();
    assert!(out.success(), "{out}");
    assert_eq!(env.queue_files("maildrop").len(), 1);
    let q = env.mailq().unwrap();
    assert!(
        q.stdout.contains("admin@contoso.test"),
        "mailq does not show the waiting message:\n{q}"
    );
    env.start().unwrap();
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].rcpt_to, vec!["admin@contoso.test"]);
    let text = m[0].text();
    assert!(
        text.contains("\r\nSubject: backup done\r\n") && text.ends_with("\r\n\r\nok\r\n"),
        "{text}"
    );
    env.wait_log("removed", WAIT).unwrap();
    assert!(env.queue_files("maildrop").is_empty());
    env.stop().unwrap();
}

/// Unqualified recipients get @$myorigin; `sendmail root` reaches the real
/// mailbox through alias_maps (for $mydestination) and virtual_alias_maps.
#[test]
fn aliases_rewrite_local_recipients() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let aliases = env
        .write_file(
            "aliases",
            "postmaster: root\nroot: admin@contoso.test, ops\nops: ops-team@contoso.test\n",
        )
        .unwrap();
    let virt = env
        .write_file(
            "virtual",
            "sales@contoso.test  alice@contoso.test, bob@contoso.test\n",
        )
        .unwrap();
    env.set_many(&[
        ("mydestination", "$myhostname, localhost"),
        ("alias_maps", &format!("hash:{}", aliases.display())),
        (
            "virtual_alias_maps",
            &format!("texthash:{}", virt.display()),
        ),
    ])
    .unwrap();
    env.start().unwrap();
    let out = env
        .sendmail(&["root", "sales@contoso.test"], b"Subject: cron\n\nout\n")
        .unwrap();
    assert!(out.success(), "{out}");
    let msgs = fake.wait_messages(1, WAIT).unwrap();
    let mut got: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    // Recipients may arrive in one or more transactions.
    if got.len() < 4 {
        let msgs = fake
            .wait_until("4 recipients", WAIT, |r| {
                r.messages.iter().map(|m| m.rcpt_to.len()).sum::<usize>() >= 4
            })
            .unwrap();
        got = msgs
            .messages
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            "admin@contoso.test",
            "alice@contoso.test",
            "bob@contoso.test",
            "ops-team@contoso.test"
        ]
    );
    env.wait_log(
        "to=<admin@contoso.test>, orig_to=<root@relay.test.example>",
        WAIT,
    )
    .unwrap();
    env.stop().unwrap();
}

fn re_capture(text: &str, pattern: &str) -> String {
    let rx = regex::Regex::new(pattern).unwrap();
    rx.captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| panic!("no match for {pattern} in:\n{text}"))
}

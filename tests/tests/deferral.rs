//! Smart host down: the message is deferred, mailq shows why, and once the
//! smart host is back `postqueue -f` delivers it exactly once. A 4xx reply
//! defers too; a 5xx bounces with an RFC 3464 DSN carrying the exact reply.

use postern_tests::fake::{Action, Phase};
use postern_tests::harness::{TestEnv, re};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn smart_host_down_then_flush_delivers_exactly_once() {
    let mut env = TestEnv::new().unwrap();
    // Long backoff: only postqueue -f can bring the message out.
    env.set_many(&[
        ("minimal_backoff_time", "1h"),
        ("maximal_backoff_time", "2h"),
        ("queue_run_delay", "1h"),
    ])
    .unwrap();
    let fake = env.office365_fake().unwrap();
    fake.stop().unwrap();
    env.start().unwrap();
    let out = env
        .sendmail(
            &["-t"],
            b"To: admin@contoso.test\nSubject: while down\n\nqueued\n",
        )
        .unwrap();
    assert!(out.success(), "{out}");
    let line = env
        .wait_log(
            re(r"status=deferred \(connect to localhost\[127\.0\.0\.1\]:\d+: Connection refused\)"),
            WAIT,
        )
        .unwrap();
    assert!(
        line.contains("to=<admin@contoso.test>") && line.contains("dsn=4.4.1"),
        "{line}"
    );
    // mailq shows the deferred message with the reason in parentheses.
    let q = env.mailq().unwrap();
    let text = q.stdout.clone();
    assert!(
        text.starts_with("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"),
        "{text}"
    );
    assert!(re(r"(?m)^[0-9A-F]{12} +\d+ \w{3} \w{3} [ 0-9]\d \d\d:\d\d:\d\d  root@relay\.test\.example$").matches(&text), "{text}");
    assert!(
        re(r"(?m)^ +\(connect to localhost\[127\.0\.0\.1\]:\d+: Connection refused\)$")
            .matches(&text),
        "{text}"
    );
    assert!(
        text.contains("\n                                         admin@contoso.test\n"),
        "{text}"
    );
    assert!(
        re(r"\n-- \d+ Kbytes in 1 Request\.\n$").matches(&text),
        "{text}"
    );
    assert_eq!(env.queue_files("deferred").len(), 1);
    // Back up; flush.
    fake.start().unwrap();
    let mark = env.log_mark();
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
    fake.wait_messages(1, WAIT).unwrap();
    env.wait_log_since(mark, "removed", WAIT).unwrap();
    // Exactly once: give it time to misbehave.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.messages().len(), 1, "{}", fake.summary());
    assert!(env.mailq().unwrap().stdout.contains("Mail queue is empty"));
    env.stop().unwrap();
}

#[test]
fn temporary_failure_is_retried_with_backoff() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    // Service-side load (OFFICE365.md §5): a plain deferral with backoff.
    // (432 4.3.2 slows the mailbox down instead: see the Exchange reply tests.)
    let reply = "451 4.7.0 Temporary server error. Please try again later. PRX4 [AM0PR01MB1234.eurprd01.prod.exchangelabs.com]";
    fake.script(Phase::DataEnd, Action::text(reply));
    env.start().unwrap();
    env.sendmail(&["admin@contoso.test"], b"Subject: retry me\n\nx\n")
        .unwrap()
        .ok()
        .unwrap();
    let line = env.wait_log("status=deferred", WAIT).unwrap();
    assert!(
        line.contains(&format!(
            "(host localhost[127.0.0.1] said: {reply} (in reply to end of DATA command))"
        )),
        "{line}"
    );
    assert!(line.contains("dsn=4.7.0"), "{line}");
    // minimal_backoff_time is 1s in the test baseline: the retry succeeds.
    fake.wait_messages(1, WAIT).unwrap();
    env.wait_log("removed", WAIT).unwrap();
    env.stop().unwrap();
}

#[test]
fn permanent_failure_bounces_with_a_dsn_carrying_the_exact_reply() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let reply = "550 5.7.60 SMTP; Client does not have permissions to send as this sender [AM0PR01MB1234.eurprd01.prod.exchangelabs.com 2026-11-22T05:50:00.123Z 08DE2A6028D26C22]";
    fake.script(Phase::DataEnd, Action::text(reply));
    env.start().unwrap();
    env.sendmail(
        &["-f", "scanner@contoso.test", "bob@contoso.test"],
        b"From: scanner@contoso.test\nSubject: scan\n\nscanned page\n",
    )
    .unwrap()
    .ok()
    .unwrap();
    let line = env.wait_log("status=bounced", WAIT).unwrap();
    assert!(line.contains("dsn=5.7.60"), "{line}");
    assert!(line.contains(reply), "{line}");
    // The DSN goes to the sender through the same smart host.
    let msgs = fake.wait_messages(1, WAIT).unwrap();
    let dsn = &msgs[0];
    assert_eq!(dsn.mail_from, "", "a DSN has the null sender");
    assert_eq!(dsn.rcpt_to, vec!["scanner@contoso.test"]);
    let text = dsn.text();
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: message/delivery-status"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; bob@contoso.test"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Status: 5.7.60"), "{text}");
    let unfolded = text.replace("\r\n    ", " ");
    assert!(
        unfolded.contains(&format!("Diagnostic-Code: smtp; {reply}")),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: message/rfc822") && text.contains("scanned page"),
        "{text}"
    );
    assert!(
        text.contains("Send As"),
        "the bounce should explain the fix:\n{text}"
    );
    // The original is gone; the log names the notification.
    env.wait_log(
        re(r"postern/bounce\[\d+\]: [0-9A-F]{12}: sender non-delivery notification: [0-9A-F]{12}"),
        WAIT,
    )
    .unwrap();
    env.wait_log_count(env_start_mark(), "removed", 2, WAIT)
        .unwrap();
    assert!(env.queue_files("deferred").is_empty() && env.queue_files("active").is_empty());
    env.stop().unwrap();
}

fn env_start_mark() -> postern_tests::harness::LogMark {
    postern_tests::harness::LogMark::default()
}

//! A destination that never answers: the sender gets a delay warning at
//! delay_warning_time and, after maximal_queue_lifetime, a bounce; the
//! message leaves the queue.

use postern_tests::harness::TestEnv;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

#[test]
fn delay_warning_then_expiry_bounce() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.route_to_closed_port("dead.test").unwrap();
    env.set_many(&[
        ("delay_warning_time", "2s"),
        ("maximal_queue_lifetime", "7s"),
        ("minimal_backoff_time", "1s"),
        ("maximal_backoff_time", "1s"),
    ])
    .unwrap();
    env.start().unwrap();
    env.sendmail(
        &["-f", "sender@contoso.test", "user@dead.test"],
        b"From: sender@contoso.test\nSubject: to nowhere\n\nbody\n",
    )
    .unwrap()
    .ok()
    .unwrap();
    let warning = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(warning.mail_from, "");
    assert_eq!(warning.rcpt_to, vec!["sender@contoso.test"]);
    let text = warning.text();
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)"),
        "{text}"
    );
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("Status: 4.4.1"), "{text}");
    assert!(text.contains("Will-Retry-Until: "), "{text}");
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    env.wait_log("sender delay notification", WAIT).unwrap();
    // After maximal_queue_lifetime: returned to sender.
    let line = env
        .wait_log("status=expired, returned to sender", WAIT)
        .unwrap();
    assert!(line.contains("from=<sender@contoso.test>"), "{line}");
    let msgs = fake.wait_messages(2, WAIT).unwrap();
    let bounce = msgs[1].text();
    assert!(
        bounce.contains("Subject: Undelivered Mail Returned to Sender"),
        "{bounce}"
    );
    assert!(bounce.contains("Action: failed"), "{bounce}");
    assert!(bounce.contains("Connection refused"), "{bounce}");
    env.wait_log("sender non-delivery notification", WAIT)
        .unwrap();
    // Exactly one warning and one bounce.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.messages().len(), 2, "{}", fake.summary());
    assert!(
        env.queue_files("deferred").is_empty(),
        "the expired message is still queued"
    );
    env.stop().unwrap();
}

//! smtpd when the queue file system is full: `452 4.3.1 Insufficient
//! system storage`, nothing partial left in the queue, and the next
//! message goes through once there is room again.

use postern_tests::harness::faults;
use postern_tests::harness::{TestEnv, re, running_as_root};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn queue_minfree_refuses_mail_before_any_data() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    env.set("queue_minfree", "1000000000000000000").unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO scanner").unwrap();
    let r = c.cmd("MAIL FROM:<scan@contoso.test>").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (452, "4.3.1 Insufficient system storage")
    );
    c.cmd("QUIT").unwrap();
    env.wait_log(
        re(r"warning: not enough free space in mail queue: \d+ bytes < 1\.5\*message size 0"),
        WAIT,
    )
    .unwrap();
}

#[test]
fn disk_full_during_data_answers_452_and_leaves_nothing() {
    if !running_as_root() {
        eprintln!("skipped: mounting a small file system for the queue needs root");
        return;
    }
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    let spool = env.spool.clone();
    // Declared after env: unmounted before env's drop stops the daemons.
    let _mount = faults::mount_tmpfs(&spool, "3m").unwrap();
    env.start().unwrap();
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO scanner").unwrap();
    // No SIZE: the MAIL check cannot know; the write runs out of room.
    assert_eq!(c.cmd("MAIL FROM:<scan@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    let line = format!("{}\r\n", "x".repeat(998));
    let mut body = String::from("Subject: a big scan\r\n\r\n");
    while body.len() < 6 * 1024 * 1024 {
        body.push_str(&line);
    }
    body.push_str(".\r\n");
    c.send(body.as_bytes()).unwrap();
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (452, "4.3.1 Insufficient system storage"),
        "{r}"
    );
    env.wait_log(
        re(r"warning: [0-9A-F]+: not enough space for the queue file"),
        WAIT,
    )
    .unwrap();
    // Nothing partial: no file in incoming (or anywhere in the queue).
    for q in ["incoming", "active", "deferred", "hold", "corrupt"] {
        assert!(
            env.queue_files(q).is_empty(),
            "{q}: {:?}",
            env.queue_files(q)
        );
    }
    // The same session goes on, and a message that fits is accepted and delivered.
    assert_eq!(c.cmd("MAIL FROM:<scan@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(b"Subject: a small scan\r\n\r\npage\r\n.\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert!(r.text.starts_with("2.0.0 Ok: queued as "), "{r}");
    c.cmd("QUIT").unwrap();
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert!(m[0].text().contains("Subject: a small scan"));
}

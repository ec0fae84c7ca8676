//! sendmail's other faces: -bs (SMTP on stdin/stdout), -bp (mailq),
//! errors with sysexits codes, and submission by an unprivileged user.

use postern_tests::harness::{TestEnv, running_as_root};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn bs_mode_speaks_smtp_on_stdin() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.start().unwrap();
    let session = "EHLO client\r\nMAIL FROM:<app@contoso.test>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\nSubject: via -bs\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    let out = env.sendmail(&["-bs"], session.as_bytes()).unwrap();
    assert!(out.success(), "{out}");
    let replies: Vec<&str> = out.stdout.lines().collect();
    assert!(
        replies[0].starts_with("220 relay.test.example ESMTP"),
        "{out}"
    );
    assert!(out.stdout.contains("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as "), "{out}");
    assert!(out.stdout.ends_with("221 2.0.0 Bye\r\n"), "{out}");
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].mail_from, "app@contoso.test");
    assert!(m[0].text().ends_with("\r\n.dot\r\n"), "{}", m[0].text());
    env.stop().unwrap();
}

#[test]
fn usage_and_data_errors_have_sysexits_codes() {
    let mut env = TestEnv::new().unwrap();
    env.create_queue().unwrap();
    let out = env
        .sendmail(&["-t"], b"Subject: nobody\n\nno recipients\n")
        .unwrap();
    assert_eq!(out.code(), Some(64), "{out}");
    assert!(
        out.stderr
            .contains("No recipient addresses found in message header"),
        "{out}"
    );
    let out = env.sendmail(&[], b"Subject: x\n\n").unwrap();
    assert_eq!(out.code(), Some(64), "{out}");
    let out = env.sendmail(&["-Z"], b"").unwrap();
    assert_eq!(out.code(), Some(64), "{out}");
    env.set("message_size_limit", "1000").unwrap();
    let big = format!("Subject: big\n\n{}\n", "x".repeat(5000));
    let out = env.sendmail(&["a@b.test"], big.as_bytes()).unwrap();
    assert_eq!(out.code(), Some(65), "{out}");
    assert!(env.queue_files("maildrop").is_empty());
}

#[test]
fn an_unprivileged_user_can_submit() {
    if !running_as_root() {
        eprintln!(
            "skipped: needs root to run sendmail as another user (the whole suite already runs unprivileged here)"
        );
        return;
    }
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.start().unwrap();
    let mut cmd = postern_tests::harness::command("sendmail").unwrap();
    cmd.arg("-C").arg(env.etc.join("main.cf")).arg("-t");
    use std::os::unix::process::CommandExt;
    cmd.uid(65534).gid(65534);
    let out = postern_tests::harness::process::run(
        cmd,
        Some(b"To: bob@contoso.test\nSubject: from nobody\n\nhi\n"),
        WAIT,
    )
    .unwrap();
    assert!(out.success(), "{out}");
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert!(
        m[0].text().contains("(postern, from userid 65534)"),
        "{}",
        m[0].text()
    );
    assert_eq!(m[0].mail_from, "nobody@relay.test.example");
    // Listing the queue is for root and mail_owner only (the index holds
    // the tracking records): a clear refusal, not an SQLite error.
    let mut cmd = postern_tests::harness::command("mailq").unwrap();
    cmd.arg("-C").arg(env.etc.join("main.cf"));
    cmd.uid(65534).gid(65534);
    let out = postern_tests::harness::process::run(cmd, None, WAIT).unwrap();
    assert_eq!(out.code(), Some(77), "{out}");
    let err = &out.stderr;
    assert!(
        err.contains("User nobody(65534) is not allowed to view the mail queue")
            && err.contains("run mailq with sudo"),
        "{err}"
    );
    let out = env.mailq().unwrap();
    assert!(out.success(), "{out}");
    env.stop().unwrap();
}

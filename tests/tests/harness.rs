//! Self-tests of the harness: configuration, start and stop, commands, log
//! waits, killing a daemon. They run the real programs (`cargo build --bins`
//! first) but test no mail flow; the scenarios live in other files.

use std::time::Duration;

use postern_tests::harness::{TestEnv, re};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn configuration_is_what_postconf_reads() {
    let mut env = TestEnv::new().unwrap();
    env.set("smtp_connect_timeout", "5s").unwrap();
    let out = env.postconf(&["-n"]).unwrap().ok().unwrap();
    let spool = format!("queue_directory = {}", env.spool.display());
    for want in [
        spool.as_str(),
        "myhostname = relay.test.example",
        "minimal_backoff_time = 1s",
        "smtp_connect_timeout = 5s",
    ] {
        assert!(out.stdout.lines().any(|l| l == want), "{want}\n{out}");
    }
    let owner = env.postconf(&["-h", "mail_owner"]).unwrap().ok().unwrap();
    assert_eq!(owner.stdout.trim(), env.owner.name);
}

#[test]
fn start_stop_and_restart_of_a_killed_daemon() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.start().unwrap();
    assert!(env.is_running());
    assert!(env.spool.join("maildrop").is_dir());
    let qmgr = env.daemon_pid("qmgr").expect("qmgr pid");
    let mark = env.log_mark();
    assert_eq!(env.kill_daemon("qmgr").unwrap(), qmgr);
    let new = env.wait_daemon_restart("qmgr", qmgr, WAIT).unwrap();
    assert_ne!(new, qmgr);
    env.wait_log_since(mark, "queue manager started", WAIT)
        .unwrap();
    let out = env.mailq().unwrap();
    assert!(out.stdout.contains("Mail queue is empty"), "{out}");
    env.stop().unwrap();
    assert!(!env.is_running());
    env.wait_log(re(r"postern/master\[\d+\]: .*daemon started"), WAIT)
        .unwrap();
    assert_eq!(fake.violations(), 0);
}

#[test]
fn sendmail_queues_while_stopped() {
    let mut env = TestEnv::new().unwrap();
    env.create_queue().unwrap();
    let out = env
        .sendmail(
            &["-f", "scanner@contoso.test", "bob@contoso.test"],
            b"Subject: queued while stopped\n\nhello\n",
        )
        .unwrap();
    assert!(out.success(), "{out}");
    assert_eq!(env.queue_files("maildrop").len(), 1, "{out}");
}

/// The baseline configuration plus `office365_fake` delivers: relayhost,
/// TLS verification against the test CA, SASL.
#[test]
fn baseline_configuration_reaches_the_fake() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.start().unwrap();
    let out = env
        .sendmail(
            &["-f", "scanner@contoso.test", "bob@contoso.test"],
            b"From: scanner@contoso.test\nSubject: baseline\n\nhello\n",
        )
        .unwrap();
    assert!(out.success(), "{out}");
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(
        m[0].auth_user.as_deref(),
        Some(postern_tests::harness::TEST_USER)
    );
    env.wait_log("status=sent", WAIT).unwrap();
    env.stop().unwrap();
    assert_eq!(fake.violations(), 0);
}

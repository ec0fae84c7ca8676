//! The supervisor: syslog output in Postfix's format, SIGHUP reload with a
//! changed configuration (and refusal of a broken one), restart of a
//! crashed daemon.

use postern_tests::fake::{FakeConfig, FakeSmartHost};
use postern_tests::harness::{TEST_PASSWORD, TEST_USER, TestEnv, re};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn syslog_lines_are_in_postfix_format() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.unset("maillog_file").unwrap();
    let sock_path = env.root.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(
        &sock_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let lines = lines.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    lines
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        })
    };
    let mut cmd = postern_tests::harness::command("postern").unwrap();
    cmd.arg("-c")
        .arg(&env.etc)
        .arg("start-fg")
        .env("POSTERN_SYSLOG_SOCKET", &sock_path);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let wait_for = |what: &str| {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no syslog line containing {what:?}; got:\n{}",
            lines.lock().unwrap().join("\n")
        );
    };
    wait_for("queue manager started");
    env.sendmail(&["admin@contoso.test"], b"Subject: syslog\n\nx\n")
        .unwrap()
        .ok()
        .unwrap();
    fake.wait_messages(1, WAIT).unwrap();
    let sent = wait_for("status=sent");
    // <facility mail (2) * 8 + info (6)>, the syslog time stamp, ident[pid].
    assert!(
        re(r"^<22>\w{3} [ 0-9]\d \d\d:\d\d:\d\d postern/smtp\[\d+\]: [0-9A-F]{12}: to=<admin@contoso\.test>, relay=localhost\[127\.0\.0\.1\]:\d+, (conn_use=\d+, )?delay=[0-9.]+, delays=[0-9./]+, dsn=2\.0\.0, status=sent \(250 2\.0\.0 OK .*\)$").matches(&sent),
        "{sent}"
    );
    let removed = wait_for(": removed");
    assert!(
        re(r"^<22>\w{3} [ 0-9]\d \d\d:\d\d:\d\d postern/qmgr\[\d+\]: [0-9A-F]{12}: removed$")
            .matches(&removed),
        "{removed}"
    );
    env.postern(&["stop"]).unwrap().ok().unwrap();
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    // Warnings carry Postfix's severity (LOG_WARNING = 4).
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("password") || l.contains(TEST_PASSWORD))
    );
}

#[test]
fn reload_applies_a_new_configuration_and_refuses_a_broken_one() {
    let mut env = TestEnv::new().unwrap();
    let first = env.office365_fake().unwrap();
    env.start().unwrap();
    env.sendmail(&["a@contoso.test"], b"Subject: one\n\n1\n")
        .unwrap()
        .ok()
        .unwrap();
    first.wait_messages(1, WAIT).unwrap();
    // A second smart host; switch to it with a reload.
    let second =
        FakeSmartHost::spawn(FakeConfig::office365(&env.pki.server).user(TEST_USER, TEST_PASSWORD))
            .unwrap();
    env.use_relayhost(&second).unwrap();
    env.reload().unwrap();
    env.wait_log(re(r"postern/qmgr\[\d+\]: queue manager started"), WAIT)
        .unwrap();
    env.sendmail(&["b@contoso.test"], b"Subject: two\n\n2\n")
        .unwrap()
        .ok()
        .unwrap();
    let m = second.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].rcpt_to, vec!["b@contoso.test"]);
    assert_eq!(
        first.messages().len(),
        1,
        "the old smart host got mail after the reload"
    );
    // A broken configuration is refused; the old one keeps working.
    env.set("minimal_backoff_time", "soon").unwrap();
    // `postern reload` checks first and says why it will not reload...
    let out = env.postern(&["reload"]).unwrap();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("main.cf:")
            && out
                .stderr
                .contains("bad value for minimal_backoff_time: \"soon\""),
        "{out}"
    );
    // ...and a SIGHUP sent by other means is refused by the supervisor.
    let mark = env.log_mark();
    let pid = env.master_pid().expect("supervisor pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    env.wait_log_since(mark, "reload refused", WAIT).unwrap();
    let log = env.log_text();
    assert!(
        log.contains("bad value for minimal_backoff_time: \"soon\""),
        "{log}"
    );
    assert!(env.is_running());
    env.sendmail(&["c@contoso.test"], b"Subject: three\n\n3\n")
        .unwrap()
        .ok()
        .unwrap();
    second.wait_messages(2, WAIT).unwrap();
    env.set("minimal_backoff_time", "1s").unwrap();
    env.stop().unwrap();
}

#[test]
fn corrupt_queue_files_are_set_aside_and_the_rest_flows() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.create_queue().unwrap();
    // A truncated file and garbage where queue files go, plus a good message.
    std::fs::write(
        env.spool.join("incoming").join("0123456789AB"),
        b"POSTERN-QUEUE 1\narrival 1.0\nsender a\n",
    )
    .unwrap();
    std::fs::write(
        env.spool.join("deferred").join("ABCDEF012345"),
        b"\x00\x01garbage",
    )
    .unwrap();
    env.sendmail(&["admin@contoso.test"], b"Subject: good\n\nfine\n")
        .unwrap()
        .ok()
        .unwrap();
    env.start().unwrap();
    fake.wait_messages(1, WAIT).unwrap();
    env.wait_log("removed", WAIT).unwrap();
    let corrupt = env.queue_files("corrupt");
    assert!(
        corrupt.contains(&"0123456789AB".to_string())
            && corrupt.contains(&"ABCDEF012345".to_string()),
        "{corrupt:?}"
    );
    let reason =
        std::fs::read_to_string(env.spool.join("corrupt").join("0123456789AB.reason")).unwrap();
    assert!(
        reason.contains("incomplete file") || reason.contains("end marker"),
        "{reason}"
    );
    env.wait_log(re(r"0123456789AB: unreadable queue file: .*moved to"), WAIT)
        .unwrap();
    env.stop().unwrap();
}

//! Hostile input: SMTP smuggling vectors, PROXY protocol, per-client limits,
//! and 500 concurrent sessions with bounded memory.

use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The published SMTP smuggling set (SEC Consult, 2023) and variants: none
/// of these ends DATA, so each session yields exactly one message.
const VECTORS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r.\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\r\n.\r\r\n",
];

#[test]
fn smuggling_vectors_never_split_a_message() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    for (i, v) in VECTORS.iter().enumerate() {
        let (mut c, _) = Smtp::connect(port, None).unwrap();
        c.cmd("EHLO smuggler").unwrap();
        c.cmd("MAIL FROM:<a@contoso.test>").unwrap();
        c.cmd("RCPT TO:<b@contoso.test>").unwrap();
        assert_eq!(c.cmd("DATA").unwrap().code, 354);
        let mut m = format!("Subject: vector {i}\r\n\r\nbefore").into_bytes();
        m.extend_from_slice(v);
        m.extend_from_slice(b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@contoso.test>\r\nDATA\r\nSubject: SMUGGLED\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n");
        c.send(&m).unwrap();
        let r = c.reply().unwrap();
        assert_eq!(r.code, 250, "vector {i} {v:?}: {r}");
        let r = c.reply().unwrap();
        assert_eq!(
            r.code, 221,
            "vector {i} {v:?}: after the one message the next reply must be QUIT's, got {r}"
        );
    }
    let msgs = fake.wait_messages(VECTORS.len(), WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let msgs2 = fake.messages();
    assert_eq!(
        msgs2.len(),
        VECTORS.len(),
        "a vector produced a second message: {}",
        fake.summary()
    );
    assert!(
        msgs.iter().all(|m| m.mail_from == "a@contoso.test"),
        "a smuggled MAIL FROM was honoured"
    );
    // The smuggled text travels as body text, never as a message of its own.
    assert!(
        msgs.iter()
            .all(|m| m.rcpt_to == vec!["b@contoso.test".to_string()])
    );
}

#[test]
fn bare_newlines_can_be_rejected() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    let port = env
        .add_smtpd(&["smtpd_forbid_bare_newline=reject"])
        .unwrap();
    env.start().unwrap();
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO old").unwrap();
    c.cmd("MAIL FROM:<a@contoso.test>").unwrap();
    c.cmd("RCPT TO:<b@contoso.test>").unwrap();
    c.cmd("DATA").unwrap();
    c.send(b"Subject: bare\n\nline\n.\r\n").unwrap();
    c.send(b"\r\n.\r\n").unwrap();
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.5.2 Error: bare <LF> received")
    );
    // A command line ending in a bare LF is refused too.
    c.send(b"NOOP\n").unwrap();
    let r = c.reply().unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.5.2 Error: bare <LF> received")
    );
    assert_eq!(c.cmd("NOOP").unwrap().code, 250);
}

#[test]
fn proxy_protocol_gives_the_real_client() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    let port = env
        .add_smtpd(&["smtpd_upstream_proxy_protocol=haproxy"])
        .unwrap();
    env.set("mynetworks", "127.0.0.0/8").unwrap();
    env.start().unwrap();
    let mut c = Smtp::connect_raw(port, None).unwrap();
    c.send(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 220);
    c.cmd("EHLO behind.lb").unwrap();
    c.cmd("MAIL FROM:<a@contoso.test>").unwrap();
    // 198.51.100.7 is not in mynetworks, whatever the proxy's address.
    let r = c.cmd("RCPT TO:<x@elsewhere.test>").unwrap();
    assert_eq!(r.code, 554, "{r}");
    env.wait_log(re(r"connect from unknown\[198\.51\.100\.7\]"), WAIT)
        .unwrap();
    // Without the header the connection is dropped.
    let mut c = Smtp::connect_raw(port, None).unwrap();
    c.send(b"EHLO no-proxy-header\r\n").unwrap();
    assert!(c.reply().is_err());
}

#[test]
fn per_client_connection_limit() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    env.set_many(&[
        ("smtpd_client_connection_count_limit", "2"),
        ("smtpd_client_event_limit_exceptions", ""),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    let (_a, g) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    assert_eq!(g.code, 220);
    let (_b, g) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    assert_eq!(g.code, 220);
    let (_c, g) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    assert_eq!(g.code, 421, "{g}");
    assert!(
        g.text.contains("too many connections from 127.0.0.2"),
        "{g}"
    );
    env.wait_log(re(r"warning: Connection concurrency limit exceeded: 3 from unknown\[127\.0\.0\.2\] for service 127\.0\.0\.1:\d+"), WAIT).unwrap();
    // Another client is not affected.
    let (_d, g) = Smtp::connect(port, Some("127.0.0.1")).unwrap();
    assert_eq!(g.code, 220);
}

#[test]
fn five_hundred_concurrent_sessions() {
    let mut env = TestEnv::new().unwrap();
    let maildir = env.maildir("Maildir").unwrap();
    env.set_many(&[
        (
            "default_transport",
            &format!("maildir:{}", maildir.display()),
        ),
        ("default_process_limit", "600"),
        ("smtpd_client_connection_count_limit", "0"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    const N: usize = 500;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(), String> {
                    let (mut c, g) = Smtp::connect(port, None).map_err(|e| e.to_string())?;
                    if g.code != 220 {
                        return Err(format!("greeting {g}"));
                    }
                    // All 500 sessions are open at the same time.
                    barrier.wait();
                    c.cmd("EHLO load").map_err(|e| e.to_string())?;
                    c.cmd("MAIL FROM:<load@contoso.test>")
                        .map_err(|e| e.to_string())?;
                    c.cmd(&format!("RCPT TO:<r{i}@contoso.test>"))
                        .map_err(|e| e.to_string())?;
                    c.cmd("DATA").map_err(|e| e.to_string())?;
                    c.send(
                        format!("Subject: load {i}\r\n\r\n{}\r\n.\r\n", "y".repeat(4000))
                            .as_bytes(),
                    )
                    .map_err(|e| e.to_string())?;
                    let r = c.reply().map_err(|e| e.to_string())?;
                    if r.code != 250 {
                        return Err(format!("end of data {r}"));
                    }
                    let _ = c.cmd("QUIT");
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    let mut peak_rss_kb = 0u64;
    let smtpd = env.daemon_pid("smtpd");
    let mut errors = Vec::new();
    for h in handles {
        if let Some(pid) = smtpd {
            peak_rss_kb = peak_rss_kb.max(rss_kb(pid));
        }
        if let Err(e) = h.join().unwrap() {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} sessions failed, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    // Every accepted message is delivered.
    let new = maildir.join("new");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) < N
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0), N);
    eprintln!(
        "500 concurrent sessions: smtpd peak RSS {} MiB",
        peak_rss_kb / 1024
    );
    assert!(
        peak_rss_kb < 256 * 1024,
        "smtpd used {peak_rss_kb} KiB for 500 sessions"
    );
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn per_client_connection_and_message_rates() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    env.set_many(&[
        ("smtpd_client_connection_rate_limit", "3"),
        ("smtpd_client_message_rate_limit", "2"),
        ("smtpd_client_event_limit_exceptions", ""),
        ("mynetworks", "127.0.0.0/8"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    // Two messages in one session, the third MAIL is refused.
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.3")).unwrap();
    c.cmd("EHLO busy").unwrap();
    for _ in 0..2 {
        assert_eq!(c.cmd("MAIL FROM:<a@contoso.test>").unwrap().code, 250);
        c.cmd("RSET").unwrap();
    }
    let r = c.cmd("MAIL FROM:<a@contoso.test>").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (450, "4.7.1 Error: too much mail from 127.0.0.3")
    );
    c.cmd("QUIT").unwrap();
    env.wait_log(re(r"warning: Message delivery request rate limit exceeded: 3 from unknown\[127\.0\.0\.3\] for service "), WAIT).unwrap();
    // Connections: this was the first; two more pass, the fourth is refused.
    for _ in 0..2 {
        let (mut c, g) = Smtp::connect(port, Some("127.0.0.3")).unwrap();
        assert_eq!(g.code, 220);
        c.cmd("QUIT").unwrap();
    }
    let (_c, g) = Smtp::connect(port, Some("127.0.0.3")).unwrap();
    assert_eq!(
        (g.code, g.text.as_str()),
        (
            421,
            "4.7.0 relay.test.example Error: too many connections from 127.0.0.3"
        )
    );
    env.wait_log(
        re(r"warning: Connection rate limit exceeded: 4 from unknown\[127\.0\.0\.3\] for service "),
        WAIT,
    )
    .unwrap();
}

//! Hostile input: SMTP smuggling vectors, PROXY protocol, per-client limits,
//! and 500 concurrent sessions with bounded memory.

use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// What a server made of one smuggling attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// One message, the smuggled commands inside its body.
    One,
    /// The message refused: `550 5.5.2 ... Error: bare <LF> received`.
    Rejected,
    /// DATA ended at the fake end: the pipelined MAIL/RCPT/DATA after it
    /// made a second message with the forged sender (without them, the
    /// first message is cut short and the rest is read as commands).
    Smuggled,
}
use Outcome::{One, Rejected, Smuggled};

/// The SMTP smuggling vectors: SEC Consult's (December 2023) and the
/// variants published since, each a fake end of data written right after
/// the word `before` of a message body.
///
/// Every vector was sent in five ways (see [`Variant`]) to Postfix 3.7.11
/// (Debian's package, a separate instance in a temporary directory with
/// `postfix -c`, `smtpd_forbid_bare_newline_exclusions =` empty, one
/// listener per setting) and to postern; the columns are the outcome for
/// the DATA variants with pipelined commands after the fake end (BDAT
/// gives One or Rejected everywhere, as its length is counted in bytes):
///
/// ```text
///                        Postfix 3.7.11 smtpd_forbid_bare_newline=  postern smtpd_forbid_bare_newline=
/// vector                 no (3.7 default)  normalize/yes  reject    normalize (default)  reject    no
/// \n.\n                  Smuggled          One            Rejected  One                  Rejected  One
/// \n.\r\n                Smuggled          One            Rejected  One                  Rejected  One
/// \r.\n                  One               One            Rejected  One                  Rejected  One
/// \r.\r                  One               One            One       One                  One       One
/// \r\n.\r                One               One            One       One                  One       One
/// \r\n.\n                Smuggled          One            Rejected  One                  Rejected  One
/// \n.\r                  One               One            Rejected  One                  Rejected  One
/// \r.\r\n                One               One            One       One                  One       One
/// \r\n\0.\r\n            One               One            One       One                  One       One
/// \r\n.\0\r\n            One               One            One       One                  One       One
/// \r\r\n.\r\r\n          Smuggled          One            One       One                  One       One
/// \r\n.\r\r\n            Smuggled          One            One       One                  One       One
/// \r\n.\n\r\n            Smuggled          One            Rejected  One                  Rejected  One
/// \n\n.\n\n              Smuggled          One            Rejected  One                  Rejected  One
/// \r\r\n.\r              One               One            One       One                  One       One
/// \r\n \r\n.\n           Smuggled          One            Rejected  One                  Rejected  One
/// \n\r.\r\n              One               One            Rejected  One                  Rejected  One
/// \r\n.\r\0\n            One               One            Rejected  One                  Rejected  One
/// ```
///
/// postern's `normalize` and `reject` give exactly Postfix's outcomes (the
/// test checks postern against the Postfix columns kept here); postern's
/// `no` keeps bare line ends in the message but still ends DATA only at
/// `<CR><LF>.<CR><LF>`, so unlike Postfix's `no` it is never smuggled.
/// Differences from Postfix 3.7.11 seen on the way (not smuggling):
/// Postfix's reply names the host (`550 5.5.2 <myhostname> Error: bare
/// <LF> received`), logs `reject: END-OF-MESSAGE ...: bare <LF> received`,
/// and hangs up after refusing a command line that ends in a bare LF,
/// where postern answers 550 and reads on.
const VECTORS: &[(&[u8], [Outcome; 3])] = &[
    // (vector, Postfix 3.7.11 [no, normalize, reject])
    (b"\n.\n", [Smuggled, One, Rejected]),
    (b"\n.\r\n", [Smuggled, One, Rejected]),
    (b"\r.\n", [One, One, Rejected]),
    (b"\r.\r", [One, One, One]),
    (b"\r\n.\r", [One, One, One]),
    (b"\r\n.\n", [Smuggled, One, Rejected]),
    (b"\n.\r", [One, One, Rejected]),
    (b"\r.\r\n", [One, One, One]),
    (b"\r\n\x00.\r\n", [One, One, One]),
    (b"\r\n.\x00\r\n", [One, One, One]),
    (b"\r\r\n.\r\r\n", [Smuggled, One, One]),
    (b"\r\n.\r\r\n", [Smuggled, One, One]),
    (b"\r\n.\n\r\n", [Smuggled, One, Rejected]),
    (b"\n\n.\n\n", [Smuggled, One, Rejected]),
    (b"\r\r\n.\r", [One, One, One]),
    (b"\r\n \r\n.\n", [Smuggled, One, Rejected]),
    (b"\n\r.\r\n", [One, One, Rejected]),
    (b"\r\n.\r\x00\n", [One, One, Rejected]),
];

/// What follows the fake end: a whole second transaction with a forged
/// sender, ended properly.
const SMUGGLED: &[u8] = b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@contoso.test>\r\nDATA\r\nSubject: SMUGGLED\r\n\r\nsmuggled\r\n.\r\n";
/// What follows it when nothing is pipelined: more body text.
const PLAIN_TAIL: &[u8] = b"Subject: not-a-command\r\nmore text\r\n.\r\n";

/// How the attempt is sent.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// DATA; body, fake end, smuggled transaction and QUIT in one write.
    Pipelined,
    /// The same in two writes, split right after the fake end.
    Split,
    /// DATA; body, fake end, more body text, the real end, QUIT.
    Plain,
    /// `BDAT n LAST` with body, fake end and smuggled transaction, QUIT.
    Bdat,
    /// Two BDAT chunks, the first ending with the fake end.
    BdatChunks,
}
const VARIANTS: [Variant; 5] = [
    Variant::Pipelined,
    Variant::Split,
    Variant::Plain,
    Variant::Bdat,
    Variant::BdatChunks,
];

/// Sends one attempt; returns the replies after DATA/BDAT up to QUIT's.
fn smuggle(port: u16, subject: &str, vector: &[u8], variant: Variant) -> Vec<String> {
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO smuggler.test").unwrap();
    assert_eq!(c.cmd("MAIL FROM:<a@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@contoso.test>").unwrap().code, 250);
    let mut body = format!("Subject: {subject}\r\n\r\nbefore").into_bytes();
    body.extend_from_slice(vector);
    let tail = match variant {
        Variant::Plain => PLAIN_TAIL,
        _ => SMUGGLED,
    };
    let mut replies = Vec::new();
    match variant {
        Variant::Pipelined | Variant::Split | Variant::Plain => {
            assert_eq!(c.cmd("DATA").unwrap().code, 354);
            if let Variant::Split = variant {
                c.send(&body).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                body.clear();
            }
            body.extend_from_slice(tail);
            body.extend_from_slice(b"QUIT\r\n");
            c.send(&body).unwrap();
        }
        Variant::Bdat => {
            body.extend_from_slice(tail);
            let mut wire = format!("BDAT {} LAST\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b"QUIT\r\n");
            c.send(&wire).unwrap();
        }
        Variant::BdatChunks => {
            let mut wire = format!("BDAT {}\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(format!("BDAT {} LAST\r\n", tail.len()).as_bytes());
            wire.extend_from_slice(tail);
            wire.extend_from_slice(b"QUIT\r\n");
            c.send(&wire).unwrap();
        }
    }
    loop {
        match c.reply() {
            Ok(r) => {
                let quit = r.code == 221;
                replies.push(r.to_string());
                if quit {
                    break;
                }
            }
            Err(e) => {
                replies.push(format!("<{e}>"));
                break;
            }
        }
    }
    replies
}

/// Every vector, sent every way, to listeners with each
/// `smtpd_forbid_bare_newline` setting: one message (with the smuggled text
/// as body) or a refusal, never a second message; see [`VECTORS`] for the
/// comparison with Postfix 3.7.11.
#[test]
fn smuggling_vectors_never_split_a_message() {
    let mut env = TestEnv::new().unwrap();
    let maildir = env.deliver_to_maildir("Maildir").unwrap();
    // (setting, index of the Postfix column postern must match; None: One)
    let modes: [(&str, Option<usize>); 3] =
        [("normalize", Some(1)), ("reject", Some(2)), ("no", None)];
    let ports: Vec<u16> = modes
        .iter()
        .map(|(m, _)| {
            env.add_smtpd(&[&format!("smtpd_forbid_bare_newline={m}")])
                .unwrap()
        })
        .collect();
    env.start().unwrap();
    let mut want_messages = Vec::new();
    let mut failures = Vec::new();
    for (i, (vector, postfix)) in VECTORS.iter().enumerate() {
        for variant in VARIANTS {
            for ((mode, column), port) in modes.iter().zip(&ports) {
                let want = column.map(|c| postfix[c]).unwrap_or(One);
                assert_ne!(want, Smuggled, "postern never expects smuggling");
                let subject = format!("vector {i} {variant:?} {mode}");
                let replies = smuggle(*port, &subject, vector, variant);
                let chunk_ok = "250 2.0.0 Ok: ".to_string();
                let mut got: Vec<&str> = replies.iter().map(String::as_str).collect();
                if let Variant::BdatChunks = variant
                    && got.first().is_some_and(|r| r.starts_with(&chunk_ok))
                {
                    got.remove(0);
                }
                let ok = match want {
                    One => {
                        got.len() == 2
                            && got[0].starts_with("250 2.0.0 Ok: queued as ")
                            && got[1] == "221 2.0.0 Bye"
                    }
                    _ => got == ["550 5.5.2 Error: bare <LF> received", "221 2.0.0 Bye"],
                };
                if !ok {
                    failures.push(format!(
                        "{subject} {}: want {want:?}, got {replies:?}",
                        vector.escape_ascii()
                    ));
                }
                if want == One {
                    want_messages.push((subject, variant));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Exactly the expected messages arrive, each once, from the real
    // sender, with the smuggled transaction as body text.
    let new = maildir.join("new");
    let count = || std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0);
    let deadline = std::time::Instant::now() + WAIT;
    while count() < want_messages.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut delivered: Vec<String> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned())
        .collect();
    assert_eq!(
        delivered.len(),
        want_messages.len(),
        "messages delivered vs expected"
    );
    for m in &delivered {
        assert!(
            m.starts_with("Return-Path: <a@contoso.test>\nDelivered-To: b@contoso.test\n"),
            "a smuggled envelope was honoured:\n{m}"
        );
    }
    for (subject, variant) in &want_messages {
        let line = format!("\nSubject: {subject}\n");
        let n = delivered.iter().filter(|m| m.contains(&line)).count();
        assert_eq!(n, 1, "{subject}: {n} messages");
        let m = delivered.iter().find(|m| m.contains(&line)).unwrap();
        let inside = match variant {
            Variant::Plain => "more text",
            _ => "MAIL FROM:<evil@evil.test>",
        };
        assert!(
            m.contains(inside),
            "{subject}: the tail is not in the body:\n{m}"
        );
    }
    delivered.clear();
    assert!(env.queue_files("incoming").is_empty());
    assert!(env.queue_files("active").is_empty());
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
    let maildir = env.deliver_to_maildir("Maildir").unwrap();
    env.set_many(&[
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

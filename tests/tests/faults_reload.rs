//! Reload and restart under load (issue 7 part B, item 5): while SMTP
//! clients send continuously, sendmail submits, some sessions sit idle
//! after EHLO and some are in the middle of DATA, postern gets a SIGHUP
//! with a changed main.cf (banner and message_size_limit), and separately
//! `postern stop` then `postern start`. Every client sees complete,
//! well-formed replies, or a `421`, or a closed connection, before any
//! `250`; nothing acknowledged is lost; the new configuration is in force
//! afterwards. Also: SIGTERM reaching pickup in the middle of a batch (as
//! every stop and reload sends it) queues no message twice.

use postern_tests::fake::{FakeConfig, FakeSmartHost};
use postern_tests::harness::TestEnv;
use postern_tests::harness::faults::{self, Client, Failure, Load, LoadConfig, LoadReport};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Where a hand-driven session waits for the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pose {
    /// Connected, EHLO answered, nothing else sent.
    Idle,
    /// DATA accepted and half of the message sent.
    MidData,
}

/// How a hand-driven session ended.
#[derive(Debug)]
struct Outcome {
    id: String,
    pose: Pose,
    /// A `250` to the end of DATA.
    acked: bool,
    /// What happened, for the summary.
    how: String,
    /// A broken or out-of-protocol reply.
    garbled: Option<String>,
}

/// A session put in position before the fault and finished after it.
struct Session {
    go: mpsc::Sender<()>,
    thread: JoinHandle<Outcome>,
}

fn session(port: u16, pose: Pose, id: &str) -> Session {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let id = id.to_string();
    let thread = std::thread::spawn(move || {
        let mut out = Outcome {
            id: id.clone(),
            pose,
            acked: false,
            how: String::new(),
            garbled: None,
        };
        let body = format!("{}.\r\n", faults::message(&id, 8192));
        let (first, rest) = body.split_at(body.len() / 2);
        let setup = (|| -> Result<Client, String> {
            let (mut c, g) = Client::connect(port, WAIT).map_err(|e| e.to_string())?;
            let mut steps = vec![("EHLO hand.test", 250)];
            if pose == Pose::MidData {
                steps.extend([
                    ("MAIL FROM:<hand@contoso.test>", 250),
                    ("RCPT TO:<bob@contoso.test>", 250),
                    ("DATA", 354),
                ]);
            }
            if g.code != 220 {
                return Err(format!("greeting {g}"));
            }
            for (line, want) in steps {
                let r = c.cmd(line).map_err(|e| e.to_string())?;
                if r.code != want {
                    return Err(format!("{line}: {r}"));
                }
            }
            if pose == Pose::MidData {
                c.send(first.as_bytes()).map_err(|e| e.to_string())?;
            }
            Ok(c)
        })();
        let mut c = match setup {
            Ok(c) => {
                let _ = ready_tx.send(Ok(()));
                c
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.clone()));
                out.how = format!("setup failed: {e}");
                return out;
            }
        };
        let _ = go_rx.recv();
        // After the fault: finish the message.
        let mut steps: Vec<(&str, u16)> = Vec::new();
        if pose == Pose::Idle {
            steps.extend([
                ("MAIL FROM:<hand@contoso.test>", 250),
                ("RCPT TO:<bob@contoso.test>", 250),
                ("DATA", 354),
            ]);
        }
        let judge =
            |out: &mut Outcome, what: &str, r: Result<faults::Reply, Failure>, want: u16| -> bool {
                match r {
                    Ok(r) if r.code == want => true,
                    Ok(r) if r.code == 421 => {
                        out.how = format!("421 at {what}: {r}");
                        false
                    }
                    Ok(r) if r.code >= 400 => {
                        out.how = format!("{} at {what}", r.code);
                        false
                    }
                    Ok(r) => {
                        out.garbled = Some(format!("{what}: unexpected {r}"));
                        false
                    }
                    Err(Failure::Garbled(g)) => {
                        out.garbled = Some(format!("{what}: {g}"));
                        false
                    }
                    Err(e) => {
                        out.how = format!("{e} at {what}");
                        false
                    }
                }
            };
        for (line, want) in steps {
            let r = c.cmd(line);
            if !judge(&mut out, line, r, want) {
                return out;
            }
        }
        let data = if pose == Pose::Idle {
            body.as_str()
        } else {
            rest
        };
        if let Err(e) = c.send(data.as_bytes()) {
            out.how = format!("{e} while sending the message");
            return out;
        }
        let r = c.reply();
        if judge(&mut out, "end of data", r, 250) {
            out.acked = true;
            out.how = "250".into();
            let _ = c.cmd("QUIT");
        }
        out
    });
    match ready_rx.recv_timeout(WAIT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("session {pose:?} could not get in position: {e}"),
        Err(e) => panic!("session {pose:?} not ready: {e}"),
    }
    Session { go: go_tx, thread }
}

/// Opens `idle` idle and `mid` mid-DATA sessions.
fn sessions(port: u16, tag: &str, idle: usize, mid: usize) -> Vec<Session> {
    let mut v = Vec::new();
    for i in 0..idle {
        v.push(session(port, Pose::Idle, &format!("{tag}-idle-{i}")));
    }
    for i in 0..mid {
        v.push(session(port, Pose::MidData, &format!("{tag}-mid-{i}")));
    }
    v
}

fn release(v: Vec<Session>) -> Vec<Outcome> {
    for s in &v {
        let _ = s.go.send(());
    }
    v.into_iter()
        .map(|s| s.thread.join().expect("session thread"))
        .collect()
}

fn setup() -> (TestEnv, FakeSmartHost, u16) {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(FakeConfig::generic()).unwrap();
    env.set_many(&[
        ("relayhost", &fake.relayhost()),
        ("smtp_tls_security_level", "none"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    (env, fake, port)
}

fn load(port: u16, env: &TestEnv, prefix: &str) -> Load {
    let mut cfg = LoadConfig::new(port, &env.etc, prefix);
    cfg.smtp_threads = 3;
    cfg.sendmail_threads = 1;
    cfg.pause = Duration::from_millis(100);
    cfg.timeout = Duration::from_secs(20);
    Load::start(cfg)
}

/// Checks the outcome of a fault: no garbled reply anywhere, every
/// acknowledged message delivered, and no duplicate.
fn check(env: &TestEnv, fake: &FakeSmartHost, what: &str, report: &LoadReport, hand: &[Outcome]) {
    let mut acked = report.acked();
    acked.extend(hand.iter().filter(|o| o.acked).map(|o| o.id.clone()));
    let garbled: Vec<String> = report
        .garbled
        .iter()
        .cloned()
        .chain(hand.iter().filter_map(|o| o.garbled.clone()))
        .collect();
    for o in hand {
        eprintln!("{what}: {:?} session {}: {}", o.pose, o.id, o.how);
    }
    let waited = fake.wait_until("every acknowledged message delivered", WAIT, |r| {
        faults::tally(&acked, &r.messages).lost.is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = faults::tally(&acked, &fake.messages());
    eprintln!("{what}: load {report}");
    eprintln!("{what}: {t}");
    assert!(garbled.is_empty(), "{what}: broken replies: {garbled:#?}");
    if let Err(e) = waited {
        let l = env.log_lines();
        panic!(
            "{what}: acknowledged messages lost: {:?}\n{e:#}\n{}",
            t.lost,
            l[l.len().saturating_sub(60)..].join("\n")
        );
    }
    assert_eq!(t.duplicates, 0, "{what}: {t}; {:?}", t.duplicated);
    // Timeouts would mean a client was left hanging.
    for o in hand {
        assert!(!o.how.contains("timeout"), "{what}: {o:?}");
    }
    assert!(
        report.failures.keys().all(|k| !k.contains("timeout")),
        "{what}: {report}"
    );
}

#[test]
fn sighup_with_a_changed_configuration_under_load_loses_nothing_and_breaks_no_reply() {
    let (mut env, fake, port) = setup();
    let load1 = load(port, &env, "hup");
    std::thread::sleep(Duration::from_secs(2));
    // Two groups of hand-driven sessions: the first goes on as soon as
    // the supervisor logs the reload, the second once the old queue
    // manager has stopped (the supervisor then sends SIGTERM to smtpd,
    // whose sessions end at their next command).
    let early = sessions(port, "hup-early", 2, 2);
    let late = sessions(port, "hup-late", 3, 2);
    env.set_many(&[
        ("smtpd_banner", "$myhostname ESMTP reloaded"),
        ("message_size_limit", "20480000"),
    ])
    .unwrap();
    let mark = env.log_mark();
    env.reload().unwrap();
    let mut hand = release(early);
    env.wait_log_since(mark, "queue manager stopped", WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let late = release(late);
    // The shutdown path was taken: idle sessions of the old smtpd are
    // told 421 (or closed) instead of being served.
    assert!(
        late.iter()
            .filter(|o| o.pose == Pose::Idle)
            .all(|o| !o.acked && (o.how.starts_with("421") || o.how.contains("closed"))),
        "{late:#?}"
    );
    hand.extend(late);
    // The mid-DATA sessions finish on the old smtpd: their messages are
    // accepted (and must be delivered).
    for o in hand.iter().filter(|o| o.pose == Pose::MidData) {
        assert!(o.acked, "{o:?}");
    }
    // The new configuration is in force for new sessions.
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut c, g) = Client::connect(port, WAIT).unwrap();
        if g.text().ends_with("ESMTP reloaded") {
            let ehlo = c.cmd("EHLO check.test").unwrap();
            assert!(ehlo.lines.iter().any(|l| l == "SIZE 20480000"), "{ehlo}");
            let _ = c.cmd("QUIT");
            break;
        }
        assert!(Instant::now() < deadline, "still the old banner: {g}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load1.stop();
    assert!(
        report.banners.keys().any(|b| b.ends_with("ESMTP reloaded")),
        "{:?}",
        report.banners
    );
    check(&env, &fake, "reload", &report, &hand);
    env.stop().unwrap();
}

#[test]
fn stop_and_start_under_load_loses_nothing_and_breaks_no_reply() {
    let (mut env, fake, port) = setup();
    let load1 = load(port, &env, "restart");
    std::thread::sleep(Duration::from_secs(2));
    let hand = sessions(port, "restart", 3, 2);
    // `postern stop` while the sessions are open; they go on a moment
    // after the stop began.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        release(hand)
    });
    let t0 = Instant::now();
    env.stop().unwrap();
    let stopped_in = t0.elapsed();
    let hand = releaser.join().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    env.start().unwrap();
    eprintln!("stopped in {:.1}s", stopped_in.as_secs_f64());
    // The load resumes by itself.
    let acked = load1.acked_so_far();
    let deadline = Instant::now() + WAIT;
    while load1.acked_so_far() < acked + 10 {
        assert!(
            Instant::now() < deadline,
            "no mail accepted after the start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = load1.stop();
    check(&env, &fake, "stop/start", &report, &hand);
    env.stop().unwrap();
}

/// `postern stop` (or a reload, or the supervisor's death) sends SIGTERM to
/// pickup. Arriving while pickup moves a batch from maildrop/ into the
/// queue — after the new queue files got their names, before the maildrop
/// originals were removed — it must not make the next pickup queue the
/// same messages again.
#[test]
fn sigterm_to_pickup_in_the_middle_of_a_batch_queues_each_message_once() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{Read, Seek, SeekFrom};
    let (mut env, fake, _port) = setup();
    let pickup = env.daemon_pid("pickup").unwrap();
    kill(Pid::from_raw(pickup), Signal::SIGSTOP).unwrap();
    // A pile of submissions for one big batch.
    let n = 240;
    let etc = env.etc.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let etc = etc.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in (t..n).step_by(4) {
                    let id = format!("batch-{i}");
                    let mut cmd = faults::sendmail_command(&etc).unwrap();
                    cmd.args(["-f", "load@contoso.test", "bob@contoso.test"]);
                    let body = faults::message(&id, 1024).replace("\r\n", "\n");
                    let out =
                        postern_tests::harness::process::run(cmd, Some(body.as_bytes()), WAIT)
                            .unwrap();
                    assert!(out.success(), "{out}");
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(env.queue_files("maildrop").len(), n);
    // Go on, and stop it as soon as it logs the first message of the
    // batch as queued (the renames are under way).
    let mut log = std::fs::File::open(&env.maillog).unwrap();
    let mut pos = log.seek(SeekFrom::End(0)).unwrap();
    let tag = format!("postern/pickup[{pickup}]: ");
    kill(Pid::from_raw(pickup), Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    loop {
        let mut buf = String::new();
        log.seek(SeekFrom::Start(pos)).unwrap();
        pos += log.read_to_string(&mut buf).unwrap() as u64;
        seen.push_str(&buf);
        if seen
            .lines()
            .any(|l| l.contains(&tag) && l.contains(": uid="))
        {
            kill(Pid::from_raw(pickup), Signal::SIGTERM).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "pickup queued nothing");
        std::thread::yield_now();
    }
    // The supervisor starts a new pickup, which takes what is left.
    fake.wait_until("every message delivered", Duration::from_secs(90), |r| {
        faults::tally(&ids, &r.messages).lost.is_empty()
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = faults::tally(&ids, &fake.messages());
    eprintln!("SIGTERM to pickup mid-batch: {t}");
    assert_eq!(
        t.duplicates,
        0,
        "{t}: {:?}",
        t.duplicated.keys().take(10).collect::<Vec<_>>()
    );
    assert!(env.queue_files("maildrop").is_empty());
    env.stop().unwrap();
}

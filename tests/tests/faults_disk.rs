//! Disk full (issue 7 part B, item 3), with a small tmpfs as
//! queue_directory (mounting needs root; the test is skipped otherwise):
//! with messages already queued, the file system fills up; smtpd answers
//! `452 4.3.1 Insufficient system storage`, sendmail exits 75
//! (EX_TEMPFAIL) saying the queue is full, nothing half-written stays in
//! the queue and no daemon dies; once there is room again both take mail
//! and everything queued before and after is delivered exactly once.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use postern_tests::harness::faults::{self, Client};
use postern_tests::harness::{TestEnv, re, running_as_root};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Every name under `dir`, dot files included, relative to `dir`.
fn all_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One message over SMTP; the replies of each step (ending at the first
/// that is not the expected one).
fn smtp_send(port: u16, id: &str, size: usize) -> Vec<faults::Reply> {
    let (mut c, g) = Client::connect(port, WAIT).unwrap();
    assert_eq!(g.code, 220, "{g}");
    assert_eq!(c.cmd("EHLO scanner.lan").unwrap().code, 250);
    let mut replies = Vec::new();
    for (line, want) in [
        ("MAIL FROM:<scan@contoso.test>", 250),
        ("RCPT TO:<bob@contoso.test>", 250),
        ("DATA", 354),
    ] {
        let r = c.cmd(line).unwrap();
        let ok = r.code == want;
        replies.push(r);
        if !ok {
            let _ = c.cmd("QUIT");
            return replies;
        }
    }
    c.send(format!("{}.\r\n", faults::message(id, size)).as_bytes())
        .unwrap();
    replies.push(c.reply().unwrap());
    // The session is still usable either way.
    assert_eq!(c.cmd("RSET").unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);
    replies
}

/// The log written after `mark`.
fn since(env: &TestEnv, mark: postern_tests::harness::LogMark) -> String {
    let text = env.log_text();
    text.get(mark.0 as usize..).unwrap_or("").to_string()
}

fn sendmail(env: &TestEnv, id: &str) -> postern_tests::harness::Output {
    env.sendmail(
        &["-f", "scan@contoso.test", "bob@contoso.test"],
        faults::message(id, 4096).replace("\r\n", "\n").as_bytes(),
    )
    .unwrap()
}

#[test]
fn full_queue_file_system_refuses_cleanly_and_everything_resumes_when_space_returns() {
    if !running_as_root() {
        eprintln!("skipped: mounting a small file system for the queue needs root");
        return;
    }
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    let spool = env.spool.clone();
    // Declared after env: unmounted before env's drop stops the daemons.
    let _mount = faults::mount_tmpfs(&spool, "8m").unwrap();
    // The smart host is down: what is queued stays queued.
    fake.stop().unwrap();
    env.start().unwrap();

    // Queued before the disk fills.
    let mut ids = Vec::new();
    for i in 0..2 {
        let id = format!("disk-before-s{i}");
        let r = smtp_send(port, &id, 4096);
        assert_eq!(r.last().unwrap().code, 250, "{r:?}");
        ids.push(id);
        let id = format!("disk-before-m{i}");
        let out = sendmail(&env, &id);
        assert!(out.success(), "{out}");
        ids.push(id);
    }
    env.wait_log_count(Default::default(), "status=deferred", 4, WAIT)
        .unwrap();
    let queued = env.queue_files("deferred");
    assert_eq!(queued.len(), 4, "{queued:?}");
    // One more, accepted by sendmail (safe in maildrop/) while pickup is
    // stopped: pickup meets the full disk when it goes on.
    let pickup = faults::processes(&env.etc)
        .into_iter()
        .find(|p| p.kind == "pickup")
        .expect("pickup runs");
    kill(Pid::from_raw(pickup.pid), Signal::SIGSTOP).unwrap();
    let out = sendmail(&env, "disk-held-m");
    assert!(out.success(), "{out}");
    ids.push("disk-held-m".into());
    assert_eq!(env.queue_files("maildrop").len(), 1);
    let before = all_files(&spool);

    // Full.
    let filled = faults::fill(&spool, "filler").unwrap();
    eprintln!("filled the queue file system with {filled} bytes");
    let mark = env.log_mark();
    kill(Pid::from_raw(pickup.pid), Signal::SIGCONT).unwrap();
    // pickup takes the wake-up sendmail left and fails to write the queue
    // file; the maildrop file stays.
    let warning = env
        .wait_log_since(
            mark,
            re(r"postern/pickup\[\d+\]: warning: maildrop file "),
            WAIT,
        )
        .unwrap();
    assert!(warning.contains("No space left on device"), "{warning}");

    // smtpd: 452 4.3.1, at MAIL (free space check) or at the end of DATA
    // (the write failed), never a 250.
    let r = smtp_send(port, "disk-full-s", 16 * 1024);
    let last = r.last().unwrap();
    eprintln!("smtpd while full: {r:?}");
    assert_eq!(
        (last.code, last.text().as_str()),
        (452, "4.3.1 Insufficient system storage"),
        "{r:?}"
    );
    // sendmail: EX_TEMPFAIL and a message that says why.
    let out = sendmail(&env, "disk-full-m");
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(
        out.stderr.contains("No space left on device")
            && out.stderr.contains("the queue file system is full"),
        "{out}"
    );
    // Nearly full: a little room, so the free-space check at MAIL passes
    // and the write runs out of space in the middle of the message.
    std::fs::OpenOptions::new()
        .write(true)
        .open(spool.join("filler"))
        .unwrap()
        .set_len(filled - 256 * 1024)
        .unwrap();
    let r = smtp_send(port, "disk-full-s2", 1024 * 1024);
    eprintln!("smtpd while nearly full: {r:?}");
    let last = r.last().unwrap();
    assert_eq!(
        (last.code, last.text().as_str()),
        (452, "4.3.1 Insufficient system storage"),
        "{r:?}"
    );
    assert_eq!(r.len(), 4, "refused at the end of DATA: {r:?}");
    let out = env
        .sendmail(
            &["-f", "scan@contoso.test", "bob@contoso.test"],
            faults::message("disk-full-m2", 1024 * 1024)
                .replace("\r\n", "\n")
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(
        out.stderr.contains("the queue file system is full"),
        "{out}"
    );
    // A while with the disk full: the daemons go on retrying (the smart
    // host is still down) and none of them dies.
    std::thread::sleep(Duration::from_secs(4));
    let deaths: Vec<String> = env
        .log_grep("warning: process ")
        .into_iter()
        .filter(|l| l.contains(" pid "))
        .collect();
    assert!(deaths.is_empty(), "{deaths:?}");
    // Nothing half-written: the queue holds the same messages as before
    // (they may move between active/ and deferred/ as they are retried),
    // no other file, and no temporary file.
    let mut now = all_files(&spool);
    now.retain(|f| f != "filler");
    let messages = |v: &[String]| -> Vec<String> {
        let mut m: Vec<String> = v
            .iter()
            // The status file and the index (with its journal) are not messages.
            .filter(|f| !f.starts_with("pid/") && !f.starts_with("index.sqlite"))
            .map(|f| {
                let (dir, name) = f.rsplit_once('/').unwrap_or(("", f));
                match dir {
                    "active" | "deferred" => format!("queued/{name}"),
                    _ => f.clone(),
                }
            })
            .collect();
        m.sort();
        m
    };
    assert_eq!(
        messages(&now),
        messages(&before),
        "the queue changed while full"
    );
    // (pid/ holds the supervisor's status file, rewritten every half
    // second through a temporary name; not mail.)
    assert!(
        !now.iter()
            .filter(|f| !f.starts_with("pid/"))
            .any(|f| f.rsplit('/').next().is_some_and(|n| n.starts_with('.'))),
        "temporary files left: {now:?}"
    );
    // pickup could not move the message on; it is still in maildrop/.
    assert_eq!(
        env.queue_files("maildrop").len(),
        1,
        "{:?}",
        all_files(&spool)
    );
    assert!(env.queue_files("corrupt").is_empty());

    // Space returns.
    std::fs::remove_file(spool.join("filler")).unwrap();
    let r = smtp_send(port, "disk-after-s", 4096);
    assert_eq!(r.last().unwrap().code, 250, "{r:?}");
    ids.push("disk-after-s".into());
    let out = sendmail(&env, "disk-after-m");
    assert!(out.success(), "{out}");
    ids.push("disk-after-m".into());
    // The smart host comes back: everything is delivered, once.
    fake.start().unwrap();
    fake.wait_until("every message delivered", Duration::from_secs(60), |r| {
        let got: Vec<String> = r.messages.iter().filter_map(faults::fault_id).collect();
        ids.iter().all(|i| got.contains(i))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n--- log since the disk filled:\n{}",
            since(&env, mark)
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in fake.messages() {
        *count
            .entry(faults::fault_id(&m).unwrap_or_default())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = ids.iter().map(|i| (i.clone(), 1)).collect();
    assert_eq!(
        count, expected,
        "each message once, nothing refused while full"
    );
    let deadline = Instant::now() + WAIT;
    while !env.queue_json().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", env.queue_json().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.queue_files("corrupt").is_empty());
    eprintln!("log while full and after:\n{}", since(&env, mark));
    // The index missed updates while the disk was full (qmgr says it is
    // rebuilt at the next start): a restart finds the queue empty and
    // sends nothing again.
    env.stop().unwrap();
    env.start().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(env.queue_json().unwrap().is_empty());
    assert_eq!(fake.messages().len(), ids.len(), "{}", fake.summary());
    env.stop().unwrap();
}

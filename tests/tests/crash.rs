//! kill -9 of the queue manager and of the smtp delivery agent at random
//! moments while 200 messages flow: every message submitted (sendmail exit
//! 0) is delivered at least once. The test prints how many were delivered
//! twice (at-least-once: a delivery in flight when its process dies may be
//! repeated).

use postern_tests::harness::TestEnv;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

const MESSAGES: usize = 200;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_of_qmgr_and_smtp_loses_no_message() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    // Exchange allows 3 sessions per mailbox.
    env.set("smtp_destination_concurrency_limit", "3").unwrap();
    // This test is about durability, not pacing: no per-mailbox rate.
    env.set("smtp_account_rate_limit", "0").unwrap();
    env.start().unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);

    let env = Arc::new(std::sync::Mutex::new(env));
    let done = Arc::new(AtomicBool::new(false));
    let submitter = {
        let env = env.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut accepted = Vec::new();
            for i in 0..MESSAGES {
                let body = format!("To: admin@contoso.test\nSubject: crash-{i}\n\nmessage {i}\n");
                // Run sendmail without holding the lock for long.
                let out = {
                    let e = env.lock().unwrap();
                    e.sendmail(&["-t"], body.as_bytes()).unwrap()
                };
                if out.success() {
                    accepted.push(i);
                }
            }
            done.store(true, Ordering::SeqCst);
            accepted
        })
    };
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while (!done.load(Ordering::SeqCst) || kills < 6) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 800));
        let prog = if rng.next().is_multiple_of(2) {
            "qmgr"
        } else {
            "smtp"
        };
        let mut e = env.lock().unwrap();
        if let Some(old) = e.daemon_pid(prog)
            && e.kill_daemon(prog).is_ok()
        {
            kills += 1;
            let _ = e.wait_daemon_restart(prog, old, Duration::from_secs(30));
        }
    }
    let accepted = submitter.join().unwrap();
    assert_eq!(
        accepted.len(),
        MESSAGES,
        "sendmail failed for some submissions"
    );
    let records = fake
        .wait_until(
            "every accepted message delivered",
            Duration::from_secs(180),
            |r| {
                let subjects: std::collections::HashSet<String> = r
                    .messages
                    .iter()
                    .filter_map(|m| m.header("Subject"))
                    .collect();
                accepted
                    .iter()
                    .all(|i| subjects.contains(&format!("crash-{i}")))
            },
        )
        .unwrap_or_else(|e| panic!("messages lost after {kills} kills: {e}"));
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &records.messages {
        if let Some(s) = m.header("Subject") {
            *count.entry(s).or_default() += 1;
        }
    }
    let dups: usize = count.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} messages, {kills} kills (qmgr and smtp), 0 lost, {dups} duplicate deliveries ({:.1}%)",
        MESSAGES,
        100.0 * dups as f64 / MESSAGES as f64
    );
    let mut e = env.lock().unwrap();
    e.stop().unwrap();
}

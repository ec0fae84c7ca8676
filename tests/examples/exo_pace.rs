//! Speed report for per-mailbox pacing (issue 4, "Speed"): 100 messages
//! for two Microsoft 365 mailboxes (50 each, chosen by sender), postern at
//! its default `smtp_account_rate_limit = 30/60s` and 3 connections per
//! mailbox, against the fake Exchange Online with the real limits (30
//! messages/min and 3 sessions per mailbox). Prints the time from queueing
//! the first message to the last acceptance, and the CPU time postern's
//! processes spent per delivered message.
//!
//! ```text
//! cargo build --workspace --bins && cargo run -p postern-tests --example exo_pace
//! cargo build --release --workspace --bins && cargo run --release -p postern-tests --example exo_pace
//! ```
//!
//! The programs are taken from the directory above `examples/` (the same
//! profile as the example), or from `$POSTERN_BIN_DIR`.
//!
//! CPU: the daemons (supervisor, pickup, qmgr, smtp) are descendants of
//! this process; once postern has stopped and been waited for, their user
//! and system time is in `getrusage(RUSAGE_CHILDREN)`, as is sendmail's.
//! The fake Exchange runs on threads of this process and is not counted.
//! A snapshot of `/proc/<pid>/stat` of the daemons just before the stop
//! gives the split per program.

use anyhow::{Context, Result, bail};
use postern_tests::fake::{EXO_MESSAGE_RATE, FakeConfig, FakeSmartHost, ViolationKind};
use postern_tests::harness::TestEnv;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MESSAGES: usize = 100;

/// (SASL user, password, sender).
const MAILBOXES: [(&str, &str, &str); 2] = [
    (
        "sales@contoso.test",
        "Sales-Pa55word",
        "sales-printer@contoso.test",
    ),
    ("hr@contoso.test", "Hr-Pa55word", "hr-scanner@contoso.test"),
];

fn main() -> Result<()> {
    let mut env = TestEnv::new()?;
    let mut cfg = FakeConfig::office365(&env.pki.server);
    for (user, pass, _) in MAILBOXES {
        cfg = cfg.user(user, pass);
    }
    // Exchange's own limits: the defaults of the office365 profile.
    assert_eq!(cfg.message_rate, Some(EXO_MESSAGE_RATE));
    assert_eq!(cfg.mailbox_concurrency_limit, 3);
    let fake = FakeSmartHost::spawn(cfg)?;
    env.use_relayhost(&fake)?;
    let mut table = String::new();
    for (user, pass, sender) in MAILBOXES {
        table.push_str(&format!("{sender} {user}:{pass}\n"));
    }
    env.write_secret("sasl_passwd", &table)?;
    // postern's defaults: smtp_account_rate_limit = 30/60s,
    // smtp_account_concurrency_limit = 3.
    env.set("smtp_sender_dependent_authentication", "yes")?;
    env.start()?;
    let before = children_cpu();
    let t0 = Instant::now();
    for i in 0..MESSAGES {
        let (_, _, sender) = MAILBOXES[i % 2];
        let body = format!(
            "From: {sender}\nTo: customer{i}@fabrikam.test\nSubject: pace {i}\n\nmessage {i}\n"
        );
        env.sendmail(
            &["-f", sender, &format!("customer{i}@fabrikam.test")],
            body.as_bytes(),
        )?
        .ok()?;
    }
    let queued = t0.elapsed();
    let sendmail_cpu = children_cpu() - before;
    let recs = fake.wait_until("100 accepted messages", Duration::from_secs(400), |r| {
        r.messages.len() >= MESSAGES
    })?;
    let last = t0.elapsed();
    // Let the last results reach qmgr and the files go.
    env.wait_log_count(
        Default::default(),
        "removed",
        MESSAGES,
        Duration::from_secs(60),
    )?;
    let per_program = daemon_cpu(&env);
    env.stop()?;
    let total = children_cpu() - before;
    let daemons = total - sendmail_cpu;

    if fake.violations() != 0 {
        bail!("the fake saw violations:\n{}", fake.summary());
    }
    println!(
        "{MESSAGES} messages for {} mailboxes at 30/60s each, 3 connections each ({} build)",
        MAILBOXES.len(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "  queued (sendmail x{MESSAGES}):  {:.1} s",
        queued.as_secs_f64()
    );
    println!("  queue -> last accepted:     {:.1} s", last.as_secs_f64());
    for (user, _, _) in MAILBOXES {
        let m = fake.messages_of(user);
        let first = m.iter().map(|m| m.at).min().context("no messages")?;
        let end = m.iter().map(|m| m.at).max().context("no messages")?;
        println!(
            "  {user}: {} messages, first to last accepted {:.1} s, most sessions at once {}",
            m.len(),
            end.duration_since(first)?.as_secs_f64(),
            recs.stats
                .max_concurrent_per_mailbox
                .get(user)
                .copied()
                .unwrap_or(0)
        );
    }
    println!(
        "  fake: {} violations ({} rate, {} concurrency), {} connections",
        fake.violations(),
        fake.violations_of(ViolationKind::MessageRate),
        fake.violations_of(ViolationKind::Concurrency),
        fake.connections()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  CPU, daemons (supervisor, pickup, qmgr, smtp): {:.0} ms total, {:.2} ms per message",
        ms(daemons),
        ms(daemons) / MESSAGES as f64
    );
    for (prog, cpu) in &per_program {
        println!(
            "      {prog:<8} {:.0} ms (at the end of the run, /proc)",
            ms(*cpu)
        );
    }
    println!(
        "  CPU, sendmail: {:.0} ms total, {:.2} ms per message",
        ms(sendmail_cpu),
        ms(sendmail_cpu) / MESSAGES as f64
    );
    println!(
        "  CPU, all postern processes: {:.2} ms per message",
        ms(total) / MESSAGES as f64
    );
    Ok(())
}

/// User plus system time of this process's waited-for descendants.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time so far of each running postern daemon, by program name: the
/// processes of the supervisor's process group, from /proc.
fn daemon_cpu(env: &TestEnv) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Some(pgid) = env.master_pid() else {
        return out;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ... utime(14) stime(15)
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if num(2) != Some(pgid as u64) {
            continue;
        }
        let (Some(u), Some(s)) = (num(11), num(12)) else {
            continue;
        };
        *out.entry(comm.to_string()).or_default() += Duration::from_millis((u + s) * 1000 / hz);
    }
    out
}

//! Speed report for message tracking (issue 5, "Speed"): fills the queue
//! index of a temporary installation with a million tracked deliveries
//! through the index API, in qmgr-sized transactions, then times the real
//! `postern log` binary: searches by recipient, sender, queue ID,
//! Message-ID, status and time range, and `--summary` over 7, 30 and 90
//! days.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p postern-tests --example track_bench
//! cargo run --release -p postern-tests --example track_bench -- --deliveries 1000000 --runs 5
//! ```
//! (`bench/track.sh` does both.) The programs are taken from the directory
//! above `examples/` (the same profile as the example), or from
//! `$POSTERN_BIN_DIR`.
//!
//! The data: 90 days of traffic ending now, from 200 senders on 50 client
//! addresses, 20 SASL mailboxes, 1 to 3 recipients per message out of
//! 20,000 addresses; 5 % of deliveries are deferred once first, 1 %
//! bounce, 0.2 % expire. Each figure is the median wall time of `--runs`
//! runs of the whole command (process start, configuration, open, query,
//! output to a pipe).

use anyhow::{Context, Result, bail};
use postern_tests::harness::{COMMAND_TIMEOUT, TestEnv, command, process};
use queue::index::Index;
use queue::index::track::{TrackStatus, TrackedAttempt, TrackedMessage};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Opts {
    deliveries: usize,
    runs: usize,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        deliveries: 1_000_000,
        runs: 5,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).context("option needs a value")?;
        match args[i].as_str() {
            "--deliveries" => o.deliveries = v.parse()?,
            "--runs" => o.runs = v.parse()?,
            other => bail!("unknown option {other}; use --deliveries N --runs R"),
        }
        i += 2;
    }
    Ok(o)
}

/// User and system time of this process.
fn cpu_time() -> Duration {
    // SAFETY: a zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a live local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Fills the index; returns (messages, deliveries, a sample message).
fn fill(env: &TestEnv, deliveries: usize) -> Result<(usize, usize, TrackedMessage)> {
    std::fs::create_dir_all(&env.spool)?;
    let path = env.spool.join("index.sqlite");
    let mut ix = Index::open_rw(&path)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
    let start = now - 90 * DAY;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Spread arrivals evenly over 90 days: 1.25 recipients per message,
    // 5 % of them deferred once, so 1.3125 deliveries per message.
    let messages_est = deliveries * 16 / 21;
    let step = 90 * DAY / messages_est as i64;
    let relay = "smtp.office365.com[52.98.1.2]:587";
    let mut done = 0usize;
    let mut n = 0usize;
    let mut sample = None;
    let mut in_batches = Duration::ZERO;
    let mut cpu_in_batches = Duration::ZERO;
    let t = Instant::now();
    while done < deliveries {
        let mut msgs = Vec::with_capacity(500);
        let mut atts = Vec::with_capacity(700);
        // One transaction per 500 messages, as qmgr commits per event-loop turn.
        for _ in 0..500 {
            if done >= deliveries {
                break;
            }
            let arrival = start + n as i64 * step;
            let dev = rng.below(200);
            let nrcpt = 1 + (rng.below(100) / 80) as usize + (rng.below(100) / 95) as usize;
            let rcpts: Vec<String> = (0..nrcpt)
                .map(|_| format!("user{}@fabrikam.example", rng.below(20_000)))
                .collect();
            let m = TrackedMessage {
                queue_id: format!("{:012X}", 0x6000_0000_0000u64 + n as u64),
                arrival,
                client_name: Some(format!("device{}.lan", dev % 50)),
                client_addr: Some(format!("10.0.{}.{}", dev % 50 / 10, dev % 50)),
                sasl_user: (!dev.is_multiple_of(5))
                    .then(|| format!("mailbox{}@contoso.example", dev % 20)),
                uid: None,
                origin: Some("smtpd".into()),
                sender: format!("dev{dev}@contoso.example"),
                recipients: rcpts.clone(),
                size: 2000 + rng.below(200_000) as i64,
                message_id: Some(format!("<{n}.{dev}@device.lan>")),
                subject: None,
            };
            for r in rcpts {
                let roll = rng.below(1000);
                let mut att = |secs: i64, status, dsn: &str, reply: &str| {
                    atts.push(TrackedAttempt {
                        queue_id: m.queue_id.clone(),
                        ts: arrival + secs * SEC,
                        rcpt: r.clone(),
                        orig_rcpt: None,
                        relay: relay.into(),
                        delay: secs as f64,
                        dsn: dsn.into(),
                        status,
                        reply: reply.into(),
                    });
                    done += 1;
                };
                if roll < 50 {
                    att(
                        2,
                        TrackStatus::Deferred,
                        "4.3.2",
                        "host smtp.office365.com[52.98.1.2] said: 432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded (in reply to end of DATA command)",
                    );
                }
                match roll {
                    950..=959 => att(
                        3,
                        TrackStatus::Bounced,
                        "5.1.10",
                        "host smtp.office365.com[52.98.1.2] said: 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup (in reply to RCPT TO command)",
                    ),
                    960..=961 => att(
                        5 * 86_400,
                        TrackStatus::Expired,
                        "4.4.1",
                        "message expired after 5.0 days in the queue; last problem: connect to smtp.office365.com[52.98.1.2]:587: Connection timed out",
                    ),
                    _ => att(
                        if roll < 50 { 302 } else { 1 },
                        TrackStatus::Sent,
                        "2.0.0",
                        "250 2.0.0 OK <1@device.lan> [Hostname=AM0PR01MB1234.eurprd01.prod.exchangelabs.com]",
                    ),
                }
            }
            if n == messages_est / 2 {
                sample = Some(m.clone());
            }
            msgs.push(m);
            n += 1;
        }
        let tb = Instant::now();
        let cb = cpu_time();
        ix.batch(|b| {
            for m in &msgs {
                b.track_message(m)?;
            }
            for a in &atts {
                b.track_attempt(a)?;
            }
            Ok(())
        })?;
        in_batches += tb.elapsed();
        cpu_in_batches += cpu_time() - cb;
    }
    let took = in_batches;
    let _ = t;
    println!(
        "filled {n} messages, {done} deliveries in {:.1} s ({:.1} µs per delivery, {:.1} µs of it CPU time; transactions of 500 messages)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / done as f64,
        cpu_in_batches.as_secs_f64() * 1e6 / done as f64
    );
    drop(ix);
    if postern_tests::harness::running_as_root() {
        let (uid, gid) = (env.owner.uid.as_raw(), env.owner.gid.as_raw());
        for p in [env.spool.clone(), path.clone()] {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
        }
    }
    let size: u64 = std::fs::metadata(&path)?.len();
    println!(
        "index: {:.0} MB ({:.0} bytes per delivery)",
        size as f64 / 1e6,
        size as f64 / done as f64
    );
    Ok((n, done, sample.context("no sample message")?))
}

/// Runs `postern log args` `runs` times; returns the median wall time
/// and the rows printed.
fn time_log(env: &TestEnv, args: &[String], runs: usize) -> Result<(Duration, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs {
        let mut cmd = command("postern")?;
        cmd.env("MAIL_CONFIG", &env.etc)
            .arg("-c")
            .arg(&env.etc)
            .arg("log")
            .args(args);
        let t = Instant::now();
        let out = process::run(cmd, None, COMMAND_TIMEOUT)?;
        times.push(t.elapsed());
        if !matches!(out.code(), Some(0 | 1)) {
            bail!("postern log {args:?} failed: {out}");
        }
        rows = out.stdout.lines().count();
    }
    times.sort();
    Ok((times[times.len() / 2], rows))
}

fn main() -> Result<()> {
    let o = opts()?;
    let env = TestEnv::new()?;
    let (_, _, sample) = fill(&env, o.deliveries)?;
    let rcpt = sample.recipients[0].clone();
    let hour_ago = |h: i64| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        format!("@{}", now - h * 3600)
    };
    let mid = sample.arrival / SEC;
    let queries: Vec<(&str, Vec<String>)> = vec![
        (
            "by recipient (table, newest 1000)",
            vec!["--recipient".into(), rcpt.clone()],
        ),
        (
            "by recipient, all rows (JSON)",
            vec![
                "--recipient".into(),
                rcpt.clone(),
                "--json".into(),
                "--limit".into(),
                "0".into(),
            ],
        ),
        (
            "by recipient pattern matching half the record, newest 1000",
            vec!["--recipient".into(), "user1*@fabrikam.example".into()],
        ),
        (
            "time range: one hour, 45 days ago",
            vec![
                "--since".into(),
                format!("@{mid}"),
                "--until".into(),
                format!("@{}", mid + 3600),
            ],
        ),
        (
            "time range: last 24 h, all rows (CSV)",
            vec![
                "--since".into(),
                "24h".into(),
                "--csv".into(),
                "--limit".into(),
                "0".into(),
            ],
        ),
        (
            "time range: last 7 days, newest 1000",
            vec!["--since".into(), "7d".into()],
        ),
        (
            "by sender, newest 1000",
            vec!["--sender".into(), sample.sender.clone()],
        ),
        ("by queue ID", vec!["--id".into(), sample.queue_id.clone()]),
        (
            "by Message-ID",
            vec![
                "--message-id".into(),
                sample.message_id.clone().unwrap_or_default(),
            ],
        ),
        (
            "bounced in the last 7 days",
            vec![
                "--status".into(),
                "bounced".into(),
                "--since".into(),
                "7d".into(),
            ],
        ),
        (
            "SASL user, last 24 h",
            vec![
                "--sasl-user".into(),
                sample
                    .sasl_user
                    .clone()
                    .unwrap_or_else(|| "mailbox1@contoso.example".into()),
                "--since".into(),
                hour_ago(24),
            ],
        ),
        (
            "summary, last 7 days",
            vec!["--summary".into(), "--since".into(), "7d".into()],
        ),
        (
            "summary, last 30 days",
            vec!["--summary".into(), "--since".into(), "30d".into()],
        ),
        ("summary, all 90 days", vec!["--summary".into()]),
    ];
    println!();
    println!("| query | rows printed | median time |");
    println!("|---|---|---|");
    for (what, args) in &queries {
        let (t, rows) = time_log(&env, args, o.runs)?;
        println!(
            "| {what} (`postern log {}`) | {rows} | {:.0} ms |",
            args.join(" "),
            t.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

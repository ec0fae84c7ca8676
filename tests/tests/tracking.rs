//! Message tracking (issue 5, part 4): every accepted message and every
//! delivery attempt is recorded in the queue index, and `postern log`
//! finds them by sender, recipient, queue ID, Message-ID, SASL user,
//! status and time, as a table, CSV or JSON lines, and sums them up per
//! mailbox and per client (`--summary`).
//!
//! - The real path: sendmail, smtpd with and without AUTH, a deferral then
//!   a delivery, a bounce and its DSN, through the fake Exchange.
//! - The formats, against golden files in `tests/golden/tracking/`
//!   (`POSTERN_UPDATE_GOLDEN=1` rewrites them).
//! - Queries over 10,000 messages recorded through the index API.
//! - Who may read the record.

use postern_tests::fake::{Action, Phase};
use postern_tests::harness::{COMMAND_TIMEOUT, Output, TestEnv, command, process};
use postern_tests::sync_client::Smtp;
use queue::file::Envelope;
use queue::index::Index;
use queue::index::track::{TrackStatus, TrackedAttempt, TrackedMessage};
use queue::layout::QueueName;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// 2026-11-22 05:30:00 UTC, in microseconds.
const BASE: i64 = 1_795_325_400_000_000;
const SEC: i64 = 1_000_000;

/// `postern -c <etc> log args...` in UTC.
fn postern_log(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = command("postern").unwrap();
    cmd.env("MAIL_CONFIG", &env.etc)
        .env("TZ", "UTC")
        .arg("-c")
        .arg(&env.etc)
        .arg("log")
        .args(args);
    process::run(cmd, None, COMMAND_TIMEOUT).unwrap()
}

/// `postern log --json --limit 0 args...`, parsed.
fn json_rows(env: &TestEnv, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["--json", "--limit", "0"];
    a.extend_from_slice(args);
    let out = postern_log(env, &a);
    assert!(
        matches!(out.code(), Some(0 | 1)),
        "postern log {args:?} failed: {out}"
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

/// RFC 4180 CSV (quoted fields may hold commas, quotes and line ends).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV ends mid-row"
    );
    rows
}

/// Creates the queue's index as the daemons would have it and lets `f`
/// record into it through the index API; the spool and the index end up
/// owned by mail_owner.
fn seed(env: &TestEnv, f: impl FnOnce(&mut Index)) -> PathBuf {
    std::fs::create_dir_all(&env.spool).unwrap();
    let path = env.spool.join("index.sqlite");
    {
        let mut ix = Index::open_rw(&path).unwrap();
        f(&mut ix);
    }
    if postern_tests::harness::running_as_root() {
        let (uid, gid) = (env.owner.uid.as_raw(), env.owner.gid.as_raw());
        for p in [
            env.spool.clone(),
            path.clone(),
            env.spool.join("index.sqlite-wal"),
            env.spool.join("index.sqlite-shm"),
        ] {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
            }
        }
    }
    path
}

/// Sends one message in an open session; returns its queue ID.
fn submit(c: &mut Smtp, from: &str, to: &str, content: &str) -> String {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).unwrap().code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).unwrap().code, 250);
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(format!("{content}.\r\n").as_bytes()).unwrap();
    let r = c.reply().unwrap();
    assert_eq!(r.code, 250, "{r}");
    r.text
        .rsplit(' ')
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no queue ID in {r}"))
}

#[test]
fn every_message_and_attempt_is_recorded_and_found_by_each_key() {
    let started = Instant::now();
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let cert = env.pki.server.cert_file.display().to_string();
    let key = env.pki.server.key_file.display().to_string();
    env.set_many(&[
        ("mynetworks", "127.0.0.1/32"),
        ("relay_domains", "contoso.test"),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_cert_file", &cert),
        ("smtpd_tls_key_file", &key),
        ("tracking_subject", "yes"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.create_queue().unwrap();
    env.add_sasl_user("webapp@contoso.test", "S3cret-app-pass")
        .unwrap();
    // One recipient does not exist; the first delivery to another is
    // deferred (a plain 4xx), the retry (1 s later) succeeds.
    let bounce_reply =
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup";
    fake.on_rcpt("nobody@contoso.test", Action::text(bounce_reply));
    let defer_reply = "451 4.7.0 Temporary server error. Please try again later. PRX4";
    let deferred_once = Arc::new(AtomicBool::new(false));
    let flag = deferred_once.clone();
    fake.set_hook(move |e| {
        (e.phase == Phase::DataEnd
            && e.rcpts.iter().any(|r| r == "retry@contoso.test")
            && !flag.swap(true, Ordering::SeqCst))
        .then(|| Action::text(defer_reply))
    });
    env.start().unwrap();

    // A: a cron job's sendmail -t.
    env.sendmail(
        &["-t"],
        b"From: Backup <backup@contoso.test>\nTo: admin@contoso.test\nSubject: backup done\n\nok\n",
    )
    .unwrap()
    .ok()
    .unwrap();
    // B and C: an application that authenticates.
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO webapp.lan").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO webapp.lan").unwrap();
    assert_eq!(
        c.auth_plain("webapp@contoso.test", "S3cret-app-pass")
            .unwrap()
            .code,
        235
    );
    let id_b = submit(
        &mut c,
        "webapp@contoso.test",
        "customer@elsewhere.test",
        "Message-ID: <order42@webapp.test>\r\nSubject: =?utf-8?q?order_42_=E2=9C=93?=\r\n\r\nthanks\r\n",
    );
    let id_c = submit(
        &mut c,
        "webapp@contoso.test",
        "retry@contoso.test",
        "Subject: retry me\r\n\r\nx\r\n",
    );
    c.cmd("QUIT").unwrap();
    // D: a scanner in mynetworks without AUTH, to a recipient that does
    // not exist.
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    c.cmd("EHLO scanner.lan").unwrap();
    let id_d = submit(
        &mut c,
        "scan@contoso.test",
        "nobody@contoso.test",
        "Subject: scan\r\n\r\npage\r\n",
    );
    c.cmd("QUIT").unwrap();

    // Everything settles: A, B, C (after one deferral) and D's DSN sent,
    // D bounced.
    let deadline = Instant::now() + WAIT;
    let all = loop {
        let rows = json_rows(&env, &[]);
        let count = |st: &str| rows.iter().filter(|r| s(r, "status") == st).count();
        if count("sent") >= 4 && count("bounced") >= 1 && count("deferred") >= 1 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "tracking did not settle: {rows:#?}\n--- log:\n{}",
            env.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(all.len(), 6, "{all:#?}");
    assert!(deferred_once.load(Ordering::SeqCst));

    // By queue ID: the deferral, then the delivery, with the replies.
    let c_rows = json_rows(&env, &["--id", &id_c]);
    assert_eq!(c_rows.len(), 2, "{c_rows:#?}");
    let (first, second) = (&c_rows[0], &c_rows[1]);
    assert_eq!(s(first, "status"), "deferred");
    assert_eq!(s(first, "dsn"), "4.7.0");
    assert!(
        s(first, "reply").contains(&format!(
            "said: {defer_reply} (in reply to end of DATA command)"
        )),
        "{first}"
    );
    assert_eq!(s(second, "status"), "sent");
    assert_eq!(s(second, "dsn"), "2.0.0");
    assert!(s(second, "reply").starts_with("250 2.0.0 OK"), "{second}");
    for r in &c_rows {
        assert_eq!(s(r, "recipient"), "retry@contoso.test");
        assert_eq!(s(r, "sender"), "webapp@contoso.test");
        assert_eq!(s(r, "sasl_user"), "webapp@contoso.test");
        assert_eq!(s(r, "client_addr"), "127.0.0.1");
        assert_eq!(s(r, "origin"), "smtpd");
        assert_eq!(s(r, "subject"), "retry me");
        assert!(
            s(r, "relay").starts_with(&format!("localhost[127.0.0.1]:{}", fake.port())),
            "{r}"
        );
        assert!(r["delay"].as_f64().unwrap() >= 0.0);
    }
    assert!(
        s(first, "time") <= s(second, "time"),
        "oldest first: {c_rows:#?}"
    );

    // By recipient and by Message-ID: the authenticated order, its
    // decoded subject.
    let by_rcpt = json_rows(&env, &["--recipient", "Customer@Elsewhere.test"]);
    let by_mid = json_rows(&env, &["--message-id", "order42@webapp.test"]);
    assert_eq!(by_rcpt, by_mid);
    assert_eq!(by_rcpt.len(), 1, "{by_rcpt:#?}");
    let b = &by_rcpt[0];
    assert_eq!(s(b, "queue_id"), id_b);
    assert_eq!(s(b, "status"), "sent");
    assert_eq!(s(b, "message_id"), "<order42@webapp.test>");
    assert_eq!(s(b, "subject"), "order 42 \u{2713}");
    assert_eq!(s(b, "sasl_user"), "webapp@contoso.test");
    assert!(b["size"].as_i64().unwrap() > 0);

    // By sender: both of the application's messages; by SASL user and status.
    let web = json_rows(&env, &["--sender", "webapp@contoso.test"]);
    assert_eq!(web.len(), 3, "{web:#?}");
    let web_deferred = json_rows(
        &env,
        &["--sasl-user", "webapp@contoso.test", "--status", "deferred"],
    );
    assert_eq!(web_deferred.len(), 1);
    assert_eq!(s(&web_deferred[0], "queue_id"), id_c);

    // By status: the bounce, with Exchange's reply; the scanner had no AUTH.
    let bounced = json_rows(&env, &["--status", "bounced,expired"]);
    assert_eq!(bounced.len(), 1, "{bounced:#?}");
    let d = &bounced[0];
    assert_eq!(s(d, "queue_id"), id_d);
    assert_eq!(s(d, "recipient"), "nobody@contoso.test");
    assert_eq!(s(d, "dsn"), "5.1.10");
    assert!(s(d, "reply").contains(bounce_reply), "{d}");
    assert!(d["sasl_user"].is_null());
    assert_eq!(s(d, "client_addr"), "127.0.0.1");

    // The local submission and the DSN it caused.
    let local = json_rows(&env, &["--sender", "root@relay.test.example"]);
    assert_eq!(local.len(), 1, "{local:#?}");
    assert_eq!(s(&local[0], "client"), "local");
    assert_eq!(s(&local[0], "origin"), "pickup");
    assert_eq!(s(&local[0], "recipient"), "admin@contoso.test");
    assert_eq!(s(&local[0], "subject"), "backup done");
    assert_eq!(
        local[0]["uid"].as_i64(),
        Some(i64::from(nix::unistd::getuid().as_raw()))
    );
    let dsn = json_rows(&env, &["--sender", "<>"]);
    assert_eq!(dsn.len(), 1, "{dsn:#?}");
    assert_eq!(s(&dsn[0], "recipient"), "scan@contoso.test");
    assert_eq!(s(&dsn[0], "origin"), "bounce");
    assert_eq!(s(&dsn[0], "status"), "sent");

    // Time ranges.
    assert_eq!(json_rows(&env, &["--since", "10m"]).len(), 6);
    let none = postern_log(&env, &["--until", "1h"]);
    assert_eq!(none.code(), Some(1), "{none}");
    assert!(none.stderr.contains("no matching messages"), "{none}");
    assert!(none.stdout.is_empty());

    // The table and CSV say the same as the JSON.
    let table = postern_log(&env, &[]).ok().unwrap().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME                 QUEUE ID      STATUS"),
        "{table}"
    );
    assert_eq!(lines.len(), 7, "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&id_c) && l.contains(" deferred ") && l.contains("451 4.7.0")),
        "{table}"
    );
    let csv = parse_csv(&postern_log(&env, &["--csv"]).ok().unwrap().stdout);
    assert_eq!(csv.len(), 7);
    assert_eq!(csv[0].len(), 21);
    let col = |name: &str| csv[0].iter().position(|h| h == name).unwrap();
    for (row, j) in csv[1..].iter().zip(&all) {
        assert_eq!(row.len(), 21, "{row:?}");
        for k in [
            "queue_id",
            "status",
            "recipient",
            "reply",
            "subject",
            "time",
        ] {
            assert_eq!(row[col(k)], j[k].as_str().unwrap_or(""), "{k}");
        }
    }

    // The summary, per mailbox and per client.
    let sum: Vec<Value> = postern_log(&env, &["--summary", "--json"])
        .ok()
        .unwrap()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |kind: &str, name: Option<&str>| -> &Value {
        sum.iter()
            .find(|v| s(v, "kind") == kind && v["name"].as_str() == name)
            .unwrap_or_else(|| panic!("no {kind} {name:?} in {sum:#?}"))
    };
    let counts = |v: &Value| -> [i64; 5] {
        ["messages", "recipients", "sent", "deferred", "bounced"].map(|k| v[k].as_i64().unwrap())
    };
    assert_eq!(
        counts(find("mailbox", Some("webapp@contoso.test"))),
        [2, 2, 2, 1, 0]
    );
    assert_eq!(counts(find("mailbox", None)), [3, 3, 2, 0, 1]);
    let lan = sum
        .iter()
        .find(|v| s(v, "kind") == "client" && s(v, "name").ends_with("[127.0.0.1]"))
        .unwrap_or_else(|| panic!("no client 127.0.0.1 in {sum:#?}"));
    assert_eq!(counts(lan), [3, 3, 2, 1, 1]);
    assert_eq!(counts(find("client", Some("local"))), [2, 2, 2, 0, 0]);
    let total = find("total", None);
    assert_eq!(counts(total), [5, 5, 4, 1, 1]);
    let mut sizes: Vec<(String, i64)> = all
        .iter()
        .map(|r| (s(r, "queue_id").to_string(), r["size"].as_i64().unwrap()))
        .collect();
    sizes.sort();
    sizes.dedup();
    assert_eq!(
        total["bytes"].as_i64().unwrap(),
        sizes.iter().map(|x| x.1).sum::<i64>()
    );
    let table = postern_log(&env, &["--summary"]).ok().unwrap().stdout;
    assert!(table.contains("MAILBOX (SASL USER)"), "{table}");
    assert!(
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"webapp@contoso.test") && f[f.len() - 3..] == ["2", "1", "0"]
        }),
        "{table}"
    );

    // The index is for root and mail_owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.spool.join("index.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    env.stop().unwrap();
    eprintln!("end-to-end tracking test took {:?}", started.elapsed());
}

/// A destination that never answers: each retry is a `deferred` line with
/// the connection error, and after maximal_queue_lifetime the recipient is
/// `expired`, with the last problem in its reply.
#[test]
fn deferrals_until_expiry_are_recorded() {
    let mut env = TestEnv::new().unwrap();
    let _fake = env.office365_fake().unwrap();
    env.route_to_closed_port("dead.test").unwrap();
    env.set_many(&[
        ("maximal_queue_lifetime", "4s"),
        ("minimal_backoff_time", "1s"),
        ("maximal_backoff_time", "1s"),
    ])
    .unwrap();
    env.start().unwrap();
    env.sendmail(
        &["-f", "sender@contoso.test", "user@dead.test"],
        b"Subject: to nowhere\n\nbody\n",
    )
    .unwrap()
    .ok()
    .unwrap();
    env.wait_log("status=expired, returned to sender", WAIT)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let rows = json_rows(&env, &["--recipient", "user@dead.test"]);
        if rows.iter().any(|r| s(r, "status") == "expired") {
            break rows;
        }
        assert!(Instant::now() < deadline, "no expired row: {rows:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (last, tries) = rows.split_last().unwrap();
    assert!(!tries.is_empty(), "{rows:#?}");
    for r in tries {
        assert_eq!(s(r, "status"), "deferred", "{r}");
        assert_eq!(s(r, "dsn"), "4.4.1", "{r}");
        assert!(s(r, "reply").contains("Connection refused"), "{r}");
        assert_eq!(s(r, "relay"), "none", "{r}");
    }
    assert_eq!(s(last, "status"), "expired");
    assert!(
        s(last, "reply").starts_with("message expired after ")
            && s(last, "reply").contains("Connection refused"),
        "{last}"
    );
    assert!(last["delay"].as_f64().unwrap() >= 4.0, "{last}");
    // Expired counts as bounced in the summary.
    let sum = postern_log(&env, &["--summary", "--json"])
        .ok()
        .unwrap()
        .stdout;
    let total: Value = serde_json::from_str(sum.lines().last().unwrap()).unwrap();
    assert_eq!(total["bounced"].as_i64(), Some(1), "{sum}");
    assert_eq!(
        total["deferred"].as_i64(),
        Some(tries.len() as i64),
        "{sum}"
    );
    env.stop().unwrap();
}

/// Records of every kind, at fixed times, for the golden files.
fn golden_records() -> (Vec<TrackedMessage>, Vec<TrackedAttempt>) {
    let m = |id: &str, arrival: i64| TrackedMessage {
        queue_id: id.into(),
        arrival,
        client_name: None,
        client_addr: None,
        sasl_user: None,
        uid: None,
        origin: Some("smtpd".into()),
        sender: String::new(),
        recipients: Vec::new(),
        size: 0,
        message_id: None,
        subject: None,
    };
    let scan = TrackedMessage {
        client_name: Some("scanner.lan".into()),
        client_addr: Some("10.0.0.5".into()),
        sasl_user: Some("scan@contoso.com".into()),
        sender: "scan@contoso.com".into(),
        recipients: vec!["bob@contoso.com".into(), "carol@contoso.com".into()],
        size: 48211,
        message_id: Some("<20261122.1@scanner.lan>".into()),
        subject: Some("Scan from MFP, page 1".into()),
        ..m("8F3A21C09B00", BASE)
    };
    let backup = TrackedMessage {
        uid: Some(1000),
        origin: Some("pickup".into()),
        sender: "backup@relay.example".into(),
        recipients: vec!["admin@contoso.com".into()],
        size: 1200,
        message_id: Some("<20261122053100.5D0E9A441100@relay.example>".into()),
        subject: Some("Backup \"nightly\" done".into()),
        ..m("5D0E9A441100", BASE + 60 * SEC)
    };
    let dsn = TrackedMessage {
        origin: Some("bounce".into()),
        recipients: vec!["backup@relay.example".into()],
        size: 3000,
        message_id: Some("<20261122053101.A1B2C3D4E5F6@relay.example>".into()),
        ..m("A1B2C3D4E5F6", BASE + 120 * SEC)
    };
    let printer = TrackedMessage {
        client_name: Some("unknown".into()),
        client_addr: Some("10.0.0.9".into()),
        sender: "printer@contoso.com".into(),
        recipients: vec!["orders@fabrikam.example".into()],
        size: 731,
        ..m("0123456789AB", BASE - 5 * 86400 * SEC)
    };
    let relay = "smtp.office365.com[52.98.1.2]:587";
    let a =
        |m: &TrackedMessage, rcpt: &str, ts: i64, status, dsn: &str, reply: &str| TrackedAttempt {
            queue_id: m.queue_id.clone(),
            ts,
            rcpt: rcpt.into(),
            orig_rcpt: None,
            relay: relay.into(),
            delay: (ts - m.arrival) as f64 / 1e6,
            dsn: dsn.into(),
            status,
            reply: reply.into(),
        };
    let attempts = vec![
        TrackedAttempt {
            relay: "none".into(),
            ..a(
                &printer,
                "orders@fabrikam.example",
                printer.arrival + 10 * SEC,
                TrackStatus::Deferred,
                "4.4.1",
                "connect to smtp.office365.com[52.98.1.2]:587: Connection refused",
            )
        },
        a(
            &scan,
            "bob@contoso.com",
            BASE + 1_400_000,
            TrackStatus::Sent,
            "2.0.0",
            "250 2.0.0 OK <20261122.1@scanner.lan> [Hostname=AM0PR01MB1234.eurprd01.prod.exchangelabs.com]",
        ),
        a(
            &scan,
            "carol@contoso.com",
            BASE + 2 * SEC,
            TrackStatus::Deferred,
            "4.3.2",
            "host smtp.office365.com[52.98.1.2] said: 432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded (in reply to end of DATA command)",
        ),
        TrackedAttempt {
            relay: "none".into(),
            ..a(
                &printer,
                "orders@fabrikam.example",
                BASE + 30 * SEC,
                TrackStatus::Expired,
                "4.4.1",
                "message expired after 5.0 days in the queue; last problem: connect to smtp.office365.com[52.98.1.2]:587: Connection refused",
            )
        },
        TrackedAttempt {
            orig_rcpt: Some("root@relay.example".into()),
            ..a(
                &backup,
                "admin@contoso.com",
                BASE + 61 * SEC,
                TrackStatus::Bounced,
                "5.1.10",
                "host smtp.office365.com[52.98.1.2] said: 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup (in reply to RCPT TO command)",
            )
        },
        a(
            &scan,
            "carol@contoso.com",
            BASE + 302 * SEC,
            TrackStatus::Sent,
            "2.0.0",
            "250 2.0.0 OK <20261122.1@scanner.lan> [Hostname=AM0PR01MB1234.eurprd01.prod.exchangelabs.com]",
        ),
    ];
    (vec![scan, backup, dsn, printer], attempts)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join("tracking")
}

/// Compares `got` with the golden file `name`, or rewrites it when
/// `POSTERN_UPDATE_GOLDEN` is set.
fn golden(name: &str, got: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("POSTERN_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (POSTERN_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    if want != got {
        panic!(
            "{} differs (POSTERN_UPDATE_GOLDEN=1 rewrites it)\n--- want\n{want}\n--- got\n{got}",
            path.display()
        );
    }
}

#[test]
fn output_formats_match_the_golden_files() {
    let env = TestEnv::new().unwrap();
    let (msgs, attempts) = golden_records();
    seed(&env, |ix| {
        ix.batch(|b| {
            for m in &msgs {
                b.track_message(m)?;
            }
            for a in &attempts {
                b.track_attempt(a)?;
            }
            // The bounce is still in the queue, not tried yet.
            b.insert(
                "A1B2C3D4E5F6",
                QueueName::Active,
                &Envelope::default(),
                3000,
                None,
            )
        })
        .unwrap();
    });
    for (name, args) in [
        ("log.txt", &[][..]),
        ("log.csv", &["--csv"][..]),
        ("log.jsonl", &["--json"][..]),
        ("summary.txt", &["--summary"][..]),
        ("summary.csv", &["--summary", "--csv"][..]),
        ("summary.jsonl", &["--summary", "--json"][..]),
        (
            "log-bounced.txt",
            &["--status", "bounced,expired", "--until", "2026-11-22 05:31"][..],
        ),
        (
            "summary-window.txt",
            &[
                "--summary",
                "--since",
                "2026-11-22T05:30:00Z",
                "--until",
                "2026-11-22 05:31",
            ][..],
        ),
    ] {
        let out = postern_log(&env, args);
        assert_eq!(out.code(), Some(0), "{out}");
        golden(name, &out.stdout);
        if name.ends_with(".jsonl") {
            for l in out.stdout.lines() {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            }
        }
        if name.ends_with(".csv") {
            let rows = parse_csv(&out.stdout);
            assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{rows:?}");
        }
    }
    // --limit keeps the newest rows and says so.
    let out = postern_log(&env, &["--limit", "2"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("showing the newest 2"), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].contains("A1B2C3D4E5F6") && lines[2].contains("carol@"));
}

/// One message of the 10,000: who sent it, to whom, and what happened.
struct Model {
    msgs: Vec<TrackedMessage>,
    attempts: Vec<TrackedAttempt>,
}

fn model(n: usize) -> Model {
    let mut msgs = Vec::with_capacity(n);
    let mut attempts = Vec::new();
    for i in 0..n {
        let arrival = BASE + i as i64 * 60 * SEC;
        let mut rcpts = vec![format!("user{}@fabrikam.test", i % 500)];
        if i % 10 == 0 {
            rcpts.push("team@fabrikam.test".into());
        }
        let m = TrackedMessage {
            queue_id: format!("{:012X}", 0x6900_0000_0000u64 + i as u64),
            arrival,
            client_name: Some(format!("dev{}.lan", i % 4)),
            client_addr: Some(format!("10.0.{}.1", i % 4)),
            sasl_user: Some(format!("box{}@contoso.test", i % 10)),
            uid: None,
            origin: Some("smtpd".into()),
            sender: format!("dev{}@contoso.test", i % 50),
            recipients: rcpts.clone(),
            size: 1000 + i as i64,
            message_id: Some(format!("<{i}@dev.lan>")),
            subject: None,
        };
        // Every 1000th is still waiting; every 7th is deferred once; every
        // 100th (from the 1st) bounces.
        if i % 1000 != 999 {
            for r in &rcpts {
                let at = |secs: i64, status, dsn: &str| TrackedAttempt {
                    queue_id: m.queue_id.clone(),
                    ts: arrival + secs * SEC,
                    rcpt: r.clone(),
                    orig_rcpt: None,
                    relay: "smtp.office365.com[52.98.1.2]:587".into(),
                    delay: secs as f64,
                    dsn: dsn.into(),
                    status,
                    reply: format!("{dsn} reply"),
                };
                if i % 7 == 0 {
                    attempts.push(at(1, TrackStatus::Deferred, "4.4.1"));
                }
                if i % 100 == 1 {
                    attempts.push(at(2, TrackStatus::Bounced, "5.1.1"));
                } else {
                    attempts.push(at(2, TrackStatus::Sent, "2.0.0"));
                }
            }
        }
        msgs.push(m);
    }
    Model { msgs, attempts }
}

#[test]
fn queries_over_ten_thousand_recorded_messages() {
    let env = TestEnv::new().unwrap();
    let m = model(10_000);
    let t = Instant::now();
    seed(&env, |ix| {
        for msgs in m.msgs.chunks(1000) {
            ix.batch(|b| {
                for x in msgs {
                    b.track_message(x)?;
                }
                Ok(())
            })
            .unwrap();
        }
        for chunk in m.attempts.chunks(1000) {
            ix.batch(|b| {
                for a in chunk {
                    b.track_attempt(a)?;
                }
                Ok(())
            })
            .unwrap();
        }
        // What was not tried yet is still in the queue.
        ix.batch(|b| {
            for (i, x) in m.msgs.iter().enumerate() {
                if i % 1000 == 999 {
                    b.insert(
                        &x.queue_id,
                        QueueName::Deferred,
                        &Envelope::default(),
                        1,
                        None,
                    )?;
                }
            }
            Ok(())
        })
        .unwrap();
    });
    eprintln!(
        "recorded {} messages and {} attempts in {:?}",
        m.msgs.len(),
        m.attempts.len(),
        t.elapsed()
    );
    let by_id: std::collections::HashMap<&str, &TrackedMessage> =
        m.msgs.iter().map(|x| (x.queue_id.as_str(), x)).collect();
    let attempted: std::collections::HashSet<&str> =
        m.attempts.iter().map(|a| a.queue_id.as_str()).collect();
    let waiting = |f: &dyn Fn(&TrackedMessage, &str) -> bool| -> usize {
        m.msgs
            .iter()
            .filter(|x| !attempted.contains(x.queue_id.as_str()))
            .map(|x| x.recipients.iter().filter(|r| f(x, r)).count())
            .sum()
    };
    let expect = |f: &dyn Fn(&TrackedMessage, &TrackedAttempt) -> bool| -> usize {
        m.attempts
            .iter()
            .filter(|a| f(by_id[a.queue_id.as_str()], a))
            .count()
    };
    let timed = |args: &[&str]| -> Vec<Value> {
        let t = Instant::now();
        let rows = json_rows(&env, args);
        let took = t.elapsed();
        eprintln!("postern log {args:?}: {} rows in {took:?}", rows.len());
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
        rows
    };
    // By recipient.
    let rows = timed(&["--recipient", "user7@fabrikam.test"]);
    assert_eq!(
        rows.len(),
        expect(&|_, a| a.rcpt == "user7@fabrikam.test")
            + waiting(&|_, r| r == "user7@fabrikam.test")
    );
    assert!(
        rows.iter()
            .all(|r| s(r, "recipient") == "user7@fabrikam.test")
    );
    let team = timed(&["--recipient", "team@fabrikam.test", "--status", "sent"]);
    assert_eq!(
        team.len(),
        expect(&|_, a| a.rcpt == "team@fabrikam.test" && a.status == TrackStatus::Sent)
    );
    // A pattern that covers most of the record, newest first.
    let out = postern_log(
        &env,
        &[
            "--recipient",
            "USER*@fabrikam.test",
            "--limit",
            "50",
            "--json",
        ],
    );
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 50, "{out}");
    assert!(rows.iter().all(|r| s(r, "recipient").starts_with("user")));
    let newest_user = m
        .attempts
        .iter()
        .filter(|a| a.rcpt.starts_with("user"))
        .map(|a| a.ts)
        .max()
        .unwrap();
    let newest_waiting = m
        .msgs
        .iter()
        .filter(|x| !attempted.contains(x.queue_id.as_str()))
        .map(|x| x.arrival)
        .max()
        .unwrap();
    assert_eq!(
        s(rows.last().unwrap(), "time"),
        json_rows(
            &env,
            &[
                "--since",
                &format!("@{}", newest_user.max(newest_waiting) / SEC),
                "--recipient",
                "user*"
            ]
        )
        .last()
        .map(|r| s(r, "time").to_string())
        .unwrap()
    );
    // By sender, exactly and by domain with a limit.
    let rows = timed(&["--sender", "DEV3@contoso.test"]);
    assert_eq!(
        rows.len(),
        expect(&|x, _| x.sender == "dev3@contoso.test")
            + waiting(&|x, _| x.sender == "dev3@contoso.test")
    );
    let out = postern_log(
        &env,
        &["--sender", "@contoso.test", "--limit", "50", "--json"],
    );
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 50);
    let newest = m
        .attempts
        .iter()
        .map(|a| (a.ts, a.queue_id.as_str()))
        .chain(
            m.msgs
                .iter()
                .filter(|x| !attempted.contains(x.queue_id.as_str()))
                .map(|x| (x.arrival, x.queue_id.as_str())),
        )
        .max()
        .unwrap();
    assert_eq!(
        s(rows.last().unwrap(), "queue_id"),
        newest.1,
        "the newest rows come last"
    );
    // By queue ID and Message-ID.
    let x = &m.msgs[4242];
    let rows = timed(&["--id", &x.queue_id]);
    assert_eq!(rows.len(), expect(&|mm, _| mm.queue_id == x.queue_id));
    let rows2 = timed(&["--message-id", "<4242@dev.lan>"]);
    assert_eq!(rows, rows2);
    // By status.
    let rows = timed(&["--status", "bounced"]);
    assert_eq!(rows.len(), expect(&|_, a| a.status == TrackStatus::Bounced));
    let rows = timed(&["--status", "queued"]);
    assert_eq!(rows.len(), waiting(&|_, _| true));
    // By time: a window of 1000 minutes.
    let (lo, hi) = (BASE + 1000 * 60 * SEC, BASE + 2000 * 60 * SEC);
    let rows = timed(&[
        "--since",
        &format!("@{}", lo / SEC),
        "--until",
        &format!("@{}", hi / SEC),
    ]);
    assert_eq!(
        rows.len(),
        expect(&|_, a| a.ts >= lo && a.ts < hi)
            + m.msgs
                .iter()
                .filter(|x| x.arrival >= lo && x.arrival < hi)
                .filter(|x| !attempted.contains(x.queue_id.as_str()))
                .map(|x| x.recipients.len())
                .sum::<usize>()
    );
    // Summary over the window, per mailbox.
    let t = Instant::now();
    let out = postern_log(
        &env,
        &[
            "--summary",
            "--json",
            "--since",
            &format!("@{}", lo / SEC),
            "--until",
            &format!("@{}", hi / SEC),
        ],
    )
    .ok()
    .unwrap();
    eprintln!("postern log --summary (window): {:?}", t.elapsed());
    let sum: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let box3 = sum
        .iter()
        .find(|v| v["name"] == "box3@contoso.test")
        .unwrap();
    let in_window: Vec<&TrackedMessage> = m
        .msgs
        .iter()
        .filter(|x| x.arrival >= lo && x.arrival < hi)
        .filter(|x| x.sasl_user.as_deref() == Some("box3@contoso.test"))
        .collect();
    // Attempts in the window, of box3's messages whenever they arrived.
    let count_status = |st: TrackStatus| -> i64 {
        m.attempts
            .iter()
            .filter(|a| a.status == st && a.ts >= lo && a.ts < hi)
            .filter(|a| {
                by_id[a.queue_id.as_str()].sasl_user.as_deref() == Some("box3@contoso.test")
            })
            .count() as i64
    };
    assert_eq!(box3["messages"].as_i64().unwrap(), in_window.len() as i64);
    assert_eq!(
        box3["recipients"].as_i64().unwrap(),
        in_window
            .iter()
            .map(|x| x.recipients.len() as i64)
            .sum::<i64>()
    );
    assert_eq!(
        box3["bytes"].as_i64().unwrap(),
        in_window.iter().map(|x| x.size).sum::<i64>()
    );
    assert_eq!(
        box3["sent"].as_i64().unwrap(),
        count_status(TrackStatus::Sent)
    );
    assert_eq!(
        box3["deferred"].as_i64().unwrap(),
        count_status(TrackStatus::Deferred)
    );
    assert_eq!(
        box3["bounced"].as_i64().unwrap(),
        count_status(TrackStatus::Bounced)
    );
    let total = sum.iter().find(|v| v["kind"] == "total").unwrap();
    assert_eq!(total["messages"].as_i64().unwrap(), 1000);
    assert_eq!(
        sum.iter().filter(|v| v["kind"] == "client").count(),
        4,
        "{sum:#?}"
    );
}

#[test]
fn only_root_and_mail_owner_read_the_record() {
    if !postern_tests::harness::running_as_root() {
        eprintln!("skipped: needs root to run postern log as another user");
        return;
    }
    let env = TestEnv::new().unwrap();
    let (msgs, attempts) = golden_records();
    let path = seed(&env, |ix| {
        ix.batch(|b| {
            b.track_message(&msgs[0])?;
            b.track_attempt(&attempts[1])
        })
        .unwrap();
    });
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Root reads (as mail_owner).
    let out = postern_log(&env, &["--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.lines().count(), 1);
    // Anyone else is told why not.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mut cmd = command("postern").unwrap();
    std::os::unix::process::CommandExt::uid(&mut cmd, nobody.uid.as_raw());
    std::os::unix::process::CommandExt::gid(&mut cmd, nobody.gid.as_raw());
    cmd.env("MAIL_CONFIG", &env.etc)
        .arg("-c")
        .arg(&env.etc)
        .arg("log");
    let out = process::run(cmd, None, COMMAND_TIMEOUT).unwrap();
    assert_eq!(out.code(), Some(77), "{out}");
    assert!(
        out.stderr
            .contains("permission denied; run postern log as root or"),
        "{out}"
    );
}

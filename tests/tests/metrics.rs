//! Monitoring (issue 5 part 6): qmgr's Prometheus endpoint on
//! `metrics_listen` and `postern status --json`, after a workload through
//! the fake Exchange Online with XOAUTH2 tokens from the fake token
//! endpoint: queue sizes per queue and per route, deliveries by outcome
//! and reply class, the mailbox's recipient budget and rate use, and the
//! cached token's expiry (never the token).

use postern_tests::fake::replies::CONCURRENCY;
use postern_tests::fake::{Action, FakeSmartHost, FakeTokenEndpoint, TokenConfig};
use postern_tests::harness::{
    LogMark, OAUTH2_APP as APP, OAUTH2_SECRET as SECRET, TEST_USER, TestEnv, free_port, re,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

const MAILBOX: &str = TEST_USER;
const WAIT: Duration = Duration::from_secs(30);

/// postern delivering as MAILBOX with XOAUTH2, metrics on a free port (or
/// off); one delivery attempt per message during the test.
fn setup(metrics: bool) -> (TestEnv, FakeSmartHost, FakeTokenEndpoint, Option<u16>) {
    let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(Duration::from_secs(3599))).unwrap();
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_xoauth2_fake(&ep).unwrap();
    env.set_many(&[
        ("minimal_backoff_time", "1h"),
        ("maximal_backoff_time", "2h"),
        ("queue_run_delay", "1h"),
        ("smtp_account_throttle_delay", "1s"),
    ])
    .unwrap();
    let port = metrics.then(|| {
        let p = free_port().unwrap();
        env.set("metrics_listen", &format!("127.0.0.1:{p}"))
            .unwrap();
        p
    });
    (env, fake, ep, port)
}

/// Three delivered, one deferred (451), one bounced (550; its notice is
/// delivered), one throttled (432 4.3.2: a slow-down deferral). Returns
/// the queue ID of the plainly deferred message.
fn workload(env: &TestEnv, fake: &FakeSmartHost) -> String {
    fake.on_rcpt(
        "later@contoso.test",
        Action::text("451 4.7.500 Server busy. Please try again later."),
    );
    fake.on_rcpt(
        "nobody@contoso.test",
        Action::text(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        ),
    );
    fake.on_rcpt("slow@contoso.test", Action::text(CONCURRENCY));
    let send = |rcpt: &str| {
        env.sendmail(
            &["-f", MAILBOX, rcpt],
            format!("From: {MAILBOX}\nTo: {rcpt}\nSubject: scan\n\npage\n").as_bytes(),
        )
        .unwrap()
        .ok()
        .unwrap();
    };
    for _ in 0..3 {
        send("bob@contoso.test");
    }
    send("later@contoso.test");
    send("nobody@contoso.test");
    // 3 to bob and the bounce notice.
    env.wait_log_count(LogMark(0), "status=sent", 4, WAIT)
        .unwrap();
    env.wait_log_count(LogMark(0), "status=bounced", 1, WAIT)
        .unwrap();
    let line = env
        .wait_log(re(r"to=<later@contoso\.test>.*status=deferred"), WAIT)
        .unwrap();
    send("slow@contoso.test");
    env.wait_log(re(r"to=<slow@contoso\.test>.*status=deferred"), WAIT)
        .unwrap();
    let id = regex::Regex::new(r"\]: ([0-9A-F]+): to=")
        .unwrap()
        .captures(&line)
        .map(|c| c[1].to_string())
        .unwrap();
    // Queue manager done with them (the deferrals are in the index).
    env.wait_log_count(LogMark(0), "removed", 4, WAIT).unwrap();
    id
}

/// `GET path` on the endpoint: (status line, content type, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: postern-tests\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, kind, body.to_string())
}

/// The value of the sample `name{labels}` (labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The access token in the cache (to check it is never shown).
fn cached_token(env: &TestEnv) -> String {
    let dir = env.root.join("data/oauth2");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[test]
fn prometheus_endpoint_reports_the_workload() {
    let (mut env, fake, _ep, port) = setup(true);
    let port = port.unwrap();
    env.start().unwrap();
    env.wait_log(
        format!("metrics endpoint on http://127.0.0.1:{port}/metrics"),
        WAIT,
    )
    .unwrap();
    let deferred_id = workload(&env, &fake);
    env.postsuper(&["-h", &deferred_id]).unwrap().ok().unwrap();
    let (status, kind, text) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let v =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    // Queues: the slow-down deferral waits in deferred/, the other is held.
    for (q, n) in [
        ("maildrop", 0.0),
        ("incoming", 0.0),
        ("active", 0.0),
        ("deferred", 1.0),
        ("hold", 1.0),
        ("corrupt", 0.0),
    ] {
        assert_eq!(
            v(&format!("postern_queue_messages{{queue=\"{q}\"}}")),
            n,
            "{q}\n{text}"
        );
    }
    let route = format!("smtp:[localhost]:{}", fake.port());
    for q in ["deferred", "hold"] {
        assert_eq!(
            v(&format!(
                "postern_route_messages{{route=\"{route}\",queue=\"{q}\"}}"
            )),
            1.0
        );
        assert_eq!(
            v(&format!(
                "postern_route_recipients{{route=\"{route}\",queue=\"{q}\"}}"
            )),
            1.0
        );
    }
    // Outcomes by reply class since qmgr started.
    let d = |status: &str, class: &str| {
        v(&format!(
            "postern_deliveries_total{{status=\"{status}\",class=\"{class}\"}}"
        ))
    };
    assert_eq!(d("sent", "normal"), 4.0, "{text}");
    assert_eq!(d("deferred", "normal"), 1.0, "{text}");
    assert_eq!(d("deferred", "slow_down"), 1.0, "{text}");
    assert_eq!(d("bounced", "normal"), 1.0, "{text}");
    assert_eq!(d("deferred", "hold_route"), 0.0, "{text}");
    assert!(text.contains("# TYPE postern_deliveries_total counter\n"));
    // The mailbox: 4 recipients accepted of its 10000/24h budget; 6
    // deliveries (and the notice) within its 30/60s rate window.
    let a = |name: &str| v(&format!("{name}{{account=\"{MAILBOX}\"}}"));
    assert_eq!(a("postern_account_recipient_limit"), 10000.0);
    assert_eq!(a("postern_account_recipient_window_seconds"), 86400.0);
    assert_eq!(a("postern_account_recipients_used"), 4.0, "{text}");
    assert_eq!(a("postern_account_recipient_budget_remaining"), 9996.0);
    assert_eq!(a("postern_account_rate_limit"), 30.0);
    assert_eq!(a("postern_account_rate_window_seconds"), 60.0);
    assert_eq!(a("postern_account_rate_used"), 7.0, "{text}");
    assert_eq!(a("postern_account_in_flight"), 0.0);
    assert_eq!(a("postern_account_held"), 0.0);
    // The token: about an hour left, and never the token itself.
    let exp = v(&format!(
        "postern_oauth2_token_expiry_timestamp_seconds{{account=\"{MAILBOX}\",client_id=\"{APP}\"}}"
    ));
    let left = exp - unix_now();
    assert!((3000.0..3700.0).contains(&left), "{left}\n{text}");
    let token = cached_token(&env);
    assert!(!text.contains(&token));
    assert!(!text.contains(SECRET));
    // Every sample line parses as `name{labels} value`.
    let line = re(r#"^[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$"#);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.matches(l), "{l}");
    }
    // The same as JSON on /status; other paths and methods are refused.
    let (status, kind, body) = get(port, "/status");
    assert_eq!(
        (status.as_str(), kind.as_str()),
        ("HTTP/1.1 200 OK", "application/json")
    );
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["deliveries"]["sent"]["normal"], 4);
    assert!(!body.contains(&token));
    assert_eq!(get(port, "/nothing").0, "HTTP/1.1 404 Not Found");
    env.stop().unwrap();
}

#[test]
fn status_json_has_the_fields_with_and_without_the_daemons() {
    // The endpoint is off (the default): the status file alone.
    let (mut env, fake, _ep, _) = setup(false);
    env.start().unwrap();
    let deferred_id = workload(&env, &fake);
    env.postsuper(&["-h", &deferred_id]).unwrap().ok().unwrap();
    assert!(env.log_grep("metrics endpoint").is_empty());
    let out = env.postern(&["status", "--json"]).unwrap();
    assert_eq!(out.code(), Some(0), "{out}");
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["running"], true, "{j:#}");
    assert_eq!(j["fresh"], true, "{j:#}");
    assert!(j["master_pid"].as_i64().unwrap() > 0);
    assert!(
        j["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["command"] == "qmgr" && s["pid"].as_i64().is_some()),
        "{j:#}"
    );
    assert!(j["qmgr"]["pid"].as_u64().unwrap() > 0);
    assert_eq!(j["queues"]["deferred"], 1);
    assert_eq!(j["queues"]["hold"], 1);
    assert_eq!(j["queues"]["maildrop"], 0);
    let routes = j["routes"].as_array().unwrap();
    let route = format!("smtp:[localhost]:{}", fake.port());
    assert!(
        routes
            .iter()
            .any(|r| r["route"] == route.as_str() && r["queue"] == "hold" && r["recipients"] == 1),
        "{j:#}"
    );
    assert_eq!(j["deliveries"]["sent"]["normal"], 4);
    assert_eq!(j["deliveries"]["deferred"]["slow_down"], 1);
    assert_eq!(j["deliveries"]["bounced"]["normal"], 1);
    let acct = &j["accounts"][0];
    assert_eq!(acct["account"], MAILBOX);
    assert_eq!(acct["recipients"]["limit"], 10000);
    assert_eq!(acct["recipients"]["used"], 4);
    assert_eq!(acct["recipients"]["left"], 9996);
    assert_eq!(acct["rate"]["limit"], 30);
    assert_eq!(acct["held"], false);
    let tok = &j["oauth2_tokens"][0];
    assert_eq!(tok["account"], MAILBOX);
    assert_eq!(tok["client_id"], APP);
    assert_eq!(tok["expired"], false);
    let left = tok["seconds_left"].as_i64().unwrap();
    assert!((3000..3700).contains(&left), "{j:#}");
    assert!(!out.stdout.contains(&cached_token(&env)));
    // The status file is the queue manager's, mode 0600.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(env.spool.join("pid/qmgr.status.json")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), env.owner.uid.as_raw());

    // Stopped: exit status 3, queue sizes from the directories.
    env.stop().unwrap();
    let out = env.postern(&["status", "--json"]).unwrap();
    assert_eq!(out.code(), Some(3), "{out}");
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["running"], false);
    for k in ["qmgr", "routes", "deliveries", "accounts", "oauth2_tokens"] {
        assert_eq!(j[k], Value::Null, "{k}: {j:#}");
    }
    assert_eq!(j["queues"]["deferred"], 1, "{j:#}");
    assert_eq!(j["queues"]["hold"], 1, "{j:#}");
    // Usage errors are usage errors.
    assert_eq!(env.postern(&["status", "--yaml"]).unwrap().code(), Some(64));
}

#[test]
fn metrics_listen_must_be_an_address_written_out() {
    let mut env = TestEnv::new().unwrap();
    for bad in ["*:9154", "metrics.example:9154", "0"] {
        env.set("metrics_listen", bad).unwrap();
        let out = env.postern(&["check"]).unwrap();
        assert_eq!(out.code(), Some(1), "{bad}: {out}");
        assert!(
            out.stdout.contains("bad value for metrics_listen")
                || out.stderr.contains("bad value for metrics_listen"),
            "{bad}: {out}"
        );
    }
}

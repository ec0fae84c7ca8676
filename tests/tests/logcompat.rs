//! The mail log feeds Postfix's own tools: a known workload through
//! sendmail and smtpd (sent, deferred, bounced, rejected at RCPT, a failed
//! AUTH), then Debian's `pflogsumm --syslog-name=postern` must count what
//! happened, and Debian's fail2ban `postfix` filter (normal and auth
//! modes, with `_daemon` adjusted to postern's syslog name) must find the
//! rejected client and the one that failed to authenticate, with the right
//! host.
//!
//! The tools are the real Debian packages (`.ci/run` installs them; the
//! tests install them when missing and the machine allows it).

use postern_tests::fake::{Action, FakeSmartHost};
use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// What the workload did, to compare with what the tools count.
#[derive(Debug, Default)]
struct Expected {
    /// Messages taken in (pickup and smtpd); not notifications.
    received: usize,
    /// Recipients delivered (including the bounce notice).
    delivered: usize,
    /// Deferral log lines, and distinct messages deferred.
    deferrals: usize,
    deferred_msgs: usize,
    /// Recipients bounced.
    bounced: usize,
    /// RCPT commands rejected.
    rejected: usize,
}

/// The path of `program` (from PATH, or /usr/sbin, where pflogsumm lives),
/// installing Debian's `package` when it is missing.
fn ensure_tool(program: &str, package: &str) -> PathBuf {
    let find = || {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return p;
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    find().unwrap_or_else(|| {
        panic!(
            "{program} is missing and `apt-get install {package}` failed ({status:?}); install {package}"
        )
    })
}

/// Relays contoso.test through the fake; clients in 127.0.0.1/32 relay,
/// others may AUTH (users in the postern password file) over STARTTLS.
fn setup() -> (TestEnv, FakeSmartHost, u16) {
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
        // One attempt per deferred message during the test.
        ("minimal_backoff_time", "1h"),
        ("maximal_backoff_time", "2h"),
        ("queue_run_delay", "1h"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.add_sasl_user("webapp@contoso.test", "S3cret-app-pass")
        .unwrap();
    env.start().unwrap();
    (env, fake, port)
}

/// One message over SMTP from 127.0.0.1 (in mynetworks).
fn smtp_send(port: u16, from: &str, to: &[&str]) {
    let (mut c, g) = Smtp::connect(port, None).unwrap();
    assert_eq!(g.code, 220, "{g}");
    assert_eq!(c.cmd("EHLO scanner.lan").unwrap().code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).unwrap().code, 250);
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>")).unwrap();
        assert_eq!(r.code, 250, "{r}");
    }
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(format!("From: {from}\r\nSubject: scan\r\n\r\npage\r\n.\r\n").as_bytes())
        .unwrap();
    let r = c.reply().unwrap();
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);
}

/// The workload; returns what a correct summary counts.
fn workload(env: &TestEnv, fake: &FakeSmartHost, port: u16) -> Expected {
    let mut e = Expected::default();
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
    let mark = env.log_mark();
    // Two local submissions, delivered.
    for i in 0..2 {
        env.sendmail(
            &["-f", "cron@contoso.test", "admin@contoso.test"],
            format!("Subject: job {i}\n\nok\n").as_bytes(),
        )
        .unwrap()
        .ok()
        .unwrap();
    }
    e.received += 2;
    e.delivered += 2;
    // Over SMTP: one delivered, one to a recipient that is deferred, one
    // that bounces (its notice goes back to the sender and is delivered).
    smtp_send(port, "scanner@contoso.test", &["bob@contoso.test"]);
    smtp_send(port, "scanner@contoso.test", &["later@contoso.test"]);
    smtp_send(port, "scanner@contoso.test", &["nobody@contoso.test"]);
    e.received += 3;
    e.delivered += 1 + 1;
    e.deferrals += 1;
    e.deferred_msgs += 1;
    e.bounced += 1;
    // A foreign client is refused at RCPT (twice) ...
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO laptop.guest").unwrap();
    c.cmd("MAIL FROM:<spammer@evil.test>").unwrap();
    for to in ["victim@elsewhere.test", "other@elsewhere.test"] {
        let r = c.cmd(&format!("RCPT TO:<{to}>")).unwrap();
        assert_eq!(r.code, 554, "{r}");
        e.rejected += 1;
    }
    c.cmd("QUIT").unwrap();
    // ... and another fails to authenticate.
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.3")).unwrap();
    c.cmd("EHLO guesser.guest").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO guesser.guest").unwrap();
    let r = c.auth_plain("webapp@contoso.test", "wrong").unwrap();
    assert_eq!(r.code, 535, "{r}");
    c.cmd("QUIT").unwrap();
    // A third guesses and hangs up without QUIT.
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.4")).unwrap();
    c.cmd("EHLO guesser2.guest").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO guesser2.guest").unwrap();
    let r = c.auth_plain("admin", "admin").unwrap();
    assert_eq!(r.code, 535, "{r}");
    drop(c);
    // Everything logged: 4 deliveries plus the notice, one deferral, one bounce.
    env.wait_log_count(mark, re(r"status=sent "), e.delivered, WAIT)
        .unwrap();
    env.wait_log_count(mark, re(r"status=deferred "), e.deferrals, WAIT)
        .unwrap();
    env.wait_log_count(mark, re(r"status=bounced "), e.bounced, WAIT)
        .unwrap();
    env.wait_log_count(mark, "SASL PLAIN authentication failed", 2, WAIT)
        .unwrap();
    for host in ["127.0.0.3", "127.0.0.4"] {
        env.wait_log_count(mark, format!("disconnect from unknown[{host}]"), 1, WAIT)
            .unwrap();
    }
    e
}

/// The number before `label` in pflogsumm's "Grand Totals".
fn total(summary: &str, label: &str) -> usize {
    let pat = regex::Regex::new(&format!(r"(?m)^\s*(\d+)\s+{}\b", regex::escape(label))).unwrap();
    pat.captures(summary)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no \"{label}\" in pflogsumm's output:\n{summary}"))
}

#[test]
fn pflogsumm_counts_what_happened() {
    let pflogsumm = ensure_tool("pflogsumm", "pflogsumm");
    let (mut env, fake, port) = setup();
    let e = workload(&env, &fake, port);
    env.stop().unwrap();
    let out = Command::new(pflogsumm)
        .arg("--syslog-name=postern")
        .arg(&env.maillog)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{summary}");
    assert_eq!(total(&summary, "received"), e.received, "{summary}");
    assert_eq!(total(&summary, "delivered"), e.delivered, "{summary}");
    assert_eq!(total(&summary, "deferred"), e.deferred_msgs, "{summary}");
    let deferrals = regex::Regex::new(r"\(\s*(\d+)\s+deferrals\)").unwrap();
    assert_eq!(
        deferrals
            .captures(&summary)
            .and_then(|c| c[1].parse::<usize>().ok()),
        Some(e.deferrals),
        "{summary}"
    );
    assert_eq!(total(&summary, "bounced"), e.bounced, "{summary}");
    assert_eq!(total(&summary, "rejected"), e.rejected, "{summary}");
    // The details name the reasons and the hosts.
    assert!(
        summary.contains(&format!("Relay access denied (total: {})", e.rejected)),
        "{summary}"
    );
    assert!(
        re(r"(?m)^\s+\d+\s+127\.0\.0\.2$").matches(&summary),
        "{summary}"
    );
    assert!(summary.contains("RecipientNotFound"), "{summary}");
    assert!(summary.contains("Server busy"), "{summary}");
    assert!(
        re(r"(?m)^\s+1\s+unknown\[127\.0\.0\.3\]: SASL PLAIN authentication failed")
            .matches(&summary),
        "{summary}"
    );
    assert!(summary.contains("Fatal Errors: none"), "{summary}");
}

/// Debian's fail2ban filter for Postfix with its `_daemon` adjusted to
/// postern's syslog name (the same pattern with `postern` for `postfix`).
const F2B_DAEMON: &str = r"postern(-\w+)?/\w+(?:/smtp[ds])?";
const F2B_FILTER: &str = "/etc/fail2ban/filter.d/postfix.conf";

/// `fail2ban-regex -o ip LOG FILTER[options]`: the host of each match.
fn fail2ban_hosts(f2b: &Path, log: &Path, options: &str) -> Vec<String> {
    let filter = if options.is_empty() {
        F2B_FILTER.to_string()
    } else {
        format!("{F2B_FILTER}[{options}]")
    };
    let out = Command::new(f2b)
        .args(["-o", "ip"])
        .arg(log)
        .arg(&filter)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fail2ban-regex {filter}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn fail2ban_postfix_filters_find_the_rejected_and_the_failed_auth_hosts() {
    let f2b = ensure_tool("fail2ban-regex", "fail2ban");
    assert!(
        Path::new(F2B_FILTER).is_file(),
        "{F2B_FILTER} missing: is Debian's fail2ban installed?"
    );
    let (mut env, fake, port) = setup();
    let e = workload(&env, &fake, port);
    env.stop().unwrap();
    let daemon = format!("_daemon=\"{F2B_DAEMON}\"");
    // The `postfix` jail (mode "more"): the RCPT rejects, each with the
    // client's address; nothing of the trusted client's traffic.
    let hosts = fail2ban_hosts(&f2b, &env.maillog, &daemon);
    assert_eq!(hosts, vec!["127.0.0.2"; e.rejected], "{}", env.log_text());
    // The `postfix-sasl` jail (`postfix[mode=auth]` in Debian's jail.conf):
    // the failed AUTH.
    let hosts = fail2ban_hosts(&f2b, &env.maillog, &format!("mode=auth, {daemon}"));
    assert_eq!(hosts, vec!["127.0.0.3", "127.0.0.4"], "{}", env.log_text());
    // Aggressive mode adds the disconnect lines with auth=0/1 and the
    // "lost connection after AUTH" of the client that hung up.
    let mut hosts = fail2ban_hosts(&f2b, &env.maillog, &format!("mode=aggressive, {daemon}"));
    hosts.sort();
    let mut want = vec!["127.0.0.2"; e.rejected];
    want.extend([
        "127.0.0.3",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.4",
        "127.0.0.4",
    ]);
    assert_eq!(hosts, want, "{}", env.log_text());
    // The unadjusted filter looks for "postfix/...": the syslog name is
    // what has to change, not the lines.
    assert!(fail2ban_hosts(&f2b, &env.maillog, "").is_empty());
}

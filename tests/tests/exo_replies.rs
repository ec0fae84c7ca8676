//! Exchange Online's replies end to end (issue 4 part 3, OFFICE365.md §5,
//! §8.4, §8.6, §8.7) and send-as rewriting (part 5, §6.3): the fake answers
//! with the exact texts of the catalogue, and the queue does what the table
//! says —
//!
//! - `432 4.3.2` slows the mailbox down: the message waits out
//!   `smtp_account_throttle_delay` and is delivered;
//! - `554 5.2.0 ...SubmissionQuotaExceeded` and `550 5.2.25x` hold the
//!   mailbox: the backlog stays queued, `postqueue -p` says why, one probe
//!   per `smtp_account_hold_retry_time` (or `postqueue -f`) releases it;
//! - `5.7.139`, `5.7.3`, `5.7.57`, `5.1.8` hold the route: nothing bounces,
//!   the log says what the admin must do, a flush delivers everything once
//!   the tenant is fixed;
//! - send-as, size and header errors bounce, and the sender's DSN carries
//!   the exact reply and a plain-language explanation;
//! - `smtp_send_as_mailbox` and `smtp_generic_maps` rewrite what reaches
//!   Exchange, whose send-as check looks at the header From.
//!
//! (The plain 4xx deferral with backoff, `451 4.7.0 ... PRX4`, is in
//! deferral.rs.)

use postern_tests::fake::{Action, FakeConfig, FakeSmartHost, Message, Phase, replies};
use postern_tests::harness::{LogMark, TEST_PASSWORD, TEST_USER, TestEnv, re};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const WAIT: Duration = Duration::from_secs(30);

/// The mailbox as qmgr names the account (the SASL user, lower case).
const ACCOUNT: &str = "scanner@contoso.test";

/// `554 5.2.0 ...MapiExceptionMaxSubmissionExceeded` (OFFICE365.md §3: the
/// code was not captured, "probably 554 5.2.0"; the fake has no constant).
const MAX_SUBMISSION: &str = "554 5.2.0 STOREDRV.Submission.Exception:MessageSubmissionExceededException.MapiExceptionMaxSubmissionExceeded; Message size exceeds maximum size limit";

// ---- helpers -------------------------------------------------------------

/// An environment relaying to an Exchange fake (the default one changed
/// by `fake`, plus the test user), with `params` set in main.cf.
fn setup_with(
    fake: impl FnOnce(FakeConfig) -> FakeConfig,
    params: &[(&str, &str)],
) -> (TestEnv, FakeSmartHost) {
    let mut env = TestEnv::new().unwrap();
    let cfg = fake(FakeConfig::office365(&env.pki.server)).user(TEST_USER, TEST_PASSWORD);
    let fake = FakeSmartHost::spawn(cfg).unwrap();
    env.use_relayhost(&fake).unwrap();
    env.set_many(params).unwrap();
    (env, fake)
}

/// [`setup_with`] the default fake.
fn setup(params: &[(&str, &str)]) -> (TestEnv, FakeSmartHost) {
    setup_with(|c| c, params)
}

/// Queues a message from `from` to `to` with `headers` (LF-separated
/// lines) and a short body, through sendmail.
fn send(env: &TestEnv, from: &str, to: &str, headers: &str) {
    let msg = format!("{headers}\n\nbody of the message to {to}\n");
    env.sendmail(&["-f", from, to], msg.as_bytes())
        .unwrap()
        .ok()
        .unwrap();
}

/// The messages in the queue (`postqueue -j`), with each one's first
/// delay reason.
fn queue_reasons(env: &TestEnv) -> Vec<(String, String)> {
    env.queue_json()
        .unwrap()
        .into_iter()
        .map(|m| {
            let id = m["queue_id"].as_str().unwrap_or_default().to_string();
            let reason = m["recipients"][0]["delay_reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (id, reason)
        })
        .collect()
}

/// Waits until `n` messages are queued and every one is deferred for a
/// reason satisfying `pred`; returns them.
fn wait_queue(
    env: &TestEnv,
    n: usize,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let q = queue_reasons(env);
        if q.len() == n && q.iter().all(|(_, r)| pred(r)) {
            return q;
        }
        if Instant::now() >= deadline {
            panic!(
                "the queue never held {n} messages all {what}: {q:#?}\n--- log:\n{}",
                tail(env, 60)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(env: &TestEnv, n: usize) -> String {
    let lines = env.log_lines();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Log lines after `mark` containing `text`.
fn lines_since(env: &TestEnv, mark: LogMark, text: &str) -> Vec<String> {
    let all = std::fs::read(&env.maillog).unwrap_or_default();
    let start = usize::try_from(mark.0).unwrap_or(0).min(all.len());
    String::from_utf8_lossy(&all[start..])
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

/// The queue ID of a delivery log line (`... postern/smtp[1]: ID: to=<...`).
fn queue_id(line: &str) -> String {
    let before = line.split(": to=<").next().unwrap_or_default();
    before.rsplit(' ').next().unwrap_or_default().to_string()
}

/// The reply the fake sent for `m`, as postern quotes it.
fn reply_of(m: &Message) -> String {
    m.reply.as_ref().expect("a reply was sent").one_line()
}

/// Routes `printer.local` (the devices' own domain, where the senders'
/// mailboxes are) to a local Maildir, so DSNs to the devices land there.
fn local_senders(env: &mut TestEnv) -> PathBuf {
    let dir = env.maildir("Maildir").unwrap();
    let t = env
        .write_file(
            "transport",
            &format!("printer.local  maildir:{}\n", dir.display()),
        )
        .unwrap();
    env.set("transport_maps", &format!("texthash:{}", t.display()))
        .unwrap();
    dir
}

/// The messages in `dir/new`, line ends normalised to LF and folded lines
/// (`\n    `) joined, waiting until there are `n`.
fn wait_maildir(dir: &Path, n: usize) -> Vec<String> {
    let new = dir.join("new");
    let deadline = Instant::now() + WAIT;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= n {
            let mut out: Vec<String> = files
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .unwrap()
                        .replace("\r\n", "\n")
                        .replace("\n    ", " ")
                })
                .collect();
            out.sort();
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages in {}",
            files.len(),
            new.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The DSN in `dsns` about `rcpt`.
fn dsn_for<'a>(dsns: &'a [String], rcpt: &str) -> &'a str {
    let key = format!("Final-Recipient: rfc822; {rcpt}\n");
    dsns.iter()
        .find(|d| d.contains(&key))
        .unwrap_or_else(|| panic!("no DSN for {rcpt} in {dsns:#?}"))
}

/// Asserts the DSN reports a failure with `dsn_code`, the exact `reply` as
/// its Diagnostic-Code and in the human-readable part, and an explanation
/// containing `fix`.
fn assert_dsn(dsn: &str, rcpt: &str, dsn_code: &str, reply: &str, fix: &str) {
    assert!(dsn.contains("Return-Path: <>\n"), "{dsn}");
    assert!(
        dsn.contains("Subject: Undelivered Mail Returned to Sender"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: failed\n"), "{dsn}");
    assert!(dsn.contains(&format!("Status: {dsn_code}\n")), "{dsn}");
    assert!(
        dsn.contains(&format!("Diagnostic-Code: smtp; {reply}\n")),
        "the DSN should carry the exact reply {reply:?}:\n{dsn}"
    );
    assert!(
        dsn.contains(&format!(
            "<{rcpt}>: host localhost[127.0.0.1] said: {reply} (in reply to end of DATA command)"
        )),
        "{dsn}"
    );
    let explained = dsn
        .lines()
        .find(|l| l.starts_with("What this means: "))
        .unwrap_or_else(|| panic!("no explanation in the DSN:\n{dsn}"));
    assert!(explained.contains(fix), "{explained:?} lacks {fix:?}");
}

// ---- slow down -----------------------------------------------------------

#[test]
fn concurrent_connections_432_pauses_the_mailbox_then_delivers() {
    let (mut env, fake) = setup(&[]);
    env.set("smtp_account_throttle_delay", "3s").unwrap();
    // Exchange's current text, returned at the end of DATA.
    let text = format!("{} [Hostname={}]", replies::CONCURRENCY, fake.hostname());
    fake.script(Phase::DataEnd, Action::text(&text));
    env.start().unwrap();
    send(
        &env,
        TEST_USER,
        "boss@contoso.test",
        "From: scanner@contoso.test\nSubject: throttled",
    );
    let line = env.wait_log("status=deferred", WAIT).unwrap();
    assert!(
        line.contains(&format!(
            "dsn=4.3.2, status=deferred (host localhost[127.0.0.1] said: {text} (in reply to end of DATA command))"
        )),
        "{line}"
    );
    // The log explains what happened and what postern does about it.
    let id = queue_id(&line);
    let explained = env.wait_log(format!("{id}: explanation: "), WAIT).unwrap();
    assert!(
        explained.contains("More than 3 connections submitted as this mailbox at once")
            && explained.contains("smtp_account_concurrency_limit"),
        "{explained}"
    );
    let throttled = env
        .wait_log(
            format!("warning: account {ACCOUNT}: the server throttles it"),
            WAIT,
        )
        .unwrap();
    assert!(
        re(r"pausing [34]s and allowing \d+ connection\(s\) at a time").matches(&throttled),
        "{throttled}"
    );
    // Retried after the pause (minimal_backoff_time is 1s: only the
    // account's pause keeps it back that long), and delivered.
    let msgs = fake.wait_messages(1, WAIT).unwrap();
    env.wait_log("status=sent", WAIT).unwrap();
    let refused = fake.refused();
    assert_eq!(refused.len(), 1, "{}", fake.summary());
    let waited = msgs[0].at.duration_since(refused[0].at).unwrap();
    assert!(
        waited >= Duration::from_millis(2900),
        "retried {waited:?} after the 432; smtp_account_throttle_delay is 3s"
    );
    assert!(msgs[0].text().contains("Subject: throttled"));
    assert!(env.log_grep("status=bounced").is_empty());
    env.stop().unwrap();
}

// ---- hold the account ------------------------------------------------------

#[test]
fn submission_quota_holds_the_mailbox_and_a_probe_releases_it_when_the_window_frees() {
    // Exchange's real recipient budget, scaled down: 3 recipients per 6 s
    // per P2 sender; the fourth message gets the exact 554 5.2.0 text. The
    // first probe (4 s later) finds the window still full, the second one
    // (8 s) gets through.
    let hold = Duration::from_secs(4);
    let (mut env, fake) = setup_with(
        |c| c.recipient_budget(3, Duration::from_secs(6)),
        &[
            ("smtp_account_hold_retry_time", "4s"),
            // One delivery at a time, so each refusal is one probe.
            ("smtp_account_concurrency_limit", "1"),
        ],
    );
    // The backlog is there when postern starts.
    env.create_queue().unwrap();
    for i in 0..5 {
        send(
            &env,
            TEST_USER,
            &format!("r{i}@contoso.test"),
            &format!("From: Scanner <scanner@contoso.test>\nSubject: scan {i}"),
        );
    }
    env.start().unwrap();
    // Three go through, the fourth is refused: the mailbox is held.
    let held = env
        .wait_log(
            format!("warning: account {ACCOUNT}: deliveries held, next try in 4s: "),
            WAIT,
        )
        .unwrap();
    assert!(
        held.contains("said: 554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message The message can't be submitted because the sender's submission quota was exceeded.")
            && held.contains("limit of 10,000 recipients per 24 hours"),
        "{held}"
    );
    let refused = fake.refused();
    assert!(!refused.is_empty());
    let quota_reply = reply_of(&refused[0]);
    assert!(
        quota_reply.starts_with(replies::SUBMISSION_QUOTA),
        "{quota_reply}"
    );
    // The refused message is deferred (a 5xx text, but a temporary state),
    // with the explanation in the log.
    let line = env
        .wait_log(re(r"dsn=4\.2\.0, status=deferred \(host localhost\[127\.0\.0\.1\] said: 554 5\.2\.0 STOREDRV\.Submission\.Exception:SubmissionQuotaExceededException"), WAIT)
        .unwrap();
    let id = queue_id(&line);
    let explained = env.wait_log(format!("{id}: explanation: "), WAIT).unwrap();
    assert!(
        explained.contains("10,000 recipients per 24 hours")
            && explained.contains("held and sent when the rolling window frees"),
        "{explained}"
    );
    // The rest waits with the reason (and the explanation) in the queue
    // listing; nothing is bounced.
    let shown = env
        .wait_log(re(r"status=deferred \(delivery held until "), WAIT)
        .unwrap();
    assert!(
        shown.contains("SubmissionQuotaExceededException")
            && shown.contains("rolling window frees"),
        "{shown}"
    );
    let mailq = env.mailq().unwrap().stdout;
    assert!(
        re(r"\(delivery held until \w{3} [ \d]\d \d\d:\d\d:\d\d: host localhost\[127\.0\.0\.1\] said: 554 5\.2\.0 STOREDRV\.Submission\.Exception:SubmissionQuotaExceededException; .* \(The mailbox reached Exchange Online's limit of 10,000 recipients per 24 hours\. Mail is held and sent when the rolling window frees; .*\)\)").matches(&mailq),
        "{mailq}"
    );
    // Released by the probes once the window frees: everything delivered.
    let msgs = fake.wait_messages(5, WAIT).unwrap();
    env.wait_log(format!("account {ACCOUNT}: delivery resumed"), WAIT)
        .unwrap();
    assert!(
        env.log_grep("status=bounced").is_empty(),
        "{}",
        tail(&env, 40)
    );
    let mut subjects: Vec<String> = msgs.iter().filter_map(|m| m.header("Subject")).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        (0..5).map(|i| format!("scan {i}")).collect::<Vec<_>>()
    );
    // The first probe failed (the window was still full) and was not
    // announced as a new hold; the second one got through.
    let refused = fake.refused();
    let holds = env.log_grep("deliveries held").len();
    assert!(
        refused.len() >= 2 && holds < refused.len(),
        "{} refusals, {holds} holds logged\n{}",
        refused.len(),
        tail(&env, 40)
    );
    // While held, postern probed with one message per hold period: after
    // every refusal the next attempt came a hold period later.
    let records = fake.records();
    let mut attempts: Vec<(SystemTime, bool)> = records
        .messages
        .iter()
        .map(|m| (m.at, true))
        .chain(records.refused.iter().map(|m| (m.at, false)))
        .collect();
    attempts.sort();
    for w in attempts.windows(2) {
        if !w[0].1 {
            let gap = w[1].0.duration_since(w[0].0).unwrap_or_default();
            assert!(
                gap >= hold - Duration::from_millis(100),
                "an attempt {gap:?} after a quota refusal (hold time {hold:?}): {attempts:?}"
            );
        }
    }
    // The queue is empty.
    wait_queue(&env, 0, "gone", |_| true);
    env.stop().unwrap();
}

#[test]
fn continuous_error_throttle_holds_the_mailbox_until_postqueue_f() {
    let (mut env, fake) = setup(&[("smtp_account_hold_retry_time", "1h")]);
    // Exchange throttles the mailbox after repeated send-as refusals
    // (OFFICE365.md §3): a 5xx that expires.
    fake.on_mailbox(
        TEST_USER,
        Phase::DataEnd,
        Action::exo(replies::THROTTLED_SEND_AS),
    );
    env.start().unwrap();
    for i in 0..3 {
        send(
            &env,
            TEST_USER,
            &format!("r{i}@contoso.test"),
            &format!("From: scanner@contoso.test\nSubject: backlog {i}"),
        );
    }
    let held = env
        .wait_log(
            format!("warning: account {ACCOUNT}: deliveries held, next try in 1h: "),
            WAIT,
        )
        .unwrap();
    assert!(
        held.contains("550 5.2.252 Sender throttled due to continuous send as denied errors.")
            && held
                .contains("Fix the sender rewriting (smtp_send_as_mailbox = yes) or grant Send As"),
        "{held}"
    );
    // Every message ends up waiting for the hold, with the reply and the
    // explanation in the queue listing.
    let q = wait_queue(&env, 3, "held", |r| r.starts_with("delivery held until "));
    for (_, r) in &q {
        assert!(
            r.contains("said: 550 5.2.252 Sender throttled due to continuous send as denied errors. [")
                && r.ends_with("(Exchange Online throttles this mailbox after repeated Send As refusals. Fix the sender rewriting (smtp_send_as_mailbox = yes) or grant Send As, then wait for the throttle to expire.)"),
            "{r}"
        );
    }
    let mailq = env.mailq().unwrap().stdout;
    assert!(
        re(r"\n-- \d+ Kbytes in 3 Requests\.\n$").matches(&mailq),
        "{mailq}"
    );
    assert_eq!(mailq.matches("(delivery held until ").count(), 3, "{mailq}");
    // Held, not merely deferred: with a 1s backoff a plain deferral would
    // have been retried by now.
    let tries = fake.refused().len();
    assert!(tries <= 3, "{}", fake.summary());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fake.refused().len(), tries, "{}", fake.summary());
    assert!(env.log_grep("status=bounced").is_empty());
    assert!(fake.messages().is_empty());
    // The throttle expired: postqueue -f releases the hold.
    fake.clear_mailbox(TEST_USER);
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
    fake.wait_messages(3, WAIT).unwrap();
    wait_queue(&env, 0, "gone", |_| true);
    env.stop().unwrap();
}

// ---- hold the route -------------------------------------------------------

#[test]
fn smtp_auth_disabled_for_the_tenant_holds_the_backlog_and_says_what_to_do() {
    let (mut env, fake) = setup(&[("smtp_account_hold_retry_time", "1h")]);
    fake.on_mailbox(
        TEST_USER,
        Phase::Auth,
        Action::exo(replies::SMTP_AUTH_DISABLED_TENANT),
    );
    env.start().unwrap();
    for i in 0..4 {
        send(
            &env,
            TEST_USER,
            &format!("r{i}@contoso.test"),
            &format!("From: scanner@contoso.test\nSubject: backlog {i}"),
        );
    }
    // The reply is logged in full, deferred rather than bounced.
    let line = env
        .wait_log(re(r"dsn=4\.7\.139, status=deferred \(SASL authentication failed; server localhost\[127\.0\.0\.1\] said: 535 5\.7\.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant\. Visit https://aka\.ms/smtp_auth_disabled for more information\. \[\S+ \S+Z [0-9A-F]{16}\]\)"), WAIT)
        .unwrap();
    // The log says exactly what the admin must do.
    let id = queue_id(&line);
    let explained = env.wait_log(format!("{id}: explanation: "), WAIT).unwrap();
    assert!(
        explained.contains("SMTP AUTH is turned off for the whole Microsoft 365 tenant")
            && explained.contains("Set-TransportConfig -SmtpClientAuthenticationDisabled $false")
            && explained
                .contains("Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false"),
        "{explained}"
    );
    let held = env
        .wait_log(
            format!("warning: account {ACCOUNT}: deliveries held, next try in 1h: "),
            WAIT,
        )
        .unwrap();
    assert!(held.contains("Set-TransportConfig"), "{held}");
    // Every message waits, and mailq says why.
    let q = wait_queue(&env, 4, "held", |r| r.starts_with("delivery held until "));
    for (_, r) in &q {
        assert!(
            r.contains("said: 535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")
                && r.contains("(SMTP AUTH is turned off for the whole Microsoft 365 tenant (this also blocks XOAUTH2). Run Set-TransportConfig -SmtpClientAuthenticationDisabled $false"),
            "{r}"
        );
    }
    let mailq = env.mailq().unwrap().stdout;
    assert_eq!(
        mailq
            .matches("SmtpClientAuthentication is disabled for the Tenant")
            .count(),
        4,
        "{mailq}"
    );
    assert_eq!(mailq.matches("Set-TransportConfig").count(), 4, "{mailq}");
    // No more sign-ins while held (each one risks more than a wasted
    // connection), nothing bounced, nothing delivered.
    let auths = fake.auth_attempts();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fake.auth_attempts(), auths, "{}", fake.summary());
    assert!(env.log_grep("status=bounced").is_empty());
    assert!(fake.messages().is_empty());
    assert_eq!(env.queue_files("deferred").len(), 4);
    // The admin re-enables SMTP AUTH and flushes: everything goes.
    fake.clear_mailbox(TEST_USER);
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
    let msgs = fake.wait_messages(4, WAIT).unwrap();
    assert_eq!(msgs.len(), 4);
    wait_queue(&env, 0, "gone", |_| true);
    env.stop().unwrap();
}

#[test]
fn other_configuration_errors_hold_the_route_until_fixed() {
    let (mut env, fake) = setup(&[("smtp_account_hold_retry_time", "1h")]);
    env.start().unwrap();
    // (reply, phase, the log line's status text, what the admin is told)
    let cases: [(&str, Phase, &str, &str); 3] = [
        (
            replies::AUTH_UNSUCCESSFUL,
            Phase::Auth,
            "dsn=4.7.3, status=deferred (SASL authentication failed; server localhost[127.0.0.1] said: 535 5.7.3 Authentication unsuccessful [",
            "the app needs SMTP.SendAsApp with admin consent, and the service principal must be registered with New-ServicePrincipal",
        ),
        (
            replies::NOT_AUTHENTICATED,
            Phase::Mail,
            "dsn=4.7.57, status=deferred (host localhost[127.0.0.1] said: 530 5.7.57 Client not authenticated to send mail. [",
            "Set smtp_sasl_auth_enable = yes with credentials for this relay",
        ),
        (
            replies::BAD_OUTBOUND_SENDER,
            Phase::DataEnd,
            "dsn=4.1.8, status=deferred (host localhost[127.0.0.1] said: 550 5.1.8 Access denied, bad outbound sender [",
            "release it in Microsoft Defender > Restricted entities",
        ),
    ];
    let mut delivered = 0;
    for (n, (reply, phase, status, fix)) in cases.into_iter().enumerate() {
        let mark = env.log_mark();
        fake.on_mailbox(TEST_USER, phase, Action::exo(reply));
        for i in 0..2 {
            send(
                &env,
                TEST_USER,
                &format!("c{n}r{i}@contoso.test"),
                &format!("From: scanner@contoso.test\nSubject: case {n} message {i}"),
            );
        }
        env.wait_log_since(mark, status, WAIT)
            .unwrap_or_else(|e| panic!("{reply}: {e}"));
        let explained = lines_since(&env, mark, ": explanation: ");
        assert!(
            explained.iter().any(|l| l.contains(fix)),
            "{reply}: the log should say {fix:?}: {explained:#?}"
        );
        env.wait_log_since(
            mark,
            format!("warning: account {ACCOUNT}: deliveries held, next try in 1h: "),
            WAIT,
        )
        .unwrap_or_else(|e| panic!("{reply}: {e}"));
        let code = &reply[..3];
        let q = wait_queue(&env, 2, "held", |r| {
            r.starts_with("delivery held until ") && r.contains(&format!("said: {code} "))
        });
        for (_, r) in &q {
            assert!(r.contains(reply) && r.contains(fix), "{r}");
        }
        assert!(
            lines_since(&env, mark, "status=bounced").is_empty(),
            "{reply} bounced:\n{}",
            tail(&env, 30)
        );
        assert_eq!(fake.messages().len(), delivered, "{}", fake.summary());
        // Fixed: a flush delivers the held messages.
        fake.clear_mailbox(TEST_USER);
        env.postqueue(&["-f"]).unwrap().ok().unwrap();
        delivered += 2;
        fake.wait_messages(delivered, WAIT)
            .unwrap_or_else(|e| panic!("after fixing {reply}: {e}"));
        wait_queue(&env, 0, "gone", |_| true);
    }
    env.stop().unwrap();
}

// ---- bounce --------------------------------------------------------------

#[test]
fn size_and_header_errors_bounce_with_the_reply_and_the_fix_while_quota_holds() {
    let (mut env, fake) = setup(&[("smtp_account_hold_retry_time", "1h")]);
    let maildir = local_senders(&mut env);
    fake.set_hook(|e| {
        if e.phase != Phase::DataEnd {
            return None;
        }
        let text = match e.rcpts.first().map(String::as_str) {
            Some("big@contoso.test") => MAX_SUBMISSION,
            Some("headers@contoso.test") => replies::HEADER_TOO_BIG,
            Some("twofrom@contoso.test") => replies::MULTIPLE_FROM,
            _ => return None,
        };
        Some(Action::exo(text))
    });
    env.start().unwrap();
    send(
        &env,
        "scanner@printer.local",
        "big@contoso.test",
        "From: scanner@printer.local\nSubject: big",
    );
    send(
        &env,
        "scanner@printer.local",
        "headers@contoso.test",
        "From: scanner@printer.local\nSubject: many headers",
    );
    send(
        &env,
        "scanner@printer.local",
        "twofrom@contoso.test",
        "From: scanner@printer.local, other@printer.local\nSubject: two froms",
    );
    let dsns = wait_maildir(&maildir, 3);
    env.wait_log_count(LogMark::default(), "status=bounced", 3, WAIT)
        .unwrap();
    let refused = fake.refused();
    let reply_for = |rcpt: &str| {
        refused
            .iter()
            .find(|m| m.rcpt_to == [rcpt])
            .map(reply_of)
            .unwrap_or_else(|| panic!("{rcpt} not refused: {}", fake.summary()))
    };
    let cases = [
        (
            "big@contoso.test",
            "5.2.0",
            "larger than the sending mailbox's MaxSendSize",
        ),
        (
            "headers@contoso.test",
            "5.3.4",
            "header block is larger than Exchange Online accepts",
        ),
        (
            "twofrom@contoso.test",
            "5.1.20",
            "several From addresses and no Sender header",
        ),
    ];
    for (rcpt, code, fix) in cases {
        let reply = reply_for(rcpt);
        let dsn = dsn_for(&dsns, rcpt);
        assert!(
            dsn.contains("Delivered-To: scanner@printer.local\n"),
            "{dsn}"
        );
        assert_dsn(dsn, rcpt, code, &reply, fix);
        // The log line carries the reply; the explanation follows it.
        let line = env
            .log_grep(format!("to=<{rcpt}>"))
            .into_iter()
            .find(|l| l.contains("status=bounced"))
            .unwrap();
        assert!(
            line.contains(&format!("dsn={code}, status=bounced (host localhost[127.0.0.1] said: {reply} (in reply to end of DATA command))")),
            "{line}"
        );
        let id = queue_id(&line);
        let explained = env.log_grep(format!("{id}: explanation: "));
        assert_eq!(explained.len(), 1, "{explained:#?}");
        assert!(explained[0].contains(fix), "{}", explained[0]);
    }
    // The same 554 5.2.0, but the recipient rate limit: held, not bounced
    // (classified by the text, not the number).
    let mark = env.log_mark();
    fake.on_mailbox(
        TEST_USER,
        Phase::DataEnd,
        Action::exo(replies::SUBMISSION_QUOTA),
    );
    send(
        &env,
        "scanner@printer.local",
        "quota@contoso.test",
        "From: scanner@printer.local\nSubject: over quota",
    );
    let line = env
        .wait_log_since(mark, "to=<quota@contoso.test>", WAIT)
        .unwrap();
    assert!(
        line.contains("dsn=4.2.0, status=deferred (host localhost[127.0.0.1] said: 554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException;"),
        "{line}"
    );
    env.wait_log_since(mark, format!("account {ACCOUNT}: deliveries held"), WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(lines_since(&env, mark, "status=bounced").is_empty());
    assert_eq!(
        wait_maildir(&maildir, 3).len(),
        3,
        "no DSN for the held message"
    );
    assert_eq!(queue_reasons(&env).len(), 1);
    env.stop().unwrap();
}

// ---- send-as -------------------------------------------------------------

/// A device's message: its own address and display name, a Sender of its
/// own, and no Reply-To.
const DEVICE_HEADERS: &str = "From: \"Scanner, 3rd floor\" <scanner@printer.local>\nSender: spooler@printer.local\nTo: Boss <boss@contoso.test>\nSubject: scanned page";

#[test]
fn send_as_mailbox_rewrites_the_header_from_exchange_checks() {
    let (mut env, fake) = setup_with(|c| c.send_as_check(true), &[]);
    env.set("smtp_send_as_mailbox", "yes").unwrap();
    env.start().unwrap();
    send(
        &env,
        "scanner@printer.local",
        "boss@contoso.test",
        DEVICE_HEADERS,
    );
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    env.wait_log("status=sent", WAIT).unwrap();
    assert!(fake.refused().is_empty(), "{}", fake.summary());
    // Envelope and header From are the mailbox; the display name stays;
    // replies go to the device's address.
    assert_eq!(m.mail_from, TEST_USER);
    assert_eq!(m.auth_user.as_deref(), Some(TEST_USER));
    assert_eq!(m.p2_sender.as_deref(), Some(TEST_USER));
    assert_eq!(
        m.header("From").as_deref(),
        Some("\"Scanner, 3rd floor\" <scanner@contoso.test>")
    );
    assert_eq!(
        m.header("Reply-To").as_deref(),
        Some("\"Scanner, 3rd floor\" <scanner@printer.local>")
    );
    // Exactly one From, and no Sender of someone else ("on behalf of").
    let text = m.text();
    let head = text.split("\r\n\r\n").next().unwrap();
    let froms = head
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("from:"))
        .count();
    assert_eq!(froms, 1, "{head}");
    assert_eq!(m.header("Sender"), None, "{head}");
    assert_eq!(m.header("To").as_deref(), Some("Boss <boss@contoso.test>"));
    assert_eq!(m.rcpt_to, vec!["boss@contoso.test"]);
    assert!(
        text.ends_with("\r\n\r\nbody of the message to boss@contoso.test\r\n"),
        "{text}"
    );
    // The queued message itself is not changed (the log shows the original sender).
    env.wait_log("from=<scanner@printer.local>", WAIT).unwrap();
    env.stop().unwrap();
}

#[test]
fn without_send_as_rewriting_the_device_gets_the_5_7_60_bounce_and_the_fix() {
    let (mut env, fake) = setup_with(|c| c.send_as_check(true), &[]);
    let maildir = local_senders(&mut env);
    env.start().unwrap();
    send(
        &env,
        "scanner@printer.local",
        "boss@contoso.test",
        DEVICE_HEADERS,
    );
    let dsns = wait_maildir(&maildir, 1);
    let refused = fake.refused();
    assert_eq!(refused.len(), 1, "{}", fake.summary());
    assert_eq!(
        refused[0].p2_sender.as_deref(),
        Some("scanner@printer.local")
    );
    let reply = reply_of(&refused[0]);
    assert!(reply.starts_with(replies::SEND_AS_DENIED), "{reply}");
    let line = env.wait_log("status=bounced", WAIT).unwrap();
    assert!(
        line.contains(&format!(
            "to=<boss@contoso.test>, relay=localhost[127.0.0.1]:{}",
            fake.port()
        )) && line.contains(&format!(
            "dsn=5.7.60, status=bounced (host localhost[127.0.0.1] said: {reply} (in reply to end of DATA command))"
        )),
        "{line}"
    );
    let id = queue_id(&line);
    let explained = env.wait_log(format!("{id}: explanation: "), WAIT).unwrap();
    let fix = "Add-RecipientPermission <from-address> -Trustee <mailbox> -AccessRights SendAs";
    assert!(
        explained.contains("The authenticated mailbox may not send as the message's From address")
            && explained.contains("Set smtp_send_as_mailbox = yes")
            && explained.contains(fix),
        "{explained}"
    );
    let dsn = dsn_for(&dsns, "boss@contoso.test");
    assert_dsn(dsn, "boss@contoso.test", "5.7.60", &reply, fix);
    assert!(
        dsn.contains("Delivered-To: scanner@printer.local\n"),
        "{dsn}"
    );
    // The returned message is the device's, unchanged.
    assert!(
        dsn.contains("From: \"Scanner, 3rd floor\" <scanner@printer.local>\n"),
        "{dsn}"
    );
    assert!(fake.messages().is_empty());
    // Granting Send As is the other fix: the next message goes through as is.
    fake.grant_send_as(TEST_USER, "scanner@printer.local");
    send(
        &env,
        "scanner@printer.local",
        "boss@contoso.test",
        DEVICE_HEADERS,
    );
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(m.p2_sender.as_deref(), Some("scanner@printer.local"));
    assert_eq!(m.mail_from, "scanner@printer.local");
    env.stop().unwrap();
}

#[test]
fn generic_maps_rewrite_what_reaches_exchange() {
    let (mut env, fake) = setup_with(|c| c.send_as_check(true), &[]);
    let generic = env
        .write_file(
            "generic",
            "scanner@printer.local  scanner@contoso.test\n@legacy.test  @contoso.test\n",
        )
        .unwrap();
    env.set(
        "smtp_generic_maps",
        &format!("texthash:{}", generic.display()),
    )
    .unwrap();
    env.start().unwrap();
    send(
        &env,
        "scanner@printer.local",
        "boss@legacy.test",
        "From: \"Scanner, 3rd floor\" <scanner@printer.local>\nTo: Boss <boss@legacy.test>, other@elsewhere.test\nCc: team@legacy.test\nSubject: generic",
    );
    // Accepted: Exchange's send-as check saw the rewritten header From.
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert!(fake.refused().is_empty(), "{}", fake.summary());
    assert_eq!(m.mail_from, "scanner@contoso.test");
    assert_eq!(m.rcpt_to, vec!["boss@contoso.test"]);
    assert_eq!(m.p2_sender.as_deref(), Some("scanner@contoso.test"));
    assert_eq!(
        m.header("From").as_deref(),
        Some("\"Scanner, 3rd floor\" <scanner@contoso.test>")
    );
    assert_eq!(
        m.header("To").as_deref(),
        Some("Boss <boss@contoso.test>, other@elsewhere.test")
    );
    assert_eq!(m.header("Cc").as_deref(), Some("team@contoso.test"));
    assert_eq!(m.header("Subject").as_deref(), Some("generic"));
    // No Reply-To is invented: generic maps rewrite, they do not send as.
    assert_eq!(m.header("Reply-To"), None);
    // The log keeps the queued (unrewritten) addresses, as Postfix does.
    let line = env.wait_log("status=sent", WAIT).unwrap();
    assert!(line.contains("to=<boss@legacy.test>"), "{line}");
    env.stop().unwrap();
}

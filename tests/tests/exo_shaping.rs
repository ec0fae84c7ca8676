//! Per-mailbox traffic shaping against the fake Exchange Online, with
//! scaled-down limits (issue 4 part 2): the message rate per mailbox, at
//! most 3 sessions per mailbox, the rolling recipient budget (held mail
//! shows why in mailq and the log, is released when the window moves, and
//! a restart does not reset the budget), recipients per message (split),
//! and fair turns between the senders sharing a mailbox.
//!
//! Mailboxes are chosen by sender: `smtp_sender_dependent_authentication`
//! with a sender-keyed `smtp_sasl_password_maps`. The fake counts every
//! breach of its per-mailbox limits as a violation; postern must cause
//! none.

use postern_tests::fake::{FakeConfig, FakeSmartHost, Message, ViolationKind};
use postern_tests::harness::{TestEnv, re};
use std::time::{Duration, SystemTime};

/// Sales: its devices send as `sales-printer@`, it logs in as `sales@`.
const SALES: Mailbox = Mailbox {
    user: "sales@contoso.test",
    password: "Sales-Pa55word",
    sender: "sales-printer@contoso.test",
};

/// HR: `hr-scanner@` logs in as `hr@`.
const HR: Mailbox = Mailbox {
    user: "hr@contoso.test",
    password: "Hr-Pa55word",
    sender: "hr-scanner@contoso.test",
};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct Mailbox {
    user: &'static str,
    password: &'static str,
    sender: &'static str,
}

/// A postern relaying to a fake Exchange with the users of `boxes`, each
/// `(sender, mailbox)` pair of `senders` logging in as that mailbox, the
/// smart host's own entry as the first mailbox, and `params` in main.cf.
fn setup(
    boxes: &[Mailbox],
    senders: &[(&str, Mailbox)],
    fake: impl FnOnce(FakeConfig) -> FakeConfig,
    params: &[(&str, &str)],
) -> (TestEnv, FakeSmartHost) {
    let mut env = TestEnv::new().unwrap();
    let mut cfg = FakeConfig::office365(&env.pki.server);
    for b in boxes {
        cfg = cfg.user(b.user, b.password);
    }
    let fake = FakeSmartHost::spawn(fake(cfg)).unwrap();
    env.use_relayhost(&fake).unwrap();
    let mut table = String::new();
    for (sender, b) in senders {
        table.push_str(&format!("{sender} {}:{}\n", b.user, b.password));
    }
    table.push_str(&format!(
        "{} {}:{}\n",
        fake.relayhost_name(),
        boxes[0].user,
        boxes[0].password
    ));
    env.write_secret("sasl_passwd", &table).unwrap();
    env.set("smtp_sender_dependent_authentication", "yes")
        .unwrap();
    env.set_many(params).unwrap();
    (env, fake)
}

/// Queues one message from `sender` (also its header From, the P2 sender
/// Exchange charges) to `rcpts`.
fn submit(env: &TestEnv, sender: &str, rcpts: &[String], subject: &str) {
    let body = format!(
        "From: {sender}\nTo: {}\nSubject: {subject}\n\n{subject}\n",
        rcpts.join(", ")
    );
    let mut args = vec!["-f", sender];
    args.extend(rcpts.iter().map(String::as_str));
    env.sendmail(&args, body.as_bytes()).unwrap().ok().unwrap();
}

fn rcpt(i: usize) -> Vec<String> {
    vec![format!("customer{i}@fabrikam.test")]
}

/// The share of `count` messages per `period` that a mailbox used while
/// busy: the shortest possible time for its messages (bursts of `count`,
/// one window apart) over the time from its first to its last acceptance.
fn rate_usage(msgs: &[Message], count: usize, period: Duration) -> (f64, Duration) {
    let first = msgs.iter().map(|m| m.at).min().unwrap();
    let last = msgs.iter().map(|m| m.at).max().unwrap();
    let busy = last.duration_since(first).unwrap();
    let windows = msgs.len().div_ceil(count) - 1;
    let ideal = period * windows as u32;
    (ideal.as_secs_f64() / busy.as_secs_f64(), busy)
}

/// Most recipients accepted within any `period`, by the fake's
/// acceptance times.
fn max_in_window(msgs: &[Message], period: Duration) -> usize {
    let mut at: Vec<(SystemTime, usize)> = msgs.iter().map(|m| (m.at, m.rcpt_to.len())).collect();
    at.sort();
    at.iter()
        .map(|&(end, _)| {
            at.iter()
                .filter(|&&(t, _)| t <= end && end.duration_since(t).unwrap() < period)
                .map(|&(_, n)| n)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn two_mailboxes_paced_at_their_rate_with_three_sessions_each() {
    const EACH: usize = 60;
    const RATE: usize = 6;
    const PERIOD: Duration = Duration::from_secs(10);
    let (mut env, fake) = setup(
        &[SALES, HR],
        &[(SALES.sender, SALES), (HR.sender, HR)],
        |c| {
            c.message_rate(RATE, PERIOD)
                .mailbox_concurrency_limit(3)
                .recipient_budget(10_000, Duration::from_secs(86_400))
        },
        &[
            ("smtp_account_rate_limit", "6/10s"),
            ("smtp_account_concurrency_limit", "3"),
        ],
    );
    env.start().unwrap();
    for i in 0..EACH {
        submit(&env, SALES.sender, &rcpt(i), &format!("sales {i}"));
        submit(&env, HR.sender, &rcpt(i), &format!("hr {i}"));
    }
    // 60 messages at 6 per 10 s take at least 90 s per mailbox.
    let recs = fake
        .wait_until("120 accepted messages", Duration::from_secs(150), |r| {
            r.messages.len() >= 2 * EACH
        })
        .unwrap();
    assert_eq!(fake.violations(), 0, "{}", fake.summary());
    assert!(recs.refused.is_empty(), "{}", fake.summary());
    for b in [SALES, HR] {
        let msgs: Vec<Message> = fake.messages_of(b.user);
        assert_eq!(msgs.len(), EACH, "{} sent {}", b.user, msgs.len());
        assert!(
            msgs.iter()
                .all(|m| m.mail_from == b.sender && m.p2_sender.as_deref() == Some(b.sender)),
            "{}: every message from its own sender",
            b.user
        );
        let (usage, busy) = rate_usage(&msgs, RATE, PERIOD);
        eprintln!(
            "{}: {EACH} messages in {:.1}s, {:.0}% of the allowed rate",
            b.user,
            busy.as_secs_f64(),
            usage * 100.0
        );
        assert!(
            usage >= 0.9,
            "{} used {:.0}% of its rate ({EACH} messages in {busy:?})",
            b.user,
            usage * 100.0
        );
        // A usage above 100% would be a rate violation the fake missed.
        assert!(usage <= 1.0, "{} over its rate: {usage}", b.user);
        let max = recs.stats.max_concurrent_per_mailbox[b.user];
        assert!((1..=3).contains(&max), "{}: {max} sessions at once", b.user);
    }
    assert_eq!(fake.violations_of(ViolationKind::Concurrency), 0);
    env.wait_log_count(Default::default(), "removed", 2 * EACH, WAIT)
        .unwrap();
    assert!(
        env.mailq().unwrap().stdout.contains("Mail queue is empty"),
        "{}",
        env.mailq().unwrap().stdout
    );
    env.stop().unwrap();
}

#[test]
fn recipient_budget_holds_mail_until_the_window_moves_even_across_a_restart() {
    const BUDGET: usize = 10;
    const PERIOD: Duration = Duration::from_secs(20);
    let (mut env, fake) = setup(
        &[SALES],
        &[(SALES.sender, SALES)],
        |c| c.recipient_budget(BUDGET, PERIOD),
        &[
            ("smtp_account_recipient_limit", "10/20s"),
            ("smtp_account_rate_limit", "0"),
            ("smtp_account_concurrency_limit", "3"),
        ],
    );
    env.start().unwrap();
    for i in 0..15 {
        submit(&env, SALES.sender, &rcpt(i), &format!("budget {i}"));
    }
    let held = re(
        r"status=deferred \(delivery held until \w{3} [ 0-9]\d \d\d:\d\d:\d\d: account sales@contoso\.test reached its limit of 10 recipients per 20s; mail waits until the window frees\)",
    );
    // Ten go, five are held, each with a log line saying why.
    env.wait_log_count(Default::default(), held.clone(), 5, WAIT)
        .unwrap();
    let first = fake.wait_messages(BUDGET, WAIT).unwrap()[0].at;
    assert_eq!(fake.messages().len(), BUDGET, "{}", fake.summary());
    let q = env.mailq().unwrap().stdout;
    assert!(
        re(r"(?m)^ *\(delivery held until .*: account sales@contoso\.test reached its limit of 10 recipients per 20s; mail waits until the window frees\)$").matches(&q),
        "{q}"
    );
    assert_eq!(q.matches("reached its limit").count(), 5, "{q}");
    assert!(q.contains(" Kbytes in 5 Requests."), "{q}");

    // A restart in the middle: the budget is still spent. New mail is
    // held too instead of going out at once.
    env.stop().unwrap();
    env.start().unwrap();
    let mark = env.log_mark();
    for i in 15..18 {
        submit(&env, SALES.sender, &rcpt(i), &format!("budget {i}"));
    }
    env.wait_log_count(mark, held, 3, WAIT).unwrap();
    let elapsed = SystemTime::now().duration_since(first).unwrap();
    assert!(
        elapsed < PERIOD,
        "the restart took too long ({elapsed:?}) for the test to mean anything"
    );
    assert_eq!(fake.messages().len(), BUDGET, "{}", fake.summary());
    let q = env.mailq().unwrap().stdout;
    assert_eq!(q.matches("reached its limit").count(), 8, "{q}");

    // The window moves: all are released, never more than the budget in
    // any window.
    let recs = fake.wait_until("18 messages", Duration::from_secs(60), |r| {
        r.messages.len() >= 18
    });
    let recs = recs.unwrap();
    assert_eq!(
        fake.violations_of(ViolationKind::RecipientBudget),
        0,
        "{}",
        fake.summary()
    );
    assert_eq!(fake.violations(), 0, "{}", fake.summary());
    assert!(recs.refused.is_empty(), "{}", fake.summary());
    let mut at: Vec<SystemTime> = recs.messages.iter().map(|m| m.at).collect();
    at.sort();
    assert!(
        at[BUDGET].duration_since(first).unwrap() >= PERIOD,
        "the 11th recipient went {:?} after the first",
        at[BUDGET].duration_since(first).unwrap()
    );
    assert!(max_in_window(&recs.messages, PERIOD) <= BUDGET);
    let mut subjects: Vec<String> = recs
        .messages
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 18, "each message once: {subjects:?}");
    env.wait_log_count(Default::default(), "removed", 18, WAIT)
        .unwrap();
    env.stop().unwrap();
}

#[test]
fn a_message_over_the_recipients_per_message_limit_is_split() {
    let (mut env, fake) = setup(
        &[SALES],
        &[(SALES.sender, SALES)],
        |c| c.max_recipients(5),
        &[("smtp_account_message_recipient_limit", "5")],
    );
    env.start().unwrap();
    let rcpts: Vec<String> = (0..12).map(|i| format!("list{i}@fabrikam.test")).collect();
    submit(&env, SALES.sender, &rcpts, "to twelve");
    let recs = fake
        .wait_until("12 recipients", WAIT, |r| {
            r.messages.iter().map(|m| m.rcpt_to.len()).sum::<usize>() >= 12
        })
        .unwrap();
    env.wait_log("removed", WAIT).unwrap();
    let mut sizes: Vec<usize> = recs.messages.iter().map(|m| m.rcpt_to.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![2, 5, 5], "{}", fake.summary());
    let mut got: Vec<String> = recs
        .messages
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    got.sort();
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(
        recs.messages
            .iter()
            .all(|m| m.header("Subject").as_deref() == Some("to twelve")
                && m.auth_user.as_deref() == Some(SALES.user)),
        "{}",
        fake.summary()
    );
    assert_eq!(fake.violations(), 0, "{}", fake.summary());
    assert!(fake.refused().is_empty(), "{}", fake.summary());
    assert_eq!(env.log_grep("status=sent").len(), 12);
    assert!(env.log_grep("status=deferred").is_empty());
    env.stop().unwrap();
}

#[test]
fn a_flooding_sender_does_not_starve_another_on_the_same_mailbox() {
    const FLOOD: usize = 40;
    const PERIOD: Duration = Duration::from_secs(5);
    let flood = "copier@contoso.test";
    let late = "ceo-laptop@contoso.test";
    let (mut env, fake) = setup(
        &[SALES],
        &[(flood, SALES), (late, SALES)],
        |c| c.message_rate(5, PERIOD).mailbox_concurrency_limit(3),
        &[
            ("smtp_account_rate_limit", "5/5s"),
            ("smtp_account_concurrency_limit", "3"),
        ],
    );
    env.start().unwrap();
    for i in 0..FLOOD {
        submit(&env, flood, &rcpt(i), &format!("flood {i}"));
    }
    fake.wait_messages(1, WAIT).unwrap();
    for i in 0..2 {
        submit(&env, late, &rcpt(100 + i), &format!("late {i}"));
    }
    let recs = fake
        .wait_until(
            "the flood and the late messages",
            Duration::from_secs(90),
            |r| r.messages.len() >= FLOOD + 2,
        )
        .unwrap();
    assert_eq!(fake.violations(), 0, "{}", fake.summary());
    let late_done = recs
        .messages
        .iter()
        .filter(|m| m.mail_from == late)
        .map(|m| m.at)
        .max()
        .unwrap();
    let flood_msgs: Vec<&Message> = recs
        .messages
        .iter()
        .filter(|m| m.mail_from == flood)
        .collect();
    assert_eq!(flood_msgs.len(), FLOOD);
    assert!(
        recs.messages
            .iter()
            .all(|m| m.auth_user.as_deref() == Some(SALES.user))
    );
    let flood_left = flood_msgs.iter().filter(|m| m.at > late_done).count();
    let flood_done = flood_msgs.iter().map(|m| m.at).max().unwrap();
    let ahead = flood_done.duration_since(late_done).unwrap_or_default();
    eprintln!(
        "late messages done {:.1}s before the flood, with {flood_left} flood messages still queued",
        ahead.as_secs_f64()
    );
    // In turns, the late sender's two go within a window or two; in
    // arrival order they would wait for all 40.
    assert!(
        flood_left >= FLOOD / 2,
        "only {flood_left} of {FLOOD} flood messages were still queued when the late ones went"
    );
    assert!(
        ahead >= PERIOD * 3,
        "the late messages went only {ahead:?} before the flood ended"
    );
    env.stop().unwrap();
}

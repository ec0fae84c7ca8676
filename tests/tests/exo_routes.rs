//! The other Microsoft routes of issue 4 (part 6), each a main.cf recipe of
//! postern(8) run against the fake Exchange Online: Direct Send and relay
//! through an inbound connector (by source address or by client
//! certificate) to the tenant's MX host, High Volume Email (password and
//! XOAUTH2), Azure Communication Services, and direct MX delivery without a
//! relay host (MX lookup through the test DNS server, Postfix's fallback
//! order).
//!
//! The fake listens on 127.0.0.1: recipes name `[localhost]:<port>` where
//! production names `[contoso-com.mail.protection.outlook.com]:25` (the
//! test certificate is valid for `localhost`, so `secure` still checks
//! it), and the MX tests set `smtp_tcp_port` to the fake's port.

use std::time::{Duration, Instant};

use postern_tests::ca::CertFiles;
use postern_tests::dns::DnsServer;
use postern_tests::fake::{
    Action, Attribution, FakeConfig, FakeSmartHost, FakeTokenEndpoint, Phase, TokenConfig, replies,
};
use postern_tests::harness::{TestEnv, re};

const WAIT: Duration = Duration::from_secs(30);
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cr3t~value";

/// Queues a message from `from` to `to` with `sendmail -f`.
fn send(env: &TestEnv, from: &str, to: &[&str], subject: &str) {
    let body = format!(
        "From: {from}\nTo: {}\nSubject: {subject}\n\nhello from the office\n",
        to.join(", ")
    );
    let mut args = vec!["-f", from, "-i"];
    args.extend_from_slice(to);
    let out = env.sendmail(&args, body.as_bytes()).unwrap();
    assert!(out.success(), "{out}");
}

/// The smart-host lines every recipe shares, pointed at `fake`.
fn route_to(env: &mut TestEnv, fake: &FakeSmartHost) {
    env.set_many(&[
        ("relayhost", &fake.relayhost_name()),
        ("smtp_tls_security_level", "secure"),
    ])
    .unwrap();
}

/// The `postern/smtp` delivery line for `rcpt`, once it is logged.
fn delivery_line(env: &TestEnv, rcpt: &str, status: &str) -> String {
    env.wait_log(
        re(&format!(
            r"postern/smtp\[\d+\]: [0-9A-F]{{12}}: to=<{}>, .*status={status} ",
            regex::escape(rcpt)
        )),
        WAIT,
    )
    .unwrap()
}

/// The test mail stays queued (deferred), none of it bounced, the route is
/// held with the reply and its explanation in the log.
fn assert_held(env: &TestEnv, rcpt: &str, dsn: &str, explanation: &str) {
    let line = delivery_line(env, rcpt, "deferred");
    assert!(line.contains(&format!("dsn={dsn},")), "{line}");
    env.wait_log(format!("explanation: {explanation}"), WAIT)
        .unwrap();
    env.wait_log(re(r"postern/qmgr\[\d+\]: warning: .*deliveries held"), WAIT)
        .unwrap();
    let q = env.queue_json().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0].to_string().contains(rcpt),
        "the held message is not in the queue: {q:?}"
    );
    assert!(
        env.log_grep("status=bounced").is_empty(),
        "{}",
        env.log_text()
    );
}

/// Applies a fixed configuration and retries at once (`postqueue -f` also
/// lifts the hold).
fn reload_and_flush(env: &mut TestEnv) {
    env.reload().unwrap();
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
}

// ---- Direct Send -------------------------------------------------------------

/// Direct Send: `relayhost = [<tenant>.mail.protection.outlook.com]:25`,
/// `smtp_tls_security_level = secure`, no AUTH. Mailboxes of the tenant
/// get the mail; an address unknown to the tenant bounces with Exchange's
/// 5.4.1 and the bounce itself reaches the sender's mailbox.
#[test]
fn direct_send_delivers_to_the_tenants_mailboxes_without_auth() {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::mx(&env.pki.server)
            .accepted_domain("contoso.test")
            .known_recipients(&["bob@contoso.test", "printer@contoso.test"]),
    )
    .unwrap();
    route_to(&mut env, &fake);
    env.start().unwrap();
    send(
        &env,
        "printer@contoso.test",
        &[
            "bob@contoso.test",
            "nobody@contoso.test",
            "partner@fabrikam.test",
        ],
        "scan",
    );
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(m.mail_from, "printer@contoso.test");
    assert_eq!(m.rcpt_to, vec!["bob@contoso.test"]);
    assert_eq!(m.auth_user, None);
    assert!(m.tls.is_some(), "Direct Send went out without STARTTLS");
    let sent = delivery_line(&env, "bob@contoso.test", "sent");
    assert!(
        sent.contains(&format!("relay=localhost[127.0.0.1]:{}", fake.port())),
        "{sent}"
    );
    let bounced = delivery_line(&env, "nobody@contoso.test", "bounced");
    assert!(
        bounced.contains("dsn=5.4.1") && bounced.contains(replies::RECIPIENT_REJECTED),
        "{bounced}"
    );
    // An outside recipient can never be reached by Direct Send: its 5.7.64
    // bounces with the explanation instead of holding the route, which
    // demonstrably works.
    let outside = delivery_line(&env, "partner@fabrikam.test", "bounced");
    assert!(outside.contains("dsn=5.7.64"), "{outside}");
    env.wait_log("explanation:", WAIT).unwrap();
    // The non-delivery report goes to the sender's mailbox the same way.
    let all = fake.wait_messages(2, WAIT).unwrap();
    let ndr = &all[1];
    assert_eq!(
        (ndr.mail_from.as_str(), ndr.rcpt_to.clone()),
        ("", vec!["printer@contoso.test".to_string()])
    );
    assert!(ndr.text().contains("5.4.1"), "{}", ndr.text());
    assert!(ndr.text().contains("5.7.64"), "{}", ndr.text());
    // The route is not held: the next message goes at once.
    send(&env, "printer@contoso.test", &["bob@contoso.test"], "next");
    fake.wait_messages(3, WAIT).unwrap();
    assert!(!env.log_text().contains("held"), "{}", env.log_text());
    assert_eq!(fake.auth_attempts(), 0);
    assert!(fake.sessions().iter().all(|s| s.attribution.is_none()));
    env.stop().unwrap();
}

/// A tenant with `RejectDirectSend` answers 550 5.7.68: a configuration
/// problem, so postern holds the route instead of bouncing.
#[test]
fn reject_direct_send_holds_the_route() {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::mx(&env.pki.server)
            .accepted_domain("contoso.test")
            .reject_direct_send(true),
    )
    .unwrap();
    route_to(&mut env, &fake);
    env.start().unwrap();
    send(&env, "printer@contoso.test", &["bob@contoso.test"], "scan");
    assert_held(
        &env,
        "bob@contoso.test",
        "4.7.68",
        "The tenant rejects Direct Send.",
    );
    let line = delivery_line(&env, "bob@contoso.test", "deferred");
    assert!(line.contains(replies::DIRECT_SEND_REJECTED), "{line}");
    assert!(fake.messages().is_empty());
    env.stop().unwrap();
}

// ---- relay through an inbound connector -------------------------------------

/// An IP connector: Exchange relays to external recipients for
/// connections from the connector's address. From another address the
/// reply is `550 5.7.64 TenantAttribution` and postern holds the route;
/// `smtp_bind_address` (the host's static address) fixes it.
#[test]
fn ip_connector_relays_from_the_bound_address_and_holds_when_unattributed() {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::mx(&env.pki.server)
            .accepted_domain("contoso.test")
            .connector_ip("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    route_to(&mut env, &fake);
    env.start().unwrap();
    send(
        &env,
        "app@contoso.test",
        &["someone@fabrikam.test"],
        "report",
    );
    assert_held(
        &env,
        "someone@fabrikam.test",
        "4.7.64",
        "Exchange Online could not tie this connection to your tenant's inbound connector",
    );
    let line = delivery_line(&env, "someone@fabrikam.test", "deferred");
    assert!(line.contains(replies::TENANT_ATTRIBUTION), "{line}");
    assert!(fake.messages().is_empty());
    assert_eq!(fake.sessions()[0].peer.ip().to_string(), "127.0.0.1");

    env.set("smtp_bind_address", "127.0.0.2").unwrap();
    reload_and_flush(&mut env);
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(m.rcpt_to, vec!["someone@fabrikam.test"]);
    let s = fake.sessions();
    let last = s.last().unwrap();
    assert_eq!(last.peer.ip().to_string(), "127.0.0.2");
    assert_eq!(last.attribution, Some(Attribution::Ip));
    assert_eq!(fake.auth_attempts(), 0);
    delivery_line(&env, "someone@fabrikam.test", "sent");
    env.stop().unwrap();
}

/// A certificate connector (`TlsSenderCertificateName *.contoso.test`):
/// postern presents `smtp_tls_cert_file`/`smtp_tls_key_file` (the key
/// readable by root only, as the man page asks) and Exchange relays even
/// for a sender outside the accepted domains. Without the certificate the
/// route is held on 5.7.64.
#[test]
fn certificate_connector_relays_with_the_client_certificate() {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::mx(&env.pki.server)
            .accepted_domain("contoso.test")
            .connector_cert("*.contoso.test", env.pki.ca_file()),
    )
    .unwrap();
    let cert: CertFiles = env.pki.ca.issue("relay", &["relay.contoso.test"]).unwrap();
    route_to(&mut env, &fake);
    env.start().unwrap();
    send(
        &env,
        "news@fabrikam.test",
        &["someone@fabrikam.test"],
        "news",
    );
    assert_held(
        &env,
        "someone@fabrikam.test",
        "4.7.64",
        "Exchange Online could not tie this connection to your tenant's inbound connector",
    );
    assert!(fake.messages().is_empty());
    assert!(fake.sessions()[0].client_cert_names.is_empty());

    env.set_many(&[
        ("smtp_tls_cert_file", &cert.chain_file.display().to_string()),
        ("smtp_tls_key_file", &cert.key_file.display().to_string()),
    ])
    .unwrap();
    reload_and_flush(&mut env);
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(
        (m.mail_from.as_str(), m.rcpt_to.clone()),
        (
            "news@fabrikam.test",
            vec!["someone@fabrikam.test".to_string()]
        )
    );
    let s = fake.sessions();
    let last = s.last().unwrap();
    assert!(last.client_cert_verified, "{last:?}");
    assert_eq!(
        last.attribution,
        Some(Attribution::Certificate("*.contoso.test".into()))
    );
    delivery_line(&env, "someone@fabrikam.test", "sent");
    env.stop().unwrap();
}

// ---- High Volume Email ---------------------------------------------------------

const HVE_ACCOUNT: &str = "hve-scanner@contoso.test";

/// HVE with the account's password: AUTH LOGIN after STARTTLS, no
/// per-mailbox pacing (`smtp_account_rate_limit = 0`); internal recipients
/// only, an external one bounces with HVE's refusal.
#[test]
fn hve_with_a_password_sends_internally_without_pacing() {
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::hve(&env.pki.server)
            .accepted_domain("contoso.test")
            .user(HVE_ACCOUNT, "Hve-Pa55"),
    )
    .unwrap();
    route_to(&mut env, &fake);
    env.set_many(&[
        ("smtp_sasl_auth_enable", "yes"),
        (
            "smtp_sasl_password_maps",
            &format!("static:{HVE_ACCOUNT}:Hve-Pa55"),
        ),
        ("smtp_account_rate_limit", "0"),
        ("smtp_account_recipient_limit", "0"),
    ])
    .unwrap();
    env.start().unwrap();
    // 40 messages: more than the 30/min a mailbox gets, at once.
    let started = Instant::now();
    for i in 0..40 {
        send(
            &env,
            HVE_ACCOUNT,
            &[&format!("user{i}@contoso.test")],
            &format!("batch {i}"),
        );
    }
    let msgs = fake.wait_messages(40, WAIT).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "40 HVE messages took {:?}: paced like a mailbox",
        started.elapsed()
    );
    assert!(
        msgs.iter()
            .all(|m| m.auth_user.as_deref() == Some(HVE_ACCOUNT) && m.tls.is_some())
    );
    assert!(
        fake.sessions()
            .iter()
            .filter(|s| s.auth_user.is_some())
            .all(|s| s.auth_mechanism.as_deref() == Some("LOGIN"))
    );
    send(&env, HVE_ACCOUNT, &["partner@fabrikam.test"], "external");
    let line = delivery_line(&env, "partner@fabrikam.test", "bounced");
    assert!(line.contains(replies::HVE_EXTERNAL_RECIPIENT), "{line}");
    env.stop().unwrap();
}

/// HVE with XOAUTH2 (client secret, `Mail.Send`, `Add-HVEAppAccess`).
/// HVE refuses tokens close to expiry (535 5.7.142); postern refreshes a
/// token when min(smtp_oauth2_refresh_margin, a quarter of its lifetime)
/// remains. Scaled down: 24 s tokens (replaced with 6 s left), HVE
/// refusing under 3 s left (the real 5 min of a 60 min token would be
/// 2 s), one message every 0.8 s for about 30 s: no refused token, and
/// one token request per expiry, not one per message.
#[test]
fn hve_with_xoauth2_never_presents_a_token_close_to_expiry() {
    let mut env = TestEnv::new().unwrap();
    let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(Duration::from_secs(24))).unwrap();
    ep.register_app(APP, SECRET);
    ep.set_app_roles(APP, &["Mail.Send"]);
    let mut cfg = FakeConfig::hve(&env.pki.server)
        .accepted_domain("contoso.test")
        .accept_tokens_from(&ep)
        .hve_app_access(HVE_ACCOUNT, APP);
    cfg.oauth.as_mut().unwrap().min_remaining = Duration::from_secs(3);
    let fake = FakeSmartHost::spawn(cfg).unwrap();
    let secret = env.write_secret("oauth2_secret", SECRET).unwrap();
    route_to(&mut env, &fake);
    env.set_many(&[
        ("smtp_sasl_auth_enable", "yes"),
        (
            "smtp_sasl_password_maps",
            &format!("static:{HVE_ACCOUNT}:xoauth2"),
        ),
        ("smtp_oauth2_token_endpoint", &ep.url(TENANT)),
        ("smtp_oauth2_client_id", APP),
        (
            "smtp_oauth2_client_secret_file",
            &secret.display().to_string(),
        ),
        ("smtp_account_rate_limit", "0"),
        ("smtp_account_recipient_limit", "0"),
        // Not part of the recipe: one session (one AUTH) per message, so
        // every message shows the token in use at that moment.
        ("smtp_connection_cache_on_demand", "no"),
    ])
    .unwrap();
    env.start().unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(30) {
        send(
            &env,
            HVE_ACCOUNT,
            &[&format!("user{n}@contoso.test")],
            &format!("tick {n}"),
        );
        n += 1;
        fake.wait_messages(n, WAIT).unwrap();
        std::thread::sleep(Duration::from_millis(800));
    }
    let msgs = fake.messages();
    assert_eq!(msgs.len(), n);
    assert!(msgs.iter().all(|m| m.auth_app.as_deref() == Some(APP)));
    let attempts = fake.xoauth2_attempts();
    let refused: Vec<_> = attempts.iter().filter(|a| !a.ok).collect();
    assert!(refused.is_empty(), "refused XOAUTH2 attempts: {refused:#?}");
    assert!(
        attempts.len() >= n / 2,
        "{} sessions for {n} messages",
        attempts.len()
    );
    // A token lasts 24 s and is replaced with 6 s left: about one request
    // per 18 s of the run, never one per session.
    let requests = ep.count_grant("client_credentials");
    let elapsed = started.elapsed().as_secs();
    assert!(
        (2..=elapsed / 18 + 2).contains(&requests),
        "{requests} token requests in {elapsed} s for {} sessions\n{}",
        attempts.len(),
        ep.records().summary()
    );
    env.stop().unwrap();
}

// ---- Azure Communication Services -----------------------------------------------

/// ACS: AUTH LOGIN as `<resource>.<app id>.<tenant id>` with the app's
/// client secret (ACS checks it at the token endpoint), every sender
/// rewritten to the provisioned MailFrom, 50 recipients per message (a
/// 60-recipient message goes out as 50 + 10).
#[test]
fn acs_sends_from_the_provisioned_address_in_batches_of_50() {
    let mut env = TestEnv::new().unwrap();
    let ep = FakeTokenEndpoint::spawn(TokenConfig::default()).unwrap();
    ep.register_app(APP, SECRET);
    let fake = FakeSmartHost::spawn(
        FakeConfig::acs(&env.pki.server)
            .acs_tokens_from("contoso-acs", &ep)
            .acs_sender("donotreply@mail.contoso.test"),
    )
    .unwrap();
    let user = format!("contoso-acs.{APP}.{TENANT}");
    let sasl = env
        .write_secret(
            "sasl_passwd",
            &format!("{} {user}:{SECRET}\n", fake.relayhost_name()),
        )
        .unwrap();
    route_to(&mut env, &fake);
    env.set_many(&[
        ("smtp_sasl_auth_enable", "yes"),
        (
            "smtp_sasl_password_maps",
            &format!("texthash:{}", sasl.display()),
        ),
        (
            "sender_canonical_maps",
            "static:DoNotReply@mail.contoso.test",
        ),
        ("smtp_account_rate_limit", "25/15m"),
        ("smtp_account_message_recipient_limit", "50"),
    ])
    .unwrap();
    env.start().unwrap();
    let rcpts: Vec<String> = (0..60).map(|i| format!("r{i:02}@fabrikam.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send(&env, "scanner@printer.local", &refs, "invoice run");
    let msgs = fake.wait_messages(2, WAIT).unwrap();
    let mut sizes: Vec<usize> = msgs.iter().map(|m| m.rcpt_to.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![10, 50]);
    let mut got: Vec<String> = msgs.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    got.sort();
    assert_eq!(got, rcpts);
    for m in &msgs {
        assert!(
            m.mail_from
                .eq_ignore_ascii_case("donotreply@mail.contoso.test"),
            "{}",
            m.mail_from
        );
        assert_eq!(m.auth_user.as_deref(), Some(user.as_str()));
        assert!(
            m.p2_sender.as_deref() == Some("donotreply@mail.contoso.test"),
            "{:?}",
            m.header("From")
        );
    }
    assert_eq!(fake.violations(), 0, "{}", fake.summary());
    // ACS checked the secret with the token endpoint for its scope.
    assert!(ep.count_client(APP) >= 1);
    env.stop().unwrap();
}

// ---- direct MX delivery ------------------------------------------------------------

/// No relayhost: the recipient domain's MX hosts in preference order (the
/// DNS lists them out of order), the next one after a refused connection
/// or a 4xx, the domain's A record when it has no MX, a bounce when the
/// domain does not exist.
#[test]
fn direct_mx_delivery_follows_postfix_fallback_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dns = rt.block_on(DnsServer::start(&[
        ("contoso.test", "MX", "30 mx3.contoso.test"),
        ("contoso.test", "MX", "10 mx1.contoso.test"),
        ("contoso.test", "MX", "20 mx2.contoso.test"),
        // Nothing listens on 127.0.0.2: connection refused.
        ("mx1.contoso.test", "A", "127.0.0.2"),
        ("mx2.contoso.test", "A", "127.0.0.1"),
        ("mx3.contoso.test", "A", "127.0.0.1"),
        ("nomx.test", "A", "127.0.0.1"),
    ]));
    let mut env = TestEnv::new().unwrap();
    let fake = FakeSmartHost::spawn(
        FakeConfig::mx(&env.pki.server)
            .accepted_domain("contoso.test")
            .accepted_domain("nomx.test"),
    )
    .unwrap();
    let port = fake.port();
    env.set_env("POSTERN_DNS_SERVER", &dns.addr.to_string());
    env.set_many(&[
        ("smtp_tcp_port", &port.to_string()),
        ("smtp_tls_security_level", "may"),
    ])
    .unwrap();
    // The first server to answer is busy for this session.
    fake.script_sessions(
        1,
        Phase::Rcpt,
        Action::text("451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (AS843)"),
    );
    env.start().unwrap();
    send(&env, "app@contoso.test", &["bob@contoso.test"], "mx");
    let m = fake.wait_messages(1, WAIT).unwrap().remove(0);
    assert_eq!(m.rcpt_to, vec!["bob@contoso.test"]);
    assert!(m.tls.is_some(), "opportunistic TLS was not used");
    let sent = delivery_line(&env, "bob@contoso.test", "sent");
    // mx1 refused the connection, mx2 said 451: mx3 took it. Any other
    // order ends elsewhere.
    assert!(
        sent.contains(&format!("relay=mx3.contoso.test[127.0.0.1]:{port}")),
        "{sent}\n{}",
        env.log_text()
    );
    env.wait_log(
        format!("connect to mx1.contoso.test[127.0.0.2]:{port}: Connection refused"),
        WAIT,
    )
    .unwrap();
    env.wait_log(
        re(r"host mx2\.contoso\.test\[127\.0\.0\.1\] said: 451 4\.7\.500 .*; trying the next server"),
        WAIT,
    )
    .unwrap();
    let s = fake.sessions();
    assert_eq!(s.len(), 2, "{}", fake.summary());
    assert!(
        s[0].transcript.iter().any(|l| l.contains("451 4.7.500")),
        "{:?}",
        s[0].transcript
    );

    send(&env, "app@contoso.test", &["alice@nomx.test"], "a record");
    let sent = delivery_line(&env, "alice@nomx.test", "sent");
    assert!(
        sent.contains(&format!("relay=nomx.test[127.0.0.1]:{port}")),
        "{sent}"
    );

    send(&env, "app@contoso.test", &["x@nowhere.test"], "no domain");
    let bounced = delivery_line(&env, "x@nowhere.test", "bounced");
    assert!(
        bounced.contains("dsn=5.4.4")
            && bounced.contains("Name service error for name=nowhere.test type=MX: Host not found"),
        "{bounced}"
    );
    env.stop().unwrap();
    drop(rt);
}

//! Restrictions, access tables, DNS checks and stage handling.

use super::*;
use postern_tests::dns::DnsServer;

#[tokio::test]
async fn access_tables_and_every_result_action() {
    let dir = tempfile::tempdir().unwrap();
    let senders = dir.path().join("sender_access");
    std::fs::write(
        &senders,
        "ok@example.com OK\nreject@example.com REJECT\nrejtext@example.com REJECT go away\n\
         rejdsn@example.com REJECT 5.1.1 no such sender\ndefer@example.com DEFER\n\
         defertext@example.com DEFER 4.7.2 come back later\ncode@example.com 550 5.7.0 not here\n\
         code4@example.com 421 busy\nwarn@example.com WARN watch this\nhold@example.com HOLD\n\
         restr@example.com permit_mynetworks, reject\ntable@example.com check_client_access hash:/x\n\
         bogus@example.com bogus_restriction\nstrict@example.com strict\n\
         dip@example.com DEFER_IF_PERMIT 4.7.3 greylisted\nnumeric@example.com 12345\n\
         dunno@example.org DUNNO\nexample.org REJECT bad domain\n<> REJECT no bounces here\n\
         localpart@ REJECT bad local part\n",
    )
    .unwrap();
    let clients = dir.path().join("client_access.cidr");
    std::fs::write(
        &clients,
        "192.0.2.66 REJECT client not welcome\n192.0.2.67 OK\n198.51.100.0/24 DEFER\n",
    )
    .unwrap();
    let names = dir.path().join("client_names");
    std::fs::write(&names, "bad.example.org REJECT\n192.0.2.70 554 go away\n").unwrap();
    let p = policy(&format!(
        "relay_domains = contoso.test\n\
         smtpd_restriction_classes = strict\nstrict = reject_non_fqdn_recipient, reject\n\
         smtpd_client_restrictions = check_client_access cidr:{}, hash:{}\n\
         smtpd_sender_restrictions = check_sender_access hash:{}\n",
        clients.display(),
        names.display(),
        senders.display()
    ));
    let to = "user@contoso.test";
    for (from, want) in [
        ("ok@example.com", "OK".to_string()),
        ("nobody@example.com", "OK".into()),
        (
            "reject@example.com",
            "554 5.7.1 <reject@example.com>: Sender address rejected: Access denied".into(),
        ),
        (
            "REJECT@Example.COM",
            "554 5.7.1 <REJECT@Example.COM>: Sender address rejected: Access denied".into(),
        ),
        (
            "rejtext@example.com",
            "554 5.7.1 <rejtext@example.com>: Sender address rejected: go away".into(),
        ),
        (
            "rejdsn@example.com",
            "554 5.1.7 <rejdsn@example.com>: Sender address rejected: no such sender".into(),
        ),
        (
            "defer@example.com",
            "450 4.7.1 <defer@example.com>: Sender address rejected: Access denied".into(),
        ),
        (
            "defertext@example.com",
            "450 4.7.2 <defertext@example.com>: Sender address rejected: come back later".into(),
        ),
        (
            "code@example.com",
            "550 5.7.0 <code@example.com>: Sender address rejected: not here".into(),
        ),
        (
            "code4@example.com",
            "421 4.7.1 <code4@example.com>: Sender address rejected: busy".into(),
        ),
        ("warn@example.com", "OK".into()),
        ("hold@example.com", "OK".into()),
        ("numeric@example.com", "OK".into()),
        (
            "restr@example.com",
            "554 5.7.1 <restr@example.com>: Sender address rejected: Access denied".into(),
        ),
        (
            "table@example.com",
            "451 4.3.5 Server configuration error".into(),
        ),
        (
            "bogus@example.com",
            "451 4.3.5 Server configuration error".into(),
        ),
        (
            "strict@example.com",
            "554 5.7.1 <strict@example.com>: Sender address rejected: Access denied".into(),
        ),
        (
            "dip@example.com",
            "450 4.7.3 <dip@example.com>: Sender address rejected: greylisted".into(),
        ),
        ("dunno@example.org", "OK".into()),
        (
            "x@example.org",
            "554 5.7.1 <x@example.org>: Sender address rejected: bad domain".into(),
        ),
        (
            "x@sub.example.org",
            "554 5.7.1 <x@sub.example.org>: Sender address rejected: bad domain".into(),
        ),
        (
            "",
            "554 5.7.1 <>: Sender address rejected: no bounces here".into(),
        ),
        (
            "localpart@anywhere.example",
            "554 5.7.1 <localpart@anywhere.example>: Sender address rejected: bad local part"
                .into(),
        ),
    ] {
        assert_eq!(
            rcpt(&p, &ctx(OUTSIDE, from, to)).await,
            want,
            "sender {from}"
        );
    }
    // Restrictions after a permitting access entry in another list still apply.
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "ok@example.com", "x@y")).await,
        "554 5.7.1 <x@y>: Relay access denied"
    );
    for (addr, name, want) in [
        (
            "192.0.2.66",
            "unknown",
            "554 5.7.1 <unknown[192.0.2.66]>: Client host rejected: client not welcome",
        ),
        ("192.0.2.67", "unknown", "OK"),
        (
            "198.51.100.7",
            "unknown",
            "450 4.7.1 <unknown[198.51.100.7]>: Client host rejected: Access denied",
        ),
        (
            "192.0.2.80",
            "mx.bad.example.org",
            "554 5.7.1 <mx.bad.example.org[192.0.2.80]>: Client host rejected: Access denied",
        ),
        (
            "192.0.2.70",
            "unknown",
            "554 5.7.1 <unknown[192.0.2.70]>: Client host rejected: go away",
        ),
    ] {
        let mut c = ctx(addr, "nobody@example.com", to);
        c.client_name = name;
        assert_eq!(rcpt(&p, &c).await, want, "client {addr}");
    }
    // A client table OK ends the client list, it does not authorize relaying.
    assert_eq!(
        rcpt(&p, &ctx("192.0.2.67", "nobody@example.com", "x@y")).await,
        "554 5.7.1 <x@y>: Relay access denied"
    );
}

#[tokio::test]
async fn non_fqdn_and_helo_syntax_restrictions() {
    let p = policy(
        "relay_domains = contoso.test\n\
         smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n\
         smtpd_sender_restrictions = reject_non_fqdn_sender\n\
         smtpd_recipient_restrictions = reject_non_fqdn_recipient\n",
    );
    for (from, want) in [
        (
            "user",
            "504 5.5.2 <user>: Sender address rejected: need fully-qualified address",
        ),
        (
            "user@localhost",
            "504 5.5.2 <user@localhost>: Sender address rejected: need fully-qualified address",
        ),
        (
            "user@bad..example",
            "504 5.5.2 <user@bad..example>: Sender address rejected: need fully-qualified address",
        ),
        ("user@example.com.", "OK"),
        ("user@[192.0.2.1]", "OK"),
        ("", "OK"),
    ] {
        assert_eq!(
            rcpt(&p, &ctx(OUTSIDE, from, "user@contoso.test")).await,
            want,
            "{from}"
        );
    }
    let mut c = ctx("10.0.0.5", "s@example.com", "user");
    assert_eq!(
        rcpt(&p, &c).await,
        "504 5.5.2 <user>: Recipient address rejected: need fully-qualified address"
    );
    for (helo, want) in [
        (
            "localhost",
            "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
        ),
        (
            "bad_name!",
            "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name",
        ),
        ("[192.0.2.1]", "OK"),
        ("[IPv6:2001:db8::1]", "OK"),
        (
            "[999.1.1.1]",
            "501 5.5.2 <[999.1.1.1]>: Helo command rejected: invalid ip address",
        ),
        ("client.example.net.", "OK"),
    ] {
        c.helo = Some(helo);
        c.recipient = Some("user@contoso.test");
        assert_eq!(rcpt(&p, &c).await, want, "{helo}");
    }
    c.helo = None;
    assert_eq!(
        rcpt(&p, &c).await,
        "OK",
        "no HELO: the HELO restrictions are skipped"
    );
}

#[tokio::test]
async fn unknown_domains_against_a_test_dns_server() {
    let srv = DnsServer::start(&[
        ("mx.test", "MX", "10 mail.mx.test"),
        ("a.test", "A", "192.0.2.1"),
        ("nullmx.test", "MX", "0 ."),
        ("broken.test", "SERVFAIL", ""),
        ("client.example.net", "A", "192.0.2.99"),
        ("contoso.test", "MX", "10 mx.contoso.test"),
    ])
    .await;
    let with_dns = |extra: &str| {
        let mut p = policy(extra);
        p.dns = dns::Dns::with_server(Some(srv.addr));
        p
    };
    let p = with_dns(
        "relay_domains = contoso.test\nsmtpd_sender_restrictions = reject_unknown_sender_domain\n\
         smtpd_recipient_restrictions = reject_unknown_recipient_domain\nsmtpd_helo_restrictions = reject_unknown_helo_hostname\n",
    );
    for (from, to, want) in [
        ("s@mx.test", "u@contoso.test", "OK"),
        ("s@a.test", "u@contoso.test", "OK"),
        ("s@relay.example.net", "u@contoso.test", "OK"),
        ("s@[192.0.2.1]", "u@contoso.test", "OK"),
        ("", "u@contoso.test", "OK"),
        (
            "s@nxdomain.test",
            "u@contoso.test",
            "450 4.1.8 <s@nxdomain.test>: Sender address rejected: Domain not found",
        ),
        (
            "s@nullmx.test",
            "u@contoso.test",
            "550 5.7.27 <s@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail (nullMX)",
        ),
        // A temporary failure defers only what would be accepted.
        (
            "s@broken.test",
            "u@contoso.test",
            "450 4.1.8 <s@broken.test>: Sender address rejected: Domain not found",
        ),
        (
            "s@broken.test",
            "x@y",
            "554 5.7.1 <x@y>: Relay access denied",
        ),
    ] {
        assert_eq!(
            rcpt(&p, &ctx(OUTSIDE, from, to)).await,
            want,
            "{from} -> {to}"
        );
    }
    // Recipient domains, from a trusted client (the relay list permits).
    for (to, want) in [
        ("u@mx.test", "OK"),
        (
            "u@nxdomain.test",
            "450 4.1.2 <u@nxdomain.test>: Recipient address rejected: Domain not found",
        ),
        (
            "u@nullmx.test",
            "556 5.1.10 <u@nullmx.test>: Recipient address rejected: Domain nullmx.test does not accept mail (nullMX)",
        ),
        ("u@localhost", "OK"),
    ] {
        assert_eq!(
            rcpt(&p, &ctx("10.0.0.5", "s@mx.test", to)).await,
            want,
            "{to}"
        );
    }
    let mut c = ctx("10.0.0.5", "s@mx.test", "u@mx.test");
    c.helo = Some("nohost.example");
    assert_eq!(
        rcpt(&p, &c).await,
        "450 4.7.1 <nohost.example>: Helo command rejected: Host not found"
    );
    let p = with_dns(
        "relay_domains = contoso.test\nsmtpd_sender_restrictions = reject_unknown_sender_domain\n\
         unknown_address_reject_code = 550\nunknown_address_tempfail_action = defer\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@nxdomain.test", "u@contoso.test")).await,
        "550 5.1.8 <s@nxdomain.test>: Sender address rejected: Domain not found"
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@broken.test", "x@y")).await,
        "450 4.1.8 <s@broken.test>: Sender address rejected: Domain not found",
        "unknown_address_tempfail_action = defer rejects at once"
    );
}

#[tokio::test]
async fn delay_reject_yes_and_no() {
    let lists = "relay_domains = contoso.test\n\
                 smtpd_client_restrictions = check_client_access inline:{ 192.0.2.66 = REJECT }\n\
                 smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n\
                 smtpd_sender_restrictions = reject_non_fqdn_sender\n\
                 smtpd_data_restrictions = reject\n";
    let mut bad = ctx("192.0.2.66", "user", "u@contoso.test");
    bad.helo = Some("localhost");
    let p = policy(lists);
    for stage in [Stage::Connect, Stage::Helo, Stage::Mail] {
        assert_eq!(
            show(p.check(stage, &bad).await),
            "OK",
            "{stage:?} waits for RCPT"
        );
    }
    assert_eq!(
        rcpt(&p, &bad).await,
        "554 5.7.1 <unknown[192.0.2.66]>: Client host rejected: Access denied"
    );
    assert_eq!(
        show(p.check(Stage::Data, &bad).await),
        "554 5.7.1 <DATA>: Data command rejected: Access denied"
    );

    let p = policy(&format!("{lists}smtpd_delay_reject = no\n"));
    let mut c = bad;
    c.sender = None;
    c.recipient = None;
    assert_eq!(
        show(p.check(Stage::Connect, &c).await),
        "554 5.7.1 <unknown[192.0.2.66]>: Client host rejected: Access denied"
    );
    assert_eq!(
        show(p.check(Stage::Helo, &c).await),
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    );
    c.sender = Some("user");
    assert_eq!(
        show(p.check(Stage::Mail, &c).await),
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address"
    );
    assert_eq!(
        rcpt(&p, &bad).await,
        "OK",
        "RCPT runs only the relay and recipient lists"
    );
    assert_eq!(
        rcpt(&p, &ctx("192.0.2.66", "user", "x@y")).await,
        "554 5.7.1 <x@y>: Relay access denied"
    );
}

#[tokio::test]
async fn soft_bounce_turns_5xx_into_4xx() {
    let p = policy("soft_bounce = yes\nsmtpd_sender_restrictions = reject_non_fqdn_sender\n");
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@example.com", "x@y")).await,
        "454 4.7.1 <x@y>: Relay access denied"
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "user", "x@y")).await,
        "404 4.5.2 <user>: Sender address rejected: need fully-qualified address"
    );
    let Verdict::Reject { reply, .. } = p.check(Stage::Rcpt, &ctx(OUTSIDE, "", "x@y")).await else {
        panic!("relayed");
    };
    assert_eq!(reply.enhanced, Some(EnhancedCode::new(4, 7, 1)));
}

#[tokio::test]
async fn warn_if_reject_defer_if_reject_and_defer_if_permit() {
    let p = policy(
        "relay_domains = contoso.test\n\
         smtpd_sender_restrictions = warn_if_reject reject_non_fqdn_sender, check_sender_access inline:{ {a@example.com = DEFER_IF_REJECT 4.7.5 maybe later}, b@example.com = DEFER_IF_PERMIT }, reject_unknown_client_hostname\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "user", "u@contoso.test")).await,
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.99]"
    );
    let mut c = ctx(OUTSIDE, "user", "u@contoso.test");
    c.client_name = "client.example.net";
    assert_eq!(rcpt(&p, &c).await, "OK", "warn_if_reject only logs");
    c.sender = Some("a@example.com");
    assert_eq!(rcpt(&p, &c).await, "OK");
    c.client_name = "unknown";
    assert_eq!(
        rcpt(&p, &c).await,
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.99]",
        "a 4xx is not changed by defer_if_reject"
    );
    let p = policy(
        "relay_domains = contoso.test\n\
         smtpd_sender_restrictions = check_sender_access inline:{ {a@example.com = DEFER_IF_REJECT 4.7.5 maybe later}, b@example.com = DEFER_IF_PERMIT }, reject\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "a@example.com", "u@contoso.test")).await,
        "450 4.7.5 <a@example.com>: Sender address rejected: maybe later"
    );
    let p = policy(
        "relay_domains = contoso.test\n\
         smtpd_sender_restrictions = check_sender_access inline:{ b@example.com = DEFER_IF_PERMIT }\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "b@example.com", "u@contoso.test")).await,
        "450 4.7.1 <b@example.com>: Sender address rejected: Service unavailable"
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "b@example.com", "x@y")).await,
        "554 5.7.1 <x@y>: Relay access denied"
    );
}

#[tokio::test]
async fn misc_restrictions() {
    let p = policy(
        "relay_domains = contoso.test\nvirtual_alias_maps = inline:{ alias.test = x, known@alias.test = someone@contoso.test }\n\
         smtpd_recipient_restrictions = reject_unlisted_recipient, reject_plaintext_session\n\
         smtpd_sasl_auth_enable = yes\nsmtpd_data_restrictions = check_sasl_access inline:{ mallory = REJECT }\n",
    );
    let mut c = ctx(OUTSIDE, "s@example.com", "unknown@alias.test");
    c.tls = true;
    assert_eq!(
        rcpt(&p, &c).await,
        "550 5.1.1 <unknown@alias.test>: Recipient address rejected: User unknown in virtual alias table"
    );
    c.recipient = Some("known@alias.test");
    assert_eq!(rcpt(&p, &c).await, "OK");
    c.tls = false;
    assert_eq!(
        rcpt(&p, &c).await,
        "450 4.7.1 Session encryption is required"
    );
    c.sasl_user = Some("mallory");
    assert_eq!(
        show(p.check(Stage::Data, &c).await),
        "554 5.7.1 <mallory>: SASL login name rejected: Access denied"
    );
    let p =
        policy("smtpd_relay_restrictions = permit_inet_interfaces, reject_unauth_destination\n");
    assert_eq!(
        rcpt(&p, &ctx("192.0.2.25", "s@example.com", "x@y")).await,
        "OK"
    );
    assert_eq!(
        rcpt(&p, &ctx("127.0.0.1", "s@example.com", "x@y")).await,
        "554 5.7.1 <x@y>: Relay access denied"
    );
    let p = policy("smtpd_relay_restrictions = permit_auth_destination, reject\n");
    assert_eq!(
        rcpt(&p, &ctx("127.0.0.1", "s@example.com", "u@localhost")).await,
        "OK"
    );
    assert_eq!(
        rcpt(&p, &ctx("127.0.0.1", "s@example.com", "x@y")).await,
        "554 5.7.1 <x@y>: Recipient address rejected: Access denied"
    );
    let p = policy("reject_code = 550\nsmtpd_relay_restrictions = defer\n");
    assert_eq!(
        rcpt(&p, &ctx("127.0.0.1", "s@example.com", "x@y")).await,
        "450 4.3.2 <x@y>: Recipient address rejected: Try again later"
    );
}

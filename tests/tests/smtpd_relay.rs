//! Never an open relay: a foreign client (127.0.0.2, outside mynetworks)
//! is refused with Postfix's reply and log line, every classic relay trick
//! is refused, and the same client may relay after AUTH over STARTTLS.

use postern_tests::harness::{TestEnv, re};
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn setup() -> (TestEnv, postern_tests::fake::FakeSmartHost, u16) {
    let (env, fake, ports) = setup_with(&[], &[&[]]);
    (env, fake, ports[0])
}

/// Relay domain contoso.test, mynetworks 127.0.0.1/32, AUTH on with the
/// user webapp@contoso.test, plus `extra` main.cf settings; one smtpd
/// listener per entry of `listeners` (its -o overrides).
fn setup_with(
    extra: &[(&str, &str)],
    listeners: &[&[&str]],
) -> (TestEnv, postern_tests::fake::FakeSmartHost, Vec<u16>) {
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
    ])
    .unwrap();
    env.set_many(extra).unwrap();
    let ports = listeners
        .iter()
        .map(|o| env.add_smtpd(o).unwrap())
        .collect();
    env.create_queue().unwrap();
    // The password comes from standard input when it is not a terminal.
    env.add_sasl_user("webapp@contoso.test", "S3cret-app-pass")
        .unwrap();
    env.start().unwrap();
    (env, fake, ports)
}

#[test]
fn foreign_client_is_refused_then_allowed_after_auth() {
    let (env, fake, port) = setup();
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO laptop.guest").unwrap();
    c.cmd("MAIL FROM:<spammer@evil.test>").unwrap();
    let r = c.cmd("RCPT TO:<victim@elsewhere.test>").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (554, "5.7.1 <victim@elsewhere.test>: Relay access denied")
    );
    // relay_domains are accepted from anyone.
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").unwrap().code, 250);
    c.cmd("RSET").unwrap();
    env.wait_log(re(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied; from=<spammer@evil\.test> to=<victim@elsewhere\.test> proto=ESMTP helo=<laptop\.guest>"), WAIT).unwrap();
    // AUTH is offered only inside TLS.
    let ehlo = c.cmd("EHLO laptop.guest").unwrap();
    assert!(
        !ehlo.text.contains("AUTH") && ehlo.text.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        c.auth_plain("webapp@contoso.test", "S3cret-app-pass")
            .unwrap()
            .code,
        530
    );
    c.starttls().unwrap();
    let ehlo = c.cmd("EHLO laptop.guest").unwrap();
    assert!(ehlo.text.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    let r = c.auth_plain("webapp@contoso.test", "wrong").unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (
            535,
            "5.7.8 Error: authentication failed: authentication failure"
        )
    );
    env.wait_log(re(r"warning: unknown\[127\.0\.0\.2\]: SASL PLAIN authentication failed: authentication failure"), WAIT).unwrap();
    let r = c
        .auth_plain("webapp@contoso.test", "S3cret-app-pass")
        .unwrap();
    assert_eq!(
        (r.code, r.text.as_str()),
        (235, "2.7.0 Authentication successful")
    );
    c.cmd("MAIL FROM:<webapp@contoso.test>").unwrap();
    assert_eq!(
        c.cmd("RCPT TO:<customer@elsewhere.test>").unwrap().code,
        250
    );
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(b"Subject: order\r\n\r\nthanks\r\n.\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.cmd("QUIT").unwrap();
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].rcpt_to, vec!["customer@elsewhere.test"]);
    assert!(m[0].text().contains("with ESMTPSA id"), "{}", m[0].text());
    env.wait_log("sasl_method=PLAIN, sasl_username=webapp@contoso.test", WAIT)
        .unwrap();
    assert!(
        !env.log_text().contains("S3cret-app-pass"),
        "a password reached the log"
    );
}

/// One relay attempt: commands before MAIL, the HELO/EHLO line, the
/// sender and the recipient (as written after `MAIL FROM:`/`RCPT TO:`).
struct Trick {
    pre: &'static [&'static str],
    helo: &'static str,
    from: &'static str,
    to: &'static str,
}

const fn rcpt(to: &'static str) -> Trick {
    Trick {
        pre: &[],
        helo: "EHLO relaytest",
        from: "<test@evil.test>",
        to,
    }
}

const fn envelope(helo: &'static str, from: &'static str) -> Trick {
    Trick {
        pre: &[],
        helo,
        from,
        to: "<victim@elsewhere.test>",
    }
}

/// The classic open-relay test set (the relay-test.org/abuse.net lists and
/// their descendants), from a client outside mynetworks (127.0.0.2) that
/// did not authenticate. `contoso.test` is a relay domain (so tricks that
/// smuggle another domain through it must fail too); `elsewhere.test` and
/// `evil.test` are foreign; `relay.test.example` is our myhostname and
/// 127.0.0.1 the address the client talks to, neither a local destination
/// (mydestination is empty).
const TRICKS: &[Trick] = &[
    // Plain relaying and spellings of a foreign address.
    rcpt("<victim@elsewhere.test>"),
    rcpt("victim@elsewhere.test"),
    rcpt(" <victim@elsewhere.test>"),
    rcpt("<VICTIM@ELSEWHERE.TEST>"),
    rcpt("<victim@elsewhere.test.>"),
    rcpt("<victim@elsewhere.test> NOTIFY=NEVER ORCPT=rfc822;bob@contoso.test"),
    // The percent hack.
    rcpt("<victim%elsewhere.test@contoso.test>"),
    rcpt("<victim%elsewhere.test@relay.test.example>"),
    rcpt("<victim%elsewhere.test@[127.0.0.1]>"),
    rcpt("<victim%elsewhere.test>"),
    rcpt("<\"victim%elsewhere.test\"@contoso.test>"),
    rcpt("<victim@elsewhere.test%contoso.test>"),
    rcpt("<victim%contoso.test@elsewhere.test>"),
    // Bang paths.
    rcpt("<elsewhere.test!victim@contoso.test>"),
    rcpt("<elsewhere.test!victim@[127.0.0.1]>"),
    rcpt("<elsewhere.test!victim>"),
    rcpt("<\"victim!elsewhere.test\"@contoso.test>"),
    // Source routes.
    rcpt("<@contoso.test:victim@elsewhere.test>"),
    rcpt("<@contoso.test,@relay.test:victim@elsewhere.test>"),
    rcpt("<@[127.0.0.1]:victim@elsewhere.test>"),
    rcpt("<@relay.test.example:victim@elsewhere.test>"),
    // Quoted and doubled local parts.
    rcpt("<\"victim@elsewhere.test\"@contoso.test>"),
    rcpt("<\"victim@elsewhere.test\"@[127.0.0.1]>"),
    rcpt("<\"victim@elsewhere.test\">"),
    rcpt("<victim\\@elsewhere.test@contoso.test>"),
    rcpt("<victim@elsewhere.test@contoso.test>"),
    rcpt("<victim@elsewhere.test@[127.0.0.1]>"),
    rcpt("<victim@contoso.test@elsewhere.test>"),
    // Our own host and addresses in every spelling. (`victim@[127.0.0.1]`
    // and the IPv6 forms of it were accepted and went out through the
    // relayhost until smtpd stopped counting this host's address literals
    // as local: postern delivers nothing locally.)
    rcpt("<victim@[127.0.0.1]>"),
    rcpt("<victim@127.0.0.1>"),
    rcpt("<victim@[127.1]>"),
    rcpt("<victim@[2130706433]>"),
    rcpt("<victim@[IPv6:::1]>"),
    rcpt("<victim@[IPv6:::ffff:127.0.0.1]>"),
    rcpt("<victim@relay.test.example>"),
    rcpt("<victim@localhost>"),
    rcpt("<victim@localhost.elsewhere.test>"),
    rcpt("<victim@contoso.test.elsewhere.test>"),
    // Foreign address literals.
    rcpt("<victim@[192.0.2.1]>"),
    rcpt("<victim@[IPv6:2001:db8::1]>"),
    // Postmaster at somebody else's domain is just a foreign address.
    rcpt("<postmaster@elsewhere.test>"),
    // The envelope and the greeting: a null or local sender, a client that
    // claims to be us.
    envelope("EHLO relaytest", "<>"),
    envelope("EHLO relaytest", "<webapp@contoso.test>"),
    envelope("EHLO relaytest", "<postmaster@relay.test.example>"),
    envelope("EHLO relaytest", "<victim@elsewhere.test>"),
    envelope("EHLO relay.test.example", "<webapp@contoso.test>"),
    envelope("EHLO localhost", "<test@evil.test>"),
    envelope("EHLO [127.0.0.1]", "<test@evil.test>"),
    envelope("HELO relay.test.example", "<>"),
    // Claims of a trusted client or a login that never happened.
    Trick {
        pre: &["XCLIENT ADDR=127.0.0.1 NAME=localhost"],
        helo: "EHLO relaytest",
        from: "<test@evil.test>",
        to: "<victim@elsewhere.test>",
    },
    Trick {
        pre: &["XFORWARD ADDR=127.0.0.1"],
        helo: "EHLO relaytest",
        from: "<test@evil.test>",
        to: "<victim@elsewhere.test>",
    },
    Trick {
        pre: &["AUTH PLAIN AHdlYmFwcEBjb250b3NvLnRlc3QAd3Jvbmc="],
        helo: "EHLO relaytest",
        from: "<webapp@contoso.test>",
        to: "<victim@elsewhere.test>",
    },
    Trick {
        pre: &[],
        helo: "EHLO relaytest",
        from: "<webapp@contoso.test> AUTH=<webapp@contoso.test>",
        to: "<victim@elsewhere.test>",
    },
];

/// Every trick of [`TRICKS`] from a foreign client: each recipient is
/// refused, nothing reaches the smart host and nothing is queued.
#[test]
fn open_relay_battery() {
    let (env, fake, port) = setup();
    let mut relayed = Vec::new();
    let mut policy_refusals = 0;
    for t in TRICKS {
        let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
        c.cmd(t.helo).unwrap();
        for p in t.pre {
            let r = c.cmd(p).unwrap();
            assert!(r.code >= 500, "{p}: {r}");
        }
        let r = c.cmd(&format!("MAIL FROM:{}", t.from)).unwrap();
        assert_eq!(r.code, 250, "MAIL FROM:{}: {r}", t.from);
        let r = c.cmd(&format!("RCPT TO:{}", t.to)).unwrap();
        eprintln!("{:24} {:34} RCPT TO:{:50} {r}", t.helo, t.from, t.to);
        if r.code / 100 == 2 {
            relayed.push(format!("{} / {} / RCPT TO:{}: {r}", t.helo, t.from, t.to));
            // Make sure it would really have gone out: finish it.
            c.cmd("DATA").unwrap();
            c.send(b"Subject: relay test\r\n\r\nx\r\n.\r\n").unwrap();
            let _ = c.reply();
        } else if r.code == 501 {
            // Syntax errors (Postfix: 501 5.1.3 Bad recipient address
            // syntax) are not logged as rejects.
        } else {
            assert_eq!(r.code, 554, "RCPT TO:{}: {r}", t.to);
            policy_refusals += 1;
        }
        let _ = c.cmd("QUIT");
    }
    assert!(relayed.is_empty(), "relayed: {relayed:#?}");
    // Each policy refusal is logged as Postfix logs it.
    let rejects = env.log_grep(re(
        r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 .*: Relay access denied; from=",
    ));
    assert_eq!(rejects.len(), policy_refusals, "{rejects:#?}");
    // Eight tricks are refused as bad syntax (501) today; the rest by the
    // relay policy.
    assert!(policy_refusals >= TRICKS.len() - 8, "{policy_refusals}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(fake.messages().is_empty(), "{}", fake.summary());
    assert!(env.queue_json().unwrap().is_empty());
    for q in ["maildrop", "incoming", "active", "deferred", "hold"] {
        assert!(
            env.queue_files(q).is_empty(),
            "{q}: {:?}",
            env.queue_files(q)
        );
    }
}

/// `RCPT TO:<postmaster>` passes the restrictions, as RFC 5321 requires and
/// Postfix does, but goes to our own postmaster (postmaster@$myorigin),
/// never to a destination the client chose.
#[test]
fn bare_postmaster_reaches_only_our_postmaster() {
    let (env, fake, port) = setup();
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO relaytest").unwrap();
    c.cmd("MAIL FROM:<test@evil.test>").unwrap();
    let r = c.cmd("RCPT TO:<postmaster>").unwrap();
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(b"Subject: to postmaster\r\n\r\nx\r\n.\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.cmd("QUIT").unwrap();
    let m = fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(m[0].rcpt_to, vec!["postmaster@relay.test.example"]);
    let _ = env;
}

#[test]
fn failed_auth_is_rate_limited_per_client() {
    let (env, _fake, port) = setup();
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO brute").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO brute").unwrap();
    let mut codes = Vec::new();
    for i in 0..8 {
        match c.auth_plain("webapp@contoso.test", &format!("guess{i}")) {
            Ok(r) => codes.push(r.code),
            Err(_) => break,
        }
        if codes.last() == Some(&421) {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&421), "{codes:?}");
    assert!(
        codes.iter().filter(|c| **c == 535).count() <= 5,
        "{codes:?}"
    );
    // A new connection from the same client is still refused AUTH...
    let (mut c2, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c2.cmd("EHLO brute").unwrap();
    c2.starttls().unwrap();
    c2.cmd("EHLO brute").unwrap();
    assert_eq!(
        c2.auth_plain("webapp@contoso.test", "S3cret-app-pass")
            .unwrap()
            .code,
        421
    );
    // ...while other clients are served.
    let (mut ok, _) = Smtp::connect(port, None).unwrap();
    ok.cmd("EHLO fine").unwrap();
    ok.starttls().unwrap();
    ok.cmd("EHLO fine").unwrap();
    assert_eq!(
        ok.auth_plain("webapp@contoso.test", "S3cret-app-pass")
            .unwrap()
            .code,
        235
    );
    let _ = env;
}

/// swaks as the web app and the CRM: AUTH PLAIN over STARTTLS, AUTH LOGIN
/// over implicit TLS, both from a foreign address; without AUTH the same
/// client is refused. The Received: header names the user when
/// smtpd_sasl_authenticated_header is on.
#[test]
fn swaks_auth_plain_and_login_over_starttls_and_implicit_tls() {
    let (env, fake, ports) = setup_with(
        &[("smtpd_sasl_authenticated_header", "yes")],
        &[&[], &["smtpd_tls_wrappermode=yes"]],
    );
    let swaks = |args: &[&str]| {
        let out = std::process::Command::new("swaks")
            .args(["--server", "127.0.0.1", "--local-interface", "127.0.0.2"])
            .args(["--from", "webapp@contoso.test", "--helo", "webapp.lan"])
            .args(args)
            .output()
            .expect("swaks is installed (.ci/run installs it)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (p, s) = (ports[0].to_string(), ports[1].to_string());
    let auth = [
        "--auth-user",
        "webapp@contoso.test",
        "--auth-password",
        "S3cret-app-pass",
    ];
    let (code, out) = swaks(
        &[
            &[
                "--port",
                &p,
                "--to",
                "one@elsewhere.test",
                "--tls",
                "--auth",
                "PLAIN",
            ][..],
            &auth,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    let (code, out) = swaks(
        &[
            &[
                "--port",
                &s,
                "--to",
                "two@elsewhere.test",
                "--tlsc",
                "--auth",
                "LOGIN",
            ][..],
            &auth,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("334 VXNlcm5hbWU6"),
        "LOGIN asks for the user name: {out}"
    );
    // Without AUTH: relay refused (swaks exits 24 when RCPT fails).
    let (code, out) = swaks(&["--port", &p, "--to", "three@elsewhere.test", "--tls"]);
    assert_eq!(code, Some(24), "{out}");
    assert!(
        out.contains("554 5.7.1 <three@elsewhere.test>: Relay access denied"),
        "{out}"
    );
    let msgs = fake.wait_messages(2, WAIT).unwrap();
    for m in &msgs {
        let text = m.text();
        assert!(
            text.contains("(Authenticated sender: webapp@contoso.test)"),
            "{text}"
        );
        assert!(text.contains("with ESMTPSA id"), "{text}");
    }
    env.wait_log("sasl_method=LOGIN, sasl_username=webapp@contoso.test", WAIT)
        .unwrap();
    assert!(
        !env.log_text().contains("S3cret-app-pass"),
        "a password reached the log"
    );
}

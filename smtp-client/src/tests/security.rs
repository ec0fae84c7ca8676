//! STARTTLS and implicit TLS at each security level, and SMTP AUTH
//! (PLAIN, LOGIN, XOAUTH2) with its failures.

use super::*;

fn with_password(cfg: &mut conf::Config, dir: &tempfile::TempDir, key: &str, value: &str) {
    let p = dir.path().join("sasl_passwd");
    std::fs::write(&p, format!("{key} {value}\n")).unwrap();
    cfg.smtp_sasl_auth_enable = true;
    cfg.smtp_sasl_password_maps = vec![format!("texthash:{}", p.display())];
    // These tests authenticate in plaintext.
    cfg.smtp_sasl_security_options = vec!["noanonymous".into()];
}

#[tokio::test]
async fn auth_plain_sends_the_initial_response() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_TLS_AUTH).await;
        let want = format!(
            "AUTH PLAIN {}",
            STANDARD.encode("\0scanner@contoso.com\0p:ss w0rd")
        );
        assert_eq!(c.line().await, want);
        c.say("235 2.7.0 Authentication successful").await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say("250 ok").await;
        c.quit().await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("none");
    with_password(
        &mut cfg,
        &dir,
        &bracket(server.addr),
        "scanner@contoso.com:p:ss w0rd",
    );
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    server.finish().await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
}

#[tokio::test]
async fn auth_login_answers_each_challenge() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(&["250-mx.test", "250-PIPELINING", "250 AUTH LOGIN XOAUTH2"])
            .await;
        c.expect("AUTH LOGIN").await;
        c.say("334 VXNlcm5hbWU6").await;
        assert_eq!(c.line().await, STANDARD.encode("scanner@contoso.com"));
        c.say("334 UGFzc3dvcmQ6").await;
        assert_eq!(c.line().await, STANDARD.encode("secret"));
        c.say("235 2.7.0 Authentication successful").await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say("250 ok").await;
        c.quit().await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("none");
    with_password(
        &mut cfg,
        &dir,
        &bracket(server.addr),
        "scanner@contoso.com:secret",
    );
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    server.finish().await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
}

#[tokio::test]
async fn refused_login_defers_everything_and_holds_the_route() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(&["250-mx.test", "250 AUTH LOGIN"]).await;
        c.expect("AUTH LOGIN").await;
        c.say("334 VXNlcm5hbWU6").await;
        c.line().await;
        c.say("334 UGFzc3dvcmQ6").await;
        c.line().await;
        c.say("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [X.prod.outlook.com]").await;
        c.quit().await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("none");
    with_password(
        &mut cfg,
        &dir,
        &bracket(server.addr),
        "scanner@contoso.com:wrong",
    );
    let r = deliver(
        &cfg,
        None,
        &bracket(server.addr),
        &["a@contoso.com", "b@contoso.com"],
    )
    .await;
    server.finish().await;
    assert!(r.site_failure && r.hold_route);
    for x in &r.results {
        assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.7.139"));
        assert!(
            x.reason.starts_with("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.139 Authentication unsuccessful"),
            "{}",
            x.reason
        );
        assert!(!x.reason.contains("wrong"));
    }
    assert!(!server.lines().iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn plaintext_passwords_are_refused_by_default() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(&["250-mx.test", "250 AUTH PLAIN LOGIN"]).await;
        c.quit().await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("none");
    with_password(&mut cfg, &dir, &bracket(server.addr), "u:p");
    cfg.smtp_sasl_security_options = vec!["noplaintext".into(), "noanonymous".into()];
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    server.finish().await;
    assert_eq!(r.results[0].dsn, "4.7.0");
    assert!(
        r.results[0].reason.ends_with("no mechanism available"),
        "{}",
        r.results[0].reason
    );
}

/// A server that requires STARTTLS with `pki`'s certificate, then takes
/// one message.
async fn tls_server(bind: &str, pki: &Pki) -> FakeServer {
    let acceptor = pki.acceptor.clone();
    FakeServer::start(bind, move |mut c, _| {
        let acceptor = acceptor.clone();
        async move {
            c.greet_ehlo(EHLO_PRE_TLS).await;
            c.expect("STARTTLS").await;
            c.say("220 2.0.0 SMTP server ready").await;
            if !c.starttls(&acceptor).await {
                return;
            }
            let l = c.line().await;
            if l == "QUIT" {
                // The client refused the certificate.
                c.say("221 2.0.0 bye").await;
                return;
            }
            assert!(l.starts_with("EHLO "), "{l}");
            for l in EHLO_PLAIN {
                c.say(l).await;
            }
            read_envelope(&mut c, 1).await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say("250 2.0.0 OK").await;
            c.quit().await;
        }
    })
    .await
}

async fn tls_delivery(level: &str, cert_names: &[&str], nexthop_host: &str, mx: bool) -> Response {
    let pki = Pki::new(cert_names);
    let server = tls_server("127.0.0.1:0", &pki).await;
    let dns = DnsServer::start(&[
        ("mx.example.test", "A", "127.0.0.1"),
        ("example.test", "MX", "10 mx.example.test"),
    ])
    .await;
    let mut cfg = config(level);
    cfg.smtp_tls_cafile = pki.ca_file.display().to_string();
    cfg.smtp_tls_loglevel = 1;
    let nexthop = if mx {
        format!("{nexthop_host}:{}", server.addr.port())
    } else {
        format!("[{nexthop_host}]:{}", server.addr.port())
    };
    let r = deliver(&cfg, Some(dns.addr), &nexthop, &["a@example.test"]).await;
    server.finish().await;
    r
}

#[tokio::test]
async fn verify_level_accepts_a_matching_certificate() {
    let r = tls_delivery("verify", &["mx.example.test"], "mx.example.test", false).await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
}

#[tokio::test]
async fn verify_level_refuses_a_certificate_for_another_name() {
    let r = tls_delivery("verify", &["other.test"], "mx.example.test", false).await;
    let x = &r.results[0];
    assert!(r.site_failure);
    assert_eq!(
        (x.status, x.dsn.as_str(), x.reason.as_str()),
        (Status::Deferred, "4.7.5", "Server certificate not verified")
    );
}

#[tokio::test]
async fn secure_level_matches_the_next_hop_domain() {
    let r = tls_delivery("secure", &["mx.example.test"], "example.test", true).await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
    let r = tls_delivery("secure", &["mx.other.test"], "example.test", true).await;
    assert_eq!(r.results[0].reason, "Server certificate not verified");
}

#[tokio::test]
async fn may_level_uses_tls_without_checking_the_certificate() {
    let r = tls_delivery("may", &["unrelated.test"], "mx.example.test", false).await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
}

#[tokio::test]
async fn encrypt_level_defers_when_starttls_is_not_offered() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("encrypt"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    let x = &r.results[0];
    assert!(r.site_failure);
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.7.4"));
    assert_eq!(
        x.reason,
        "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    );
}

#[tokio::test]
async fn may_level_retries_in_plaintext_after_a_failed_handshake() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, n| async move {
        c.greet_ehlo(EHLO_PRE_TLS).await;
        if n == 0 {
            c.expect("STARTTLS").await;
            c.say("220 2.0.0 SMTP server ready").await;
            c.say("this is not a TLS server hello").await;
            c.drop_now().await;
            return;
        }
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say("250 2.0.0 plain").await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("may"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    assert_eq!(server.count(), 2);
    assert_eq!(
        (r.results[0].status, r.results[0].reason.as_str()),
        (Status::Sent, "250 2.0.0 plain")
    );
}

#[tokio::test]
async fn wrapper_mode_starts_tls_at_connect() {
    let pki = Pki::new(&["127.0.0.1"]);
    let acceptor = pki.acceptor.clone();
    let server = FakeServer::start("127.0.0.1:0", move |mut c, _| {
        let acceptor = acceptor.clone();
        async move {
            assert!(c.starttls(&acceptor).await);
            c.greet_ehlo(EHLO_PLAIN).await;
            read_envelope(&mut c, 1).await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say("250 2.0.0 over tls").await;
            c.quit().await;
        }
    })
    .await;
    let mut cfg = config("encrypt");
    cfg.smtp_tls_wrappermode = true;
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    server.finish().await;
    assert_eq!(r.results[0].reason, "250 2.0.0 over tls");
}

/// A token source: `tok-123`, and `tok-456` once that was refused.
#[derive(Debug)]
struct FixedToken(&'static str);

impl crate::auth::TokenSource for FixedToken {
    fn token<'a>(
        &'a self,
        _user: &'a str,
        rejected: Option<&'a proto::Secret>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<proto::Secret, crate::auth::TokenError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            Ok(proto::Secret::new(match rejected {
                Some(_) => "tok-456",
                None => self.0,
            }))
        })
    }
}

#[tokio::test]
async fn xoauth2_sends_the_bearer_token_and_answers_an_error_challenge() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, n| async move {
        c.greet_ehlo(&["250-mx.test", "250-PIPELINING", "250 AUTH LOGIN XOAUTH2"])
            .await;
        let blob = STANDARD.encode("user=scanner@contoso.com\x01auth=Bearer tok-123\x01\x01");
        let fresh = STANDARD.encode("user=scanner@contoso.com\x01auth=Bearer tok-456\x01\x01");
        assert_eq!(c.line().await, format!("AUTH XOAUTH2 {blob}"));
        if n == 2 {
            // Refused, then the newly fetched token works on the same connection.
            c.say("535 5.7.3 Authentication unsuccessful [X.prod.outlook.com]")
                .await;
            assert_eq!(c.line().await, format!("AUTH XOAUTH2 {fresh}"));
            c.say("235 2.7.0 Authentication successful").await;
            read_envelope(&mut c, 1).await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say("250 ok").await;
        } else if n == 0 {
            c.say("235 2.7.0 Authentication successful").await;
            read_envelope(&mut c, 1).await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say("250 ok").await;
        } else {
            c.say(&format!("334 {}", STANDARD.encode("{\"status\":\"401\"}")))
                .await;
            assert_eq!(
                c.line().await,
                "",
                "the client must answer an error challenge with an empty line"
            );
            c.say("535 5.7.3 Authentication unsuccessful [X.prod.outlook.com]")
                .await;
            // One retry with a new token, then it stands.
            assert_eq!(c.line().await, format!("AUTH XOAUTH2 {fresh}"));
            c.say("535 5.7.3 Authentication unsuccessful [X.prod.outlook.com]")
                .await;
        }
        c.quit().await;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("none");
    with_password(
        &mut cfg,
        &dir,
        &bracket(server.addr),
        "scanner@contoso.com:xoauth2",
    );
    cfg.smtp_sasl_mechanism_filter = vec!["xoauth2".into()];
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let req = || request(&q, "smtp", &bracket(server.addr), &["a@contoso.com"], false);
    let agent = Agent::new(&cfg, None)
        .0
        .with_tokens(std::sync::Arc::new(FixedToken("tok-123")));
    assert_eq!(agent.deliver(&req()).await.results[0].status, Status::Sent);
    let r = agent.deliver(&req()).await;
    assert!(r.hold_route);
    assert_eq!(
        (r.results[0].status, r.results[0].dsn.as_str()),
        (Status::Deferred, "4.7.3")
    );
    assert_eq!(agent.deliver(&req()).await.results[0].status, Status::Sent);
    server.finish().await;
}

#[tokio::test]
async fn plaintext_injected_before_the_handshake_is_discarded() {
    let pki = Pki::new(&["mx.example.test"]);
    let acceptor = pki.acceptor.clone();
    let server = FakeServer::start("127.0.0.1:0", move |mut c, _| {
        let acceptor = acceptor.clone();
        async move {
            c.greet_ehlo(EHLO_PRE_TLS).await;
            c.expect("STARTTLS").await;
            // One write: the reply and a forged EHLO reply behind it.
            c.say("220 2.0.0 SMTP server ready\r\n250 injected").await;
            assert!(c.starttls(&acceptor).await);
            c.expect("EHLO").await;
            for l in EHLO_PLAIN {
                c.say(l).await;
            }
            // The real EHLO reply (with PIPELINING) was used.
            read_envelope(&mut c, 1).await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say("250 2.0.0 OK").await;
            c.quit().await;
        }
    })
    .await;
    let r = deliver(
        &config("encrypt"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
}

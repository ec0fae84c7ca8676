//! Self-tests of the fake Entra ID token endpoint and of XOAUTH2 (and the
//! ACS password check) in the fake smart host. They need none of the
//! postern programs.

use std::time::Duration;

use postern_tests::ca::{CertFiles, CertOptions, TestPki};
use postern_tests::client::TestClient;
use postern_tests::fake::jwt::{self, Alg, Claims};
use postern_tests::fake::token::{self, DEVICE_CODE_GRANT, HttpAnswer, JWT_BEARER, post_form};
use postern_tests::fake::{
    FakeConfig, FakeSmartHost, FakeTokenEndpoint, Fault, TokenConfig, TokenError, replies,
};
use proto::sasl::xoauth2_initial;
use regex::Regex;
use serde_json::{Value, json};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cr3t~value";
const MAILBOX: &str = "scanner@contoso.test";
const OUTLOOK_DEFAULT: &str = "https://outlook.office365.com/.default";
const WAIT: Duration = Duration::from_secs(10);

fn endpoint() -> FakeTokenEndpoint {
    FakeTokenEndpoint::spawn(TokenConfig::default()).unwrap()
}

fn secret_grant(ep: &FakeTokenEndpoint, secret: &str, scope: &str) -> HttpAnswer {
    post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .unwrap()
}

fn assertion_grant(ep: &FakeTokenEndpoint, assertion: &str) -> HttpAnswer {
    post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", OUTLOOK_DEFAULT),
        ],
    )
    .unwrap()
}

/// An Entra error answer: status, `error`, AADSTS code.
fn error_of(a: &HttpAnswer) -> (u16, String, u64) {
    (
        a.status,
        a.str("error").unwrap_or("").to_string(),
        a.code().unwrap_or(0),
    )
}

fn rsa_cert(pki: &TestPki, stem: &str) -> CertFiles {
    pki.ca
        .issue_with(
            stem,
            &["app.contoso.test"],
            &CertOptions {
                rsa: true,
                ..CertOptions::default()
            },
        )
        .unwrap()
}

#[test]
fn client_secret_grant_issues_a_verifiable_app_token() {
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    assert_eq!(
        ep.url(TENANT),
        format!("http://127.0.0.1:{}/{TENANT}/oauth2/v2.0/token", ep.port())
    );
    let a = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT);
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.str("token_type"), Some("Bearer"));
    assert_eq!(a.json["expires_in"], json!(3599));
    assert!(a.json.get("refresh_token").is_none());
    let token = a.str("access_token").unwrap();
    let claims = ep.verify(token).unwrap();
    assert_eq!(claims["aud"], json!("https://outlook.office365.com"));
    assert_eq!(claims["roles"], json!(["SMTP.SendAsApp"]));
    assert_eq!(claims["appid"], json!(APP));
    assert_eq!(claims["tid"], json!(TENANT));
    assert!(claims.get("upn").is_none() && claims.get("scp").is_none());
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!((exp - iat, nbf), (3599, iat));
    // The header is a plain RS256 JWT.
    let j = jwt::Jwt::parse(token).unwrap();
    assert_eq!(j.alg(), Some(Alg::RS256));
    // outlook.office.com/.default gives that audience.
    let b = secret_grant(&ep, SECRET, "https://outlook.office.com/.default");
    let c = ep.verify(b.str("access_token").unwrap()).unwrap();
    assert_eq!(c["aud"], json!("https://outlook.office.com"));
    // Records: per grant, per client, the form without the secret.
    assert_eq!(ep.count_grant("client_credentials"), 2);
    assert_eq!(ep.count_client(APP), 2);
    let form = ep.last_form().unwrap();
    assert!(form.contains(&("client_secret".into(), "<redacted>".into())));
    assert!(form.contains(&("scope".into(), "https://outlook.office.com/.default".into())));
    assert!(!format!("{:?}", ep.records()).contains(SECRET));
    assert_eq!(ep.records().issued.len(), 2);
    // A token signed by another endpoint does not verify here.
    let other = endpoint();
    assert!(matches!(
        ep.verify(&other.app_token(APP, TENANT)),
        Err(TokenError::Signature(_))
    ));
}

#[test]
fn client_secret_errors_are_entra_style() {
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    let a = secret_grant(&ep, "wrong", OUTLOOK_DEFAULT);
    assert_eq!(error_of(&a), (401, "invalid_client".into(), 7000215));
    let desc = a.str("error_description").unwrap();
    assert!(
        desc.starts_with("AADSTS7000215: Invalid client secret provided."),
        "{desc}"
    );
    assert!(
        desc.contains("Trace ID: ") && desc.contains("Timestamp: "),
        "{desc}"
    );
    // Unknown app; an app restricted to another tenant.
    let u = post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "unknown-app"),
            ("client_secret", SECRET),
            ("scope", OUTLOOK_DEFAULT),
        ],
    )
    .unwrap();
    assert_eq!(error_of(&u), (400, "unauthorized_client".into(), 700016));
    ep.restrict_to_tenant(APP, "other-tenant");
    assert_eq!(
        secret_grant(&ep, SECRET, OUTLOOK_DEFAULT).code(),
        Some(700016)
    );
    ep.restrict_to_tenant(APP, TENANT);
    // Scope without /.default; no scope.
    let s = secret_grant(&ep, SECRET, "https://outlook.office365.com/SMTP.SendAsApp");
    assert_eq!(error_of(&s), (400, "invalid_scope".into(), 1002012));
    let n = post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
        ],
    )
    .unwrap();
    assert_eq!(error_of(&n), (400, "invalid_request".into(), 900144));
    // No credentials at all; an unsupported grant.
    let c = post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("scope", OUTLOOK_DEFAULT),
        ],
    )
    .unwrap();
    assert_eq!(error_of(&c), (401, "invalid_client".into(), 7000218));
    let g = post_form(
        &ep.url(TENANT),
        &[("grant_type", "password"), ("client_id", APP)],
    )
    .unwrap();
    assert_eq!(error_of(&g), (400, "unsupported_grant_type".into(), 70003));
    // Secret rotation.
    ep.register_app(APP, "second");
    ep.remove_secret(APP, SECRET);
    assert_eq!(secret_grant(&ep, SECRET, OUTLOOK_DEFAULT).status, 401);
    assert_eq!(secret_grant(&ep, "second", OUTLOOK_DEFAULT).status, 200);
    let rec = ep.records();
    assert_eq!(rec.failures().len(), 8);
    assert_eq!(rec.requests.last().unwrap().status, 200);
    assert_eq!(rec.requests[0].code, Some(7000215));
}

#[test]
fn certificate_assertions_rs256_and_ps256() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let cert = rsa_cert(&pki, "app");
    let ep = endpoint();
    ep.register_certificate(APP, &cert.cert);
    let url = ep.url(TENANT);
    for alg in [Alg::RS256, Alg::PS256] {
        let assertion = jwt::client_assertion(&cert, APP, &url, alg).unwrap();
        let a = assertion_grant(&ep, &assertion);
        assert_eq!(a.status, 200, "{alg:?}: {:?}", a.json);
        let claims = ep.verify(a.str("access_token").unwrap()).unwrap();
        assert_eq!(claims["appidacr"], json!("2"));
        // The same assertion twice: jti replay.
        let again = assertion_grant(&ep, &assertion);
        assert_eq!(error_of(&again), (400, "invalid_client".into(), 700027));
        assert!(again.str("error_description").unwrap().contains("jti"));
    }
    // Both thumbprints at once are fine when they name the same certificate.
    let mut h = jwt::assertion_header(&cert.cert, Alg::RS256).unwrap();
    h.insert(
        "x5t#S256".into(),
        json!(jwt::thumbprint_sha256(&cert.cert).unwrap()),
    );
    let t = jwt::sign(&h, &jwt::assertion_claims(APP, &url), &cert.key, Alg::RS256).unwrap();
    assert_eq!(assertion_grant(&ep, &t).status, 200);
    assert_eq!(ep.count_grant("client_credentials"), 5);
    let form = ep.last_form().unwrap();
    assert!(form.contains(&("client_assertion".into(), "<redacted>".into())));
    assert!(form.contains(&("client_assertion_type".into(), JWT_BEARER.into())));
}

#[test]
fn certificate_assertion_failures() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let cert = rsa_cert(&pki, "app");
    let other = rsa_cert(&pki, "other");
    let ep = endpoint();
    ep.register_certificate(APP, &cert.cert);
    let url = ep.url(TENANT);
    let now = jwt::now();
    let header = jwt::assertion_header(&cert.cert, Alg::RS256).unwrap();
    let sign = |h: &Claims, c: &Claims| jwt::sign(h, c, &cert.key, Alg::RS256).unwrap();
    let claims_with = |k: &str, v: Value| {
        let mut c = jwt::assertion_claims(APP, &url);
        c.insert(k.into(), v);
        c
    };
    let claims_without = |k: &str| {
        let mut c = jwt::assertion_claims(APP, &url);
        c.remove(k);
        c
    };
    let cases: Vec<(&str, String, u64)> = vec![
        (
            "certificate not registered",
            jwt::client_assertion(&other, APP, &url, Alg::RS256).unwrap(),
            700027,
        ),
        (
            "x5t of the registered certificate, key of another",
            jwt::sign(
                &header,
                &jwt::assertion_claims(APP, &url),
                &other.key,
                Alg::RS256,
            )
            .unwrap(),
            700027,
        ),
        (
            "no thumbprint",
            sign(&Claims::new(), &jwt::assertion_claims(APP, &url)),
            700027,
        ),
        (
            "wrong audience",
            sign(
                &header,
                &claims_with(
                    "aud",
                    json!("https://login.microsoftonline.com/x/oauth2/v2.0/token"),
                ),
            ),
            700212,
        ),
        (
            "iss is not the client",
            sign(&header, &claims_with("iss", json!("someone"))),
            700021,
        ),
        (
            "sub is not the client",
            sign(&header, &claims_with("sub", json!("someone"))),
            700021,
        ),
        (
            "expired",
            sign(&header, &claims_with("exp", json!(now - 10))),
            700024,
        ),
        (
            "exp two hours ahead",
            sign(&header, &claims_with("exp", json!(now + 7200))),
            700024,
        ),
        (
            "nbf in the future",
            sign(&header, &claims_with("nbf", json!(now + 3600))),
            700024,
        ),
        (
            "iat in the future",
            sign(&header, &claims_with("iat", json!(now + 3600))),
            700024,
        ),
        ("no exp", sign(&header, &claims_without("exp")), 700024),
        ("no jti", sign(&header, &claims_without("jti")), 50027),
        ("not a JWT", "not.a-jwt".into(), 50027),
    ];
    for (what, assertion, code) in &cases {
        let a = assertion_grant(&ep, assertion);
        assert_eq!(
            (a.status, a.str("error"), a.code()),
            (400, Some("invalid_client"), Some(*code)),
            "{what}: {:?}",
            a.json
        );
    }
    // An unsupported algorithm (hand-made HS256 header).
    let hs = format!(
        "{}.{}.c2ln",
        jwt::b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        jwt::b64url(
            serde_json::to_string(&jwt::assertion_claims(APP, &url))
                .unwrap()
                .as_bytes()
        )
    );
    assert_eq!(assertion_grant(&ep, &hs).code(), Some(5002738));
    // A tampered payload.
    let good = jwt::client_assertion(&cert, APP, &url, Alg::RS256).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        jwt::b64url(
            serde_json::to_string(&claims_with("jti", json!("x")))
                .unwrap()
                .as_bytes()
        ),
        parts[2]
    );
    assert_eq!(assertion_grant(&ep, &tampered).code(), Some(700027));
    // The wrong assertion type.
    let t = post_form(
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_assertion_type", "urn:x"),
            ("client_assertion", &good),
            ("scope", OUTLOOK_DEFAULT),
        ],
    )
    .unwrap();
    assert_eq!(t.status, 400);
    // An expired certificate.
    let old = pki
        .ca
        .issue_with(
            "old",
            &["app.contoso.test"],
            &CertOptions {
                rsa: true,
                ..CertOptions::expired()
            },
        )
        .unwrap();
    ep.register_certificate(APP, &old.cert);
    let a = assertion_grant(
        &ep,
        &jwt::client_assertion(&old, APP, &url, Alg::RS256).unwrap(),
    );
    assert_eq!(a.code(), Some(700027));
    assert!(a.str("error_description").unwrap().contains("expired"));
    // The good one still works, and all failures were recorded.
    assert_eq!(assertion_grant(&ep, &good).status, 200);
    assert_eq!(ep.records().failures().len(), cases.len() + 4);
    // A removed certificate is no longer accepted.
    ep.remove_certificate(APP, &cert.cert);
    let a = assertion_grant(
        &ep,
        &jwt::client_assertion(&cert, APP, &url, Alg::PS256).unwrap(),
    );
    assert_eq!(a.code(), Some(700027));
}

fn refresh(ep: &FakeTokenEndpoint, rt: &str, secret: Option<&str>) -> HttpAnswer {
    let mut f = vec![
        ("grant_type", "refresh_token"),
        ("client_id", APP),
        ("refresh_token", rt),
        (
            "scope",
            "https://outlook.office.com/SMTP.Send offline_access",
        ),
    ];
    if let Some(s) = secret {
        f.push(("client_secret", s));
    }
    post_form(&ep.url(TENANT), &f).unwrap()
}

#[test]
fn refresh_tokens_rotate() {
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    let rt0 = ep.issue_refresh_token(
        APP,
        TENANT,
        MAILBOX,
        "https://outlook.office.com/SMTP.Send offline_access",
    );
    // A confidential client must authenticate.
    assert_eq!(refresh(&ep, &rt0, None).code(), Some(7000218));
    let a = refresh(&ep, &rt0, Some(SECRET));
    assert_eq!(a.status, 200, "{:?}", a.json);
    let rt1 = a.str("refresh_token").unwrap().to_string();
    assert_ne!(rt1, rt0);
    let c = ep.verify(a.str("access_token").unwrap()).unwrap();
    assert_eq!(c["aud"], json!("https://outlook.office.com"));
    assert_eq!(c["scp"], json!("SMTP.Send"));
    assert_eq!(c["upn"], json!(MAILBOX));
    assert!(c.get("roles").is_none());
    // The old one is gone.
    let old = refresh(&ep, &rt0, Some(SECRET));
    assert_eq!(error_of(&old), (400, "invalid_grant".into(), 70000));
    let b = refresh(&ep, &rt1, Some(SECRET));
    assert_eq!(b.status, 200);
    let rt2 = b.str("refresh_token").unwrap().to_string();
    assert_eq!(ep.refresh_token_count(), 1);
    // Another client cannot use it; a revoked one fails.
    ep.register_app("other-app", "x");
    let other = post_form(
        &ep.url(TENANT),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "other-app"),
            ("client_secret", "x"),
            ("refresh_token", &rt2),
        ],
    )
    .unwrap();
    assert_eq!(other.str("error"), Some("invalid_grant"));
    ep.revoke_refresh_tokens(MAILBOX);
    assert_eq!(
        refresh(&ep, &rt2, Some(SECRET)).str("error"),
        Some("invalid_grant")
    );
    assert_eq!(ep.count_grant("refresh_token"), 6);
    let form = ep.requests()[1].form.clone();
    assert!(form.contains(&("refresh_token".into(), "<redacted>".into())));
    // A public client refreshes without a secret.
    let pub_ep = endpoint();
    pub_ep.register_public_client(APP);
    let rt = pub_ep.issue_refresh_token(
        APP,
        TENANT,
        MAILBOX,
        "https://outlook.office.com/SMTP.Send offline_access",
    );
    assert_eq!(refresh(&pub_ep, &rt, None).status, 200);
}

#[test]
fn device_code_flow() {
    let ep = FakeTokenEndpoint::spawn(
        TokenConfig::for_tests(Duration::from_secs(60))
            .device_code(Duration::from_secs(2), Duration::from_secs(1)),
    )
    .unwrap();
    ep.register_public_client(APP);
    let scope = "https://outlook.office.com/SMTP.Send offline_access";
    let start = || {
        post_form(
            &ep.devicecode_url(TENANT),
            &[("client_id", APP), ("scope", scope)],
        )
        .unwrap()
    };
    let d = start();
    assert_eq!(d.status, 200, "{:?}", d.json);
    let user_code = d.str("user_code").unwrap().to_string();
    let device_code = d.str("device_code").unwrap().to_string();
    assert_eq!(
        d.str("verification_uri"),
        Some("https://microsoft.com/devicelogin")
    );
    assert_eq!(
        (d.json["expires_in"].as_u64(), d.json["interval"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(d.str("message").unwrap().contains(&user_code));
    let poll = |code: &str| {
        post_form(
            &ep.url(TENANT),
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("client_id", APP),
                ("device_code", code),
            ],
        )
        .unwrap()
    };
    assert_eq!(
        error_of(&poll(&device_code)),
        (400, "authorization_pending".into(), 70016)
    );
    assert_eq!(ep.wait_device_code(WAIT).unwrap().user_code, user_code);
    assert!(ep.approve("NOSUCHCODE", MAILBOX).is_err());
    ep.approve(&user_code, MAILBOX).unwrap();
    let t = poll(&device_code);
    assert_eq!(t.status, 200, "{:?}", t.json);
    assert!(t.str("refresh_token").is_some());
    let c = ep.verify(t.str("access_token").unwrap()).unwrap();
    assert_eq!(
        (c["upn"].clone(), c["scp"].clone()),
        (json!(MAILBOX), json!("SMTP.Send"))
    );
    // Redeemed once only.
    assert_eq!(poll(&device_code).code(), Some(54005));
    // The refresh token it gave works (public client: no secret).
    assert_eq!(
        refresh(&ep, t.str("refresh_token").unwrap(), None).status,
        200
    );
    // A declined code, then an expired one.
    let d2 = start();
    ep.deny(d2.str("user_code").unwrap()).unwrap();
    assert_eq!(
        poll(d2.str("device_code").unwrap()).str("error"),
        Some("authorization_declined")
    );
    let d3 = start();
    std::thread::sleep(Duration::from_millis(2100));
    assert!(ep.pending_device_codes().is_empty());
    assert_eq!(
        error_of(&poll(d3.str("device_code").unwrap())),
        (400, "expired_token".into(), 70020)
    );
    assert_eq!(ep.count_grant("devicecode"), 3);
    assert_eq!(ep.count_grant(DEVICE_CODE_GRANT), 5);
    // A confidential client may not start the device flow without a secret.
    let conf = endpoint();
    conf.register_app(APP, SECRET);
    let r = post_form(
        &conf.devicecode_url(TENANT),
        &[("client_id", APP), ("scope", scope)],
    )
    .unwrap();
    assert_eq!(r.code(), Some(7000218));
}

#[test]
fn faults_outage_and_waiting() {
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    ep.fail_next(2, Fault::Status(503));
    ep.fail_next(1, Fault::InvalidClient(400));
    ep.fail_next(1, Fault::Drop);
    ep.fail_next(1, Fault::Delay(Duration::from_millis(300)));
    assert_eq!(secret_grant(&ep, SECRET, OUTLOOK_DEFAULT).status, 503);
    let b = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT);
    assert_eq!(
        (b.status, b.str("error")),
        (503, Some("temporarily_unavailable"))
    );
    assert_eq!(
        error_of(&secret_grant(&ep, SECRET, OUTLOOK_DEFAULT)),
        (400, "invalid_client".into(), 7000215)
    );
    assert!(
        post_form(
            &ep.url(TENANT),
            &[("grant_type", "client_credentials"), ("client_id", APP)]
        )
        .is_err(),
        "dropped"
    );
    let t = std::time::Instant::now();
    assert_eq!(secret_grant(&ep, SECRET, OUTLOOK_DEFAULT).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Unreachable, then back on the same port.
    let url = ep.url(TENANT);
    ep.stop().unwrap();
    assert!(!ep.is_listening());
    let err = post_form(&url, &[("client_id", APP)]).unwrap_err();
    assert!(format!("{err:#}").contains("connect"), "{err:#}");
    ep.start().unwrap();
    assert_eq!(ep.url(TENANT), url);
    assert_eq!(secret_grant(&ep, SECRET, OUTLOOK_DEFAULT).status, 200);
    let rec = ep.wait_requests(6, WAIT).unwrap();
    assert_eq!(rec.requests[3].status, 0, "the dropped one is recorded");
    assert!(ep.wait_requests(7, Duration::from_millis(50)).is_err());
    // Other paths and methods.
    let raw = post_form(&format!("{}/nowhere", ep.base_url()), &[]).unwrap();
    assert_eq!(raw.status, 404);
}

#[test]
fn token_lifetime_and_clock_skew() {
    let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(Duration::from_secs(2))).unwrap();
    ep.register_app(APP, SECRET);
    let a = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT);
    assert_eq!(a.json["expires_in"], json!(2));
    let token = a.str("access_token").unwrap().to_string();
    assert!(ep.verify(&token).is_ok());
    std::thread::sleep(Duration::from_millis(2100));
    assert!(matches!(ep.verify(&token), Err(TokenError::Expired { .. })));
    // An endpoint whose clock is an hour behind issues expired tokens.
    ep.set_token_lifetime(Duration::from_secs(600));
    ep.set_clock_offset(-3600);
    let late = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT);
    assert!(matches!(
        ep.verify(late.str("access_token").unwrap()),
        Err(TokenError::Expired { .. })
    ));
    ep.set_clock_offset(0);
    // A configured audience wins over the scope's resource.
    let aud =
        FakeTokenEndpoint::spawn(TokenConfig::default().audience("https://graph.microsoft.com"))
            .unwrap();
    aud.register_app(APP, SECRET);
    let g = secret_grant(&aud, SECRET, OUTLOOK_DEFAULT);
    let c = aud.verify(g.str("access_token").unwrap()).unwrap();
    assert_eq!(c["aud"], json!("https://graph.microsoft.com"));
}

// ---- XOAUTH2 in the smart host -----------------------------------------

/// A PKI, a token endpoint with APP registered, and an Exchange fake that
/// takes its tokens.
fn oauth_fake(
    cfg: impl FnOnce(FakeConfig, &FakeTokenEndpoint) -> FakeConfig,
) -> (tempfile::TempDir, TestPki, FakeTokenEndpoint, FakeSmartHost) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    let fake = FakeSmartHost::spawn(cfg(FakeConfig::office365(&pki.server), &ep)).unwrap();
    (dir, pki, ep, fake)
}

/// Greeted, EHLO, STARTTLS, EHLO.
async fn tls_client(fake: &FakeSmartHost, pki: &TestPki) -> TestClient {
    let (mut c, _) = TestClient::connect_greeted(fake.addr()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    c.starttls(pki.ca_file()).await.unwrap();
    c.cmd("EHLO x").await.unwrap();
    c
}

fn auth_535_re(host: &str) -> Regex {
    Regex::new(&format!(
        r"^535 5\.7\.3 Authentication unsuccessful \[{} \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z [0-9A-F]{{16}}\]$",
        regex::escape(host)
    ))
    .unwrap()
}

#[tokio::test]
async fn xoauth2_app_token_initial_response_and_challenge_forms() {
    let (_d, pki, ep, fake) = oauth_fake(|c, ep| c.accept_tokens_from(ep));
    let a = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT);
    let token = a.str("access_token").unwrap().to_string();
    // One line.
    let mut c = tls_client(&fake, &pki).await;
    let r = c
        .cmd(&format!(
            "AUTH XOAUTH2 {}",
            xoauth2_initial(MAILBOX, &token)
        ))
        .await
        .unwrap();
    assert_eq!(r.one_line(), "235 2.7.0 Authentication successful");
    for l in [
        "MAIL FROM:<scanner@contoso.test>",
        "RCPT TO:<bob@contoso.test>",
        "DATA",
    ] {
        assert!(c.cmd(l).await.unwrap().code < 400);
    }
    assert_eq!(
        c.cmd("From: scanner@contoso.test\r\n\r\nhi\r\n.")
            .await
            .unwrap()
            .code,
        250
    );
    // The 334 form, with the user in another case.
    let mut c2 = tls_client(&fake, &pki).await;
    c2.send(b"AUTH XOAUTH2\r\n").await.unwrap();
    let ch = c2.reply().await.unwrap();
    assert_eq!(ch.code, 334);
    assert!(ch.lines.iter().all(String::is_empty));
    // Exchange sends `334 ` with a space.
    let t = fake.records().session(2).unwrap().transcript.clone();
    assert!(t.contains(&"S: 334 ".to_string()), "{t:?}");
    let r = c2
        .cmd(&xoauth2_initial("Scanner@Contoso.test", &token))
        .await
        .unwrap();
    assert_eq!(r.code, 235);
    let m = &fake.wait_messages_async(1, WAIT).await.unwrap()[0];
    assert_eq!(m.auth_user.as_deref(), Some(MAILBOX));
    assert_eq!(m.auth_app.as_deref(), Some(APP));
    assert_eq!(m.p2_sender.as_deref(), Some(MAILBOX));
    assert_eq!(fake.xoauth2_counts(MAILBOX).successes, 2);
    let s = fake.sessions();
    assert_eq!(s[0].auth_mechanism.as_deref(), Some("XOAUTH2"));
    assert_eq!(s[0].auth_app.as_deref(), Some(APP));
    // The transcript does not show the token.
    assert!(!fake.summary().contains(&token));
}

#[tokio::test]
async fn xoauth2_refusals_are_535_5_7_3() {
    let (_d, pki, ep, fake) = oauth_fake(|c, ep| c.accept_tokens_from(ep));
    let host = fake.hostname().to_string();
    let re = auth_535_re(&host);
    let app_claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = ep.app_token_claims(APP, TENANT);
        f(&mut c);
        ep.sign_token(&c)
    };
    let now = jwt::now();
    let other_ep = endpoint();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            app_claims(&|c| {
                c.insert("exp".into(), json!(now - 5));
            }),
            MAILBOX,
        ),
        (
            "audience Graph",
            app_claims(&|c| {
                c.insert("aud".into(), json!("https://graph.microsoft.com"));
            }),
            MAILBOX,
        ),
        (
            "no SMTP.SendAsApp",
            app_claims(&|c| {
                c.insert("roles".into(), json!(["Mail.Send"]));
            }),
            MAILBOX,
        ),
        (
            "signed by someone else",
            other_ep.app_token(APP, TENANT),
            MAILBOX,
        ),
        ("not a JWT", "opaque-token".into(), MAILBOX),
        (
            "delegated for another user",
            ep.user_token(APP, TENANT, "boss@contoso.test"),
            MAILBOX,
        ),
        (
            "delegated without SMTP.Send",
            {
                let mut c = ep.user_token_claims(APP, TENANT, MAILBOX);
                c.insert("scp".into(), json!("Mail.Read"));
                ep.sign_token(&c)
            },
            MAILBOX,
        ),
    ];
    let mut c = tls_client(&fake, &pki).await;
    for (what, token, user) in &cases {
        let r = c
            .cmd(&format!("AUTH XOAUTH2 {}", xoauth2_initial(user, token)))
            .await
            .unwrap()
            .one_line();
        assert!(re.is_match(&r), "{what}: {r}");
    }
    // Malformed blobs: no Bearer, not base64.
    for blob in [
        jwt::b64(b"user=scanner@contoso.test\x01\x01"),
        "!!notbase64".into(),
    ] {
        let r = c
            .cmd(&format!("AUTH XOAUTH2 {blob}"))
            .await
            .unwrap()
            .one_line();
        assert!(re.is_match(&r), "{r}");
    }
    // Cancel.
    c.send(b"AUTH XOAUTH2\r\n").await.unwrap();
    assert_eq!(c.reply().await.unwrap().code, 334);
    assert_eq!(c.cmd("*").await.unwrap().code, 501);
    // Delegated for the right user, in another case: accepted.
    let good = ep.user_token(APP, TENANT, "SCANNER@contoso.test");
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2_initial(MAILBOX, &good)))
            .await
            .unwrap()
            .code,
        235
    );
    let counts = fake.xoauth2_counts(MAILBOX);
    assert_eq!((counts.successes, counts.failures), (1, cases.len() as u64));
    assert_eq!(fake.xoauth2_counts("").failures, 2);
    let reasons: Vec<String> = fake
        .xoauth2_attempts()
        .iter()
        .filter_map(|a| a.reason.clone())
        .collect();
    for want in [
        "expired",
        "audience",
        "roles",
        "unknown kid",
        "parts",
        "used as",
        "scp",
        "malformed",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    // Without a policy every token is refused.
    let plain = FakeSmartHost::spawn(FakeConfig::office365(&pki.server)).unwrap();
    let mut c = tls_client(&plain, &pki).await;
    let r = c
        .cmd(&format!("AUTH XOAUTH2 {}", xoauth2_initial(MAILBOX, &good)))
        .await
        .unwrap();
    assert_eq!(r.code, 535);
}

#[tokio::test]
async fn xoauth2_service_principals_rbac_and_shared_mailboxes() {
    let (_d, pki, ep, fake) = oauth_fake(|c, ep| {
        c.accept_tokens_from(ep)
            .service_principal("rbac-app")
            .delegate("shared@contoso.test", MAILBOX)
    });
    let auth = async |token: &str, user: &str| {
        let mut c = tls_client(&fake, &pki).await;
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2_initial(user, token)))
            .await
            .unwrap()
            .code
    };
    // APP has the role but no service principal.
    assert_eq!(auth(&ep.app_token(APP, TENANT), MAILBOX).await, 535);
    // rbac-app has a service principal but no role: needs the RBAC assignment.
    ep.set_app_roles("rbac-app", &[]);
    let rbac = ep.app_token("rbac-app", TENANT);
    assert_eq!(auth(&rbac, MAILBOX).await, 535);
    fake.with_oauth_policy(|p| p.rbac_apps.push("rbac-app".into()))
        .unwrap();
    assert_eq!(auth(&rbac, MAILBOX).await, 235);
    // A delegate's token for the shared mailbox.
    let mine = ep.user_token(APP, TENANT, MAILBOX);
    assert_eq!(auth(&mine, "shared@contoso.test").await, 235);
    assert_eq!(auth(&mine, "other@contoso.test").await, 535);
    // A custom decision wins.
    fake.set_xoauth2(std::sync::Arc::new(|_, _| {
        Err(TokenError::Refused(postern_tests::fake::parse_reply(
            replies::SMTP_AUTH_DISABLED_TENANT,
        )))
    }));
    let mut c = tls_client(&fake, &pki).await;
    let r = c
        .cmd(&format!("AUTH XOAUTH2 {}", xoauth2_initial(MAILBOX, &mine)))
        .await
        .unwrap();
    assert_eq!(r.one_line(), replies::SMTP_AUTH_DISABLED_TENANT);
}

#[tokio::test]
async fn xoauth2_token_expiring_mid_test() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(Duration::from_secs(2))).unwrap();
    ep.register_app(APP, SECRET);
    let fake =
        FakeSmartHost::spawn(FakeConfig::office365(&pki.server).accept_tokens_from(&ep)).unwrap();
    let token = secret_grant(&ep, SECRET, OUTLOOK_DEFAULT)
        .str("access_token")
        .unwrap()
        .to_string();
    let blob = format!("AUTH XOAUTH2 {}", xoauth2_initial(MAILBOX, &token));
    let mut c = tls_client(&fake, &pki).await;
    assert_eq!(c.cmd(&blob).await.unwrap().code, 235);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = tls_client(&fake, &pki).await;
    assert!(auth_535_re(fake.hostname()).is_match(&c.cmd(&blob).await.unwrap().one_line()));
    let a = fake.xoauth2_attempts();
    assert!(a[1].reason.as_deref().unwrap().contains("expired"), "{a:?}");
}

// ---- HVE -------------------------------------------------------------------

#[tokio::test]
async fn hve_token_rules_and_replies() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let ep = endpoint();
    const HVE: &str = "hve1@contoso.test";
    let fake = FakeSmartHost::spawn(
        FakeConfig::hve(&pki.server)
            .user(HVE, "hve-password")
            .accepted_domain("contoso.test")
            .accept_tokens_from(&ep)
            .hve_app_access(HVE, APP),
    )
    .unwrap();
    let host = fake.hostname().to_string();
    ep.set_app_roles(APP, &["Mail.Send"]);
    ep.set_app_roles("not-allowed-app", &["Mail.Send"]);
    let suffix = format!(r" \[{} \S+ [0-9A-F]{{16}}\]$", regex::escape(&host));
    let mut c = tls_client(&fake, &pki).await;
    let xo = |user: &str, token: &str| format!("AUTH XOAUTH2 {}", xoauth2_initial(user, token));
    let check = |r: String, prefix: &str| {
        assert!(r.starts_with(prefix), "{r}");
        assert!(Regex::new(&suffix).unwrap().is_match(&r), "{r}");
    };
    // App not granted with Add-HVEAppAccess.
    check(
        c.cmd(&xo(HVE, &ep.app_token("not-allowed-app", TENANT)))
            .await
            .unwrap()
            .one_line(),
        replies::HVE_APP_NOT_ALLOWED,
    );
    // SMTP.SendAsApp is not Mail.Send.
    let mut wrong_role = ep.app_token_claims(APP, TENANT);
    wrong_role.insert("roles".into(), json!(["SMTP.SendAsApp"]));
    check(
        c.cmd(&xo(HVE, &ep.sign_token(&wrong_role)))
            .await
            .unwrap()
            .one_line(),
        replies::HVE_BAD_PERMISSIONS,
    );
    // Expired; expiring within 5 minutes.
    let mut exp = ep.app_token_claims(APP, TENANT);
    exp.insert("exp".into(), json!(jwt::now() - 1));
    check(
        c.cmd(&xo(HVE, &ep.sign_token(&exp)))
            .await
            .unwrap()
            .one_line(),
        replies::HVE_TOKEN_EXPIRED,
    );
    let mut soon = ep.app_token_claims(APP, TENANT);
    soon.insert("exp".into(), json!(jwt::now() + 120));
    check(
        c.cmd(&xo(HVE, &ep.sign_token(&soon)))
            .await
            .unwrap()
            .one_line(),
        replies::HVE_TOKEN_EXPIRES_SOON,
    );
    // Malformed arguments get 501 5.5.12x.
    let r = c
        .cmd(&format!(
            "AUTH XOAUTH2 {}",
            jwt::b64(b"auth=Bearer x\x01\x01")
        ))
        .await
        .unwrap()
        .one_line();
    assert!(r.starts_with("501 5.5.122 "), "{r}");
    // A good token; internal recipients only.
    assert_eq!(
        c.cmd(&xo(HVE, &ep.app_token(APP, TENANT)))
            .await
            .unwrap()
            .code,
        235
    );
    c.cmd("MAIL FROM:<hve1@contoso.test>").await.unwrap();
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").await.unwrap().code, 250);
    let ext = c
        .cmd("RCPT TO:<someone@fabrikam.test>")
        .await
        .unwrap()
        .one_line();
    assert!(ext.starts_with(replies::HVE_EXTERNAL_RECIPIENT), "{ext}");
    c.cmd("DATA").await.unwrap();
    assert_eq!(
        c.cmd("From: hve1@contoso.test\r\n\r\nx\r\n.")
            .await
            .unwrap()
            .code,
        250
    );
    // Basic auth with the HVE account password also works.
    let mut b = tls_client(&fake, &pki).await;
    assert_eq!(b.auth_login(HVE, "hve-password").await.unwrap().code, 235);
    assert_eq!(
        fake.xoauth2_counts(HVE),
        postern_tests::fake::AuthCounts {
            successes: 1,
            failures: 4
        }
    );
    assert_eq!(fake.violations(), 0);
}

// ---- ACS -------------------------------------------------------------------

#[tokio::test]
async fn acs_login_checks_the_client_secret_at_the_token_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path()).unwrap();
    let ep = endpoint();
    ep.register_app(APP, SECRET);
    let fake = FakeSmartHost::spawn(
        FakeConfig::acs(&pki.server)
            .acs_tokens_from("contoso-acs", &ep)
            .acs_sender("donotreply@contoso.test"),
    )
    .unwrap();
    let user = format!("contoso-acs.{APP}.{TENANT}");
    let mut c = tls_client(&fake, &pki).await;
    assert_eq!(c.auth_login(&user, "wrong").await.unwrap().code, 535);
    assert_eq!(
        c.auth_login(&format!("other.{APP}.{TENANT}"), SECRET)
            .await
            .unwrap()
            .code,
        535
    );
    assert_eq!(c.auth_login("no-dots", SECRET).await.unwrap().code, 535);
    // The token endpoint is down: a temporary failure.
    ep.stop().unwrap();
    assert_eq!(c.auth_login(&user, SECRET).await.unwrap().code, 454);
    ep.start().unwrap();
    ep.fail_next(1, Fault::Status(500));
    assert_eq!(c.auth_login(&user, SECRET).await.unwrap().code, 454);
    assert_eq!(c.auth_login(&user, SECRET).await.unwrap().code, 235);
    // The exchange it made.
    let req = ep.requests().last().unwrap().clone();
    assert_eq!(req.tenant.as_deref(), Some(TENANT));
    assert_eq!(
        req.field("scope"),
        Some("https://communication.azure.com/.default")
    );
    assert_eq!(req.field("client_secret"), Some("<redacted>"));
    // Provisioned senders only; 50 recipients per message.
    assert_eq!(
        c.cmd("MAIL FROM:<other@contoso.test>").await.unwrap().code,
        550
    );
    assert_eq!(
        c.cmd("MAIL FROM:<donotreply@contoso.test>")
            .await
            .unwrap()
            .code,
        250
    );
    for i in 0..50 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<r{i}@x.test>")).await.unwrap().code,
            250
        );
    }
    assert_eq!(c.cmd("RCPT TO:<r50@x.test>").await.unwrap().code, 452);
    // The `|` form.
    let mut c2 = tls_client(&fake, &pki).await;
    let piped = format!("contoso-acs|{APP}|{TENANT}");
    assert_eq!(c2.auth_login(&piped, SECRET).await.unwrap().code, 235);
    assert_eq!(
        fake.sessions()[1].auth_user.as_deref(),
        Some(piped.as_str())
    );
    assert_eq!(ep.count_client(APP), 4);
    assert_eq!(token::encode_form(&[("a", "b c")]), "a=b+c");
}

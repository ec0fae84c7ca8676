//! `postern diagnose` (issue 5 part 3) against the fake Exchange Online:
//! the success path (and `--send` delivering one message), and each failure
//! mode of OFFICE365.md §5 a relay admin meets — wrong password, SMTP AUTH
//! disabled for the tenant, TLS too old, send-as denied, a token with the
//! wrong audience — plus a certificate for another name. Each checks the
//! exit status, the step that failed, the explanation, that the JSON is
//! one valid document, and that no password, secret or token is printed.
//! One full terminal output is compared with `tests/golden/diagnose_send.txt`
//! (set `POSTERN_UPDATE_GOLDEN=1` to rewrite it).
//!
//! No daemon runs: diagnose talks to the smart host itself.

use postern_tests::fake::{
    Action, FakeConfig, FakeSmartHost, FakeTokenEndpoint, Phase, TlsVersion, TokenConfig, replies,
};
use postern_tests::harness::{
    OAUTH2_APP as APP, OAUTH2_SECRET as SECRET, OAUTH2_TENANT as TENANT, Output, TEST_PASSWORD,
    TEST_USER, TestEnv, re,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const RCPT: &str = "bob@contoso.test";

/// postern configured for the fake Exchange Online as `use_relayhost`
/// does (LOGIN, TLS verify), the fake changed by `adjust`.
fn exo(adjust: impl FnOnce(FakeConfig) -> FakeConfig) -> (TestEnv, FakeSmartHost) {
    let mut env = TestEnv::new().unwrap();
    let cfg = adjust(FakeConfig::office365(&env.pki.server).user(TEST_USER, TEST_PASSWORD));
    let fake = FakeSmartHost::spawn(cfg).unwrap();
    env.use_relayhost(&fake).unwrap();
    (env, fake)
}

/// `postern -c etc diagnose ARGS`.
fn diagnose(env: &TestEnv, args: &[&str]) -> Output {
    let mut a = vec!["diagnose"];
    a.extend_from_slice(args);
    env.postern(&a).unwrap()
}

/// `diagnose --json ARGS`: the exit status and the document (which must
/// be the whole of stdout).
fn json(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = diagnose(env, &a);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    (out.code().unwrap(), v)
}

/// The step named `name`.
fn step<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {v:#}"))
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_default()
}

/// Every step's names, in order.
fn names(v: &Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts the failed step, its reply's start and words of its explanation.
fn assert_failed(v: &Value, name: &str, reply: &str, explanation: &[&str]) {
    assert_eq!(v["ok"], false, "{v:#}");
    assert_eq!(v["failed_step"], name, "{v:#}");
    let s = step(v, name);
    assert_eq!(s["ok"], false);
    assert_eq!(s["status"], "failed");
    assert!(text(s, "reply").starts_with(reply), "{s:#}");
    for e in explanation {
        assert!(text(s, "explanation").contains(e), "{e:?} not in {s:#}");
    }
}

/// Neither stdout nor stderr holds one of `secrets`, anything shaped like
/// a JWT, or an XOAUTH2 or AUTH PLAIN blob.
fn assert_no_secrets(out: &Output, secrets: &[&str]) {
    for (what, t) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for s in secrets {
            assert!(!t.contains(s), "a secret is on {what}:\n{t}");
        }
        for (shape, pattern) in [
            ("a JWT", r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
            ("an XOAUTH2 blob", r"dXNlcj[0-9A-Za-z+/]{20,}"),
        ] {
            assert!(!re(pattern).matches(t), "{shape} is on {what}:\n{t}");
        }
    }
}

/// The terminal output with what changes between runs masked.
fn mask(out: &str, env: &TestEnv, fake: &FakeSmartHost) -> String {
    let mut t = out.replace(&env.root.display().to_string(), "ROOT");
    t = t.replace(&format!(":{}", fake.port()), ":PORT");
    for (pattern, with) in [
        // RFC 2822 dates (greeting, Date:).
        (
            r"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}",
            "DATE",
        ),
        (r"\[[0-9A-F]{16}\]", "[ID]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "TIME"),
        // Certificate dates as OpenSSL prints them.
        (
            r"[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4} GMT",
            "CERTDATE",
        ),
        (r"\(in \d+ days\)", "(in N days)"),
        (r"OK <[^>]+>", "OK <MSGID>"),
        (r"SIZE=\d+", "SIZE=N"),
        (r"\d+ bytes", "N bytes"),
        (
            r"with cipher \S+ \(\d+/\d+ bits\)",
            "with cipher CIPHER (BITS)",
        ),
    ] {
        t = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&t, with)
            .into_owned();
    }
    t
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("POSTERN_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
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
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{} differs from the output at line {}:\n--- want:\n{want}\n--- got:\n{got}",
            path.display(),
            first + 1
        );
    }
}

// ---- the success path ------------------------------------------------------

#[test]
fn every_step_passes_and_send_delivers_one_test_message() {
    let (env, fake) = exo(|c| c.send_as_check(true));
    // Defaults: the sender is the mailbox of smtp_sasl_password_maps, the
    // recipient the sender; no message is sent.
    let (code, v) = json(&env, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["failed_step"], Value::Null);
    assert_eq!(v["sender"], TEST_USER);
    assert_eq!(v["recipient"], TEST_USER);
    assert_eq!(v["route"], format!("smtp:[localhost]:{}", fake.port()));
    assert_eq!(
        names(&v),
        [
            "route", "resolve", "connect", "banner", "ehlo", "starttls", "ehlo-tls", "auth",
            "mail", "rcpt", "data", "quit"
        ]
    );
    assert!(text(step(&v, "route"), "summary").ends_with(&format!("[localhost]:{}", fake.port())));
    assert_eq!(
        text(step(&v, "resolve"), "summary"),
        "localhost -> 127.0.0.1"
    );
    let ehlo = step(&v, "ehlo")["data"]["extensions"].to_string();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let tls = &step(&v, "starttls")["data"];
    assert_eq!(tls["trust"], "Verified");
    assert_eq!(tls["name_match"], true);
    assert!(tls["protocol"].as_str().unwrap() >= "TLSv1.2");
    assert_eq!(
        tls["certificates"][0]["subject"],
        "O=postern tests, CN=localhost"
    );
    assert!(tls["certificates"][0]["days_left"].as_i64().unwrap() > 0);
    assert!(
        step(&v, "ehlo-tls")["data"]["extensions"]
            .to_string()
            .contains("AUTH LOGIN XOAUTH2")
    );
    let auth = step(&v, "auth");
    assert_eq!(auth["data"]["mechanism"], "LOGIN");
    assert!(text(auth, "summary").contains("signed in as scanner@contoso.test with LOGIN"));
    let detail = auth["detail"].to_string();
    assert!(detail.contains("mechanism: LOGIN"), "{detail}");
    assert!(
        detail.contains("smtp_sasl_mechanism_filter = login, plain"),
        "{detail}"
    );
    assert!(detail.contains("OAuth2: not configured"), "{detail}");
    assert!(text(step(&v, "mail"), "summary").contains("250 2.1.0 Sender OK"));
    assert!(text(step(&v, "rcpt"), "summary").contains("250 2.1.5 Recipient OK"));
    assert_eq!(step(&v, "data")["status"], "skipped");
    assert!(text(step(&v, "quit"), "summary").starts_with("221 2.0.0"));
    assert!(fake.messages().is_empty());

    // --send: one message, as the fake records it; the terminal output is
    // the golden file.
    let out = diagnose(&env, &["--to", RCPT, "--send"]);
    assert_eq!(out.code(), Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains('\x1b'), "no colour without a terminal");
    let msgs = fake.wait_messages(1, Duration::from_secs(10)).unwrap();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, TEST_USER);
    assert_eq!(m.rcpt_to, vec![RCPT.to_string()]);
    let data = m.text();
    assert!(
        data.contains("\r\nSubject: postern diagnose test\r\n"),
        "{data}"
    );
    assert!(
        out.stdout
            .contains("[ OK ] data      test message accepted: 250 2.0.0 OK <")
    );
    assert_no_secrets(&out, &[TEST_PASSWORD]);
    golden("diagnose_send.txt", &mask(&out.stdout, &env, &fake));
    // The run is in the mail log, without the password.
    let log = env.log_text();
    assert!(log.contains("postern/diagnose["), "{log}");
    assert!(log.contains("send=yes: every step passed"), "{log}");
    assert!(!log.contains(TEST_PASSWORD));
    // A usage error is not a failed walk.
    let out = diagnose(&env, &["--bogus"]);
    assert_eq!(out.code(), Some(64));
    assert!(out.stderr.contains("usage: postern"), "{}", out.stderr);
}

// ---- AUTH failures ---------------------------------------------------------

#[test]
fn wrong_password_is_refused_at_auth_with_the_fix() {
    let (env, fake) = exo(|c| c);
    fake.set_password(TEST_USER, "the-right-one-is-elsewhere");
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    assert_failed(
        &v,
        "auth",
        "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect.",
        &["smtp_sasl_password_maps is wrong", "not locked out"],
    );
    // The walk stops at AUTH, and still says goodbye.
    let n = names(&v);
    assert_eq!(n[n.len() - 2..], ["auth", "quit"]);
    let out = diagnose(&env, &["--to", RCPT]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stdout
            .contains("[FAIL] auth      LOGIN as scanner@contoso.test refused")
    );
    assert!(out.stdout.contains(
        "server said: 535 5.7.139 Authentication unsuccessful, the user credentials were incorrect."
    ));
    assert!(
        out.stdout
            .contains("postern diagnose: failed at auth: LOGIN as scanner@contoso.test refused")
    );
    assert_no_secrets(&out, &[TEST_PASSWORD, "the-right-one-is-elsewhere"]);

    // Exchange's older answer to a bad password or token.
    fake.set_password(TEST_USER, TEST_PASSWORD);
    fake.script(Phase::Auth, Action::exo(replies::AUTH_UNSUCCESSFUL));
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    assert_failed(
        &v,
        "auth",
        "535 5.7.3 Authentication unsuccessful [",
        &["check smtp_sasl_password_maps", "SMTP.SendAsApp"],
    );
}

#[test]
fn smtp_auth_disabled_for_the_tenant() {
    let (env, fake) = exo(|c| c);
    fake.always(Phase::Auth, Action::exo(replies::SMTP_AUTH_DISABLED_TENANT));
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    assert_failed(
        &v,
        "auth",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
        &[
            "Set-TransportConfig -SmtpClientAuthenticationDisabled $false",
            "up to an hour",
        ],
    );
    let out = diagnose(&env, &["--to", RCPT]);
    assert!(
        out.stdout
            .contains("fix: SMTP AUTH is turned off for the whole Microsoft 365 tenant")
    );
    assert_no_secrets(&out, &[TEST_PASSWORD]);
}

#[test]
fn tls_too_old_gets_421_at_auth() {
    // The fake's floor above what the client may negotiate: Exchange's
    // 421 4.7.66 at AUTH, then it closes the connection.
    let (mut env, _fake) = exo(|c| c.auth_tls_floor(TlsVersion::Tls13));
    env.set("smtp_tls_mandatory_protocols", "TLSv1.2").unwrap();
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    assert_failed(
        &v,
        "auth",
        "421 4.7.66 TLS 1.0 and 1.1 are not supported.",
        &["requires TLS 1.2 or newer", "smtp_tls_mandatory_protocols"],
    );
    assert_eq!(step(&v, "starttls")["data"]["protocol"], "TLSv1.2");
    // The server hung up: no QUIT.
    assert_eq!(names(&v).last().unwrap(), "auth");

    // A client that only speaks TLS 1.1 (where this OpenSSL still can).
    let (mut env, _fake) = exo(|c| c);
    env.set("smtp_tls_mandatory_protocols", "TLSv1.1").unwrap();
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    if v["failed_step"] == "starttls" {
        eprintln!("TLS 1.1 unavailable here: {:#}", step(&v, "starttls"));
        return;
    }
    let tls = step(&v, "starttls");
    assert_eq!(tls["status"], "warning", "{tls:#}");
    assert_eq!(tls["data"]["protocol"], "TLSv1.1");
    assert!(text(tls, "explanation").contains("older than TLS 1.2"));
    assert_failed(
        &v,
        "auth",
        "421 4.7.66 TLS 1.0 and 1.1 are not supported.",
        &["TLS 1.2"],
    );
}

// ---- DATA ------------------------------------------------------------------

#[test]
fn send_as_denied_at_the_end_of_data() {
    let (env, fake) = exo(|c| c.send_as_check(true));
    let other = "frontdesk@contoso.test";
    // Without --send the walk cannot see it: Exchange checks at DATA.
    let (code, _) = json(&env, &["--from", other, "--to", RCPT]);
    assert_eq!(code, 0);
    let (code, v) = json(&env, &["--from", other, "--to", RCPT, "--send"]);
    assert_eq!(code, 1);
    assert_failed(
        &v,
        "data",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        &["smtp_send_as_mailbox = yes", "Add-RecipientPermission"],
    );
    assert_eq!(step(&v, "mail")["ok"], true);
    assert_eq!(step(&v, "rcpt")["ok"], true);
    assert!(fake.messages().is_empty());
    assert_eq!(fake.refused().len(), 1);

    // With smtp_send_as_mailbox the agent rewrites the sender; so does
    // diagnose, and the message goes through.
    let mut env = env;
    env.set("smtp_send_as_mailbox", "yes").unwrap();
    let (code, v) = json(&env, &["--from", other, "--to", RCPT, "--send"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        step(&v, "mail")["detail"][0]
            .as_str()
            .unwrap()
            .contains("rewritten to scanner@contoso.test")
    );
    assert_eq!(fake.messages().len(), 1);
}

// ---- TLS -------------------------------------------------------------------

#[test]
fn certificate_for_another_name_fails_the_name_check() {
    let mut env = TestEnv::new().unwrap();
    let wrong = env.pki.wrong_name().unwrap();
    let fake =
        FakeSmartHost::spawn(FakeConfig::office365(&wrong).user(TEST_USER, TEST_PASSWORD)).unwrap();
    env.use_relayhost(&fake).unwrap();
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 1);
    assert_eq!(v["failed_step"], "starttls");
    let s = step(&v, "starttls");
    assert!(
        text(s, "summary").starts_with("server certificate not verified: certificate names ["),
        "{s:#}"
    );
    assert!(
        text(s, "summary").contains("do not match [localhost]"),
        "{s:#}"
    );
    assert!(text(s, "explanation").contains("not for the name postern connects to"));
    assert_eq!(s["data"]["name_match"], false);
    assert_eq!(s["data"]["trust"], "Trusted");
    let detail = s["detail"].to_string();
    assert!(
        detail.contains("required at smtp_tls_security_level = verify"),
        "{detail}"
    );
    // No credentials cross a connection to the wrong server; it gets QUIT.
    assert_eq!(names(&v).last().unwrap(), "quit");
    assert_eq!(fake.auth_attempts(), 0);
    // An address as the next hop: the certificate names no address.
    let relay = format!("[127.0.0.1]:{}", fake.port());
    let (code, v) = json(&env, &["--to", RCPT, "--relay", &relay]);
    assert_eq!(code, 1);
    assert_eq!(v["route"], format!("smtp:{relay}"));
    assert_eq!(step(&v, "route")["detail"][0], "from --relay");
    assert!(
        text(step(&v, "starttls"), "summary").contains("do not match [127.0.0.1]"),
        "{v:#}"
    );
    // At the may level the same certificate is only noted.
    env.set("smtp_tls_security_level", "may").unwrap();
    let (_, v) = json(&env, &["--to", RCPT]);
    let s = step(&v, "starttls");
    assert_eq!(s["status"], "ok");
    assert!(
        s["detail"]
            .to_string()
            .contains("not enforced at smtp_tls_security_level = may")
    );
}

/// Implicit TLS (port 465 style, `smtp_tls_wrappermode = yes`): the TLS
/// step comes before the greeting, and there is no STARTTLS.
#[test]
fn implicit_tls_is_shown_before_the_banner() {
    let (mut env, _fake) = exo(|mut c| {
        c.implicit_tls = true;
        c
    });
    env.set("smtp_tls_wrappermode", "yes").unwrap();
    let (code, v) = json(&env, &["--to", RCPT]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        names(&v)[..6],
        ["route", "resolve", "connect", "tls", "banner", "ehlo"]
    );
    assert!(!names(&v).iter().any(|n| n == "starttls"));
    assert!(
        text(step(&v, "tls"), "summary")
            .starts_with("implicit TLS (smtp_tls_wrappermode = yes): TLSv1.")
    );
    assert_eq!(step(&v, "auth")["status"], "ok");
}

// ---- DNS -------------------------------------------------------------------

/// Direct MX delivery (no relayhost): the MX hosts from the test DNS server
/// (`POSTERN_DNS_SERVER`) in preference order, the next address after a
/// refused connection, and a domain that does not exist.
#[test]
fn direct_mx_route_resolves_and_connects_in_preference_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dns = rt.block_on(postern_tests::dns::DnsServer::start(&[
        ("contoso.test", "MX", "20 mx2.contoso.test"),
        ("contoso.test", "MX", "10 mx1.contoso.test"),
        // Nothing listens on 127.0.0.2: connection refused.
        ("mx1.contoso.test", "A", "127.0.0.2"),
        ("mx2.contoso.test", "A", "127.0.0.1"),
    ]));
    let mut env = TestEnv::new().unwrap();
    let fake =
        FakeSmartHost::spawn(FakeConfig::mx(&env.pki.server).accepted_domain("contoso.test"))
            .unwrap();
    let port = fake.port().to_string();
    env.set_many(&[("smtp_tcp_port", &port), ("smtp_tls_security_level", "may")])
        .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = postern_tests::harness::command("postern").unwrap();
        cmd.arg("-c")
            .arg(&env.etc)
            .arg("diagnose")
            .arg("--json")
            .args(args)
            .env("POSTERN_DNS_SERVER", dns.addr.to_string());
        let out = postern_tests::harness::process::run(cmd, None, Duration::from_secs(60)).unwrap();
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
        (out.code().unwrap(), v)
    };
    let (code, v) = run(&["--from", "app@contoso.test", "--to", RCPT]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["route"], "smtp:contoso.test");
    let r = step(&v, "resolve");
    assert_eq!(text(r, "summary"), "contoso.test: 2 mail exchanger(s) (MX)");
    assert_eq!(r["detail"][0], "MX 10 mx1.contoso.test -> 127.0.0.2");
    assert_eq!(r["detail"][1], "MX 20 mx2.contoso.test -> 127.0.0.1");
    let c = step(&v, "connect");
    assert_eq!(
        text(c, "summary"),
        format!("connected to mx2.contoso.test[127.0.0.1]:{port}")
    );
    assert!(
        c["detail"][0]
            .as_str()
            .unwrap()
            .contains("mx1.contoso.test[127.0.0.2]"),
        "{c:#}"
    );
    // Opportunistic TLS: the name is checked but not enforced.
    let t = step(&v, "starttls");
    assert_eq!(t["status"], "ok");
    assert_eq!(t["data"]["name_match"], false);
    assert_eq!(step(&v, "auth")["status"], "skipped");
    assert!(text(step(&v, "rcpt"), "summary").contains("250"));

    let (code, v) = run(&["--from", "app@contoso.test", "--to", "x@nowhere.test"]);
    assert_eq!(code, 1);
    assert_eq!(v["failed_step"], "resolve");
    let r = step(&v, "resolve");
    assert!(
        text(r, "summary").ends_with("name=nowhere.test type=MX: Host not found"),
        "{r:#}"
    );
    assert!(text(r, "explanation").contains("no mail servers in DNS"));
    drop(rt);
}

// ---- XOAUTH2 ---------------------------------------------------------------

/// XOAUTH2 with a client secret from the fake token endpoint.
fn xoauth2(
    tokens: TokenConfig,
    params: &[(&str, &str)],
) -> (TestEnv, FakeSmartHost, FakeTokenEndpoint) {
    let ep = FakeTokenEndpoint::spawn(tokens).unwrap();
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_xoauth2_fake(&ep).unwrap();
    env.set("smtp_oauth2_timeout", "5s").unwrap();
    env.set_many(params).unwrap();
    (env, fake, ep)
}

/// The tokens the endpoint issued (none may be printed).
fn issued(ep: &FakeTokenEndpoint) -> Vec<String> {
    ep.records()
        .issued
        .into_iter()
        .map(|t| t.access_token)
        .collect()
}

#[test]
fn xoauth2_shows_the_claims_that_matter_and_never_the_token() {
    let (env, _fake, ep) = xoauth2(TokenConfig::for_tests(Duration::from_secs(3599)), &[]);
    let out = diagnose(&env, &["--json", "--to", RCPT]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(out.code(), Some(0), "{v:#}");
    let auth = step(&v, "auth");
    assert_eq!(auth["data"]["mechanism"], "XOAUTH2");
    let t = &auth["data"]["tokens"][0];
    assert_eq!(t["aud"], "https://outlook.office365.com");
    assert_eq!(t["roles"][0], "SMTP.SendAsApp");
    assert_eq!(t["appid"], APP);
    assert_eq!(t["tid"], TENANT);
    assert!(t["expires_in"].as_i64().unwrap() > 3000);
    assert_eq!(t["problems"].as_array().unwrap().len(), 0);
    let detail = auth["detail"].to_string();
    assert!(detail.contains("fetched from the endpoint"), "{detail}");
    assert!(
        detail.contains("aud: https://outlook.office365.com"),
        "{detail}"
    );
    let tokens = issued(&ep);
    assert_eq!(tokens.len(), 1);
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(SECRET);
    assert_no_secrets(&out, &secrets);
    // The second run takes the token from the shared cache.
    let out = diagnose(&env, &["--to", RCPT]);
    assert_eq!(out.code(), Some(0), "{}", out.stdout);
    assert!(
        out.stdout.contains("access token: from the token cache"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("  roles: SMTP.SendAsApp"));
    assert_eq!(issued(&ep).len(), 1);
    assert_no_secrets(&out, &secrets);
}

#[test]
fn token_with_the_wrong_audience_is_refused_and_explained() {
    let (env, fake, ep) = xoauth2(
        TokenConfig::for_tests(Duration::from_secs(3599)),
        &[("smtp_oauth2_scope", "https://graph.microsoft.com/.default")],
    );
    let out = diagnose(&env, &["--json", "--to", RCPT]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(out.code(), Some(1));
    assert_failed(
        &v,
        "auth",
        "535 5.7.3 Authentication unsuccessful",
        &[
            "audience must be https://outlook.office365.com",
            "What the token says: the audience https://graph.microsoft.com is not Exchange Online's",
        ],
    );
    let auth = step(&v, "auth");
    // Refused, refreshed once and refused again, as the agent would.
    let tokens = auth["data"]["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{auth:#}");
    assert_eq!(tokens[0]["aud"], "https://graph.microsoft.com");
    assert!(
        auth["detail"]
            .to_string()
            .contains("fetched a new one and tried once more")
    );
    assert!(
        auth["detail"]
            .to_string()
            .contains("problem: the audience https://graph.microsoft.com")
    );
    assert_eq!(fake.xoauth2_attempts().len(), 2);
    let text_out = diagnose(&env, &["--to", RCPT]);
    assert!(
        text_out
            .stdout
            .contains("[FAIL] auth      XOAUTH2 as scanner@contoso.test refused")
    );
    let mut secrets: Vec<String> = issued(&ep);
    assert!(secrets.len() >= 2);
    secrets.push(SECRET.into());
    let s: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secrets(&out, &s);
    assert_no_secrets(&text_out, &s);
    assert!(!env.log_text().contains(SECRET));
}

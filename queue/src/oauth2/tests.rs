//! The token library against a local HTTP endpoint.

use super::assertion::tests::{make_cert, verify};
use super::claims::tests::jwt;
use super::test_server::{Request, Server};
use super::*;
use proto::sasl::Secret;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cret-value~with+odd=chars&";

/// A configuration directory with the endpoint at `server`, a client
/// secret file and the cache inside; `extra` is appended to main.cf
/// (`DIR` stands for the directory). As root, mail_owner is nobody.
fn setup(server: &Server, extra: &str) -> (tempfile::TempDir, conf::Config) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    write_secret(&dir.path().join("secret"), SECRET);
    let main = format!(
        "mail_owner = nobody\n\
         data_directory = {d}/data\n\
         smtp_oauth2_token_endpoint = {}\n\
         smtp_oauth2_client_id = {CLIENT_ID}\n\
         smtp_oauth2_client_secret_file = {d}/secret\n{}",
        server.url("/tenant/oauth2/v2.0/token"),
        extra.replace("DIR", &d)
    );
    std::fs::write(dir.path().join("main.cf"), main).unwrap();
    let cfg = conf::load(dir.path(), &[]).unwrap();
    (dir, cfg)
}

fn write_secret(path: &Path, text: &str) {
    super::files::replace(path, format!("{text}\n").as_bytes(), None, 0o600).unwrap();
}

/// A token answer whose access token is a JWT numbered `n`.
fn answer(n: usize, expires_in: u64, refresh: Option<&str>) -> (u16, String) {
    let access = jwt(&serde_json::json!({
        "aud": "https://outlook.office365.com",
        "roles": ["SMTP.SendAsApp"],
        "n": n,
        // Rounded up, so the token lives all of `expires_in` (an `exp`
        // rounded down is believed: see grant.rs).
        "exp": (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
            + expires_in as f64)
            .ceil() as u64,
    }));
    let mut j = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access,
    });
    if let Some(r) = refresh {
        j["refresh_token"] = r.into();
    }
    (200, j.to_string())
}

fn number(t: &Token) -> u64 {
    decode_claims(t.access_token.expose()).unwrap()["n"]
        .as_u64()
        .unwrap()
}

/// A handler issuing token 1, 2, 3... with `expires_in`, after `delay`.
fn issuer(expires_in: u64, delay: Duration) -> impl Fn(&Request) -> (u16, String) {
    let n = AtomicUsize::new(0);
    move |_| {
        std::thread::sleep(delay);
        answer(n.fetch_add(1, Ordering::SeqCst) + 1, expires_in, None)
    }
}

#[test]
fn token_cache_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TokenCache>();
    check::<Accounts>();
}

#[test]
fn client_secret_grant_and_reuse() {
    let server = Server::start(|r| {
        assert_eq!(r.path, "/tenant/oauth2/v2.0/token");
        assert_eq!(r.field("grant_type"), "client_credentials");
        assert_eq!(r.field("client_id"), CLIENT_ID);
        assert_eq!(r.field("client_secret"), SECRET);
        assert_eq!(r.field("scope"), "https://outlook.office365.com/.default");
        assert!(!r.form.contains_key("client_assertion"));
        answer(1, 3599, None)
    });
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "scanner@contoso.com").unwrap();
    let cache = TokenCache::new(&cfg);
    let (t, from) = cache.get(&account, None).unwrap();
    assert_eq!(from, Obtained::Endpoint);
    let left = t.remaining(SystemTime::now()).as_secs();
    assert!((3590..=3599).contains(&left), "{left}");
    for _ in 0..20 {
        let (again, from) = cache.get(&account, None).unwrap();
        assert_eq!((again.clone(), from), (t.clone(), Obtained::Memory));
    }
    assert_eq!(server.requests().len(), 1, "one request for many calls");

    // The file: private, in a private directory, and it survives a restart.
    let file = cache.file(&account);
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::metadata(cache.directory()).unwrap().mode() & 0o7777,
        0o700
    );
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("{}.json", account.cache_key()));
    if nix::unistd::geteuid().is_root() {
        let (uid, _) = crate::service::mail_owner_ids(&cfg).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), uid, "mail_owner's");
    }
    let restarted = TokenCache::new(&cfg);
    let (t2, from) = restarted.get(&account, None).unwrap();
    assert_eq!((t2, from), (t, Obtained::CacheFile));
    assert_eq!(server.requests().len(), 1);
    // Debug output of a token hides it.
    assert!(!format!("{:?}", restarted.token(&account, None).unwrap()).contains("eyJ"));
}

#[test]
fn certificate_assertion_is_what_entra_id_expects() {
    let (cert, key) = make_cert(-1, 365);
    let cert2 = cert.clone();
    let endpoint = Arc::new(std::sync::OnceLock::<String>::new());
    let ep = endpoint.clone();
    let server = Server::start(move |r| {
        assert_eq!(r.field("grant_type"), "client_credentials");
        assert_eq!(r.field("client_id"), CLIENT_ID);
        assert!(!r.form.contains_key("client_secret"));
        assert_eq!(
            r.field("client_assertion_type"),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        let claims = verify(r.field("client_assertion"), &cert2);
        assert_eq!(claims["aud"], ep.get().unwrap().as_str());
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat <= now && now - iat < 30);
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64(), Some(iat + 600));
        answer(1, 3599, None)
    });
    let (dir, cfg) = setup(
        &server,
        "smtp_oauth2_client_secret_file =\nsmtp_oauth2_client_certificate_file = DIR/app.pem\nsmtp_oauth2_client_key_file = DIR/app.key\n",
    );
    endpoint
        .set(cfg.smtp_oauth2_token_endpoint.clone())
        .unwrap();
    std::fs::write(dir.path().join("app.pem"), &cert).unwrap();
    super::files::replace(&dir.path().join("app.key"), &key, None, 0o600).unwrap();
    let account = Account::for_user(&cfg, "scanner@contoso.com").unwrap();
    assert!(matches!(
        account.client_auth,
        ClientAuth::Certificate { .. }
    ));
    let cache = TokenCache::new(&cfg);
    let t = cache.token(&account, None).unwrap();
    assert_eq!(number(&t), 1);
    assert_eq!(server.requests().len(), 1);
    let exp = certificate_expiry(&account).unwrap();
    let days = exp.duration_since(SystemTime::now()).unwrap().as_secs() / 86400;
    assert!((364..=365).contains(&days), "{days}");
}

#[test]
fn freshness_rule() {
    let t = |lifetime: f64| Token {
        access_token: Secret::new("x"),
        obtained_at: UNIX_EPOCH,
        expires_at: UNIX_EPOCH + Duration::from_secs_f64(lifetime),
    };
    let at = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
    let margin = Duration::from_secs(600);
    // A 60-minute token: replaced 10 minutes before it expires.
    assert!(t(3600.0).is_fresh(margin, at(2999.0)));
    assert!(!t(3600.0).is_fresh(margin, at(3000.0)));
    // A 3-second test token: replaced in its last 0.75 s.
    assert!(t(3.0).is_fresh(margin, at(2.2)));
    assert!(!t(3.0).is_fresh(margin, at(2.25)));
    // A smaller margin wins over the quarter.
    assert!(t(3600.0).is_fresh(Duration::from_secs(60), at(3539.0)));
    assert!(!t(3600.0).is_fresh(Duration::from_secs(60), at(3540.0)));
    assert!(!t(3.0).is_fresh(margin, at(10.0)));
}

#[test]
fn short_tokens_are_refreshed_at_the_margin() {
    let server = Server::start(issuer(4, Duration::ZERO));
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "u@contoso.com").unwrap();
    let cache = TokenCache::new(&cfg);
    let start = Instant::now();
    assert_eq!(number(&cache.token(&account, None).unwrap()), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        number(&cache.token(&account, None).unwrap()),
        1,
        "3+ s left"
    );
    // Refreshed once less than a second (a quarter of 4 s) remains.
    std::thread::sleep(Duration::from_millis(3400).saturating_sub(start.elapsed()));
    let t = cache.token(&account, None).unwrap();
    assert_eq!(number(&t), 2);
    assert!(t.remaining(SystemTime::now()) > Duration::from_secs(3));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn one_fetch_across_caches_and_threads() {
    let server = Server::start(issuer(3600, Duration::from_millis(100)));
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "u@contoso.com").unwrap();
    // Two caches on one directory stand for two delivery agents.
    let caches = [
        Arc::new(TokenCache::new(&cfg)),
        Arc::new(TokenCache::new(&cfg)),
    ];
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let cache = caches[i % 2].clone();
            let (account, barrier) = (account.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..10)
                    .map(|_| number(&cache.token(&account, None).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|n| *n == 1));
    }
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn one_fetch_per_expiry_across_caches() {
    // 2-second tokens are reused for 1.5 s: over 2.6 s of constant demand
    // from two caches and eight threads, exactly two requests.
    let server = Server::start(issuer(2, Duration::from_millis(50)));
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "u@contoso.com").unwrap();
    let caches = [
        Arc::new(TokenCache::new(&cfg)),
        Arc::new(TokenCache::new(&cfg)),
    ];
    let until = Instant::now() + Duration::from_millis(2600);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let cache = caches[i % 2].clone();
            let account = account.clone();
            std::thread::spawn(move || {
                while Instant::now() < until {
                    let t = cache.token(&account, None).unwrap();
                    // Handed out with more than 0.5 s left; allow for a busy machine.
                    assert!(t.remaining(SystemTime::now()) > Duration::from_millis(250));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(gap >= Duration::from_millis(1400), "{gap:?}");
}

#[test]
fn rejected_token_is_replaced_once() {
    let server = Server::start(issuer(3600, Duration::from_millis(50)));
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "u@contoso.com").unwrap();
    let caches = [
        Arc::new(TokenCache::new(&cfg)),
        Arc::new(TokenCache::new(&cfg)),
    ];
    let first = caches[0].token(&account, None).unwrap();
    assert_eq!(caches[1].token(&account, None).unwrap(), first);
    // Six agents in two processes all had `first` refused with 535.
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let cache = caches[i % 2].clone();
            let (account, first, barrier) = (account.clone(), first.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache.token(&account, Some(&first)).unwrap()
            })
        })
        .collect();
    let got: Vec<Token> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        got.iter().all(|t| number(t) == 2),
        "one replacement for all"
    );
    assert_eq!(server.requests().len(), 2);
    // The replacement refused too: one more, and only one.
    let second = got[0].clone();
    assert_eq!(
        number(&caches[1].token(&account, Some(&second)).unwrap()),
        3
    );
    assert_eq!(
        number(&caches[0].token(&account, Some(&second)).unwrap()),
        3
    );
    assert_eq!(number(&caches[0].token(&account, Some(&first)).unwrap()), 3);
    assert_eq!(server.requests().len(), 3);
    // An explicit refresh always asks.
    assert_eq!(number(&caches[0].refresh(&account).unwrap()), 4);
}

fn rt_setup(server: &Server, extra: &str) -> (tempfile::TempDir, conf::Config, Account, PathBuf) {
    let (dir, cfg) = setup(
        server,
        &format!("smtp_oauth2_refresh_token_file = DIR/rt\n{extra}"),
    );
    let rt = dir.path().join("rt");
    write_secret(&rt, "rt-1");
    let account = Account::for_user(&cfg, "ceo@contoso.com").unwrap();
    (dir, cfg, account, rt)
}

#[test]
fn refresh_token_rotation_is_atomic() {
    let n = Arc::new(AtomicUsize::new(1));
    let n2 = n.clone();
    let server = Server::start(move |r| {
        let i = n2.load(Ordering::SeqCst);
        assert_eq!(r.field("grant_type"), "refresh_token");
        assert_eq!(r.field("refresh_token"), format!("rt-{i}"));
        assert_eq!(r.field("client_id"), CLIENT_ID);
        assert_eq!(
            r.field("scope"),
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        // A confidential client: the secret file is configured as well.
        assert_eq!(r.field("client_secret"), SECRET);
        n2.store(i + 1, Ordering::SeqCst);
        answer(i, 3600, Some(&format!("rt-{}", i + 1)))
    });
    let (_dir, cfg, account, rt) = rt_setup(
        &server,
        "smtp_oauth2_scope = https://outlook.office.com/SMTP.Send offline_access\n",
    );
    assert!(matches!(account.grant, Grant::RefreshToken(_)));
    let before = std::fs::metadata(&rt).unwrap();
    let cache = TokenCache::new(&cfg);
    assert_eq!(number(&cache.token(&account, None).unwrap()), 1);
    let after = std::fs::metadata(&rt).unwrap();
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-2\n");
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_ne!(after.ino(), before.ino(), "replaced by a rename");
    let leftovers: Vec<_> = std::fs::read_dir(rt.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The next refresh uses the rotated token.
    assert_eq!(number(&cache.refresh(&account).unwrap()), 2);
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-3\n");
}

#[test]
fn refresh_token_kept_when_the_answer_has_none_or_fails() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = Server::start(move |r| {
        assert_eq!(r.field("refresh_token"), "rt-1");
        assert!(!r.form.contains_key("client_secret"), "a public client");
        match c2.fetch_add(1, Ordering::SeqCst) {
            0 => answer(1, 3600, None),
            1 => (
                400,
                r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082]}"#.into(),
            ),
            _ => (503, "busy".into()),
        }
    });
    let (_dir, cfg, account, rt) = rt_setup(&server, "smtp_oauth2_client_secret_file =\n");
    assert_eq!(account.client_auth, ClientAuth::None);
    let cache = TokenCache::new(&cfg);
    cache.token(&account, None).unwrap();
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-1\n");
    let e = cache.refresh(&account).unwrap_err();
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains("postern oauth2 login ceo@contoso.com"),
        "{text}"
    );
    assert!(text.contains(&rt.display().to_string()), "{text}");
    assert!(!text.contains("rt-1"), "{text}");
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-1\n");
    let e = cache.refresh(&account).unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-1\n");
    // The failures left the cached token alone.
    assert_eq!(number(&cache.token(&account, None).unwrap()), 1);
}

#[test]
fn endpoint_errors() {
    let server = Server::start(|r| {
        match r.field("scope") {
        "bad-secret" => (
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: 0d1e\r\nCorrelation ID: 9c2f","error_codes":[7000215]}"#.into(),
        ),
        "busy" => (503, "<html>Service Unavailable</html>".into()),
        "slow" => {
            std::thread::sleep(Duration::from_millis(2500));
            answer(1, 3600, None)
        }
        "garbage" => (200, "not json".into()),
        "no-token" => (200, r#"{"token_type":"Bearer","expires_in":3600}"#.into()),
        other => panic!("{other}"),
    }
    });
    let (_dir, cfg) = setup(&server, "smtp_oauth2_timeout = 1s\n");
    let cache = TokenCache::new(&cfg);
    let mut account = Account::for_user(&cfg, "u@contoso.com").unwrap();
    let mut fetch = |scope: &str| {
        account.scope = scope.into();
        cache.token(&account, None).unwrap_err()
    };
    let e = fetch("bad-secret");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.starts_with("client secret wrong: put the secret's Value (not its Secret ID)"),
        "{text}"
    );
    assert!(text.contains("/secret"), "names the file: {text}");
    assert!(
        text.contains("Trace ID: 0d1e; Correlation ID: 9c2f"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !format!("{e:?}").contains(SECRET));
    let e = fetch("busy");
    assert!(e.is_transient());
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    let start = Instant::now();
    let e = fetch("slow");
    assert!(e.is_transient());
    assert!(e.to_string().contains("no answer within 1 s"), "{e}");
    assert!(start.elapsed() < Duration::from_millis(2400));
    assert!(matches!(fetch("garbage"), OAuthError::BadResponse { .. }));
    assert!(fetch("no-token").to_string().contains("no access_token"));

    // Nothing listens: unreachable, transient.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    account.token_endpoint = format!("http://127.0.0.1:{port}/t/oauth2/v2.0/token");
    let e = cache.token(&account, None).unwrap_err();
    assert!(matches!(e, OAuthError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[test]
fn unsafe_secret_file_is_refused_before_any_request() {
    let server = Server::start(|_| answer(1, 3600, None));
    let (dir, cfg) = setup(&server, "");
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let account = Account::for_user(&cfg, "u").unwrap();
    let e = TokenCache::new(&cfg).token(&account, None).unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains("chmod"), "{e}");
    assert_eq!(server.requests().len(), 0);
}

fn device_server(outcome: &'static str) -> (Server, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let p2 = polls.clone();
    let server = Server::start(move |r| {
        if r.path.ends_with("/devicecode") {
            assert_eq!(r.field("client_id"), CLIENT_ID);
            assert_eq!(
                r.field("scope"),
                "https://outlook.office.com/SMTP.Send offline_access"
            );
            return (
                200,
                serde_json::json!({
                    "device_code": "DC-123",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://microsoft.com/devicelogin",
                    "expires_in": 900,
                    "interval": 2,
                    "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate.",
                })
                .to_string(),
            );
        }
        assert_eq!(
            r.field("grant_type"),
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(r.field("device_code"), "DC-123");
        let pending = |code: &str| (400, format!(r#"{{"error":"{code}"}}"#));
        match p2.fetch_add(1, Ordering::SeqCst) {
            0 => pending("authorization_pending"),
            1 => pending("slow_down"),
            _ => match outcome {
                "ok" => answer(1, 3600, Some("rt-from-login")),
                "no-refresh" => answer(1, 3600, None),
                other => pending(other),
            },
        }
    });
    (server, polls)
}

#[test]
fn device_code_login_stores_the_refresh_token() {
    let (server, polls) = device_server("ok");
    let (dir, cfg) = setup(
        &server,
        "smtp_oauth2_client_secret_file =\n\
         smtp_oauth2_refresh_token_file = DIR/etc/ceo.rt\n\
         smtp_oauth2_scope = https://outlook.office.com/SMTP.Send\n",
    );
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let account = Account::for_user(&cfg, "ceo@contoso.com").unwrap();
    let cache = TokenCache::new(&cfg);
    let mut prompts = Vec::new();
    let start = Instant::now();
    let second = Duration::from_millis(20);
    let t = device::login(
        &cache,
        &account,
        &account.scope,
        |m| prompts.push(m.to_string()),
        second,
    )
    .unwrap();
    assert_eq!(number(&t), 1);
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(server.count("/devicecode"), 1);
    // interval 2, then 2 + 5 after slow_down: 2 + 2 + 7 "seconds".
    assert!(start.elapsed() >= second * 11, "{:?}", start.elapsed());
    assert_eq!(prompts.len(), 1);
    assert!(prompts[0].contains("ABCD-EFGH"), "{prompts:?}");
    let rt = dir.path().join("etc/ceo.rt");
    assert_eq!(std::fs::read_to_string(&rt).unwrap(), "rt-from-login\n");
    let m = std::fs::metadata(&rt).unwrap();
    if nix::unistd::geteuid().is_root() {
        // Like every secret file: root's, readable by mail_owner's group.
        let (_, gid) = crate::service::mail_owner_ids(&cfg).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, gid, 0o640));
    } else {
        assert_eq!(m.mode() & 0o7777, 0o600);
    }
    // The cache is primed: no request for the next token.
    let before = server.requests().len();
    let (same, from) = TokenCache::new(&cfg).get(&account, None).unwrap();
    assert_eq!((same, from), (t, Obtained::CacheFile));
    assert_eq!(server.requests().len(), before);
}

#[test]
fn device_code_login_failures() {
    let second = Duration::from_millis(5);
    for (outcome, want) in [
        ("access_denied", "declined"),
        ("expired_token", "code expired"),
        ("no-refresh", "no refresh token"),
    ] {
        let (server, _) = device_server(outcome);
        let (dir, cfg) = setup(
            &server,
            "smtp_oauth2_refresh_token_file = DIR/rt\nsmtp_oauth2_scope = https://outlook.office.com/SMTP.Send offline_access\n",
        );
        let account = Account::for_user(&cfg, "ceo@contoso.com").unwrap();
        let cache = TokenCache::new(&cfg);
        let e = device::login(&cache, &account, &account.scope, |_| {}, second).unwrap_err();
        assert!(e.to_string().contains(want), "{outcome}: {e}");
        assert!(!dir.path().join("rt").exists(), "{outcome}");
    }
    // No refresh token file: nowhere to keep the result.
    let (server, _) = device_server("ok");
    let (_dir, cfg) = setup(&server, "");
    let account = Account::for_user(&cfg, "ceo@contoso.com").unwrap();
    let e = device_code_login(&TokenCache::new(&cfg), &account, "x", |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("set smtp_oauth2_refresh_token_file"),
        "{e}"
    );
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn https_goes_through_native_tls() {
    use openssl::ssl::{SslAcceptor, SslMethod};
    // A TLS endpoint with a self-signed certificate: the client must check
    // it against the system's roots and refuse it — not panic for want of a
    // TLS provider (ureq's default is rustls, which postern does not build).
    let (cert, key) = make_cert(-1, 30);
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&openssl::x509::X509::from_pem(&cert).unwrap())
        .unwrap();
    b.set_private_key(&openssl::pkey::PKey::private_key_from_pem(&key).unwrap())
        .unwrap();
    let acceptor = b.build();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            let _ = acceptor.accept(s);
        }
    });
    let server = Server::start(|_| answer(1, 3600, None));
    let (_dir, cfg) = setup(&server, "");
    let mut account = Account::for_user(&cfg, "u").unwrap();
    account.token_endpoint = format!("https://127.0.0.1:{port}/t/oauth2/v2.0/token");
    let e = TokenCache::new(&cfg).token(&account, None).unwrap_err();
    assert!(matches!(e, OAuthError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(e.is_transient());
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn memory_only_without_a_cache_directory() {
    let server = Server::start(issuer(3600, Duration::ZERO));
    let (dir, cfg) = setup(&server, "smtp_oauth2_token_cache_directory =\n");
    let account = Account::for_user(&cfg, "u").unwrap();
    let cache = TokenCache::new(&cfg);
    assert!(!cache.has_files());
    assert_eq!(number(&cache.token(&account, None).unwrap()), 1);
    assert_eq!(number(&cache.token(&account, None).unwrap()), 1);
    assert_eq!(
        number(&TokenCache::new(&cfg).token(&account, None).unwrap()),
        2
    );
    assert!(!dir.path().join("data").exists(), "no files anywhere");
    let stray: Vec<_> = std::fs::read_dir(".")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock") || n.ends_with(".json") && n.len() == 69)
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

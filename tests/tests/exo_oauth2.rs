//! XOAUTH2 end to end (issue 4 part 1): the real postern programs deliver
//! to the fake Exchange Online (`smtp.office365.com` profile) with access
//! tokens from the fake Entra ID token endpoint.
//!
//! - client secret, certificate assertion (from `smtp_oauth2_account_maps`),
//!   refresh token with atomic rotation, and `postern oauth2 login` by
//!   device code;
//! - tokens that expire every 6 s under a steady stream of mail, through
//!   two delivery agent processes sharing the token cache;
//! - the token cache (mode 0600) surviving a restart;
//! - a `535` to XOAUTH2: one new token and one retry, then the route is
//!   held (never bounced) with an explanation;
//! - a token endpoint outage: mail deferred, then delivered;
//! - no secret or token in the maillog, ever.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_tests::ca::CertOptions;
use postern_tests::fake::jwt::Jwt;
use postern_tests::fake::token::JWT_BEARER;
use postern_tests::fake::{
    FakeConfig, FakeSmartHost, FakeTokenEndpoint, Fault, TokenConfig, TokenError, Xoauth2Policy,
};
use postern_tests::harness::{LogMark, TEST_USER, TestEnv, re, running_as_root};
use serde_json::{Value, json};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cr3t~Q8.client-secret-value_0123456789";
const MAILBOX: &str = TEST_USER;
const APP_SCOPE: &str = "https://outlook.office365.com/.default";
const DELEGATED_SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
const WAIT: Duration = Duration::from_secs(40);
/// An hour: tokens that stay fresh for the whole test.
const LONG: Duration = Duration::from_secs(3599);

/// postern, the fake Exchange Online and the fake token endpoint, wired
/// for XOAUTH2 as DESIGN §5 fixes the names.
struct Rig {
    env: TestEnv,
    fake: FakeSmartHost,
    ep: FakeTokenEndpoint,
    /// Secrets besides the issued access tokens that must never be logged.
    secrets: Vec<String>,
    sent: usize,
}

impl Rig {
    /// Access tokens live `lifetime`; `adjust` tunes the fake smart host.
    fn new(lifetime: Duration, adjust: impl FnOnce(FakeConfig) -> FakeConfig) -> Rig {
        let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(lifetime)).unwrap();
        let mut env = TestEnv::new().unwrap();
        let cfg = adjust(FakeConfig::office365(&env.pki.server).accept_tokens_from(&ep));
        let fake = FakeSmartHost::spawn(cfg).unwrap();
        env.use_relayhost(&fake).unwrap();
        // The password field is not used with XOAUTH2.
        let sasl = env
            .write_secret(
                "sasl_passwd",
                &format!("{} {MAILBOX}:xoauth2\n", fake.relayhost_name()),
            )
            .unwrap();
        env.set_many(&[
            (
                "smtp_sasl_password_maps",
                &format!("texthash:{}", sasl.display()),
            ),
            ("smtp_sasl_mechanism_filter", "xoauth2"),
            ("smtp_oauth2_token_endpoint", &ep.url(TENANT)),
            ("smtp_oauth2_client_id", APP),
            ("smtp_oauth2_timeout", "5s"),
        ])
        .unwrap();
        Rig {
            env,
            fake,
            ep,
            secrets: Vec::new(),
            sent: 0,
        }
    }

    /// App-only access with a client secret (`smtp_oauth2_client_secret_file`).
    fn with_client_secret(mut self) -> Rig {
        self.ep.register_app(APP, SECRET);
        let f = self
            .env
            .write_secret("oauth2_secret", &format!("{SECRET}\n"))
            .unwrap();
        self.env
            .set("smtp_oauth2_client_secret_file", &f.display().to_string())
            .unwrap();
        self.secrets.push(SECRET.into());
        self
    }

    /// Queues one message from the mailbox to `rcpt` with sendmail.
    fn send_to(&mut self, rcpt: &str) {
        self.sent += 1;
        let msg = format!(
            "From: Scanner <{MAILBOX}>\nTo: {rcpt}\nSubject: scan {}\n\npage {}\n",
            self.sent, self.sent
        );
        self.env
            .sendmail(&["-f", MAILBOX, rcpt], msg.as_bytes())
            .unwrap()
            .ok()
            .unwrap();
    }

    fn send(&mut self) {
        self.send_to("bob@contoso.test");
    }

    /// Waits until `n` messages were accepted by the fake and logged sent.
    fn wait_delivered(&self, n: usize) {
        self.fake.wait_messages(n, WAIT).unwrap();
        self.env
            .wait_log_count(LogMark(0), "status=sent", n, WAIT)
            .unwrap();
    }

    /// `smtp_oauth2_token_cache_directory` (its default).
    fn cache_dir(&self) -> PathBuf {
        self.env.root.join("data/oauth2")
    }

    /// The `.json` files in the cache directory: access tokens
    /// (`<key>.json`) and rotated refresh tokens (`rt-<hash>.json`).
    fn cache_files(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut all: Vec<PathBuf> = std::fs::read_dir(self.cache_dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        all.retain(|p| name_of(p).ends_with(".json"));
        all.sort();
        all.into_iter()
            .partition(|p| !name_of(p).starts_with("rt-"))
    }

    /// The one access-token cache file (`<key>.json`, not a rotated
    /// refresh token `rt-*.json`), checked: mode 0600 in a 0700 directory,
    /// owned by the delivery agents' account. Returns its JSON.
    fn cache_record(&self) -> Value {
        let (files, _) = self.cache_files();
        assert_eq!(files.len(), 1, "{files:?}");
        let m = std::fs::symlink_metadata(&files[0]).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o7777, 0o600, "{}", files[0].display());
        let d = std::fs::metadata(self.cache_dir()).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o700);
        assert_eq!(m.uid(), self.env.owner.uid.as_raw());
        assert_eq!(d.uid(), self.env.owner.uid.as_raw());
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap()
    }

    /// Token requests answered 200.
    fn good_requests(&self) -> usize {
        self.ep
            .requests()
            .iter()
            .filter(|r| r.status == 200)
            .count()
    }

    /// Neither the maillog nor the daemons' output holds a secret: the
    /// client secret, `extra` (refresh tokens, keys), any access token the
    /// endpoint issued, anything shaped like a JWT, a refresh token or an
    /// XOAUTH2 blob.
    fn assert_no_secrets(&self, extra: &[String]) {
        let texts = [
            ("maillog", self.env.log_text()),
            ("postern.out", self.env.output_text()),
        ];
        let issued: Vec<String> = self
            .ep
            .records()
            .issued
            .into_iter()
            .map(|t| t.access_token)
            .collect();
        assert!(!issued.is_empty(), "{}", self.ep.records().summary());
        let all = self.secrets.iter().chain(extra).chain(&issued);
        for (what, text) in &texts {
            for s in all.clone() {
                assert!(s.len() > 16, "{s:?} is too short to search for");
                // A token's signature part alone is a secret too.
                let tail = &s[s.len() - 16..];
                assert!(
                    !text.contains(s.as_str()) && !text.contains(tail),
                    "a secret is in the {what}"
                );
            }
            for (shape, pattern) in [
                ("a JWT", r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
                ("a refresh token", r"\b1\.[A-Za-z0-9_-]{40,}"),
                // base64("user=") starts every XOAUTH2 blob.
                ("an XOAUTH2 blob", r"dXNlcj[0-9A-Za-z+/]{20,}"),
            ] {
                assert!(
                    !re(pattern).matches(text),
                    "{shape} is in the {what}:\n{text}"
                );
            }
        }
    }

    fn diag(&self) -> String {
        format!(
            "{}\n{}\n--- log:\n{}",
            self.ep.records().summary(),
            self.fake.summary(),
            self.env.log_text()
        )
    }
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Writes a file holding a secret that the delivery agents may replace: in
/// a directory of theirs, owned by them (as root: `mail_owner`), mode 0600.
fn agent_owned_secret(env: &TestEnv, dir: &str, name: &str, contents: &str) -> PathBuf {
    let d = env.maildir(dir).unwrap();
    let p = d.join(name);
    std::fs::write(&p, contents).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(
            &p,
            Some(env.owner.uid.as_raw()),
            Some(env.owner.gid.as_raw()),
        )
        .unwrap();
    }
    p
}

fn read_token_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

// ---- (a) client secret, cache, restart -----------------------------------

#[test]
fn client_secret_token_is_cached_0600_and_survives_a_restart() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP)).with_client_secret();
    rig.env.start().unwrap();
    rig.send();
    rig.send();
    rig.wait_delivered(2);
    // One token for both messages, asked for as OFFICE365.md §4.2 says.
    let reqs = rig.ep.requests();
    assert_eq!(reqs.len(), 1, "{}", rig.diag());
    let r = &reqs[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(r.client_id.as_deref(), Some(APP));
    assert_eq!(r.field("client_secret"), Some("<redacted>"));
    assert_eq!(r.field("scope"), Some(APP_SCOPE));
    assert_eq!(r.field("client_assertion"), None);
    let token = rig.ep.records().issued[0].access_token.clone();
    for m in rig.fake.messages() {
        assert!(m.accepted());
        assert_eq!(m.auth_user.as_deref(), Some(MAILBOX));
        assert_eq!(m.auth_app.as_deref(), Some(APP));
    }
    let s = rig.fake.sessions();
    assert!(
        s.iter()
            .all(|s| s.auth_mechanism.as_deref() == Some("XOAUTH2"))
    );
    let counts = rig.fake.xoauth2_counts(MAILBOX);
    assert!(counts.successes >= 1 && counts.failures == 0, "{counts:?}");
    // The cache: mode 0600, the delivery agents' own, holding the token
    // (not the client secret).
    let rec = rig.cache_record();
    assert_eq!(rec["access_token"], json!(token));
    assert_eq!(rec["user"], json!(MAILBOX));
    assert!(!rec.to_string().contains(SECRET));

    // Restart: the cached token is still good, so no request is made.
    rig.env.stop().unwrap();
    rig.env.start().unwrap();
    rig.send();
    rig.wait_delivered(3);
    assert_eq!(rig.ep.requests().len(), 1, "{}", rig.diag());
    let last = rig.fake.xoauth2_attempts().pop().unwrap();
    assert!(last.ok, "{last:?}");
    // `postern oauth2 token` finds it in the cache too, and shows what it
    // says, never the token itself.
    let out = rig
        .env
        .postern(&["oauth2", "token", MAILBOX])
        .unwrap()
        .ok()
        .unwrap();
    assert!(out.stdout.contains("token:       from the cache "), "{out}");
    assert!(out.stdout.contains("roles:       SMTP.SendAsApp"), "{out}");
    assert!(
        out.stdout
            .contains("aud:         https://outlook.office365.com\n"),
        "{out}"
    );
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));
    assert_eq!(rig.ep.requests().len(), 1);
    // The cache file is still the agents' and still 0600.
    rig.cache_record();
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

// ---- (b) certificate assertion, per-account settings -----------------------

#[test]
fn certificate_assertion_from_the_account_table() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP));
    // main.cf names a secret the endpoint does not know; the mailbox's
    // entry in smtp_oauth2_account_maps names a certificate instead, which
    // replaces main.cf's client credential.
    let wrong = rig
        .env
        .write_secret("oauth2_secret", "not-the-registered-secret\n")
        .unwrap();
    let cert = rig
        .env
        .pki
        .ca
        .issue_with(
            "app",
            &["app.contoso.test"],
            &CertOptions {
                rsa: true,
                ..CertOptions::default()
            },
        )
        .unwrap();
    let cert_pem = String::from_utf8(cert.cert.to_pem().unwrap()).unwrap();
    let key_pem = String::from_utf8(cert.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let cert_file = rig.env.write_file("app.crt", &cert_pem).unwrap();
    let key_file = rig.env.write_secret("app.key", &key_pem).unwrap();
    let table = rig
        .env
        .write_file(
            "oauth2_accounts",
            &format!(
                "{MAILBOX}  client_certificate_file={} client_key_file={}\n",
                cert_file.display(),
                key_file.display()
            ),
        )
        .unwrap();
    rig.env
        .set_many(&[
            (
                "smtp_oauth2_client_secret_file",
                &wrong.display().to_string(),
            ),
            (
                "smtp_oauth2_account_maps",
                &format!("texthash:{}", table.display()),
            ),
        ])
        .unwrap();
    // Only the certificate is registered with the application.
    rig.ep.register_certificate(APP, &cert.cert);
    rig.env.start().unwrap();
    rig.send();
    rig.send();
    rig.wait_delivered(2);
    let reqs = rig.ep.requests();
    assert_eq!(reqs.len(), 1, "{}", rig.diag());
    let r = &reqs[0];
    assert_eq!(r.status, 200, "{}", rig.diag());
    assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(r.field("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(r.field("client_assertion"), Some("<redacted>"));
    assert_eq!(r.field("client_secret"), None);
    assert_eq!(r.field("scope"), Some(APP_SCOPE));
    // The endpoint verified the signature and thumbprint: the token says a
    // certificate authenticated the client.
    let token = rig.ep.records().issued[0].access_token.clone();
    let claims = rig.ep.verify(&token).unwrap();
    assert_eq!(claims["appidacr"], json!("2"));
    assert_eq!(claims["roles"], json!(["SMTP.SendAsApp"]));
    for m in rig.fake.messages() {
        assert_eq!(m.auth_app.as_deref(), Some(APP));
        assert_eq!(m.auth_user.as_deref(), Some(MAILBOX));
    }
    assert_eq!(rig.fake.xoauth2_counts(MAILBOX).failures, 0);
    rig.env.stop().unwrap();
    // The key's base64 body is a secret too.
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .take(2)
        .collect();
    rig.assert_no_secrets(&[key_body]);
}

// ---- (c) refresh token, rotated atomically ----------------------------------

#[test]
fn refresh_token_rotates_atomically_in_its_file() {
    const LIFETIME: u64 = 4;
    let mut rig = Rig::new(Duration::from_secs(LIFETIME), |c| c);
    rig.ep.register_public_client(APP);
    let rt0 = rig
        .ep
        .issue_refresh_token(APP, TENANT, MAILBOX, DELEGATED_SCOPE);
    // A file the delivery agents may replace (their directory, their file).
    let rt_file = agent_owned_secret(&rig.env, "oauth2-rt", "scanner.rt", &format!("{rt0}\n"));
    let rt_dir = rt_file.parent().unwrap().to_path_buf();
    rig.env
        .set_many(&[
            (
                "smtp_oauth2_refresh_token_file",
                &rt_file.display().to_string(),
            ),
            ("smtp_oauth2_scope", DELEGATED_SCOPE),
        ])
        .unwrap();
    // A reader that never sees the file half-written or missing: every
    // read is one whole refresh token.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, seen, p) = (stop.clone(), seen.clone(), rt_file.clone());
        // (About a thousand reads a second.)
        std::thread::spawn(move || {
            let shape = regex::Regex::new(r"^1\.[A-Za-z0-9_-]{64}\n$").unwrap();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = std::fs::read_to_string(&p).unwrap();
                assert!(shape.is_match(&t), "torn read: {:?}", t.len());
                let mut s = seen.lock().unwrap();
                if s.last() != Some(&t) {
                    s.push(t);
                }
                reads += 1;
                drop(s);
                std::thread::sleep(Duration::from_millis(1));
            }
            reads
        })
    };
    let before = std::fs::metadata(&rt_file).unwrap();
    rig.env.start().unwrap();
    rig.send();
    rig.wait_delivered(1);
    let rt1 = read_token_file(&rt_file);
    assert_ne!(rt1, rt0, "the rotated refresh token was not stored");
    let after = std::fs::metadata(&rt_file).unwrap();
    assert_ne!(after.ino(), before.ino(), "replaced by a rename");
    assert_eq!(after.mode() & 0o7777, 0o600, "mode kept");
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    // Once the access token is stale, the next message refreshes with the
    // new refresh token (the fake forgets rt0 when it rotates it: a reuse
    // would fail with invalid_grant).
    std::thread::sleep(Duration::from_secs(LIFETIME));
    rig.send();
    rig.wait_delivered(2);
    let rt2 = read_token_file(&rt_file);
    assert!(rt2 != rt1 && rt2 != rt0);
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 10, "{reads}");
    let seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(seen, vec![rt0.clone(), rt1.clone(), rt2.clone()]);
    let recs = rig.ep.records();
    let grants: Vec<(&str, u16)> = recs
        .requests
        .iter()
        .map(|r| (r.grant_type.as_deref().unwrap_or("-"), r.status))
        .collect();
    assert_eq!(
        grants,
        vec![("refresh_token", 200), ("refresh_token", 200)],
        "{}",
        rig.diag()
    );
    assert!(recs.requests.iter().all(|r| {
        r.field("scope") == Some(DELEGATED_SCOPE) && r.field("refresh_token") == Some("<redacted>")
    }));
    // rt0 and rt1 are gone at the endpoint; only rt2 is valid.
    assert_eq!(rig.ep.refresh_token_count(), 1);
    // Delegated tokens for the mailbox were used.
    for m in rig.fake.messages() {
        assert_eq!(m.auth_user.as_deref(), Some(MAILBOX));
    }
    for t in &recs.issued {
        // (Expired by now: read the claims without checking the lifetime.)
        let c = Jwt::parse(&t.access_token).unwrap().claims;
        assert_eq!(c["upn"], json!(MAILBOX));
        assert_eq!(c["scp"], json!("SMTP.Send"));
    }
    assert_eq!(rig.fake.xoauth2_counts(MAILBOX).failures, 0);
    // No temporary file left beside it; the rotated token went to the
    // file, so no copy was kept in the cache directory.
    let names: Vec<String> = std::fs::read_dir(&rt_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["scanner.rt".to_string()]);
    let (tokens, rotated) = rig.cache_files();
    assert!(
        rotated.is_empty() && tokens.len() == 1,
        "{rotated:?} {tokens:?}"
    );
    assert!(
        rig.env.log_grep("refresh token").is_empty(),
        "{:?}",
        rig.env.log_grep("refresh token")
    );
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[rt0, rt1, rt2]);
}

// ---- (d) postern oauth2 login: device code ----------------------------------

#[test]
fn device_code_login_writes_the_refresh_token_then_mail_flows() {
    const LIFETIME: u64 = 4;
    let mut rig = Rig::new(Duration::from_secs(LIFETIME), |c| c);
    rig.ep.register_public_client(APP);
    // As in production: a file in the configuration directory, which the
    // delivery agents may read but (as root) not replace.
    let rt_file = rig.env.etc.join("scanner.rt");
    rig.env
        .set_many(&[
            (
                "smtp_oauth2_refresh_token_file",
                &rt_file.display().to_string(),
            ),
            ("smtp_oauth2_scope", DELEGATED_SCOPE),
        ])
        .unwrap();
    // Before anyone signed in: mail waits, and the log says what to do.
    rig.env.start().unwrap();
    rig.send();
    let line = rig.env.wait_log("status=deferred", WAIT).unwrap();
    assert!(
        line.contains("postern oauth2 login") && line.contains("scanner.rt"),
        "{line}"
    );
    assert!(rig.fake.xoauth2_attempts().is_empty());

    // The admin signs in: the command shows the code, the "user" approves.
    let (out, info) = std::thread::scope(|s| {
        let env = &rig.env;
        let login = s.spawn(move || env.postern(&["oauth2", "login", MAILBOX]).unwrap());
        let info = rig.ep.wait_device_code(WAIT).unwrap();
        rig.ep.approve(&info.user_code, MAILBOX).unwrap();
        (login.join().unwrap(), info)
    });
    assert!(out.success(), "{out}");
    assert_eq!(info.client_id, APP);
    assert_eq!(info.tenant, TENANT);
    assert!(
        info.scope.contains("SMTP.Send") && info.scope.contains("offline_access"),
        "{}",
        info.scope
    );
    assert!(out.stdout.contains(&info.user_code), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "postern oauth2: stored the refresh token in {}",
            rt_file.display()
        )),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("upn:         {MAILBOX}")),
        "{out}"
    );
    let rt1 = read_token_file(&rt_file);
    assert!(rt1.starts_with("1."), "the file holds no refresh token");
    assert!(!out.stdout.contains(&rt1) && !out.stderr.contains(&rt1));
    let m = std::fs::metadata(&rt_file).unwrap();
    if running_as_root() {
        // root:<mail_owner's group> 0640: the agents read it.
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), (0, rig.env.owner.gid.as_raw()));
    } else {
        assert_eq!(m.mode() & 0o7777, 0o600);
    }
    assert_eq!(rig.ep.count_grant("devicecode"), 1);

    // The deferred message goes out with the sign-in's access token.
    let mark = rig.env.log_mark();
    rig.env.postqueue(&["-f"]).unwrap().ok().unwrap();
    rig.wait_delivered(1);
    rig.env.wait_log_since(mark, "removed", WAIT).unwrap();
    let device_token = rig.ep.records().issued[0].clone();
    assert_eq!(
        device_token.grant_type,
        "urn:ietf:params:oauth:grant-type:device_code"
    );
    assert_eq!(rig.ep.count_grant("refresh_token"), 0, "{}", rig.diag());

    // The access token goes stale: the refresh token from the sign-in is
    // used and rotated, and the rotated one is used next time.
    for round in 1..=2 {
        std::thread::sleep(Duration::from_secs(LIFETIME));
        rig.send();
        rig.wait_delivered(1 + round);
        assert_eq!(rig.ep.count_grant("refresh_token"), round as u64);
    }
    let recs = rig.ep.records();
    assert!(recs.failures().is_empty(), "{}", rig.diag());
    assert_eq!(rig.ep.refresh_token_count(), 1);
    assert_eq!(rig.fake.xoauth2_counts(MAILBOX).failures, 0);
    let mut rts = vec![rt1.clone()];
    if running_as_root() {
        // The agents could not replace the root-owned file: they keep the
        // rotated token in the cache directory, mode 0600, and say so.
        assert_eq!(read_token_file(&rt_file), rt1);
        let (_, copies) = rig.cache_files();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let m = std::fs::metadata(&copies[0]).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        let j: Value = serde_json::from_slice(&std::fs::read(&copies[0]).unwrap()).unwrap();
        rts.push(j["refresh_token"].as_str().unwrap().to_string());
        let warn = rig.env.log_grep("cannot replace the refresh token file");
        // Said once, not at every rotation.
        assert_eq!(warn.len(), 1, "{}", rig.diag());
        assert!(
            warn[0].contains(&rt_file.display().to_string()),
            "{}",
            warn[0]
        );
    } else {
        let now = read_token_file(&rt_file);
        assert_ne!(now, rt1);
        rts.push(now);
    }
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&rts);
}

// ---- short-lived tokens under steady load -----------------------------------

#[test]
fn tokens_expiring_every_6s_under_steady_load() {
    const LIFETIME: f64 = 6.0;
    const RUN: Duration = Duration::from_secs(32);
    let mut rig = Rig::new(Duration::from_secs(LIFETIME as u64), |c| {
        c.service_principal(APP)
            .message_rate(10_000, Duration::from_secs(60))
    })
    .with_client_secret();
    // Half the mail through the `relay` service: two delivery agent
    // processes share the token cache. No connection reuse: every message
    // signs in with whatever token is current.
    let relay = rig
        .env
        .write_file(
            "transport",
            &format!("fabrikam.test relay:{}\n", rig.fake.relayhost_name()),
        )
        .unwrap();
    rig.env
        .set_many(&[
            ("smtp_oauth2_refresh_margin", "2s"),
            ("smtp_connection_cache_on_demand", "no"),
            ("smtp_account_rate_limit", "10000/60s"),
            ("transport_maps", &format!("texthash:{}", relay.display())),
        ])
        .unwrap();
    rig.env.start().unwrap();
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < RUN {
        i += 1;
        rig.send_to(if i % 2 == 0 {
            "bob@contoso.test"
        } else {
            "alice@fabrikam.test"
        });
        let next = Duration::from_millis(500) * i;
        if let Some(d) = next.checked_sub(t0.elapsed()) {
            std::thread::sleep(d);
        }
    }
    let n = rig.sent;
    rig.wait_delivered(n);
    let attempts = rig.fake.xoauth2_attempts();
    let failed: Vec<_> = attempts.iter().filter(|a| !a.ok).collect();
    assert!(
        failed.is_empty(),
        "XOAUTH2 failures: {failed:?}\n{}",
        rig.diag()
    );
    assert_eq!(rig.fake.xoauth2_counts(MAILBOX).failures, 0);
    // Every message signed in on its own connection.
    assert!(
        attempts.len() >= n,
        "{} sign-ins for {n} messages",
        attempts.len()
    );
    // Both agents delivered.
    let pids: HashSet<String> = rig
        .env
        .log_grep("status=sent")
        .iter()
        .filter_map(|l| {
            let i = l.find("postern/")?;
            Some(l[i..].split(':').next()?.to_string())
        })
        .collect();
    assert!(pids.len() >= 2, "{pids:?}");

    // Token requests: one per expiry, shared by both processes.
    let reqs = rig.ep.requests();
    assert!(reqs.iter().all(|r| r.status == 200), "{}", rig.diag());
    let first = reqs[0].at;
    let last_auth = attempts.last().unwrap().at;
    let span = last_auth.duration_since(first).unwrap().as_secs_f64();
    // A token is reused until min(margin 2 s, a quarter of its lifetime)
    // remains. Its lifetime counts to its `exp`, which the endpoint stamps
    // in whole seconds: 5 to 6 s from the request, so it is reused for
    // 3.75 to 4.5 s. Two requests closer than that mean a token was
    // fetched twice (by both agents, or per message).
    let fresh_for = 0.75 * (LIFETIME - 1.0);
    let gaps: Vec<f64> = reqs
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).unwrap().as_secs_f64())
        .collect();
    let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let max_requests = (span / fresh_for).floor() as usize + 1;
    // Mail flows every 0.5 s: each 6 s stretch needs a token of its own.
    let min_requests = (span / LIFETIME).floor() as usize;
    eprintln!(
        "steady load: {n} messages, {} sign-ins, {} token requests in {span:.1} s (allowed {min_requests}..={max_requests}), gaps {gaps:.2?}",
        attempts.len(),
        reqs.len()
    );
    assert!(
        min_gap >= fresh_for - 0.25,
        "gaps {gaps:.2?}\n{}",
        rig.diag()
    );
    assert!(
        (min_requests..=max_requests).contains(&reqs.len()),
        "{} token requests in {span:.1} s, expected {min_requests}..={max_requests}",
        reqs.len()
    );
    assert!(
        reqs.len() * 4 <= n,
        "{} token requests for {n} messages",
        reqs.len()
    );
    assert_eq!(rig.fake.violations(), 0, "{}", rig.fake.summary());
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

// ---- 535: refresh once, retry once, then hold --------------------------------

/// Exchange's decision with two knobs: tokens revoked one by one, and a
/// switch that refuses every token (say, the service principal was
/// removed).
#[derive(Default)]
struct Revocations {
    tokens: HashSet<String>,
    all: bool,
}

#[test]
fn xoauth2_535_gets_one_new_token_and_one_retry_then_the_route_is_held() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP)).with_client_secret();
    // Every message on a new connection, so each one signs in.
    rig.env
        .set_many(&[
            ("smtp_account_hold_retry_time", "1h"),
            ("smtp_connection_cache_on_demand", "no"),
        ])
        .unwrap();
    let policy = Xoauth2Policy::exchange(rig.ep.verifier());
    let revoked = Arc::new(Mutex::new(Revocations::default()));
    {
        let revoked = revoked.clone();
        rig.fake.set_xoauth2(Arc::new(move |user, token| {
            let r = revoked.lock().unwrap();
            if r.all {
                return Err(TokenError::Permission("service principal removed".into()));
            }
            if r.tokens.contains(token) {
                return Err(TokenError::Permission("token revoked".into()));
            }
            policy.check(user, token)
        }));
    }
    rig.env.start().unwrap();
    rig.send();
    rig.wait_delivered(1);
    assert_eq!(rig.good_requests(), 1);

    // The cached token is revoked at Exchange: 535, a new token, a retry
    // on the same connection, delivered.
    let t1 = rig.ep.records().issued[0].access_token.clone();
    revoked.lock().unwrap().tokens.insert(t1);
    let mark = rig.env.log_mark();
    rig.send();
    rig.wait_delivered(2);
    assert_eq!(rig.good_requests(), 2, "{}", rig.diag());
    let a = rig.fake.xoauth2_attempts();
    assert_eq!(a.len(), 3, "{a:?}");
    assert!(a[0].ok && !a[1].ok && a[2].ok, "{a:?}");
    assert_eq!(a[1].session, a[2].session, "retried on the same connection");
    assert!(
        a[1].reply.as_deref().unwrap().starts_with("535 5.7.3 "),
        "{a:?}"
    );
    rig.env
        .wait_log_since(
            mark,
            format!(
                "XOAUTH2 token for {MAILBOX} refused by localhost[127.0.0.1]; fetching a new one and trying once more"
            ),
            WAIT,
        )
        .unwrap();
    assert!(rig.env.log_grep("held").is_empty(), "{}", rig.diag());

    // Now every token is refused: one more token, one more try, then the
    // mail is deferred (not bounced) and the route held with the reason.
    revoked.lock().unwrap().all = true;
    let mark = rig.env.log_mark();
    rig.send();
    let line = rig
        .env
        .wait_log_since(mark, "status=deferred", WAIT)
        .unwrap();
    assert!(
        line.contains("SASL authentication failed")
            && line.contains("535 5.7.3 Authentication unsuccessful"),
        "{line}"
    );
    rig.env
        .wait_log_since(mark, "explanation: Authentication failed", WAIT)
        .unwrap();
    let held = rig
        .env
        .wait_log_since(
            mark,
            re(r"deliveries held, next try in 1h: .*535 5\.7\.3"),
            WAIT,
        )
        .unwrap();
    assert!(held.contains(MAILBOX), "{held}");
    assert_eq!(
        rig.good_requests(),
        3,
        "one new token, no more: {}",
        rig.diag()
    );
    let a = rig.fake.xoauth2_attempts();
    assert_eq!(a.len(), 5, "{a:?}");
    assert!(
        !a[3].ok && !a[4].ok && a[3].session == a[4].session,
        "{a:?}"
    );
    // While held, nothing is tried: mail queued meanwhile waits too.
    rig.send();
    rig.env
        .wait_log_since(mark, "delivery held until", WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rig.fake.xoauth2_attempts().len(), 5, "{}", rig.diag());
    assert_eq!(
        rig.fake.sessions().len(),
        a.iter().map(|x| x.session).collect::<HashSet<_>>().len()
    );
    assert_eq!(rig.good_requests(), 3);
    assert_eq!(rig.env.queue_files("deferred").len(), 2, "{}", rig.diag());
    let q = rig.env.mailq().unwrap().stdout;
    assert!(q.contains("535 5.7.3 Authentication unsuccessful"), "{q}");
    assert!(
        rig.env.log_grep("status=bounced").is_empty(),
        "{}",
        rig.diag()
    );

    // The admin fixes Exchange and flushes: both go out, nothing bounced.
    revoked.lock().unwrap().all = false;
    rig.env.postqueue(&["-f"]).unwrap().ok().unwrap();
    rig.wait_delivered(4);
    assert!(
        rig.env.log_grep("status=bounced").is_empty(),
        "{}",
        rig.diag()
    );
    assert!(rig.fake.messages().iter().all(|m| !m.mail_from.is_empty()));
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

// ---- token endpoint outage -----------------------------------------------------

#[test]
fn token_endpoint_outage_defers_then_delivers() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP)).with_client_secret();
    rig.ep.stop().unwrap();
    rig.env.start().unwrap();
    rig.send();
    rig.send();
    // Down: deferred with the reason, retried, never bounced, and no
    // sign-in without a token.
    rig.env
        .wait_log_count(LogMark(0), "status=deferred", 3, WAIT)
        .unwrap();
    let lines = rig.env.log_grep("status=deferred");
    assert!(
        lines[0].contains(&format!(
            "cannot reach the token endpoint {}",
            rig.ep.url(TENANT)
        )),
        "{}",
        lines[0]
    );
    assert!(rig.fake.xoauth2_attempts().is_empty(), "{}", rig.diag());
    assert!(rig.fake.messages().is_empty());
    // Back, but answering 503 once and then dropping a connection.
    let mark = rig.env.log_mark();
    rig.ep.fail_next(1, Fault::Status(503));
    rig.ep.fail_next(1, Fault::Drop);
    rig.ep.start().unwrap();
    rig.wait_delivered(2);
    let deferred = rig.env.log_grep("status=deferred");
    let since: Vec<String> = rig
        .env
        .log_text()
        .get(mark.0 as usize..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("status=deferred"))
        .map(str::to_string)
        .collect();
    assert!(
        since.iter().any(|l| l.contains("is unavailable (HTTP 503")),
        "{since:?}\n{}",
        rig.diag()
    );
    let recs = rig.ep.records();
    let statuses: Vec<u16> = recs.requests.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(&statuses[..2], &[503, 0], "{statuses:?}");
    assert!(
        rig.env.log_grep("status=bounced").is_empty(),
        "{deferred:?}"
    );
    assert_eq!(rig.fake.messages().len(), 2);
    assert_eq!(rig.fake.xoauth2_counts(MAILBOX).failures, 0);
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

// ---- a refused client credential holds the route ---------------------------

/// The token endpoint refuses the client secret (expired or deleted in
/// Entra ID): no retry can help until the admin acts, so the route is held
/// with the endpoint's answer, later mail waits without new token requests,
/// and after the fix `postqueue -f` delivers everything. Nothing bounces.
#[test]
fn a_refused_client_secret_holds_the_route_until_fixed() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP)).with_client_secret();
    rig.env
        .set_many(&[
            ("smtp_account_hold_retry_time", "1h"),
            ("minimal_backoff_time", "1s"),
        ])
        .unwrap();
    rig.ep.remove_secret(APP, SECRET);
    rig.env.start().unwrap();
    rig.send();
    let held = rig.env.wait_log("deliveries held", WAIT).unwrap();
    assert!(held.contains("OAuth2 token for"), "{held}\n{}", rig.diag());
    let refused = rig.ep.requests().len();
    assert!(refused >= 1, "{}", rig.diag());
    // Later mail waits with the reason; no new token request, no sign-in.
    rig.send();
    rig.send();
    rig.env
        .wait_log_count(LogMark(0), "delivery held until", 2, WAIT)
        .unwrap();
    let mailq = rig.env.mailq().unwrap().stdout;
    assert!(mailq.contains("delivery held until"), "{mailq}");
    assert_eq!(rig.ep.requests().len(), refused, "{}", rig.diag());
    assert!(rig.fake.xoauth2_attempts().is_empty(), "{}", rig.diag());
    // The admin adds a new secret value to the file's application.
    rig.ep.register_app(APP, SECRET);
    rig.env.postqueue(&["-f"]).unwrap().ok().unwrap();
    rig.wait_delivered(3);
    assert!(rig.env.log_grep("status=bounced").is_empty());
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

// ---- plain http only on loopback -------------------------------------------

#[test]
fn plain_http_token_endpoint_only_on_loopback() {
    let mut rig = Rig::new(LONG, |c| c.service_principal(APP)).with_client_secret();
    // The fake endpoint's port, but a documentation address: refused before
    // any connection is tried, whatever the host.
    let remote = format!(
        "http://192.0.2.10:{}/{TENANT}/oauth2/v2.0/token",
        rig.ep.port()
    );
    rig.env.set("smtp_oauth2_token_endpoint", &remote).unwrap();
    let out = rig.env.postern(&["oauth2", "token", MAILBOX]).unwrap();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("plain http is allowed only on a loopback address"),
        "{out}"
    );
    rig.env.start().unwrap();
    rig.send();
    let line = rig.env.wait_log("status=deferred", WAIT).unwrap();
    assert!(
        line.contains(&format!(
            "smtp_oauth2_token_endpoint {remote}: plain http is allowed only on a loopback address"
        )),
        "{line}"
    );
    assert!(rig.ep.requests().is_empty());
    assert!(rig.fake.xoauth2_attempts().is_empty());
    // `localhost` is loopback: after a reload the mail goes out.
    rig.env
        .set(
            "smtp_oauth2_token_endpoint",
            &format!(
                "http://localhost:{}/{TENANT}/oauth2/v2.0/token",
                rig.ep.port()
            ),
        )
        .unwrap();
    rig.env.reload().unwrap();
    rig.env.postqueue(&["-f"]).unwrap().ok().unwrap();
    rig.wait_delivered(1);
    assert_eq!(rig.good_requests(), 1);
    assert!(rig.env.log_grep("status=bounced").is_empty());
    rig.env.stop().unwrap();
    rig.assert_no_secrets(&[]);
}

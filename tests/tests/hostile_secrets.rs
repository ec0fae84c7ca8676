//! Secrets never leak: with password AUTH (inbound and to the smart host)
//! and with XOAUTH2 (client secret, access tokens), after a workload that
//! includes failed logins and token endpoint errors, nothing postern writes
//! — the log, the daemons' output, `postconf`, `postconf -n`, `mailq`,
//! `postqueue -j`, `postern status`, `postern check`, `postern diagnose`,
//! `postern oauth2 token`, the crash messages of daemons killed with
//! SIGSEGV and SIGABRT, and a core file of the supervisor killed with
//! SIGABRT (when /proc/sys/kernel/core_pattern writes core files to the
//! working directory) — contains a password, token or client secret, in
//! plain, base64, AUTH PLAIN or XOAUTH2 form. The daemons themselves are
//! not dumpable, so they leave no core file to scan. The scan is the harness's
//! (`harness::secrets`, also run when every TestEnv is dropped); the last
//! test proves it fires.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use postern_tests::fake::{FakeTokenEndpoint, Fault, TokenConfig};
use postern_tests::harness::{TEST_PASSWORD, TEST_USER, TestEnv, re, running_as_root};
use postern_tests::sync_client::Smtp;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// The two workload tests change this process's RLIMIT_CORE around
/// `start()`: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
const INBOUND_USER: &str = "webapp@contoso.test";
const INBOUND_PASSWORD: &str = "S3cret-app-pass";

/// Inbound AUTH (TLS, one user), mynetworks 127.0.0.1 only, a listener;
/// mail for deferred.test waits in the queue (closed port).
fn inbound(env: &mut TestEnv) -> u16 {
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
    env.route_to_closed_port("deferred.test").unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.create_queue().unwrap();
    env.add_sasl_user(INBOUND_USER, INBOUND_PASSWORD).unwrap();
    port
}

/// The core file limit this process had, when the test raised it.
struct CoreLimit(Option<(u64, u64)>);

impl CoreLimit {
    /// As root, raises RLIMIT_CORE for the postern started next (daemons
    /// run as mail_owner and are not dumpable; the supervisor is).
    /// Otherwise leaves it as it is.
    fn raise() -> CoreLimit {
        if !running_as_root() {
            return CoreLimit(None);
        }
        let old = getrlimit(Resource::RLIMIT_CORE).unwrap();
        let inf = nix::libc::RLIM_INFINITY;
        if setrlimit(Resource::RLIMIT_CORE, inf, inf).is_err() {
            let _ = setrlimit(Resource::RLIMIT_CORE, old.1, old.1);
        }
        CoreLimit(Some(old))
    }
}

impl Drop for CoreLimit {
    fn drop(&mut self) {
        if let Some((soft, hard)) = self.0 {
            let _ = setrlimit(Resource::RLIMIT_CORE, soft, hard);
        }
    }
}

/// Logs in over STARTTLS from 127.0.0.2 — a wrong password, AUTH LOGIN
/// and AUTH PLAIN — and sends one message to `rcpt`.
fn authenticated_message(port: u16, rcpt: &str, subject: &str) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO app.lan").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO app.lan").unwrap();
    let r = c.auth_plain(INBOUND_USER, "Wrong-password-1").unwrap();
    assert_eq!(r.code, 535, "{r}");
    assert_eq!(c.cmd("AUTH LOGIN").unwrap().code, 334);
    assert_eq!(c.cmd(&b64(INBOUND_USER)).unwrap().code, 334);
    let r = c.cmd(&b64(INBOUND_PASSWORD)).unwrap();
    assert_eq!(r.code, 235, "{r}");
    c.cmd("MAIL FROM:<webapp@contoso.test>").unwrap();
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).unwrap().code, 250);
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.cmd("QUIT").unwrap();
    // AUTH PLAIN, right away.
    let (mut c, _) = Smtp::connect(port, Some("127.0.0.2")).unwrap();
    c.cmd("EHLO app.lan").unwrap();
    c.starttls().unwrap();
    c.cmd("EHLO app.lan").unwrap();
    let r = c.auth_plain(INBOUND_USER, INBOUND_PASSWORD).unwrap();
    assert_eq!(r.code, 235, "{r}");
    c.cmd("QUIT").unwrap();
}

/// Runs the tools whose output an admin pastes into a ticket; returns
/// (command, output). `extra` are more `postern` commands.
fn tools(env: &TestEnv, extra: &[&[&str]]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut keep = |name: &str, o: postern_tests::harness::Output| {
        out.push((name.to_string(), format!("{}{}", o.stdout, o.stderr)));
    };
    keep("postconf", env.postconf(&[]).unwrap());
    keep("postconf -n", env.postconf(&["-n"]).unwrap());
    keep("mailq", env.mailq().unwrap());
    keep("postqueue -p", env.postqueue(&["-p"]).unwrap());
    keep("postqueue -j", env.postqueue(&["-j"]).unwrap());
    let mut postern: Vec<&[&str]> = vec![
        &["status"],
        &["status", "--json"],
        &["check"],
        &["passwd", "list"],
        &["diagnose", "--to", "someone@elsewhere.test"],
    ];
    postern.extend_from_slice(extra);
    for args in postern {
        keep(
            &format!("postern {}", args.join(" ")),
            env.postern(args).unwrap(),
        );
    }
    out
}

/// Kills `prog` with `sig` and waits for the supervisor to log it and to
/// start a new one.
fn crash(env: &TestEnv, prog: &str, sig: Signal) {
    let pid = env.daemon_pid(prog).unwrap_or_else(|| panic!("no {prog}"));
    // Rust's runtime catches the first SIGSEGV to report stack overflows
    // (a SIGSEGV that kill(2) sent is not a fault, so the process goes on,
    // with the default action restored): send it until the process is gone.
    let deadline = Instant::now() + WAIT;
    while kill(Pid::from_raw(pid), sig).is_ok() {
        assert!(Instant::now() < deadline, "{prog}[{pid}] survives {sig}");
        std::thread::sleep(Duration::from_millis(300));
    }
    env.wait_log(
        re(&format!(
            r"pid {pid} (exit status \d+|killed by signal {})",
            sig as i32
        )),
        WAIT,
    )
    .unwrap();
    env.wait_daemon_restart(prog, pid, WAIT).unwrap();
}

/// Asserts that the running `prog` is not dumpable: the kernel then gives
/// the files in /proc/PID (not the directory itself) to root, whoever the
/// process runs as. That holds when the
/// tests run as an ordinary user too, where no privilege switch clears the
/// flag and only the daemon's own prctl does.
fn assert_not_dumpable(env: &TestEnv, prog: &str) {
    use std::os::unix::fs::MetadataExt;
    let pid = env.daemon_pid(prog).unwrap_or_else(|| panic!("no {prog}"));
    let file = format!("/proc/{pid}/environ");
    let uid = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .uid();
    assert_eq!(
        uid, 0,
        "{prog}[{pid}] is dumpable (a core file could hold secrets): {file} belongs to uid {uid}"
    );
}

/// Aborts the supervisor (SIGABRT); returns the core files in the test
/// directory afterwards, and whether one was expected.
fn abort_supervisor(env: &mut TestEnv) -> (Vec<std::path::PathBuf>, bool) {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    let pid = env.master_pid().unwrap();
    let limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap_or_default();
    // A plain relative pattern writes into the working directory (ours:
    // the test directory); a pipe or an absolute path goes elsewhere.
    let expected =
        running_as_root() && limit != "0" && !pattern.starts_with('|') && !pattern.starts_with('/');
    kill(Pid::from_raw(pid), Signal::SIGABRT).unwrap();
    let deadline = Instant::now() + WAIT;
    while env.is_running() {
        assert!(Instant::now() < deadline, "the supervisor did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The kernel writes the core before the parent can reap: it is there.
    let cores: Vec<_> = postern_tests::harness::secrets::files_to_scan(&env.root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("core"))
        })
        .collect();
    for c in &cores {
        eprintln!(
            "core file {} ({} bytes)",
            c.display(),
            std::fs::metadata(c).map(|m| m.len()).unwrap_or(0)
        );
    }
    eprintln!(
        "core_pattern {pattern:?}, the supervisor's core size limit {limit}: {} core file(s)",
        cores.len()
    );
    (cores, expected)
}

/// Asserts that none of `outputs` holds a registered secret.
fn assert_clean(env: &TestEnv, outputs: &[(String, String)]) {
    let mut hits = Vec::new();
    for (name, text) in outputs {
        hits.extend(
            env.secrets()
                .scan_bytes(Path::new(&format!("<{name}>")), text.as_bytes()),
        );
    }
    // The scan reads the log, the daemons' output, the commands' output
    // and the core files.
    let files = postern_tests::harness::secrets::files_to_scan(&env.root);
    for want in ["maillog", "postern.out", "commands.out"] {
        assert!(
            files.iter().any(|f| f.ends_with(want)),
            "{want} is not scanned: {files:?}"
        );
    }
    hits.extend(env.secret_hits());
    let list: Vec<String> = hits.iter().map(ToString::to_string).collect();
    assert!(hits.is_empty(), "secrets leaked:\n{}", list.join("\n"));
}

#[test]
fn no_secret_leaks_with_password_auth() {
    let _serial = serial();
    let core_limit = CoreLimit::raise();
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = inbound(&mut env);
    env.start().unwrap();
    drop(core_limit);
    authenticated_message(port, "customer@elsewhere.test", "relayed");
    authenticated_message(port, "someone@deferred.test", "waits");
    fake.wait_messages(1, WAIT).unwrap();
    env.wait_log(re(r"to=<someone@deferred\.test>.*status=deferred"), WAIT)
        .unwrap();
    let names = env.secrets().names();
    assert!(
        names.contains(&format!("password of {INBOUND_USER}"))
            && names.contains(&format!("password of {TEST_USER}")),
        "{names:?}"
    );
    for prog in ["smtpd", "pickup", "qmgr", "smtp"] {
        assert_not_dumpable(&env, prog);
    }
    let outputs = tools(&env, &[]);
    crash(&env, "smtp", Signal::SIGSEGV);
    crash(&env, "qmgr", Signal::SIGABRT);
    // The relay still works after the crashes.
    authenticated_message(port, "again@elsewhere.test", "after the crash");
    fake.wait_messages(2, WAIT).unwrap();
    let (cores, expected) = abort_supervisor(&mut env);
    assert!(
        !expected || !cores.is_empty(),
        "the supervisor left no core file"
    );
    assert_clean(&env, &outputs);
    // The password really was on the wire: the fake saw it.
    assert!(fake.summary().contains(TEST_USER), "{}", fake.summary());
    let _ = TEST_PASSWORD;
}

#[test]
fn no_secret_leaks_with_xoauth2() {
    let _serial = serial();
    let core_limit = CoreLimit::raise();
    let ep = FakeTokenEndpoint::spawn(TokenConfig::for_tests(Duration::from_secs(3600))).unwrap();
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_xoauth2_fake(&ep).unwrap();
    let port = inbound(&mut env);
    // The first token request fails: its error is logged.
    ep.fail_next(1, Fault::Status(503));
    env.start().unwrap();
    drop(core_limit);
    authenticated_message(port, "customer@elsewhere.test", "relayed");
    authenticated_message(port, "someone@deferred.test", "waits");
    fake.wait_messages(1, WAIT).unwrap();
    let records = ep.records();
    assert!(!records.issued.is_empty(), "{}", records.summary());
    assert!(records.failures().len() == 1, "{}", records.summary());
    let outputs = tools(
        &env,
        &[
            &["oauth2", "token", TEST_USER],
            &["oauth2", "token", "--refresh", TEST_USER],
        ],
    );
    crash(&env, "smtp", Signal::SIGSEGV);
    crash(&env, "qmgr", Signal::SIGABRT);
    authenticated_message(port, "again@elsewhere.test", "after the crash");
    fake.wait_messages(2, WAIT).unwrap();
    let names = env.secrets().names();
    // (The endpoint's client secret is the one in oauth2_secret.)
    for want in ["access token", "oauth2_secret"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not registered: {names:?}"
        );
    }
    let (cores, expected) = abort_supervisor(&mut env);
    assert!(
        !expected || !cores.is_empty(),
        "the supervisor left no core file"
    );
    assert_clean(&env, &outputs);
}

/// The scan is not a formality: a secret planted in the log is found, by
/// `secret_hits` and by the check every TestEnv runs when dropped, which
/// names the file and the secret but not its value. (The panic message
/// about `planted@secret.test` in this test's output is expected.)
#[test]
fn the_scan_fires_on_a_planted_secret() {
    const USER: &str = "planted@secret.test";
    const PASSWORD: &str = "Planted-Pa55word";
    let env = TestEnv::new().unwrap();
    env.add_sasl_user(USER, PASSWORD).unwrap();
    assert!(env.secret_hits().is_empty());
    let line = format!(
        "Nov 22 12:00:00 relay postern/smtpd[1]: debug: AUTH PLAIN {}\n",
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"))
        }
    );
    std::fs::write(&env.maillog, line).unwrap();
    let hits = env.secret_hits();
    assert!(
        hits.iter()
            .any(|h| h.form == "AUTH PLAIN" && h.file == env.maillog),
        "{hits:?}"
    );
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(env)))
        .expect_err("dropping the environment must fail the test");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("maillog") && msg.contains(&format!("password of {USER}")),
        "{msg}"
    );
    assert!(!msg.contains(PASSWORD), "the message shows the secret");
}

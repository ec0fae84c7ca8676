//! Dialogue tests: whole deliveries through [`Agent::deliver`] against the
//! scripted server of [`crate::testkit`] over loopback TCP, checking what
//! the client sent and the per-recipient results.

use crate::cache::Key;
use crate::delivery::Agent;
use crate::settings::TlsLevel;
use crate::testkit::{DnsServer, EHLO_PRE_TLS, FakeConn, FakeServer, Pki};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use queue::deliver::{RcptRequest, Request, Response, Status};
use queue::{Envelope, Recipient};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Exchange's EHLO without STARTTLS (plaintext tests).
const EHLO_PLAIN: &[&str] = &[
    "250-fake.outlook.test Hello [127.0.0.1]",
    "250-SIZE 157286400",
    "250-PIPELINING",
    "250-DSN",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250 SMTPUTF8",
];

const EHLO_TLS_AUTH: &[&str] = &[
    "250-fake.outlook.test Hello [127.0.0.1]",
    "250-SIZE 157286400",
    "250-PIPELINING",
    "250-AUTH LOGIN PLAIN",
    "250 8BITMIME",
];

const CONTENT: &[u8] = b"From: scan@contoso.com\r\nTo: bob@contoso.com\r\nSubject: scan\r\n\r\nhello\r\n.hidden dot\r\n";

/// A test configuration: short time limits, no session caching, the
/// given TLS level.
fn config(level: &str) -> conf::Config {
    let mut c = conf::Config::defaults();
    c.smtp_tls_security_level = level.into();
    c.smtp_helo_name = "relay.test".into();
    c.myhostname = "relay.test".into();
    let t = Duration::from_secs(5);
    c.smtp_connect_timeout = t;
    c.smtp_helo_timeout = t;
    c.smtp_starttls_timeout = t;
    c.smtp_mail_timeout = t;
    c.smtp_rcpt_timeout = t;
    c.smtp_data_init_timeout = t;
    c.smtp_data_xfer_timeout = t;
    c.smtp_data_done_timeout = t;
    c.smtp_quit_timeout = t;
    c.smtp_connection_cache_on_demand = false;
    c
}

struct Queued {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn queue_file(sender: &str, rcpts: &[&str], content: &[u8]) -> Queued {
    let dir = tempfile::tempdir().unwrap();
    let env = Envelope {
        arrival: SystemTime::now(),
        sender: sender.into(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                addr: r.to_string(),
                orcpt: Some(format!("rfc822;{r}")),
                notify: Some("FAILURE".into()),
                ..Recipient::default()
            })
            .collect(),
        attrs: vec![("body".into(), "8BITMIME".into())],
    };
    let id = queue::write::write_message(dir.path(), &env, content).unwrap();
    let path = dir.path().join(id.to_string());
    Queued { _dir: dir, path }
}

/// A request for a fresh copy of `q`'s queue file: the agent marks
/// delivered recipients done in the file and never delivers them again, so
/// a test that sends "the same" message twice needs two files.
fn request(q: &Queued, transport: &str, nexthop: &str, rcpts: &[&str], more: bool) -> Request {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let now = queue::time::micros(SystemTime::now());
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = PathBuf::from(format!("{}.{n}", q.path.display()));
    // A path that does not exist stays one (tests of unreadable files).
    let path = if std::fs::copy(&q.path, &copy).is_ok() {
        copy
    } else {
        q.path.clone()
    };
    Request {
        req: 1,
        queue_id: "ABCDEF1234".into(),
        path: path.display().to_string(),
        transport: transport.into(),
        nexthop: nexthop.into(),
        sender: "scan@contoso.com".into(),
        recipients: rcpts
            .iter()
            .enumerate()
            .map(|(i, r)| RcptRequest {
                idx: i,
                addr: r.to_string(),
                orcpt: Some(format!("rfc822;{r}")),
                notify: Some("FAILURE".into()),
            })
            .collect(),
        arrival_us: now,
        active_us: now,
        more_waiting: more,
    }
}

fn bracket(addr: SocketAddr) -> String {
    format!("[{}]:{}", addr.ip(), addr.port())
}

async fn deliver(
    cfg: &conf::Config,
    dns: Option<SocketAddr>,
    nexthop: &str,
    rcpts: &[&str],
) -> Response {
    let (agent, _) = Agent::new(cfg, dns);
    let q = queue_file("scan@contoso.com", rcpts, CONTENT);
    agent
        .deliver(&request(&q, "smtp", nexthop, rcpts, false))
        .await
}

/// Reads a pipelined MAIL, `n` RCPTs and DATA before answering anything.
async fn read_envelope(c: &mut FakeConn, n: usize) -> Vec<String> {
    let mut v = vec![c.expect("MAIL FROM:").await];
    for _ in 0..n {
        v.push(c.expect("RCPT TO:").await);
    }
    v.push(c.expect("DATA").await);
    v
}

mod dialogue;
mod lifecycle;
mod security;

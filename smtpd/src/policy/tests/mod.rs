//! Policy tests: whole configurations, evaluated as the session calls them.

mod config;
mod relay;
mod restrictions;

use super::*;
use proto::status::EnhancedCode;
use std::path::Path;

const MAIN_CF: &str = "/etc/postern/main.cf";

/// A configuration: a fixed host name and networks, then `extra`.
fn cfg(extra: &str) -> Config {
    let text = format!(
        "myhostname = relay.example.net\nmydomain = example.net\n\
         mynetworks = 127.0.0.0/8 [::1]/128 10.0.0.0/24\ninet_interfaces = 192.0.2.25\n{extra}"
    );
    Config::build(
        &conf::MainCf::parse(&text, Path::new(MAIN_CF)).unwrap(),
        &[],
    )
    .unwrap()
}

/// A policy whose DNS lookups fail temporarily (no network in tests).
fn policy(extra: &str) -> Policy {
    let mut p = Policy::new(&cfg(extra)).unwrap_or_else(|e| panic!("{e:?}"));
    p.dns = dns::Dns::offline();
    p
}

fn errors(extra: &str) -> Vec<String> {
    Policy::new(&cfg(extra))
        .err()
        .unwrap_or_default()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// A session from `addr` that said EHLO client.example.net.
fn ctx<'a>(addr: &str, sender: &'a str, rcpt: &'a str) -> Ctx<'a> {
    Ctx {
        client_addr: addr.parse().unwrap(),
        client_name: "unknown",
        helo: Some("client.example.net"),
        sender: Some(sender),
        recipient: Some(rcpt),
        recipient_routed: false,
        sasl_user: None,
        tls: false,
        protocol: "ESMTP",
        ill_pipelining: false,
    }
}

/// "OK", or the reply as logged.
fn show(v: Verdict) -> String {
    match v {
        Verdict::Permit => "OK".into(),
        Verdict::Reject { reply, log } => {
            assert_eq!(log, reply.one_line(), "the log text is the reply");
            log
        }
    }
}

async fn rcpt(p: &Policy, c: &Ctx<'_>) -> String {
    show(p.check(Stage::Rcpt, c).await)
}

const OUTSIDE: &str = "192.0.2.99";

/// The session shares one Policy between connections and awaits `check`
/// inside spawned tasks.
#[allow(dead_code)]
fn policy_is_shareable_and_check_is_send(p: &Policy, c: &Ctx<'_>) {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: T) {}
    send_sync::<Policy>();
    send_sync::<ClientList>();
    send(p.check(Stage::Rcpt, c));
}

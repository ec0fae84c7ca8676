//! Connecting to a destination (Postfix's smtp_connect.c): TCP connects
//! with `smtp_connect_timeout` to the resolved addresses in order, at most
//! `smtp_mx_address_limit` addresses and `smtp_mx_session_limit` sessions,
//! until one session opens. A failed opportunistic STARTTLS handshake is
//! retried once on a new connection without TLS.

use crate::outcome::{Outcome, Peer, SiteFailure};
use crate::resolve::Target;
use crate::session::{self, Session, SetupError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// The OS error text without Rust's ` (os error N)` suffix, as Postfix's
/// `%m` prints it.
pub fn os_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// One TCP connection.
///
/// # Errors
/// `connect to HOST[ADDR]:PORT: Connection refused` (4.4.1), or `...:
/// Connection timed out` after `limit`.
pub async fn tcp(t: &Target, limit: Duration) -> Result<TcpStream, Outcome> {
    let sa = SocketAddr::new(t.addr, t.port);
    let fail = |text: String| {
        Outcome::local(
            "4.4.1",
            format!("connect to {}[{}]:{}: {text}", t.host, t.addr, t.port),
        )
    };
    match tokio::time::timeout(limit, TcpStream::connect(sa)).await {
        Err(_) => Err(fail("Connection timed out".into())),
        Ok(Err(e)) => Err(fail(os_text(&e))),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Opens a session with the first server that works.
///
/// # Errors
/// The last failure when every server tried failed (or a failure that
/// ends the attempt at once, such as a refused login).
pub async fn open_session(
    targets: &[Target],
    setup: &session::Setup<'_>,
) -> Result<Session, SiteFailure> {
    let s = setup.settings;
    let mut last: Option<SiteFailure> = None;
    let mut sessions = 0usize;
    for (tried, t) in targets.iter().enumerate() {
        if s.mx_address_limit > 0 && tried >= s.mx_address_limit {
            break;
        }
        if s.mx_session_limit > 0 && sessions >= s.mx_session_limit {
            break;
        }
        let peer = Peer {
            name: t.host.clone(),
            addr: t.addr,
            port: t.port,
        };
        let tcp_conn = match tcp(t, s.timeouts.connect).await {
            Ok(c) => c,
            Err(o) => {
                last = Some(SiteFailure::no_relay(o));
                continue;
            }
        };
        sessions += 1;
        match session::establish(tcp_conn, peer.clone(), setup, true).await {
            Ok(sess) => return Ok(sess),
            Err(SetupError::Failed(f)) if !f.try_next => return Err(f),
            Err(SetupError::Failed(f)) => last = Some(f),
            Err(SetupError::RetryPlain(_)) => {
                queue::log::info(&format!(
                    "{}: TLS handshake failed; trying again without TLS",
                    peer.namaddrport()
                ));
                let again = match tcp(t, s.timeouts.connect).await {
                    Ok(c) => session::establish(c, peer, setup, false).await,
                    Err(o) => Err(SetupError::Failed(SiteFailure::no_relay(o))),
                };
                match again {
                    Ok(sess) => return Ok(sess),
                    Err(SetupError::Failed(g)) if !g.try_next => return Err(g),
                    Err(SetupError::Failed(g)) | Err(SetupError::RetryPlain(g)) => last = Some(g),
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        SiteFailure::no_relay(Outcome::local("4.4.3", "no server address to connect to"))
    }))
}

//! Connecting to a destination (Postfix's smtp_connect.c): TCP connects
//! with `smtp_connect_timeout` (from `smtp_bind_address` when set) to the
//! resolved addresses in order, at most `smtp_mx_address_limit` addresses
//! and `smtp_mx_session_limit` sessions, until one session opens. A failed
//! opportunistic STARTTLS handshake is retried once on a new connection
//! without TLS. Recipients that a server leaves with a temporary failure
//! go to the next server while one is left ([`Walk`]).

use crate::outcome::{Outcome, Peer, SiteFailure};
use crate::resolve::Target;
use crate::session::{self, Session, SetupError};
use crate::settings::Settings;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// The OS error text without Rust's ` (os error N)` suffix, as Postfix's
/// `%m` prints it.
pub fn os_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// One TCP connection, from `smtp_bind_address` (or
/// `smtp_bind_address6`) when set.
///
/// # Errors
/// `connect to HOST[ADDR]:PORT: Connection refused` (4.4.1), or `...:
/// Connection timed out` after `smtp_connect_timeout`; with
/// `smtp_bind_address_enforce`, a failed bind.
pub async fn tcp(t: &Target, s: &Settings) -> Result<TcpStream, Outcome> {
    let sa = SocketAddr::new(t.addr, t.port);
    let fail = |text: String| {
        Outcome::local(
            "4.4.1",
            format!("connect to {}[{}]:{}: {text}", t.host, t.addr, t.port),
        )
    };
    let socket = match t.addr {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| fail(os_text(&e)))?;
    let bind = if t.addr.is_ipv4() {
        s.bind_address.map(|a| ("smtp_bind_address", a))
    } else {
        s.bind_address6.map(|a| ("smtp_bind_address6", a))
    };
    if let Some((name, local)) = bind
        && let Err(e) = socket.bind(SocketAddr::new(local, 0))
    {
        // Postfix warns and connects from any address unless told to
        // enforce the binding (smtp_bind_address_enforce, Postfix 3.7).
        let text = format!("cannot bind to {name} = {local}: {}", os_text(&e));
        if s.bind_enforce {
            return Err(fail(text));
        }
        queue::log::warning(&format!(
            "{text}; connecting to {}[{}]:{} from any address (set smtp_bind_address_enforce = yes to defer instead)",
            t.host, t.addr, t.port
        ));
        return connect_any(sa, s.timeouts.connect).await.map_err(fail);
    }
    match tokio::time::timeout(s.timeouts.connect, socket.connect(sa)).await {
        Err(_) => Err(fail("Connection timed out".into())),
        Ok(Err(e)) => Err(fail(os_text(&e))),
        Ok(Ok(c)) => {
            let _ = c.set_nodelay(true);
            Ok(c)
        }
    }
}

async fn connect_any(sa: SocketAddr, limit: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(limit, TcpStream::connect(sa)).await {
        Err(_) => Err("Connection timed out".into()),
        Ok(Err(e)) => Err(os_text(&e)),
        Ok(Ok(c)) => {
            let _ = c.set_nodelay(true);
            Ok(c)
        }
    }
}

/// The servers of one delivery, tried in order (Postfix's address walk in
/// smtp_connect_remote()): at most `smtp_mx_address_limit` addresses and
/// `smtp_mx_session_limit` sessions. A delivery opens a session with
/// [`Walk::open_next`]; when that server leaves recipients with a
/// temporary failure and [`Walk::has_more`] says another server may be
/// tried, those recipients go to the next server (Postfix tries every
/// server but the last as a "non-final" one).
#[derive(Debug)]
pub struct Walk {
    targets: Vec<Target>,
    next: usize,
    sessions: usize,
    /// Servers already used through a cached session (not tried again).
    used: Vec<(IpAddr, u16)>,
}

impl Walk {
    /// A walk over `targets`, best first.
    pub fn new(targets: Vec<Target>) -> Walk {
        Walk {
            targets,
            next: 0,
            sessions: 0,
            used: Vec::new(),
        }
    }

    /// Counts a session that did not come from this walk (a cached one)
    /// and keeps its server from being tried again.
    pub fn note_session(&mut self, peer: &Peer) {
        self.sessions += 1;
        self.used.push((peer.addr, peer.port));
    }

    fn usable(&self, i: usize, s: &Settings) -> bool {
        let t = &self.targets[i];
        (s.mx_address_limit == 0 || i < s.mx_address_limit)
            && !self.used.contains(&(t.addr, t.port))
    }

    /// True when another server may still be tried: the session limit is
    /// not reached and an address is left. A session opened when this is
    /// false is the final one: its temporary failures stand.
    pub fn has_more(&self, s: &Settings) -> bool {
        if s.mx_session_limit > 0 && self.sessions >= s.mx_session_limit {
            return false;
        }
        (self.next..self.targets.len()).any(|i| self.usable(i, s))
    }

    /// Opens a session with the next server that works.
    ///
    /// # Errors
    /// The last failure when every server left failed (or a failure that
    /// ends the attempt at once, such as a refused login); `None` when no
    /// server was left to try.
    pub async fn open_next(
        &mut self,
        setup: &session::Setup<'_>,
    ) -> Result<Session, Option<SiteFailure>> {
        let s = setup.settings;
        let mut last: Option<SiteFailure> = None;
        while self.next < self.targets.len() {
            let i = self.next;
            self.next += 1;
            if s.mx_address_limit > 0 && i >= s.mx_address_limit {
                break;
            }
            if s.mx_session_limit > 0 && self.sessions >= s.mx_session_limit {
                break;
            }
            if !self.usable(i, s) {
                continue;
            }
            let t = self.targets[i].clone();
            if let Some(f) = &last {
                log_moving_on(f);
            }
            let peer = Peer {
                name: t.host.clone(),
                addr: t.addr,
                port: t.port,
            };
            let tcp_conn = match tcp(&t, s).await {
                Ok(c) => c,
                Err(o) => {
                    last = Some(SiteFailure::no_relay(o));
                    continue;
                }
            };
            self.sessions += 1;
            match session::establish(tcp_conn, peer.clone(), setup, true).await {
                Ok(sess) => return Ok(sess),
                Err(SetupError::Failed(f)) if !f.try_next => return Err(Some(f)),
                Err(SetupError::Failed(f)) => last = Some(f),
                Err(SetupError::RetryPlain(_)) => {
                    queue::log::info(&format!(
                        "{}: TLS handshake failed; trying again without TLS",
                        peer.namaddrport()
                    ));
                    let again = match tcp(&t, s).await {
                        Ok(c) => session::establish(c, peer, setup, false).await,
                        Err(o) => Err(SetupError::Failed(SiteFailure::no_relay(o))),
                    };
                    match again {
                        Ok(sess) => return Ok(sess),
                        Err(SetupError::Failed(g)) if !g.try_next => return Err(Some(g)),
                        Err(SetupError::Failed(g)) | Err(SetupError::RetryPlain(g)) => {
                            last = Some(g)
                        }
                    }
                }
            }
        }
        Err(last)
    }
}

/// Postfix logs why a server was skipped before it tries the next one
/// (`connect to mx1.example.com[192.0.2.1]:25: Connection refused`).
fn log_moving_on(f: &SiteFailure) {
    queue::log::info(&f.outcome.reason);
}

/// The failure for a walk that ended without any server to try.
pub fn no_server(last: Option<SiteFailure>) -> SiteFailure {
    last.unwrap_or_else(|| {
        SiteFailure::no_relay(Outcome::local("4.4.3", "no server address to connect to"))
    })
}

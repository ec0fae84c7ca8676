//! The listening socket: accept loop, and stopping and starting on the same
//! port.
//!
//! Stopping keeps the socket bound: `shutdown(SHUT_RD)` on a listening TCP
//! socket (Linux) drops the backlog and leaves it bound but not listening,
//! so connections are refused and no other socket can take the port;
//! `listen()` on it again resumes. Where that fails the socket is closed
//! and the port bound again on start.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::session;
use super::state::Shared;

/// The listener's state as the controlling thread sees it.
pub(crate) enum Listening {
    /// Accepting; the accept task gives the socket back when told to stop.
    Yes {
        stop: oneshot::Sender<()>,
        back: std_mpsc::Receiver<std::net::TcpListener>,
    },
    /// Not accepting; the socket if it is still bound.
    No(Option<std::net::TcpListener>),
}

/// Starts accepting on `sock` (bound, listening, non-blocking).
pub(crate) fn start(rt: &Handle, shared: Arc<Shared>, sock: std::net::TcpListener) -> Listening {
    let (stop, stop_rx) = oneshot::channel();
    let (back_tx, back) = std_mpsc::channel();
    rt.spawn(accept_loop(rt.clone(), shared, sock, stop_rx, back_tx));
    Listening::Yes { stop, back }
}

async fn accept_loop(
    rt: Handle,
    shared: Arc<Shared>,
    sock: std::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
    back: std_mpsc::Sender<std::net::TcpListener>,
) {
    // Invariant: the socket is a valid non-blocking listener made by us.
    let listener = TcpListener::from_std(sock).expect("register the fake's listener");
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => {
                let Ok((tcp, peer)) = r else { continue };
                let id = shared.session_opened(peer);
                let h = rt.spawn(session::run(shared.clone(), tcp, peer, id));
                shared.add_task(id, h.abort_handle());
            }
        }
    }
    if let Ok(sock) = listener.into_std() {
        let _ = back.send(sock);
    }
}

/// Binds 127.0.0.1 on `port` (0: any free port), non-blocking.
pub(crate) fn bind(port: u16) -> Result<std::net::TcpListener> {
    let sock = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_context(|| format!("bind 127.0.0.1:{port}"))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Stops accepting; `Listening::No` afterwards.
pub(crate) fn stop(state: Listening) -> Result<Listening> {
    let Listening::Yes { stop, back } = state else {
        return Ok(state);
    };
    let _ = stop.send(());
    let sock = back
        .recv_timeout(Duration::from_secs(10))
        .context("the fake's accept loop did not stop")?;
    // SAFETY: shutdown(2) on a descriptor we own; no memory involved.
    let r = unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD) };
    Ok(Listening::No((r == 0).then_some(sock)))
}

/// Makes a stopped socket listen again, or binds `port` anew.
pub(crate) fn reopen(sock: Option<std::net::TcpListener>, port: u16) -> Result<std::net::TcpListener> {
    if let Some(sock) = sock {
        // SAFETY: listen(2) on a descriptor we own.
        if unsafe { libc::listen(sock.as_raw_fd(), 1024) } == 0 {
            return Ok(sock);
        }
    }
    let sock = bind(port)?;
    if sock.local_addr()?.port() != port {
        bail!("rebound to another port");
    }
    Ok(sock)
}

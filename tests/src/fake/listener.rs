//! The listening socket: accept loop, and stopping and starting on the same
//! port.
//!
//! Stopping closes the listener and binds a placeholder socket to the same
//! port without listening (both with `SO_REUSEADDR`): connections are
//! refused, and no other socket (e.g. an outgoing connection's ephemeral
//! port) can take the port meanwhile. Starting binds a new listener beside
//! the placeholder, then drops the placeholder.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
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
    /// Not accepting; the placeholder that keeps the port reserved.
    No {
        /// Kept only to hold the port.
        _placeholder: Option<OwnedFd>,
    },
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
                let Ok((tcp, peer)) = r else {
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
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

/// Stops accepting; `Listening::No` (holding the placeholder) afterwards.
pub(crate) fn stop(state: Listening, port: u16) -> Result<Listening> {
    let Listening::Yes { stop, back } = state else {
        return Ok(state);
    };
    let _ = stop.send(());
    let sock = back
        .recv_timeout(Duration::from_secs(10))
        .context("the fake's accept loop did not stop")?;
    drop(sock);
    Ok(Listening::No {
        _placeholder: placeholder(port).ok(),
    })
}

/// A socket bound to 127.0.0.1:`port` that does not listen.
fn placeholder(port: u16) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))?;
    Ok(fd)
}

/// Binds a new listener on `port` (beside the placeholder, which the
/// caller drops afterwards).
pub(crate) fn reopen(port: u16) -> Result<std::net::TcpListener> {
    let sock = bind(port)?;
    if sock.local_addr()?.port() != port {
        bail!("rebound to another port");
    }
    Ok(sock)
}

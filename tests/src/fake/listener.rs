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
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// What the accept loop does with each connection (runs on the runtime).
pub(crate) type OnAccept = Arc<dyn Fn(TcpStream, SocketAddr) + Send + Sync>;

/// The listener's state as the controlling thread sees it.
enum Listening {
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

/// Starts accepting on `sock` (bound, listening, non-blocking); each
/// connection goes to `on_accept`.
fn start(rt: &Handle, on_accept: OnAccept, sock: std::net::TcpListener) -> Listening {
    let (stop, stop_rx) = oneshot::channel();
    let (back_tx, back) = std_mpsc::channel();
    rt.spawn(accept_loop(on_accept, sock, stop_rx, back_tx));
    Listening::Yes { stop, back }
}

async fn accept_loop(
    on_accept: OnAccept,
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
                on_accept(tcp, peer);
            }
        }
    }
    if let Ok(sock) = listener.into_std() {
        let _ = back.send(sock);
    }
}

/// Binds 127.0.0.1 on `port` (0: any free port), non-blocking.
fn bind(port: u16) -> Result<std::net::TcpListener> {
    let sock = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_context(|| format!("bind 127.0.0.1:{port}"))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Stops accepting; `Listening::No` (holding the placeholder) afterwards.
fn stop(state: Listening, port: u16) -> Result<Listening> {
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
fn reopen(port: u16) -> Result<std::net::TcpListener> {
    let sock = bind(port)?;
    if sock.local_addr()?.port() != port {
        bail!("rebound to another port");
    }
    Ok(sock)
}

/// A Tokio runtime on its own thread and a listener on 127.0.0.1 that can
/// stop and start on the same port: the frame of every fake server.
/// Dropping it stops the runtime (tasks still running are cancelled).
pub(crate) struct Server {
    rt: Handle,
    port: u16,
    on_accept: OnAccept,
    listening: Mutex<Listening>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the runtime thread `name` and listens on a free port.
    ///
    /// # Errors
    /// No thread, runtime or socket.
    pub fn spawn(name: &str, on_accept: OnAccept) -> Result<Server> {
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let worker = format!("{name}-worker");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(worker)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = shutdown_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .with_context(|| format!("start the {name} thread"))?;
        let rt = handle_rx
            .recv()
            .with_context(|| format!("the {name} thread died"))?
            .with_context(|| format!("build the {name} runtime"))?;
        let mut server = Server {
            rt,
            port: 0,
            on_accept,
            listening: Mutex::new(Listening::No { _placeholder: None }),
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        let sock = bind(0)?;
        server.port = sock.local_addr()?.port();
        *server.lock() = start(&server.rt, server.on_accept.clone(), sock);
        Ok(server)
    }

    /// The port (the same across stops and starts).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn lock(&self) -> MutexGuard<'_, Listening> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new connections; the port stays reserved.
    ///
    /// # Errors
    /// The accept loop did not stop.
    pub fn stop_listening(&self) -> Result<()> {
        let mut g = self.lock();
        let state = std::mem::replace(&mut *g, Listening::No { _placeholder: None });
        *g = stop(state, self.port)?;
        Ok(())
    }

    /// Accepts connections again, on the same port.
    ///
    /// # Errors
    /// The port could not be bound again.
    pub fn start(&self) -> Result<()> {
        let mut g = self.lock();
        if matches!(*g, Listening::Yes { .. }) {
            return Ok(());
        }
        let sock =
            reopen(self.port).with_context(|| format!("listen again on port {}", self.port))?;
        // Dropping the old state closes the placeholder.
        *g = start(&self.rt, self.on_accept.clone(), sock);
        Ok(())
    }

    /// True unless stopped.
    pub fn is_listening(&self) -> bool {
        matches!(*self.lock(), Listening::Yes { .. })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

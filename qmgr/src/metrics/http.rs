//! The metrics endpoint: a minimal HTTP/1.x server on `metrics_listen`.
//!
//! `GET /metrics` is the Prometheus text format, `GET /status` the JSON of
//! `postern status --json`; `HEAD` works too; anything else is 404 or 405.
//! One request per connection (`Connection: close`), a request head of at
//! most 8 KiB, 10 seconds per connection, at most 16 connections at once
//! (more are closed unanswered): a scraper on loopback needs no more, and a
//! misbehaving client cannot hold qmgr's sockets.
//!
//! A request asks the event loop for a fresh snapshot (unless the last one
//! is under a second old) and waits up to two seconds for it; if the loop
//! is busy, the previous snapshot is served.

use super::{Published, Shared};
use conf::Config;
use queue::log;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

const MAX_CONNECTIONS: usize = 16;
const MAX_HEAD: usize = 8192;
const CONNECTION_TIME: Duration = Duration::from_secs(10);
/// A snapshot younger than this is served as it is.
const FRESH: Duration = Duration::from_secs(1);
/// How long a request waits for the event loop.
const WAIT: Duration = Duration::from_secs(2);

/// Binds `metrics_listen`, if set (qmgr calls this while it may still be
/// root, so a port below 1024 works too). A problem is logged and leaves
/// qmgr without an endpoint: mail delivery matters more than metrics.
pub fn bind(cfg: &Config) -> Option<std::net::TcpListener> {
    let addr = match conf::net::listen_address(&cfg.metrics_listen) {
        Ok(Some(a)) => a,
        Ok(None) => return None,
        Err(e) => {
            log::warning(&format!(
                "metrics_listen = {}: {e}; no metrics endpoint",
                cfg.metrics_listen
            ));
            return None;
        }
    };
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            log::info(&format!("metrics endpoint on http://{addr}/metrics"));
            if !addr.ip().is_loopback() {
                log::warning(&format!(
                    "metrics_listen = {addr}: metrics are served without authentication to every host that can reach this address"
                ));
            }
            Some(l)
        }
        Err(e) => {
            log::warning(&format!(
                "metrics_listen = {addr}: cannot listen: {e}; no metrics endpoint"
            ));
            None
        }
    }
}

/// Serves `listener` on the current runtime.
pub(super) fn spawn(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    rx: watch::Receiver<Arc<Published>>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            log::warning(&format!("metrics endpoint: {e}; no metrics endpoint"));
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let shared = shared.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CONNECTION_TIME, serve(sock, &shared, rx)).await;
                drop(permit);
            });
        }
    });
}

/// A snapshot no older than [`FRESH`], or the latest one after [`WAIT`].
async fn fresh(shared: &Shared, mut rx: watch::Receiver<Arc<Published>>) -> Arc<Published> {
    let current = rx.borrow_and_update().clone();
    if current.built.is_some_and(|b| b.elapsed() < FRESH) {
        return current;
    }
    shared.pending.store(true, Ordering::SeqCst);
    shared.want.notify_one();
    let _ = tokio::time::timeout(WAIT, async {
        while rx.changed().await.is_ok() {
            if rx.borrow().generation > current.generation {
                break;
            }
        }
    })
    .await;
    rx.borrow().clone()
}

async fn serve(
    mut sock: TcpStream,
    shared: &Shared,
    rx: watch::Receiver<Arc<Published>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return respond(
                &mut sock,
                431,
                "text/plain",
                "request head too large\n",
                true,
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(b""))
        .trim()
        .to_string();
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return respond(&mut sock, 405, "text/plain", "only GET and HEAD\n", true).await;
    }
    match path {
        "/metrics" => {
            let p = fresh(shared, rx).await;
            respond(
                &mut sock,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &p.text,
                with_body,
            )
            .await
        }
        "/status" => {
            let p = fresh(shared, rx).await;
            respond(
                &mut sock,
                200,
                "application/json",
                &format!("{}\n", p.json),
                with_body,
            )
            .await
        }
        "/" => {
            respond(
                &mut sock,
                200,
                "text/plain; charset=utf-8",
                "postern queue manager: /metrics (Prometheus), /status (JSON)\n",
                with_body,
            )
            .await
        }
        _ => respond(&mut sock, 404, "text/plain", "not found\n", with_body).await,
    }
}

async fn respond(
    sock: &mut TcpStream,
    code: u16,
    kind: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    sock.write_all(out.as_bytes()).await?;
    sock.shutdown().await
}

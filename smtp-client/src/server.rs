//! The agent's side of the qmgr protocol ([`queue::deliver`]): accept
//! qmgr's connections on the private socket, read length-prefixed JSON
//! requests, run each delivery as its own task (at most `maxproc` at once,
//! from master.cf), and write each response on the connection it came from
//! as soon as it is ready, in any order.
//!
//! Shutdown (SIGTERM): stop reading requests, let deliveries in progress
//! finish for up to [`DRAIN_LIMIT`], close cached sessions with QUIT, return.

use crate::delivery::Agent;
use queue::deliver::{self, Request, Response};
use queue::log;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// How long deliveries in progress may run on after SIGTERM.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Deliveries allowed at once when master.cf says 0 (no limit).
const UNLIMITED: usize = 4096;

/// The number of simultaneous deliveries for `service`: its master.cf
/// maxproc, else `default_process_limit`.
pub fn maxproc(cfg: &conf::Config, service: &str) -> usize {
    let path = std::path::Path::new(&cfg.config_directory).join("master.cf");
    let n = conf::mastercf::MasterCf::load(&path)
        .ok()
        .and_then(|m| {
            m.find(service, conf::mastercf::ServiceType::Unix)
                .and_then(|s| s.maxproc)
        })
        .map(|n| n as usize)
        .unwrap_or_else(|| usize::try_from(cfg.default_process_limit).unwrap_or(UNLIMITED));
    if n == 0 { UNLIMITED } else { n.min(UNLIMITED) }
}

/// Serves qmgr on `listener` until `shutdown` resolves, then drains.
///
/// # Errors
/// Accepting connections failed for good.
pub async fn run(
    listener: UnixListener,
    agent: Arc<Agent>,
    maxproc: usize,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(maxproc));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let reaper = {
        let a = agent.clone();
        let q = agent.settings.timeouts.quit;
        tokio::spawn(async move { a.cache.reap(q).await })
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(100);
                    conns.spawn(serve(stream, agent.clone(), slots.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    log::warning(&format!("accept on the delivery socket failed: {e}; retrying in {backoff:?}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    agent.stop_caching();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warning(&format!(
            "deliveries still in progress after {}s; exiting (qmgr retries them)",
            DRAIN_LIMIT.as_secs()
        ));
    }
    reaper.abort();
    agent.cache.close_all(Duration::from_secs(2)).await;
    Ok(())
}

/// One qmgr connection: requests in, responses out.
async fn serve(
    stream: UnixStream,
    agent: Arc<Agent>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Response>();
    let writer = tokio::spawn(async move {
        while let Some(resp) = rx.recv().await {
            let bytes = match deliver::encode(&resp) {
                Ok(b) => b,
                Err(e) => {
                    log::error(&format!(
                        "cannot encode the response to request {}: {e}",
                        resp.req
                    ));
                    continue;
                }
            };
            if let Err(e) = wr.write_all(&bytes).await {
                log::warning(&format!("cannot send results to qmgr: {e}"));
                return;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        loop {
            match deliver::decode::<Request>(&mut buf) {
                Ok(Some(req)) => {
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break 'read,
                        },
                        _ = stop.changed() => break 'read,
                    };
                    let (agent, tx) = (agent.clone(), tx.clone());
                    tokio::spawn(async move {
                        let resp = agent.deliver(&req).await;
                        let _ = tx.send(resp);
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    log::warning(&format!(
                        "malformed request from qmgr: {e}; closing the connection"
                    ));
                    break 'read;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            n = rd.read(&mut chunk) => match n {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    log::warning(&format!("reading from qmgr failed: {e}"));
                    break;
                }
            },
        }
    }
    drop(rd);
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxproc_comes_from_master_cf() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("master.cf"),
            "smtp      unix  -       -       n       -       -       smtp\n\
             relay     unix  -       -       n       -       0       smtp\n\
             maildir   unix  -       -       n       -       3       smtp\n",
        )
        .unwrap();
        let mut cfg = conf::Config::defaults();
        cfg.config_directory = dir.path().display().to_string();
        cfg.default_process_limit = 100;
        assert_eq!(maxproc(&cfg, "maildir"), 3);
        assert_eq!(maxproc(&cfg, "smtp"), 100);
        assert_eq!(maxproc(&cfg, "relay"), UNLIMITED);
        assert_eq!(maxproc(&cfg, "absent"), 100);
    }
}

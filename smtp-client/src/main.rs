//! smtp: postern's delivery agent (Postfix's smtp(8)). qmgr hands it
//! delivery requests over the private socket of its master.cf service;
//! it delivers each by SMTP to the next hop (MX lookup or `[host]:port`,
//! STARTTLS or implicit TLS, SMTP AUTH, connection reuse), or into a Maildir
//! for the `maildir` transport, logs Postfix's delivery lines and returns a
//! result per recipient.
//!
//! The program is a thin main over the [`smtp_client`] library.

use queue::log;
use smtp_client::{delivery, server, settings, tls};
use std::sync::Arc;

fn main() {
    // The TLS client certificate and key are read as root, before the
    // agent becomes mail_owner (Postfix's smtp loads them in pre_init), so
    // smtp_tls_key_file may be readable by root only.
    let (started, tls) = queue::service::start_agent_with("smtp", |cfg| {
        tls::TlsEngine::new(&settings::Settings::from_config(cfg).0.tls)
    });
    // One thread: deliveries are I/O-bound, and a multi-threaded runtime
    // spent a quarter of the agent's CPU handing work between its threads.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => log::fatal(1, &format!("cannot start the event loop: {e}")),
    };
    if let Err(e) = rt.block_on(run(started, tls)) {
        log::fatal(1, &format!("{e:#}"));
    }
    // Background QUITs and DNS tasks are not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
}

async fn run(started: queue::service::Started, tls: tls::TlsEngine) -> anyhow::Result<()> {
    let queue::service::Started {
        args,
        cfg,
        queue,
        listeners,
    } = started;
    let listener = match listeners.into_iter().next() {
        Some(fd) => {
            let l = std::os::unix::net::UnixListener::from(fd);
            l.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(l)?
        }
        None => {
            let path = queue.private_dir().join(&args.service);
            let _ = std::fs::remove_file(&path);
            tokio::net::UnixListener::bind(&path).map_err(|e| {
                anyhow::anyhow!("cannot listen on {}: {e}; check that the queue directory exists (postern start creates it)", path.display())
            })?
        }
    };
    let dns = queue::dns::server_from_env().map_err(anyhow::Error::msg)?;
    let (agent, warnings) = delivery::Agent::with_tls(&cfg, dns, tls);
    for w in warnings {
        log::warning(&w);
    }
    let maxproc = server::maxproc(&cfg, &args.service);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        term.recv().await;
    };
    server::run(listener, Arc::new(agent), maxproc, shutdown).await
}

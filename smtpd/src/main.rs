//! smtpd: the SMTP server for LAN clients (scanners, applications,
//! scripts). One process serves every connection of its master.cf service
//! (async); listening sockets come from the supervisor, bound before
//! privileges were dropped. Accepted mail is on disk, fsynced, before the
//! 250 reply.

mod anvil;
mod auth;
mod commands;
mod commit;
mod data;
mod peer;
mod policy;
mod proxy;
mod received;
mod sasl;
mod server;
mod session;
mod stream;
mod tls;

use std::sync::Arc;
use std::time::Duration;

fn main() {
    // The TLS key and the user file are opened with the privileges smtpd
    // was started with (root under `postern start`), before dropping them.
    let (started, early) = queue::service::start_with("smtpd", |cfg| {
        let tls = tls::Tls::new(cfg);
        let auth = if cfg.smtpd_sasl_auth_enable {
            sasl::Authenticator::new(cfg).map(Some)
        } else {
            Ok(None)
        };
        (tls, auth)
    });
    let early = match early {
        (Ok(tls), Ok(auth)) => server::Early { tls, auth },
        (Err(e), _) | (_, Err(e)) => queue::log::fatal(1, &e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => queue::log::fatal(1, &format!("cannot start the event loop: {e}")),
    };
    if let Err(e) = rt.block_on(run(started, early)) {
        queue::log::fatal(1, &e);
    }
}

async fn run(started: queue::service::Started, early: server::Early) -> Result<(), String> {
    let queue::service::Started {
        cfg,
        queue,
        listeners,
        args,
    } = started;
    if listeners.is_empty() {
        return Err(format!(
            "service {}: no listening socket (smtpd runs under 'postern start')",
            args.service
        ));
    }
    let mut tcp = Vec::new();
    for fd in listeners {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)
            .map_err(|e| format!("listener: {e}"))?;
        tcp.push(tokio::net::TcpListener::from_std(l).map_err(|e| format!("listener: {e}"))?);
    }
    let maxproc = conf::mastercf::MasterCf::load(
        &std::path::Path::new(&cfg.config_directory).join("master.cf"),
    )
    .ok()
    .and_then(|m| {
        m.services
            .into_iter()
            .find(|s| s.name == args.service && s.kind == conf::mastercf::ServiceType::Inet)
    })
    .and_then(|s| s.maxproc)
    .map(|n| n as usize)
    .unwrap_or(cfg.default_process_limit as usize);
    let maxproc = if maxproc == 0 { 10_000 } else { maxproc };
    fit_open_files(maxproc);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(server::Shared::new(
        &args.service,
        cfg,
        queue,
        early,
        stop_rx.clone(),
    )?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        term.recv().await;
        let _ = stop_tx.send(true);
    });
    server::run(shared, tcp, maxproc, stop_rx, Duration::from_secs(10)).await;
    Ok(())
}

/// Raises the soft open-files limit so that `maxproc` sessions fit: each
/// needs its socket, and one more descriptor for the queue file while a
/// message arrives. Under systemd the soft limit is 1024 whatever the
/// process limit says; smtpd then stopped accepting at about 1,000
/// clients and the rest waited unanswered (found by
/// tests/tests/hostile_resources.rs, 10,000 idle connections). Postfix
/// has one smtpd process per client and does not meet this. The hard
/// limit is not touched; when even it is too low, say so.
fn fit_open_files(maxproc: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const SPARE: u64 = 64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let sessions = maxproc as u64;
    let want = sessions.saturating_mul(2).saturating_add(SPARE);
    let new = if soft < want { want.min(hard) } else { soft };
    if new > soft && setrlimit(Resource::RLIMIT_NOFILE, new, hard).is_err() {
        return;
    }
    if new < sessions.saturating_add(SPARE) {
        queue::log::warning(&format!(
            "the open files limit ({new}) is too low for the process limit of {maxproc} sessions; clients beyond about {} wait unanswered: raise the limit (systemd: LimitNOFILE={want})",
            new.saturating_sub(SPARE)
        ));
    }
}

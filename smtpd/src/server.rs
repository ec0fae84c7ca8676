//! The listener side: what every session shares (configuration, policy,
//! TLS contexts, limits, the committer), and the accept loop — one task per
//! connection, at most `maxproc` at once (further clients wait in the
//! listen backlog), per-client limits checked before the greeting, the
//! PROXY header and wrapper-mode TLS before the greeting, and a graceful
//! stop on SIGTERM.

use crate::anvil::{Anvil, Exceeded};
use crate::commit::Committer;
use crate::peer::Peer;
use crate::policy::{ClientList, Policy, Stage, Verdict};
use crate::session::Session;
use crate::stream::Conn;
use crate::tls::Tls;
use queue::QueueId;
use queue::cleanup::Cleanup;
use queue::layout::Queue;
use queue::log;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// What every session of this listener shares.
pub struct Shared {
    /// The configuration (main.cf plus this listener's -o overrides).
    pub cfg: conf::Config,
    /// The queue.
    pub queue: Queue,
    /// Restrictions.
    pub policy: Policy,
    /// Inbound AUTH, when configured.
    pub auth: Option<crate::sasl::Authenticator>,
    /// Failed-AUTH counters.
    pub failures: crate::sasl::FailureLimiter,
    /// Address rewriting and header fixes.
    pub cleanup: Cleanup,
    /// TLS contexts, when TLS is configured.
    pub tls: Option<Tls>,
    /// Per-client limits.
    pub anvil: Anvil,
    /// Group commit of queue files.
    pub committer: Committer,
    /// smtpd_client_event_limit_exceptions.
    pub limit_exceptions: ClientList,
    /// smtpd_forbid_bare_newline_exclusions.
    pub bare_lf_exclusions: ClientList,
    /// local_header_rewrite_clients.
    pub rewrite_clients: ClientList,
    /// Recycled queue files.
    pub spares: Mutex<queue::spare::Spares>,
    /// Set when the server is stopping.
    pub shutdown: watch::Receiver<bool>,
    /// The master.cf service name, for log lines.
    pub service: String,
    last_id: Mutex<QueueId>,
}

/// What smtpd loads before it drops privileges: the TLS contexts (the key
/// may be readable by root only) and the AUTH user file.
pub struct Early {
    /// TLS contexts, `None` when TLS is off.
    pub tls: Option<Tls>,
    /// Inbound AUTH, `None` when smtpd_sasl_auth_enable is off.
    pub auth: Option<crate::sasl::Authenticator>,
}

impl Shared {
    /// Builds everything from the configuration.
    ///
    /// # Errors
    /// A configuration problem (tables, certificate, user file), in words.
    pub fn new(
        service: &str,
        cfg: conf::Config,
        queue: Queue,
        early: Early,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Shared, String> {
        let join = |errs: Vec<conf::Error>| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let policy = Policy::new(&cfg).map_err(join)?;
        let cleanup = Cleanup::new(&cfg).map_err(join)?;
        for w in &cleanup.warnings {
            log::warning(w);
        }
        let Early { tls, auth } = early;
        if tls.is_none() && cfg.smtpd_tls_security_level == "may" {
            log::info(
                "no smtpd_tls_cert_file: STARTTLS is not offered (postern tls new-cert makes a certificate)",
            );
        }
        Ok(Shared {
            limit_exceptions: policy.client_list(&cfg.smtpd_client_event_limit_exceptions),
            bare_lf_exclusions: policy.client_list(&cfg.smtpd_forbid_bare_newline_exclusions),
            rewrite_clients: policy.client_list(&cfg.local_header_rewrite_clients),
            failures: crate::sasl::FailureLimiter::new(&cfg),
            anvil: Anvil::new(&cfg),
            committer: Committer::start(queue.clone())?,
            spares: Mutex::new(queue::spare::Spares::new(&queue)),
            policy,
            cleanup,
            tls,
            auth,
            shutdown,
            queue,
            cfg,
            last_id: Mutex::new(QueueId::now()),
            service: service.to_string(),
        })
    }

    /// A queue ID never issued before by this process.
    pub fn next_id(&self) -> QueueId {
        let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
        let now = QueueId::now();
        let id = if now > *last { now } else { last.next() };
        *last = id;
        id
    }
}

/// Serves `listeners` until `stop` fires, then waits (up to `grace`) for
/// sessions in progress.
pub async fn run(
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    maxproc: usize,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let sessions = Arc::new(Semaphore::new(maxproc.max(1)));
    let mut tasks = Vec::new();
    for l in listeners {
        let shared = shared.clone();
        let sessions = sessions.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(10);
            loop {
                let permit = tokio::select! {
                    p = sessions.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stop.changed() => return,
                };
                let accepted = tokio::select! {
                    a = l.accept() => a,
                    _ = stop.changed() => return,
                };
                match accepted {
                    Ok((tcp, addr)) => {
                        backoff = Duration::from_millis(10);
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            connection(shared, tcp, addr).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warning(&format!("accept: {e}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }));
    }
    let _ = stop.changed().await;
    for t in &tasks {
        t.abort();
    }
    // Sessions see the shutdown flag at their next command; wait for them.
    let all = u32::try_from(maxproc.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, sessions.acquire_many(all)).await;
}

/// One connection from accept to close.
async fn connection(shared: Arc<Shared>, tcp: TcpStream, addr: std::net::SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    let mut addr = addr;
    if shared.cfg.smtpd_upstream_proxy_protocol == "haproxy" {
        match tokio::time::timeout(
            shared.cfg.smtpd_upstream_proxy_timeout,
            crate::proxy::read_header(&mut tcp),
        )
        .await
        {
            Ok(Ok(Some(real))) => addr = real,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                log::warning(&format!("haproxy read: {e} from [{}]", addr.ip()));
                return;
            }
            Err(_) => {
                log::warning(&format!("haproxy read: timeout from [{}]", addr.ip()));
                return;
            }
        }
    }
    let ip = canonical(addr.ip());
    let name = if shared.cfg.smtpd_peername_lookup {
        crate::peer::lookup_name(ip).await
    } else {
        "unknown".to_string()
    };
    let exempt = shared.limit_exceptions.matches(ip, false);
    let counted = if exempt {
        false
    } else {
        match shared.anvil.connect(ip) {
            Ok(()) => true,
            Err(which) => {
                let (what, n) = match which {
                    Exceeded::Count(n) => ("Connection concurrency limit exceeded", n),
                    Exceeded::Rate(n) => ("Connection rate limit exceeded", n),
                };
                log::warning(&format!(
                    "{what}: {n} from {name}[{ip}] for service {}",
                    shared.service
                ));
                let text = format!(
                    "421 4.7.0 {} Error: too many connections from {ip}\r\n",
                    shared.cfg.myhostname
                );
                use tokio::io::AsyncWriteExt;
                let _ = tcp.write_all(text.as_bytes()).await;
                return;
            }
        }
    };
    let peer = Peer {
        addr: ip,
        port: addr.port(),
        name,
    };
    log::info(&format!("connect from {}", peer.namaddr()));
    let mut session = Session::new(shared.clone(), Conn::Plain(tcp), peer);
    let mut ok = true;
    if shared.cfg.smtpd_tls_wrappermode {
        match shared.tls.as_ref().map(|t| t.mandatory.clone()) {
            Some(acc) => {
                if let Some(tcp) = session.conn.take_plain() {
                    // Wrapper mode: not a STARTTLS command, so not counted.
                    ok = crate::commands::handshake(&mut session, acc, tcp)
                        .await
                        .is_ok();
                }
            }
            None => ok = false,
        }
    }
    if ok {
        if !shared.cfg.smtpd_delay_reject {
            let proto = "SMTP";
            let c = crate::commands::ctx(&session, proto);
            if let Verdict::Reject { reply, log } = shared.policy.check(Stage::Connect, &c).await {
                crate::commands::log_reject(&session, "CONNECT", &log, None);
                session.client_reject = Some(reply);
            }
        }
        session.run().await;
    } else {
        log::info(&format!(
            "disconnect from {} commands=0",
            session.peer.namaddr()
        ));
    }
    if counted {
        shared.anvil.disconnect(ip);
    }
}

/// IPv4 clients on an IPv6 socket appear as ::ffff:a.b.c.d.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

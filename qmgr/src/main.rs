//! qmgr: the queue manager. It takes new messages from incoming/, routes
//! their recipients, hands deliveries to the delivery agents within each
//! destination's concurrency and rate limits, retries deferred mail with
//! backoff, sends bounces and delay warnings, and keeps the SQLite index (it
//! is its only writer). Wake-ups are hints; timers rescan the queue.

mod accounts;
mod agents;
mod bounce;
mod manager;
mod metrics;
use queue::route;
mod scan;
mod schedule;
mod track;
mod transports;

use manager::Manager;
use queue::index::Index;
use queue::log;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

/// How often incoming/ is scanned without a wake-up.
const INCOMING_SCAN: Duration = Duration::from_secs(5);
/// How long a stop waits for deliveries in flight.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// How long index changes may wait to be committed together. Under load an
/// event-loop turn handles one or two events, and one SQLite transaction per
/// turn was half of qmgr's CPU per message; the queue files are the truth
/// (a lost commit is repaired from them at start), so batching costs no
/// durability, only up to this much staleness in `mailq`.
const COMMIT_INTERVAL: Duration = Duration::from_millis(10);

fn main() {
    // The metrics endpoint is bound while qmgr may still be root.
    let (started, metrics_listener) = queue::service::start_with("qmgr", metrics::bind);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => log::fatal(1, &format!("cannot start the event loop: {e}")),
    };
    if let Err(e) = rt.block_on(run(started, metrics_listener)) {
        log::fatal(1, &format!("{e:#}"));
    }
}

fn open_index(queue: &queue::Queue) -> anyhow::Result<Index> {
    let path = queue.index_path();
    match Index::open_rw(&path) {
        Ok(ix) => Ok(ix),
        Err(e) => {
            // A damaged index is rebuilt from the files (they are the truth).
            let aside = path.with_extension(format!(
                "sqlite.damaged-{}",
                queue::time::micros(std::time::SystemTime::now())
            ));
            log::warning(&format!(
                "{e}; moving it aside to {} and rebuilding from the queue files",
                aside.display()
            ));
            std::fs::rename(&path, &aside)?;
            for ext in ["sqlite-wal", "sqlite-shm"] {
                let _ = std::fs::remove_file(path.with_extension(ext));
            }
            Ok(Index::open_rw(&path)?)
        }
    }
}

async fn run(
    started: queue::service::Started,
    metrics_listener: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let queue::service::Started {
        cfg,
        queue,
        mut listeners,
        ..
    } = started;
    let index = open_index(&queue)?;
    let router = route::Router::new(&cfg).map_err(|errs| {
        anyhow::anyhow!(
            "cannot open routing tables: {}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let wake = match listeners.drain(..).next() {
        Some(fd) => {
            let s = std::os::unix::net::UnixDatagram::from(fd);
            s.set_nonblocking(true)?;
            UnixDatagram::from_std(s)?
        }
        None => {
            let path = queue.public_dir().join("qmgr");
            let _ = std::fs::remove_file(&path);
            let s = UnixDatagram::bind(&path)?;
            let _ = std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(0o666),
            );
            s
        }
    };
    let maxproc = master_maxproc(&cfg);
    let transports = transports::Transports::new(&cfg);
    // The account ledger of the last day (the longest window anyone uses).
    let ledger_since = queue::time::micros(std::time::SystemTime::now() - accounts::LEDGER_KEEP);
    let ledger_rows = index.ledger(ledger_since).unwrap_or_else(|e| {
        log::warning(&format!("{e}; per-account budgets start empty"));
        HashMap::new()
    });
    let next_ticket = ledger_rows
        .values()
        .flatten()
        .map(|r| r.ticket)
        .max()
        .unwrap_or(0);
    let queue_for_recycler = queue.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut m = Manager {
        cfg,
        queue,
        index,
        router,
        msgs: HashMap::new(),
        dests: HashMap::new(),
        due: Default::default(),
        due_of: HashMap::new(),
        deferred_meta: HashMap::new(),
        held: Default::default(),
        agents: HashMap::new(),
        inflight: HashMap::new(),
        next_req: 0,
        next_conn: 0,
        events: tx,
        connecting: HashMap::new(),
        ops: Vec::new(),
        maxproc,
        transport_inflight: HashMap::new(),
        incoming_backlog: false,
        recycler: queue::spare::Recycler::new(&queue_for_recycler),
        transports,
        accounts: HashMap::new(),
        ledger_rows,
        next_ticket,
        account_timer: None,
        metrics: metrics::Metrics::new(&queue_for_recycler, metrics_listener),
    };
    m.ops.push(manager::Op::LedgerPrune {
        before: ledger_since,
    });
    m.reconcile();
    log::info(&format!(
        "queue manager started: {} deferred, {} on hold",
        m.due.len(),
        m.held.len()
    ));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut next_incoming = Instant::now();
    let mut next_full_scan = Instant::now() + m.cfg.queue_run_delay;
    let mut buf = [0u8; 256];
    let mut stopping: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let scrape = m.metrics.wanted();
    loop {
        let now = Instant::now();
        if let Some(deadline) = stopping {
            // Graceful stop: no new deliveries; wait for those in flight so
            // their results are recorded (no duplicates after a restart).
            m.commit();
            if m.inflight.is_empty() || now >= deadline {
                if !m.inflight.is_empty() {
                    log::warning(&format!(
                        "stopping with {} deliveries in flight; they will be retried",
                        m.inflight.len()
                    ));
                }
                log::info("queue manager stopped");
                return Ok(());
            }
            tokio::select! {
                Some(ev) = rx.recv() => handle_event(&mut m, ev),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        if now >= next_incoming || m.incoming_backlog {
            m.scan_incoming();
            next_incoming = now + INCOMING_SCAN;
        }
        if now >= next_full_scan {
            m.rescan();
            next_full_scan = now + m.cfg.queue_run_delay.max(Duration::from_secs(1));
        }
        m.run_due();
        m.dispatch();
        if !m.ops.is_empty() && now >= last_commit + COMMIT_INTERVAL {
            m.commit();
            last_commit = now;
        }
        metrics::refresh(&mut m);
        let mut deadline = next_incoming.min(next_full_scan);
        if !m.ops.is_empty() {
            deadline = deadline.min(last_commit + COMMIT_INTERVAL);
        }
        if let Some(t) = m.next_due() {
            deadline = deadline.min(t);
        }
        if let Some(t) = m.next_dest_timer() {
            deadline = deadline.min(t);
        }
        let deadline = deadline.max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            r = wake.recv(&mut buf) => {
                if let Ok(n) = r {
                    handle_trigger(&mut m, &buf[..n], &mut next_incoming);
                    // Drain further wake-ups without blocking.
                    while let Ok(n) = wake.try_recv(&mut buf) {
                        handle_trigger(&mut m, &buf[..n], &mut next_incoming);
                    }
                }
            }
            Some(ev) = rx.recv() => {
                handle_event(&mut m, ev);
                while let Ok(ev) = rx.try_recv() {
                    handle_event(&mut m, ev);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = sigterm.recv() => {
                m.commit();
                stopping = Some(Instant::now() + STOP_GRACE);
            }
            _ = scrape.notified() => {}
        }
    }
}

fn handle_event(m: &mut Manager, ev: agents::Event) {
    match ev {
        agents::Event::Response { transport, resp } => m.on_response(&transport, resp),
        agents::Event::Connected { transport, agent } => m.on_connected(transport, agent),
        agents::Event::ConnectFailed { transport, error } => {
            m.on_connect_failed(&transport, &error)
        }
        agents::Event::AgentDown {
            transport,
            conn,
            error,
        } => m.on_agent_down(&transport, conn, &error),
    }
}

fn handle_trigger(m: &mut Manager, msg: &[u8], next_incoming: &mut Instant) {
    let Some(&t) = msg.first() else { return };
    let arg = String::from_utf8_lossy(&msg[1..]).trim().to_string();
    match t {
        queue::wake::NEW_MAIL => *next_incoming = Instant::now(),
        queue::wake::FLUSH if arg.is_empty() => {
            log::info("flush: delivering all deferred mail now");
            m.flush_all();
            *next_incoming = Instant::now();
        }
        queue::wake::FLUSH => m.flush_site(&arg),
        b'Q' => m.flush_one(&arg),
        queue::wake::SCAN_DEFERRED => m.run_due(),
        queue::wake::STATUS => m.metrics.request(&arg),
        queue::wake::RESCAN => {
            m.rescan();
            *next_incoming = Instant::now();
        }
        _ => {}
    }
}

/// maxproc per delivery service from master.cf.
fn master_maxproc(cfg: &conf::Config) -> HashMap<String, usize> {
    let path = std::path::Path::new(&cfg.config_directory).join("master.cf");
    let mut out = HashMap::new();
    if let Ok(mc) = conf::mastercf::MasterCf::load(&path) {
        for s in mc.services {
            if s.kind == conf::mastercf::ServiceType::Inet {
                continue; // "smtp inet" (smtpd) is not the "smtp unix" agent
            }
            let n = s
                .maxproc
                .map(|n| n as usize)
                .unwrap_or(cfg.default_process_limit as usize);
            out.insert(s.name.clone(), if n == 0 { usize::MAX } else { n });
        }
    }
    out
}

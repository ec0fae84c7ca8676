//! One SMTP session of the fake: the `submission` state machine of
//! OFFICE365.md §7 (INIT → EHLO → STARTTLS → EHLO → AUTH → MAIL → RCPT+ →
//! DATA/BDAT), with scripted replies and faults, and the differences of the
//! `mx`, `hve` and `acs` listeners (attribution and recipient rules at
//! RCPT, the AUTH checks).
//!
//! Replies are buffered and written when the client's pipelined commands
//! are used up (or before waiting, delaying or closing), so a PIPELINING
//! batch gets its replies in one write, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::command::{CommandError, Params};
use proto::data::BdatReceiver;
use proto::line::{Line, LineReader};
use proto::{Command, Path, Reply, parse_command};
use tokio::net::TcpStream;

mod auth;
mod data;

use super::config::{Profile, TlsVersion};
use super::conn::Conn;
use super::record::{Attribution, ViolationKind};
use super::replies;
use super::script::{Action, Event, Phase};
use super::state::Shared;

/// Longest command line accepted (XOAUTH2 responses run to a few KiB).
const MAX_LINE: usize = 64 * 1024;

/// Whether the session goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// What [`Session::perform`] did.
enum Sent {
    /// A reply went out; `close`: the connection is to be closed after it.
    Reply { reply: Reply, close: bool },
    /// No reply; the connection is to be closed.
    Silent,
}

impl Sent {
    /// A reply below 400 went out and the session goes on.
    fn ok(&self) -> bool {
        matches!(self, Sent::Reply { reply, close: false } if reply.code < 400)
    }

    fn closes(&self) -> bool {
        matches!(self, Sent::Silent | Sent::Reply { close: true, .. })
    }
}

/// The session's next step after `sent`.
fn flow(sent: Sent) -> std::io::Result<Flow> {
    Ok(if sent.closes() {
        Flow::Close
    } else {
        Flow::Continue
    })
}

/// The open mail transaction.
struct Transaction {
    from: String,
    params: Params,
    rcpts: Vec<String>,
    rcpt_params: Vec<Params>,
    /// BDAT chunks so far.
    bdat: Option<(BdatReceiver, Vec<u8>)>,
    /// Bytes after which to drop the connection (scripted fault).
    drop_after: Option<u64>,
}

/// Session state.
pub(crate) struct Session {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    conn: Conn,
    lines: LineReader,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    helo: Option<String>,
    tls: Option<TlsVersion>,
    auth_user: Option<String>,
    /// `appid` of the session's XOAUTH2 token.
    auth_app: Option<String>,
    /// mx: how the session is attributed to the tenant.
    attribution: Option<Attribution>,
    tx: Option<Transaction>,
    accepted: usize,
}

/// Records the end of the session even when its task is aborted.
struct CloseGuard(Arc<Shared>, u64);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.session_closed(self.1);
    }
}

/// Runs one session to its end.
pub(crate) async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, id: u64) {
    let _guard = CloseGuard(shared.clone(), id);
    let mut s = Session {
        shared,
        id,
        peer,
        conn: Conn::Plain(tcp),
        lines: LineReader::new(MAX_LINE),
        out: Vec::new(),
        rbuf: vec![0; 64 * 1024],
        helo: None,
        tls: None,
        auth_user: None,
        auth_app: None,
        attribution: None,
        tx: None,
        accepted: 0,
    };
    if s.shared.cfg.profile == Profile::Mx && s.shared.cfg.connector_ips.contains(&peer.ip()) {
        s.attribution = Some(Attribution::Ip);
        s.shared
            .with_session(id, |l| l.attribution = Some(Attribution::Ip));
    }
    // I/O errors just end the session: the client went away.
    let _ = s.serve().await;
}

impl Session {
    async fn serve(&mut self) -> std::io::Result<()> {
        let cfg = &self.shared.cfg;
        if cfg.implicit_tls && !self.handshake().await {
            return Ok(());
        }
        let greeting = replies::greeting(&self.shared.cfg);
        if self
            .respond(Phase::Connect, greeting, |_| {})
            .await?
            .closes()
        {
            return self.flush().await;
        }
        loop {
            let Some(line) = self.next_line().await? else {
                return Ok(());
            };
            if self.command(line).await? == Flow::Close {
                return self.flush().await;
            }
        }
    }

    // ---- I/O -------------------------------------------------------------

    /// Sends the buffered replies.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.conn.write_all(&out).await
    }

    /// Reads more input into `rbuf` (after flushing); 0 at end of stream.
    /// Silence longer than the idle timeout gets `451 4.7.0` and an error.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        self.flush().await?;
        let idle = self.shared.cfg.idle_timeout;
        match tokio::time::timeout(idle, self.conn.read(&mut self.rbuf)).await {
            Ok(r) => r,
            Err(_) => {
                self.push_reply(&replies::timeout());
                self.flush().await?;
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
    }

    /// The next command line; `None` at end of stream.
    async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            match self.lines.next_line() {
                Some(Ok(line)) => return Ok(Some(line)),
                Some(Err(_)) => {
                    self.push_reply(&replies::line_too_long());
                    continue;
                }
                None => {}
            }
            let n = self.read_some().await?;
            if n == 0 {
                return Ok(None);
            }
            self.lines.feed(&self.rbuf[..n]);
        }
    }

    /// Queues a reply and logs it.
    fn push_reply(&mut self, r: &Reply) {
        let wire = r.to_wire();
        for l in String::from_utf8_lossy(&wire).split("\r\n") {
            if !l.is_empty() {
                self.shared.transcript(self.id, format!("S: {l}"));
            }
        }
        self.out.extend_from_slice(&wire);
    }

    /// Queues a raw `334` challenge (`334 ` with a space when empty, as
    /// Exchange sends it).
    fn push_challenge(&mut self, text: &str) {
        let line = format!("334 {text}");
        self.shared.transcript(self.id, format!("S: {line}"));
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    // ---- scripting -------------------------------------------------------

    fn event(&self, phase: Phase) -> Event {
        Event {
            phase,
            session: self.id,
            peer: self.peer,
            helo: self.helo.clone(),
            tls: self.tls,
            auth_user: self.auth_user.clone(),
            mail_from: self.tx.as_ref().map(|t| t.from.clone()),
            rcpt: None,
            rcpts: self
                .tx
                .as_ref()
                .map(|t| t.rcpts.clone())
                .unwrap_or_default(),
            content: None,
            p2_sender: None,
            accepted_in_session: self.accepted,
        }
    }

    /// Asks the scripts for `phase`.
    fn action(&self, phase: Phase, adjust: impl FnOnce(&mut Event)) -> Action {
        let mut ev = self.event(phase);
        adjust(&mut ev);
        self.shared.action(&ev).unwrap_or_default()
    }

    /// Carries out `action` with `normal` as the default reply.
    async fn perform(&mut self, action: &Action, normal: Reply) -> std::io::Result<Sent> {
        if !action.delay.is_zero() {
            self.flush().await?;
            tokio::time::sleep(action.delay).await;
        }
        if action.silent {
            self.shared.transcript(self.id, "S: <disconnect>".into());
            return Ok(Sent::Silent);
        }
        let mut reply = action.reply.clone().unwrap_or(normal);
        if action.suffix && action.reply.is_some() {
            replies::append_suffix(&self.shared.cfg, &mut reply);
        }
        self.push_reply(&reply);
        Ok(Sent::Reply {
            reply,
            close: action.close,
        })
    }

    /// Scripts `phase` and replies.
    async fn respond(
        &mut self,
        phase: Phase,
        normal: Reply,
        adjust: impl FnOnce(&mut Event),
    ) -> std::io::Result<Sent> {
        let action = self.action(phase, adjust);
        self.perform(&action, normal).await
    }

    // ---- commands --------------------------------------------------------

    async fn command(&mut self, line: Line) -> std::io::Result<Flow> {
        let text = String::from_utf8_lossy(&line.text).into_owned();
        let cmd = parse_command(&line.text);
        let logged = match &cmd {
            Ok(Command::Auth { mechanism, initial }) => match initial {
                Some(_) => format!("C: AUTH {mechanism} <sasl>"),
                None => format!("C: AUTH {mechanism}"),
            },
            _ => format!("C: {text}"),
        };
        self.shared.transcript(self.id, logged);
        let cmd = match cmd {
            Ok(c) => c,
            Err(CommandError::Empty) => return self.simple(replies::unrecognized()),
            Err(_) => return self.simple(replies::invalid_arguments()),
        };
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true).await,
            Command::Helo(name) => self.ehlo(name, false).await,
            Command::Starttls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
            Command::Mail { path, params } => self.mail(path, params).await,
            Command::Rcpt { path, params } => self.rcpt(path, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.tx = None;
                flow(
                    self.respond(Phase::Rset, replies::resetting(), |_| {})
                        .await?,
                )
            }
            Command::Noop => self.simple(replies::ok()),
            Command::Quit => {
                self.respond(Phase::Quit, replies::closing(), |_| {})
                    .await?;
                Ok(Flow::Close)
            }
            Command::Vrfy(_) => self.simple(replies::cannot_vrfy()),
            _ => self.simple(replies::unrecognized()),
        }
    }

    fn simple(&mut self, r: Reply) -> std::io::Result<Flow> {
        self.push_reply(&r);
        Ok(Flow::Continue)
    }

    async fn ehlo(&mut self, name: String, esmtp: bool) -> std::io::Result<Flow> {
        let ip = self.peer.ip().to_string();
        let cfg = &self.shared.cfg;
        let normal = if esmtp {
            replies::ehlo(cfg, &ip, self.tls.is_some())
        } else {
            replies::helo(cfg, &ip)
        };
        let sent = self
            .respond(Phase::Ehlo, normal, |e| e.helo = Some(name.clone()))
            .await?;
        if sent.ok() {
            self.tx = None;
            self.helo = Some(name.clone());
            self.shared.with_session(self.id, |s| s.helo = Some(name));
        }
        flow(sent)
    }

    async fn starttls(&mut self) -> std::io::Result<Flow> {
        if !self.shared.cfg.offers_starttls() || self.tls.is_some() {
            return self.simple(replies::unrecognized());
        }
        if self.helo.is_none() {
            return self.simple(replies::bad_sequence("Send hello first"));
        }
        let sent = self
            .respond(Phase::Starttls, replies::starttls_ready(), |_| {})
            .await?;
        if !sent.ok() {
            return flow(sent);
        }
        self.flush().await?;
        if self.lines.has_buffered() {
            // CVE-2011-0411: plaintext pipelined after STARTTLS is dropped.
            self.lines.take_buffered();
            self.shared
                .with_session(self.id, |s| s.plaintext_after_starttls = true);
        }
        if !self.handshake().await {
            return Ok(Flow::Close);
        }
        self.helo = None;
        self.auth_user = None;
        self.auth_app = None;
        self.tx = None;
        Ok(Flow::Continue)
    }

    /// Runs the TLS handshake; false when it failed (recorded).
    async fn handshake(&mut self) -> bool {
        let Some(acceptor) = self.shared.acceptor() else {
            return false;
        };
        match self.conn.upgrade(&acceptor).await {
            Ok(info) => {
                self.tls = info.version;
                let cfg = &self.shared.cfg;
                let matched = if info.client_verified {
                    cfg.connector_cert_domains
                        .iter()
                        .find(|pat| info.client_names.iter().any(|n| name_matches(pat, n)))
                        .cloned()
                } else {
                    None
                };
                if cfg.profile == Profile::Mx
                    && let Some(m) = &matched
                {
                    self.attribution = Some(Attribution::Certificate(m.clone()));
                }
                let attribution = self.attribution.clone();
                self.shared.transcript(
                    self.id,
                    format!(
                        "-- TLS {} established",
                        info.version.map(|v| v.to_string()).unwrap_or_default()
                    ),
                );
                self.shared.with_session(self.id, |s| {
                    s.tls = info.version;
                    s.sni = info.sni;
                    s.client_cert_names = info.client_names;
                    s.client_cert_verified = info.client_verified;
                    s.attribution = attribution;
                });
                true
            }
            Err(e) => {
                self.shared
                    .transcript(self.id, format!("-- TLS handshake failed: {e}"));
                self.shared.with_session(self.id, |s| s.tls_error = Some(e));
                false
            }
        }
    }

    async fn mail(&mut self, path: Path, params: Params) -> std::io::Result<Flow> {
        let cfg = &self.shared.cfg;
        if self.helo.is_none() {
            return self.simple(replies::bad_sequence("Send hello first"));
        }
        if self.tx.is_some() {
            return self.simple(replies::bad_sequence("Sender already specified"));
        }
        let size = params
            .iter()
            .find(|(k, _)| k == "SIZE")
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        let from = path.address();
        let normal = if cfg.require_auth && self.auth_user.is_none() {
            replies::not_authenticated(cfg)
        } else if size.is_some_and(|s| s > cfg.max_size) {
            replies::too_big()
        } else if cfg.acs.as_ref().is_some_and(|a| {
            !a.senders.is_empty() && !a.senders.iter().any(|x| x.eq_ignore_ascii_case(&from))
        }) {
            replies::acs_sender_refused(cfg)
        } else {
            replies::sender_ok()
        };
        let f = from.clone();
        let sent = self
            .respond(Phase::Mail, normal, |e| e.mail_from = Some(f))
            .await?;
        if sent.ok() {
            self.tx = Some(Transaction {
                from,
                params,
                rcpts: Vec::new(),
                rcpt_params: Vec::new(),
                bdat: None,
                drop_after: None,
            });
        }
        flow(sent)
    }

    async fn rcpt(&mut self, path: Path, params: Params) -> std::io::Result<Flow> {
        if self.tx.is_none() {
            return self.simple(replies::bad_sequence("Need mail command"));
        }
        let addr = path.address();
        let own = self.rcpt_check(&addr);
        let normal = own
            .as_ref()
            .map_or_else(replies::recipient_ok, |(r, _)| r.clone());
        let a = addr.clone();
        let action = self.action(Phase::Rcpt, |e| e.rcpt = Some(a));
        let sent = self.perform(&action, normal).await?;
        if let (Some((_, Some(kind))), None, false) = (&own, &action.reply, action.silent) {
            let who = self
                .auth_user
                .clone()
                .or_else(|| self.tx.as_ref().map(|t| t.from.clone()))
                .unwrap_or_default();
            self.shared.violation(*kind, &who, self.id);
        }
        if let (true, Some(tx)) = (sent.ok(), self.tx.as_mut()) {
            tx.rcpts.push(addr);
            tx.rcpt_params.push(params);
        }
        flow(sent)
    }

    /// The fake's own refusal of a recipient, with the violation it counts.
    fn rcpt_check(&self, rcpt: &str) -> Option<(Reply, Option<ViolationKind>)> {
        let cfg = &self.shared.cfg;
        let tx = self.tx.as_ref()?;
        if cfg.max_recipients.is_some_and(|m| tx.rcpts.len() >= m) {
            return Some((
                replies::too_many_recipients(),
                Some(ViolationKind::RecipientsPerMessage),
            ));
        }
        let domain = domain_of(rcpt);
        let local = cfg.accepts_domain(domain);
        let sender_local = cfg.accepts_domain(domain_of(&tx.from));
        match cfg.profile {
            Profile::Mx if local => {
                if cfg.reject_direct_send && self.attribution.is_none() && sender_local {
                    return Some((replies::direct_send_rejected(cfg), None));
                }
                let known = cfg
                    .known_recipients
                    .as_ref()
                    .is_none_or(|k| k.iter().any(|a| a.eq_ignore_ascii_case(rcpt)));
                (!known).then(|| (replies::recipient_rejected(cfg), None))
            }
            Profile::Mx => match &self.attribution {
                None => Some((replies::tenant_attribution(cfg), None)),
                Some(Attribution::Certificate(_)) => None,
                Some(Attribution::Ip) if sender_local => None,
                Some(Attribution::Ip) => Some((replies::relay_denied_attr36(cfg), None)),
            },
            _ if cfg.internal_only && !cfg.accepted_domains.is_empty() && !local => Some((
                replies::with_suffix(cfg, replies::HVE_EXTERNAL_RECIPIENT),
                None,
            )),
            _ => None,
        }
    }
}

/// The domain of `addr` (after the last `@`; `""` without one).
pub(crate) fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

/// True when certificate name `name` matches connector name `pattern`
/// (`contoso.test`, or `*.contoso.test` for any name below it; a wildcard
/// certificate name `*.contoso.test` matches the same pattern).
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    if p == n {
        return true;
    }
    match p.strip_prefix("*.") {
        Some(base) => n.ends_with(&format!(".{base}")),
        None => false,
    }
}

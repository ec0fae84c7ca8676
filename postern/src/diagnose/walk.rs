//! The walk itself: resolve, connect, banner, EHLO, STARTTLS (or implicit
//! TLS; the handshake is [`super::tls`]), EHLO inside TLS, AUTH
//! ([`super::auth`]), MAIL, RCPT, DATA with `--send`, QUIT — each a
//! [`Step`] in the report. The I/O, the TLS contexts and checks, the
//! address lookup, the AUTH exchange, the rewriting and the MAIL/RCPT
//! commands are the `smtp_client` library's, so what passes here passes in
//! the delivery agent.

use super::auth;
use super::report::{Report, Status, Step};
use super::tls::handshake;
use conf::Config;
use conf::nexthop::Nexthop;
use proto::{Command, Ehlo, parse_ehlo};
use queue::deliver::RcptRequest;
use serde_json::json;
use smtp_client::chat::{Chat, ChatError, Stream};
use smtp_client::outcome::Peer;
use smtp_client::resolve::{self, Target};
use smtp_client::rewrite::Rewriter;
use smtp_client::session::Session;
use smtp_client::settings::{Settings, TlsLevel};
use smtp_client::tls::{TlsEngine, TlsInfo};
use smtp_client::transaction;
use std::time::{Instant, SystemTime};

/// What to walk.
#[derive(Debug)]
pub struct Job<'a> {
    /// The next hop as written (`[smtp.office365.com]:587`).
    pub nexthop: &'a str,
    /// Envelope sender (empty: `<>`).
    pub sender: &'a str,
    /// The recipient.
    pub recipient: &'a str,
    /// Send a test message.
    pub send: bool,
}

/// The password-table keys of a next hop, as the delivery agent tries
/// them: as written, then in canonical form.
pub fn dests(written: &str, nexthop: &Nexthop) -> Vec<String> {
    let written = written.trim().to_string();
    let canonical = nexthop.to_string();
    let mut d = vec![written.clone()];
    if !canonical.eq_ignore_ascii_case(&written) {
        d.push(canonical);
    }
    d
}

/// The mailbox (an address) the route to `nexthop` signs in as, from
/// `smtp_sasl_password_maps` (not sender-dependent).
pub fn mailbox_for(cfg: &Config, nexthop: &str) -> Option<String> {
    if !cfg.smtp_sasl_auth_enable {
        return None;
    }
    let (s, _) = Settings::from_config(cfg);
    let nh = Nexthop::parse(nexthop, s.default_port).ok()?;
    let d = dests(nexthop, &nh);
    let d: Vec<&str> = d.iter().map(String::as_str).collect();
    let host = (!nh.mx).then_some(nh.host.as_str());
    let creds = queue::credentials::PasswordMaps::open(cfg)
        .lookup(false, "", host, &d)
        .ok()??;
    creds.user.contains('@').then_some(creds.user)
}

/// `smtp_tls_security_level` as postern applies it.
pub fn level_name(l: TlsLevel) -> &'static str {
    match l {
        TlsLevel::None => "none",
        TlsLevel::May => "may",
        TlsLevel::Encrypt => "encrypt",
        TlsLevel::Verify => "verify",
        TlsLevel::Secure => "secure",
    }
}

/// What a reply (as quoted, `550 5.7.60 text`) means: the Exchange Online
/// table, else a word on its class.
pub fn meaning(said: &str, phase: &str) -> String {
    if let Some(e) = queue::explain::explain(said) {
        return e.to_string();
    }
    if said.starts_with("421") {
        return format!(
            "The server is closing the connection at {phase} (overloaded, or it refuses this client for now); postern defers the mail and tries again later."
        );
    }
    if said.starts_with('4') {
        format!(
            "A temporary refusal at {phase}: postern defers the mail and tries again later. If it lasts, the reply says why."
        )
    } else {
        format!(
            "A permanent refusal at {phase}: postern bounces the mail (or holds the route, for the account and configuration errors Exchange Online uses). The reply says why."
        )
    }
}

/// The walk's state: the configuration, then the open connection.
struct Walker<'a> {
    cfg: &'a Config,
    s: Settings,
    job: &'a Job<'a>,
    nexthop: Nexthop,
    engine: TlsEngine,
}

/// Runs the walk for `job` with the transport's configuration `cfg`,
/// adding one step per stage to `r`.
pub async fn run(cfg: &Config, job: &Job<'_>, r: &mut Report) {
    let (s, warnings) = Settings::from_config(cfg);
    if let Some(last) = r.steps.last_mut() {
        last.detail.extend(warnings);
    }
    let nexthop = match Nexthop::parse(job.nexthop, s.default_port) {
        Ok(n) => n,
        Err(e) => {
            r.push(Step::fail("resolve", format!("bad next hop: {e}")));
            return;
        }
    };
    let engine = TlsEngine::new(&s.tls);
    let w = Walker {
        cfg,
        s,
        job,
        nexthop,
        engine,
    };
    let Some(targets) = w.resolve(r).await else {
        return;
    };
    let Some(chat) = w.connect(&targets, r).await else {
        return;
    };
    let mut open = Open {
        chat,
        alive: true,
        tls: None,
    };
    // A failed step ends the walk, but the session still gets its QUIT
    // while the connection lasts.
    let _ = w.greet(&mut open, r).await;
    if open.alive {
        w.quit(open.chat, r).await;
    }
}

/// An open connection.
pub struct Open {
    /// The connection.
    pub chat: Chat,
    /// False once the connection is known to be gone (QUIT is pointless).
    pub alive: bool,
    /// TLS, once active.
    pub tls: Option<TlsInfo>,
}

impl Walker<'_> {
    fn t(&self) -> smtp_client::settings::Timeouts {
        self.s.timeouts
    }

    async fn resolve(&self, r: &mut Report) -> Option<Vec<Target>> {
        let nh = &self.nexthop;
        let resolver = match queue::dns::server_from_env().and_then(queue::dns::resolver) {
            Ok(x) => x,
            Err(e) => {
                r.push(
                    Step::fail("resolve", e)
                        .explain("Fix the DNS configuration of this machine (/etc/resolv.conf)."),
                );
                return None;
            }
        };
        match resolve::targets(&resolver, &self.s, nh).await {
            Ok(t) => {
                let addrs = |host: &str| {
                    t.iter()
                        .filter(|x| x.host == host)
                        .map(|x| x.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut step = if nh.host.parse::<std::net::IpAddr>().is_ok() {
                    Step::ok("resolve", format!("{} (an address: no lookup)", nh.host))
                } else if nh.mx && t.iter().any(|x| x.pref > 0 || x.host != nh.host) {
                    let mut hosts: Vec<(u16, &str)> = Vec::new();
                    for x in &t {
                        if !hosts.iter().any(|h| h.1 == x.host) {
                            hosts.push((x.pref, &x.host));
                        }
                    }
                    let mut step = Step::ok(
                        "resolve",
                        format!("{}: {} mail exchanger(s) (MX)", nh.host, hosts.len()),
                    );
                    for (pref, host) in hosts {
                        step = step.line(format!("MX {pref} {host} -> {}", addrs(host)));
                    }
                    step
                } else if nh.mx {
                    Step::ok(
                        "resolve",
                        format!(
                            "{} -> {} (no MX record: the domain's own address)",
                            nh.host,
                            addrs(&nh.host)
                        ),
                    )
                } else {
                    Step::ok("resolve", format!("{} -> {}", nh.host, addrs(&nh.host)))
                };
                step = step.data(json!({
                    "mx": nh.mx,
                    "targets": t.iter().map(|x| json!({
                        "host": x.host, "address": x.addr.to_string(), "port": x.port, "preference": x.pref,
                    })).collect::<Vec<_>>(),
                }));
                r.push(step);
                Some(t)
            }
            Err(o) => {
                let fix = if o.dsn.starts_with('4') {
                    "The DNS servers did not answer in time or failed: check /etc/resolv.conf and that this machine reaches its DNS servers. postern defers mail until it can look the name up."
                } else if nh.mx {
                    "The recipient's domain has no mail servers in DNS (or does not exist). Check the address; to send through a smart host instead, set relayhost (e.g. [smtp.office365.com]:587)."
                } else {
                    "The host name of the next hop does not exist in DNS. Check its spelling in relayhost or transport_maps; for Microsoft 365 it is [smtp.office365.com]:587 (SMTP AUTH) or [<tenant>.mail.protection.outlook.com]:25 (connector or Direct Send)."
                };
                r.push(Step::fail("resolve", o.reason).explain(fix));
                None
            }
        }
    }

    async fn connect(&self, targets: &[Target], r: &mut Report) -> Option<Chat> {
        let mut step = Step::fail("connect", "no address to connect to");
        let limit = match self.s.mx_address_limit {
            0 => targets.len(),
            n => n.min(targets.len()),
        };
        for t in &targets[..limit] {
            match smtp_client::connect::tcp(t, &self.s).await {
                Ok(c) => {
                    let peer = Peer {
                        name: t.host.clone(),
                        addr: t.addr,
                        port: t.port,
                    };
                    step.status = Status::Ok;
                    step.summary = format!("connected to {}", peer.namaddrport());
                    r.push(step);
                    return Some(Chat::new(Stream::Plain(c), peer));
                }
                Err(o) => {
                    step.summary = o.reason.clone();
                    step.detail.push(o.reason);
                }
            }
        }
        if step.detail.len() == 1 {
            step.detail.clear();
        }
        let port = self.nexthop.port;
        r.push(step.explain(format!(
            "Nothing accepted the connection on port {port}. Check the port (Microsoft 365: 587 for SMTP AUTH, 25 for the MX endpoint), firewalls on the way (many networks block outgoing port 25; smtp_connect_timeout ran out if packets are dropped), and that the server is up."
        )));
        None
    }

    /// From the banner to AUTH, MAIL, RCPT and DATA; `None` once a step
    /// failed.
    async fn greet(&self, o: &mut Open, r: &mut Report) -> Option<()> {
        let t = self.t();
        if self.s.tls.wrappermode
            && handshake(
                &self.s,
                &self.engine,
                &self.nexthop,
                o,
                r,
                "tls",
                "implicit TLS (smtp_tls_wrappermode = yes)",
            )
            .await
            .is_none()
        {
            // The greeting is still unread: a QUIT now would get it as
            // its reply.
            o.alive = false;
            return None;
        }
        let greeting = match o.chat.reply(t.helo).await {
            Ok(g) => g,
            Err(e) => {
                let hint = if self.s.tls.wrappermode {
                    "The server said nothing inside TLS: it may expect STARTTLS instead (port 587 or 25: set smtp_tls_wrappermode = no)."
                } else {
                    "The server accepted the connection but sent no greeting: it may not be an SMTP server, or it expects TLS from the first byte (port 465: set smtp_tls_wrappermode = yes and smtp_tls_security_level = encrypt)."
                };
                return self.io_failed(
                    o,
                    r,
                    "banner",
                    &e,
                    "receiving the initial server greeting",
                    hint,
                );
            }
        };
        if !greeting.is_positive() {
            o.alive = greeting.code != 421;
            r.push(
                Step::fail("banner", "the server refuses to talk to this client")
                    .reply(greeting.said_text())
                    .explain(meaning(&greeting.said_text(), "the greeting")),
            );
            return None;
        }
        r.push(Step::ok("banner", greeting.one_line()));
        let ehlo = self.hello(o, r, "ehlo").await?;
        let offered = ehlo.as_ref().is_some_and(|e| e.has("STARTTLS"));
        let level = self.s.tls.level;
        let ehlo = if o.tls.is_some() {
            ehlo
        } else if level == TlsLevel::None {
            let mut step = Step::new(
                "starttls",
                Status::Skip,
                "smtp_tls_security_level = none: TLS is not used",
            );
            if offered {
                step = step.explain("The server offers STARTTLS; passwords and mail cross the network unencrypted. Set smtp_tls_security_level = encrypt (or verify).");
            }
            r.push(step);
            ehlo
        } else if !offered {
            let who = o.chat.peer.namaddr();
            if level.required() {
                r.push(
                    Step::fail("starttls", format!("TLS is required (smtp_tls_security_level = {}), but {who} does not offer STARTTLS", level_name(level)))
                        .explain("Check that this is the right server and port (Exchange Online offers STARTTLS on 587 and 25), and that nothing on the way (a firewall doing SMTP inspection) strips STARTTLS from the EHLO reply."),
                );
                return None;
            }
            r.push(
                Step::new("starttls", Status::Warn, format!("{who} does not offer STARTTLS: mail goes unencrypted"))
                    .explain("At smtp_tls_security_level = may postern sends without TLS when the server offers none. A smart host that should encrypt (Exchange Online does) is not being reached: check the server and port."),
            );
            ehlo
        } else if let Err(e) = self.engine.context(level) {
            let required = level.required();
            r.push(
                Step::new(
                    "starttls",
                    if required { Status::Fail } else { Status::Warn },
                    format!("postern's TLS settings are unusable: {e}"),
                )
                .explain(if required {
                    "Fix the smtp_tls_* parameter named above (postern check); until then no mail goes out on this route."
                } else {
                    "Fix the smtp_tls_* parameter named above (postern check); until then mail goes out without TLS."
                }),
            );
            if required {
                return None;
            }
            ehlo
        } else {
            let reply = match o.chat.command(&Command::Starttls, t.starttls).await {
                Ok(x) => x,
                Err(e) => {
                    return self.io_failed(o, r, "starttls", &e, "receiving the STARTTLS response", "The connection broke at STARTTLS; try again, and check for a firewall that inspects SMTP.");
                }
            };
            if !reply.is_positive() {
                let step = Step::new(
                    "starttls",
                    if level.required() {
                        Status::Fail
                    } else {
                        Status::Warn
                    },
                    "the server refused STARTTLS",
                )
                .reply(reply.said_text())
                .explain(meaning(&reply.said_text(), "STARTTLS"));
                let fail = step.status == Status::Fail;
                r.push(step);
                o.alive = reply.code != 421;
                if fail || !o.alive {
                    return None;
                }
                ehlo
            } else {
                handshake(
                    &self.s,
                    &self.engine,
                    &self.nexthop,
                    o,
                    r,
                    "starttls",
                    "STARTTLS",
                )
                .await?;
                self.hello(o, r, "ehlo-tls").await?
            }
        };
        let mailbox = auth::step(
            self.cfg,
            &self.s,
            &self.nexthop,
            self.job,
            o,
            ehlo.as_ref(),
            r,
        )
        .await?;
        self.transaction(o, ehlo, mailbox, r).await
    }

    /// A failed exchange: the connection is gone.
    fn io_failed(
        &self,
        o: &mut Open,
        r: &mut Report,
        name: &'static str,
        e: &ChatError,
        while_: &str,
        fix: &str,
    ) -> Option<()> {
        o.alive = false;
        r.push(Step::fail(name, o.chat.failure(e, while_).reason).explain(fix));
        None
    }

    /// EHLO (HELO when EHLO is refused): the extensions, `None` after HELO.
    async fn hello(
        &self,
        o: &mut Open,
        r: &mut Report,
        name: &'static str,
    ) -> Option<Option<Ehlo>> {
        let t = self.t();
        let helo = self.s.helo_name.clone();
        let reply = match o.chat.command(&Command::Ehlo(helo.clone()), t.helo).await {
            Ok(x) => x,
            Err(e) => {
                self.io_failed(o, r, name, &e, "performing the EHLO handshake", "The server closed the connection after EHLO; it may refuse this client or this EHLO name (smtp_helo_name).");
                return None;
            }
        };
        if reply.is_positive() {
            let ehlo = parse_ehlo(&reply);
            let list: Vec<String> = ehlo
                .extensions
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k} {v}")
                    }
                })
                .collect();
            let mut step = Step::ok(name, format!("EHLO {helo}: {}", ehlo.greeting))
                .line(format!("extensions: {}", list.join(", ")))
                .data(json!({ "extensions": list }));
            if name == "ehlo-tls" && !ehlo.has("AUTH") {
                step = step.line("no AUTH offered inside TLS");
            }
            r.push(step);
            return Some(Some(ehlo));
        }
        if reply.code == 421 {
            o.alive = false;
            r.push(
                Step::fail(name, format!("EHLO {helo} refused"))
                    .reply(reply.said_text())
                    .explain(meaning(&reply.said_text(), "EHLO")),
            );
            return None;
        }
        let ehlo_said = reply.said_text();
        match o.chat.command(&Command::Helo(helo.clone()), t.helo).await {
            Ok(h) if h.is_positive() => {
                r.push(
                    Step::new(name, Status::Warn, format!("EHLO {helo} refused; HELO accepted"))
                        .reply(ehlo_said)
                        .explain("The server does not speak ESMTP: no STARTTLS, no AUTH, no SIZE. postern falls back to HELO as Postfix does."),
                );
                Some(None)
            }
            Ok(h) => {
                o.alive = h.code != 421;
                r.push(
                    Step::fail(name, format!("EHLO and HELO {helo} refused"))
                        .reply(h.said_text())
                        .explain(meaning(&h.said_text(), "HELO")),
                );
                None
            }
            Err(e) => {
                self.io_failed(
                    o,
                    r,
                    name,
                    &e,
                    "performing the HELO handshake",
                    "The server closed the connection after EHLO and HELO.",
                );
                None
            }
        }
    }

    /// MAIL FROM, RCPT TO and, with `--send`, DATA.
    async fn transaction(
        &self,
        o: &mut Open,
        ehlo: Option<Ehlo>,
        mailbox: Option<String>,
        r: &mut Report,
    ) -> Option<()> {
        let job = self.job;
        let rcpt = RcptRequest {
            idx: 0,
            addr: job.recipient.to_string(),
            orcpt: None,
            notify: None,
        };
        let content = test_message(self.cfg, job, r.route.as_deref().unwrap_or(job.nexthop));
        let rewritten = Rewriter::new(self.cfg).and_then(|rw| {
            rw.apply(
                mailbox.as_deref(),
                job.sender,
                std::slice::from_ref(&rcpt),
                &content,
            )
        });
        let rewritten = match rewritten {
            Ok(x) => x,
            Err(e) => {
                r.push(
                    Step::fail("mail", e)
                        .explain("Fix smtp_generic_maps (postern check), then try again."),
                );
                return None;
            }
        };
        let sender = rewritten
            .sender
            .clone()
            .unwrap_or_else(|| job.sender.to_string());
        let recipients = rewritten.recipients.clone().unwrap_or_else(|| vec![rcpt]);
        let content = rewritten.content.clone().unwrap_or(content);
        let tx = transaction::Job {
            queue_id: "diagnose",
            sender: &sender,
            recipients: &recipients,
            content: &content,
            body: None,
            envid: None,
            ret: None,
            smtputf8: false,
        };
        let peer = o.chat.peer.clone();
        let chat = std::mem::replace(&mut o.chat, Chat::new(Stream::Closed, peer));
        let mut session = Session {
            chat,
            ehlo,
            tls: o.tls.clone(),
            created: Instant::now(),
            uses: 0,
        };
        let result = self
            .commands(&mut session, &tx, job, &rewritten.sender, r)
            .await;
        o.chat = session.chat;
        match result {
            Ok(()) => Some(()),
            Err(alive) => {
                o.alive = alive;
                None
            }
        }
    }

    /// The commands of the transaction; `Err(alive)` when one failed.
    async fn commands(
        &self,
        session: &mut Session,
        tx: &transaction::Job<'_>,
        job: &Job<'_>,
        rewritten_sender: &Option<String>,
        r: &mut Report,
    ) -> Result<(), bool> {
        let t = self.t();
        let mail = transaction::mail_command(session, tx);
        let mut extra = Vec::new();
        if let Some(s) = rewritten_sender {
            extra.push(format!(
                "envelope sender {} rewritten to {s} (smtp_send_as_mailbox / smtp_generic_maps), as the delivery agent does",
                show(job.sender)
            ));
        }
        self.command(session, &mail, "mail", "MAIL FROM", t.mail, extra, r)
            .await?;
        let rcpt = transaction::rcpt_command(session, &tx.recipients[0]);
        let mut extra = Vec::new();
        if !tx.recipients[0].addr.eq_ignore_ascii_case(job.recipient) {
            extra.push(format!(
                "recipient rewritten to {} (smtp_generic_maps)",
                tx.recipients[0].addr
            ));
        }
        self.command(session, &rcpt, "rcpt", "RCPT TO", t.rcpt, extra, r)
            .await?;
        if !job.send {
            r.push(Step::new(
                "data",
                Status::Skip,
                "no test message sent (add --send to send one)",
            ));
            return Ok(());
        }
        let chat = &mut session.chat;
        let go = match chat.command(&Command::Data, t.data_init).await {
            Ok(x) => x,
            Err(e) => {
                r.push(
                    Step::fail("data", chat.failure(&e, "sending DATA").reason)
                        .explain("The server closed the connection at DATA."),
                );
                return Err(false);
            }
        };
        if go.code != 354 {
            r.push(
                Step::fail("data", "DATA refused")
                    .reply(go.said_text())
                    .explain(meaning(&go.said_text(), "DATA")),
            );
            return Err(go.code != 421);
        }
        let mut wire = Vec::with_capacity(tx.content.len() + 64);
        proto::dot_stuff(tx.content, &mut wire);
        let chat = &mut session.chat;
        let reply = match chat.send(&wire, t.data_xfer).await {
            Ok(()) => chat.reply(t.data_done).await,
            Err(e) => Err(e),
        };
        let reply = match reply {
            Ok(x) => x,
            Err(e) => {
                r.push(
                    Step::fail("data", chat.failure(&e, "sending end of data -- message may be sent more than once").reason)
                        .explain("The connection broke while the test message was sent or before the server answered; the server may or may not have taken it."),
                );
                return Err(false);
            }
        };
        let about = format!("Subject: postern diagnose test, {} bytes", tx.content.len());
        if reply.is_positive() {
            r.push(
                Step::ok(
                    "data",
                    format!("test message accepted: {}", reply.one_line()),
                )
                .line(format!("DATA -> {}", go.one_line()))
                .line(about),
            );
            return Ok(());
        }
        r.push(
            Step::fail("data", "the server refused the test message")
                .line(about)
                .reply(reply.said_text())
                .explain(meaning(&reply.said_text(), "the end of DATA")),
        );
        Err(reply.code != 421)
    }

    /// One command and its step; `Err(alive)` when it failed.
    #[allow(clippy::too_many_arguments)]
    async fn command(
        &self,
        session: &mut Session,
        cmd: &Command,
        name: &'static str,
        what: &str,
        limit: std::time::Duration,
        extra: Vec<String>,
        r: &mut Report,
    ) -> Result<(), bool> {
        let wire = cmd.to_wire();
        let text = String::from_utf8_lossy(&wire).trim_end().to_string();
        let chat = &mut session.chat;
        let reply = match chat.command(cmd, limit).await {
            Ok(x) => x,
            Err(e) => {
                r.push(
                    Step::fail(name, chat.failure(&e, &format!("sending {what}")).reason)
                        .explain("The server closed the connection; it may refuse this client."),
                );
                return Err(false);
            }
        };
        let ok = reply.is_positive();
        let mut step = if ok {
            Step::ok(name, format!("{text} -> {}", reply.one_line()))
        } else {
            Step::fail(name, format!("{text} refused"))
                .reply(reply.said_text())
                .explain(meaning(&reply.said_text(), what))
        };
        step.detail = extra;
        r.push(step);
        if ok { Ok(()) } else { Err(reply.code != 421) }
    }

    async fn quit(&self, mut chat: Chat, r: &mut Report) {
        let limit = self.t().quit;
        match chat.command(&Command::Quit, limit).await.ok() {
            Some(x) => r.push(Step::ok("quit", x.one_line())),
            None => r.push(Step::new(
                "quit",
                Status::Warn,
                "no reply to QUIT (the server had closed the connection)",
            )),
        }
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(limit, chat.stream.shutdown()).await;
    }
}

/// `<>` for the null address.
fn show(a: &str) -> String {
    if a.is_empty() {
        "<>".into()
    } else {
        a.to_string()
    }
}

/// The `--send` test message (CRLF line ends).
fn test_message(cfg: &Config, job: &Job<'_>, route: &str) -> Vec<u8> {
    let now = SystemTime::now();
    let host = if cfg.myhostname.is_empty() {
        "localhost"
    } else {
        cfg.myhostname.as_str()
    };
    let from = if job.sender.is_empty() {
        format!("MAILER-DAEMON@{host}")
    } else {
        job.sender.to_string()
    };
    let lines = [
        format!("Date: {}", queue::time::rfc2822_date(now)),
        format!("From: <{from}>"),
        format!("To: <{}>", job.recipient),
        "Subject: postern diagnose test".to_string(),
        format!(
            "Message-ID: <{}.diagnose.{}@{host}>",
            queue::time::message_id_stamp(now),
            std::process::id()
        ),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: text/plain; charset=us-ascii".to_string(),
        "Content-Transfer-Encoding: 7bit".to_string(),
        "Auto-Submitted: auto-generated".to_string(),
        String::new(),
        format!("This is a test message from postern diagnose on {host},"),
        format!("sent through {route} to check that mail gets through."),
        "No reply is needed.".to_string(),
    ];
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Reply;

    #[test]
    fn explanations_fall_back_on_the_reply_class() {
        let r = Reply::new(550, None, "no such user");
        assert!(meaning(&r.said_text(), "RCPT TO").contains("permanent refusal at RCPT TO"));
        let r = Reply::new(450, None, "busy");
        assert!(meaning(&r.said_text(), "RCPT TO").contains("temporary refusal"));
        assert!(meaning("421 4.3.2 bye", "MAIL FROM").contains("closing the connection"));
        let r = proto::Reply::new(
            535,
            proto::EnhancedCode::parse("5.7.139"),
            "Authentication unsuccessful, the user credentials were incorrect.",
        );
        assert!(meaning(&r.said_text(), "AUTH").contains("smtp_sasl_password_maps is wrong"));
    }

    #[test]
    fn test_message_is_crlf_with_the_subject() {
        let cfg = Config::defaults();
        let job = Job {
            nexthop: "[h]:587",
            sender: "a@b.test",
            recipient: "c@d.test",
            send: true,
        };
        let m = String::from_utf8(test_message(&cfg, &job, "smtp:[h]:587")).unwrap();
        assert!(m.contains("\r\nSubject: postern diagnose test\r\n"));
        assert!(m.contains("From: <a@b.test>\r\n"));
        assert!(!m.replace("\r\n", "").contains('\n'));
        assert!(m.ends_with("\r\n"));
    }

    #[test]
    fn password_keys_of_a_next_hop() {
        let nh = Nexthop::parse("[SMTP.office365.com]:587", 25).unwrap();
        assert_eq!(
            dests("[SMTP.office365.com]:587", &nh),
            vec!["[SMTP.office365.com]:587".to_string()]
        );
        let nh = Nexthop::parse("[smtp.office365.com]", 587).unwrap();
        assert_eq!(dests("[smtp.office365.com]", &nh).len(), 2);
    }
}

//! Command dispatch and the commands that do not move message data: EHLO,
//! HELO, MAIL, RCPT, RSET, NOOP, QUIT, VRFY, HELP, STARTTLS. Replies and
//! codes follow Postfix's smtpd.

use crate::policy::{Ctx, Stage, Verdict};
use crate::session::{End, Session, Tx};
use crate::stream::Conn;
use crate::tls::TlsInfo;
use proto::address::Path;
use proto::command::{Command, ParseOptions, parse_command_with};
use proto::line::Line;
use queue::log;

/// What the session does after a command.
pub enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection (after flushing).
    Close,
}

/// Handles one command line.
pub async fn dispatch(s: &mut Session, line: Line) -> Result<Next, End> {
    let opts = ParseOptions {
        strict_rfc821_envelopes: s.shared.cfg.strict_rfc821_envelopes,
    };
    if line.bare_lf && crate::data::bare_lf_mode(s) == proto::data::BareLf::Reject {
        s.last_cmd = "UNKNOWN";
        s.count("unknown", false);
        let code = s.shared.cfg.smtpd_forbid_bare_newline_reject_code as u16;
        let enh = if code >= 500 { "5.5.2" } else { "4.5.2" };
        s.reply(code, enh, "Error: bare <LF> received");
        s.error().await?;
        return Ok(Next::Continue);
    }
    let cmd = match parse_command_with(&line.text, opts) {
        Ok(c) => c,
        Err(e) => {
            s.last_cmd = "UNKNOWN";
            s.count("unknown", false);
            s.reply_raw(&e.reply());
            s.error().await?;
            return Ok(Next::Continue);
        }
    };
    s.last_cmd = match &cmd {
        Command::Ehlo(_) => "EHLO",
        Command::Helo(_) => "HELO",
        Command::Mail { .. } => "MAIL",
        Command::Rcpt { .. } => "RCPT",
        Command::Data => "DATA",
        Command::Bdat { .. } => "BDAT",
        Command::Rset => "RSET",
        Command::Noop => "NOOP",
        Command::Quit => "QUIT",
        Command::Vrfy(_) => "VRFY",
        Command::Starttls => "STARTTLS",
        Command::Auth { .. } => "AUTH",
        _ => "UNKNOWN",
    };
    check_pipelining(s, &cmd);
    match cmd {
        Command::Ehlo(h) => helo(s, h, true).await,
        Command::Helo(h) => helo(s, h, false).await,
        Command::Mail { path, params } => mail(s, path, params).await,
        Command::Rcpt { path, params } => rcpt(s, path, params, &line.text).await,
        Command::Data => crate::data::data(s).await,
        Command::Bdat { size, last } => crate::data::bdat(s, size, last).await,
        Command::Auth { mechanism, initial } => crate::auth::auth(s, &mechanism, initial).await,
        Command::Starttls => starttls(s).await,
        Command::Rset => {
            s.reset_tx();
            s.count("rset", true);
            junk(s).await?;
            s.reply(250, "2.0.0", "Ok");
            Ok(Next::Continue)
        }
        Command::Noop => {
            s.count("noop", true);
            junk(s).await?;
            s.reply(250, "2.0.0", "Ok");
            Ok(Next::Continue)
        }
        Command::Quit => {
            s.count("quit", true);
            s.reply(221, "2.0.0", "Bye");
            Ok(Next::Close)
        }
        Command::Vrfy(_) => {
            junk(s).await?;
            if s.shared.cfg.disable_vrfy_command {
                s.count("vrfy", false);
                s.reply(502, "5.5.1", "VRFY command is disabled");
                s.error().await?;
            } else {
                s.count("vrfy", true);
                // A relay has no local users to verify.
                s.reply(
                    252,
                    "2.0.0",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
            }
            Ok(Next::Continue)
        }
        Command::Help(_) => {
            s.count("unknown", true);
            s.reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH",
            );
            Ok(Next::Continue)
        }
        _ => {
            s.count("unknown", false);
            s.reply(502, "5.5.2", "Error: command not recognized");
            s.error().await?;
            Ok(Next::Continue)
        }
    }
}

/// NOOP, RSET and VRFY beyond smtpd_junk_command_limit count as errors.
async fn junk(s: &mut Session) -> Result<(), End> {
    s.junk += 1;
    if s.junk > s.shared.cfg.smtpd_junk_command_limit {
        s.error().await?;
    }
    Ok(())
}

/// Notes improper pipelining as Postfix does: input already waiting after
/// a command that must end a group (HELO, EHLO, DATA, NOOP, VRFY), or
/// after any command of a client that was not offered PIPELINING (HELO
/// sessions). `reject_unauth_pipelining` then refuses the client's
/// requests; typical of spam software that does not wait for replies.
fn check_pipelining(s: &mut Session, cmd: &Command) {
    if s.ill_pipelining || !s.reader.has_buffered() {
        return;
    }
    let ends_group = matches!(
        cmd,
        Command::Helo(_) | Command::Ehlo(_) | Command::Data | Command::Noop | Command::Vrfy(_)
    );
    // Before any HELO/EHLO, or after HELO, PIPELINING was never offered.
    let offered = s.esmtp && s.helo.is_some();
    if !ends_group && offered {
        return;
    }
    s.ill_pipelining = true;
    let next = s.reader.peek_buffered();
    let shown: String = String::from_utf8_lossy(&next[..next.len().min(100)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    log::info(&format!(
        "improper command pipelining after {} from {}: {shown}",
        s.last_cmd,
        s.peer.namaddr()
    ));
}

pub(crate) fn ctx<'a>(s: &'a Session, protocol: &'a str) -> Ctx<'a> {
    Ctx {
        client_addr: s.peer.addr,
        client_name: &s.peer.name,
        helo: s.helo.as_deref(),
        sender: s.tx.as_ref().map(|t| t.sender.as_str()),
        recipient: None,
        recipient_routed: false,
        sasl_user: s.sasl.as_ref().map(|(_, u)| u.as_str()),
        tls: s.tls.is_some(),
        protocol,
        ill_pipelining: s.ill_pipelining,
    }
}

async fn helo(s: &mut Session, name: String, esmtp: bool) -> Result<Next, End> {
    let verb = if esmtp { "ehlo" } else { "helo" };
    let proto = if esmtp { "ESMTP" } else { "SMTP" };
    let mut c = ctx(s, proto);
    c.helo = Some(&name);
    if let Verdict::Reject { reply, log } = s.shared.policy.check(Stage::Helo, &c).await {
        log_reject(s, "HELO", &log, None);
        s.count(verb, false);
        s.reply_raw(&reply);
        s.error().await?;
        return Ok(Next::Continue);
    }
    s.reset_tx();
    s.helo = Some(name);
    s.esmtp = esmtp;
    s.count(verb, true);
    let cfg = &s.shared.cfg;
    let host = cfg.myhostname.clone();
    if !esmtp {
        s.reply(250, "", &host);
        return Ok(Next::Continue);
    }
    let mut lines = vec![host, "PIPELINING".to_string()];
    lines.push(if cfg.message_size_limit > 0 {
        format!("SIZE {}", cfg.message_size_limit)
    } else {
        "SIZE".into()
    });
    if !cfg.disable_vrfy_command {
        lines.push("VRFY".into());
    }
    if s.tls.is_none() && s.shared.tls.is_some() {
        lines.push("STARTTLS".into());
    }
    if let Some(mechs) = crate::auth::offered(s) {
        lines.push(format!("AUTH {mechs}"));
    }
    lines.push("ENHANCEDSTATUSCODES".into());
    lines.push("8BITMIME".into());
    lines.push("DSN".into());
    if cfg.smtputf8_enable {
        lines.push("SMTPUTF8".into());
    }
    lines.push("CHUNKING".into());
    s.reply(250, "", &lines.join("\n"));
    Ok(Next::Continue)
}

/// Must the client use STARTTLS before MAIL (smtpd_tls_security_level = encrypt)?
fn tls_required(s: &Session) -> bool {
    s.shared.cfg.smtpd_tls_security_level == "encrypt" && s.tls.is_none()
}

async fn mail(
    s: &mut Session,
    path: Path,
    params: Vec<(String, Option<String>)>,
) -> Result<Next, End> {
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    let fail = |s: &mut Session, code: u16, enh: &str, text: &str| {
        s.count("mail", false);
        s.reply(code, enh, text);
    };
    if cfg.smtpd_helo_required && s.helo.is_none() {
        fail(s, 503, "5.5.1", "Error: send HELO/EHLO first");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if tls_required(s) {
        fail(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if s.tx.is_some() {
        fail(s, 503, "5.5.1", "Error: nested MAIL command");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if let Some(r) = s.client_reject.clone() {
        s.count("mail", false);
        s.reply_raw(&r);
        s.error().await?;
        return Ok(Next::Continue);
    }
    let mut tx = Tx {
        sender: match &path {
            Path::Null => String::new(),
            Path::Mailbox(m) => m.to_string(),
        },
        ..Tx::default()
    };
    for (k, v) in params {
        match (k.as_str(), v) {
            ("SIZE", Some(v)) => {
                let size: u64 = v.parse().unwrap_or(u64::MAX);
                if cfg.message_size_limit > 0 && size > cfg.message_size_limit {
                    fail(s, 552, "5.3.4", "Message size exceeds fixed limit");
                    s.error().await?;
                    return Ok(Next::Continue);
                }
                tx.size = size;
            }
            ("BODY", Some(v))
                if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") =>
            {
                tx.body = Some(v.to_ascii_uppercase());
            }
            ("SMTPUTF8", None) if cfg.smtputf8_enable => tx.smtputf8 = true,
            ("RET", Some(v))
                if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") =>
            {
                tx.ret = Some(v.to_ascii_uppercase());
            }
            ("ENVID", Some(v)) => tx.envid = proto::command::xtext_decode(&v).ok(),
            ("AUTH", Some(_)) => {}
            (k, _) => {
                fail(s, 555, "5.5.4", &format!("Unsupported option: {k}"));
                s.error().await?;
                return Ok(Next::Continue);
            }
        }
    }
    if let Err(free) = storage_ok(cfg, tx.size) {
        log::warning(&format!(
            "not enough free space in mail queue: {free} bytes < 1.5*message size {}",
            tx.size
        ));
        fail(s, 452, "4.3.1", "Insufficient system storage");
        s.error().await?;
        return Ok(Next::Continue);
    }
    let rate = if s
        .shared
        .limit_exceptions
        .matches(s.peer.addr, s.sasl.is_some())
    {
        Ok(())
    } else {
        s.shared.anvil.message(s.peer.addr)
    };
    if let Err(rate) = rate {
        let addr = s.peer.addr;
        log::warning(&format!(
            "Message delivery request rate limit exceeded: {rate} from {} for service {}",
            s.peer.namaddr(),
            s.shared.service
        ));
        fail(
            s,
            450,
            "4.7.1",
            &format!("Error: too much mail from {addr}"),
        );
        s.error().await?;
        return Ok(Next::Continue);
    }
    let proto = s.protocol();
    let mut c = ctx(s, &proto);
    c.sender = Some(&tx.sender);
    if let Verdict::Reject { reply, log } = s.shared.policy.check(Stage::Mail, &c).await {
        let sender = tx.sender.clone();
        log_reject(s, "MAIL", &log, Some((&sender, None)));
        s.count("mail", false);
        s.reply_raw(&reply);
        s.error().await?;
        return Ok(Next::Continue);
    }
    s.tx = Some(tx);
    s.count("mail", true);
    s.reply(250, "2.1.0", "Ok");
    Ok(Next::Continue)
}

/// Postfix's free-space rule for MAIL: the queue file system must keep
/// `queue_minfree` bytes and have room for 1.5 times the announced size
/// (`size`, 0 when not announced) beyond that. `Err` holds the free bytes. A
/// file system that cannot be asked counts as having room (the write
/// itself still fails cleanly).
fn storage_ok(cfg: &conf::Config, size: u64) -> Result<(), u64> {
    let Ok(st) = nix::sys::statvfs::statvfs(cfg.queue_directory.as_str()) else {
        return Ok(());
    };
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    let minfree = cfg.queue_minfree.max(0) as u64;
    if free <= minfree || size.saturating_mul(3) / 2 >= free - minfree {
        return Err(free);
    }
    Ok(())
}

/// A RCPT path with a source route (`<@a,@b:user@c>`) is a relay trick.
fn routed(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let lower = text.to_ascii_lowercase();
    lower
        .split_once("to:")
        .map(|(_, rest)| rest.trim_start().starts_with("<@"))
        .unwrap_or(false)
}

async fn rcpt(
    s: &mut Session,
    path: Path,
    params: Vec<(String, Option<String>)>,
    raw: &[u8],
) -> Result<Next, End> {
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    let Some(tx) = s.tx.as_mut() else {
        s.count("rcpt", false);
        s.reply(503, "5.5.1", "Error: need MAIL command");
        s.error().await?;
        return Ok(Next::Continue);
    };
    tx.rcpt_tries += 1;
    if tx.rcpts.len() as i64 >= cfg.smtpd_recipient_limit {
        // As Postfix: the first smtpd_recipient_overshoot_limit surplus
        // recipients of a transaction are only refused; each one after
        // that is an error too, so a flood ends at smtpd_hard_error_limit.
        tx.rcpt_overshoot += 1;
        let error = tx.rcpt_overshoot > cfg.smtpd_recipient_overshoot_limit;
        s.count("rcpt", false);
        s.reply(452, "4.5.3", "Error: too many recipients");
        if error {
            s.error().await?;
        }
        return Ok(Next::Continue);
    }
    let addr = match &path {
        Path::Mailbox(m) => m.to_string(),
        Path::Null => {
            s.count("rcpt", false);
            s.reply(501, "5.1.3", "Bad recipient address syntax");
            s.error().await?;
            return Ok(Next::Continue);
        }
    };
    let (mut orcpt, mut notify) = (None, None);
    for (k, v) in params {
        match (k.as_str(), v) {
            ("NOTIFY", Some(v)) => notify = Some(v.to_ascii_uppercase()),
            ("ORCPT", Some(v)) => {
                let decoded = match v.split_once(';') {
                    Some((t, a)) => proto::command::xtext_decode(a)
                        .ok()
                        .map(|a| format!("{t};{a}")),
                    None => None,
                };
                match decoded {
                    Some(o) => orcpt = Some(o),
                    None => {
                        s.count("rcpt", false);
                        s.reply(501, "5.5.4", "Bad ORCPT parameter syntax");
                        s.error().await?;
                        return Ok(Next::Continue);
                    }
                }
            }
            (k, _) => {
                s.count("rcpt", false);
                s.reply(555, "5.5.4", &format!("Unsupported option: {k}"));
                s.error().await?;
                return Ok(Next::Continue);
            }
        }
    }
    if let Some(r) = s.client_reject.clone() {
        s.count("rcpt", false);
        s.reply_raw(&r);
        s.error().await?;
        return Ok(Next::Continue);
    }
    let proto = s.protocol();
    let is_routed = routed(raw);
    let mut c = ctx(s, &proto);
    c.recipient = Some(&addr);
    c.recipient_routed = is_routed;
    let verdict = s.shared.policy.check(Stage::Rcpt, &c).await;
    if let Verdict::Reject { reply, log } = verdict {
        let sender = s.tx.as_ref().map(|t| t.sender.clone()).unwrap_or_default();
        log_reject(s, "RCPT", &log, Some((&sender, Some(&addr))));
        s.count("rcpt", false);
        s.reply_raw(&reply);
        s.error().await?;
        return Ok(Next::Continue);
    }
    let first = s.tx.as_ref().is_some_and(|t| t.id.is_none());
    if first {
        let id = s.shared.next_id();
        if let Some(t) = s.tx.as_mut() {
            t.id = Some(id);
        }
        let mut line = format!("{id}: client={}", s.peer.namaddr());
        if let Some((m, u)) = &s.sasl {
            line.push_str(&format!(", sasl_method={m}, sasl_username={u}"));
        }
        log::info(&line);
    }
    if let Some(t) = s.tx.as_mut() {
        t.rcpts.push((addr, orcpt, notify));
    }
    s.count("rcpt", true);
    s.reply(250, "2.1.5", "Ok");
    Ok(Next::Continue)
}

/// Logs a rejection as Postfix does:
/// `ID|NOQUEUE: reject: RCPT from name[addr]: <reply>; from=<s> to=<r> proto=ESMTP helo=<h>`.
pub(crate) fn log_reject(s: &Session, stage: &str, text: &str, env: Option<(&str, Option<&str>)>) {
    let id =
        s.tx.as_ref()
            .and_then(|t| t.id)
            .map(|i| i.to_string())
            .unwrap_or_else(|| "NOQUEUE".into());
    let mut line = format!("{id}: reject: {stage} from {}: {text};", s.peer.namaddr());
    if let Some((from, to)) = env {
        line.push_str(&format!(" from=<{from}>"));
        if let Some(to) = to {
            line.push_str(&format!(" to=<{to}>"));
        }
    }
    line.push_str(&format!(" proto={}", s.protocol()));
    if let Some(h) = &s.helo {
        line.push_str(&format!(" helo=<{h}>"));
    }
    log::info(&line);
}

async fn starttls(s: &mut Session) -> Result<Next, End> {
    if s.tls.is_some() {
        s.count("starttls", false);
        s.reply(554, "5.5.1", "Error: TLS already active");
        s.error().await?;
        return Ok(Next::Continue);
    }
    let acceptor = match &s.shared.tls {
        Some(t) if s.shared.cfg.smtpd_tls_security_level == "encrypt" => t.mandatory.clone(),
        Some(t) => t.opportunistic.clone(),
        None => {
            s.count("starttls", false);
            s.reply(454, "4.7.0", "TLS not available due to local problem");
            s.error().await?;
            return Ok(Next::Continue);
        }
    };
    s.reply(220, "2.0.0", "Ready to start TLS");
    s.flush().await?;
    // Plaintext pipelined after STARTTLS must not be taken as commands
    // sent inside TLS (CVE-2011-0411).
    if s.reader.has_buffered() {
        let junk = s.reader.take_buffered();
        log::warning(&format!(
            "{}: discarding {} bytes sent after STARTTLS before the TLS handshake",
            s.peer.namaddr(),
            junk.len()
        ));
    }
    let Some(tcp) = s.conn.take_plain() else {
        return Err(End::Lost("lost connection"));
    };
    match handshake(s, acceptor, tcp).await {
        Ok(()) => {
            s.count("starttls", true);
            // RFC 3207: forget everything learned before TLS.
            s.helo = None;
            s.esmtp = false;
            s.reset_tx();
            s.sasl = None;
            Ok(Next::Continue)
        }
        Err(e) => {
            s.count("starttls", false);
            Err(e)
        }
    }
}

/// TLS handshake on `tcp` (STARTTLS or wrapper mode); logs the result.
pub(crate) async fn handshake(
    s: &mut Session,
    acceptor: openssl::ssl::SslAcceptor,
    tcp: tokio::net::TcpStream,
) -> Result<(), End> {
    let ssl = match openssl::ssl::Ssl::new(acceptor.context()) {
        Ok(x) => x,
        Err(e) => {
            log::warning(&format!("TLS set-up for {}: {e}", s.peer.namaddr()));
            return Err(End::Lost("lost connection"));
        }
    };
    let mut stream = match tokio_openssl::SslStream::new(ssl, tcp) {
        Ok(x) => x,
        Err(e) => {
            log::warning(&format!("TLS set-up for {}: {e}", s.peer.namaddr()));
            return Err(End::Lost("lost connection"));
        }
    };
    let limit = s.shared.cfg.smtpd_starttls_timeout;
    match tokio::time::timeout(limit, std::pin::Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => {
            let info = TlsInfo::of(stream.ssl());
            if s.shared.cfg.smtpd_tls_loglevel >= 1 {
                log::info(&format!(
                    "Anonymous TLS connection established from {}: {}",
                    s.peer.namaddr(),
                    info.describe()
                ));
            }
            s.tls = Some(info);
            s.conn = Conn::Tls(Box::new(stream));
            Ok(())
        }
        Ok(Err(e)) => {
            log::warning(&format!(
                "TLS handshake failed for {}: {e}",
                s.peer.namaddr()
            ));
            log::info(&format!("SSL_accept error from {}: -1", s.peer.namaddr()));
            Err(End::Lost("lost connection"))
        }
        Err(_) => {
            log::info(&format!(
                "SSL_accept error from {}: timed out",
                s.peer.namaddr()
            ));
            Err(End::Lost("timeout"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_routes_are_noticed() {
        assert!(routed(b"RCPT TO:<@relay.example:user@other.example>"));
        assert!(routed(b"rcpt to: <@a,@b:user@c>"));
        assert!(!routed(b"RCPT TO:<user@other.example>"));
    }
}

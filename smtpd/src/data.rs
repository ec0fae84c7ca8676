//! DATA and BDAT: the message goes straight into a queue file while it
//! arrives. The header block is held in memory (up to header_size_limit)
//! until it ends, rewritten by cleanup (Received: first; missing headers and
//! canonical addresses for local_header_rewrite_clients), then the body is
//! streamed. Only `<CR><LF>.<CR><LF>` ends DATA (smuggling-safe). The reply
//! `250 2.0.0 Ok: queued as ID` is sent only after the group commit made the
//! file durable; on any failure nothing is left behind.

use crate::commands::{Next, log_reject};
use crate::policy::{Stage, Verdict};
use crate::session::{End, Session};
use proto::data::{BareLf, BdatReceiver, DataReceiver, Feed};
use queue::cleanup::HeaderContext;
use queue::file::{Envelope, Recipient};
use queue::log;
use queue::write::Draft;
use std::time::SystemTime;

/// Where a message being received stands.
struct Writer {
    draft: Option<Draft>,
    head: Option<Vec<u8>>,
    env: Envelope,
    hctx: HeaderContext<'static>,
    header_limit: usize,
    message_id: Option<String>,
    looped: bool,
    error: Option<std::io::Error>,
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(d) = self.draft.as_mut()
            && let Err(e) = d.write_content(bytes)
        {
            self.error = Some(e);
        }
    }

    /// Content as it arrives (dot-unstuffed, CRLF line ends).
    fn push(&mut self, shared: &crate::server::Shared, chunk: &[u8]) {
        let Some(head) = self.head.as_mut() else {
            self.write(chunk);
            return;
        };
        head.extend_from_slice(chunk);
        // Decided on complete lines only: a read may end inside a header
        // line, which must not end the header block (found by fuzzing).
        if let Some(end) = proto::header::header_end_so_far(head) {
            let buf = self.head.take().unwrap_or_default();
            self.headers(shared, &buf[..end], false);
            self.write(&buf[end..]);
        } else if head.len() > self.header_limit {
            // A header block longer than header_size_limit (a 1 MB header
            // line, say): the header fields that start before the limit
            // are parsed and rewritten, the field that crosses it and
            // everything after it pass on unchanged, still as part of the
            // header block. (This used to cut at the last line end and put
            // rewrite_headers()'s empty line there, which turned the rest
            // of the header — Subject:, MIME headers — into body text;
            // found by tests/tests/hostile_resources.rs. Postfix truncates
            // the one over-long header instead.)
            let buf = self.head.take().unwrap_or_default();
            let cut = field_start_before(&buf, self.header_limit);
            self.headers(shared, &buf[..cut], true);
            self.write(&buf[cut..]);
        }
    }

    /// The end of the message.
    fn finish(&mut self, shared: &crate::server::Shared) {
        if let Some(buf) = self.head.take() {
            // The content ended while the header block was still open: its
            // last line may be the first body line (no empty line before).
            let end = proto::header::header_end(&buf).unwrap_or(buf.len());
            self.headers(shared, &buf[..end], false);
            self.write(&buf[end..]);
        }
    }

    /// Writes the rewritten header block; `open` leaves out the empty line
    /// that ends it (more header fields follow unparsed).
    fn headers(&mut self, shared: &crate::server::Shared, head: &[u8], open: bool) {
        let mut scratch = self.env.clone();
        match shared
            .cleanup
            .rewrite_headers(head, &mut scratch, &self.hctx)
        {
            Ok(h) => {
                self.looped = scratch.recipients.iter().any(|r| {
                    r.route
                        .as_deref()
                        .is_some_and(|x| x.starts_with("error:5.4.6"))
                });
                self.message_id = h.message_id;
                let mut bytes = h.bytes;
                if open {
                    if bytes == b"\r\n" {
                        bytes.clear();
                    } else if bytes.ends_with(b"\r\n\r\n") {
                        bytes.truncate(bytes.len() - 2);
                    }
                }
                self.write(&bytes);
            }
            Err(e) => self.error = Some(std::io::Error::other(e.0)),
        }
    }
}

/// Where the last header field that starts at or before `limit` begins:
/// the last line start (0, or just after a LF) not followed by a space or
/// tab; 0 when there is none.
fn field_start_before(buf: &[u8], limit: usize) -> usize {
    let limit = limit.min(buf.len());
    (1..=limit)
        .rev()
        .find(|&p| buf[p - 1] == b'\n' && !matches!(buf.get(p), Some(b' ' | b'\t')))
        .unwrap_or(0)
}

/// Sets up the queue file for the transaction; on failure the reply is queued.
async fn begin(s: &mut Session, verb: &str) -> Result<Option<Writer>, End> {
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    let (tx_ok, tried) = match &s.tx {
        Some(t) => (!t.rcpts.is_empty(), t.rcpt_tries),
        None => (false, 0),
    };
    if !tx_ok {
        s.count(verb, false);
        if s.tx.is_none() {
            s.reply(503, "5.5.1", "Error: need MAIL command");
        } else if tried == 0 {
            s.reply(503, "5.5.1", "Error: need RCPT command");
        } else {
            s.reply(554, "5.5.1", "Error: no valid recipients");
        }
        s.error().await?;
        return Ok(None);
    }
    let proto = s.protocol();
    let c = crate::commands::ctx(s, &proto);
    if let Verdict::Reject { reply, log } = s.shared.policy.check(Stage::Data, &c).await {
        log_reject(
            s,
            "DATA",
            &log,
            s.tx.as_ref().map(|t| (t.sender.as_str(), None)),
        );
        s.count(verb, false);
        s.reply_raw(&reply);
        s.error().await?;
        return Ok(None);
    }
    let Some(tx) = s.tx.as_ref() else {
        return Ok(None);
    };
    let id = tx.id.unwrap_or_else(|| s.shared.next_id());
    let mut env = Envelope {
        arrival: SystemTime::now(),
        sender: tx.sender.clone(),
        recipients: tx
            .rcpts
            .iter()
            .map(|(a, o, n)| Recipient {
                addr: a.clone(),
                orcpt: o.clone(),
                notify: n.clone(),
                ..Default::default()
            })
            .collect(),
        attrs: vec![
            ("origin".into(), "smtpd".into()),
            ("client_name".into(), s.peer.name.clone()),
            ("client_addr".into(), s.peer.addr.to_string()),
            ("client_port".into(), s.peer.port.to_string()),
            ("protocol".into(), proto.clone()),
        ],
    };
    if let Some(h) = &s.helo {
        env.set_attr("helo", h.clone());
    }
    if let Some((m, u)) = &s.sasl {
        env.set_attr("sasl_method", m.clone());
        env.set_attr("sasl_username", u.clone());
    }
    if let Some(b) = &tx.body {
        env.set_attr("body", b.clone());
    }
    if tx.smtputf8 {
        env.set_attr("smtputf8", "yes");
    }
    if let Some(r) = &tx.ret {
        env.set_attr("ret", r.clone());
    }
    if let Some(e) = &tx.envid {
        env.set_attr("envid", e.clone());
    }
    let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].0.clone());
    let env = match s.shared.cleanup.rewrite_envelope(env) {
        Ok(e) => e,
        Err(e) => {
            log::warning(&format!("{id}: {e}; the client is asked to try again"));
            s.count(verb, false);
            s.reply(451, "4.3.0", "Error: queue file write error");
            return Ok(None);
        }
    };
    let draft = {
        let dir = s.shared.queue.dir(queue::layout::QueueName::Incoming);
        let mut spares = s.shared.spares.lock().unwrap_or_else(|p| p.into_inner());
        Draft::create_reusing(&dir, &mut spares)
    };
    let mut draft = match draft {
        Ok(d) => d,
        Err(e) => {
            storage_error(s, verb, id, &e);
            return Ok(None);
        }
    };
    if let Err(e) = draft.write_envelope(&env) {
        storage_error(s, verb, id, &e);
        return Ok(None);
    }
    let now = SystemTime::now();
    let tls_hdr = if cfg.smtpd_tls_received_header {
        s.tls.as_ref()
    } else {
        None
    };
    let sasl_hdr = if cfg.smtpd_sasl_authenticated_header {
        s.sasl.as_ref().map(|(_, u)| u.as_str())
    } else {
        None
    };
    let received = crate::received::format(&crate::received::ReceivedInfo {
        helo: s.helo.as_deref(),
        client_name: &s.peer.name,
        client_addr: s.peer.addr,
        tls: tls_hdr,
        sasl_user: sasl_hdr,
        by: &cfg.myhostname,
        mail_name: &cfg.mail_name,
        protocol: &proto,
        id: &id.to_string(),
        single_rcpt: single.as_deref(),
        date: &queue::time::rfc2822_date(now),
    });
    let local = s
        .shared
        .rewrite_clients
        .matches(s.peer.addr, s.sasl.is_some());
    Ok(Some(Writer {
        draft: Some(draft),
        head: Some(Vec::with_capacity(4096)),
        env,
        hctx: HeaderContext {
            local: None,
            received: Some(received),
            rewrite_addresses: local,
            add_missing: local,
            extract: false,
            id,
            now,
        },
        header_limit: cfg.header_size_limit.max(1024) as usize,
        message_id: None,
        looped: false,
        error: None,
    }))
}

fn storage_error(s: &mut Session, verb: &str, id: queue::QueueId, e: &std::io::Error) {
    s.count(verb, false);
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        log::warning(&format!("{id}: not enough space for the queue file: {e}"));
        s.reply(452, "4.3.1", "Insufficient system storage");
    } else {
        log::warning(&format!("{id}: queue file write error: {e}"));
        s.reply(451, "4.3.0", "Error: queue file write error");
    }
}

/// Ends the transaction: commits the file or reports why not.
async fn complete(
    s: &mut Session,
    verb: &str,
    mut w: Writer,
    too_big: bool,
    bare_lf_reject: bool,
) -> Result<Next, End> {
    let id = w.hctx.id;
    w.finish(&s.shared);
    let sender = s.tx.as_ref().map(|t| t.sender.clone()).unwrap_or_default();
    s.reset_tx();
    if too_big {
        s.count(verb, false);
        log::info(&format!(
            "{id}: reject: {} from {}: 552 5.3.4 Error: message file too big; from=<{sender}> proto={} helo=<{}>",
            verb.to_ascii_uppercase(),
            s.peer.namaddr(),
            s.protocol(),
            s.helo.clone().unwrap_or_default()
        ));
        s.reply(552, "5.3.4", "Error: message file too big");
        return Ok(Next::Continue);
    }
    if bare_lf_reject {
        s.count(verb, false);
        let code = s.shared.cfg.smtpd_forbid_bare_newline_reject_code as u16;
        let enh = if code >= 500 { "5.5.2" } else { "4.5.2" };
        log::info(&format!(
            "{id}: reject: {} from {}: {code} {enh} Error: bare <LF> received; from=<{sender}> proto={}",
            verb.to_ascii_uppercase(),
            s.peer.namaddr(),
            s.protocol()
        ));
        s.reply(code, enh, "Error: bare <LF> received");
        return Ok(Next::Continue);
    }
    if w.looped {
        s.count(verb, false);
        log::info(&format!(
            "{id}: reject: {} from {}: 554 5.4.0 Error: too many hops; from=<{sender}> proto={}",
            verb.to_ascii_uppercase(),
            s.peer.namaddr(),
            s.protocol()
        ));
        s.reply(554, "5.4.0", "Error: too many hops");
        return Ok(Next::Continue);
    }
    if let Some(e) = w.error.take() {
        storage_error(s, verb, id, &e);
        return Ok(Next::Continue);
    }
    let Some(draft) = w.draft.take() else {
        s.count(verb, false);
        s.reply(451, "4.3.0", "Error: queue file write error");
        return Ok(Next::Continue);
    };
    let fin = match draft.finish_unsynced() {
        Ok(f) => f,
        Err(e) => {
            storage_error(s, verb, id, &e);
            return Ok(Next::Continue);
        }
    };
    match s.shared.committer.commit(fin, id).await {
        Ok(final_id) => {
            log::info(&format!(
                "{final_id}: message-id={}",
                w.message_id.as_deref().unwrap_or("<>")
            ));
            s.count(verb, true);
            s.reply(250, "2.0.0", &format!("Ok: queued as {final_id}"));
        }
        Err(e) => storage_error(s, verb, id, &e.error),
    }
    Ok(Next::Continue)
}

/// What smtpd_forbid_bare_newline asks of this client (its exclusions
/// get `Allow`).
pub fn bare_lf_mode(s: &Session) -> BareLf {
    if s.shared
        .bare_lf_exclusions
        .matches(s.peer.addr, s.sasl.is_some())
    {
        return BareLf::Allow;
    }
    BareLf::from_postfix(&s.shared.cfg.smtpd_forbid_bare_newline).unwrap_or_default()
}

/// DATA.
pub async fn data(s: &mut Session) -> Result<Next, End> {
    if s.bdat.is_some() {
        s.count("data", false);
        s.reply(503, "5.5.1", "Error: DATA after BDAT");
        s.error().await?;
        return Ok(Next::Continue);
    }
    let Some(mut w) = begin(s, "data").await? else {
        return Ok(Next::Continue);
    };
    s.reply(354, "", "End data with <CR><LF>.<CR><LF>");
    s.flush().await?;
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    let mode = bare_lf_mode(s);
    let mut rx = DataReceiver::new(cfg.message_size_limit, mode);
    let mut buf = s.begin_data();
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = match s.read_raw(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // The client went away mid-message: the draft is dropped,
                // nothing was acknowledged.
                s.reset_tx();
                return Err(e);
            }
        };
        out.clear();
        match rx.feed(&buf[..n], &mut out) {
            Feed::More => w.push(&s.shared, &out),
            Feed::End { consumed } => {
                w.push(&s.shared, &out);
                s.unread(&buf[consumed..n]);
                break;
            }
        }
    }
    s.rbuf = buf;
    let bare_lf_reject = mode == BareLf::Reject && rx.bare_lf_seen();
    complete(s, "data", w, rx.too_big(), bare_lf_reject).await
}

/// State of a BDAT transaction across chunks.
pub struct BdatState {
    writer: Option<Writer>,
    rx: BdatReceiver,
}

/// BDAT size [LAST].
pub async fn bdat(s: &mut Session, size: u64, last: bool) -> Result<Next, End> {
    // The chunk's bytes follow the command: read them whatever happens.
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    let pending = s.bdat.take();
    let mut state = match pending {
        Some(st) => st,
        None => {
            let writer = begin(s, "bdat").await?;
            BdatState {
                writer,
                rx: BdatReceiver::new(cfg.message_size_limit),
            }
        }
    };
    let mut remaining = size;
    let mut buf = s.begin_data();
    let mut out = Vec::with_capacity(64 * 1024);
    while remaining > 0 {
        let want = buf.len().min(remaining as usize);
        let n = s.read_raw(&mut buf[..want]).await?;
        out.clear();
        let used = state.rx.feed_chunk(&buf[..n], &mut remaining, &mut out);
        if used < n {
            s.unread(&buf[used..n]);
        }
        if let Some(w) = state.writer.as_mut() {
            w.push(&s.shared, &out);
        }
    }
    s.rbuf = buf;
    let Some(w) = state.writer.take() else {
        // begin() already answered (no transaction or refused): every chunk
        // of this BDAT sequence gets the same treatment.
        return Ok(Next::Continue);
    };
    if !last {
        s.count("bdat", true);
        s.reply(250, "2.0.0", &format!("Ok: {size} bytes"));
        state.writer = Some(w);
        s.bdat = Some(state);
        return Ok(Next::Continue);
    }
    let too_big = state.rx.too_big();
    let bare_lf_reject = bare_lf_mode(s) == BareLf::Reject && state.rx.bare_lf_seen();
    complete(s, "bdat", w, too_big, bare_lf_reject).await
}

#[cfg(test)]
mod tests {
    use super::field_start_before;

    #[test]
    fn the_field_that_crosses_the_limit_starts_at_its_own_line() {
        let b = b"From: a\r\nSubject: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        assert_eq!(field_start_before(b, 20), 9);
        // A folded field: its continuation lines belong to it.
        let b = b"From: a\r\nTo: b,\r\n c,\r\n dddddddddddddddddddddddd";
        assert_eq!(field_start_before(b, 30), 9);
        // The first line is already too long.
        assert_eq!(field_start_before(b"Subject: xxxxxxxxxx", 10), 0);
    }
}

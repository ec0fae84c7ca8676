//! One client session: reading command lines (with pipelining), writing
//! replies (flushed only when the client waits for them), the command loop
//! with error counting, and the Postfix log lines for connect and
//! disconnect with per-command counts.

use crate::peer::Peer;
use crate::server::Shared;
use crate::stream::Conn;
use crate::tls::TlsInfo;
use proto::line::{Line, LineReader};
use proto::reply::Reply;
use proto::status::EnhancedCode;
use queue::QueueId;
use queue::log;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads what the client sent into `buf`, waiting at most `timeout`, or
/// what is left of `deadline` when there is one (which the wait then uses
/// up and the bytes of DATA or BDAT earn back).
async fn timed_read(
    conn: &mut Conn,
    buf: &mut [u8],
    timeout: Duration,
    deadline: &mut Option<Deadline>,
) -> Result<usize, End> {
    let limit = deadline.map_or(timeout, |d| d.left);
    let started = deadline.is_some().then(Instant::now);
    let n = match tokio::time::timeout(limit, conn.read(buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Lost("lost connection")),
        Ok(Ok(n)) => n,
        Err(_) => return Err(End::Lost("timeout")),
    };
    if let (Some(d), Some(started)) = (deadline.as_mut(), started) {
        d.left = d.left.saturating_sub(started.elapsed());
        if let Some(rate) = d.rate {
            let earned = Duration::from_secs_f64(n as f64 / rate as f64);
            d.left = (d.left + earned).min(timeout);
        }
    }
    Ok(n)
}

/// Why a session ends.
#[derive(Debug)]
pub enum End {
    /// The client said QUIT (or we closed after a 421).
    Quit,
    /// The connection broke or timed out; the text is Postfix's phrase.
    Lost(&'static str),
}

/// Command counts for the disconnect line, in Postfix's order.
pub const COUNTED: [&str; 13] = [
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "quit", "unknown",
];

/// A MAIL transaction in progress.
#[derive(Debug, Default)]
pub struct Tx {
    /// Envelope sender as given (`""` for `<>`).
    pub sender: String,
    /// BODY= from MAIL FROM.
    pub body: Option<String>,
    /// SIZE= from MAIL FROM (0 when not given).
    pub size: u64,
    /// SMTPUTF8 requested.
    pub smtputf8: bool,
    /// DSN RET.
    pub ret: Option<String>,
    /// DSN ENVID.
    pub envid: Option<String>,
    /// Accepted recipients: address, ORCPT, NOTIFY.
    pub rcpts: Vec<(String, Option<String>, Option<String>)>,
    /// RCPT commands tried (accepted or not).
    pub rcpt_tries: usize,
    /// RCPT commands refused because `smtpd_recipient_limit` was reached;
    /// past `smtpd_recipient_overshoot_limit` each counts as an error.
    pub rcpt_overshoot: i64,
    /// Queue ID, assigned at the first accepted recipient.
    pub id: Option<QueueId>,
}

/// The read buffer of a new session: enough for the command lines of an
/// ordinary client, small so that thousands of idle sessions cost little.
const READ_BUF_FIRST: usize = 1024;

/// The read buffer once a client sends more (pipelined commands, message
/// data).
const READ_BUF: usize = 16 * 1024;

/// The time left to receive the request being read when
/// `smtpd_per_request_deadline = yes` (as in Postfix 3.7): only time spent
/// waiting in reads counts, and in DATA and BDAT every byte received earns
/// back 1/`smtpd_min_data_rate` of a second, up to `smtpd_timeout`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    left: Duration,
    /// Bytes per second that earn time back (DATA and BDAT only).
    rate: Option<u64>,
}

/// The session state.
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Conn,
    pub(crate) reader: LineReader,
    /// Read buffer, kept for the session (zeroing a fresh one for every
    /// read showed up in profiles): [`READ_BUF_FIRST`] bytes while the
    /// client sends short commands, [`READ_BUF`] once a read fills it or a
    /// message is read.
    pub(crate) rbuf: Vec<u8>,
    /// The current request's deadline (`smtpd_per_request_deadline`).
    pub(crate) deadline: Option<Deadline>,
    pub(crate) out: Vec<u8>,
    pub(crate) peer: Peer,
    pub(crate) helo: Option<String>,
    pub(crate) esmtp: bool,
    /// The client pipelined where it was not allowed to (see
    /// `commands::check_pipelining`).
    pub(crate) ill_pipelining: bool,
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) sasl: Option<(String, String)>,
    pub(crate) tx: Option<Tx>,
    pub(crate) client_reject: Option<Reply>,
    pub(crate) bdat: Option<crate::data::BdatState>,
    counts: [(u32, u32); COUNTED.len()],
    pub(crate) errors: i64,
    pub(crate) junk: i64,
    pub(crate) last_cmd: &'static str,
}

impl Session {
    /// A session on an accepted connection.
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: Peer) -> Session {
        let max = shared.cfg.line_length_limit.max(512) as usize;
        Session {
            shared,
            conn,
            reader: LineReader::new(max),
            rbuf: vec![0u8; READ_BUF_FIRST],
            deadline: None,
            out: Vec::with_capacity(1024),
            peer,
            helo: None,
            esmtp: false,
            ill_pipelining: false,
            tls: None,
            sasl: None,
            tx: None,
            client_reject: None,
            bdat: None,
            counts: [(0, 0); COUNTED.len()],
            errors: 0,
            junk: 0,
            last_cmd: "CONNECT",
        }
    }

    /// Protocol name for logs and Received: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    pub fn protocol(&self) -> String {
        if !self.esmtp {
            return "SMTP".into();
        }
        let mut p = "ESMTP".to_string();
        if self.tls.is_some() {
            p.push('S');
        }
        if self.sasl.is_some() {
            p.push('A');
        }
        p
    }

    /// Queues a reply.
    pub fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let r = Reply::new(code, EnhancedCode::parse(enhanced), text);
        self.out.extend_from_slice(&r.to_wire());
    }

    /// Queues a prepared reply.
    pub fn reply_raw(&mut self, r: &Reply) {
        self.out.extend_from_slice(&r.to_wire());
    }

    /// Ends the mail transaction (RSET, HELO/EHLO, STARTTLS, end of
    /// message, lost client): forgets the envelope and any unfinished BDAT
    /// message, whose queue file is dropped.
    pub fn reset_tx(&mut self) {
        self.tx = None;
        self.bdat = None;
    }

    /// Sends queued replies.
    pub async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = self.shared.cfg.smtpd_timeout;
        let out = std::mem::take(&mut self.out);
        match tokio::time::timeout(limit, async {
            self.conn.write_all(&out).await?;
            self.conn.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Lost("lost connection")),
            Err(_) => Err(End::Lost("timeout")),
        }
    }

    /// Reads more input into the line reader; false at end of input.
    pub async fn fill(&mut self) -> Result<(), End> {
        let limit = self.shared.cfg.smtpd_timeout;
        let n = timed_read(&mut self.conn, &mut self.rbuf, limit, &mut self.deadline).await?;
        self.reader.feed(&self.rbuf[..n]);
        if n == self.rbuf.len() && n < READ_BUF {
            self.rbuf.resize(READ_BUF, 0);
        }
        Ok(())
    }

    /// Starts the deadline of a request (a command line, or the message
    /// text of DATA or one BDAT chunk when `data`) if
    /// `smtpd_per_request_deadline` is on; without it each read may wait
    /// `smtpd_timeout`.
    pub fn begin_request(&mut self, data: bool) {
        let cfg = &self.shared.cfg;
        self.deadline = cfg.smtpd_per_request_deadline.then(|| Deadline {
            left: cfg.smtpd_timeout,
            rate: data.then_some(cfg.smtpd_min_data_rate as u64),
        });
    }

    /// Starts reading message text (DATA, or one BDAT chunk): its deadline,
    /// and the read buffer at full size, taken out of the session so that
    /// [`Session::read_raw`] can fill it. The caller puts it back in
    /// `rbuf` when the text is read; on an error the session ends, so the
    /// buffer is not needed again.
    pub fn begin_data(&mut self) -> Vec<u8> {
        self.begin_request(true);
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.resize(buf.len().max(READ_BUF), 0);
        buf
    }

    /// Reads raw bytes (DATA, BDAT): what is buffered first, then the
    /// connection (after flushing queued replies).
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        if self.reader.has_buffered() {
            let pending = self.reader.take_buffered();
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            if n < pending.len() {
                self.reader.feed(&pending[n..]);
            }
            return Ok(n);
        }
        // About to wait for the client: it may be waiting for our replies.
        self.flush().await?;
        let limit = self.shared.cfg.smtpd_timeout;
        timed_read(&mut self.conn, buf, limit, &mut self.deadline).await
    }

    /// Puts bytes back in front of the input (what followed the end of DATA).
    pub fn unread(&mut self, bytes: &[u8]) {
        let rest = self.reader.take_buffered();
        self.reader.feed(bytes);
        self.reader.feed(&rest);
    }

    /// The next command line; replies are flushed before waiting for input
    /// (so a pipelining client gets them in one write).
    pub async fn next_line(&mut self) -> Result<Result<Line, ()>, End> {
        self.begin_request(false);
        loop {
            match self.reader.next_line() {
                Some(Ok(l)) => return Ok(Ok(l)),
                Some(Err(_)) => return Ok(Err(())),
                None => {
                    self.flush().await?;
                    self.fill().await?;
                }
            }
        }
    }

    /// Counts a command and whether it succeeded.
    pub fn count(&mut self, verb: &str, ok: bool) {
        let i = COUNTED
            .iter()
            .position(|v| *v == verb)
            .unwrap_or(COUNTED.len() - 1);
        self.counts[i].1 += 1;
        if ok {
            self.counts[i].0 += 1;
        }
    }

    /// Counts an error; past the soft limit error replies are delayed,
    /// past the hard limit the session ends.
    pub async fn error(&mut self) -> Result<(), End> {
        self.errors += 1;
        let cfg = &self.shared.cfg;
        if self.errors >= cfg.smtpd_hard_error_limit {
            let host = cfg.myhostname.clone();
            self.reply(421, "4.7.0", &format!("{host} Error: too many errors"));
            let _ = self.flush().await;
            log::info(&format!(
                "too many errors after {} from {}",
                self.last_cmd,
                self.peer.namaddr()
            ));
            return Err(End::Quit);
        }
        if self.errors > cfg.smtpd_soft_error_limit {
            let d = cfg.smtpd_error_sleep_time;
            self.flush().await?;
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    /// The disconnect line: `disconnect from name[addr] ehlo=1 mail=1 ... commands=N`.
    pub fn disconnect_line(&self) -> String {
        let mut s = format!("disconnect from {}", self.peer.namaddr());
        let (mut ok, mut total) = (0, 0);
        for (i, (o, t)) in self.counts.iter().enumerate() {
            if *t == 0 {
                continue;
            }
            ok += o;
            total += t;
            if o == t {
                s.push_str(&format!(" {}={t}", COUNTED[i]));
            } else {
                s.push_str(&format!(" {}={o}/{t}", COUNTED[i]));
            }
        }
        if ok == total {
            s.push_str(&format!(" commands={total}"));
        } else {
            s.push_str(&format!(" commands={ok}/{total}"));
        }
        s
    }

    /// Runs the session to its end and logs how it ended.
    pub async fn run(mut self) {
        let end = self.main_loop().await;
        if let Err(End::Lost("timeout")) = &end {
            // As Postfix: tell the client why, if it still listens.
            self.out.clear();
            let host = self.shared.cfg.myhostname.clone();
            self.reply(421, "4.4.2", &format!("{host} Error: timeout exceeded"));
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
        }
        if let Err(End::Lost(why)) = &end {
            log::info(&format!(
                "{why} after {} from {}",
                self.last_cmd,
                self.peer.namaddr()
            ));
        }
        let _ = self.conn.shutdown().await;
        log::info(&self.disconnect_line());
    }

    async fn main_loop(&mut self) -> Result<(), End> {
        let banner = self.shared.cfg.smtpd_banner.clone();
        self.reply(220, "", &banner);
        loop {
            if *self.shared.shutdown.borrow() {
                self.reply(
                    421,
                    "4.3.2",
                    &format!(
                        "{} Service shutting down, closing transmission channel",
                        self.shared.cfg.myhostname
                    ),
                );
                let _ = self.flush().await;
                return Ok(());
            }
            let line = match self.next_line().await? {
                Ok(l) => l,
                Err(()) => {
                    self.count("unknown", false);
                    self.reply(500, "5.5.2", "Error: line too long");
                    self.error().await?;
                    continue;
                }
            };
            match crate::commands::dispatch(self, line).await? {
                crate::commands::Next::Continue => {}
                crate::commands::Next::Close => {
                    let _ = self.flush().await;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_table_has_unknown_last() {
        assert_eq!(COUNTED[COUNTED.len() - 1], "unknown");
    }
}

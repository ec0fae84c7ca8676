//! What the fake saw: messages, sessions with their transcripts, counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use proto::Reply;
use proto::command::Params;

use super::config::TlsVersion;

/// A message whose end of data was reached (accepted or refused).
#[derive(Debug, Clone)]
pub struct Message {
    /// The session it came in.
    pub session: u64,
    /// MAIL FROM, without brackets (`""` for `<>`).
    pub mail_from: String,
    /// MAIL FROM parameters (`SIZE`, `BODY`, `SMTPUTF8`, `RET`, `ENVID`).
    pub mail_params: Params,
    /// The accepted RCPT TO addresses, in order.
    pub rcpt_to: Vec<String>,
    /// The parameters of each accepted RCPT TO (`NOTIFY`, `ORCPT`).
    pub rcpt_params: Vec<Params>,
    /// The mailbox the session authenticated as (`user=` for XOAUTH2).
    pub auth_user: Option<String>,
    /// The app (`appid`) of the session's XOAUTH2 token.
    pub auth_app: Option<String>,
    /// The P2 sender: the first address of the header `From:`, lower case.
    pub p2_sender: Option<String>,
    /// The TLS version of the session.
    pub tls: Option<TlsVersion>,
    /// The EHLO/HELO name.
    pub helo: Option<String>,
    /// The content exactly as received, after dot-unstuffing (DATA) or
    /// chunk joining (BDAT), without the final `.` line.
    pub content: Vec<u8>,
    /// Sent with BDAT rather than DATA.
    pub bdat: bool,
    /// Some line ended in a bare LF (a client bug: postern sends CRLF).
    pub bare_lf: bool,
    /// The reply sent at the end of data; `None` when the fake closed the
    /// connection instead.
    pub reply: Option<Reply>,
    /// The `<id@HOST>` of the `250 2.0.0 OK` reply (accepted messages).
    pub server_id: Option<String>,
    /// When the end of data arrived.
    pub at: SystemTime,
}

impl Message {
    /// The content as text (lossy), for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.content).into_owned()
    }

    /// The value of the first header field `name` (case-insensitive),
    /// unfolded, without leading white space.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = found.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                found = Some(v.trim_start().to_string());
            }
        }
        found
    }

    /// True when the end-of-data reply was positive.
    pub fn accepted(&self) -> bool {
        self.reply.as_ref().is_some_and(Reply::is_positive)
    }
}

/// One connection.
#[derive(Debug, Clone)]
pub struct SessionLog {
    /// 1 for the first connection, then 2, ...
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub started: SystemTime,
    /// Still open.
    pub open: bool,
    /// The last EHLO/HELO name.
    pub helo: Option<String>,
    /// The negotiated TLS version.
    pub tls: Option<TlsVersion>,
    /// The SNI name the client sent.
    pub sni: Option<String>,
    /// The TLS handshake failed; OpenSSL's reason.
    pub tls_error: Option<String>,
    /// The client pipelined plaintext after STARTTLS (it was discarded).
    pub plaintext_after_starttls: bool,
    /// The authenticated user.
    pub auth_user: Option<String>,
    /// The mechanism of the successful AUTH (`LOGIN`, `XOAUTH2`, ...).
    pub auth_mechanism: Option<String>,
    /// The app (`appid`) of the session's XOAUTH2 token.
    pub auth_app: Option<String>,
    /// The names (SAN DNS names, then the CN) of the TLS client
    /// certificate, if the client sent one.
    pub client_cert_names: Vec<String>,
    /// The client certificate verified against the configured CA.
    pub client_cert_verified: bool,
    /// mx: how the session is attributed to the tenant, if it is.
    pub attribution: Option<Attribution>,
    /// Messages accepted in this session.
    pub accepted: usize,
    /// `C: ...` and `S: ...` lines, SASL data replaced by `<sasl>`.
    pub transcript: Vec<String>,
}

/// How an mx session is attributed to the tenant (an inbound connector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// The source address is a connector's.
    Ip,
    /// A verified client certificate matched this connector name.
    Certificate(String),
}

/// A limit Exchange enforces per mailbox, which postern must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A session authenticated while its mailbox already had its limit of
    /// sessions open (3; every such session gets `432 4.3.2` at end of DATA).
    Concurrency,
    /// A message accepted while the mailbox had its limit of messages
    /// (30/min) accepted in the preceding window (Exchange delays it).
    MessageRate,
    /// The rolling recipient budget of the P2 sender would have been
    /// exceeded (`554 5.2.0 ...SubmissionQuotaExceededException`).
    RecipientBudget,
    /// The header `From:` was not the mailbox nor in its send-as list
    /// (`550 5.7.60`).
    SendAs,
    /// More recipients than allowed per message (`452 4.5.3`).
    RecipientsPerMessage,
}

/// One violation.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which limit.
    pub kind: ViolationKind,
    /// The mailbox (or P2 sender for [`ViolationKind::RecipientBudget`]),
    /// lower case.
    pub mailbox: String,
    /// The session.
    pub session: u64,
    /// When.
    pub at: SystemTime,
}

/// XOAUTH2 outcomes of one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// `235`.
    pub successes: u64,
    /// Anything else.
    pub failures: u64,
}

/// One XOAUTH2 attempt.
#[derive(Debug, Clone)]
pub struct Xoauth2Attempt {
    /// The session.
    pub session: u64,
    /// `user=` of the blob (`""` when it had none).
    pub user: String,
    /// `appid` of the token, when it verified.
    pub app: Option<String>,
    /// Ended in `235`.
    pub ok: bool,
    /// Why the token was refused (`None` when accepted, or refused by a
    /// script).
    pub reason: Option<String>,
    /// The reply sent.
    pub reply: Option<String>,
    /// When.
    pub at: SystemTime,
}

/// Counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open_sessions: usize,
    /// The most connections open at once.
    pub max_concurrent: usize,
    /// AUTH commands.
    pub auth_attempts: u64,
    /// AUTH commands that ended in `235`.
    pub auth_successes: u64,
    /// AUTH commands that did not.
    pub auth_failures: u64,
    /// All violations of per-mailbox limits (see [`ViolationKind`]: more
    /// than 3 sessions, 30 messages/min, the recipient budget, send-as,
    /// recipients per message). postern must keep this at zero.
    pub violations: u64,
    /// [`violations`](Self::violations) per kind.
    pub violations_by_kind: HashMap<ViolationKind, u64>,
    /// XOAUTH2 outcomes per user (`user=`, lower case).
    pub xoauth2: HashMap<String, AuthCounts>,
    /// Per mailbox, the most authenticated sessions open at once.
    pub max_concurrent_per_mailbox: HashMap<String, usize>,
}

/// Everything recorded; [`FakeSmartHost::records`](super::FakeSmartHost::records)
/// returns a copy.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Accepted messages, in order of arrival.
    pub messages: Vec<Message>,
    /// Messages refused (4xx/5xx) or dropped at the end of data.
    pub refused: Vec<Message>,
    /// Every connection.
    pub sessions: Vec<SessionLog>,
    /// Every violation, in order.
    pub violations: Vec<Violation>,
    /// Every XOAUTH2 attempt, in order.
    pub xoauth2: Vec<Xoauth2Attempt>,
    /// Counters.
    pub stats: Stats,
}

impl Records {
    /// The session with id `id`.
    pub fn session(&self, id: u64) -> Option<&SessionLog> {
        self.sessions.iter().find(|s| s.id == id)
    }

    /// Accepted messages of `mailbox` (the authenticated user,
    /// case-insensitive), in order.
    pub fn messages_of(&self, mailbox: &str) -> Vec<&Message> {
        self.messages
            .iter()
            .filter(|m| {
                m.auth_user
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(mailbox))
            })
            .collect()
    }

    /// Violations of `kind`.
    pub fn violations_of(&self, kind: ViolationKind) -> u64 {
        self.stats
            .violations_by_kind
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// A short account for failure messages: counters, then the last
    /// sessions' transcripts.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "fake smart host: {} accepted, {} refused, {} connections ({} open, max {}), auth {} ok / {} failed, {} violations\n",
            self.messages.len(),
            self.refused.len(),
            s.connections,
            s.open_sessions,
            s.max_concurrent,
            s.auth_successes,
            s.auth_failures,
            s.violations
        );
        for v in self.violations.iter().rev().take(5).rev() {
            let _ = writeln!(
                out,
                "   violation {:?} by {} in session {}",
                v.kind, v.mailbox, v.session
            );
        }
        let skip = self.sessions.len().saturating_sub(5);
        for sess in &self.sessions[skip..] {
            let _ = writeln!(
                out,
                "-- session {} from {}{}:",
                sess.id,
                sess.peer,
                if sess.open { " (open)" } else { "" }
            );
            for l in &sess.transcript {
                let _ = writeln!(out, "   {l}");
            }
        }
        out
    }
}

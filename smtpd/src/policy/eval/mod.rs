//! Evaluation of restriction lists: Postfix's generic_checks(), the
//! per-stage drivers smtpd_check_{client,helo,mail,rcpt,data}() and
//! smtpd_check_reject() (reply validation, warn_if_reject,
//! defer_if_reject/defer_if_permit, soft_bounce, DSN/code consistency).
//!
//! A list stops at the first restriction that permits (this list only) or
//! rejects (everything). Configuration and table errors end everything with
//! `451 4.3.5 Server configuration error` (or `451 4.3.0 <name>: Temporary
//! lookup failure`), which warn_if_reject cannot soften.

mod checks;
mod tables;

use super::networks::normalize;
use super::relay::{internal_form, valid_hostaddr, valid_hostname};
use super::restriction::{AccessKind, Step};
use super::{Ctx, Policy, Stage, Verdict};
use proto::reply::Reply;
use proto::status::EnhancedCode;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// Reply classes, as they appear in reply texts.
pub(crate) const CLIENT: &str = "Client host";
pub(crate) const HELO: &str = "Helo command";
pub(crate) const SENDER: &str = "Sender address";
pub(crate) const RECIPIENT: &str = "Recipient address";
pub(crate) const SASL: &str = "SASL login name";
pub(crate) const DATA: &str = "Data command";

/// Why a reply is sent; only policy rejections may be turned into
/// warnings by warn_if_reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrClass {
    Policy,
    Software,
    Data,
}

/// A deferred decision (defer_if_permit, defer_if_reject).
#[derive(Debug, Clone)]
struct Deferral {
    class: ErrClass,
    code: u16,
    dsn: String,
    text: String,
}

/// The outcome of a restriction or list.
#[derive(Debug)]
pub(crate) enum Status {
    /// No decision; go on.
    Dunno,
    /// Permit: ends the current list.
    Ok,
    /// Reject: ends everything.
    Reject(Box<(Reply, String)>),
}

type BoxFuture<'s> = Pin<Box<dyn Future<Output = Status> + Send + 's>>;

/// Recursion limit for restriction classes and table results.
const MAX_RECURSION: u32 = 100;

/// The state of one evaluation.
pub(crate) struct Eval<'e, 'a> {
    p: &'e Policy,
    ctx: &'e Ctx<'a>,
    recursion: u32,
    warn_if_reject: u32,
    defer_if_permit: Option<Deferral>,
    defer_if_reject: Option<Deferral>,
    verb: &'static str,
    addr: IpAddr,
    namaddr: String,
    sender: Option<String>,
    recipient: Option<String>,
    recipient_routed: bool,
}

/// Evaluates the restrictions of `stage` (see [`Policy::check`]).
pub(crate) async fn check(p: &Policy, stage: Stage, ctx: &Ctx<'_>) -> Verdict {
    let mut ev = Eval::new(p, ctx, stage);
    let status = match stage {
        Stage::Connect if !p.delay_reject => ev.client().await,
        Stage::Helo if !p.delay_reject => ev.helo().await,
        Stage::Mail if !p.delay_reject => ev.mail().await,
        Stage::Connect | Stage::Helo | Stage::Mail => Status::Dunno,
        Stage::Rcpt => ev.rcpt().await,
        Stage::Data => ev.data().await,
    };
    match status {
        Status::Reject(r) => {
            let (reply, log) = *r;
            Verdict::Reject { reply, log }
        }
        Status::Dunno | Status::Ok => Verdict::Permit,
    }
}

/// Strips one trailing dot, but not from `.` or a name ending in `..`
/// (Postfix dup_if_truncate()).
fn truncate_dot(name: &str) -> &str {
    match name.strip_suffix('.') {
        Some(s) if !s.is_empty() && !s.ends_with('.') => s,
        _ => name,
    }
}

/// Replaces control characters with spaces and cuts the text to `max`
/// bytes (Postfix keeps replies within 510 characters).
fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

impl<'e, 'a> Eval<'e, 'a> {
    fn new(p: &'e Policy, ctx: &'e Ctx<'a>, stage: Stage) -> Eval<'e, 'a> {
        let addr = normalize(ctx.client_addr);
        let (recipient, recipient_routed) = match ctx.recipient {
            Some(r) => {
                let (r, routed) = internal_form(r);
                (Some(r), routed || ctx.recipient_routed)
            }
            None => (None, false),
        };
        let verb = match stage {
            Stage::Connect => "CONNECT",
            Stage::Helo if ctx.protocol.eq_ignore_ascii_case("SMTP") => "HELO",
            Stage::Helo => "EHLO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
        };
        Eval {
            p,
            ctx,
            recursion: 0,
            warn_if_reject: 0,
            defer_if_permit: None,
            defer_if_reject: None,
            verb,
            addr,
            namaddr: format!("{}[{}]", ctx.client_name, addr),
            sender: ctx.sender.map(|s| internal_form(s).0),
            recipient,
            recipient_routed,
        }
    }

    /// SMTPD_CHECK_RESET: per-stage state.
    fn reset(&mut self) {
        self.recursion = 0;
        self.warn_if_reject = 0;
        self.defer_if_reject = None;
    }

    async fn client(&mut self) -> Status {
        self.reset();
        let p = self.p;
        let rn = self.namaddr.clone();
        self.run(&p.lists.client, &rn, CLIENT, Some(AccessKind::Client))
            .await
    }

    async fn helo(&mut self) -> Status {
        let (p, ctx) = (self.p, self.ctx);
        let Some(helo) = ctx.helo else {
            return Status::Dunno;
        };
        self.reset();
        self.run(&p.lists.helo, helo, HELO, Some(AccessKind::Helo))
            .await
    }

    async fn mail(&mut self) -> Status {
        let p = self.p;
        let Some(sender) = self.sender.clone() else {
            return Status::Dunno;
        };
        self.reset();
        self.run(&p.lists.sender, &sender, SENDER, Some(AccessKind::Sender))
            .await
    }

    async fn rcpt(&mut self) -> Status {
        let p = self.p;
        let Some(rcpt) = self.recipient.clone() else {
            return Status::Dunno;
        };
        // RFC 5321 section 4.5.1: "postmaster" is accepted without a domain.
        if rcpt.eq_ignore_ascii_case("postmaster") && !self.recipient_routed {
            return Status::Dunno;
        }
        if p.delay_reject {
            for st in [self.client().await, self.helo().await, self.mail().await] {
                if matches!(st, Status::Reject(_)) {
                    return st;
                }
            }
        }
        self.reset();
        let mut status = Status::Dunno;
        for list in [&p.lists.relay, &p.lists.recipient] {
            status = self
                .run(list, &rcpt, RECIPIENT, Some(AccessKind::Recipient))
                .await;
            if matches!(status, Status::Reject(_)) {
                break;
            }
        }
        self.enforce_defer_if_permit(status)
    }

    async fn data(&mut self) -> Status {
        let p = self.p;
        self.defer_if_permit = None;
        self.reset();
        let status = self.run(&p.lists.data, "DATA", DATA, None).await;
        self.enforce_defer_if_permit(status)
    }

    /// A permit after an earlier temporary failure becomes that failure.
    fn enforce_defer_if_permit(&mut self, status: Status) -> Status {
        if matches!(status, Status::Reject(_)) {
            return status;
        }
        match self.defer_if_permit.take() {
            Some(d) => self.reject(d.class, d.code, &d.dsn, d.text),
            None => status,
        }
    }

    /// Runs one list (Postfix generic_checks()).
    fn run<'s>(
        &'s mut self,
        steps: &'s [Step],
        rn: &'s str,
        rc: &'static str,
        def: Option<AccessKind>,
    ) -> BoxFuture<'s> {
        Box::pin(async move {
            if self.recursion > MAX_RECURSION {
                queue::log::warning(&format!(
                    "{rc} restrictions: restriction classes or access table results nest more than {MAX_RECURSION} deep"
                ));
                return self.server_error();
            }
            let saved = self.recursion;
            self.recursion += 1;
            let mut status = Status::Dunno;
            for step in steps {
                if *step == Step::WarnIfReject {
                    if self.warn_if_reject == 0 {
                        self.warn_if_reject = self.recursion;
                    }
                    continue;
                }
                status = self.step(step, rn, rc, def).await;
                if self.warn_if_reject >= self.recursion {
                    self.warn_if_reject = 0;
                }
                if !matches!(status, Status::Dunno) {
                    break;
                }
                if self.defer_if_permit.is_some() && self.defer_if_reject.is_some() {
                    break;
                }
            }
            self.recursion = saved;
            if self.warn_if_reject >= self.recursion {
                self.warn_if_reject = 0;
            }
            status
        })
    }

    async fn step(
        &mut self,
        step: &Step,
        rn: &str,
        rc: &'static str,
        def: Option<AccessKind>,
    ) -> Status {
        let (p, ctx) = (self.p, self.ctx);
        let denied = || format!("<{rn}>: {rc} rejected: Access denied");
        match step {
            Step::Permit => Status::Ok,
            Step::Reject => self.reject(ErrClass::Policy, p.codes.reject, "5.7.1", denied()),
            Step::Defer => self.reject(
                ErrClass::Policy,
                p.codes.defer,
                "4.3.2",
                format!("<{rn}>: {rc} rejected: Try again later"),
            ),
            Step::DeferIfPermit => self.defer_if_permit(
                true,
                450,
                "4.7.0",
                format!("<{rn}>: {rc} rejected: defer_if_permit requested"),
            ),
            Step::DeferIfReject => {
                self.defer_if_reject(
                    450,
                    "4.7.0",
                    format!("<{rn}>: {rc} rejected: defer_if_reject requested"),
                );
                Status::Dunno
            }
            Step::RejectUnauthPipelining if ctx.ill_pipelining => self.reject(
                ErrClass::Policy,
                503,
                "5.5.0",
                format!("<{rn}>: {rc} rejected: Improper use of SMTP command pipelining"),
            ),
            Step::WarnIfReject | Step::RejectUnauthPipelining => Status::Dunno,
            Step::RejectPlaintextSession if !ctx.tls => self.reject(
                ErrClass::Policy,
                p.codes.plaintext,
                "4.7.1",
                "Session encryption is required".into(),
            ),
            Step::RejectPlaintextSession => Status::Dunno,
            Step::PermitMynetworks => match p
                .mynetworks
                .match_client(Some(ctx.client_name), Some(self.addr))
            {
                Ok(true) => Status::Ok,
                Ok(false) => Status::Dunno,
                Err(e) => {
                    queue::log::warning(&format!("mynetworks: {e}"));
                    self.server_error()
                }
            },
            Step::PermitInetInterfaces if p.own_addrs.contains(&self.addr) => Status::Ok,
            Step::PermitSaslAuthenticated if ctx.sasl_user.is_some() => Status::Ok,
            Step::PermitInetInterfaces | Step::PermitSaslAuthenticated => Status::Dunno,
            Step::RejectUnknownClientHostname
                if ctx.client_name.eq_ignore_ascii_case("unknown") =>
            {
                self.reject(
                    ErrClass::Policy,
                    p.codes.unknown_client,
                    "4.7.25",
                    format!(
                        "Client host rejected: cannot find your hostname, [{}]",
                        self.addr
                    ),
                )
            }
            Step::RejectUnknownClientHostname => Status::Dunno,
            Step::Access(kind, t) => self.access(*kind, *t, def).await,
            Step::BareTable(t) => match def {
                Some(kind) => self.access(kind, *t, def).await,
                None => {
                    queue::log::warning(&format!(
                        "specify one of (check_client_access, check_helo_access, check_sender_access, \
                         check_recipient_access) before {rc} restriction \"{}\"",
                        p.tables.get(*t).map_or("?", |t| t.name())
                    ));
                    self.server_error()
                }
            },
            Step::RejectInvalidHeloHostname => match ctx.helo {
                Some(h) if h.starts_with('[') => self.invalid_hostaddr(h),
                Some(h) if !valid_hostname(truncate_dot(h)) && !valid_hostaddr(truncate_dot(h)) => {
                    self.helo_reject(p.codes.invalid_hostname, h, "Invalid name")
                }
                _ => Status::Dunno,
            },
            Step::RejectNonFqdnHeloHostname => match ctx.helo {
                Some(h) if h.starts_with('[') => self.invalid_hostaddr(h),
                Some(h) if !valid_hostname(truncate_dot(h)) || !truncate_dot(h).contains('.') => {
                    self.helo_reject(p.codes.non_fqdn, h, "need fully-qualified hostname")
                }
                _ => Status::Dunno,
            },
            Step::RejectUnknownHeloHostname => match ctx.helo {
                Some(h) if h.starts_with('[') => self.invalid_hostaddr(h),
                Some(h) => self.unknown_hostname(h).await,
                None => Status::Dunno,
            },
            Step::RejectNonFqdnSender
            | Step::RejectUnknownSenderDomain
            | Step::RejectUnlistedSender
            | Step::RejectNonFqdnRecipient
            | Step::RejectUnknownRecipientDomain
            | Step::RejectUnlistedRecipient => self.address_check(step).await,
            Step::PermitAuthDestination
            | Step::RejectUnauthDestination
            | Step::DeferUnauthDestination => self.relay_check(step),
            Step::Class(c) => match p.classes.get(*c) {
                Some(steps) => self.run(steps, rn, rc, def).await,
                None => self.server_error(),
            },
        }
    }

    fn server_error(&mut self) -> Status {
        self.reject(
            ErrClass::Software,
            451,
            "4.3.5",
            "Server configuration error".into(),
        )
    }

    fn dict_retry(&mut self, name: &str) -> Status {
        self.reject(
            ErrClass::Data,
            451,
            "4.3.0",
            format!("<{name}>: Temporary lookup failure"),
        )
    }

    /// Postfix DEFER_IF_PERMIT: remember the failure (unless warn_if_reject
    /// is in effect or the action is "defer"), else reject now.
    fn defer_if_permit(&mut self, remember: bool, code: u16, dsn: &str, text: String) -> Status {
        if self.warn_if_reject == 0 && remember {
            if self.defer_if_permit.is_none() {
                self.defer_if_permit = Some(Deferral {
                    class: ErrClass::Policy,
                    code,
                    dsn: dsn.to_string(),
                    text,
                });
            }
            Status::Dunno
        } else {
            self.reject(ErrClass::Policy, code, dsn, text)
        }
    }

    /// Postfix DEFER_IF_REJECT: a later 5xx rejection becomes this.
    fn defer_if_reject(&mut self, code: u16, dsn: &str, text: String) {
        if self.defer_if_reject.is_none() {
            self.defer_if_reject = Some(Deferral {
                class: ErrClass::Policy,
                code,
                dsn: dsn.to_string(),
                text,
            });
        }
    }

    /// Postfix smtpd_check_reject().
    fn reject(&mut self, class: ErrClass, code: u16, dsn: &str, text: String) -> Status {
        let warn = self.warn_if_reject > 0 && class == ErrClass::Policy;
        let (mut code, mut dsn, mut text) = (code, EnhancedCode::parse(dsn), text);
        if !(400..=599).contains(&code) || dsn.is_none() {
            queue::log::warning(&format!(
                "SMTP reply code configuration error: {code} {} {text}",
                dsn.map(|d| d.to_string()).unwrap_or_default()
            ));
            code = 450;
            dsn = Some(EnhancedCode::new(4, 7, 1));
            text = "Service unavailable".into();
        }
        let mut dsn = dsn.unwrap_or(EnhancedCode::new(4, 7, 1));
        let text = printable(
            &text,
            510usize.saturating_sub(4 + dsn.to_string().len() + 1),
        );
        if !warn
            && code >= 500
            && let Some(d) = self.defer_if_reject.take()
        {
            self.warn_if_reject = 0;
            return self.reject(d.class, d.code, &d.dsn, d.text);
        }
        if self.p.soft_bounce && code >= 500 {
            code -= 100;
        }
        // The DSN class follows the reply code.
        dsn.class = if code >= 500 { 5 } else { 4 };
        let reply = Reply::new(code, Some(dsn), &text);
        let log = format!("{code} {dsn} {text}");
        if warn {
            self.log_whatsup("reject_warning", &log);
            Status::Dunno
        } else {
            Status::Reject(Box::new((reply, log)))
        }
    }

    /// Postfix log_whatsup(): a `NOQUEUE: what: VERB from host[addr]: text;
    /// from=<...> to=<...> proto=... helo=<...>` line.
    fn log_whatsup(&self, what: &str, text: &str) {
        let ctx = self.ctx;
        let mut line = format!(
            "NOQUEUE: {what}: {} from {}: {text};",
            self.verb, self.namaddr
        );
        if let Some(s) = ctx.sender {
            line.push_str(&format!(" from=<{s}>"));
        }
        if let Some(r) = ctx.recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        line.push_str(&format!(" proto={}", ctx.protocol));
        if let Some(h) = ctx.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        queue::log::info(&line);
    }
}

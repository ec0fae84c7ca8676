//! check_*_access: the lookup for each access type and what its result
//! means (Postfix check_table_result()).

use super::{CLIENT, ErrClass, Eval, HELO, RECIPIENT, SASL, SENDER, Status};
use crate::policy::access::{self, Action, dsn_fix, dsn_split};
use crate::policy::restriction::{AccessKind, parse_runtime};

impl Eval<'_, '_> {
    /// check_*_access.
    pub(super) async fn access(
        &mut self,
        kind: AccessKind,
        t: usize,
        def: Option<AccessKind>,
    ) -> Status {
        let (p, ctx) = (self.p, self.ctx);
        let Some(table) = p.tables.get(t) else {
            return self.server_error();
        };
        let parent = p.access_parent;
        let (hit, rn, rc, suspicious) = match kind {
            AccessKind::Client => (
                access::find_client(table, ctx.client_name, &self.addr.to_string(), parent),
                self.namaddr.clone(),
                CLIENT,
                false,
            ),
            AccessKind::Helo => match ctx.helo {
                Some(h) => (
                    access::find_domain(table, h, parent),
                    h.to_string(),
                    HELO,
                    false,
                ),
                None => return Status::Dunno,
            },
            AccessKind::Sender | AccessKind::Recipient => {
                let (addr, rc) = if kind == AccessKind::Sender {
                    (self.sender.clone(), SENDER)
                } else {
                    (self.recipient.clone(), RECIPIENT)
                };
                let Some(addr) = addr else {
                    return Status::Dunno;
                };
                if addr.is_empty() {
                    // The null sender is looked up as smtpd_null_access_lookup_key.
                    let hit = crate::policy::networks::lookup(table, &p.null_key, true);
                    (hit, addr, rc, false)
                } else {
                    let resolved = match p.dest.resolve(&addr) {
                        Ok(r) => r,
                        Err(e) => {
                            queue::log::warning(&e.to_string());
                            return self.dict_retry(&addr);
                        }
                    };
                    let suspicious = rc == RECIPIENT && (resolved.routed || self.recipient_routed);
                    let hit =
                        access::find_mail(table, &resolved.addr, parent, &p.recipient_delimiter);
                    (hit, addr, rc, suspicious)
                }
            }
            AccessKind::Sasl => match ctx.sasl_user {
                Some(u) if p.sasl_enable && !u.is_empty() => (
                    crate::policy::networks::lookup(table, u, true),
                    u.chars()
                        .map(|c| if c.is_control() { '_' } else { c })
                        .collect(),
                    SASL,
                    false,
                ),
                _ => return Status::Dunno,
            },
        };
        let value = match hit {
            Ok(Some(v)) => v,
            Ok(None) => return Status::Dunno,
            Err(e) => {
                queue::log::warning(&e.to_string());
                "451 4.3.5 Server configuration error".to_string()
            }
        };
        let status = self.table_result(&value, table.name(), &rn, rc, def).await;
        if suspicious && matches!(status, Status::Ok) {
            Status::Dunno
        } else {
            status
        }
    }

    /// What an access table result means (Postfix check_table_result()).
    pub(super) async fn table_result(
        &mut self,
        value: &str,
        table: &str,
        rn: &str,
        rc: &'static str,
        def: Option<AccessKind>,
    ) -> Status {
        let p = self.p;
        let text_or = |t: &str, d: &str| {
            if t.is_empty() {
                d.to_string()
            } else {
                t.to_string()
            }
        };
        match access::parse_action(value) {
            Action::Ok => Status::Ok,
            Action::Dunno => Status::Dunno,
            Action::Reject(text) => {
                let (dsn, t) = dsn_split("5.7.1", &text);
                let msg = format!("<{rn}>: {rc} rejected: {}", text_or(t, "Access denied"));
                self.reject(
                    ErrClass::Policy,
                    p.codes.map_reject,
                    &dsn_fix(&dsn, rc),
                    msg,
                )
            }
            Action::Defer(text) => {
                let (dsn, t) = dsn_split("4.7.1", &text);
                let msg = format!("<{rn}>: {rc} rejected: {}", text_or(t, "Access denied"));
                self.reject(ErrClass::Policy, p.codes.map_defer, &dsn_fix(&dsn, rc), msg)
            }
            Action::Code(code, text) => {
                let (dsn, t) = dsn_split(&format!("{}.7.1", code / 100), &text);
                let msg = format!("<{rn}>: {rc} rejected: {}", text_or(t, "Access denied"));
                self.reject(ErrClass::Policy, code, &dsn_fix(&dsn, rc), msg)
            }
            Action::DeferIfPermit(text) => {
                let (dsn, t) = dsn_split("4.7.1", &text);
                let msg = format!(
                    "<{rn}>: {rc} rejected: {}",
                    text_or(t, "Service unavailable")
                );
                self.defer_if_permit(true, p.codes.map_defer, &dsn_fix(&dsn, rc), msg)
            }
            Action::DeferIfReject(text) => {
                let (dsn, t) = dsn_split("4.7.1", &text);
                let msg = format!(
                    "<{rn}>: {rc} rejected: {}",
                    text_or(t, "Service unavailable")
                );
                self.defer_if_reject(p.codes.map_defer, &dsn_fix(&dsn, rc), msg);
                Status::Dunno
            }
            Action::Warn(text) => {
                self.log_whatsup("warn", &text);
                Status::Dunno
            }
            Action::Info(text) => {
                self.log_whatsup("info", &text);
                Status::Dunno
            }
            Action::Unsupported(a) => {
                queue::log::warning(&format!(
                    "access table {table}: action {a} is not supported by postern; ignored"
                ));
                Status::Dunno
            }
            Action::TableInValue => {
                queue::log::warning(&format!(
                    "access table {table} has entry with lookup table: {value}"
                ));
                queue::log::warning("do not specify lookup tables inside SMTPD access maps");
                queue::log::warning("define a restriction class and specify its name instead.");
                self.server_error()
            }
            Action::Restrictions(list) => match parse_runtime(&list, &p.class_names) {
                Ok(steps) if steps.is_empty() => {
                    queue::log::warning(&format!(
                        "access table {table} entry {value} has empty value"
                    ));
                    Status::Ok
                }
                Ok(steps) => self.run(&steps, rn, rc, def).await,
                Err(why) => {
                    queue::log::warning(&format!("access table {table}: {why}"));
                    self.server_error()
                }
            },
        }
    }
}

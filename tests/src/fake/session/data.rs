//! DATA and BDAT: receiving the message, faults in mid-transfer, and the
//! end-of-data checks.

use std::sync::Arc;
use std::time::SystemTime;

use proto::Reply;
use proto::data::{BareLf, BdatReceiver, DataReceiver, Feed};

use super::{Flow, Sent, Session, flow};
use crate::fake::record::{Message, ViolationKind};
use crate::fake::replies;
use crate::fake::script::{Action, Phase};

impl Session {
    /// The sequence check shared by DATA and BDAT.
    fn ready_for_data(&self) -> Option<Reply> {
        match &self.tx {
            None => Some(replies::bad_sequence("Need mail command")),
            Some(t) if t.rcpts.is_empty() => Some(replies::bad_sequence("Need rcpt command")),
            Some(_) => None,
        }
    }

    pub(super) async fn data(&mut self) -> std::io::Result<Flow> {
        if let Some(r) = self.ready_for_data() {
            return self.simple(r);
        }
        if self.tx.as_ref().is_some_and(|t| t.bdat.is_some()) {
            return self.simple(replies::bad_sequence("DATA after BDAT"));
        }
        let action = self.action(Phase::Data, |_| {});
        let sent = self.perform(&action, replies::start_input()).await?;
        if !matches!(&sent, Sent::Reply { reply, close: false } if reply.code == 354) {
            return flow(sent);
        }
        // BareLf::Allow keeps the content exactly as sent; bare LFs are
        // flagged on the message instead.
        let mut rx = DataReceiver::new(0, BareLf::Allow);
        let mut content = Vec::new();
        let mut pending = self.lines.take_buffered();
        let mut seen: u64 = 0;
        loop {
            let take = match action.drop_after {
                Some(limit) => (limit.saturating_sub(seen) as usize).min(pending.len()),
                None => pending.len(),
            };
            let feed = rx.feed(&pending[..take], &mut content);
            match feed {
                Feed::End { consumed } => {
                    self.lines.feed(&pending[consumed..]);
                    break;
                }
                Feed::More => {
                    seen += take as u64;
                    if action.drop_after.is_some_and(|l| seen >= l) {
                        self.shared.transcript(
                            self.id,
                            format!("S: <disconnect after {seen} bytes of DATA>"),
                        );
                        return Ok(Flow::Close);
                    }
                }
            }
            let n = self.read_some().await?;
            if n == 0 {
                self.shared
                    .transcript(self.id, "-- client closed during DATA".into());
                return Ok(Flow::Close);
            }
            pending = self.rbuf[..n].to_vec();
        }
        self.shared
            .transcript(self.id, format!("C: <{} bytes of message>", content.len()));
        let bare_lf = rx.bare_lf_seen();
        self.end_of_data(content, false, bare_lf).await
    }

    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> std::io::Result<Flow> {
        let refusal = self.ready_for_data();
        let action = match refusal {
            None => self.action(Phase::Bdat, |_| {}),
            Some(_) => Action::default(),
        };
        if refusal.is_none()
            && let Some(tx) = self.tx.as_mut()
        {
            tx.bdat
                .get_or_insert_with(|| (BdatReceiver::new(0), Vec::new()));
            if action.drop_after.is_some() {
                tx.drop_after = action.drop_after;
            }
        }
        // The chunk is read even when the command is refused.
        let mut remaining = size;
        let mut pending = self.lines.take_buffered();
        loop {
            let used = match self.tx.as_mut() {
                Some(tx) if refusal.is_none() => {
                    let drop = tx.drop_after;
                    // Invariant: set above for an accepted BDAT.
                    let (rx, content) = tx.bdat.as_mut().expect("BDAT receiver");
                    let room = drop.map_or(pending.len(), |d| {
                        (d.saturating_sub(rx.size()) as usize).min(pending.len())
                    });
                    let used = rx.feed_chunk(&pending[..room], &mut remaining, content);
                    if drop.is_some_and(|d| rx.size() >= d) {
                        let n = rx.size();
                        self.shared.transcript(
                            self.id,
                            format!("S: <disconnect after {n} bytes of BDAT>"),
                        );
                        return Ok(Flow::Close);
                    }
                    used
                }
                _ => {
                    let n = remaining.min(pending.len() as u64) as usize;
                    remaining -= n as u64;
                    n
                }
            };
            if remaining == 0 {
                self.lines.feed(&pending[used..]);
                break;
            }
            let n = self.read_some().await?;
            if n == 0 {
                self.shared
                    .transcript(self.id, "-- client closed during BDAT".into());
                return Ok(Flow::Close);
            }
            pending = self.rbuf[..n].to_vec();
        }
        self.shared
            .transcript(self.id, format!("C: <{size} bytes of chunk>"));
        if let Some(r) = refusal {
            return self.simple(r);
        }
        if !last {
            let sent = self.perform(&action, replies::chunk_ok(size)).await?;
            return flow(sent);
        }
        let Some((rx, content)) = self.tx.as_mut().and_then(|t| t.bdat.take()) else {
            return self.simple(replies::bad_sequence("Need mail command"));
        };
        self.end_of_data(content, true, rx.bare_lf_seen()).await
    }

    /// The checks of §7 at the end of the message, then the reply:
    /// concurrency (`432`, not scriptable), then a scripted action, else
    /// send-as (`550 5.7.60`), the recipient budget (`554 5.2.0`), or
    /// `250`. An accepted message is charged to the mailbox's message rate
    /// and the P2 sender's recipient budget.
    async fn end_of_data(
        &mut self,
        content: Vec<u8>,
        bdat: bool,
        bare_lf: bool,
    ) -> std::io::Result<Flow> {
        let Some(tx) = self.tx.take() else {
            return self.simple(replies::bad_sequence("Need mail command"));
        };
        let cfg = &self.shared.cfg;
        let user = self.auth_user.clone();
        let over = user
            .as_deref()
            .is_some_and(|u| self.shared.over_limit(self.id, u));
        let p2 = header_from(&content);
        let content = Arc::new(content);
        let server_id = replies::message_id(cfg);
        // The P2 sender the recipient budget is charged to.
        let sender = p2.clone().or_else(|| user.clone());
        let (action, normal, own) = if over {
            (Action::default(), replies::concurrency_exceeded(cfg), None)
        } else {
            let c = content.clone();
            let from = tx.from.clone();
            let rcpts = tx.rcpts.clone();
            let p = p2.clone();
            let action = self.action(Phase::DataEnd, |e| {
                e.content = Some(c);
                e.mail_from = Some(from);
                e.rcpts = rcpts;
                e.p2_sender = p;
            });
            let own = self.own_end_of_data(
                user.as_deref(),
                p2.as_deref(),
                sender.as_deref(),
                tx.rcpts.len(),
            );
            let normal = match &own {
                Some((r, _, _)) => r.clone(),
                None => replies::queued(cfg, &server_id),
            };
            (action, normal, own)
        };
        let sent = self.perform(&action, normal).await?;
        if let (Some((_, kind, who)), None, false) = (&own, &action.reply, action.silent) {
            self.shared.violation(*kind, who, self.id);
        }
        let reply = match &sent {
            Sent::Reply { reply, .. } => Some(reply.clone()),
            Sent::Silent => None,
        };
        let accepted = reply.as_ref().is_some_and(Reply::is_positive);
        if accepted {
            self.accepted += 1;
            self.shared
                .accepted(self.id, user.as_deref(), sender.as_deref(), tx.rcpts.len());
        }
        self.shared.message(Message {
            session: self.id,
            mail_from: tx.from,
            mail_params: tx.params,
            rcpt_to: tx.rcpts,
            rcpt_params: tx.rcpt_params,
            auth_user: self.auth_user.clone(),
            auth_app: self.auth_app.clone(),
            p2_sender: p2,
            tls: self.tls,
            helo: self.helo.clone(),
            content: Arc::try_unwrap(content).unwrap_or_else(|c| (*c).clone()),
            bdat,
            bare_lf,
            reply,
            server_id: accepted.then_some(server_id),
            at: SystemTime::now(),
        });
        flow(sent)
    }

    /// The fake's own refusal at the end of data, with the violation to
    /// count and against whom.
    fn own_end_of_data(
        &self,
        user: Option<&str>,
        p2: Option<&str>,
        sender: Option<&str>,
        rcpts: usize,
    ) -> Option<(Reply, ViolationKind, String)> {
        let cfg = &self.shared.cfg;
        if cfg.send_as_check
            && let (Some(u), Some(from)) = (user, p2)
            && !self.shared.may_send_as(u, from)
        {
            return Some((
                replies::send_as_denied(cfg),
                ViolationKind::SendAs,
                u.into(),
            ));
        }
        if let Some(s) = sender
            && self.shared.over_budget(s, rcpts)
        {
            return Some((
                replies::submission_quota(cfg),
                ViolationKind::RecipientBudget,
                s.into(),
            ));
        }
        None
    }
}

/// The first address of the header `From:`, lower case (the P2 sender).
pub(crate) fn header_from(content: &[u8]) -> Option<String> {
    let headers = proto::header::parse_headers(content);
    let from = headers.iter().find(|h| h.is("From"))?;
    proto::header::parse_address_list(&from.value())
        .into_iter()
        .next()
        .map(|a| a.address.to_ascii_lowercase())
        .filter(|a| !a.is_empty())
}

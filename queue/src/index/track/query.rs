//! The searches and the summary of `postern log` over the tracking
//! tables: keys that match exactly, by domain or by pattern, the newest
//! rows first from the indexes, and per-mailbox and per-client counts.

use super::keys::Match;
use super::{TrackStatus, TrackedMessage, qid_key, qid_text};
use crate::index::{Index, IndexError};
use rusqlite::{OptionalExtension, ToSql, params};
use std::collections::BTreeMap;

/// What `postern log` asks for. Empty fields do not restrict.
#[derive(Debug, Clone, Default)]
pub struct TrackQuery {
    /// Envelope sender.
    pub sender: Option<Match>,
    /// Recipient.
    pub recipient: Option<Match>,
    /// Queue ID (exact, upper case).
    pub queue_id: Option<String>,
    /// Message-ID (with or without angle brackets).
    pub message_id: Option<String>,
    /// SASL user.
    pub sasl_user: Option<Match>,
    /// Client: host name or address.
    pub client: Option<Match>,
    /// Statuses wanted (empty: all).
    pub statuses: Vec<TrackStatus>,
    /// Earliest time, microseconds (inclusive).
    pub since: Option<i64>,
    /// Latest time, microseconds (exclusive).
    pub until: Option<i64>,
    /// Most rows returned: the newest ones (`None`: all).
    pub limit: Option<usize>,
}

impl TrackQuery {
    fn wants(&self, s: TrackStatus) -> bool {
        self.statuses.is_empty() || self.statuses.contains(&s)
    }
}

/// One row of `postern log`: an attempt with its message, or a recipient
/// of a message not attempted yet (status `queued`, time = arrival).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRow {
    /// Attempt time (arrival for `queued`), microseconds.
    pub time: i64,
    /// The outcome.
    pub status: TrackStatus,
    /// Recipient.
    pub recipient: String,
    /// Original recipient, if it differs.
    pub orig_recipient: Option<String>,
    /// Relay (`none` when no server answered); `None` for `queued`.
    pub relay: Option<String>,
    /// Seconds since arrival; `None` for `queued`.
    pub delay: Option<f64>,
    /// Enhanced status code; `None` for `queued`.
    pub dsn: Option<String>,
    /// The reply; `None` for `queued`.
    pub reply: Option<String>,
    /// The message.
    pub message: TrackedMessage,
}

const MESSAGE_COLUMNS: &str = "m.qid, m.arrival, m.client_name, m.client_addr, m.sasl_user,
    m.uid, m.origin, m.sender, m.recipients, m.size, m.message_id, m.subject";

fn message_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<TrackedMessage> {
    let rcpts: String = r.get(at + 8)?;
    Ok(TrackedMessage {
        queue_id: qid_text(r.get(at)?),
        arrival: r.get(at + 1)?,
        client_name: r.get(at + 2)?,
        client_addr: r.get(at + 3)?,
        sasl_user: r.get(at + 4)?,
        uid: r.get(at + 5)?,
        origin: r.get(at + 6)?,
        sender: r.get(at + 7)?,
        recipients: if rcpts.is_empty() {
            Vec::new()
        } else {
            rcpts.split('\n').map(str::to_string).collect()
        },
        size: r.get(at + 9)?,
        message_id: r.get(at + 10)?,
        subject: r.get(at + 11)?,
    })
}

/// Per-group counts of `postern log --summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryRow {
    /// The SASL user or the client (empty: none / local submission).
    pub name: String,
    /// Messages accepted in the period.
    pub messages: i64,
    /// Their envelope recipients.
    pub recipients: i64,
    /// Their bytes.
    pub bytes: i64,
    /// Deliveries in the period.
    pub sent: i64,
    /// Deferrals in the period (one per deferred attempt).
    pub deferred: i64,
    /// Recipients bounced or expired in the period.
    pub bounced: i64,
}

/// `postern log --summary`: the messages accepted and the delivery
/// attempts made in a period, per SASL user and per client, with totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// By SASL user, most messages first (name empty: unauthenticated).
    pub by_user: Vec<SummaryRow>,
    /// By client address (name `name[addr]`; empty: local submissions).
    pub by_client: Vec<SummaryRow>,
    /// Everything.
    pub total: SummaryRow,
}

impl SummaryRow {
    fn add(&mut self, o: &SummaryRow) {
        self.messages += o.messages;
        self.recipients += o.recipients;
        self.bytes += o.bytes;
        self.sent += o.sent;
        self.deferred += o.deferred;
        self.bounced += o.bounced;
    }
}

/// Summary counts by (SASL user in lower case, client address), with the
/// client's name.
#[derive(Default)]
struct Groups {
    map: std::collections::HashMap<(String, String), (Option<String>, SummaryRow)>,
    key: (String, String),
}

impl Groups {
    /// The counts of the group of a row whose first three columns are the
    /// SASL user, the client address and the client name.
    fn get(&mut self, r: &rusqlite::Row<'_>) -> rusqlite::Result<&mut SummaryRow> {
        let text =
            |i: usize| -> rusqlite::Result<Option<&str>> { Ok(r.get_ref(i)?.as_str_or_null()?) };
        self.key.0.clear();
        self.key.0.extend(
            text(0)?
                .unwrap_or("")
                .chars()
                .map(|c| c.to_ascii_lowercase()),
        );
        self.key.1.clear();
        self.key.1.push_str(text(1)?.unwrap_or(""));
        if !self.map.contains_key(&self.key) {
            self.map.insert(self.key.clone(), Default::default());
        }
        let g = self.map.get_mut(&self.key).expect("inserted just above");
        if let Some(name) = text(2)?
            && g.0.as_deref().is_none_or(|n| name > n)
        {
            g.0 = Some(name.to_string());
        }
        Ok(&mut g.1)
    }
}

/// Most messages first, then by name.
fn sorted(rows: impl Iterator<Item = SummaryRow>) -> Vec<SummaryRow> {
    let mut v: Vec<SummaryRow> = rows.collect();
    v.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

impl Index {
    /// True when the index has the tracking tables (a queue manager of
    /// this version has opened it).
    ///
    /// # Errors
    /// Read errors.
    pub fn track_ready(&self) -> Result<bool, IndexError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'track_attempts'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(self.err("look for the tracking tables"))
    }

    /// Rows matching `q`, oldest first (the newest `q.limit` of them).
    ///
    /// # Errors
    /// Read errors (including an index without tracking tables).
    pub fn track_query(&self, q: &TrackQuery) -> Result<Vec<TrackRow>, IndexError> {
        let mut rows = Vec::new();
        let attempt_statuses: Vec<TrackStatus> = TrackStatus::ALL
            .into_iter()
            .filter(|s| *s != TrackStatus::Queued && q.wants(*s))
            .collect();
        if !attempt_statuses.is_empty() {
            self.query_attempts(q, &attempt_statuses, &mut rows)?;
        }
        if q.wants(TrackStatus::Queued) {
            self.query_waiting(q, &mut rows)?;
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.time));
        if let Some(n) = q.limit {
            rows.truncate(n);
        }
        rows.reverse();
        Ok(rows)
    }

    fn message_conditions(q: &TrackQuery, conds: &mut Vec<String>, args: &mut Vec<Box<dyn ToSql>>) {
        if let Some(m) = &q.sender {
            let (c, a) = m.sql("m.sender", true);
            conds.push(c);
            args.extend(a);
        }
        if let Some(id) = &q.queue_id {
            conds.push("m.qid = ?".into());
            // Not a queue ID: nothing can match.
            args.push(Box::new(qid_key(&id.to_ascii_uppercase()).unwrap_or(-1)));
        }
        if let Some(mid) = &q.message_id {
            let mid = mid.trim();
            let mid = if mid.starts_with('<') {
                mid.to_string()
            } else {
                format!("<{mid}>")
            };
            conds.push("m.message_id = ?".into());
            args.push(Box::new(mid));
        }
        if let Some(m) = &q.sasl_user {
            let (c, a) = m.sql("m.sasl_user", true);
            conds.push(c);
            args.extend(a);
        }
        if let Some(m) = &q.client {
            let (c1, a1) = m.sql("m.client_name", false);
            let (c2, a2) = m.sql("m.client_addr", false);
            conds.push(format!("({c1} OR {c2})"));
            args.extend(a1);
            args.extend(a2);
        }
    }

    fn query_attempts(
        &self,
        q: &TrackQuery,
        statuses: &[TrackStatus],
        out: &mut Vec<TrackRow>,
    ) -> Result<(), IndexError> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        Self::message_conditions(q, &mut conds, &mut args);
        if let Some(m) = &q.recipient {
            // The newest rows of a pattern that covers much of the record
            // (user1*) come faster along the time index, stopping at the
            // limit, than through the recipient index and a sort of all.
            let mut by_rcpt = true;
            if let (Some((lo, hi)), Some(n)) = (m.prefix_range(), q.limit) {
                let count: i64 = self
                    .conn
                    .query_row(
                        "SELECT count(*) FROM track_attempts WHERE rcpt >= ?1 AND rcpt < ?2",
                        params![lo, hi],
                        |r| r.get(0),
                    )
                    .map_err(self.err("count tracked recipients"))?;
                by_rcpt = count <= (n as i64).saturating_mul(50).max(10_000);
            }
            // "+" keeps SQLite from using the recipient index.
            let (c, a) = if by_rcpt {
                m.sql("a.rcpt", true)
            } else {
                m.sql("+a.rcpt", false)
            };
            conds.push(c);
            args.extend(a);
        }
        if statuses.len() < 4 {
            conds.push(format!(
                "a.status IN ({})",
                vec!["?"; statuses.len()].join(", ")
            ));
            for s in statuses {
                args.push(Box::new(s.as_str()));
            }
        }
        if let Some(t) = q.since {
            conds.push("a.ts >= ?".into());
            args.push(Box::new(t));
        }
        if let Some(t) = q.until {
            conds.push("a.ts < ?".into());
            args.push(Box::new(t));
        }
        let mut sql = format!(
            "SELECT a.ts, a.status, a.rcpt, a.orig_rcpt, a.relay, a.delay, a.dsn, a.reply, {MESSAGE_COLUMNS}
             FROM track_attempts a JOIN track_messages m ON m.qid = a.qid"
        );
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY a.ts DESC, a.rowid DESC");
        if let Some(n) = q.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(self.err("prepare the tracking query"))?;
        let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
        let rows = st
            .query_map(params.as_slice(), |r| {
                let status: String = r.get(1)?;
                Ok(TrackRow {
                    time: r.get(0)?,
                    status: TrackStatus::parse(&status).unwrap_or(TrackStatus::Deferred),
                    recipient: r.get(2)?,
                    orig_recipient: r.get(3)?,
                    relay: Some(r.get(4)?),
                    delay: Some(r.get(5)?),
                    dsn: Some(r.get(6)?),
                    reply: Some(r.get(7)?),
                    message: message_from(r, 8)?,
                })
            })
            .map_err(self.err("read tracked attempts"))?;
        for row in rows {
            out.push(row.map_err(self.err("read tracked attempts"))?);
        }
        Ok(())
    }

    /// Messages still in the queue that have no attempt yet (the queue
    /// mirror `messages` says what is queued; the live queue is small
    /// beside the record): one row per matching recipient.
    fn query_waiting(&self, q: &TrackQuery, out: &mut Vec<TrackRow>) -> Result<(), IndexError> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM messages")
            .and_then(|mut st| {
                st.query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(self.err("read the queued messages"))?;
        if ids.is_empty() {
            return Ok(());
        }
        let mut conds: Vec<String> = vec![
            "m.qid = ?".into(),
            "NOT EXISTS (SELECT 1 FROM track_attempts a WHERE a.qid = m.qid)".into(),
        ];
        let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(0i64)];
        Self::message_conditions(q, &mut conds, &mut args);
        if let Some(t) = q.since {
            conds.push("m.arrival >= ?".into());
            args.push(Box::new(t));
        }
        if let Some(t) = q.until {
            conds.push("m.arrival < ?".into());
            args.push(Box::new(t));
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM track_messages m WHERE {}",
            conds.join(" AND ")
        );
        let mut st = self
            .conn
            .prepare(&sql)
            .map_err(self.err("prepare the tracking query"))?;
        for id in ids {
            let Some(key) = qid_key(&id) else {
                continue;
            };
            args[0] = Box::new(key);
            let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
            let m = st
                .query_row(params.as_slice(), |r| message_from(r, 0))
                .optional()
                .map_err(self.err("read tracked messages"))?;
            let Some(m) = m else {
                continue;
            };
            for rcpt in &m.recipients {
                if q.recipient.as_ref().is_some_and(|k| !k.matches(rcpt)) {
                    continue;
                }
                out.push(TrackRow {
                    time: m.arrival,
                    status: TrackStatus::Queued,
                    recipient: rcpt.clone(),
                    orig_recipient: None,
                    relay: None,
                    delay: None,
                    dsn: None,
                    reply: None,
                    message: m.clone(),
                });
            }
        }
        Ok(())
    }

    /// Counts per SASL user and per client over `[since, until)`
    /// (microseconds; `None`: unbounded), as pflogsumm counts a log: the
    /// messages that arrived in the period with their recipients and
    /// bytes, and the delivery attempts made in it (sent, deferred, bounced
    /// or expired), under the user and client of their message.
    ///
    /// # Errors
    /// Read errors.
    pub fn track_summary(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Summary, IndexError> {
        let lo = since.unwrap_or(i64::MIN);
        let hi = until.unwrap_or(i64::MAX);
        // Grouped here rather than by SQL's GROUP BY, which sorts every row
        // (four times slower at a million deliveries): one streaming pass
        // over the messages of the period and one over its attempts.
        let mut groups = Groups::default();
        let read = |what: &'static str| self.err(what);
        let mut st = self
            .conn
            .prepare(
                "SELECT sasl_user, client_addr, client_name, nrcpt, size
                 FROM track_messages WHERE arrival >= ?1 AND arrival < ?2",
            )
            .map_err(read("prepare the summary"))?;
        let mut rows = st
            .query(params![lo, hi])
            .map_err(read("read the summary"))?;
        while let Some(r) = rows.next().map_err(read("read the summary"))? {
            let g = groups.get(r).map_err(read("read the summary"))?;
            g.messages += 1;
            g.recipients += r.get::<_, i64>(3).map_err(read("read the summary"))?;
            g.bytes += r.get::<_, i64>(4).map_err(read("read the summary"))?;
        }
        drop(rows);
        let mut st = self
            .conn
            .prepare(
                "SELECT m.sasl_user, m.client_addr, m.client_name, a.status
                 FROM track_attempts a JOIN track_messages m ON m.qid = a.qid
                 WHERE a.ts >= ?1 AND a.ts < ?2",
            )
            .map_err(read("prepare the summary"))?;
        let mut rows = st
            .query(params![lo, hi])
            .map_err(read("read the summary"))?;
        while let Some(r) = rows.next().map_err(read("read the summary"))? {
            let status = r
                .get_ref(3)
                .and_then(|v| Ok(v.as_str()?.as_bytes().first().copied()))
                .map_err(read("read the summary"))?;
            let g = groups.get(r).map_err(read("read the summary"))?;
            match status {
                Some(b's') => g.sent += 1,
                Some(b'd') => g.deferred += 1,
                Some(b'b' | b'e') => g.bounced += 1,
                _ => {}
            }
        }
        let mut users: BTreeMap<String, SummaryRow> = BTreeMap::new();
        let mut clients: BTreeMap<String, (Option<String>, SummaryRow)> = BTreeMap::new();
        let mut total = SummaryRow::default();
        for ((user, addr), (name, counts)) in groups.map {
            users.entry(user).or_default().add(&counts);
            let c = clients.entry(addr).or_default();
            c.0 = c.0.take().max(name);
            c.1.add(&counts);
            total.add(&counts);
        }
        let by_user = sorted(users.into_iter().map(|(name, r)| SummaryRow { name, ..r }));
        let by_client = sorted(clients.into_iter().map(|(addr, (name, r))| {
            let name = if addr.is_empty() {
                String::new()
            } else {
                format!("{}[{addr}]", name.as_deref().unwrap_or("unknown"))
            };
            SummaryRow { name, ..r }
        }));
        Ok(Summary {
            by_user,
            by_client,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::Envelope;
    use crate::index::track::TrackedAttempt;
    use crate::layout::QueueName;

    fn msg(id: &str, arrival: i64, sender: &str, rcpts: &[&str]) -> TrackedMessage {
        TrackedMessage {
            queue_id: id.into(),
            arrival,
            client_name: Some("scanner.lan".into()),
            client_addr: Some("10.0.0.5".into()),
            sasl_user: Some("Scan@Contoso.com".into()),
            uid: None,
            origin: Some("smtpd".into()),
            sender: sender.into(),
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
            size: 1000,
            message_id: Some(format!("<{id}@x>")),
            subject: Some("hello\r\nworld".into()),
        }
    }

    fn attempt(id: &str, ts: i64, rcpt: &str, status: TrackStatus) -> TrackedAttempt {
        TrackedAttempt {
            queue_id: id.into(),
            ts,
            rcpt: rcpt.into(),
            orig_rcpt: None,
            relay: "smtp.example[192.0.2.1]:587".into(),
            delay: 1.5,
            dsn: if status == TrackStatus::Sent {
                "2.0.0".into()
            } else {
                "4.4.1".into()
            },
            status,
            reply: "250 2.0.0 OK".into(),
        }
    }

    #[test]
    fn records_queries_summarises_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut ix = Index::open_rw(&path).unwrap();
        ix.batch(|b| {
            b.track_message(&msg(
                "AAAA00000001",
                100,
                "a@x.com",
                &["b@y.com", "c@y.com"],
            ))?;
            // A second record of the same ID is ignored.
            b.track_message(&msg("AAAA00000001", 999, "other@x.com", &["z@y.com"]))?;
            b.track_message(&msg("AAAA00000002", 200, "d@x.com", &["e@z.com"]))?;
            b.track_message(&msg("AAAA00000003", 300, "", &["f@z.com"]))?;
            b.track_attempt(&attempt(
                "AAAA00000001",
                150,
                "b@y.com",
                TrackStatus::Deferred,
            ))?;
            b.track_attempt(&attempt("AAAA00000001", 160, "B@Y.com", TrackStatus::Sent))?;
            b.track_attempt(&attempt(
                "AAAA00000001",
                160,
                "c@y.com",
                TrackStatus::Bounced,
            ))?;
            b.track_attempt(&attempt(
                "AAAA00000002",
                250,
                "e@z.com",
                TrackStatus::Expired,
            ))?;
            // Still in the queue: 3 (not tried yet) and 1.
            for id in ["AAAA00000003", "AAAA00000001"] {
                b.insert(id, QueueName::Deferred, &Envelope::default(), 1, None)?;
            }
            Ok(())
        })
        .unwrap();
        let ro = Index::open_ro(&path).unwrap();
        let all = ro.track_query(&TrackQuery::default()).unwrap();
        let got: Vec<(i64, &str, TrackStatus)> = all
            .iter()
            .map(|r| (r.time, r.recipient.as_str(), r.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (150, "b@y.com", TrackStatus::Deferred),
                (160, "B@Y.com", TrackStatus::Sent),
                (160, "c@y.com", TrackStatus::Bounced),
                (250, "e@z.com", TrackStatus::Expired),
                (300, "f@z.com", TrackStatus::Queued),
            ]
        );
        assert_eq!(all[0].message.sender, "a@x.com");
        assert_eq!(all[0].message.subject.as_deref(), Some("hello  world"));
        let q = |f: &dyn Fn(&mut TrackQuery)| {
            let mut q = TrackQuery::default();
            f(&mut q);
            ro.track_query(&q)
                .unwrap()
                .into_iter()
                .map(|r| (r.message.queue_id, r.recipient))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            q(&|q| q.recipient = Some(Match::parse("b@y.com"))).len(),
            2,
            "case-insensitive"
        );
        assert_eq!(q(&|q| q.recipient = Some(Match::parse("@z.com"))).len(), 2);
        assert_eq!(q(&|q| q.recipient = Some(Match::parse("*@Y.*"))).len(), 3);
        // A pattern's prefix narrows by the index, ignoring case.
        assert_eq!(q(&|q| q.recipient = Some(Match::parse("B@*"))).len(), 2);
        assert_eq!(q(&|q| q.recipient = Some(Match::parse("c*"))).len(), 1);
        assert_eq!(q(&|q| q.sender = Some(Match::parse("A@X*"))).len(), 3);
        assert_eq!(
            q(&|q| q.client = Some(Match::parse("SCANNER.LAN"))).len(),
            5
        );
        assert_eq!(q(&|q| q.sender = Some(Match::parse("<>"))).len(), 1);
        assert_eq!(
            q(&|q| q.queue_id = Some("aaaa00000002".into()))[0].1,
            "e@z.com"
        );
        assert_eq!(
            q(&|q| q.message_id = Some("AAAA00000002@x".into())).len(),
            1
        );
        assert_eq!(
            q(&|q| q.statuses = vec![TrackStatus::Bounced, TrackStatus::Expired]).len(),
            2
        );
        assert_eq!(q(&|q| q.statuses = vec![TrackStatus::Queued]).len(), 1);
        assert_eq!(
            q(&|q| {
                q.since = Some(160);
                q.until = Some(300);
            })
            .len(),
            3
        );
        assert_eq!(q(&|q| q.client = Some(Match::parse("10.0.0.5"))).len(), 5);
        assert_eq!(
            q(&|q| q.limit = Some(2)),
            vec![
                ("AAAA00000002".to_string(), "e@z.com".to_string()),
                ("AAAA00000003".to_string(), "f@z.com".to_string())
            ],
            "the newest rows, oldest first"
        );
        let s = ro.track_summary(None, None).unwrap();
        assert_eq!(
            s.total,
            SummaryRow {
                name: String::new(),
                messages: 3,
                recipients: 4,
                bytes: 3000,
                sent: 1,
                deferred: 1,
                bounced: 2,
            }
        );
        assert_eq!(s.by_user.len(), 1);
        assert_eq!(s.by_user[0].name, "scan@contoso.com");
        assert_eq!(s.by_client[0].name, "scanner.lan[10.0.0.5]");
        assert_eq!(ro.track_summary(Some(150), None).unwrap().total.messages, 2);
        // Pruning in batches, oldest first.
        let n = ix.batch(|b| b.track_prune(260, 1)).unwrap();
        assert_eq!(n, 2);
        let n = ix.batch(|b| b.track_prune(260, 100)).unwrap();
        assert_eq!(n, 4);
        let left = ro.track_query(&TrackQuery::default()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].recipient, "f@z.com");
    }
}

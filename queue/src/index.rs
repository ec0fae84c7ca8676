//! The SQLite index (WAL mode): a mirror of the queue files' envelopes plus
//! delivery state that files do not hold — per-recipient status and last
//! reason, next attempt time, attempt count, delay-warning flag. One writer
//! (qmgr) keeps it; readers (postqueue, postern log) open it read-only and
//! see consistent snapshots. The files are the truth: the index can always be
//! rebuilt from them (`postsuper -s`), and qmgr reconciles it at start.
//!
//! The tracking tables (every accepted message and delivery attempt, kept
//! for `tracking_retention_time`) are in [`track`].
//!
//! The file is created mode 0600 (its journal files take the same mode):
//! it names senders and recipients, so only `mail_owner` and root read it.
//!
//! Commits use `synchronous=NORMAL`: a power loss can lose the last commits
//! but never corrupts the index, and what it loses only makes a message due
//! again sooner (at-least-once), never loses one.

mod stats;
pub mod track;

use crate::file::Envelope;
use crate::layout::QueueName;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
pub use stats::MessageKey;
use std::path::Path;

/// Schema version stored in `meta` (2: the tracking tables).
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    arrival INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sender TEXT NOT NULL,
    nrcpt INTEGER NOT NULL,
    next_attempt INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    warned INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    client TEXT,
    sasl_user TEXT,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(queue, next_attempt);
CREATE TABLE IF NOT EXISTS recipients (
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    addr TEXT NOT NULL,
    orcpt TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    PRIMARY KEY (id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_ledger (
    account TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    rcpts INTEGER NOT NULL,
    PRIMARY KEY (account, ticket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS account_ledger_ts ON account_ledger(ts);
";

/// An index error with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("queue index {path}: {what}: {source}")]
pub struct IndexError {
    /// The index file.
    pub path: String,
    /// The operation.
    pub what: &'static str,
    /// SQLite's error.
    #[source]
    pub source: rusqlite::Error,
}

/// A message row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Queue ID.
    pub id: String,
    /// Which queue the file is in.
    pub queue: String,
    /// Arrival, microseconds since the epoch.
    pub arrival: i64,
    /// Content size in bytes.
    pub size: i64,
    /// Envelope sender.
    pub sender: String,
    /// Number of recipients.
    pub nrcpt: i64,
    /// Next delivery attempt (microseconds), for deferred messages.
    pub next_attempt: Option<i64>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// True once a delay warning was sent.
    pub warned: bool,
    /// The last deferral reason of the message as a whole.
    pub reason: Option<String>,
}

/// A message submitted for an account (SASL user), for the per-account
/// rate and rolling recipient budget (qmgr keeps these; they survive
/// restarts and `postsuper -s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRow {
    /// qmgr's number for the delivery.
    pub ticket: i64,
    /// When it started or, once answered, finished (microseconds).
    pub ts: i64,
    /// Recipients it submitted (accepted ones, once answered).
    pub rcpts: i64,
}

/// A recipient row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRow {
    /// Position in the envelope.
    pub idx: i64,
    /// Address.
    pub addr: String,
    /// DSN original recipient.
    pub orcpt: Option<String>,
    /// Delivered or bounced already.
    pub done: bool,
    /// Last deferral reason.
    pub reason: Option<String>,
}

/// The index.
pub struct Index {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

impl Index {
    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Opens (creating if needed) the index for writing. Only qmgr and
    /// `postsuper` do this.
    ///
    /// # Errors
    /// The file cannot be opened or is not an SQLite database.
    pub fn open_rw(path: &Path) -> Result<Index, IndexError> {
        let p = path.display().to_string();
        let mk = |what| {
            let p = p.clone();
            move |source| IndexError {
                path: p,
                what,
                source,
            }
        };
        restrict_mode(path);
        let conn = Connection::open(path).map_err(mk("open"))?;
        conn.pragma_update(None, "busy_timeout", 10000)
            .map_err(mk("busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(mk("set WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(mk("set synchronous"))?;
        conn.execute_batch(SCHEMA).map_err(mk("create schema"))?;
        conn.execute_batch(track::SCHEMA)
            .map_err(mk("create the tracking tables"))?;
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?1)",
            params![SCHEMA_VERSION.to_string()],
        )
        .map_err(mk("write schema version"))?;
        // Make sure the file is really a usable database (a corrupt file
        // fails here, and the caller rebuilds it).
        conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .map_err(mk("check"))?;
        Ok(Index { conn, path: p })
    }

    /// Opens the index read-only (mailq, postern log).
    ///
    /// # Errors
    /// The file does not exist or cannot be read.
    pub fn open_ro(path: &Path) -> Result<Index, IndexError> {
        let p = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| IndexError {
            path: p.clone(),
            what: "open read-only",
            source,
        })?;
        let _ = conn.pragma_update(None, "busy_timeout", 10000);
        Ok(Index { conn, path: p })
    }

    /// The account ledger entries newer than `since` (microseconds), by
    /// account, oldest first.
    ///
    /// # Errors
    /// Read errors.
    pub fn ledger(
        &self,
        since: i64,
    ) -> Result<std::collections::HashMap<String, Vec<LedgerRow>>, IndexError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT account, ticket, ts, rcpts FROM account_ledger WHERE ts > ?1 ORDER BY ts",
            )
            .map_err(self.err("read the account ledger"))?;
        let rows = st
            .query_map(params![since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LedgerRow {
                        ticket: r.get(1)?,
                        ts: r.get(2)?,
                        rcpts: r.get(3)?,
                    },
                ))
            })
            .map_err(self.err("read the account ledger"))?;
        let mut out: std::collections::HashMap<String, Vec<LedgerRow>> =
            std::collections::HashMap::new();
        for row in rows {
            let (account, entry) = row.map_err(self.err("read the account ledger"))?;
            out.entry(account).or_default().push(entry);
        }
        Ok(out)
    }

    /// Runs `f` in one transaction (one commit for a batch of changes).
    ///
    /// # Errors
    /// Any statement error; the transaction is rolled back.
    pub fn batch<T>(
        &mut self,
        f: impl FnOnce(&Batch<'_>) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|source| IndexError {
            path: path.clone(),
            what: "begin",
            source,
        })?;
        let b = Batch {
            tx: &tx,
            path: &path,
        };
        let r = f(&b)?;
        tx.commit().map_err(|source| IndexError {
            path,
            what: "commit",
            source,
        })?;
        Ok(r)
    }

    /// All message rows, oldest first.
    ///
    /// # Errors
    /// Read errors.
    pub fn messages(&self) -> Result<Vec<MessageRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, queue, arrival, size, sender, nrcpt, next_attempt, attempts, warned, reason
                 FROM messages ORDER BY arrival, id",
            )
            .map_err(self.err("prepare messages"))?;
        let rows = st
            .query_map([], message_row)
            .map_err(self.err("read messages"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err("read messages"))?;
        Ok(rows)
    }

    /// One message row.
    ///
    /// # Errors
    /// Read errors.
    pub fn message(&self, id: &str) -> Result<Option<MessageRow>, IndexError> {
        self.conn
            .query_row(
                "SELECT id, queue, arrival, size, sender, nrcpt, next_attempt, attempts, warned, reason
                 FROM messages WHERE id = ?1",
                params![id],
                message_row,
            )
            .optional()
            .map_err(self.err("read message"))
    }

    /// The recipients of one message, in envelope order.
    ///
    /// # Errors
    /// Read errors.
    pub fn recipients(&self, id: &str) -> Result<Vec<RecipientRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT idx, addr, orcpt, done, reason FROM recipients WHERE id = ?1 ORDER BY idx",
            )
            .map_err(self.err("prepare recipients"))?;
        let rows = st
            .query_map(params![id], recipient_row)
            .map_err(self.err("read recipients"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err("read recipients"))?;
        Ok(rows)
    }

    /// Every recipient of every message, grouped by message ID (one query,
    /// for mailq on large queues).
    ///
    /// # Errors
    /// Read errors.
    pub fn all_recipients(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<RecipientRow>>, IndexError> {
        let mut st = self
            .conn
            .prepare("SELECT id, idx, addr, orcpt, done, reason FROM recipients ORDER BY id, idx")
            .map_err(self.err("prepare recipients"))?;
        let mut map: std::collections::HashMap<String, Vec<RecipientRow>> =
            std::collections::HashMap::new();
        let mut rows = st.query([]).map_err(self.err("read recipients"))?;
        while let Some(r) = rows.next().map_err(self.err("read recipients"))? {
            let id: String = r.get(0).map_err(self.err("read recipients"))?;
            let row = RecipientRow {
                idx: r.get(1).map_err(self.err("read recipients"))?,
                addr: r.get(2).map_err(self.err("read recipients"))?,
                orcpt: r.get(3).map_err(self.err("read recipients"))?,
                done: r.get::<_, i64>(4).map_err(self.err("read recipients"))? != 0,
                reason: r.get(5).map_err(self.err("read recipients"))?,
            };
            map.entry(id).or_default().push(row);
        }
        Ok(map)
    }
}

/// Makes the index and its journal files mode 0600, creating an empty
/// index file that way when there is none (SQLite would create it with the
/// umask's mode, usually world-readable). Failures are left to the open
/// that follows.
fn restrict_mode(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        queue: r.get(1)?,
        arrival: r.get(2)?,
        size: r.get(3)?,
        sender: r.get(4)?,
        nrcpt: r.get(5)?,
        next_attempt: r.get(6)?,
        attempts: r.get(7)?,
        warned: r.get::<_, i64>(8)? != 0,
        reason: r.get(9)?,
    })
}

fn recipient_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecipientRow> {
    Ok(RecipientRow {
        idx: r.get(0)?,
        addr: r.get(1)?,
        orcpt: r.get(2)?,
        done: r.get::<_, i64>(3)? != 0,
        reason: r.get(4)?,
    })
}

/// Changes made inside one transaction.
pub struct Batch<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    path: &'a str,
}

impl Batch<'_> {
    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError {
            path: self.path.to_string(),
            what,
            source,
        }
    }

    /// Records a message and its recipients (replacing any previous rows).
    ///
    /// # Errors
    /// Statement errors.
    pub fn insert(
        &self,
        id: &str,
        queue: QueueName,
        env: &Envelope,
        size: u64,
        message_id: Option<&str>,
    ) -> Result<(), IndexError> {
        self.delete(id)?;
        let client = env
            .attr("client_name")
            .map(|n| format!("{}[{}]", n, env.attr("client_addr").unwrap_or("")));
        self.tx
            .prepare_cached(
                "INSERT INTO messages (id, queue, arrival, size, sender, nrcpt, client, sasl_user, message_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    queue.as_str(),
                    crate::time::micros(env.arrival),
                    size as i64,
                    env.sender,
                    env.recipients.len() as i64,
                    client,
                    env.attr("sasl_username"),
                    message_id
                ])
            })
            .map_err(self.err("insert message"))?;
        let mut st = self
            .tx
            .prepare_cached(
                "INSERT INTO recipients (id, idx, addr, orcpt, done) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(self.err("prepare recipient"))?;
        for (i, r) in env.recipients.iter().enumerate() {
            st.execute(params![id, i as i64, r.addr, r.orcpt, r.done as i64])
                .map_err(self.err("insert recipient"))?;
        }
        Ok(())
    }

    /// Moves a message to another queue.
    ///
    /// # Errors
    /// Statement errors.
    pub fn set_queue(&self, id: &str, queue: QueueName) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("UPDATE messages SET queue = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, queue.as_str()]))
            .map_err(self.err("set queue"))?;
        Ok(())
    }

    /// Records a deferral: next attempt, attempt count, message reason.
    ///
    /// # Errors
    /// Statement errors.
    pub fn set_deferred(
        &self,
        id: &str,
        next_attempt: i64,
        attempts: i64,
        reason: &str,
    ) -> Result<(), IndexError> {
        self.tx
            .prepare_cached(
                "UPDATE messages SET queue = 'deferred', next_attempt = ?2, attempts = ?3, reason = ?4 WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(params![id, next_attempt, attempts, reason]))
            .map_err(self.err("set deferred"))?;
        Ok(())
    }

    /// Sets the next attempt time (postqueue -f makes everything due now).
    ///
    /// # Errors
    /// Statement errors.
    pub fn set_next_attempt(&self, id: &str, next_attempt: i64) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("UPDATE messages SET next_attempt = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, next_attempt]))
            .map_err(self.err("set next attempt"))?;
        Ok(())
    }

    /// Marks that a delay warning was sent.
    ///
    /// # Errors
    /// Statement errors.
    pub fn set_warned(&self, id: &str) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("UPDATE messages SET warned = 1 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id]))
            .map_err(self.err("set warned"))?;
        Ok(())
    }

    /// Marks a recipient delivered or bounced.
    ///
    /// # Errors
    /// Statement errors.
    pub fn recipient_done(&self, id: &str, idx: usize) -> Result<(), IndexError> {
        self.tx
            .prepare_cached(
                "UPDATE recipients SET done = 1, reason = NULL WHERE id = ?1 AND idx = ?2",
            )
            .and_then(|mut st| st.execute(params![id, idx as i64]))
            .map_err(self.err("mark recipient done"))?;
        Ok(())
    }

    /// Records a recipient's deferral reason.
    ///
    /// # Errors
    /// Statement errors.
    pub fn recipient_reason(&self, id: &str, idx: usize, reason: &str) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("UPDATE recipients SET reason = ?3 WHERE id = ?1 AND idx = ?2")
            .and_then(|mut st| st.execute(params![id, idx as i64, reason]))
            .map_err(self.err("set recipient reason"))?;
        Ok(())
    }

    /// Records or updates a ledger entry.
    ///
    /// # Errors
    /// Statement errors.
    pub fn ledger_put(&self, account: &str, row: LedgerRow) -> Result<(), IndexError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO account_ledger(account, ticket, ts, rcpts) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![account, row.ticket, row.ts, row.rcpts]))
            .map_err(self.err("write the account ledger"))?;
        Ok(())
    }

    /// Forgets ledger entries older than `before` (microseconds).
    ///
    /// # Errors
    /// Statement errors.
    pub fn ledger_prune(&self, before: i64) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("DELETE FROM account_ledger WHERE ts < ?1")
            .and_then(|mut st| st.execute(params![before]))
            .map_err(self.err("prune the account ledger"))?;
        Ok(())
    }

    /// Removes a message and its recipients.
    ///
    /// # Errors
    /// Statement errors.
    pub fn delete(&self, id: &str) -> Result<(), IndexError> {
        self.tx
            .prepare_cached("DELETE FROM messages WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id]))
            .map_err(self.err("delete message"))?;
        self.tx
            .prepare_cached("DELETE FROM recipients WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id]))
            .map_err(self.err("delete recipients"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::Recipient;
    use std::time::SystemTime;

    #[test]
    fn account_ledger_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let mut ix = Index::open_rw(&path).unwrap();
            ix.batch(|b| {
                b.ledger_put(
                    "a@x",
                    LedgerRow {
                        ticket: 1,
                        ts: 100,
                        rcpts: 3,
                    },
                )?;
                b.ledger_put(
                    "a@x",
                    LedgerRow {
                        ticket: 2,
                        ts: 200,
                        rcpts: 1,
                    },
                )?;
                b.ledger_put(
                    "b@x",
                    LedgerRow {
                        ticket: 3,
                        ts: 50,
                        rcpts: 9,
                    },
                )?;
                // An update replaces (start time and reservation → result).
                b.ledger_put(
                    "a@x",
                    LedgerRow {
                        ticket: 1,
                        ts: 150,
                        rcpts: 2,
                    },
                )
            })
            .unwrap();
            ix.batch(|b| b.ledger_prune(60)).unwrap();
        }
        let ix = Index::open_rw(&path).unwrap();
        let l = ix.ledger(0).unwrap();
        assert_eq!(
            l["a@x"],
            vec![
                LedgerRow {
                    ticket: 1,
                    ts: 150,
                    rcpts: 2
                },
                LedgerRow {
                    ticket: 2,
                    ts: 200,
                    rcpts: 1
                }
            ]
        );
        assert!(!l.contains_key("b@x"), "pruned");
        assert_eq!(ix.ledger(160).unwrap()["a@x"].len(), 1);
    }

    #[test]
    fn insert_update_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut ix = Index::open_rw(&path).unwrap();
        let env = Envelope {
            arrival: SystemTime::now(),
            sender: "a@example.com".into(),
            recipients: vec![
                Recipient {
                    addr: "b@example.com".into(),
                    ..Default::default()
                },
                Recipient {
                    addr: "c@example.com".into(),
                    ..Default::default()
                },
            ],
            attrs: vec![],
        };
        ix.batch(|b| {
            b.insert("AAAAAAAAAAAA", QueueName::Active, &env, 1234, Some("<m@x>"))?;
            b.recipient_done("AAAAAAAAAAAA", 0)?;
            b.recipient_reason("AAAAAAAAAAAA", 1, "connect to x: Connection refused")?;
            b.set_deferred("AAAAAAAAAAAA", 42, 1, "connect to x: Connection refused")
        })
        .unwrap();
        let ro = Index::open_ro(&path).unwrap();
        let m = ro.message("AAAAAAAAAAAA").unwrap().unwrap();
        assert_eq!(m.queue, "deferred");
        assert_eq!(m.next_attempt, Some(42));
        assert_eq!(m.size, 1234);
        let r = ro.recipients("AAAAAAAAAAAA").unwrap();
        assert!(r[0].done && !r[1].done);
        assert_eq!(
            r[1].reason.as_deref(),
            Some("connect to x: Connection refused")
        );
        assert_eq!(ro.all_recipients().unwrap()["AAAAAAAAAAAA"].len(), 2);
        ix.batch(|b| b.delete("AAAAAAAAAAAA")).unwrap();
        assert!(ro.messages().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_index_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        std::fs::write(&path, b"this is not a database, just garbage bytes .........................................................................................................").unwrap();
        assert!(Index::open_rw(&path).is_err());
    }
}

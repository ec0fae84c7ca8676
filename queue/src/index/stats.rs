//! Read-only summaries of the index for `postern status --json` and qmgr's
//! metrics: how many messages each queue holds, and which messages there
//! are (with what tells whether their pending recipients changed).

use super::{Index, IndexError};

/// A message as far as a summary needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKey {
    /// Queue ID.
    pub id: String,
    /// Which queue the file is in.
    pub queue: String,
    /// Delivery attempts so far (it changes whenever recipients can have
    /// been delivered since the last look).
    pub attempts: i64,
    /// Envelope sender (routing may depend on it).
    pub sender: String,
}

impl Index {
    /// Messages per queue (`active`, `deferred`, `hold`; the queues qmgr
    /// has not seen yet are not in the index).
    ///
    /// # Errors
    /// Read errors.
    pub fn queue_counts(&self) -> Result<Vec<(String, u64)>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT queue, count(*) FROM messages GROUP BY queue")
            .map_err(self.err("count messages"))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.err("count messages"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err("count messages"))?;
        Ok(rows
            .into_iter()
            .map(|(q, n)| (q, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Every message's ID, queue, attempts and sender (no recipients).
    ///
    /// # Errors
    /// Read errors.
    pub fn message_keys(&self) -> Result<Vec<MessageKey>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, queue, attempts, sender FROM messages")
            .map_err(self.err("list messages"))?;
        let rows = st
            .query_map([], |r| {
                Ok(MessageKey {
                    id: r.get(0)?,
                    queue: r.get(1)?,
                    attempts: r.get(2)?,
                    sender: r.get(3)?,
                })
            })
            .map_err(self.err("list messages"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err("list messages"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Index;
    use crate::file::{Envelope, Recipient};
    use crate::layout::QueueName;
    use std::time::SystemTime;

    #[test]
    fn counts_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = Index::open_rw(&dir.path().join("index.sqlite")).unwrap();
        let env = Envelope {
            arrival: SystemTime::now(),
            sender: "a@example.com".into(),
            recipients: vec![Recipient {
                addr: "b@example.com".into(),
                ..Default::default()
            }],
            attrs: vec![],
        };
        ix.batch(|b| {
            b.insert("AAAAAAAAAA01", QueueName::Active, &env, 10, None)?;
            b.insert("AAAAAAAAAA02", QueueName::Active, &env, 10, None)?;
            b.insert("AAAAAAAAAA03", QueueName::Active, &env, 10, None)?;
            b.set_deferred("AAAAAAAAAA02", 1, 1, "x")?;
            b.set_queue("AAAAAAAAAA03", QueueName::Hold)
        })
        .unwrap();
        let mut counts = ix.queue_counts().unwrap();
        counts.sort();
        assert_eq!(
            counts,
            vec![
                ("active".into(), 1),
                ("deferred".into(), 1),
                ("hold".into(), 1)
            ]
        );
        let mut keys = ix.message_keys().unwrap();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(keys[1].queue, "deferred");
        assert_eq!(keys[1].attempts, 1);
        assert_eq!(keys[0].sender, "a@example.com");
    }
}

//! Queue scans: the incoming queue (on wake-ups and on a timer) and the
//! reconciliation at start, which makes the index agree with the files.

use crate::manager::{Manager, Op};
use queue::file::QueueFile;
use queue::layout::QueueName;
use queue::log;
use std::collections::HashMap;

impl Manager {
    /// Takes in new files from incoming/, oldest first, up to the active limit.
    pub fn scan_incoming(&mut self) {
        let mut names = match self.queue.list(QueueName::Incoming) {
            Ok(n) => n,
            Err(e) => {
                log::warning(&format!("cannot read incoming/: {e}"));
                return;
            }
        };
        names.sort();
        let limit = self.cfg.qmgr_message_active_limit as usize;
        self.incoming_backlog = false;
        for name in names {
            if self.msgs.len() >= limit {
                self.incoming_backlog = true;
                break;
            }
            if !queue::id::is_valid(&name) {
                let path = self.queue.dir(QueueName::Incoming).join(&name);
                self.corrupt(&path, &name, "file name is not a queue ID");
                continue;
            }
            if self.due_of.contains_key(&name) || self.held.contains(&name) {
                // The ID is in use by another file: rename the newcomer.
                self.rename_duplicate(&name);
                continue;
            }
            self.activate(&name, QueueName::Incoming);
        }
    }

    /// Gives an incoming file whose ID collides with a queued message a new ID.
    fn rename_duplicate(&mut self, name: &str) {
        let dir = self.queue.dir(QueueName::Incoming);
        let mut id = queue::QueueId::now();
        for _ in 0..100 {
            let new = id.to_string();
            if !self.due_of.contains_key(&new)
                && !self.msgs.contains_key(&new)
                && queue::write::rename_noreplace(&dir.join(name), &dir.join(&new)).is_ok()
            {
                log::warning(&format!(
                    "{name}: queue ID already in use; renamed to {new}"
                ));
                return;
            }
            id = id.next();
        }
    }

    /// Makes the index agree with the files, at start. Files in active/
    /// were being delivered when qmgr stopped: they go back to incoming/ and
    /// are delivered again (at-least-once). Deferred files keep their
    /// schedule from the index; files the index does not know are indexed;
    /// index rows without a file are dropped.
    pub fn reconcile(&mut self) {
        let rows = match self.index.messages() {
            Ok(r) => r,
            Err(e) => {
                log::warning(&format!("{e}; starting with an empty index"));
                Vec::new()
            }
        };
        let mut known: HashMap<String, queue::index::MessageRow> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        // Interrupted deliveries.
        if let Ok(names) = self.queue.list(QueueName::Active) {
            for name in names {
                let _ = self
                    .queue
                    .move_to(&name, QueueName::Active, QueueName::Incoming);
            }
        }
        let now = queue::time::micros(std::time::SystemTime::now());
        let mut seen = std::collections::HashSet::new();
        for (q, due) in [(QueueName::Deferred, true), (QueueName::Hold, false)] {
            let names = match self.queue.list(q) {
                Ok(n) => n,
                Err(e) => {
                    log::warning(&format!("cannot read {q}/: {e}"));
                    continue;
                }
            };
            for name in names {
                let path = self.queue.path(q, &name);
                if !queue::id::is_valid(&name) {
                    self.corrupt(&path, &name, "file name is not a queue ID");
                    continue;
                }
                seen.insert(name.clone());
                match known.get(&name) {
                    Some(row) if row.queue == q.as_str() => {
                        if due {
                            self.deferred_meta
                                .insert(name.clone(), (row.attempts, row.warned));
                            self.due_insert(&name, row.next_attempt.unwrap_or(now));
                        } else {
                            self.held.insert(name.clone());
                        }
                    }
                    _ => {
                        // Unknown to the index (or in another state): read it.
                        match QueueFile::read(&path) {
                            Ok(qf) => {
                                let size = (qf.content_end - qf.content_start) as u64;
                                let mid = crate::manager::message_id_of(qf.content());
                                self.ops.push(Op::Insert {
                                    id: name.clone(),
                                    queue: q,
                                    env: Box::new(qf.envelope),
                                    size,
                                    message_id: mid,
                                });
                                if due {
                                    self.ops.push(Op::Deferred {
                                        id: name.clone(),
                                        next: now,
                                        attempts: 0,
                                        reason: "queue file found at start".into(),
                                    });
                                    self.due_insert(&name, now);
                                } else {
                                    self.held.insert(name.clone());
                                }
                            }
                            Err(e) => self.corrupt(&path, &name, &e.to_string()),
                        }
                    }
                }
            }
        }
        if let Ok(names) = self.queue.list(QueueName::Incoming) {
            seen.extend(names);
        }
        known.retain(|id, _| !seen.contains(id));
        for id in known.keys() {
            log::warning(&format!("{id}: queue file missing; index entry removed"));
            self.ops.push(Op::Delete { id: id.clone() });
        }
        self.commit();
    }

    /// The periodic truth check: files in deferred/ and hold/ that qmgr does
    /// not know (moved there by postsuper, or missed) are taken in; known
    /// messages whose file is gone (postsuper -d) are forgotten.
    pub fn rescan(&mut self) {
        // The index is read below: it must have this turn's changes.
        self.commit();
        self.remove_stale_temp_files();
        let now = queue::time::micros(std::time::SystemTime::now());
        // Account ledger entries older than any window in use.
        self.ops.push(crate::manager::Op::LedgerPrune {
            before: now - crate::accounts::LEDGER_KEEP.as_micros() as i64,
        });
        self.track_prune();
        let deferred: std::collections::HashSet<String> = self
            .queue
            .list(QueueName::Deferred)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let hold: std::collections::HashSet<String> = self
            .queue
            .list(QueueName::Hold)
            .unwrap_or_default()
            .into_iter()
            .collect();
        // Forget what is gone.
        let gone: Vec<String> = self
            .due_of
            .keys()
            .filter(|id| !deferred.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.due_remove(&id);
            self.deferred_meta.remove(&id);
            if !hold.contains(&id) {
                self.ops.push(Op::Delete { id });
            }
        }
        let unheld: Vec<String> = self
            .held
            .iter()
            .filter(|id| !hold.contains(*id))
            .cloned()
            .collect();
        for id in unheld {
            self.held.remove(&id);
            if !deferred.contains(&id) {
                self.ops.push(Op::Delete { id });
            }
        }
        // Take in what is new.
        for id in hold {
            if self.held.insert(id.clone()) {
                self.ops.push(Op::SetQueue {
                    id,
                    queue: QueueName::Hold,
                });
            }
        }
        for id in deferred {
            if self.due_of.contains_key(&id) || self.msgs.contains_key(&id) {
                continue;
            }
            if !queue::id::is_valid(&id) {
                let path = self.queue.path(QueueName::Deferred, &id);
                self.corrupt(&path, &id, "file name is not a queue ID");
                continue;
            }
            let row = self.index.message(&id).ok().flatten();
            match row {
                Some(r) => {
                    self.deferred_meta
                        .insert(id.clone(), (r.attempts, r.warned));
                    self.ops.push(Op::SetQueue {
                        id: id.clone(),
                        queue: QueueName::Deferred,
                    });
                    self.due_insert(&id, r.next_attempt.unwrap_or(now).min(now));
                }
                None => {
                    let path = self.queue.path(QueueName::Deferred, &id);
                    match QueueFile::read(&path) {
                        Ok(qf) => {
                            let size = (qf.content_end - qf.content_start) as u64;
                            let mid = crate::manager::message_id_of(qf.content());
                            self.ops.push(Op::Insert {
                                id: id.clone(),
                                queue: QueueName::Deferred,
                                env: Box::new(qf.envelope),
                                size,
                                message_id: mid,
                            });
                            self.due_insert(&id, now);
                        }
                        Err(e) => self.corrupt(&path, &id, &e.to_string()),
                    }
                }
            }
        }
    }

    /// Temporary files left by a writer that died before its rename are
    /// never messages (nothing was acknowledged for them); remove them after
    /// an hour.
    fn remove_stale_temp_files(&self) {
        let limit = std::time::Duration::from_secs(3600);
        for qn in [
            QueueName::Incoming,
            QueueName::Active,
            QueueName::Deferred,
            QueueName::Hold,
        ] {
            let Ok(rd) = std::fs::read_dir(self.queue.dir(qn)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                if !name.to_string_lossy().starts_with(".tmp.") {
                    continue;
                }
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > limit)
                    .unwrap_or(false);
                if old {
                    let _ = std::fs::remove_file(e.path());
                    log::info(&format!(
                        "removed stale temporary file {}",
                        e.path().display()
                    ));
                }
            }
        }
    }
}

//! Group commit: sessions hand their finished queue files to one committer
//! thread, which fsyncs every file that is waiting in parallel, renames them
//! to their queue IDs, fsyncs incoming/ once for all of them, and only then
//! lets each session say 250. With many concurrent sessions the disk sees a
//! handful of flushes per batch instead of two per message.

use queue::QueueId;
use queue::layout::{Queue, QueueName};
use queue::write::Finished;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Why a commit failed; the session answers 451 or 452.
#[derive(Debug)]
pub struct CommitError {
    /// The I/O error.
    pub error: std::io::Error,
}

struct Job {
    file: Finished,
    id: QueueId,
    done: oneshot::Sender<Result<QueueId, CommitError>>,
}

/// Hands files to the committer.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer thread for queue `q`.
    ///
    /// # Errors
    /// The thread cannot be started (the process is out of resources).
    pub fn start(q: Queue) -> Result<Committer, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || run(q, rx))
            .map_err(|e| format!("cannot start the commit thread: {e}"))?;
        Ok(Committer { tx })
    }

    /// Makes `file` durable as queue file `id` (or the next free ID when
    /// `id` is taken); returns the ID it got.
    ///
    /// # Errors
    /// fsync, rename or directory fsync failed; nothing was acknowledged
    /// and the file is gone.
    pub async fn commit(&self, file: Finished, id: QueueId) -> Result<QueueId, CommitError> {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Job { file, id, done }).is_err() {
            return Err(CommitError {
                error: std::io::Error::other("commit thread stopped"),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(CommitError {
                error: std::io::Error::other("commit thread stopped"),
            })
        })
    }
}

fn run(q: Queue, rx: mpsc::Receiver<Job>) {
    let dir = q.dir(QueueName::Incoming);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 512 {
                break;
            }
        }
        let files: Vec<&Finished> = batch.iter().map(|j| &j.file).collect();
        if let Err(e) = queue::write::sync_files(&files) {
            for j in batch {
                let _ = j.done.send(Err(CommitError {
                    error: std::io::Error::new(e.kind(), e.to_string()),
                }));
            }
            continue;
        }
        let mut renamed: Vec<(QueueId, oneshot::Sender<Result<QueueId, CommitError>>)> = Vec::new();
        for j in batch {
            let Job { file, id, done } = j;
            match rename_free(file, id) {
                Ok(id) => renamed.push((id, done)),
                Err(e) => {
                    let _ = done.send(Err(CommitError { error: e }));
                }
            }
        }
        if renamed.is_empty() {
            continue;
        }
        match queue::write::fsync_dir(&dir) {
            Ok(()) => {
                for (id, done) in renamed {
                    let _ = done.send(Ok(id));
                }
                queue::wake::wake(&q, "qmgr", &[queue::wake::NEW_MAIL]);
            }
            Err(e) => {
                // Not durable: take the names back so nothing is delivered
                // that the client was told failed.
                for (id, done) in renamed {
                    let _ = std::fs::remove_file(dir.join(id.to_string()));
                    let _ = done.send(Err(CommitError {
                        error: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }
}

/// Renames to `id`, or to the next free ID when another process took it.
fn rename_free(mut file: Finished, mut id: QueueId) -> std::io::Result<QueueId> {
    for _ in 0..100 {
        match file.rename_as_id_keep(id) {
            Ok(()) => return Ok(id),
            Err((f, e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                file = f;
                queue::log::warning(&format!(
                    "{id}: queue ID already in use; the message gets the next free ID"
                ));
                id = id.next();
            }
            Err((_, e)) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free queue ID"))
}

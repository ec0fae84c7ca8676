//! postsuper: queue maintenance. `-d` deletes, `-h` holds, `-H` releases,
//! `-r` requeues messages (by ID, `ALL`, or `-` for IDs on standard input,
//! optionally limited to named queues); `-s` checks every queue file and
//! rebuilds the index from the files. Changes are made to the files (the
//! truth) and the index, and the queue manager is told to re-read.

use crate::getopt::{self, Opt};
use queue::file::QueueFile;
use queue::index::Index;
use queue::layout::{Queue, QueueName};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Delete,
    Hold,
    Release,
    Requeue,
}

pub fn main(args: &[String]) -> i32 {
    let (opts, rest) = match getopt::parse(args, "c:d:h:H:r:psSv") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postsuper: fatal: {e}");
            return 1; // msg_fatal, as in Postfix
        }
    };
    let mut dir: Option<PathBuf> = None;
    let mut actions: Vec<(Action, String)> = Vec::new();
    let mut repair = false;
    for Opt::Flag(c, v) in opts {
        match (c, v) {
            ('c', v) => dir = v.map(PathBuf::from),
            ('d', Some(id)) => actions.push((Action::Delete, id)),
            ('h', Some(id)) => actions.push((Action::Hold, id)),
            ('H', Some(id)) => actions.push((Action::Release, id)),
            ('r', Some(id)) => actions.push((Action::Requeue, id)),
            ('s', _) | ('S', _) => repair = true,
            _ => {}
        }
    }
    let mut queues: Vec<QueueName> = Vec::new();
    for q in &rest {
        match QueueName::parse(q) {
            Some(qn) if qn != QueueName::Corrupt => queues.push(qn),
            _ => {
                eprintln!("postsuper: fatal: invalid directory name: {q}");
                return 1; // msg_fatal, as in Postfix
            }
        }
    }
    let dir = conf::config_dir(dir.as_deref());
    let cfg = match queue::service::load_for_command("postsuper", &dir, 78) {
        Ok(c) => c,
        Err(code) => return code,
    };
    queue::log::init(
        &cfg,
        "postsuper",
        queue::log::Options {
            stderr_name: Some("postsuper".into()),
            verbose_stderr: false,
        },
    );
    if let Err(e) = queue::service::drop_privileges(&cfg) {
        eprintln!("postsuper: fatal: {e}");
        return 77;
    }
    let q = Queue::new(&cfg.queue_directory);
    let mut ix = match Index::open_rw(&q.index_path()) {
        Ok(ix) => ix,
        Err(e) if repair => {
            // The files are the truth: set the damaged index aside and
            // build a new one from them.
            match set_index_aside(&q) {
                Ok(aside) => {
                    let text = format!(
                        "{e}; moved to {} and rebuilding it from the queue files",
                        aside.display()
                    );
                    eprintln!("postsuper: warning: {text}");
                    queue::log::warning(&text);
                }
                Err(err) => {
                    eprintln!("postsuper: fatal: {e}; cannot move it aside: {err}");
                    return 75;
                }
            }
            match Index::open_rw(&q.index_path()) {
                Ok(ix) => ix,
                Err(e) => {
                    eprintln!("postsuper: fatal: {e}");
                    return 75;
                }
            }
        }
        Err(e) => {
            eprintln!(
                "postsuper: fatal: {e} (postsuper -s rebuilds the index from the queue files)"
            );
            return 75;
        }
    };
    let mut status = 0;
    if repair {
        status = repair_queue(&q, &mut ix);
    }
    let mut counts = [0usize; 4];
    let mut requested = [false; 4];
    for (action, arg) in &actions {
        requested[*action as usize] = true;
        let default: &[QueueName] = match action {
            Action::Delete | Action::Requeue => &[
                QueueName::Hold,
                QueueName::Incoming,
                QueueName::Active,
                QueueName::Deferred,
            ],
            Action::Hold => &[QueueName::Incoming, QueueName::Active, QueueName::Deferred],
            Action::Release => &[QueueName::Hold],
        };
        let scope: Vec<QueueName> = if queues.is_empty() {
            default.to_vec()
        } else {
            queues
                .iter()
                .copied()
                .filter(|x| default.contains(x))
                .collect()
        };
        let ids: Vec<(QueueName, String)> = if arg == "ALL" {
            scope
                .iter()
                .flat_map(|qn| {
                    q.list(*qn)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|n| queue::id::is_valid(n))
                        .map(move |n| (*qn, n))
                })
                .collect()
        } else if arg == "-" {
            let stdin = std::io::stdin();
            let wanted: Vec<String> = stdin
                .lock()
                .lines()
                .map_while(Result::ok)
                .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect();
            find_ids(&q, &scope, &wanted)
        } else {
            find_ids(&q, &scope, std::slice::from_ref(arg))
        };
        // As Postfix does, name each message acted on by ID, not those
        // of a mass operation (ALL).
        let by_id = arg != "ALL";
        for (from, id) in ids {
            match apply(&q, &mut ix, *action, from, &id) {
                Ok(true) => {
                    counts[*action as usize] += 1;
                    let done = match action {
                        Action::Delete => "removed",
                        Action::Hold => "placed on hold",
                        Action::Release => "released from hold",
                        Action::Requeue => "requeued",
                    };
                    // apply() has logged it.
                    if by_id {
                        eprintln!("postsuper: {id}: {done}");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    eprintln!("postsuper: warning: {id}: {e}");
                    status = 1;
                }
            }
        }
    }
    // Postfix 3.7 reports every requested action, in this order, also
    // when nothing matched ("Deleted: 0 messages").
    for (action, label) in [
        (Action::Requeue, "Requeued"),
        (Action::Delete, "Deleted"),
        (Action::Hold, "Placed on hold"),
        (Action::Release, "Released from hold"),
    ] {
        if requested[action as usize] {
            let n = counts[action as usize];
            let line = format!("{label}: {n} message{}", if n == 1 { "" } else { "s" });
            eprintln!("postsuper: {line}");
            queue::log::info(&line);
        }
    }
    queue::wake::wake(&q, "qmgr", &[queue::wake::RESCAN]);
    status
}

fn find_ids(q: &Queue, scope: &[QueueName], wanted: &[String]) -> Vec<(QueueName, String)> {
    let mut out = Vec::new();
    for id in wanted {
        if !queue::id::is_valid(id) {
            eprintln!("postsuper: warning: invalid mail queue id: {id}");
            continue;
        }
        for qn in scope {
            if q.path(*qn, id).exists() {
                out.push((*qn, id.clone()));
                break;
            }
        }
    }
    out
}

fn apply(
    q: &Queue,
    ix: &mut Index,
    action: Action,
    from: QueueName,
    id: &str,
) -> Result<bool, String> {
    let e = |e: std::io::Error| e.to_string();
    match action {
        Action::Delete => {
            match std::fs::remove_file(q.path(from, id)) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(err) => return Err(e(err)),
            }
            ix.batch(|b| b.delete(id)).map_err(|x| x.to_string())?;
            queue::log::info(&format!("{id}: removed"));
            Ok(true)
        }
        Action::Hold => {
            if from == QueueName::Hold {
                return Ok(false);
            }
            q.move_to(id, from, QueueName::Hold).map_err(e)?;
            ix.batch(|b| b.set_queue(id, QueueName::Hold))
                .map_err(|x| x.to_string())?;
            queue::log::info(&format!("{id}: placed on hold"));
            Ok(true)
        }
        Action::Release => {
            q.move_to(id, QueueName::Hold, QueueName::Deferred)
                .map_err(e)?;
            let now = queue::time::micros(std::time::SystemTime::now());
            ix.batch(|b| {
                b.set_queue(id, QueueName::Deferred)?;
                b.set_next_attempt(id, now)
            })
            .map_err(|x| x.to_string())?;
            queue::log::info(&format!("{id}: released from hold"));
            Ok(true)
        }
        Action::Requeue => {
            q.move_to(id, from, QueueName::Incoming).map_err(e)?;
            ix.batch(|b| b.delete(id)).map_err(|x| x.to_string())?;
            queue::log::info(&format!("{id}: requeued"));
            Ok(true)
        }
    }
}

/// Renames a damaged index (and its WAL and shared-memory files) to
/// `index.sqlite.corrupt-<time>`; returns the new name.
fn set_index_aside(q: &Queue) -> std::io::Result<PathBuf> {
    let path = q.index_path();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    std::fs::rename(&path, &aside)?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", path.display()));
        if side.exists() {
            std::fs::rename(&side, format!("{}{ext}", aside.display()))?;
        }
    }
    Ok(aside)
}

/// Checks every queue file; unreadable ones go to corrupt/; the index is
/// rebuilt to match the files: files without a row (or with a row naming
/// another queue) are indexed, rows without a file are dropped. Rows that
/// match keep their delivery state. Rows are written in batches of 1,000
/// per transaction, so a queue of 100,000 messages is indexed in seconds.
fn repair_queue(q: &Queue, ix: &mut Index) -> i32 {
    const BATCH: usize = 1000;
    let known: std::collections::HashMap<String, String> = match ix.messages() {
        Ok(rows) => rows.into_iter().map(|r| (r.id, r.queue)).collect(),
        Err(e) => {
            eprintln!("postsuper: fatal: {e}");
            return 75;
        }
    };
    let mut status = 0;
    let mut present = std::collections::HashSet::new();
    // Envelopes only: a batch must not hold 1,000 message contents.
    let mut pending: Vec<(String, QueueName, queue::file::Envelope, u64)> = Vec::new();
    let now = queue::time::micros(std::time::SystemTime::now());
    let flush =
        |ix: &mut Index, pending: &mut Vec<(String, QueueName, queue::file::Envelope, u64)>| {
            let r = ix.batch(|b| {
                for (name, qn, env, size) in pending.iter() {
                    b.insert(name, *qn, env, *size, None)?;
                    if *qn == QueueName::Deferred {
                        b.set_deferred(name, now, 0, "index rebuilt by postsuper -s")?;
                    }
                }
                Ok(())
            });
            pending.clear();
            if let Err(e) = r {
                eprintln!("postsuper: warning: {e}");
                return 1;
            }
            0
        };
    for qn in [
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
    ] {
        for name in q.list(qn).unwrap_or_default() {
            let path = q.path(qn, &name);
            match QueueFile::read(&path) {
                Ok(f) => {
                    present.insert(name.clone());
                    if qn == QueueName::Incoming {
                        continue; // qmgr indexes new mail itself
                    }
                    if known.get(&name).map(String::as_str) != Some(qn.as_str()) {
                        let size = (f.content_end - f.content_start) as u64;
                        pending.push((name, qn, f.envelope, size));
                        if pending.len() >= BATCH {
                            status |= flush(ix, &mut pending);
                        }
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    match q.to_corrupt(&path, &reason) {
                        Ok(dst) => eprintln!(
                            "postsuper: warning: {name}: {reason}; moved to {}",
                            dst.display()
                        ),
                        Err(err) => eprintln!(
                            "postsuper: warning: {name}: {reason}; cannot move to corrupt/: {err}"
                        ),
                    }
                    status = 1;
                }
            }
        }
    }
    if !pending.is_empty() {
        status |= flush(ix, &mut pending);
    }
    let gone: Vec<&String> = known.keys().filter(|id| !present.contains(*id)).collect();
    for chunk in gone.chunks(BATCH) {
        if let Err(e) = ix.batch(|b| {
            for id in chunk {
                b.delete(id)?;
            }
            Ok(())
        }) {
            eprintln!("postsuper: warning: {e}");
            status = 1;
        }
        for id in chunk {
            eprintln!("postsuper: warning: {id}: index entry without queue file removed");
        }
    }
    status
}

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
            return 64;
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
                return 64;
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
        Err(e) => {
            eprintln!("postsuper: fatal: {e}");
            return 75;
        }
    };
    let mut status = 0;
    if repair {
        status = repair_queue(&q, &mut ix);
    }
    let mut counts = [0usize; 4];
    for (action, arg) in &actions {
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
        for (from, id) in ids {
            if !queue::id::is_valid(&id) {
                continue;
            }
            match apply(&q, &mut ix, *action, from, &id) {
                Ok(true) => counts[*action as usize] += 1,
                Ok(false) => {}
                Err(e) => {
                    eprintln!("postsuper: warning: {id}: {e}");
                    status = 1;
                }
            }
        }
    }
    let labels = [
        "Deleted",
        "Placed on hold",
        "Released from hold",
        "Requeued",
    ];
    for (i, n) in counts.iter().enumerate() {
        if *n > 0 {
            let line = format!(
                "{}: {n} message{}",
                labels[i],
                if *n == 1 { "" } else { "s" }
            );
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

/// Checks every queue file; unreadable ones go to corrupt/; the index is
/// rebuilt to match the files.
fn repair_queue(q: &Queue, ix: &mut Index) -> i32 {
    let mut status = 0;
    let mut present = std::collections::HashSet::new();
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
                    let known = ix.message(&name).ok().flatten();
                    if known.as_ref().map(|r| r.queue.as_str()) != Some(qn.as_str()) {
                        let size = (f.content_end - f.content_start) as u64;
                        let r = ix.batch(|b| {
                            b.insert(&name, qn, &f.envelope, size, None)?;
                            if qn == QueueName::Deferred {
                                b.set_deferred(
                                    &name,
                                    queue::time::micros(std::time::SystemTime::now()),
                                    0,
                                    "index rebuilt by postsuper -s",
                                )?;
                            }
                            Ok(())
                        });
                        if let Err(e) = r {
                            eprintln!("postsuper: warning: {name}: {e}");
                            status = 1;
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
    if let Ok(rows) = ix.messages() {
        for r in rows {
            if !present.contains(&r.id) {
                let _ = ix.batch(|b| b.delete(&r.id));
                eprintln!(
                    "postsuper: warning: {}: index entry without queue file removed",
                    r.id
                );
            }
        }
    }
    status
}

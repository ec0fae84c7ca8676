//! `postern status --json`: the supervisor's services and what the queue
//! manager reports (queue sizes per queue and route, deliveries by outcome
//! and reply class since it started, each mailbox's use of its limits,
//! OAuth2 token expiry), as one JSON document for scripts and monitoring.
//!
//! The queue manager writes its part to `pid/qmgr.status.json` when asked
//! with an `S<token>` wake-up; this command asks, waits up to
//! [`ANSWER_WAIT`] for the file to carry its token, and otherwise shows the
//! last file with `"fresh": false` (a busy or hung queue manager). Without
//! a queue manager, queue sizes are counted from the queue directories.

use crate::master;
use queue::layout::{Queue, QueueName};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How long to wait for the queue manager's answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Prints the document; exit status 0 when postern runs, 3 when it does
/// not (as `postern status`), 1 when the configuration is unusable.
pub fn json(dir: &Path) -> i32 {
    let cfg = match queue::service::load_for_command("postern", dir, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let queue = Queue::new(&cfg.queue_directory);
    let master_pid = master::running_pid(&queue);
    let services: Vec<Value> = if master_pid.is_some() {
        master::read_status(&queue)
            .into_iter()
            .map(|(name, kind, command, pid)| {
                json!({
                    "name": name,
                    "type": kind,
                    "command": command,
                    "pid": pid.parse::<i64>().ok(),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let file = queue.pid_dir().join(queue::wake::STATUS_FILE);
    let (snapshot, fresh, problem) = match master_pid {
        Some(_) => ask_qmgr(&queue, &file),
        None => (None, false, None),
    };
    let mut doc = json!({
        "running": master_pid.is_some(),
        "master_pid": master_pid,
        "services": services,
        "fresh": fresh,
    });
    match snapshot {
        Some(Value::Object(fields)) => {
            if let Ok(age) = SystemTime::now().duration_since(
                SystemTime::UNIX_EPOCH + Duration::from_secs(fields["time"].as_u64().unwrap_or(0)),
            ) {
                doc["age_seconds"] = json!(age.as_secs());
            }
            for (k, v) in fields {
                if k != "answered" {
                    doc[k] = v;
                }
            }
        }
        _ => {
            // Without the queue manager only the files can be counted.
            for k in [
                "qmgr",
                "routes",
                "deliveries",
                "accounts",
                "held_routes",
                "oauth2_tokens",
            ] {
                doc[k] = Value::Null;
            }
            doc["queues"] = queue_files(&queue);
        }
    }
    if let Some(p) = problem {
        doc["problem"] = json!(p);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    );
    if master_pid.is_some() { 0 } else { 3 }
}

/// Asks qmgr for a new status file and reads it: (document, whether it
/// answers this request, what went wrong).
fn ask_qmgr(queue: &Queue, file: &Path) -> (Option<Value>, bool, Option<String>) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let token = format!("{}-{nanos}", std::process::id());
    let mut trigger = vec![queue::wake::STATUS];
    trigger.extend_from_slice(token.as_bytes());
    let woke = queue::wake::wake(queue, "qmgr", &trigger);
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut last: Option<Value> = None;
    while woke && Instant::now() < deadline {
        match read(file) {
            Ok(v) => {
                let answers = v["answered"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(token.as_str())));
                if answers {
                    return (Some(v), true, None);
                }
                last = Some(v);
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return (
                    None,
                    false,
                    Some(format!(
                        "{}: {e}; run postern status as root or mail_owner",
                        file.display()
                    )),
                );
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if last.is_none() {
        last = read(file).ok();
    }
    let why = if woke {
        "the queue manager did not answer in time; showing its last status"
    } else {
        "the queue manager is not running; showing its last status"
    };
    (last, false, Some(why.to_string()))
}

fn read(file: &Path) -> std::io::Result<Value> {
    let bytes = std::fs::read(file)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Queue sizes from the directories (no queue manager to ask).
fn queue_files(queue: &Queue) -> Value {
    let m: serde_json::Map<String, Value> = QueueName::ALL
        .iter()
        .map(|&q| {
            (
                q.as_str().to_string(),
                queue.list(q).map(|v| json!(v.len())).unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(m)
}

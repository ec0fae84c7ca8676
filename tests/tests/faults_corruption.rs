//! Corruption (issue 7 part B, item 4): the SQLite index deleted,
//! truncated or overwritten with garbage — while postern is stopped (it is
//! rebuilt from the queue files at start) and while it runs — loses no
//! message; truncated and garbage queue files, found at start or appearing
//! while the daemons run, go to corrupt/ with a `.reason` and nothing else
//! stops.

use postern_tests::fake::FakeSmartHost;
use postern_tests::harness::faults::{self, Client};
use postern_tests::harness::{TestEnv, re};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn submit(env: &TestEnv, id: &str) {
    let out = env
        .sendmail(
            &["-f", "scan@contoso.test", "bob@contoso.test"],
            faults::message(id, 2048).replace("\r\n", "\n").as_bytes(),
        )
        .unwrap();
    assert!(out.success(), "{out}");
}

fn smtp_submit(port: u16, id: &str) {
    let (mut c, g) = Client::connect(port, WAIT).unwrap();
    assert_eq!(g.code, 220);
    for (line, want) in [
        ("EHLO scanner.lan", 250),
        ("MAIL FROM:<scan@contoso.test>", 250),
        ("RCPT TO:<bob@contoso.test>", 250),
        ("DATA", 354),
    ] {
        let r = c.cmd(line).unwrap();
        assert_eq!(r.code, want, "{line}: {r}");
    }
    c.send(format!("{}.\r\n", faults::message(id, 2048)).as_bytes())
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);
}

/// Queue ID → queue name, from `postqueue -j` (which reads the index).
fn listing(env: &TestEnv) -> BTreeMap<String, String> {
    env.queue_json()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["queue_id"].as_str().unwrap_or_default().to_string(),
                m["queue_name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The queue IDs of the files in deferred/, active/, incoming/ and hold/.
fn files(env: &TestEnv) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for q in ["incoming", "active", "deferred", "hold"] {
        for id in env.queue_files(q) {
            out.insert(id, q.to_string());
        }
    }
    out
}

/// Submits `id` with sendmail (the smart host being down) and waits for the
/// new message's own `status=deferred` line, by its queue ID: a restart may
/// have made older deferred messages due, and their retries log the same
/// words meanwhile.
fn submit_and_wait_deferred(env: &TestEnv, id: &str) {
    let before = files(env);
    let mark = env.log_mark();
    submit(env, id);
    let deadline = Instant::now() + WAIT;
    let qid = loop {
        if let Some(q) = files(env).into_keys().find(|q| !before.contains_key(q)) {
            break q;
        }
        assert!(Instant::now() < deadline, "{id} never left maildrop/");
        std::thread::sleep(Duration::from_millis(50));
    };
    env.wait_log_since(
        mark,
        re(&format!(
            r"{qid}: to=<bob@contoso\.test>, .*status=deferred"
        )),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{id} ({qid}): {e:#}"));
}

/// Waits until `postqueue -j` lists every queued file (messages retried
/// meanwhile may show as active or deferred; held ones must show as hold).
fn wait_listing_complete(env: &TestEnv, want: usize, held: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let l = listing(env);
        let f = files(env);
        let same_ids = l.keys().eq(f.keys());
        if same_ids && l.len() == want && l.get(held).is_some_and(|q| q == "hold") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the index does not list the queue: listed {l:?}, files {f:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A queue ID in deferred/ (a file moves there just after its
/// `status=deferred` line).
fn first_deferred(env: &TestEnv) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(id) = env.queue_files("deferred").first() {
            return id.clone();
        }
        assert!(Instant::now() < deadline, "nothing in deferred/");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn index_paths(env: &TestEnv) -> [PathBuf; 3] {
    let index = env.spool.join("index.sqlite");
    let side = |ext: &str| PathBuf::from(format!("{}{ext}", index.display()));
    [index.clone(), side("-wal"), side("-shm")]
}

fn deliver_all_once(env: &TestEnv, fake: &FakeSmartHost, ids: &[String]) {
    fake.wait_until("every message delivered", Duration::from_secs(60), |r| {
        let got: Vec<String> = r.messages.iter().filter_map(faults::fault_id).collect();
        ids.iter().all(|i| got.contains(i))
    })
    .unwrap_or_else(|e| {
        let l = env.log_lines();
        panic!("{e:#}\n{}", l[l.len().saturating_sub(40)..].join("\n"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in fake.messages() {
        *count
            .entry(faults::fault_id(&m).unwrap_or_default())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = ids.iter().map(|i| (i.clone(), 1)).collect();
    assert_eq!(count, want);
}

#[test]
fn index_deleted_truncated_or_garbage_is_rebuilt_from_the_files_and_nothing_is_lost() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    // Long backoff: messages stay deferred until the flush at the end.
    env.set_many(&[
        ("minimal_backoff_time", "1h"),
        ("maximal_backoff_time", "2h"),
        ("queue_run_delay", "1h"),
    ])
    .unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    fake.stop().unwrap();
    env.start().unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("ix-m{i}");
        submit(&env, &id);
        ids.push(id);
    }
    for i in 0..2 {
        let id = format!("ix-s{i}");
        smtp_submit(port, &id);
        ids.push(id);
    }
    env.wait_log_count(Default::default(), "status=deferred", ids.len(), WAIT)
        .unwrap();
    let held = first_deferred(&env);
    env.postsuper(&["-h", &held]).unwrap().ok().unwrap();
    wait_listing_complete(&env, ids.len(), &held);
    let before: Vec<String> = listing(&env).into_keys().collect();

    // While stopped: deleted, truncated, garbage. Each time the next start
    // rebuilds the index from the files.
    for damage in ["deleted", "truncated", "garbage"] {
        env.stop().unwrap();
        let [index, wal, shm] = index_paths(&env);
        // A clean stop leaves no journal behind; remove it anyway so only
        // the main file tells the story.
        let _ = std::fs::remove_file(&wal);
        let _ = std::fs::remove_file(&shm);
        match damage {
            "deleted" => std::fs::remove_file(&index).unwrap(),
            "truncated" => {
                let len = std::fs::metadata(&index).unwrap().len();
                assert!(len > 4096, "index of {len} bytes");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&index)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }
            _ => std::fs::write(&index, vec![0x5a; 16 * 1024]).unwrap(),
        }
        let mark = env.log_mark();
        env.start()
            .unwrap_or_else(|e| panic!("start with the index {damage}: {e:#}"));
        if damage != "deleted" {
            env.wait_log_since(mark, "rebuilding from the queue files", WAIT)
                .unwrap_or_else(|e| panic!("index {damage}: {e:#}"));
        }
        wait_listing_complete(&env, ids.len(), &held);
        let now: Vec<String> = listing(&env).into_keys().collect();
        assert_eq!(now, before, "index {damage}");
        eprintln!(
            "index {damage} while stopped: rebuilt, {} messages listed",
            now.len()
        );
    }

    // While running: the index file is deleted under the queue manager.
    for p in index_paths(&env) {
        let _ = std::fs::remove_file(p);
    }
    // New mail still comes in and is queued.
    submit_and_wait_deferred(&env, "ix-after-delete");
    ids.push("ix-after-delete".into());
    // The listing stays complete meanwhile...
    wait_listing_complete(&env, ids.len(), &held);
    // ...and a restart rebuilds the index from the files: all are listed.
    env.stop().unwrap();
    env.start().unwrap();
    wait_listing_complete(&env, ids.len(), &held);

    // While running: garbage over the live index.
    let [index, _, _] = index_paths(&env);
    std::fs::write(&index, vec![0xa5; 16 * 1024]).unwrap();
    // Queued all the same (the queue manager keeps its open index).
    submit_and_wait_deferred(&env, "ix-after-garbage");
    ids.push("ix-after-garbage".into());
    assert_eq!(files(&env).len(), ids.len());
    env.stop().unwrap();
    env.start().unwrap();
    wait_listing_complete(&env, ids.len(), &held);

    // Everything is delivered once: release the held one and flush.
    fake.start().unwrap();
    env.postsuper(&["-H", &held]).unwrap().ok().unwrap();
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
    deliver_all_once(&env, &fake, &ids);
    assert!(
        env.queue_files("corrupt").is_empty(),
        "{:?}",
        env.queue_files("corrupt")
    );
    env.stop().unwrap();
}

#[test]
fn truncated_and_garbage_queue_files_go_to_corrupt_while_running_and_the_rest_flows() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    env.set("queue_run_delay", "1s").unwrap();
    env.start().unwrap();
    submit(&env, "cq-0");
    fake.wait_messages(1, WAIT).unwrap();
    let qmgr = env.daemon_pid("qmgr").unwrap();
    let pickup = env.daemon_pid("pickup").unwrap();

    // A good queue file to damage: a copy of a real one (a message
    // deferred while the smart host is down, then deleted).
    fake.stop().unwrap();
    submit(&env, "cq-model");
    env.wait_log("status=deferred", WAIT).unwrap();
    let model_id = first_deferred(&env);
    let model = std::fs::read(env.spool.join("deferred").join(&model_id)).unwrap();
    env.postsuper(&["-d", &model_id]).unwrap().ok().unwrap();
    fake.start().unwrap();

    let mark = env.log_mark();
    let incoming = env.spool.join("incoming");
    let deferred = env.spool.join("deferred");
    // Truncated (the trailer and part of the content missing) into
    // incoming/, as if a disk error had eaten its end.
    let truncated = "6B02D0000001";
    std::fs::write(incoming.join(truncated), &model[..model.len() / 2]).unwrap();
    // Garbage into deferred/ (picked up by the periodic rescan).
    let garbage = "6B02D0000002";
    std::fs::write(
        deferred.join(garbage),
        b"\x00\x01\x02 not a queue file \xff\xfe",
    )
    .unwrap();
    // One byte changed in the middle (the CRC no longer matches).
    let flipped = "6B02D0000003";
    let mut bad = model.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(incoming.join(flipped), &bad).unwrap();
    // Wake the queue manager for incoming/.
    env.postqueue(&["-f"]).unwrap().ok().unwrap();
    // Good mail keeps flowing meanwhile.
    submit(&env, "cq-1");
    for id in [truncated, garbage, flipped] {
        env.wait_log_since(
            mark,
            re(&format!(
                r"postern/qmgr\[\d+\]: warning: {id}: unreadable queue file: .*moved to"
            )),
            WAIT,
        )
        .unwrap();
        let reason =
            std::fs::read_to_string(env.spool.join("corrupt").join(format!("{id}.reason")))
                .unwrap_or_else(|e| panic!("{id}.reason: {e}"));
        assert!(!reason.trim().is_empty(), "{id}: empty reason");
        eprintln!("{id}: {}", reason.trim());
        assert!(
            env.spool.join("corrupt").join(id).is_file(),
            "{id} not in corrupt/"
        );
    }
    deliver_all_once(&env, &fake, &["cq-0".to_string(), "cq-1".to_string()]);
    // Nothing else stopped: the same qmgr and pickup, no daemon died.
    assert_eq!(env.daemon_pid("qmgr"), Some(qmgr));
    assert_eq!(env.daemon_pid("pickup"), Some(pickup));
    assert!(
        env.log_grep("warning: process ").is_empty(),
        "{:?}",
        env.log_grep("warning: process ")
    );
    // A garbage file in maildrop/ is set aside by pickup too (after its
    // grace period for files still being written, so only its presence
    // outside the queue is checked here: it never becomes a message).
    std::fs::write(env.spool.join("maildrop").join("garbage"), b"junk\n").unwrap();
    submit(&env, "cq-2");
    deliver_all_once(
        &env,
        &fake,
        &["cq-0".to_string(), "cq-1".to_string(), "cq-2".to_string()],
    );
    env.stop().unwrap();
}

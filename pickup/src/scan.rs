//! The pickup loop: scan maildrop/, process each file, wait for a wake-up
//! (sendmail sends one) or the periodic timer; look at the drop directory,
//! when there is one, every second.

use anyhow::Context;
use queue::cleanup::{Cleanup, Local};
use queue::file::{FileError, QueueFile};
use queue::layout::{Queue, QueueName};
use queue::log;
use queue::service::Started;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::drop::DropFolder;

/// How long a malformed file may sit before it is moved to corrupt/ (a
/// program may write maildrop files directly, without the rename).
const GRACE: Duration = Duration::from_secs(60);
/// Messages written per directory fsync.
const BATCH: usize = 256;
/// How often maildrop/ is looked at without a wake-up.
const MAILDROP_INTERVAL: Duration = Duration::from_secs(60);
/// The longest wait for a wake-up, so a SIGTERM that arrives just before
/// the wait starts is noticed soon.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Set by SIGTERM (`postern stop`, a reload, the supervisor gone): pickup
/// finishes the batch in hand and exits. With SIGTERM's default action it
/// could die between moving a batch into incoming/ and removing the
/// maildrop originals, and the next pickup queued those messages again
/// (a duplicate delivery after an ordinary stop).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Catches SIGTERM into [`STOP`]. Without `SA_RESTART`, a wait for a
/// wake-up ends at once (EINTR).
fn catch_sigterm() -> anyhow::Result<()> {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigterm),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &action) }
        .context("install the SIGTERM handler")?;
    Ok(())
}

pub fn run(started: Started) -> anyhow::Result<()> {
    let Started {
        cfg,
        queue,
        listeners,
        ..
    } = started;
    let cleanup = Cleanup::new(&cfg).map_err(|errs| {
        anyhow::anyhow!(
            "cannot open lookup tables: {}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    for w in &cleanup.warnings {
        log::warning(w);
    }
    let mut drop_folder = DropFolder::new(&cfg);
    if let Some(d) = &drop_folder {
        crate::drop::startup_checks(d);
    }
    let sock = wake_socket(&queue, listeners)?;
    catch_sigterm()?;
    let mut buf = [0u8; 64];
    let mut woken = true;
    let mut last_maildrop = Instant::now();
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        if woken || last_maildrop.elapsed() >= MAILDROP_INTERVAL {
            remove_stale_temp_files(&queue);
            // Batch after batch; a stop waits for the batch in hand.
            while !STOP.load(Ordering::SeqCst) {
                if !scan_once(&cfg, &queue, &cleanup)? {
                    break;
                }
            }
            last_maildrop = Instant::now();
        }
        if let Some(d) = drop_folder.as_mut() {
            while !STOP.load(Ordering::SeqCst) {
                if !d.scan(&queue, &cleanup)? {
                    break;
                }
            }
        }
        // Wait for a wake-up or the timer: the drop directory has no
        // wake-ups, so it is looked at every SCAN_INTERVAL.
        let timeout = if drop_folder.is_some() {
            crate::drop::SCAN_INTERVAL
        } else {
            MAILDROP_INTERVAL
                .saturating_sub(last_maildrop.elapsed())
                .clamp(Duration::from_millis(10), MAX_WAIT)
        };
        sock.set_read_timeout(Some(timeout))?;
        woken = sock.recv(&mut buf).is_ok();
        // Drain extra wake-ups. A wake-up found here counts too: the wait
        // above can end in EINTR (after SIGSTOP/SIGCONT, with the read
        // timeout set) with the datagram still queued, and dropping it
        // would leave a message sendmail acknowledged waiting for the
        // 60-second timer.
        sock.set_nonblocking(true)?;
        while sock.recv(&mut buf).is_ok() {
            woken = true;
        }
        sock.set_nonblocking(false)?;
    }
}

/// A submitter that died before renaming its temporary file acknowledged
/// nothing; its file is removed after a day.
fn remove_stale_temp_files(queue: &Queue) {
    let Ok(rd) = std::fs::read_dir(queue.dir(QueueName::Maildrop)) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".tmp.") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(86400))
            .unwrap_or(false);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn wake_socket(queue: &Queue, mut listeners: Vec<OwnedFd>) -> anyhow::Result<UnixDatagram> {
    if let Some(fd) = listeners.drain(..).next() {
        return Ok(UnixDatagram::from(fd));
    }
    // Started by hand: bind our own socket.
    let path = queue.public_dir().join("pickup");
    let _ = std::fs::remove_file(&path);
    let s = UnixDatagram::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
    Ok(s)
}

/// Processes up to one batch; returns true when more files may be waiting.
/// The batch's queue files are written first, fsynced together (one
/// journal commit for the batch), renamed to their IDs, and made durable
/// with one directory fsync; only then are the maildrop originals removed.
fn scan_once(cfg: &conf::Config, queue: &Queue, cleanup: &Cleanup) -> anyhow::Result<bool> {
    let mut names = queue
        .list(QueueName::Maildrop)
        .with_context(|| format!("read {}", queue.dir(QueueName::Maildrop).display()))?;
    names.sort();
    let more = names.len() > BATCH;
    let mut used = std::collections::HashSet::new();
    let mut prepared: Vec<(String, Prepared)> = Vec::new();
    let mut spares = queue::spare::Spares::new(queue);
    for name in names.into_iter().take(BATCH) {
        let path = queue.dir(QueueName::Maildrop).join(&name);
        let mut id = queue::QueueId::now();
        while !used.insert(id) {
            id = id.next();
        }
        match prepare(cfg, queue, cleanup, &path, id, &mut spares) {
            Ok(Some(p)) => prepared.push((name, p)),
            Ok(None) => {}
            Err(e) => log::warning(&format!("maildrop file {name}: {e:#}")),
        }
    }
    if prepared.is_empty() {
        return Ok(false);
    }
    let fins: Vec<&queue::write::Finished> = prepared.iter().map(|(_, p)| &p.file).collect();
    queue::write::sync_files(&fins).context("fsync new queue files")?;
    let mut done: Vec<String> = Vec::new();
    for (name, p) in prepared {
        let Prepared {
            file,
            id,
            uid,
            sender,
            message_id,
        } = p;
        match file.rename_as_id(id) {
            Ok(()) => {
                log_accepted(id, uid, &sender, message_id.as_deref());
                done.push(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // The ID is taken: process this one alone with a fresh ID.
                let path = queue.dir(QueueName::Maildrop).join(&name);
                match pick(cfg, queue, cleanup, &path) {
                    Ok(Some(_)) => done.push(name),
                    Ok(None) => {}
                    Err(e) => log::warning(&format!("maildrop file {name}: {e:#}")),
                }
            }
            Err(e) => log::warning(&format!("maildrop file {name}: rename into incoming/: {e}")),
        }
    }
    if done.is_empty() {
        return Ok(more);
    }
    // One directory fsync makes all new names durable; only then may the
    // maildrop originals go.
    queue::write::fsync_dir(&queue.dir(QueueName::Incoming)).context("fsync incoming/")?;
    for name in &done {
        let _ = std::fs::remove_file(queue.dir(QueueName::Maildrop).join(name));
    }
    queue::wake::wake(queue, "qmgr", &[queue::wake::NEW_MAIL]);
    Ok(more)
}

fn log_accepted(id: queue::QueueId, uid: u32, sender: &str, message_id: Option<&str>) {
    log::info(&format!("{id}: uid={uid} from=<{sender}>"));
    match message_id {
        Some(m) => log::info(&format!("{id}: message-id={m}")),
        None => log::info(&format!("{id}: message-id=<>")),
    }
}

/// A maildrop file turned into a queue file that is written but not yet
/// fsynced or renamed.
struct Prepared {
    file: queue::write::Finished,
    id: queue::QueueId,
    uid: u32,
    sender: String,
    message_id: Option<String>,
}

/// Reads one maildrop file defensively.
fn open_hostile(path: &Path, limit: u64) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(std::io::Error::other(format!(
            "file has {} links",
            meta.nlink()
        )));
    }
    if meta.len() > limit {
        return Err(std::io::Error::other(format!(
            "file is larger than {limit} bytes"
        )));
    }
    // Clear O_NONBLOCK (it was only there to not hang on a FIFO).
    // SAFETY: fd is valid for the lifetime of f.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes, meta))
}

/// Reads, checks and cleans up one maildrop file and writes its queue file
/// under ID `id` (not yet fsynced or renamed); None when the file was
/// skipped (young and incomplete) or set aside.
fn prepare(
    cfg: &conf::Config,
    queue: &Queue,
    cleanup: &Cleanup,
    path: &Path,
    id: queue::QueueId,
    spares: &mut queue::spare::Spares,
) -> anyhow::Result<Option<Prepared>> {
    let limit = if cfg.message_size_limit == 0 {
        u64::MAX / 2
    } else {
        cfg.message_size_limit + queue::file::MAX_ENVELOPE as u64
    };
    let (bytes, meta) = match open_hostile(path, limit) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            to_corrupt(
                queue,
                path,
                &format!("unsafe or unreadable maildrop file: {e}"),
            );
            return Ok(None);
        }
    };
    let qf = match QueueFile::parse(bytes) {
        Ok(q) => q,
        Err(e) => {
            let age = SystemTime::now()
                .duration_since(meta.modified().unwrap_or(SystemTime::now()))
                .unwrap_or_default();
            if e == FileError::Truncated && age < GRACE {
                return Ok(None); // still being written
            }
            to_corrupt(
                queue,
                path,
                &format!("malformed maildrop file from uid {}: {e}", meta.uid()),
            );
            return Ok(None);
        }
    };
    let uid = meta.uid();
    let mut env = qf.envelope.clone();
    let local = Local {
        uid,
        fullname: env.attr("fullname").map(str::to_string),
    };
    let extract = env.attr("extract") == Some("yes");
    // The envelope is the user's: keep only what a submitter may set.
    env.attrs
        .retain(|(k, _)| matches!(k.as_str(), "envid" | "ret" | "body" | "smtputf8"));
    env.set_attr("origin", "pickup");
    env.set_attr("uid", uid.to_string());
    env.set_attr("protocol", "local");
    validate_addresses(&mut env, uid);
    let out = cleanup
        .process(env, qf.content(), Some(&local), id, extract)
        .map_err(|e| anyhow::anyhow!("lookup failed, will retry: {e}"))?;
    let mut draft = queue::write::Draft::create_reusing(&queue.dir(QueueName::Incoming), spares)
        .context("create queue file in incoming/")?;
    draft.write_envelope(&out.env)?;
    draft.write_content(&out.content)?;
    let file = draft.finish_unsynced().context("write queue file")?;
    Ok(Some(Prepared {
        file,
        id,
        uid,
        sender: qf.envelope.sender.clone(),
        message_id: out.message_id,
    }))
}

/// Processes one file completely (fsync, rename with a free ID, directory
/// fsync left to the caller); returns the new queue ID.
fn pick(
    cfg: &conf::Config,
    queue: &Queue,
    cleanup: &Cleanup,
    path: &Path,
) -> anyhow::Result<Option<String>> {
    let mut id = queue::QueueId::now();
    for _ in 0..100 {
        let mut spares = queue::spare::Spares::new(queue);
        let Some(p) = prepare(cfg, queue, cleanup, path, id, &mut spares)? else {
            return Ok(None);
        };
        queue::write::sync_files(&[&p.file]).context("fsync queue file")?;
        match p.file.rename_as_id(id) {
            Ok(()) => {
                log_accepted(id, p.uid, &p.sender, p.message_id.as_deref());
                return Ok(Some(id.to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id = id.next(),
            Err(e) => return Err(e).context("rename into incoming/"),
        }
    }
    anyhow::bail!("no free queue ID")
}

/// Recipients must be valid addresses; a bad one gets an error route, so
/// the sender hears about it. A bad sender is replaced by the user's name.
pub(crate) fn validate_addresses(env: &mut queue::Envelope, uid: u32) {
    let ok = crate::drop::parse::valid_address;
    if !env.sender.is_empty() && !ok(&env.sender) {
        let name = login_name(uid).unwrap_or_else(|| format!("uid{uid}"));
        log::warning(&format!(
            "uid={uid}: bad sender address syntax \"{}\"; using {name}",
            env.sender.escape_debug()
        ));
        env.sender = name;
    }
    for r in &mut env.recipients {
        if !ok(&r.addr) {
            r.route = Some(format!(
                "error:5.1.3 bad recipient address syntax: {}",
                r.addr.escape_debug()
            ));
        }
    }
}

/// The login name of `uid`, if it has one.
pub(crate) fn login_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn to_corrupt(queue: &Queue, path: &Path, reason: &str) {
    match queue.to_corrupt(path, reason) {
        Ok(dst) => log::warning(&format!("{reason}: moved to {}", dst.display())),
        Err(e) => {
            log::warning(&format!(
                "{reason}; cannot move it to corrupt/ ({e}); removing it"
            ));
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::file::{Envelope, Recipient, encode_file};
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: conf::Config,
        queue: Queue,
        cleanup: Cleanup,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "queue_directory = {}\nmyhostname = relay.test.example\nalias_maps =\nmessage_size_limit = 100000\n",
            dir.path().join("spool").display()
        );
        let main = conf::MainCf::parse(&text, Path::new("main.cf")).unwrap();
        let cfg = conf::Config::build(&main, &[]).unwrap();
        let queue = Queue::new(&cfg.queue_directory);
        queue.ensure(None).unwrap();
        let cleanup = Cleanup::new(&cfg).unwrap();
        Fixture {
            _dir: dir,
            cfg,
            queue,
            cleanup,
        }
    }

    fn maildrop_file(
        sender: &str,
        rcpts: &[&str],
        content: &[u8],
        attrs: &[(&str, &str)],
    ) -> Vec<u8> {
        let env = Envelope {
            arrival: SystemTime::now(),
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|r| Recipient {
                    addr: r.to_string(),
                    ..Default::default()
                })
                .collect(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        encode_file(&env, content)
    }

    fn drop_path(f: &Fixture, name: &str) -> std::path::PathBuf {
        f.queue.dir(QueueName::Maildrop).join(name)
    }

    #[test]
    fn a_valid_submission_is_cleaned_up_and_queued() {
        let f = fixture();
        let p = drop_path(&f, "aaaa");
        std::fs::write(
            &p,
            maildrop_file(
                "backup",
                &["admin@contoso.test"],
                b"Subject: x\r\nBcc: b@x\r\n\r\nok\r\n",
                &[("extract", "yes"), ("uid", "0"), ("fullname", "Backup Job")],
            ),
        )
        .unwrap();
        let id = pick(&f.cfg, &f.queue, &f.cleanup, &p)
            .unwrap()
            .expect("queued");
        let q = QueueFile::read(&f.queue.path(QueueName::Incoming, &id)).unwrap();
        assert_eq!(q.envelope.sender, "backup@relay.test.example");
        // The owner of the file, not the file's claim, is the submitter.
        let me = nix::unistd::getuid().as_raw().to_string();
        assert_eq!(q.envelope.attr("uid"), Some(me.as_str()));
        let text = String::from_utf8(q.content().to_vec()).unwrap();
        assert!(!text.contains("Bcc:"), "{text}");
        assert!(
            text.contains("From: Backup Job <backup@relay.test.example>"),
            "{text}"
        );
    }

    #[test]
    fn hostile_files_never_become_messages() {
        let f = fixture();
        let target = f._dir.path().join("secret");
        std::fs::write(
            &target,
            maildrop_file("a", &["b@x.test"], b"\r\nstolen\r\n", &[]),
        )
        .unwrap();
        // A symlink to another file.
        symlink(&target, drop_path(&f, "link")).unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "link")).unwrap(),
            None
        );
        // A hard link (two names for one file).
        std::fs::hard_link(&target, drop_path(&f, "hard")).unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "hard")).unwrap(),
            None
        );
        // A FIFO would block a naive reader.
        nix::unistd::mkfifo(
            &drop_path(&f, "fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "fifo")).unwrap(),
            None
        );
        // A directory.
        std::fs::create_dir(drop_path(&f, "dir")).unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "dir")).unwrap(),
            None
        );
        // Garbage.
        std::fs::write(drop_path(&f, "junk"), b"hello, I am not a queue file").unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "junk")).unwrap(),
            None
        );
        // Too big.
        let big = maildrop_file("a", &["b@x.test"], &vec![b'x'; 20_000_000], &[]);
        std::fs::write(drop_path(&f, "big"), big).unwrap();
        assert_eq!(
            pick(&f.cfg, &f.queue, &f.cleanup, &drop_path(&f, "big")).unwrap(),
            None
        );
        assert!(f.queue.list(QueueName::Incoming).unwrap().is_empty());
        // Each went to corrupt/ with a reason (or, for the symlink, its
        // name was moved, never its target's content).
        let corrupt = f.queue.list(QueueName::Corrupt).unwrap();
        assert!(corrupt.len() >= 5, "{corrupt:?}");
        for name in ["junk", "big", "hard"] {
            let reason = std::fs::read_to_string(
                f.queue
                    .dir(QueueName::Corrupt)
                    .join(format!("{name}.reason")),
            )
            .unwrap();
            assert!(!reason.is_empty());
        }
        assert!(target.exists(), "the symlink target must be untouched");
    }

    #[test]
    fn a_young_incomplete_file_waits_and_an_old_one_is_set_aside() {
        let f = fixture();
        let full = maildrop_file("a", &["b@x.test"], b"\r\nbody\r\n", &[]);
        let p = drop_path(&f, "partial");
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        assert_eq!(pick(&f.cfg, &f.queue, &f.cleanup, &p).unwrap(), None);
        assert!(p.exists(), "a file still being written must be left alone");
        let old = SystemTime::now() - Duration::from_secs(3600);
        let file = std::fs::File::options().write(true).open(&p).unwrap();
        file.set_modified(old).unwrap();
        assert_eq!(pick(&f.cfg, &f.queue, &f.cleanup, &p).unwrap(), None);
        assert!(!p.exists());
        assert_eq!(
            f.queue.list(QueueName::Corrupt).unwrap(),
            vec!["partial".to_string()]
        );
    }

    #[test]
    fn bad_addresses_are_contained() {
        let f = fixture();
        let p = drop_path(&f, "bad");
        std::fs::write(
            &p,
            maildrop_file(
                "bad\u{1}sender",
                &["ok@x.test", "bad@@x"],
                b"\r\nb\r\n",
                &[],
            ),
        )
        .unwrap();
        let id = pick(&f.cfg, &f.queue, &f.cleanup, &p).unwrap().unwrap();
        let q = QueueFile::read(&f.queue.path(QueueName::Incoming, &id)).unwrap();
        assert!(!q.envelope.sender.contains('\u{1}'));
        let bad = q
            .envelope
            .recipients
            .iter()
            .find(|r| r.addr.contains("@@"))
            .unwrap();
        assert!(bad.route.as_deref().unwrap().starts_with("error:5.1.3"));
        assert!(
            q.envelope
                .recipients
                .iter()
                .any(|r| r.addr == "ok@x.test" && r.route.is_none())
        );
    }
}

//! The drop folder (`drop_directory`), postern's replacement for the IIS
//! SMTP service's Pickup folder: any program, or a scanner's "scan to
//! folder", writes a plain RFC 5322 file there; pickup queues it as
//! `sendmail -t` would and removes it. A file that cannot be sent is moved
//! to `drop_badmail_directory` with a `.reason` file (IIS Badmail).
//!
//! The directory is writable by the devices' account, so every entry is
//! hostile:
//!
//! - only regular files are read; symbolic links, FIFOs, sockets and
//!   devices are refused from their `lstat` alone (never opened, never
//!   followed: a rename moves the link itself), subdirectories ignored;
//! - a file is opened with `O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`, and the open
//!   descriptor must be the inode that was examined, a regular file with
//!   one link (a hard link could expose a file the writer cannot read);
//! - a file larger than `message_size_limit` is refused from its size,
//!   without being read;
//! - a file still being written is left alone: it must not have changed
//!   (size, times, inode) for `drop_settle_time` and must look the same at
//!   two scans; its change time counts, which no writer can set back; dot
//!   files and `*.tmp` are never taken;
//! - nothing is removed before the queue file is durable (file fsynced,
//!   renamed, directory fsynced), and the removal first renames the name
//!   aside and checks that it is still the inode that was queued (a writer
//!   may have replaced it meanwhile). A crash in between may send a file
//!   twice, never lose it. A file that grew after it was read (its writer
//!   kept it open) is saved whole to badmail.
//!
//! Problems with the directories themselves (missing, not writable) and
//! with single files (unreadable) are logged once, not at every scan.

mod badmail;
pub mod parse;

use anyhow::Context;
use queue::cleanup::{Cleanup, Local};
use queue::file::{Envelope, Recipient};
use queue::layout::{Queue, QueueName};
use queue::log;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use badmail::Details;
use parse::{DropMessage, Limits};

/// How often the drop directory is looked at.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Files queued per directory fsync.
const BATCH: usize = 64;
/// Prefix of a name being removed (see [`DropFolder::remove`]), followed by
/// the queue ID and a dot; such a name left by a crash is taken like any
/// other file (and may then be sent twice, never lost).
const CLAIM_PREFIX: &str = ".postern-claim.";

/// What a file looked like: equal looks at two scans mean nobody wrote to
/// it in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Look {
    fn of(m: &Metadata) -> Look {
        Look {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    fn ctime(&self) -> SystemTime {
        let (s, ns) = self.ctime;
        if s >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
        } else {
            SystemTime::UNIX_EPOCH
        }
    }
}

/// The drop folder and what pickup remembers about its files between scans.
#[derive(Debug)]
pub struct DropFolder {
    dir: PathBuf,
    badmail: PathBuf,
    settle: Duration,
    limits: Limits,
    /// Each name's look at the previous scan.
    looks: HashMap<OsString, Look>,
    /// Names whose problem was logged, with their look then: not logged
    /// again until they change.
    quiet: HashMap<OsString, Look>,
    /// Names that were queued but could not be removed: not sent again
    /// while they stay the same.
    sent: HashMap<OsString, Look>,
    /// The directory problem logged last (logged again only when it changes).
    dir_problem: Option<String>,
    /// Why badmail cannot be used, if it cannot.
    badmail_problem: Option<String>,
}

/// The verdict on one entry at this scan.
enum Verdict {
    /// Not now: young, changing, raced, or a problem already logged.
    Wait,
    /// To badmail, with this reason.
    Refuse(String, Look),
    /// Read and parsed.
    Ready(Box<Ready>),
}

/// A file read and parsed, still open.
struct Ready {
    file: File,
    look: Look,
    msg: DropMessage,
}

/// A drop file whose queue file is written (the [`queue::write::Finished`]
/// beside it) but not yet fsynced or renamed.
struct Prepared {
    name: OsString,
    /// The drop file, still open (its content is in the queue file now).
    file: File,
    /// What it looked like when it was read.
    look: Look,
    id: queue::QueueId,
    uid: u32,
    sender: String,
    message_id: Option<String>,
}

impl DropFolder {
    /// The drop folder of `cfg`, or None when `drop_directory` is empty.
    pub fn new(cfg: &conf::Config) -> Option<DropFolder> {
        if cfg.drop_directory.is_empty() {
            return None;
        }
        Some(DropFolder {
            dir: PathBuf::from(&cfg.drop_directory),
            badmail: resolve_parent(Path::new(&cfg.drop_badmail_directory)),
            settle: cfg.drop_settle_time,
            limits: Limits {
                max_size: cfg.message_size_limit,
                line_length: cfg.line_length_limit.max(1) as usize,
                header_size: cfg.header_size_limit.max(1) as usize,
            },
            looks: HashMap::new(),
            quiet: HashMap::new(),
            sent: HashMap::new(),
            dir_problem: None,
            badmail_problem: None,
        })
    }

    /// Looks at the drop directory once: refuses what must be refused and
    /// queues up to one batch of files. Returns true when more files may be
    /// ready.
    ///
    /// # Errors
    /// Queue errors (a full disk): nothing was removed.
    pub fn scan(&mut self, queue: &Queue, cleanup: &Cleanup) -> anyhow::Result<bool> {
        let Some((dir_meta, mut names)) = self.list() else {
            return Ok(false);
        };
        self.check_badmail(&dir_meta);
        names.sort();
        let present: HashSet<&OsString> = names.iter().collect();
        self.looks.retain(|n, _| present.contains(n));
        self.quiet.retain(|n, _| present.contains(n));
        self.sent.retain(|n, _| present.contains(n));
        let mut prepared: Vec<(queue::write::Finished, Prepared)> = Vec::new();
        let mut used = HashSet::new();
        let mut spares = queue::spare::Spares::new(queue);
        let mut more = false;
        for name in &names {
            if prepared.len() >= BATCH {
                more = true;
                break;
            }
            match self.examine(name, &dir_meta) {
                Verdict::Wait => {}
                Verdict::Refuse(reason, look) => self.refuse(name, &reason, look),
                Verdict::Ready(ready) => {
                    let mut id = queue::QueueId::now();
                    while !used.insert(id) {
                        id = id.next();
                    }
                    if let Some(p) = self.prepare(queue, cleanup, name, *ready, id, &mut spares)? {
                        prepared.push(p);
                    }
                }
            }
        }
        if prepared.is_empty() {
            return Ok(more);
        }
        let fins: Vec<&queue::write::Finished> = prepared.iter().map(|(f, _)| f).collect();
        queue::write::sync_files(&fins).context("fsync new queue files")?;
        let mut queued: Vec<Prepared> = Vec::new();
        for (file, p) in prepared {
            match file.rename_as_id(p.id) {
                Ok(()) => queued.push(p),
                // The ID is taken (it appears in the Received: and
                // Message-Id: headers): the file is queued again, with
                // another ID, at the next scan.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => log::warning(&format!(
                    "drop file {}: rename into incoming/: {e}",
                    printable(&self.shown(&p.name))
                )),
            }
        }
        if queued.is_empty() {
            return Ok(false);
        }
        // One directory fsync makes the new queue files durable; only then
        // may the drop files go.
        queue::write::fsync_dir(&queue.dir(QueueName::Incoming)).context("fsync incoming/")?;
        for p in &mut queued {
            let shown = self.shown(&p.name);
            log::info(&format!("{}: uid={} from=<{}>", p.id, p.uid, p.sender));
            log::info(&format!(
                "{}: message-id={}",
                p.id,
                p.message_id.as_deref().unwrap_or("<>")
            ));
            log::info(&format!(
                "{}: drop_file={}, size={}",
                p.id,
                printable(&shown),
                p.look.size
            ));
            self.remove(p);
        }
        queue::wake::wake(queue, "qmgr", &[queue::wake::NEW_MAIL]);
        Ok(more)
    }

    /// The names in the drop directory that may be mail, with the
    /// directory's metadata; None (logged once) when it cannot be used.
    fn list(&mut self) -> Option<(Metadata, Vec<OsString>)> {
        let result = (|| -> Result<(Metadata, Vec<OsString>), String> {
            let meta = std::fs::metadata(&self.dir).map_err(|e| e.to_string())?;
            if !meta.is_dir() {
                return Err("not a directory".into());
            }
            nix::unistd::access(
                &self.dir,
                nix::unistd::AccessFlags::R_OK
                    | nix::unistd::AccessFlags::W_OK
                    | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| {
                format!(
                    "pickup (uid {}) cannot list and remove files in it ({e}); make it writable by the group of mail_owner, e.g. chgrp postern DIR; chmod 2770 DIR",
                    nix::unistd::geteuid()
                )
            })?;
            let mut names = Vec::new();
            for e in std::fs::read_dir(&self.dir).map_err(|e| e.to_string())? {
                let name = e.map_err(|e| e.to_string())?.file_name();
                if candidate(&name) {
                    names.push(name);
                }
            }
            Ok((meta, names))
        })();
        match result {
            Ok(x) => {
                if self.dir_problem.take().is_some() {
                    log::info(&format!(
                        "drop_directory {}: usable again",
                        self.dir.display()
                    ));
                }
                Some(x)
            }
            Err(e) => {
                let text = format!(
                    "drop_directory {}: {e}; files dropped there wait",
                    self.dir.display()
                );
                if self.dir_problem.as_deref() != Some(text.as_str()) {
                    log::warning(&text);
                    self.dir_problem = Some(text);
                }
                None
            }
        }
    }

    /// Makes sure badmail exists (created mode 0700 when missing), is a
    /// writable directory on the drop directory's file system; logs a
    /// change of state.
    fn check_badmail(&mut self, dir_meta: &Metadata) {
        let result = (|| -> Result<(), String> {
            let meta = match std::fs::metadata(&self.badmail) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&self.badmail)
                        .map_err(|e| format!("cannot create it: {e}"))?;
                    log::info(&format!(
                        "created drop_badmail_directory {}",
                        self.badmail.display()
                    ));
                    std::fs::metadata(&self.badmail).map_err(|e| e.to_string())?
                }
                Err(e) => return Err(e.to_string()),
            };
            if !meta.is_dir() {
                return Err("not a directory".into());
            }
            if meta.dev() != dir_meta.dev() {
                return Err(format!(
                    "it is not on the file system of drop_directory {} (refused files are moved by renaming)",
                    self.dir.display()
                ));
            }
            nix::unistd::access(
                &self.badmail,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| format!("pickup cannot write into it ({e})"))?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                if self.badmail_problem.take().is_some() {
                    log::info(&format!(
                        "drop_badmail_directory {}: usable again",
                        self.badmail.display()
                    ));
                    self.quiet.clear();
                }
            }
            Err(e) => {
                let text = format!(
                    "drop_badmail_directory {}: {e}; refused drop files stay in {}",
                    self.badmail.display(),
                    self.dir.display()
                );
                if self.badmail_problem.as_deref() != Some(text.as_str()) {
                    log::warning(&text);
                    self.badmail_problem = Some(text);
                }
            }
        }
    }

    /// The name shown in logs and reasons: a claimed name without its prefix.
    fn shown(&self, name: &OsStr) -> PathBuf {
        self.dir.join(shown_name(name))
    }

    /// Decides what to do with one entry now.
    fn examine(&mut self, name: &OsStr, dir_meta: &Metadata) -> Verdict {
        let path = self.dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => return Verdict::Wait, // gone
        };
        let look = Look::of(&meta);
        let ft = meta.file_type();
        if ft.is_dir() {
            return Verdict::Wait;
        }
        if self.quiet.get(name) == Some(&look) || self.sent.get(name) == Some(&look) {
            return Verdict::Wait;
        }
        if !ft.is_file() {
            let what = if ft.is_symlink() {
                "a symbolic link; drop files must be regular files (links are never followed)"
            } else if ft.is_fifo() {
                "a FIFO (named pipe), not a regular file"
            } else if ft.is_socket() {
                "a socket, not a regular file"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node, not a regular file"
            } else {
                "not a regular file"
            };
            return Verdict::Refuse(format!("refused: the entry is {what}"), look);
        }
        // Settled: unchanged for drop_settle_time and at two scans.
        let previous = self.looks.insert(name.to_owned(), look);
        let young = match SystemTime::now().duration_since(look.ctime()) {
            Ok(age) => age < self.settle,
            // In the future: within the settle time it is just young; far
            // ahead, the clock of a file server is off and the two looks
            // decide.
            Err(e) => e.duration() < self.settle,
        };
        if young || previous != Some(look) {
            return Verdict::Wait;
        }
        if meta.nlink() != 1 {
            return Verdict::Refuse(
                format!(
                    "refused: the file has {} links (a hard link to a file elsewhere is never read)",
                    meta.nlink()
                ),
                look,
            );
        }
        if self.limits.max_size > 0 && meta.len() > self.limits.max_size {
            return Verdict::Refuse(
                format!(
                    "refused: the file is {} bytes; message_size_limit is {} (it was not read)",
                    meta.len(),
                    self.limits.max_size
                ),
                look,
            );
        }
        let euid = nix::unistd::geteuid().as_raw();
        if dir_meta.mode() & libc::S_ISVTX != 0 && dir_meta.uid() != euid && meta.uid() != euid {
            self.quiet_warning(
                name,
                look,
                &format!(
                    "the drop directory has the sticky bit, so pickup (uid {euid}) may not remove this file of uid {}; it is left alone (chmod o-t the directory)",
                    meta.uid()
                ),
            );
            return Verdict::Wait;
        }
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Verdict::Wait,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Verdict::Wait, // replaced by a link: next scan
            Err(e) => {
                self.quiet_warning(
                    name,
                    look,
                    &format!(
                        "cannot open it ({e}); it is left alone until it changes (make drop files readable by mail_owner's group)"
                    ),
                );
                return Verdict::Wait;
            }
        };
        let Ok(fmeta) = file.metadata() else {
            return Verdict::Wait;
        };
        // The descriptor must be the inode examined above, unchanged.
        if Look::of(&fmeta) != look || !fmeta.file_type().is_file() || fmeta.nlink() != 1 {
            return Verdict::Wait;
        }
        let cap = if self.limits.max_size == 0 {
            u64::MAX / 2
        } else {
            self.limits.max_size
        };
        let mut bytes = Vec::with_capacity(look.size.min(cap) as usize);
        if let Err(e) = (&mut file).take(cap + 1).read_to_end(&mut bytes) {
            self.quiet_warning(name, look, &format!("read error: {e}"));
            return Verdict::Wait;
        }
        // Written to while it was read: not settled after all.
        match file.metadata() {
            Ok(m) if Look::of(&m) == look && bytes.len() as u64 == look.size => {}
            _ => return Verdict::Wait,
        }
        match parse::parse(&bytes, &self.limits) {
            Ok(msg) => Verdict::Ready(Box::new(Ready { file, look, msg })),
            Err(refusal) => Verdict::Refuse(format!("refused: {refusal}"), look),
        }
    }

    /// Builds the envelope, runs cleanup and writes the queue file (not
    /// yet fsynced or renamed). None when a lookup table failed (the file
    /// waits for the next scan).
    fn prepare(
        &mut self,
        queue: &Queue,
        cleanup: &Cleanup,
        name: &OsStr,
        ready: Ready,
        id: queue::QueueId,
        spares: &mut queue::spare::Spares,
    ) -> anyhow::Result<Option<(queue::write::Finished, Prepared)>> {
        let uid = ready.file.metadata().map(|m| m.uid()).unwrap_or(0);
        let sender = match &ready.msg.sender {
            Some(s) => s.clone(),
            None => crate::scan::login_name(uid).unwrap_or_else(|| format!("uid{uid}")),
        };
        let mut env = Envelope {
            arrival: SystemTime::now(),
            sender: sender.clone(),
            recipients: ready
                .msg
                .recipients
                .iter()
                .map(|addr| Recipient {
                    addr: addr.clone(),
                    ..Default::default()
                })
                .collect(),
            attrs: vec![
                ("origin".into(), "drop".into()),
                ("uid".into(), uid.to_string()),
                ("protocol".into(), "local".into()),
                ("drop_file".into(), printable(Path::new(shown_name(name)))),
            ],
        };
        crate::scan::validate_addresses(&mut env, uid);
        let local = Local {
            uid,
            fullname: None,
        };
        let out = match cleanup.process(env, &ready.msg.content, Some(&local), id, true) {
            Ok(o) => o,
            Err(e) => {
                log::warning(&format!(
                    "drop file {}: lookup failed, will retry: {e}",
                    printable(&self.shown(name))
                ));
                return Ok(None);
            }
        };
        let mut draft =
            queue::write::Draft::create_reusing(&queue.dir(QueueName::Incoming), spares)
                .context("create queue file in incoming/")?;
        draft.write_envelope(&out.env)?;
        draft.write_content(&out.content)?;
        let file = draft.finish_unsynced().context("write queue file")?;
        Ok(Some((
            file,
            Prepared {
                name: name.to_owned(),
                file: ready.file,
                look: ready.look,
                id,
                uid,
                sender,
                message_id: out.message_id,
            },
        )))
    }

    /// Moves a refused entry to badmail (or, when badmail cannot be used,
    /// leaves it and says so once).
    fn refuse(&mut self, name: &OsStr, reason: &str, look: Look) {
        // The name must still be the entry judged: a writer may have put a
        // corrected file in its place meanwhile.
        match std::fs::symlink_metadata(self.dir.join(name)) {
            Ok(m) if Look::of(&m) == look => {}
            _ => return,
        }
        let shown = self.shown(name);
        let details = Details::of(&self.dir.join(name));
        let owner = details
            .uid
            .map(|u| format!(" (uid={u})"))
            .unwrap_or_default();
        if self.badmail_problem.is_some() {
            self.quiet.insert(name.to_owned(), look);
            log::warning(&format!(
                "drop file {}{owner}: {reason}; left in place until drop_badmail_directory {} can be used",
                printable(&shown),
                self.badmail.display()
            ));
            return;
        }
        match badmail::move_to_badmail(
            &self.dir,
            name,
            shown_name(name),
            &self.badmail,
            reason,
            &details,
        ) {
            Ok(dst) => log::warning(&format!(
                "drop file {}{owner}: {reason}; moved to {}",
                printable(&shown),
                printable(&dst)
            )),
            Err(e) => {
                self.quiet.insert(name.to_owned(), look);
                log::warning(&format!(
                    "drop file {}{owner}: {reason}; cannot move it to {}: {e}; left in place",
                    printable(&shown),
                    self.badmail.display()
                ));
            }
        }
    }

    /// Removes a queued drop file. The name is first renamed aside, so the
    /// unlink removes exactly the inode that was read: if a writer put a
    /// new file under the same name meanwhile, that one is renamed back
    /// (or, failing that, taken from its claimed name at the next scan).
    fn remove(&mut self, p: &mut Prepared) {
        let shown = self.shown(&p.name);
        let path = self.dir.join(&p.name);
        let claimed = if p.name.as_bytes().starts_with(CLAIM_PREFIX.as_bytes()) {
            path.clone()
        } else {
            let mut n = OsString::from(format!("{CLAIM_PREFIX}{}.", p.id));
            n.push(&p.name);
            let c = self.dir.join(n);
            if let Err(e) = queue::write::rename_noreplace(&path, &c) {
                self.not_removed(p, &e.to_string());
                return;
            }
            c
        };
        match std::fs::symlink_metadata(&claimed) {
            Ok(m) if m.dev() == p.look.dev && m.ino() == p.look.ino => {
                if let Err(e) = std::fs::remove_file(&claimed) {
                    self.not_removed(p, &e.to_string());
                    return;
                }
            }
            _ => {
                // Another file now: give it its name back.
                if claimed != path {
                    let _ = queue::write::rename_noreplace(&claimed, &path);
                }
                log::warning(&format!(
                    "drop file {}: replaced by another file after it was queued as {}; the new file is taken separately",
                    printable(&shown),
                    p.id
                ));
                return;
            }
        }
        // Written to after it was read (its writer kept it open): the
        // queued message holds what was read; keep the whole file.
        if let Ok(m) = p.file.metadata()
            && (m.len(), (m.mtime(), m.mtime_nsec())) != (p.look.size, p.look.mtime)
        {
            let reason = format!(
                "the file changed after it was queued as {} (which holds its first {} bytes); this is the whole file as it was when removed",
                p.id, p.look.size
            );
            let details = Details {
                uid: Some(m.uid()),
                size: Some(m.len()),
                link_target: None,
            };
            match badmail::save_copy(
                &mut p.file,
                &self.badmail,
                shown_name(&p.name),
                &shown,
                &reason,
                &details,
            ) {
                Ok(dst) => log::warning(&format!(
                    "drop file {}: {reason}; saved to {}",
                    printable(&shown),
                    printable(&dst)
                )),
                Err(e) => log::error(&format!(
                    "drop file {}: {reason}; cannot save it to {}: {e}",
                    printable(&shown),
                    self.badmail.display()
                )),
            }
        }
    }

    fn not_removed(&mut self, p: &Prepared, why: &str) {
        self.sent.insert(p.name.clone(), p.look);
        log::error(&format!(
            "drop file {}: queued as {} but cannot be removed ({why}); it is not sent again while it stays unchanged, but will be after a restart of pickup",
            printable(&self.shown(&p.name)),
            p.id
        ));
    }

    /// Logs a problem with one file once (until the file changes).
    fn quiet_warning(&mut self, name: &OsStr, look: Look, text: &str) {
        if self.quiet.insert(name.to_owned(), look) != Some(look) {
            log::warning(&format!(
                "drop file {}: {text}",
                printable(&self.shown(name))
            ));
        }
    }
}

/// `path` with its parent directory resolved (`$drop_directory/../badmail`
/// becomes `/srv/mailroot/badmail`), as the kernel resolves it; unchanged
/// when the parent does not exist (yet).
fn resolve_parent(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// True for names that may be mail: not dot files (except names claimed
/// by an interrupted removal) and not `*.tmp`.
fn candidate(name: &OsStr) -> bool {
    let b = name.as_bytes();
    if b.starts_with(CLAIM_PREFIX.as_bytes()) {
        return b.len() > CLAIM_PREFIX.len();
    }
    if b.starts_with(b".") {
        return false;
    }
    !(b.len() >= 4 && b[b.len() - 4..].eq_ignore_ascii_case(b".tmp"))
}

/// A name without its claim prefix (`.postern-claim.<queue ID>.`).
fn shown_name(name: &OsStr) -> &OsStr {
    let b = name.as_bytes();
    match b.strip_prefix(CLAIM_PREFIX.as_bytes()) {
        Some(rest) => match rest.iter().position(|&c| c == b'.') {
            Some(dot) if dot + 1 < rest.len() => OsStr::from_bytes(&rest[dot + 1..]),
            _ => OsStr::from_bytes(rest),
        },
        None => name,
    }
}

/// A path for a log line: control characters escaped, so a hostile file
/// name cannot forge log lines.
fn printable(p: &Path) -> String {
    p.to_string_lossy()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Logs the directories at start, and warns about a world-writable drop
/// directory, which lets anybody on the machine send mail as the devices
/// (the expected modes are in pickup(8)).
pub fn startup_checks(d: &DropFolder) {
    log::info(&format!(
        "watching drop_directory {} (badmail: {})",
        d.dir.display(),
        d.badmail.display()
    ));
    if let Ok(m) = std::fs::metadata(&d.dir)
        && m.permissions().mode() & 0o002 != 0
    {
        log::warning(&format!(
            "drop_directory {} is writable by every user of this machine; anyone can send mail through it (chmod o-w)",
            d.dir.display()
        ));
    }
}

#[cfg(test)]
mod tests;

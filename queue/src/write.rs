//! The durable write protocol. A message is written to a temporary name
//! created with `O_CREAT|O_EXCL` (a dot-name that readers skip), then the
//! trailer is appended and the file fsynced, then it is renamed to its queue
//! ID with `RENAME_NOREPLACE` (so two writers can never overwrite each other),
//! then the directory is fsynced so the new name survives a crash. Only after
//! that may a program acknowledge the message (250 to DATA, exit 0 from
//! sendmail). [`commit_batch`] renames several finished files and fsyncs the
//! directory once for all of them (group commit).

use crate::file::{Envelope, TRAILER_LEN, crc_envelope_line, trailer};
use crate::id::QueueId;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A queue file being written.
pub struct Draft {
    out: io::BufWriter<File>,
    tmp: PathBuf,
    dir: PathBuf,
    crc: crc32fast::Hasher,
    content_len: u64,
    committed: bool,
}

/// A queue file that is complete and fsynced under its temporary name.
pub struct Finished {
    file: File,
    tmp: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl Draft {
    /// Creates a new temporary file in `dir` with mode `mode` (0600 for the
    /// queue; maildrop files are 0644 inside a directory others cannot list).
    ///
    /// # Errors
    /// The directory is missing or not writable.
    pub fn create(dir: &Path, mode: u32) -> io::Result<Draft> {
        loop {
            let tmp = dir.join(format!(".tmp.{}", crate::id::random_name()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(Draft {
                        out: io::BufWriter::with_capacity(64 * 1024, f),
                        tmp,
                        dir: dir.to_path_buf(),
                        crc: crc32fast::Hasher::new(),
                        content_len: 0,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`Draft::create`], but takes a recycled file from the spare pool
    /// when there is one (see [`crate::spare`]); `dir` and the pool must be
    /// on the same file system.
    ///
    /// # Errors
    /// As [`Draft::create`].
    pub fn create_reusing(dir: &Path, spares: &mut crate::spare::Spares) -> io::Result<Draft> {
        let tmp = dir.join(format!(".tmp.{}", crate::id::random_name()));
        match spares.take(&tmp) {
            Some(f) => Ok(Draft {
                out: io::BufWriter::with_capacity(64 * 1024, f),
                tmp,
                dir: dir.to_path_buf(),
                crc: crc32fast::Hasher::new(),
                content_len: 0,
                committed: false,
            }),
            None => Draft::create(dir, 0o600),
        }
    }

    /// Writes the envelope. Call once, before any content.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_envelope(&mut self, env: &Envelope) -> io::Result<()> {
        let head = env.encode();
        for line in head.split_inclusive(|&b| b == b'\n') {
            crc_envelope_line(&mut self.crc, line);
        }
        self.out.write_all(&head)
    }

    /// Appends message content.
    ///
    /// # Errors
    /// Write errors (e.g. a full disk).
    pub fn write_content(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.content_len += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Content bytes written so far.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Writes the trailer and fsyncs the file (not yet its name).
    ///
    /// # Errors
    /// Write or fsync errors; the temporary file is removed.
    pub fn finish(self) -> io::Result<Finished> {
        let f = self.finish_unsynced()?;
        f.file.sync_all()?;
        Ok(f)
    }

    /// Writes the trailer but does not fsync: the caller must pass the
    /// result to [`sync_files`] before renaming it. Used to make many files
    /// durable at once (group commit).
    ///
    /// # Errors
    /// Write errors; the temporary file is removed.
    pub fn finish_unsynced(mut self) -> io::Result<Finished> {
        let crc = std::mem::take(&mut self.crc).finalize();
        let t = trailer(self.content_len, crc);
        debug_assert_eq!(t.len(), TRAILER_LEN);
        self.out.write_all(&t)?;
        self.out.flush()?;
        let file = self.out.get_ref().try_clone()?;
        self.committed = true;
        Ok(Finished {
            file,
            tmp: std::mem::take(&mut self.tmp),
            dir: std::mem::take(&mut self.dir),
            committed: false,
        })
    }
}

/// fsyncs many finished files at once. The calls run in parallel on a
/// small pool of long-lived threads (no thread is started per batch), so
/// the file system and the disk can commit them together instead of one
/// after the other: the group commit that lets pickup and smtpd keep up
/// with the disk's fsync latency.
///
/// # Errors
/// The first fsync error; the caller must not rename any of the files.
pub fn sync_files(files: &[&Finished]) -> io::Result<()> {
    if files.len() <= 1 {
        return files.iter().try_for_each(|f| f.file.sync_all());
    }
    sync_pool().sync_all(files)
}

/// Threads of the fsync pool: enough to keep a disk's queue busy.
const SYNC_THREADS: usize = 8;

/// One fsync request: a descriptor, and where to report the result.
struct SyncJob {
    fd: std::os::fd::RawFd,
    done: std::sync::mpsc::Sender<io::Result<()>>,
}

/// Long-lived fsync workers shared by the process.
struct SyncPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<SyncJob>>,
}

fn sync_pool() -> &'static SyncPool {
    static POOL: std::sync::OnceLock<SyncPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SyncJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..SYNC_THREADS {
            let rx = rx.clone();
            // A worker that cannot be started is simply missing; with none
            // at all, sync_all runs the fsyncs itself.
            let _ = std::thread::Builder::new()
                .name(format!("fsync-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // SAFETY: fsync on a descriptor; the caller of
                        // sync_all keeps it open until every result is in.
                        let rc = unsafe { libc::fsync(job.fd) };
                        let r = if rc == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::last_os_error())
                        };
                        let _ = job.done.send(r);
                    }
                });
        }
        SyncPool {
            jobs: std::sync::Mutex::new(tx),
        }
    })
}

impl SyncPool {
    /// fsyncs `files` on the pool and waits for all of them; the files stay
    /// borrowed (so open) until every worker has answered.
    fn sync_all(&self, files: &[&Finished]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (done, results) = std::sync::mpsc::channel();
        let mut sent = 0;
        let mut result = Ok(());
        for f in files {
            let job = SyncJob {
                fd: f.file.as_raw_fd(),
                done: done.clone(),
            };
            let queued = self
                .jobs
                .lock()
                .map(|tx| tx.send(job).is_ok())
                .unwrap_or(false);
            if queued {
                sent += 1;
            } else if let Err(e) = f.file.sync_all() {
                // No worker left: do it here.
                result = result.and(Err(e));
            }
        }
        drop(done);
        for _ in 0..sent {
            match results.recv() {
                Ok(r) => result = result.and(r),
                Err(_) => {
                    result = result.and(Err(io::Error::other("fsync worker stopped")));
                    break;
                }
            }
        }
        result
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Finished {
    /// Renames the file to a fresh queue ID (or the next free one) and fsyncs
    /// the directory. When this returns `Ok`, the message is durable.
    ///
    /// # Errors
    /// Rename or directory fsync errors; the file is removed.
    pub fn commit(self) -> io::Result<QueueId> {
        let dir = self.dir.clone();
        let id = self.rename_to_id()?;
        fsync_dir(&dir)?;
        Ok(id)
    }

    /// Renames the file to the queue ID `id` chosen in advance (its content
    /// may mention it, e.g. in a Received: header) and fsyncs the directory.
    ///
    /// # Errors
    /// `AlreadyExists` when the ID is taken (the file is removed; write the
    /// message again with another ID), or rename/fsync errors.
    pub fn commit_as_id(mut self, id: QueueId) -> io::Result<()> {
        rename_noreplace(&self.tmp, &self.dir.join(id.to_string()))?;
        self.committed = true;
        fsync_dir(&self.dir)
    }

    /// Renames the file to the queue ID `id` without fsyncing the directory;
    /// the caller fsyncs it once for a batch ([`fsync_dir`]) before it
    /// acknowledges anything.
    ///
    /// # Errors
    /// `AlreadyExists` when the ID is taken (the file is removed), or rename errors.
    pub fn rename_as_id(mut self, id: QueueId) -> io::Result<()> {
        rename_noreplace(&self.tmp, &self.dir.join(id.to_string()))?;
        self.committed = true;
        Ok(())
    }

    /// Like [`Finished::rename_as_id`], but gives the file back when the ID
    /// is taken, so the caller can try another without writing it again.
    ///
    /// # Errors
    /// `(self, AlreadyExists)` when the ID is taken; other rename errors
    /// (the file is removed).
    #[allow(clippy::result_large_err)]
    pub fn rename_as_id_keep(mut self, id: QueueId) -> Result<(), (Finished, io::Error)> {
        match rename_noreplace(&self.tmp, &self.dir.join(id.to_string())) {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err((self, e)),
            Err(e) => Err((self, e)),
        }
    }

    /// Renames to `name` (no ID) and fsyncs the directory; used for maildrop
    /// files, whose names are random.
    ///
    /// # Errors
    /// Rename or fsync errors; the file is removed.
    pub fn commit_as(mut self, name: &str) -> io::Result<PathBuf> {
        let dst = self.dir.join(name);
        rename_noreplace(&self.tmp, &dst)?;
        self.committed = true;
        sync_new_name(&self.dir, &self.file)?;
        Ok(dst)
    }

    fn rename_to_id(mut self) -> io::Result<QueueId> {
        let mut id = QueueId::now();
        for _ in 0..1000 {
            match rename_noreplace(&self.tmp, &self.dir.join(id.to_string())) {
                Ok(()) => {
                    self.committed = true;
                    return Ok(id);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => id = id.next(),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free queue ID after 1000 attempts"))
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Renames finished files in one directory to queue IDs and fsyncs that
/// directory once. Results are in input order.
pub fn commit_batch(dir: &Path, files: Vec<Finished>) -> Vec<io::Result<QueueId>> {
    let mut results: Vec<io::Result<QueueId>> =
        files.into_iter().map(|f| f.rename_to_id()).collect();
    if results.iter().any(|r| r.is_ok())
        && let Err(e) = fsync_dir(dir)
    {
        for r in results.iter_mut() {
            if let Ok(id) = r {
                let _ = std::fs::remove_file(dir.join(id.to_string()));
                *r = Err(io::Error::new(e.kind(), e.to_string()));
            }
        }
    }
    results
}

/// `renameat2(RENAME_NOREPLACE)`: fails with `AlreadyExists` instead of
/// replacing an existing file.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let f = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let t = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // File systems without RENAME_NOREPLACE: link + unlink gives the same guarantee.
        std::fs::hard_link(from, to)?;
        std::fs::remove_file(from)?;
        return Ok(());
    }
    Err(err)
}

/// fsyncs a directory so that names created or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes a new name in `dir` durable. When the caller may not open the
/// directory (an ordinary user submitting into the world-writable,
/// unreadable maildrop), `syncfs(2)` on the file's file system commits the
/// directory entry instead.
pub fn sync_new_name(dir: &Path, file: &File) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor is open for the lifetime of `file`.
            if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes a complete queue file into `dir` and commits it; a convenience for
/// programs that have the whole message in memory (bounces, pickup).
///
/// # Errors
/// Any write, fsync or rename error; nothing is left behind.
pub fn write_message(dir: &Path, env: &Envelope, content: &[u8]) -> io::Result<QueueId> {
    let mut d = Draft::create(dir, 0o600)?;
    d.write_envelope(env)?;
    d.write_content(content)?;
    d.finish()?.commit()
}

/// The current time, for envelopes.
pub fn now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{QueueFile, Recipient};

    fn env() -> Envelope {
        Envelope {
            arrival: SystemTime::now(),
            sender: "a@example.com".into(),
            recipients: vec![Recipient {
                addr: "b@example.com".into(),
                ..Default::default()
            }],
            attrs: vec![],
        }
    }

    #[test]
    fn write_commit_read() {
        let dir = tempfile::tempdir().unwrap();
        let id = write_message(dir.path(), &env(), b"Subject: x\r\n\r\nhello\r\n").unwrap();
        let f = QueueFile::read(&dir.path().join(id.to_string())).unwrap();
        assert_eq!(f.content(), b"Subject: x\r\n\r\nhello\r\n");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn ids_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = std::collections::HashSet::new();
        let finished: Vec<_> = (0..200)
            .map(|_| {
                let mut d = Draft::create(dir.path(), 0o600).unwrap();
                d.write_envelope(&env()).unwrap();
                d.write_content(b"x\r\n").unwrap();
                d.finish().unwrap()
            })
            .collect();
        for r in commit_batch(dir.path(), finished) {
            assert!(ids.insert(r.unwrap()));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 200);
    }

    #[test]
    fn abandoned_drafts_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut d = Draft::create(dir.path(), 0o600).unwrap();
            d.write_envelope(&env()).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn noreplace_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "2").unwrap();
        assert_eq!(
            rename_noreplace(&a, &b).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
    }
}

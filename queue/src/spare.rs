//! Recycled queue files. Creating and deleting an inode per message is
//! what limits a busy queue: ext4 (without a journal especially) scans
//! recently freed inodes on every allocation, and the allocation holds the
//! directory lock that the queue manager's renames wait for. So a finished
//! message's file is not unlinked but renamed into `spare/` (mode 0700,
//! owned by mail_owner), and writers that run as mail_owner (pickup, smtpd,
//! bounces) take a spare file, truncate it and write the new message into
//! it. The pool is bounded; beyond it files are unlinked as usual. Spare
//! files are never messages: every tool ignores the directory.

use crate::layout::Queue;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most files kept in `spare/`.
pub const POOL_LIMIT: usize = 2048;

/// A writer's view of the pool: names found by the last directory read.
#[derive(Debug, Default)]
pub struct Spares {
    dir: PathBuf,
    names: Vec<String>,
    uid: u32,
}

impl Spares {
    /// The pool of queue `q`, for a process running as the current user.
    pub fn new(q: &Queue) -> Spares {
        Spares {
            dir: q.spare_dir(),
            names: Vec::new(),
            // SAFETY: geteuid cannot fail.
            uid: unsafe { libc::geteuid() },
        }
    }

    /// Takes a spare file and moves it to `dst` (a temporary name in the
    /// destination directory), opened for writing and truncated. `None`
    /// when the pool is empty (create a new file instead).
    pub fn take(&mut self, dst: &Path) -> Option<File> {
        for _ in 0..2 {
            if self.names.is_empty() {
                self.refill();
                if self.names.is_empty() {
                    return None;
                }
            }
            while let Some(name) = self.names.pop() {
                let src = self.dir.join(&name);
                if crate::write::rename_noreplace(&src, dst).is_err() {
                    continue; // taken by another writer, or gone
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(dst);
                match f {
                    Ok(f) => {
                        // Only our own plain files, private, one link.
                        let ok = f
                            .metadata()
                            .map(|m| {
                                m.is_file()
                                    && m.uid() == self.uid
                                    && m.nlink() == 1
                                    && m.mode() & 0o077 == 0
                            })
                            .unwrap_or(false);
                        if ok {
                            return Some(f);
                        }
                        let _ = std::fs::remove_file(dst);
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(dst);
                    }
                }
            }
        }
        None
    }

    fn refill(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        self.names = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .take(256)
            .collect();
    }
}

/// The queue manager's side: puts finished files into the pool while it is
/// below [`POOL_LIMIT`], else unlinks them.
#[derive(Debug)]
pub struct Recycler {
    dir: PathBuf,
    approx: usize,
    since_count: usize,
    next: u64,
}

impl Recycler {
    /// The recycler for queue `q`.
    pub fn new(q: &Queue) -> Recycler {
        let mut r = Recycler {
            dir: q.spare_dir(),
            approx: 0,
            since_count: 0,
            next: u64::from(std::process::id()) << 32,
        };
        r.count();
        r
    }

    fn count(&mut self) {
        self.approx = std::fs::read_dir(&self.dir)
            .map(|rd| rd.count())
            .unwrap_or(POOL_LIMIT);
        self.since_count = 0;
    }

    /// Retires the file at `path`: into the pool or unlinked.
    ///
    /// # Errors
    /// Neither worked (the file stays where it is).
    pub fn retire(&mut self, path: &Path) -> io::Result<()> {
        self.since_count += 1;
        if self.since_count >= 512 {
            self.count();
        }
        if self.approx < POOL_LIMIT && self.dir.is_dir() {
            self.next += 1;
            let dst = self.dir.join(format!("{:016x}", self.next));
            match crate::write::rename_noreplace(path, &dst) {
                Ok(()) => {
                    self.approx += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(_) => {}
            }
        }
        std::fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_round() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::new(d.path());
        q.ensure(None).unwrap();
        let mut rec = Recycler::new(&q);
        let active = q.path(crate::layout::QueueName::Active, "AAAAAAAAAAAA");
        std::fs::write(&active, b"old message").unwrap();
        std::fs::set_permissions(&active, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let ino = std::fs::metadata(&active).unwrap().ino();
        rec.retire(&active).unwrap();
        assert!(!active.exists());
        let mut sp = Spares::new(&q);
        let dst = q.dir(crate::layout::QueueName::Incoming).join(".tmp.x");
        let f = sp.take(&dst).expect("a spare file");
        assert_eq!(f.metadata().unwrap().len(), 0, "truncated");
        assert_eq!(f.metadata().unwrap().ino(), ino, "the same inode");
        assert!(
            sp.take(&q.dir(crate::layout::QueueName::Incoming).join(".tmp.y"))
                .is_none()
        );
        // A file others can read is not reused.
        let f2 = q.spare_dir().join("0000000000000001");
        std::fs::write(&f2, b"x").unwrap();
        std::fs::set_permissions(&f2, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(
            sp.take(&q.dir(crate::layout::QueueName::Incoming).join(".tmp.z"))
                .is_none()
        );
    }
}

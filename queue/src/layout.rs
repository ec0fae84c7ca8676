//! The queue directory: `maildrop/`, `incoming/`, `active/`, `deferred/`,
//! `hold/`, `corrupt/`, `private/` and `public/` sockets, `pid/`, and the
//! SQLite index `index.sqlite`.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The named queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    /// Local submissions waiting for pickup.
    Maildrop,
    /// New messages waiting for the queue manager.
    Incoming,
    /// Messages the queue manager is delivering.
    Active,
    /// Messages waiting for their next delivery attempt.
    Deferred,
    /// Messages put on hold by the administrator.
    Hold,
    /// Files that cannot be read, each with a `.reason` file.
    Corrupt,
}

impl QueueName {
    /// The directory name, also used in `postsuper` and `postqueue -j`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Maildrop => "maildrop",
            QueueName::Incoming => "incoming",
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Corrupt => "corrupt",
        }
    }

    /// Parses a queue name.
    pub fn parse(s: &str) -> Option<QueueName> {
        Self::ALL.iter().copied().find(|q| q.as_str() == s)
    }

    /// Every queue.
    pub const ALL: [QueueName; 6] = [
        QueueName::Maildrop,
        QueueName::Incoming,
        QueueName::Active,
        QueueName::Deferred,
        QueueName::Hold,
        QueueName::Corrupt,
    ];
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    /// `queue_directory`.
    pub root: PathBuf,
}

impl Queue {
    /// The queue at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Queue {
        Queue { root: root.into() }
    }

    /// The directory of a queue.
    pub fn dir(&self, q: QueueName) -> PathBuf {
        self.root.join(q.as_str())
    }

    /// The file of message `id` in queue `q`.
    pub fn path(&self, q: QueueName, id: &str) -> PathBuf {
        self.root.join(q.as_str()).join(id)
    }

    /// Directory of sockets only daemons use.
    pub fn private_dir(&self) -> PathBuf {
        self.root.join("private")
    }

    /// Directory of sockets any local user may use (wake-ups, flush).
    pub fn public_dir(&self) -> PathBuf {
        self.root.join("public")
    }

    /// Pool of recycled queue files (see [`crate::spare`]).
    pub fn spare_dir(&self) -> PathBuf {
        self.root.join("spare")
    }

    /// Directory of pid files.
    pub fn pid_dir(&self) -> PathBuf {
        self.root.join("pid")
    }

    /// The SQLite index.
    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }

    /// Creates missing directories with the right modes, owned by `owner`
    /// (uid, gid) when given (the caller is root). maildrop/ is 1733: anyone
    /// may create files, nobody else may list or read them; queues proper are
    /// 0700.
    ///
    /// # Errors
    /// The first directory that cannot be created or fixed.
    pub fn ensure(&self, owner: Option<(u32, u32)>) -> io::Result<()> {
        let mut dirs: Vec<(PathBuf, u32)> = vec![(self.root.clone(), 0o755)];
        for q in QueueName::ALL {
            let mode = if q == QueueName::Maildrop {
                0o1733
            } else {
                0o700
            };
            dirs.push((self.dir(q), mode));
        }
        dirs.push((self.private_dir(), 0o700));
        dirs.push((self.spare_dir(), 0o700));
        dirs.push((self.public_dir(), 0o755));
        dirs.push((self.pid_dir(), 0o755));
        for (d, mode) in dirs {
            match std::fs::DirBuilder::new().mode(mode).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("create {}: {e}", d.display()),
                    ));
                }
            }
            let meta = std::fs::metadata(&d)?;
            if meta.permissions().mode() & 0o7777 != mode {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io::Error::new(e.kind(), format!("chmod {}: {e}", d.display())))?;
            }
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&d, Some(uid), Some(gid))
                    .map_err(|e| io::Error::new(e.kind(), format!("chown {}: {e}", d.display())))?;
            }
        }
        Ok(())
    }

    /// Moves message `id` between queues (one rename).
    ///
    /// # Errors
    /// The file is missing or the rename fails.
    pub fn move_to(&self, id: &str, from: QueueName, to: QueueName) -> io::Result<()> {
        std::fs::rename(self.path(from, id), self.path(to, id))
    }

    /// Moves an unreadable file to `corrupt/` and writes `<name>.reason`
    /// beside it, so the admin can see why. Returns the new path.
    ///
    /// # Errors
    /// The rename fails (the file stays where it was).
    pub fn to_corrupt(&self, path: &Path, reason: &str) -> io::Result<PathBuf> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".into());
        let mut dst = self.dir(QueueName::Corrupt).join(&name);
        let mut n = 1;
        while dst.exists() {
            dst = self.dir(QueueName::Corrupt).join(format!("{name}.{n}"));
            n += 1;
        }
        std::fs::rename(path, &dst)?;
        let mut reason_path = dst.clone().into_os_string();
        reason_path.push(".reason");
        let text = format!(
            "{}\nfrom: {}\nmoved: {}\n",
            reason.trim_end(),
            path.display(),
            crate::time::rfc2822_date(std::time::SystemTime::now())
        );
        let _ = std::fs::write(&reason_path, text);
        Ok(dst)
    }

    /// Names of the message files in a queue directory (temporary dot-files
    /// and `.reason` files are skipped).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn list(&self, q: QueueName) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir(q))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".reason") {
                continue;
            }
            out.push(name);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_creates_with_modes_and_corrupt_keeps_reason() {
        let t = tempfile::tempdir().unwrap();
        let q = Queue::new(t.path().join("spool"));
        q.ensure(None).unwrap();
        q.ensure(None).unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(q.dir(QueueName::Maildrop)), 0o1733);
        assert_eq!(mode(q.dir(QueueName::Deferred)), 0o700);
        let f = q.path(QueueName::Incoming, "ABCDEF012345");
        std::fs::write(&f, "garbage").unwrap();
        let c = q.to_corrupt(&f, "bad magic").unwrap();
        assert!(c.exists() && !f.exists());
        let reason = std::fs::read_to_string(format!("{}.reason", c.display())).unwrap();
        assert!(reason.starts_with("bad magic\n"));
        assert_eq!(
            q.list(QueueName::Corrupt).unwrap(),
            vec!["ABCDEF012345".to_string()]
        );
    }
}

//! Files holding secrets: reading them with DESIGN §7's permission check,
//! replacing them atomically, and the lock files of the token cache.

use super::error::OAuthError;
use proto::sasl::Secret;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The group allowed to read secret files (see
/// [`conf::passwd::check_permissions`]): as root, `mail_owner`'s group
/// (the delivery agents read them after giving up root); otherwise the
/// process's own group.
pub(crate) fn readers_gid(cfg: &conf::Config) -> Option<u32> {
    if nix::unistd::geteuid().is_root() {
        crate::service::mail_owner_ids(cfg).ok().map(|(_, g)| g)
    } else {
        Some(nix::unistd::getegid().as_raw())
    }
}

/// Reads a secret (client secret, refresh token) from `path` after checking
/// its owner and mode; surrounding white space is dropped.
///
/// # Errors
/// The file is missing, unsafe, unreadable or empty; the message names the
/// file and the fix, never the contents.
pub(crate) fn read_secret(
    path: &Path,
    readers_gid: Option<u32>,
    what: &str,
) -> Result<Secret, OAuthError> {
    let bytes = read_checked(path, readers_gid, what)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        OAuthError::file(
            path,
            format!("{}: the {what} is not UTF-8 text", path.display()),
        )
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(OAuthError::file(
            path,
            format!("{}: the {what} file is empty", path.display()),
        ));
    }
    Ok(Secret::new(trimmed))
}

/// Reads a file holding secrets (a private key) after checking its owner
/// and mode.
///
/// # Errors
/// As [`read_secret`].
pub(crate) fn read_checked(
    path: &Path,
    readers_gid: Option<u32>,
    what: &str,
) -> Result<Vec<u8>, OAuthError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(OAuthError::file(
                path,
                format!("{}: no such file (the {what})", path.display()),
            ));
        }
        _ => {}
    }
    conf::passwd::check_permissions(path, readers_gid).map_err(|m| OAuthError::file(path, m))?;
    std::fs::read(path).map_err(|e| {
        OAuthError::file(
            path,
            format!("{}: cannot read the {what}: {e}", path.display()),
        )
    })
}

/// Reads a file of the token cache: a regular file (no symbolic link),
/// accessible by its owner only. `Ok(None)` when it does not exist.
pub(crate) fn read_private(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    if !m.is_file() || m.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: not a regular file with mode 0600; remove it",
                path.display()
            ),
        ));
    }
    let mut buf = Vec::new();
    f.take(1 << 20).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// Creates `dir` (mode 0700) when missing and gives it to `owner`.
pub(crate) fn ensure_dir(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Replaces `target` atomically: a new file in the same directory,
/// created with mode 0600, given `owner` (uid, gid) and then `mode`,
/// written, fsynced, renamed over `target`, and the directory fsynced.
/// Until the rename, `target` is untouched; after it, the new contents
/// survive a crash.
///
/// # Errors
/// Any failure, including an owner that cannot be set; the temporary file
/// is then removed and `target` is as it was.
pub(crate) fn replace(
    target: &Path,
    contents: &[u8],
    owner: Option<(u32, u32)>,
    mode: u32,
) -> io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", crate::id::random_name()));
    let tmp = dir.join(tmp_name);
    // O_EXCL refuses a planted file or link; mode 0600 from the start, so
    // the secret is never readable by others, not even for a moment.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    let result = (|| {
        if let Some((uid, gid)) = owner {
            let m = f.metadata()?;
            if m.uid() != uid || m.gid() != gid {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        // The rename is durable only once the directory is on disk.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock` on a lock file, released when dropped.
pub(crate) type Lock = nix::fcntl::Flock<File>;

/// Takes an exclusive lock on `path` (created 0600 for `owner` when
/// missing), waiting at most `wait`. `flock` locks belong to the open file,
/// so two threads, two caches in one process, and two processes all
/// exclude each other.
///
/// # Errors
/// The file cannot be opened, or the lock is still held after `wait`
/// (`TimedOut`).
pub(crate) fn lock(path: &Path, owner: Option<(u32, u32)>, wait: Duration) -> io::Result<Lock> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        let m = f.metadata()?;
        if m.uid() != uid {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
    }
    let until = Instant::now() + wait;
    let mut pause = Duration::from_millis(2);
    let mut f = f;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= until {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{}: still locked after {} s",
                            path.display(),
                            wait.as_secs()
                        ),
                    ));
                }
                f = back;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err((_, e)) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_old_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        replace(&p, b"one", None, 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        // An owner that cannot be set (as root every owner can, so use a
        // target whose rename must fail instead).
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("x"), b"keep").unwrap();
        assert!(replace(&sub, b"two", None, 0o600).is_err());
        assert_eq!(std::fs::read(sub.join("x")).unwrap(), b"keep");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn private_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        assert!(read_private(&p).unwrap().is_none());
        replace(&p, b"x", None, 0o600).unwrap();
        assert_eq!(read_private(&p).unwrap().unwrap(), b"x");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private(&p).is_err());
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(read_private(&l).is_err(), "links are refused");
    }

    #[test]
    fn secrets_are_checked_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let gid = Some(nix::unistd::getegid().as_raw());
        let e = read_secret(&p, gid, "client secret")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file (the client secret)"), "{e}");
        replace(&p, b"  s3cret\n", None, 0o600).unwrap();
        assert_eq!(
            read_secret(&p, gid, "client secret").unwrap().expose(),
            "s3cret"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p, gid, "client secret")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        replace(&p, b"\n", None, 0o600).unwrap();
        let e = read_secret(&p, gid, "client secret")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn locks_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let held = lock(&p, None, Duration::from_secs(1)).unwrap();
        let e = lock(&p, None, Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(held);
        assert!(lock(&p, None, Duration::from_millis(30)).is_ok());
    }
}

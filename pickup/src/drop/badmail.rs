//! The badmail directory (IIS Badmail): refused drop files are renamed into
//! it, never copied and never followed, each with a `<name>.reason` file
//! that says why. A name already taken gets a `.1`, `.2`, ... suffix, so a
//! refused file never replaces another one.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the reason file says besides the reason.
#[derive(Debug, Default)]
pub struct Details {
    /// The file's owner.
    pub uid: Option<u32>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// For a symbolic link, where it points (read, never followed).
    pub link_target: Option<PathBuf>,
}

impl Details {
    /// Details from `lstat` of `path`.
    pub fn of(path: &Path) -> Details {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return Details::default();
        };
        Details {
            uid: Some(m.uid()),
            size: m.file_type().is_file().then_some(m.len()),
            link_target: if m.file_type().is_symlink() {
                std::fs::read_link(path).ok()
            } else {
                None
            },
        }
    }
}

/// Renames `dir/name` into `badmail` under a free name and writes the
/// reason file beside it; returns the new path.
///
/// # Errors
/// The rename fails (e.g. `EXDEV`: badmail is on another file system);
/// the file then stays where it was.
pub fn move_to_badmail(
    dir: &Path,
    name: &OsStr,
    shown_name: &OsStr,
    badmail: &Path,
    reason: &str,
    details: &Details,
) -> io::Result<PathBuf> {
    let src = dir.join(name);
    let dst = rename_free(&src, badmail, shown_name)?;
    write_reason(&dst, &dir.join(shown_name), reason, details);
    Ok(dst)
}

/// Renames `src` to `badmail/<name>` or the first free `<name>.N`.
fn rename_free(src: &Path, badmail: &Path, name: &OsStr) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let mut candidate = OsString::from(name);
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        let dst = badmail.join(&candidate);
        if std::fs::symlink_metadata(reason_path(&dst)).is_ok() {
            continue;
        }
        match queue::write::rename_noreplace(src, &dst) {
            Ok(()) => return Ok(dst),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name in the badmail directory"))
}

/// `<path>.reason`.
pub fn reason_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".reason");
    PathBuf::from(p)
}

/// Writes `<dst>.reason` (mode 0640, never through a symlink) and makes
/// both names durable. A reason that cannot be written is logged: the
/// refused file itself is already safe in badmail.
fn write_reason(dst: &Path, from: &Path, reason: &str, d: &Details) {
    let mut text = format!("{}\nfrom: {}\n", reason.trim_end(), from.display());
    if let Some(uid) = d.uid {
        match crate::scan::login_name(uid) {
            Some(n) => text.push_str(&format!("owner: uid {uid} ({n})\n")),
            None => text.push_str(&format!("owner: uid {uid}\n")),
        }
    }
    if let Some(size) = d.size {
        text.push_str(&format!("size: {size}\n"));
    }
    if let Some(t) = &d.link_target {
        text.push_str(&format!(
            "symbolic link to: {} (not followed)\n",
            t.display()
        ));
    }
    text.push_str(&format!(
        "moved: {}\n",
        queue::time::rfc2822_date(SystemTime::now())
    ));
    let path = reason_path(dst);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        queue::log::warning(&format!("cannot write {}: {e}", path.display()));
    }
    if let Some(parent) = dst.parent() {
        let _ = queue::write::fsync_dir(parent);
    }
}

/// Saves the content of an open file into badmail as a new file (used when
/// a drop file grew after it was read and removed: its writer still had it
/// open); returns the new path.
///
/// # Errors
/// Create, copy or fsync errors.
pub fn save_copy(
    file: &mut std::fs::File,
    badmail: &Path,
    shown_name: &OsStr,
    from: &Path,
    reason: &str,
    details: &Details,
) -> io::Result<PathBuf> {
    use std::io::Seek;
    for n in 0..10_000u32 {
        let mut candidate = OsString::from(shown_name);
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        let dst = badmail.join(&candidate);
        if std::fs::symlink_metadata(reason_path(&dst)).is_ok() {
            continue;
        }
        let mut out = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&dst)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        file.seek(io::SeekFrom::Start(0))?;
        io::copy(file, &mut out)?;
        out.sync_all()?;
        write_reason(&dst, from, reason, details);
        return Ok(dst);
    }
    Err(io::Error::other("no free name in the badmail directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide_and_reasons_are_written() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        let bad = t.path().join("badmail");
        std::fs::create_dir(&drop).unwrap();
        std::fs::create_dir(&bad).unwrap();
        for round in 0..3 {
            std::fs::write(drop.join("scan.eml"), format!("round {round}")).unwrap();
            let d = Details::of(&drop.join("scan.eml"));
            let name = OsStr::new("scan.eml");
            let dst = move_to_badmail(&drop, name, name, &bad, "no recipients", &d).unwrap();
            let want = if round == 0 {
                "scan.eml".to_string()
            } else {
                format!("scan.eml.{round}")
            };
            assert_eq!(dst, bad.join(&want));
            assert_eq!(
                std::fs::read_to_string(&dst).unwrap(),
                format!("round {round}")
            );
            let reason = std::fs::read_to_string(reason_path(&dst)).unwrap();
            assert!(reason.starts_with("no recipients\nfrom: "), "{reason}");
            assert!(reason.contains("\nsize: 7\n"), "{reason}");
        }
        // A file whose own name ends in .reason does not take another's reason.
        std::fs::write(drop.join("x"), "x").unwrap();
        std::fs::write(bad.join("x.reason"), "someone else's").unwrap();
        let n = OsStr::new("x");
        let dst = move_to_badmail(&drop, n, n, &bad, "r", &Details::default()).unwrap();
        assert_eq!(dst, bad.join("x.1"));
    }

    #[test]
    fn a_symlink_moves_as_a_link() {
        let t = tempfile::tempdir().unwrap();
        let drop = t.path().join("drop");
        let bad = t.path().join("badmail");
        std::fs::create_dir(&drop).unwrap();
        std::fs::create_dir(&bad).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", drop.join("s")).unwrap();
        let d = Details::of(&drop.join("s"));
        let n = OsStr::new("s");
        let dst = move_to_badmail(&drop, n, n, &bad, "a symbolic link", &d).unwrap();
        assert!(
            std::fs::symlink_metadata(&dst)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let reason = std::fs::read_to_string(reason_path(&dst)).unwrap();
        assert!(reason.contains("symbolic link to: /etc/shadow (not followed)"));
    }
}

//! The `maildir` transport: delivery into a Maildir (the next hop is its
//! path) instead of SMTP, one file per recipient, the way Postfix's local(8)
//! writes Maildirs: `Return-Path:` and `Delivered-To:` prepended, LF line
//! ends, written in `tmp/` under a unique name, fsynced, renamed into
//! `new/`, and the directory fsynced, so a delivered message survives a
//! crash.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a maildir delivery failed: the operation and path, and the OS error.
#[derive(Debug)]
pub struct MaildirError {
    /// What was being done, e.g. `create maildir file /x/tmp/...`.
    pub what: String,
    /// The OS error.
    pub err: io::Error,
}

impl MaildirError {
    /// The enhanced status code: a full disk or quota is 4.2.2, anything
    /// else 4.2.0 (both defer: a Maildir problem is for the admin to fix).
    pub fn dsn(&self) -> &'static str {
        match self.err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => "4.2.2",
            _ => "4.2.0",
        }
    }
}

impl std::fmt::Display for MaildirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self.err.raw_os_error() {
            Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
            None => self.err.to_string(),
        };
        write!(f, "{}: {text}", self.what)
    }
}

fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, MaildirError> {
    r.map_err(|err| MaildirError { what: what(), err })
}

/// Creates `dir` and its `tmp/`, `new/` and `cur/` (mode 0700) if missing.
///
/// # Errors
/// The directory that could not be created.
pub fn ensure(dir: &Path) -> Result<(), MaildirError> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["", "tmp", "new", "cur"] {
        let d = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        ctx(b.create(&d), || {
            format!("create maildir directory {}", d.display())
        })?;
    }
    Ok(())
}

/// A unique file name: `<secs>.M<usec>P<pid>Q<n>.<host>`, with `/` and `:`
/// in the host name escaped as `\057` and `\072` (the Maildir convention).
pub fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let host = host.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host
    )
}

/// The file content: the two delivery headers, then the message with CRLF
/// turned into LF.
pub fn render(sender: &str, rcpt: &str, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 128);
    out.extend_from_slice(format!("Return-Path: <{sender}>\nDelivered-To: {rcpt}\n").as_bytes());
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(content[i]);
        i += 1;
    }
    out
}

/// Delivers one copy for `rcpt` into the Maildir `dir`; returns the path
/// in `new/`.
///
/// # Errors
/// The step that failed, with the OS error.
pub fn deliver(
    dir: &Path,
    host: &str,
    sender: &str,
    rcpt: &str,
    content: &[u8],
) -> Result<PathBuf, MaildirError> {
    ensure(dir)?;
    let name = unique_name(host);
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let data = render(sender, rcpt, content);
    let written = (|| {
        let mut f = ctx(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp),
            || format!("create maildir file {}", tmp.display()),
        )?;
        ctx(f.write_all(&data), || {
            format!("write maildir file {}", tmp.display())
        })?;
        ctx(f.sync_all(), || {
            format!("fsync maildir file {}", tmp.display())
        })?;
        ctx(std::fs::rename(&tmp, &new), || {
            format!("rename maildir file {} to {}", tmp.display(), new.display())
        })?;
        let d = ctx(File::open(dir.join("new")), || {
            format!("open {}", dir.join("new").display())
        })?;
        ctx(d.sync_all(), || {
            format!("fsync {}", dir.join("new").display())
        })
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn delivers_one_file_per_recipient_into_new() {
        let root = tempfile::tempdir().unwrap();
        let md = root.path().join("Maildir");
        let content = b"From: a@example.com\r\nSubject: hi\r\n\r\nline one\r\n.dot line\r\n";
        let p1 = deliver(
            &md,
            "relay.example:1",
            "a@example.com",
            "bob@example.com",
            content,
        )
        .unwrap();
        let p2 = deliver(
            &md,
            "relay.example:1",
            "a@example.com",
            "carol@example.com",
            content,
        )
        .unwrap();
        assert_ne!(p1, p2);
        for sub in ["tmp", "new", "cur"] {
            let mode = std::fs::metadata(md.join(sub))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700, "{sub}");
        }
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
        let text = std::fs::read_to_string(&p1).unwrap();
        assert_eq!(
            text,
            "Return-Path: <a@example.com>\nDelivered-To: bob@example.com\nFrom: a@example.com\nSubject: hi\n\nline one\n.dot line\n"
        );
        let name = p1.file_name().unwrap().to_str().unwrap().to_string();
        let (secs, rest) = name.split_once(".M").unwrap();
        assert!(secs.parse::<u64>().is_ok());
        assert!(
            rest.contains(&format!("P{}Q", std::process::id())),
            "{name}"
        );
        assert!(name.ends_with(".relay.example\\0721"), "{name}");
        assert_eq!(
            std::fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn failures_name_the_step_and_the_os_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("plainfile");
        std::fs::write(&file, b"x").unwrap();
        let e = deliver(&file.join("Maildir"), "h", "", "bob@example.com", b"x").unwrap_err();
        assert!(
            e.to_string().starts_with("create maildir directory "),
            "{e}"
        );
        assert!(e.to_string().ends_with(": Not a directory"), "{e}");
        assert_eq!(e.dsn(), "4.2.0");
    }
}

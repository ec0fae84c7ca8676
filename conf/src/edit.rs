//! main.cf editing as `postconf -e`, `postconf -X` and `postconf -#` do it:
//! every setting of a named parameter is replaced, removed or commented out
//! in place (with its continuation lines), and every other byte of the file
//! (comments, blank lines, other settings) is kept. Comment lines between a
//! setting's continuation lines stay, as with Postfix.
//!
//! [`write_atomically`] puts the result in place without a window in which
//! the file is missing or half written.

use crate::maincf::is_space;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// What to do with the settings of a name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Set,
    Remove,
    CommentOut,
}

/// Validates a `postconf -e` argument `name=value` (spaces around `=` are
/// allowed) and splits it.
///
/// # Errors
/// Multi-line input, a comment, a missing `=` or a bad name, in words.
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let t = check_single_line(arg)?;
    let Some((name, value)) = t.split_once('=') else {
        return Err(format!(
            "missing '=' after parameter name: \"{t}\" (expected name=value)"
        ));
    };
    let name = name.trim();
    check_name(name)?;
    Ok((name.to_string(), value.trim().to_string()))
}

/// Validates a `postconf -X` or `postconf -#` argument (a parameter name).
///
/// # Errors
/// Multi-line input, a comment, a value, or a bad name, in words.
pub fn parse_name(arg: &str) -> Result<String, String> {
    let t = check_single_line(arg)?.trim();
    if t.contains('=') {
        return Err(format!(
            "-X or -# requires parameter names without value: \"{t}\""
        ));
    }
    check_name(t)?;
    Ok(t.to_string())
}

fn check_single_line(arg: &str) -> Result<&str, String> {
    if arg.contains(['\n', '\r']) {
        return Err("-e, -X, or -# accepts no multi-line input".into());
    }
    let t = arg.trim_start();
    if t.starts_with('#') {
        return Err("-e, -X, or -# accepts no comment input".into());
    }
    Ok(t)
}

fn check_name(name: &str) -> Result<(), String> {
    if crate::maincf::valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "bad parameter name \"{name}\": names use letters, digits and '_' only"
        ))
    }
}

/// `postconf -e`: sets each `(name, value)`. Every existing setting of the
/// name (first line and continuation lines) becomes `name = value` in
/// place; names not yet set are appended at the end, sorted by name. When
/// `updates` names a parameter twice, the last value wins. Values should be
/// single lines ([`parse_assignment`] checks); line breaks in them are
/// turned into spaces so the file stays well formed.
pub fn set_params(text: &str, updates: &[(String, String)]) -> String {
    let mut table: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (name, value) in updates {
        table.insert(name.as_str(), Some(value.replace(['\r', '\n'], " ")));
    }
    edit(text, &table, Mode::Set)
}

/// `postconf -X`: removes every setting of each name, with its
/// continuation lines.
pub fn remove_params<S: AsRef<str>>(text: &str, names: &[S]) -> String {
    let table = names.iter().map(|n| (n.as_ref(), None)).collect();
    edit(text, &table, Mode::Remove)
}

/// `postconf -#`: comments out every setting of each name by putting `#`
/// in front of its first line and of each continuation line.
pub fn comment_out_params<S: AsRef<str>>(text: &str, names: &[S]) -> String {
    let table = names.iter().map(|n| (n.as_ref(), None)).collect();
    edit(text, &table, Mode::CommentOut)
}

fn edit(text: &str, table: &BTreeMap<&str, Option<String>>, mode: Mode) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut found: BTreeMap<&str, bool> = BTreeMap::new();
    // True while inside the continuation lines of a setting being edited.
    let mut editing = false;
    for line in text.split_inclusive('\n') {
        let content = line.trim_start_matches(is_space);
        if content.trim_end_matches(is_space).is_empty() || content.starts_with('#') {
            out.push_str(line);
            continue;
        }
        if line.len() != content.len() {
            // A continuation line.
            match (editing, mode) {
                (false, _) => out.push_str(line),
                (true, Mode::CommentOut) => {
                    out.push('#');
                    out.push_str(line);
                }
                (true, _) => {}
            }
            continue;
        }
        let end = line
            .find(|c: char| is_space(c) || c == '=')
            .unwrap_or(line.len());
        let Some((&name, value)) = table.get_key_value(&line[..end]) else {
            editing = false;
            out.push_str(line);
            continue;
        };
        editing = true;
        found.insert(name, true);
        match mode {
            Mode::Set => {
                let eol = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
                out.push_str(&format!("{name} = {}{eol}", value.as_deref().unwrap_or("")));
            }
            Mode::Remove => {}
            Mode::CommentOut => {
                out.push('#');
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    if mode == Mode::Set {
        for (name, value) in table {
            if found.contains_key(name) {
                continue;
            }
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("{name} = {}\n", value.as_deref().unwrap_or("")));
        }
    }
    out
}

/// Replaces the file at `path` with `text` without a moment where it is
/// missing or partly written: writes a temporary file in the same
/// directory, fsyncs it, renames it over `path` and fsyncs the directory.
/// The file keeps its permission bits and, where allowed, its owner and
/// group; a new file gets mode 0644. A symbolic link is followed: its target
/// is replaced and the link stays.
///
/// # Errors
/// Any I/O failure; the original file is then untouched and the temporary
/// file removed.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let target = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = target.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path names no file")
    })?;
    let original = std::fs::metadata(&target).ok();
    // A name unique to this process and call; O_EXCL refuses anything
    // already there (a stale file or a planted link).
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".postern-tmp.{}.{seq}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;

    let result = (|| {
        f.write_all(text.as_bytes())?;
        match &original {
            Some(m) => {
                // Keeping the owner needs privileges; an ordinary user keeps
                // the file as their own, as with any editor.
                if m.uid() != current_uid() || m.gid() != current_gid() {
                    let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
                }
                f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            }
            None => f.set_permissions(std::fs::Permissions::from_mode(0o644))?,
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // The rename is durable only once the directory is on disk.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn current_uid() -> u32 {
    // SAFETY: getuid() has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getgid() has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

#[cfg(test)]
mod tests;

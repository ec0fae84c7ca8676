//! The delegated refresh token: read from `smtp_oauth2_refresh_token_file`
//! and replaced by the rotated one each refresh returns.
//!
//! The new token replaces the file atomically, keeping its owner and mode
//! (0600, or 0640 for a root-owned file that `mail_owner`'s group reads):
//! the old token is never lost, whatever fails. A delivery agent running as
//! `mail_owner` usually may not replace a root-owned file in
//! `/etc/postern`; it then keeps the rotated token in the token cache
//! directory instead (`rt-<hash of the path>.json`, mode 0600), marked with
//! the SHA-256 of the file contents it supersedes. That copy is used while
//! the file still holds those contents; a new `postern oauth2 login`
//! changes the file and so wins.

use super::account::hex;
use super::error::OAuthError;
use super::files;
use proto::sasl::Secret;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the refresh token in use came from.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The configured file.
    pub file: PathBuf,
    /// SHA-256 (hex) of the configured file's token.
    base: String,
    /// The token came from the rotated copy in the cache directory (the
    /// file could not be replaced before), not from the file.
    pub from_copy: bool,
}

/// Where a rotated token was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// In the configured file.
    File,
    /// In the cache directory, because the file could not be replaced
    /// (the reason).
    Cache(PathBuf, String),
}

/// The rotated copy of `file`'s token in `cache_dir`.
fn rotated_path(cache_dir: &Path, file: &Path) -> PathBuf {
    let h = hex(&openssl::sha::sha256(file.as_os_str().as_encoded_bytes()));
    cache_dir.join(format!("rt-{h}.json"))
}

fn digest(token: &str) -> String {
    hex(&openssl::sha::sha256(token.as_bytes()))
}

/// The refresh token to use: the rotated copy when it supersedes the
/// file's current token, else the file's.
///
/// # Errors
/// The configured file is missing, unsafe or empty.
pub(crate) fn load(
    file: &Path,
    cache_dir: &Path,
    readers_gid: Option<u32>,
) -> Result<(Secret, Source), OAuthError> {
    let configured =
        files::read_secret(file, readers_gid, "refresh token").map_err(|e| match e {
            OAuthError::File { path, message } if !path.exists() => OAuthError::File {
                message: format!(
                    "{message}; sign in once with postern oauth2 login USER to create it"
                ),
                path,
            },
            other => other,
        })?;
    let mut source = Source {
        file: file.to_path_buf(),
        base: digest(configured.expose()),
        from_copy: false,
    };
    let rotated = files::read_private(&rotated_path(cache_dir, file))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|j| j["replaces"].as_str() == Some(source.base.as_str()))
        .and_then(|j| j["refresh_token"].as_str().map(Secret::new))
        .filter(|s| !s.expose().is_empty());
    source.from_copy = rotated.is_some();
    Ok((rotated.unwrap_or(configured), source))
}

/// Stores `new`, the token that replaces the one read from `source`: in the
/// configured file if it can be replaced with its owner and mode kept,
/// else in the cache directory (created for `cache_owner`).
///
/// # Errors
/// Neither place could be written (both reasons); the previous token is
/// still where it was.
pub(crate) fn store(
    new: &Secret,
    source: &Source,
    cache_dir: &Path,
    cache_owner: Option<(u32, u32)>,
) -> Result<Stored, String> {
    // Replace what a symbolic link points to, keeping the link.
    let file = &std::fs::canonicalize(&source.file).unwrap_or_else(|_| source.file.clone());
    let rotated = rotated_path(cache_dir, &source.file);
    let contents = format!("{}\n", new.expose());
    let direct = std::fs::metadata(file).and_then(|m| {
        let mode = (m.mode() & 0o640) | 0o600;
        files::replace(file, contents.as_bytes(), Some((m.uid(), m.gid())), mode)
    });
    let why = match direct {
        Ok(()) => {
            // The copy, if any, now supersedes nothing.
            let _ = std::fs::remove_file(&rotated);
            return Ok(Stored::File);
        }
        Err(e) => format!("{}: {e}", file.display()),
    };
    if !cache_dir.is_absolute() {
        return Err(format!("{why}; no token cache directory to keep it in"));
    }
    let record = serde_json::json!({
        "replaces": source.base,
        "refresh_token": new.expose(),
    });
    files::ensure_dir(cache_dir, cache_owner)
        .and_then(|()| files::replace(&rotated, record.to_string().as_bytes(), cache_owner, 0o600))
        .map(|()| Stored::Cache(rotated.clone(), why.clone()))
        .map_err(|e| format!("{why}; {}: {e}", rotated.display()))
}

/// Writes the token of a new sign-in to `original` (or where it links
/// to): as root `root:<group>` mode 0640 when `group` is given (the
/// delivery agents read it as `mail_owner`), else the caller's own with
/// mode 0600. Any rotated copy of the previous token is dropped.
///
/// # Errors
/// The file cannot be written; the previous one is then untouched.
pub(crate) fn write_new(
    original: &Path,
    token: &Secret,
    group: Option<u32>,
    cache_dir: &Path,
) -> std::io::Result<()> {
    let contents = format!("{}\n", token.expose());
    let file = &std::fs::canonicalize(original).unwrap_or_else(|_| original.to_path_buf());
    match group {
        Some(g) if nix::unistd::geteuid().is_root() => {
            files::replace(file, contents.as_bytes(), Some((0, g)), 0o640)?
        }
        _ => files::replace(file, contents.as_bytes(), None, 0o600)?,
    }
    let _ = std::fs::remove_file(rotated_path(cache_dir, original));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rotation_replaces_the_file_keeping_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let rt = dir.path().join("rt");
        let gid = Some(nix::unistd::getegid().as_raw());
        files::replace(&rt, b"old-token\n", None, 0o640).unwrap();
        let before = std::fs::metadata(&rt).unwrap();
        let (tok, src) = load(&rt, &cache, gid).unwrap();
        assert_eq!(tok.expose(), "old-token");
        assert_eq!(
            store(&Secret::new("new-token"), &src, &cache, None),
            Ok(Stored::File)
        );
        let after = std::fs::metadata(&rt).unwrap();
        assert_eq!(std::fs::read_to_string(&rt).unwrap(), "new-token\n");
        assert_eq!(after.mode() & 0o7777, 0o640, "mode kept");
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(after.ino(), before.ino(), "replaced by rename");
        assert!(!cache.exists(), "nothing in the cache directory");
    }

    #[test]
    fn rotated_copy_when_the_file_cannot_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let rt = etc.join("rt");
        let gid = Some(nix::unistd::getegid().as_raw());
        files::replace(&rt, b"first\n", None, 0o600).unwrap();
        let (_, src) = load(&rt, &cache, gid).unwrap();
        // The file's directory disappears: replacing it fails (as root,
        // permissions cannot make it fail).
        std::fs::remove_dir_all(&etc).unwrap();
        let stored = store(&Secret::new("second"), &src, &cache, None).unwrap();
        let Stored::Cache(copy, why) = stored else {
            panic!("{stored:?}")
        };
        assert!(why.contains("etc/rt"), "{why}");
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(!why.contains("second"));
        // The file is back with the same token: the rotated copy wins.
        std::fs::create_dir(&etc).unwrap();
        files::replace(&rt, b"first\n", None, 0o600).unwrap();
        assert!(!src.from_copy);
        let (tok, src2) = load(&rt, &cache, gid).unwrap();
        assert_eq!(tok.expose(), "second");
        assert!(src2.from_copy);
        // Rotating again keeps the link to the file's token.
        std::fs::remove_dir_all(&etc).unwrap();
        store(&Secret::new("third"), &src2, &cache, None).unwrap();
        std::fs::create_dir(&etc).unwrap();
        files::replace(&rt, b"first\n", None, 0o600).unwrap();
        assert_eq!(load(&rt, &cache, gid).unwrap().0.expose(), "third");
        // A new sign-in writes the file: the file wins from then on.
        write_new(&rt, &Secret::new("fresh"), None, &cache).unwrap();
        assert_eq!(load(&rt, &cache, gid).unwrap().0.expose(), "fresh");
        assert!(!copy.exists());
    }

    #[test]
    fn missing_file_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&dir.path().join("rt"), dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("postern oauth2 login"), "{e}");
    }
}

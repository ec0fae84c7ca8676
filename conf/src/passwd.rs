//! postern's own user file for inbound SMTP AUTH (`smtpd_sasl_password_file`,
//! default `$config_directory/smtpd_passwd`), managed with `postern passwd`.
//!
//! # Format
//! One `user:hash` per line; lines starting with `#` are comments; blank
//! lines are ignored, and so is white space around a line. User names are
//! SASL user names compared exactly (case-sensitive), often mail addresses;
//! they must not contain `:`, white space or control characters, nor start
//! with `#`.
//!
//! # Hashes
//! - `$scrypt$ln=14,r=8,p=1$SALT$HASH`, written by postern: scrypt
//!   (RFC 7914) through OpenSSL with N = 2^ln, SALT (16 random bytes) and
//!   HASH (32 bytes) in unpadded standard base64 — the PHC string format, so
//!   the cost can be raised later while old lines keep working. ln=14 r=8
//!   takes 16 MiB and about 40–80 ms on a small server.
//! - crypt(3) hashes migrated from `/etc/shadow` or `htpasswd -B`, checked
//!   by the system's libcrypt (libxcrypt, `crypt_r`): `$y$` (yescrypt),
//!   `$6$` (SHA-512), `$5$` (SHA-256), `$2b$` and `$2y$` (bcrypt). Weaker
//!   formats (DES, `$1$`, `$apr1$`) are refused.
//!
//! Errors name the file and line and never quote a hash or a password.
//!
//! # Permissions
//! The file holds password hashes. smtpd reads it after dropping privileges,
//! as `mail_owner`, so as root the file is `root:<mail_owner's group>` mode
//! 0640; for an ordinary user (tests, a private instance) it is the user's
//! own, mode 0600. [`check_permissions`] enforces this (DESIGN §7).
//! [`set_user`] and [`remove_user`] rewrite the file atomically under a
//! lock, keeping comments and other lines byte for byte.

use crate::{Error, Origin};
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// scrypt cost of new hashes: N = 2^14, r = 8, p = 1 (16 MiB).
const DEFAULT_PARAMS: ScryptParams = ScryptParams { ln: 14, r: 8, p: 1 };
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Most memory one scrypt line may make a verification use; a larger cost
/// in the file is refused at load, so a bad line cannot exhaust memory.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// Longest accepted user name and password, in bytes.
const MAX_USER_LEN: usize = 256;
const MAX_PASSWORD_LEN: usize = 1024;

/// The comment at the top of a file made by [`create_file`].
const HEADER: &str = "# postern SMTP AUTH users (smtpd_sasl_password_file): one user:hash per line.\n\
# Manage with postern passwd add|delete|list|check; smtpd notices changes by itself.\n";

#[derive(Clone, Copy, PartialEq, Eq)]
struct ScryptParams {
    ln: u8,
    r: u32,
    p: u32,
}

impl ScryptParams {
    /// (N, maxmem) for OpenSSL, which needs 128·r·(N+2) + 128·r·p bytes.
    fn n_and_maxmem(self) -> (u64, u64) {
        let n = 1u64 << self.ln;
        let r = u64::from(self.r);
        let p = u64::from(self.p);
        (n, 128 * r * (n + 2) + 128 * r * p + 4096)
    }

    fn derive(self, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
        let (n, maxmem) = self.n_and_maxmem();
        openssl::pkcs5::scrypt(
            password,
            salt,
            n,
            u64::from(self.r),
            u64::from(self.p),
            maxmem,
            out,
        )
        .is_ok()
    }
}

/// One stored hash. No `Debug`: it must never reach a log.
enum Hash {
    Scrypt {
        params: ScryptParams,
        salt: Vec<u8>,
        key: Vec<u8>,
    },
    Crypt(CString),
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, &'static str> {
        if let Some(rest) = s.strip_prefix("$scrypt$") {
            return parse_scrypt(rest);
        }
        const CRYPT_PREFIXES: &[&str] = &["$y$", "$6$", "$5$", "$2b$", "$2y$"];
        if CRYPT_PREFIXES.iter().any(|p| s.starts_with(p)) {
            let ok = s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"$./=,+-".contains(&b));
            if !crypt_cost_ok(s) {
                return Err(
                    "crypt(3) hash cost too high (bcrypt cost at most 16, rounds at most 5000000)",
                );
            }
            return match (ok, CString::new(s)) {
                (true, Ok(c)) => Ok(Hash::Crypt(c)),
                _ => Err("malformed crypt(3) hash"),
            };
        }
        if s.is_empty() {
            return Err("empty password hash");
        }
        Err(
            "unsupported password hash (expected $scrypt$, or a crypt(3) hash: $y$, $6$, $5$, $2b$, $2y$)",
        )
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Scrypt { params, salt, key } => {
                let mut out = vec![0u8; key.len()];
                params.derive(password.as_bytes(), salt, &mut out) && openssl::memcmp::eq(&out, key)
            }
            Hash::Crypt(setting) => crypt::verify(setting, password),
        }
    }
}

/// Bounds the work of bcrypt and SHA-crypt lines, so that one line cannot
/// stall logins for seconds.
fn crypt_cost_ok(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("$2b$").or_else(|| s.strip_prefix("$2y$")) {
        return rest.as_bytes().get(2) == Some(&b'$')
            && rest
                .get(..2)
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|c| (4..=16).contains(&c));
    }
    if let Some(rest) = s.strip_prefix("$5$").or_else(|| s.strip_prefix("$6$"))
        && let Some(r) = rest.strip_prefix("rounds=")
    {
        return r
            .split('$')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= 5_000_000);
    }
    true
}

fn parse_scrypt(rest: &str) -> Result<Hash, &'static str> {
    const BAD: &str = "malformed $scrypt$ hash (expected $scrypt$ln=N,r=N,p=N$SALT$HASH)";
    let mut parts = rest.split('$');
    let (Some(params), Some(salt), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let mut fields = params.split(',');
    let mut num = |name: &str| -> Option<u32> {
        fields
            .next()?
            .strip_prefix(name)?
            .strip_prefix('=')?
            .parse()
            .ok()
    };
    let (Some(ln), Some(r), Some(p)) = (num("ln"), num("r"), num("p")) else {
        return Err(BAD);
    };
    if fields.next().is_some() {
        return Err(BAD);
    }
    if !(1..=32).contains(&ln) || !(1..=64).contains(&r) || !(1..=16).contains(&p) {
        return Err("$scrypt$ parameters out of range (ln 1-32, r 1-64, p 1-16)");
    }
    if 128 * u64::from(r) * (1u64 << ln) > MAX_SCRYPT_MEMORY {
        return Err("$scrypt$ parameters need more than 256 MiB of memory");
    }
    // At most 64 times the default's work (N·r·p = 2^17), a few seconds.
    if u64::from(p) * u64::from(r) * (1u64 << ln) > 1 << 23 {
        return Err("$scrypt$ parameters cost too much time (N*r*p at most 2^23)");
    }
    let (Some(salt), Some(key)) = (b64_decode(salt), b64_decode(key)) else {
        return Err(BAD);
    };
    if !(8..=64).contains(&salt.len()) || !(16..=64).contains(&key.len()) {
        return Err("$scrypt$ salt must be 8-64 bytes and hash 16-64 bytes");
    }
    Ok(Hash::Scrypt {
        // ln ≤ 32 was checked above.
        params: ScryptParams { ln: ln as u8, r, p },
        salt,
        key,
    })
}

fn b64_encode(b: &[u8]) -> String {
    openssl::base64::encode_block(b)
        .trim_end_matches('=')
        .to_string()
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let valid = !s.is_empty()
        && s.len() % 4 != 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid {
        return None;
    }
    let mut padded = s.to_string();
    while !padded.len().is_multiple_of(4) {
        padded.push('=');
    }
    openssl::base64::decode_block(&padded).ok()
}

/// The system's crypt(3), for hashes migrated from shadow or htpasswd files.
mod crypt {
    use std::ffi::{CStr, CString, c_char, c_void};

    #[link(name = "crypt")]
    unsafe extern "C" {
        fn crypt_r(phrase: *const c_char, setting: *const c_char, data: *mut c_void)
        -> *mut c_char;
    }

    /// Work area for `crypt_r`, in 8-byte words: larger than `struct
    /// crypt_data` of libxcrypt (32 KiB) and of older glibc (about 128 KiB).
    const DATA_WORDS: usize = 256 * 1024 / 8;
    /// libcrypt's limit on passphrases, counting the NUL.
    const MAX_PHRASE: usize = 512;

    /// `crypt_r(password, setting)`; `None` when libcrypt refuses.
    pub(super) fn hash(setting: &CStr, password: &str) -> Option<Vec<u8>> {
        if password.len() >= MAX_PHRASE {
            return None;
        }
        let phrase = CString::new(password).ok()?;
        let mut data = vec![0u64; DATA_WORDS];
        // SAFETY: phrase and setting are NUL-terminated strings that outlive
        // the call; data is zeroed (crypt_r's requirement for a new work
        // area), 8-byte aligned and larger than struct crypt_data of every
        // libcrypt. The result is NULL or points into data, which is still
        // alive when it is copied out below.
        let out = unsafe { crypt_r(phrase.as_ptr(), setting.as_ptr(), data.as_mut_ptr().cast()) };
        if out.is_null() {
            return None;
        }
        // SAFETY: non-NULL results are NUL-terminated strings inside data.
        let out = unsafe { CStr::from_ptr(out) }.to_bytes().to_vec();
        // Failures are reported as "*0" or "*1", never as a valid hash.
        if out.first() == Some(&b'*') {
            None
        } else {
            Some(out)
        }
    }

    /// True when `password` hashes to `stored` (compared in constant time).
    pub(super) fn verify(stored: &CStr, password: &str) -> bool {
        let want = stored.to_bytes();
        match hash(stored, password) {
            Some(out) => out.len() == want.len() && openssl::memcmp::eq(&out, want),
            None => false,
        }
    }
}

/// The users of a password file, ready for [`Users::verify`]. `Debug`
/// shows only how many there are.
#[derive(Default)]
pub struct Users {
    entries: HashMap<String, Hash>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Users({} users)", self.entries.len())
    }
}

impl Users {
    /// Reads and parses the user file.
    ///
    /// # Errors
    /// The file cannot be read, or some lines are bad: every bad line is
    /// reported with file and line, without quoting hashes.
    pub fn load(path: &Path) -> Result<Users, Vec<Error>> {
        let (users, errors) = Users::load_lenient(path).map_err(|e| vec![e])?;
        if errors.is_empty() {
            Ok(users)
        } else {
            Err(errors)
        }
    }

    /// Like [`Users::load`], but bad lines are skipped (their users cannot
    /// log in) and returned beside the good ones.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn load_lenient(path: &Path) -> Result<(Users, Vec<Error>), Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(Users::parse(&bytes, path))
    }

    /// Parses the contents of a user file; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> (Users, Vec<Error>) {
        let mut users = Users::default();
        let mut errors = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let err = |message: String| Error::Syntax {
                origin: Origin::File {
                    path: path.to_path_buf(),
                    line,
                },
                message,
            };
            let Ok(text) = std::str::from_utf8(raw) else {
                errors.push(err("line is not valid UTF-8".into()));
                continue;
            };
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = text.split_once(':') else {
                errors.push(err("expected user:hash (no ':' on the line)".into()));
                continue;
            };
            let user = user.trim_end();
            if check_user_name(user).is_err() {
                // The "name" may be a mistyped secret: do not quote it.
                errors.push(err(
                    "bad user name (empty, too long, or with white space or control characters)"
                        .into(),
                ));
                continue;
            }
            let hash = hash.trim_start();
            if hash.contains(':') {
                errors.push(err(format!(
                    "user {user}: extra ':' fields after the hash (a shadow line? keep only user:hash)"
                )));
                continue;
            }
            match Hash::parse(hash) {
                Ok(h) => {
                    if let Some(first) = first_line.get(user) {
                        errors.push(err(format!(
                            "user {user} is already defined at line {first}"
                        )));
                        continue;
                    }
                    first_line.insert(user.to_string(), line);
                    users.entries.insert(user.to_string(), h);
                }
                Err(what) => errors.push(err(format!(
                    "user {user}: {what}; set the password again with postern passwd add {user}"
                ))),
            }
        }
        (users, errors)
    }

    /// True when `user` exists and `password` matches its hash. For an
    /// unknown user a hash of the default cost is computed all the same, so
    /// the time taken does not tell which users exist (crypt(3) hashes
    /// cost what their own parameters say, so only scrypt lines are
    /// indistinguishable from unknown users).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.entries.get(user) {
            Some(h) => h.verify(password),
            None => {
                let mut out = [0u8; KEY_LEN];
                let _ = DEFAULT_PARAMS.derive(password.as_bytes(), &[0u8; SALT_LEN], &mut out);
                std::hint::black_box(out);
                false
            }
        }
    }

    /// True when `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.entries.contains_key(user)
    }

    /// The user names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Checks a SASL user name for the file.
///
/// # Errors
/// Empty, longer than 256 bytes, starting with `#`, or containing `:`,
/// white space or control characters; in words.
pub fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("the user name is longer than {MAX_USER_LEN} bytes"));
    }
    if user.starts_with('#') {
        return Err("the user name must not start with '#'".into());
    }
    if user
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("the user name must not contain ':', white space or control characters".into());
    }
    Ok(())
}

/// Hashes `password` for the file: `$scrypt$ln=14,r=8,p=1$SALT$HASH` with
/// a fresh random salt.
///
/// # Errors
/// OpenSSL's random generator or scrypt fails (out of memory).
pub fn hash_password(password: &str) -> io::Result<String> {
    hash_with(password, DEFAULT_PARAMS)
}

fn hash_with(password: &str, params: ScryptParams) -> io::Result<String> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt).map_err(io::Error::other)?;
    let mut key = [0u8; KEY_LEN];
    if !params.derive(password.as_bytes(), &salt, &mut key) {
        return Err(io::Error::other("scrypt failed (out of memory?)"));
    }
    Ok(format!(
        "$scrypt$ln={},r={},p={}${}${}",
        params.ln,
        params.r,
        params.p,
        b64_encode(&salt),
        b64_encode(&key)
    ))
}

fn check_password(password: &str) -> io::Result<()> {
    let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
    if password.is_empty() {
        return bad("the password is empty");
    }
    if password.len() > MAX_PASSWORD_LEN {
        return bad("the password is longer than 1024 bytes");
    }
    if password.contains('\0') {
        return bad("the password contains a NUL character");
    }
    Ok(())
}

/// Sets `user`'s password (adding the user when new) in the file at
/// `path`, which is created (mode 0600, owned by the caller) when missing;
/// see [`create_file`] for a file smtpd can read as `mail_owner`. Other
/// lines are kept byte for byte; the file keeps its owner and group, and
/// its mode loses any bit beyond 0640. Returns true when the user is new.
///
/// # Errors
/// A bad user name or password (`InvalidInput`), or an I/O failure; the
/// file is then unchanged.
pub fn set_user(path: &Path, user: &str, password: &str) -> io::Result<bool> {
    check_user_name(user).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    check_password(password)?;
    let hash = hash_password(password)?;
    set_hash(path, user, &hash)
}

fn set_hash(path: &Path, user: &str, hash: &str) -> io::Result<bool> {
    let new_line = format!("{user}:{hash}");
    rewrite(path, |old| {
        let mut out = Vec::with_capacity(old.len() + new_line.len() + 1);
        let mut found = false;
        for line in lines(old) {
            if line_user(line) == Some(user.as_bytes()) {
                if !found {
                    out.extend_from_slice(new_line.as_bytes());
                    out.push(b'\n');
                    found = true;
                }
                // Later duplicates are dropped: the user has one password.
            } else {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        if !found {
            out.extend_from_slice(new_line.as_bytes());
            out.push(b'\n');
        }
        (Some(out), !found)
    })
}

/// Removes `user` from the file at `path`, keeping every other line.
/// Returns false (and writes nothing) when the user is not there or the
/// file does not exist.
///
/// # Errors
/// An I/O failure; the file is then unchanged.
pub fn remove_user(path: &Path, user: &str) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    rewrite(path, |old| {
        let mut out = Vec::with_capacity(old.len());
        let mut found = false;
        for line in lines(old) {
            if line_user(line) == Some(user.as_bytes()) {
                found = true;
            } else {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        (found.then_some(out), found)
    })
}

/// Creates an empty user file (a comment saying what it is): mode 0640
/// owned by `root:group` when `group` is given (the caller must be root),
/// else mode 0600 owned by the caller.
///
/// # Errors
/// The file exists (`AlreadyExists`), or an I/O failure.
pub fn create_file(path: &Path, group: Option<u32>) -> io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    write_secret_file(path, HEADER.as_bytes(), group)
}

/// Replaces (or creates) a file holding a secret — a password file or a
/// private key — atomically: temporary file, fsync, rename, directory
/// fsync. With `group`, the file is `root:group` mode 0640 (the caller
/// must be root; for secrets smtpd reads as `mail_owner`), else mode 0600
/// owned by the caller. The contents are never readable by others, not
/// even while being written.
///
/// # Errors
/// Any I/O failure; the old file is then untouched.
pub fn write_secret_file(path: &Path, contents: &[u8], group: Option<u32>) -> io::Result<()> {
    if group.is_some() && current_uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "only root can give a secret file to another group",
        ));
    }
    let target = resolve(path)?;
    match group {
        Some(g) => replace_file(&target, contents, Some((0, g)), 0o640),
        None => replace_file(&target, contents, None, 0o600),
    }
}

/// Checks DESIGN §7's rule for a secret file: owned by root or by the
/// current user, mode 0600 or 0640 (or stricter), and when group-readable,
/// its group is root's or `mail_owner_gid`.
///
/// # Errors
/// What is wrong and the exact `chown`/`chmod` commands that fix it.
pub fn check_permissions(path: &Path, mail_owner_gid: Option<u32>) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let euid = current_uid();
    let mode = m.mode() & 0o7777;
    let mut wrong: Vec<String> = Vec::new();
    if m.uid() != 0 && m.uid() != euid {
        wrong.push(format!("it is owned by {}", user_name(m.uid())));
    }
    if mode & 0o007 != 0 {
        wrong.push(format!("other users can access it (mode {mode:04o})"));
    } else if mode & 0o020 != 0 {
        wrong.push(format!("its group can write it (mode {mode:04o})"));
    } else if mode & !0o640 != 0 {
        wrong.push(format!("mode {mode:04o} is not 0600 or 0640"));
    }
    if mode & 0o040 != 0 && m.gid() != 0 && Some(m.gid()) != mail_owner_gid {
        wrong.push(format!("group {} can read it", group_name(m.gid())));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let p = path.display();
    let root_owned = euid == 0 || m.uid() == 0;
    let fix = match mail_owner_gid {
        Some(g) if root_owned && g != 0 => {
            format!("chown root:{} {p} && chmod 640 {p}", group_name(g))
        }
        _ => {
            let owner = if root_owned {
                "root".to_string()
            } else {
                user_name(euid)
            };
            if m.uid() == if root_owned { 0 } else { euid } {
                format!("chmod 600 {p}")
            } else {
                format!("chown {owner} {p} && chmod 600 {p}")
            }
        }
    };
    Err(format!(
        "{p}: {}, but it holds secrets; run: {fix}",
        wrong.join(", ")
    ))
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Lines of a file without their `\n` (a missing final newline is added
/// when the file is written back).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n')
        .filter(move |_| !bytes.is_empty())
}

/// The user a line defines, or `None` for comments, blank and bad lines.
fn line_user(line: &[u8]) -> Option<&[u8]> {
    let t = line.trim_ascii();
    if t.is_empty() || t.starts_with(b"#") {
        return None;
    }
    let colon = t.iter().position(|&b| b == b':')?;
    Some(t[..colon].trim_ascii_end())
}

/// The file a path names, following a symbolic link so that a link stays a
/// link.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(e) => Err(e),
    }
}

fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Read-modify-write of the user file under an exclusive lock on its
/// directory, so that two `postern passwd` commands never lose each
/// other's change. `change` gets the old contents (empty when the file is
/// missing) and returns the new contents (`None`: leave the file alone).
fn rewrite<R>(path: &Path, change: impl FnOnce(&[u8]) -> (Option<Vec<u8>>, R)) -> io::Result<R> {
    let target = resolve(path)?;
    let dir = std::fs::File::open(parent_dir(&target))?;
    let _lock = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))?;
    let (old, meta) = match std::fs::read(&target) {
        Ok(b) => {
            let m = std::fs::metadata(&target)?;
            (b, Some(m))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(e),
    };
    let (new, result) = change(&old);
    if let Some(new) = new {
        match meta {
            Some(m) => replace_file(&target, &new, Some((m.uid(), m.gid())), m.mode() & 0o640)?,
            None => replace_file(&target, &new, None, 0o600)?,
        }
    }
    // The lock is released when `_lock` is dropped.
    Ok(result)
}

/// Writes `contents` to a new file beside `target`, sets owner and mode,
/// fsyncs it, renames it over `target` and fsyncs the directory.
fn replace_file(
    target: &Path,
    contents: &[u8],
    owner: Option<(u32, u32)>,
    mode: u32,
) -> io::Result<()> {
    let dir = parent_dir(target);
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path names no file"))?;
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".postern-tmp.{}.{seq}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // O_EXCL refuses a stale file or a planted link; mode 0600 from the
    // start, so the secret is never readable by others, even briefly.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = (|| {
        if let Some((uid, gid)) = owner {
            let m = f.metadata()?;
            if m.uid() != uid || m.gid() != gid {
                let changed = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
                // Root asked for root:group: that must work. An ordinary
                // user editing a file keeps it as their own, as any editor.
                if changed.is_err() && current_uid() == 0 {
                    changed?;
                }
            }
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        // The rename is durable only once the directory is on disk.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAST: ScryptParams = ScryptParams { ln: 4, r: 8, p: 1 };

    fn crypt_hash(setting: &str, password: &str) -> String {
        let s = CString::new(setting).unwrap();
        String::from_utf8(crypt::hash(&s, password).unwrap()).unwrap()
    }

    #[test]
    fn scrypt_hash_format_and_verify() {
        let h = hash_password("s3cret pass").unwrap();
        assert!(h.starts_with("$scrypt$ln=14,r=8,p=1$"), "{h}");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(b64_decode(parts[3]).unwrap().len(), SALT_LEN);
        assert_eq!(b64_decode(parts[4]).unwrap().len(), KEY_LEN);
        assert_ne!(
            h,
            hash_password("s3cret pass").unwrap(),
            "fresh salt each time"
        );
        let users = Users::parse(format!("alice:{h}\n").as_bytes(), Path::new("f")).0;
        assert!(users.verify("alice", "s3cret pass"));
        assert!(!users.verify("alice", "s3cret pasS"));
        assert!(
            !users.verify("Alice", "s3cret pass"),
            "user names are case-sensitive"
        );
        assert!(!users.verify("bob", "s3cret pass"));
    }

    #[test]
    fn rfc7914_vector() {
        // RFC 7914 §12: P="password", S="NaCl", N=1024, r=8, p=16, dkLen=64.
        let key = openssl::bn::BigNum::from_hex_str(
            "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622e\
             af30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
        )
        .unwrap()
        .to_vec();
        let h = Hash::Scrypt {
            params: ScryptParams {
                ln: 10,
                r: 8,
                p: 16,
            },
            salt: b"NaCl".to_vec(),
            key,
        };
        assert!(h.verify("password"));
        assert!(!h.verify("passwore"));
    }

    #[test]
    fn crypt_formats() {
        // Known answers from Drepper's SHA-crypt specification (also what
        // `openssl passwd -5/-6 -salt saltstring` prints).
        let sha256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        let sha512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        let bcrypt = crypt_hash("$2b$04$abcdefghijklmnopqrstuu", "Hello world!");
        let bcrypt_y = crypt_hash("$2y$04$abcdefghijklmnopqrstuu", "Hello world!");
        let yescrypt = crypt_hash("$y$j9T$abcdefghijklmnop$", "Hello world!");
        let text = format!("a:{sha256}\nb:{sha512}\nc:{bcrypt}\nd:{bcrypt_y}\ne:{yescrypt}\n");
        let (users, errors) = Users::parse(text.as_bytes(), Path::new("f"));
        assert!(errors.is_empty(), "{errors:?}");
        for u in ["a", "b", "c", "d", "e"] {
            assert!(users.verify(u, "Hello world!"), "{u}");
            assert!(!users.verify(u, "Hello world?"), "{u}");
            assert!(!users.verify(u, ""), "{u}");
        }
        assert!(!users.verify("a", &"x".repeat(600)));
        for (costly, ok) in [
            (
                "$2b$17$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz12345",
                false,
            ),
            ("$2y$3$abcdefghijklmnopqrstuu", false),
            ("$6$rounds=5000001$salt$hash", false),
            ("$6$rounds=1000$salt$hash", true),
            ("$5$salt$hash", true),
        ] {
            assert_eq!(Hash::parse(costly).is_ok(), ok, "{costly}");
        }
        assert!(Hash::parse("$scrypt$ln=20,r=16,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA").is_err());
        assert!(!users.verify("a", "Hello\0world!"));
    }

    #[test]
    fn bad_lines_are_reported_without_secrets() {
        let good = hash_with("pw", FAST).unwrap();
        let text = format!(
            "# comment\n\n   \nalice:{good}\n\
             hunter2secret\n\
             bad user:{good}\n\
             bob:$1$abc$oldmd5hashhunter\n\
             carol:$scrypt$ln=99,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
             dave:$6$salt$hash:19000:0:99999:7:::\n\
             alice:{good}\n\
             eve:\n\
             frank:$scrypt$ln=4,r=8,p=1$!!$AAAA\n\
             \u{1}x:{good}\n"
        );
        let path = Path::new("/etc/postern/smtpd_passwd");
        let (users, errors) = Users::parse(text.as_bytes(), path);
        assert_eq!(users.names(), vec!["alice"]);
        let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 9, "{msgs:#?}");
        let joined = msgs.join("\n");
        for secret in [
            "hunter",
            good.rsplit('$').next().unwrap(),
            "oldmd5",
            "AAAAAAAA",
            "hash:19000",
        ] {
            assert!(!joined.contains(secret), "{secret} quoted in {joined}");
        }
        assert!(
            msgs[0].starts_with("/etc/postern/smtpd_passwd:5: expected user:hash"),
            "{}",
            msgs[0]
        );
        assert!(msgs[1].starts_with("/etc/postern/smtpd_passwd:6: bad user name"));
        assert!(msgs[2].contains(":7: user bob: unsupported password hash"));
        assert!(msgs[3].contains(":8: user carol: $scrypt$ parameters out of range"));
        assert!(msgs[4].contains(":9: user dave: extra ':' fields"));
        assert!(msgs[5].contains(":10: user alice is already defined at line 4"));
        assert!(msgs[6].contains(":11: user eve: empty password hash"));
        assert!(msgs[7].contains(":12: user frank: malformed $scrypt$ hash"));
        assert!(msgs[8].contains(":13: bad user name"));
        assert!(Users::load(Path::new("/nonexistent/x")).is_err());
        assert_eq!(format!("{users:?}"), "Users(1 users)");
    }

    #[test]
    fn user_names() {
        for ok in ["a", "scanner@contoso.com", "DOMAIN\\user", "ünïcode"] {
            assert!(check_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a b", "a\tb", "#a", "a\u{7f}", &"x".repeat(257)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_verify_remove_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smtpd_passwd");
        assert!(!remove_user(&path, "x").unwrap());
        assert!(!path.exists(), "remove never creates the file");
        assert!(set_user(&path, "scanner@contoso.com", "first").unwrap());
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("# my comment\n{text}\nbroken line\n# tail")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!set_user(&path, "scanner@contoso.com", "second").unwrap());
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640, "other bits are dropped on rewrite");
        let (users, errors) = Users::load_lenient(&path).unwrap();
        assert_eq!(
            errors.len(),
            1,
            "the broken line is kept and still reported"
        );
        assert!(users.verify("scanner@contoso.com", "second"));
        assert!(!users.verify("scanner@contoso.com", "first"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# my comment\nscanner@contoso.com:$scrypt$"),
            "{text}"
        );
        assert!(text.ends_with("\nbroken line\n# tail\n"), "{text}");
        assert!(remove_user(&path, "scanner@contoso.com").unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# my comment\n\nbroken line\n# tail\n"
        );
        assert!(set_user(&path, "bad user", "x").is_err());
        assert!(set_user(&path, "u", "").is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn create_file_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real");
        create_file(&path, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(
            create_file(&path, None).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(Users::load(&path).unwrap().is_empty());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        set_hash(&link, "u", &hash_with("pw", FAST).unwrap()).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(Users::load(&path).unwrap().verify("u", "pw"));
        if current_uid() == 0 {
            let p2 = dir.path().join("grouped");
            create_file(&p2, Some(12345)).unwrap();
            let m = std::fs::metadata(&p2).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 12345, 0o640));
            // Editing keeps owner, group and mode.
            set_hash(&p2, "u", &hash_with("pw", FAST).unwrap()).unwrap();
            let m = std::fs::metadata(&p2).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 12345, 0o640));
            assert!(check_permissions(&p2, Some(12345)).is_ok());
            let e = check_permissions(&p2, Some(54321)).unwrap_err();
            assert!(e.contains("group 12345 can read it"), "{e}");
            assert!(
                e.ends_with(&format!(
                    "run: chown root:54321 {0} && chmod 640 {0}",
                    p2.display()
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn permission_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        let set = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let me_gid = nix::unistd::getegid().as_raw();
        for ok in [0o600, 0o400, 0o640, 0o440] {
            set(ok);
            assert!(check_permissions(&path, Some(me_gid)).is_ok(), "{ok:o}");
        }
        set(0o600);
        assert!(check_permissions(&path, None).is_ok());
        for (bad, why) in [
            (0o644, "other users can access it (mode 0644)"),
            (0o604, "other users can access it"),
            (0o660, "its group can write it"),
            (0o700, "mode 0700 is not 0600 or 0640"),
            (0o4600, "mode 4600 is not 0600 or 0640"),
        ] {
            set(bad);
            let e = check_permissions(&path, Some(me_gid)).unwrap_err();
            assert!(e.contains(why), "{bad:o}: {e}");
            assert!(e.contains("run: ") && e.contains("chmod"), "{e}");
        }
        set(0o644);
        let e = check_permissions(&path, None).unwrap_err();
        assert!(
            e.ends_with(&format!("run: chmod 600 {}", path.display())),
            "{e}"
        );
        assert!(check_permissions(&dir.path().join("missing"), None).is_err());
        assert!(
            check_permissions(dir.path(), None)
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn unknown_users_cost_a_hash() {
        let users = Users::default();
        let t = std::time::Instant::now();
        assert!(!users.verify("nobody", "pw"));
        // ln=14 takes tens of milliseconds; a bare lookup takes microseconds.
        assert!(
            t.elapsed() > std::time::Duration::from_millis(5),
            "{:?}",
            t.elapsed()
        );
    }

    proptest! {
        #[test]
        fn random_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (users, errors) = Users::parse(&bytes, Path::new("f"));
            prop_assert!(users.len() + errors.len() <= bytes.split(|&b| b == b'\n').count());
        }

        #[test]
        fn random_text_lines_never_panic(lines in proptest::collection::vec("[a-z:$#=,./ 0-9A-Z+]{0,60}", 0..8)) {
            let text = lines.join("\n");
            let _ = Users::parse(text.as_bytes(), Path::new("f"));
            for l in &lines {
                let _ = line_user(l.as_bytes());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn round_trip(
            users in proptest::collection::btree_map("[a-zA-Z0-9@._+-]{1,20}", "[ -~]{1,20}", 1..5),
            junk in "(# [ -~]{0,20}\n){0,3}",
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            std::fs::write(&path, &junk).unwrap();
            for (u, p) in &users {
                prop_assert!(set_hash(&path, u, &hash_with(p, FAST).unwrap()).unwrap());
            }
            let loaded = Users::load(&path).unwrap();
            prop_assert_eq!(loaded.len(), users.len());
            for (u, p) in &users {
                prop_assert!(loaded.verify(u, p));
                let wrong = format!("{p}x");
                prop_assert!(!loaded.verify(u, &wrong));
            }
            for u in users.keys() {
                prop_assert!(remove_user(&path, u).unwrap());
                prop_assert!(!remove_user(&path, u).unwrap());
            }
            prop_assert_eq!(std::fs::read_to_string(&path).unwrap(), junk);
        }
    }
}

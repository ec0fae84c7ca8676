//! The secrets scan: every [`TestEnv`](super::TestEnv) remembers the
//! secrets it handed to postern (passwords given to `add_sasl_user`,
//! contents written with `write_secret`, the OAuth2 client secret, and
//! what a watched fake token endpoint issued: access tokens, refresh
//! tokens, device codes), and when it is dropped looks for them in what
//! postern wrote: the log (`maillog*`), the supervisor's and daemons'
//! captured output (`postern.out`), the output of the commands the test
//! ran through the environment (`commands.out`), any `*.log`, `*.out`,
//! `*.err` file and any core file (`core`, `core.*`) in its directory.
//!
//! Each secret is looked for as written, base64-encoded (an AUTH LOGIN
//! response), form-encoded, and, for a user's password or token, as the
//! base64 AUTH PLAIN (`\0user\0password`) and XOAUTH2
//! (`user=...\x01auth=Bearer ...\x01\x01`) responses. A hit names the file
//! and the secret (never its value). Values shorter than [`MIN_LEN`] are
//! not registered (`xoauth2` as the password field of an XOAUTH2 account
//! is a keyword, not a secret).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;

use crate::fake::token::TokenSecrets;

/// Shorter values are not secrets worth scanning for (too many false hits).
pub const MIN_LEN: usize = 8;

/// One place a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The file (or `<label>` for scanned text).
    pub file: PathBuf,
    /// The secret's name, e.g. `password of webapp@contoso.test`.
    pub secret: String,
    /// How it appeared: `plain`, `base64`, `AUTH PLAIN`, `XOAUTH2`, ...
    pub form: &'static str,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.file.display(),
            self.secret,
            self.form
        )
    }
}

#[derive(Default)]
struct Inner {
    /// (name, value).
    secrets: Vec<(String, String)>,
    /// User names that log in (for AUTH PLAIN and XOAUTH2 forms).
    users: Vec<String>,
    /// (user, password) pairs.
    logins: Vec<(String, String)>,
    endpoints: Vec<TokenSecrets>,
}

/// The secrets one environment knows. See the [module docs](self).
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Percent-encoding as in an `application/x-www-form-urlencoded` body.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a secret `value` under `name` (ignored when shorter than
    /// [`MIN_LEN`]).
    pub fn add(&self, name: &str, value: &str) {
        let value = value.trim();
        if value.len() < MIN_LEN {
            return;
        }
        let mut g = self.lock();
        if !g.secrets.iter().any(|(_, v)| v == value) {
            g.secrets.push((name.to_string(), value.to_string()));
        }
    }

    /// Registers `user`'s `password` (and the user, for the AUTH forms).
    pub fn add_login(&self, user: &str, password: &str) {
        self.add(&format!("password of {user}"), password);
        let mut g = self.lock();
        if !g.users.iter().any(|u| u == user) {
            g.users.push(user.to_string());
        }
        if password.len() >= MIN_LEN {
            g.logins.push((user.to_string(), password.to_string()));
        }
    }

    /// Registers a user name that signs in with tokens.
    pub fn add_user(&self, user: &str) {
        let mut g = self.lock();
        if !g.users.iter().any(|u| u == user) {
            g.users.push(user.to_string());
        }
    }

    /// Registers what a file written as a secret holds: a password map
    /// (`key user:password` lines) gives the users and passwords; a PEM
    /// file its base64 lines; anything else its trimmed contents.
    pub fn add_file(&self, file: &str, contents: &str) {
        if contents.contains("-----BEGIN ") {
            for line in contents.lines() {
                let l = line.trim();
                if !l.starts_with("-----") && l.len() >= 40 {
                    self.add(&format!("{file} (key material)"), l);
                }
            }
            return;
        }
        let lines: Vec<&str> = contents
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let table = !lines.is_empty() && lines.iter().all(|l| l.split_whitespace().count() >= 2);
        if !table {
            self.add(file, contents);
            return;
        }
        for l in lines {
            let value = l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
            match value.split_once(':') {
                Some((user, pass)) => {
                    self.add_user(user);
                    if !pass.eq_ignore_ascii_case("xoauth2") {
                        self.add_login(user, pass);
                    }
                }
                None => self.add(&format!("{file} entry"), &value),
            }
        }
    }

    /// Adds a fake token endpoint whose secrets are looked for too.
    pub fn watch(&self, ep: TokenSecrets) {
        self.lock().endpoints.push(ep);
    }

    /// Every (name, form, needle) to look for.
    pub fn needles(&self) -> Vec<(String, &'static str, String)> {
        let g = self.lock();
        let mut secrets = g.secrets.clone();
        let mut tokens = Vec::new();
        for ep in &g.endpoints {
            for (kind, v) in ep.list() {
                if v.len() >= MIN_LEN && !secrets.iter().any(|(_, s)| *s == v) {
                    if kind == "access token" {
                        tokens.push(v.clone());
                    }
                    secrets.push((kind.to_string(), v));
                }
            }
        }
        let mut out = Vec::new();
        for (name, v) in &secrets {
            out.push((name.clone(), "plain", v.clone()));
            out.push((name.clone(), "base64", b64(v.as_bytes())));
            let f = form_encode(v);
            if f != *v {
                out.push((name.clone(), "form-encoded", f));
            }
        }
        for (user, pass) in &g.logins {
            let name = format!("password of {user}");
            out.push((
                name.clone(),
                "AUTH PLAIN",
                b64(format!("\0{user}\0{pass}").as_bytes()),
            ));
            out.push((
                name,
                "AUTH PLAIN",
                b64(format!("{user}\0{user}\0{pass}").as_bytes()),
            ));
        }
        for t in &tokens {
            for user in &g.users {
                out.push((
                    "access token".to_string(),
                    "XOAUTH2",
                    b64(format!("user={user}\x01auth=Bearer {t}\x01\x01").as_bytes()),
                ));
            }
        }
        out
    }

    /// How many secrets (not forms) are registered, endpoint ones included.
    pub fn len(&self) -> usize {
        self.needles()
            .iter()
            .filter(|(_, form, _)| *form == "plain")
            .count()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The registered secrets' names.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .needles()
            .into_iter()
            .filter(|(_, form, _)| *form == "plain")
            .map(|(name, _, _)| name)
            .collect();
        n.dedup();
        n
    }

    /// Looks for every secret in `data`, reporting hits as `label`.
    pub fn scan_bytes(&self, label: &Path, data: &[u8]) -> Vec<Hit> {
        scan_with(&self.needles(), label, data)
    }

    /// Scans the files of [`files_to_scan`] under `root`.
    pub fn scan_dir(&self, root: &Path) -> Vec<Hit> {
        let needles = self.needles();
        let mut hits = Vec::new();
        for f in files_to_scan(root) {
            if let Ok(data) = std::fs::read(&f) {
                hits.extend(scan_with(&needles, &f, &data));
            }
        }
        hits
    }
}

fn scan_with(needles: &[(String, &'static str, String)], label: &Path, data: &[u8]) -> Vec<Hit> {
    if needles.is_empty() {
        return Vec::new();
    }
    let set = regex::bytes::RegexSetBuilder::new(
        needles
            .iter()
            .map(|(_, _, v)| format!("(?-u){}", regex::escape(v))),
    )
    .size_limit(512 << 20)
    .build();
    let Ok(set) = set else {
        // Unreachable with escaped literals; fall back to a plain search.
        return needles
            .iter()
            .filter(|(_, _, v)| data.windows(v.len()).any(|w| w == v.as_bytes()))
            .map(|(name, form, _)| Hit {
                file: label.to_path_buf(),
                secret: name.clone(),
                form,
            })
            .collect();
    };
    let mut hits: Vec<Hit> = set
        .matches(data)
        .into_iter()
        .map(|i| Hit {
            file: label.to_path_buf(),
            secret: needles[i].0.clone(),
            form: needles[i].1,
        })
        .collect();
    hits.dedup();
    hits
}

/// What the scan reads under `root`: log files (`maillog*`, `*.log`),
/// captured output (`*.out`, `*.err`) and core files (`core`, `core.*`),
/// at any depth. Queue files, tables and keys are not logs: they may hold
/// secrets by design.
pub fn files_to_scan(root: &Path) -> Vec<PathBuf> {
    fn wanted(name: &str) -> bool {
        name.starts_with("maillog")
            || name == "core"
            || name.starts_with("core.")
            || name.ends_with(".log")
            || name.ends_with(".out")
            || name.ends_with(".err")
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                walk(&p, out);
            } else if t.is_file() && wanted(&e.file_name().to_string_lossy()) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_secret_is_found_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::default();
        r.add_login("webapp@contoso.test", "S3cret-app-pass");
        r.add_file(
            "oauth2_secret",
            "s3cr3t~Q8.client-secret-value_0123456789\n",
        );
        r.add("short", "xoauth2");
        assert_eq!(r.names().len(), 2, "{:?}", r.names());
        let log = dir.path().join("maillog");
        std::fs::write(&log, "Nov 22 postern/smtpd[1]: nothing to see\n").unwrap();
        assert!(r.scan_dir(dir.path()).is_empty());
        // The plain value, in a log line.
        std::fs::write(
            &log,
            "Nov 22 postern/smtpd[1]: debug: password=S3cret-app-pass\n",
        )
        .unwrap();
        let hits = r.scan_dir(dir.path());
        assert_eq!(
            hits,
            vec![Hit {
                file: log.clone(),
                secret: "password of webapp@contoso.test".into(),
                form: "plain",
            }]
        );
        assert!(!hits[0].to_string().contains("S3cret"), "{}", hits[0]);
        // The AUTH PLAIN response, in a core file deeper down.
        let core = dir.path().join("spool").join("core");
        std::fs::create_dir_all(core.parent().unwrap()).unwrap();
        let mut blob = vec![0u8; 1000];
        blob.extend_from_slice(b64(b"\0webapp@contoso.test\0S3cret-app-pass").as_bytes());
        std::fs::write(&core, &blob).unwrap();
        let hits = r.scan_dir(dir.path());
        assert!(
            hits.iter()
                .any(|h| h.file == core && h.form == "AUTH PLAIN"),
            "{hits:?}"
        );
        // A form-encoded client secret in captured output.
        let out = dir.path().join("postern.out");
        std::fs::write(
            &out,
            "client_secret=s3cr3t~Q8.client-secret-value_0123456789&x=1",
        )
        .unwrap();
        assert!(
            r.scan_dir(dir.path())
                .iter()
                .any(|h| h.file == out && h.secret == "oauth2_secret")
        );
        // Files that are not logs are not read.
        std::fs::remove_file(&log).unwrap();
        std::fs::remove_file(&core).unwrap();
        std::fs::remove_file(&out).unwrap();
        std::fs::write(
            dir.path().join("sasl_passwd"),
            "x webapp@contoso.test:S3cret-app-pass",
        )
        .unwrap();
        assert!(r.scan_dir(dir.path()).is_empty());
    }

    #[test]
    fn password_maps_give_users_and_passwords() {
        let r = Registry::default();
        r.add_file(
            "sasl_passwd",
            "[localhost]:587 scanner@contoso.test:Scanner-Pa55word\n[other]:587 box@contoso.test:xoauth2\n",
        );
        assert_eq!(r.names(), vec!["password of scanner@contoso.test"]);
        let needles = r.needles();
        assert!(needles.iter().any(|(_, f, v)| *f == "AUTH PLAIN"
            && *v == b64(b"\0scanner@contoso.test\0Scanner-Pa55word")));
    }
}

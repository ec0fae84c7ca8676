//! Which account the daemons run as in tests (`mail_owner`).
//!
//! The daemons drop privileges only when started as root (DESIGN.md §2).
//! - Not root (CI as an ordinary user): the current user; nothing changes.
//! - Root: the system account `postern`, the packaged default, created
//!   with `useradd --system` when missing, so tests run the real privilege
//!   drop. If it cannot be created, `nobody` is used instead (with a
//!   warning on stderr).
//! - `$POSTERN_TEST_MAIL_OWNER` overrides both.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use nix::unistd::{Gid, Uid, User};

/// The account used as `mail_owner` when tests run as root.
pub const SYSTEM_ACCOUNT: &str = "postern";

/// A resolved account.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The user name for main.cf.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
}

/// True when the tests run as root (the daemons will drop privileges).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `mail_owner` for tests (see the module docs); decided once per
/// process.
///
/// # Errors
/// The chosen account does not exist.
pub fn mail_owner() -> Result<Owner> {
    static OWNER: OnceLock<Result<Owner, String>> = OnceLock::new();
    OWNER
        .get_or_init(|| decide().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn lookup(name: &str) -> Result<Option<Owner>> {
    Ok(User::from_name(name)
        .with_context(|| format!("look up user {name}"))?
        .map(|u| Owner {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
        }))
}

fn decide() -> Result<Owner> {
    if let Ok(name) = std::env::var("POSTERN_TEST_MAIL_OWNER") {
        return lookup(&name)?
            .with_context(|| format!("POSTERN_TEST_MAIL_OWNER={name}: no such user"));
    }
    if !running_as_root() {
        let uid = nix::unistd::getuid();
        let u = User::from_uid(uid)
            .context("look up the current user")?
            .with_context(|| {
                format!("uid {uid} has no passwd entry; set POSTERN_TEST_MAIL_OWNER")
            })?;
        return Ok(Owner {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
        });
    }
    if let Some(o) = lookup(SYSTEM_ACCOUNT)? {
        return Ok(o);
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_ACCOUNT,
        ])
        .status();
    // Another test process may have created it meanwhile: look again.
    if let Some(o) = lookup(SYSTEM_ACCOUNT)? {
        return Ok(o);
    }
    eprintln!(
        "postern-tests: warning: cannot create user {SYSTEM_ACCOUNT} (useradd: {status:?}); using nobody as mail_owner"
    );
    lookup("nobody")?.context("neither postern nor nobody exists; set POSTERN_TEST_MAIL_OWNER")
}

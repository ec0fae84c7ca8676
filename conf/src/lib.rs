//! postern's configuration, with Postfix's syntax and semantics.
//!
//! - [`maincf`] reads main.cf (`name = value`, continuation lines, comments);
//!   [`expand`] implements `$name`, `${name?text}`, `${name:text}` and friends.
//! - [`params`] is the one parameter registry (name, type, default, doc) and
//!   the typed [`Config`] built from it, validated once with every error
//!   collected (file, line, parameter, what is allowed).
//! - [`nexthop`] and [`tls`] parse the value syntaxes shared by several programs.
//! - [`tables`] opens Postfix lookup tables (`hash:`, `texthash:`, `inline:`,
//!   `static:`, `cidr:`, `regexp:`, `pcre:`) and searches them in Postfix's
//!   orders ([`tables::Maps`]).
//! - [`mastercf`] reads master.cf into [`mastercf::Service`] entries and
//!   prints them as `postconf -M` does.
//! - [`edit`] rewrites main.cf for `postconf -e`, `-X` and `-#`, keeping
//!   everything else byte for byte, and replaces files atomically.
//!
//! Programs call [`load`] with the configuration directory from
//! [`config_dir`] (`-c DIR`, `MAIL_CONFIG`, or `/etc/postern`).
#![deny(missing_docs)]
// `Error` carries what an operator needs (file, line, parameter or table,
// value, what is allowed), which makes it larger than clippy likes. Errors
// are rare and never on a per-message path that would notice the copy, so
// it stays unboxed and easy to match.
#![allow(clippy::result_large_err)]

pub mod edit;
pub mod error;
pub mod expand;
pub mod maincf;
pub mod mastercf;
pub mod mynetworks;
pub mod net;
pub mod nexthop;
pub mod params;
pub mod passwd;
pub mod tables;
pub mod tls;
pub mod values;

pub use error::{Error, Errors, Origin};
pub use maincf::MainCf;
pub use params::{Config, PARAMS, ParamDef, RateLimit};

use std::path::{Path, PathBuf};

/// The default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postern";

/// The configuration directory: `explicit` (from `-c DIR`) if given, else
/// `$MAIL_CONFIG`, else `/etc/postern`.
pub fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_path_buf();
    }
    match std::env::var_os("MAIL_CONFIG") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_CONFIG_DIR),
    }
}

/// Reads `dir/main.cf` and builds the configuration, with `overrides`
/// (`-o name=value`) taking precedence. `config_directory` is set to `dir`
/// unless main.cf sets it.
///
/// # Errors
/// Every problem found, each naming file, line and parameter.
pub fn load(dir: &Path, overrides: &[(String, String, Origin)]) -> Result<Config, Errors> {
    let main = MainCf::load(&dir.join("main.cf")).map_err(Errors)?;
    build(main, dir, overrides)
}

/// Like [`load`], but bad values fall back to their defaults and are
/// returned as warnings; only an unreadable main.cf is an error.
///
/// # Errors
/// main.cf cannot be read or has syntax errors.
pub fn load_lenient(
    dir: &Path,
    overrides: &[(String, String, Origin)],
) -> Result<(Config, Errors), Errors> {
    let mut main = MainCf::load(&dir.join("main.cf")).map_err(Errors)?;
    add_config_directory(&mut main, dir);
    Ok(Config::build_lenient(&main, overrides))
}

fn add_config_directory(main: &mut MainCf, dir: &Path) {
    if main.get("config_directory").is_none() {
        main.entries.insert(
            0,
            maincf::Entry {
                name: "config_directory".into(),
                value: dir.display().to_string().replace('$', "$$"),
                line: 0,
            },
        );
    }
}

/// Builds the configuration from an already parsed main.cf (see [`load`]).
///
/// # Errors
/// Every problem found, each naming file, line and parameter.
pub fn build(
    mut main: MainCf,
    dir: &Path,
    overrides: &[(String, String, Origin)],
) -> Result<Config, Errors> {
    add_config_directory(&mut main, dir);
    Config::build(&main, overrides)
}

//! sendmail, mailq and newaliases: Postfix's command-line interface for
//! submitting mail. A submission is written durably to the maildrop queue
//! (fsync file, rename, fsync directory) before the command exits 0; the
//! daemons need not be running. mailq and -q run postqueue; newaliases checks
//! the alias files.

mod options;
mod read;
mod smtp;
mod submit;

use options::Mode;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// sysexits.h codes.
pub mod ex {
    /// Command line usage error.
    pub const USAGE: i32 = 64;
    /// Data format error.
    pub const DATAERR: i32 = 65;
    /// Service unavailable.
    pub const UNAVAILABLE: i32 = 69;
    /// Internal software error.
    pub const SOFTWARE: i32 = 70;
    /// System error (e.g. no user name).
    pub const OSERR: i32 = 71;
    /// Temporary failure; the user may retry.
    pub const TEMPFAIL: i32 = 75;
    /// Configuration error.
    pub const CONFIG: i32 = 78;
}

fn main() {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_else(|| "sendmail".into());
    let prog = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sendmail".into());
    let implied = match prog.as_str() {
        "mailq" => Mode::Mailq,
        "newaliases" => Mode::Newaliases,
        _ => Mode::Enqueue,
    };
    let args: Vec<String> = argv.collect();
    let opts = match options::parse(&args, implied) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{prog}: fatal: {e}");
            std::process::exit(ex::USAGE);
        }
    };
    // -C names main.cf or its directory.
    let dir = opts.config.as_ref().map(|c| {
        if c.is_dir() {
            c.clone()
        } else {
            c.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
    });
    let dir = conf::config_dir(dir.as_deref());
    let cfg = match queue::service::load_for_command(&prog, &dir, ex::TEMPFAIL) {
        Ok(c) => c,
        Err(code) => std::process::exit(code),
    };
    queue::log::init(
        &cfg,
        "sendmail",
        queue::log::Options {
            stderr_name: Some(prog.clone()),
            verbose_stderr: opts.verbose,
        },
    );
    for w in &opts.warnings {
        queue::log::warning(w);
    }
    match &opts.mode {
        Mode::Enqueue => {
            if opts.verify {
                queue::log::fatal(ex::USAGE, "-bv (address verification) is not supported");
            }
            let code = submit::run(&cfg, &opts);
            std::process::exit(code);
        }
        Mode::Smtp => std::process::exit(smtp::run(&cfg, &opts)),
        Mode::Mailq => exec_tool(&cfg, &dir, "postqueue", &["-p"]),
        Mode::Flush { site, id } => {
            let mut a: Vec<&str> = Vec::new();
            match (site, id) {
                (Some(s), _) => {
                    a.push("-s");
                    a.push(s);
                }
                (_, Some(i)) => {
                    a.push("-i");
                    a.push(i);
                }
                _ => a.push("-f"),
            }
            exec_tool(&cfg, &dir, "postqueue", &a)
        }
        Mode::Newaliases => std::process::exit(newaliases(&cfg)),
        Mode::Daemon => queue::log::fatal(
            ex::USAGE,
            "daemon mode (-bd) is not how postern runs; use 'postern start' or 'systemctl start postern'",
        ),
        Mode::Ignore => std::process::exit(0),
    }
}

/// Runs postqueue (or another tool) in place of this process.
fn exec_tool(cfg: &conf::Config, dir: &Path, tool: &str, args: &[&str]) -> ! {
    let (path, argv0) = queue::service::locate_program(cfg, "command_directory", tool);
    let err = std::process::Command::new(&path)
        .arg0(&argv0)
        .arg("-c")
        .arg(dir)
        .args(args)
        .exec();
    queue::log::fatal(
        ex::UNAVAILABLE,
        &format!("cannot run {}: {err}", path.display()),
    );
}

/// newaliases: checks every alias_database table and reports problems,
/// placed as Postfix's postalias places them (`FILE, line N: ...`). Unlike
/// Postfix, which skips a malformed line, postern does not use an alias
/// file with one, so that is an error (exit status 1).
fn newaliases(cfg: &conf::Config) -> i32 {
    let place = |e: &conf::Error| match e {
        conf::Error::Table {
            origin: conf::Origin::File { path, line },
            message,
            ..
        } => format!("{}, line {line}: {message}", path.display()),
        other => other.to_string(),
    };
    let mut status = 0;
    for spec in &cfg.alias_database {
        match conf::tables::open_aliases(spec, &conf::Origin::Default) {
            Ok(t) => {
                for w in t.warnings() {
                    queue::log::warning(&place(w));
                }
            }
            Err(errs) => {
                for e in errs {
                    queue::log::log(queue::log::Level::Error, &place(&e));
                }
                status = 1;
            }
        }
    }
    status
}

//! postmap and postalias: `-q key type:table` looks a key up (exit 0 when
//! found, 1 when not); `type:table` checks a table's source file and
//! reports every bad line. postern reads the text source directly (DESIGN
//! §2), so nothing is built; `-s` prints every entry.

use crate::getopt::{self, Opt};
use conf::Origin;
use std::path::PathBuf;

pub fn main(args: &[String], aliases: bool) -> i32 {
    let prog = if aliases { "postalias" } else { "postmap" };
    let (opts, operands) = match getopt::parse(args, "c:fiNnoprUvwq:") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{prog}: fatal: {e}");
            return 64;
        }
    };
    let mut query: Option<String> = None;
    let mut _dir: Option<PathBuf> = None;
    for Opt::Flag(c, v) in opts {
        match c {
            'q' => query = v,
            'c' => _dir = v.map(PathBuf::from),
            _ => {}
        }
    }
    if operands.is_empty() {
        eprintln!("{prog}: fatal: usage: {prog} [-q key] type:file ...");
        return 64;
    }
    let default_type = "hash";
    let mut status = if query.is_some() { 1 } else { 0 };
    for op in &operands {
        let spec = if op.contains(':') {
            op.clone()
        } else {
            format!("{default_type}:{op}")
        };
        let opened = if aliases {
            conf::tables::open_aliases(&spec, &Origin::CommandLine)
        } else {
            conf::tables::open(&spec, &Origin::CommandLine)
        };
        // Like Postfix, a table file that cannot be opened is fatal.
        if let Some(path) = source_file(&spec)
            && let Err(e) = std::fs::File::open(path)
        {
            eprintln!("{prog}: fatal: open {path}: {}", strerror(&e));
            return 1;
        }
        let table = match opened {
            Ok(t) => t,
            Err(errs) => {
                for e in errs {
                    eprintln!("{prog}: warning: {}", postfix_style(&e));
                }
                if query.is_none() {
                    status = 1;
                }
                continue;
            }
        };
        for w in table.warnings() {
            eprintln!("{prog}: warning: {}", postfix_style(w));
        }
        if let Some(key) = &query {
            if key == "-" {
                // Keys on standard input; print "key<TAB>value" for each found.
                use std::io::BufRead;
                let mut found = false;
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    let k = line.trim();
                    if k.is_empty() {
                        continue;
                    }
                    match table.lookup(k) {
                        Ok(Some(v)) => {
                            println!("{k}\t{v}");
                            found = true;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("{prog}: fatal: {e}");
                            return 2;
                        }
                    }
                }
                return if found { 0 } else { 1 };
            }
            match table.lookup(key) {
                Ok(Some(v)) => {
                    println!("{v}");
                    return 0;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("{prog}: fatal: {e}");
                    return 2;
                }
            }
        }
    }
    status
}

/// The file behind a file-based table (`hash:/etc/postern/transport`);
/// `None` for `inline:`, `static:` and the like.
fn source_file(spec: &str) -> Option<&str> {
    let (kind, name) = spec.split_once(':')?;
    matches!(
        kind,
        "hash"
            | "btree"
            | "lmdb"
            | "cdb"
            | "dbm"
            | "sdbm"
            | "texthash"
            | "cidr"
            | "regexp"
            | "pcre"
    )
    .then_some(name)
}

/// An I/O error as C's strerror words it (without Rust's "(os error N)").
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A table problem as Postfix words its place: `FILE, line N: problem`.
fn postfix_style(e: &conf::Error) -> String {
    match e {
        conf::Error::Table {
            origin: Origin::File { path, line },
            message,
            ..
        } => format!("{}, line {line}: {message}", path.display()),
        other => other.to_string(),
    }
}

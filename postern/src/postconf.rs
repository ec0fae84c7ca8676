//! postconf: show and edit main.cf, show master.cf. `-d` defaults, `-n`
//! settings that differ from the defaults, `name ...` single values, `-x`
//! expanded, `-h` values only, `-e name=value` / `-X name` / `-# name` edit
//! main.cf (comments and layout are kept), `-M` master.cf entries, `-m`
//! lookup table types.

use crate::getopt::{self, Opt};
use conf::params::PARAMS;
use std::path::PathBuf;

pub fn main(args: &[String]) -> i32 {
    let (opts, names) = match getopt::parse(args, "c:dehmnxMX#vpo:") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postconf: fatal: {e}");
            return 64;
        }
    };
    let mut dir: Option<PathBuf> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let (
        mut defaults,
        mut edit,
        mut values_only,
        mut types,
        mut nondefault,
        mut expand,
        mut master,
        mut remove,
        mut comment,
    ) = (
        false, false, false, false, false, false, false, false, false,
    );
    for Opt::Flag(c, v) in opts {
        match c {
            'c' => dir = v.map(PathBuf::from),
            'd' => defaults = true,
            'e' => edit = true,
            'h' => values_only = true,
            'm' => types = true,
            'n' => nondefault = true,
            'x' => expand = true,
            'M' => master = true,
            'X' => remove = true,
            '#' => comment = true,
            'o' => {
                // -o name=value: override for this command only (display).
                let Some(v) = v else { continue };
                match v.split_once('=') {
                    Some((n, val)) => {
                        overrides.push((n.trim().to_string(), val.trim().to_string()))
                    }
                    None => {
                        eprintln!("postconf: fatal: -o requires name=value, got \"{v}\"");
                        return 64;
                    }
                }
            }
            _ => {}
        }
    }
    let dir = conf::config_dir(dir.as_deref());
    let main_cf = dir.join("main.cf");
    if types {
        for t in [
            "btree", "cdb", "cidr", "dbm", "hash", "inline", "lmdb", "pcre", "regexp", "sdbm",
            "static", "texthash",
        ] {
            println!("{t}");
        }
        return 0;
    }
    if master {
        return show_master(&dir, &names);
    }
    if edit || remove || comment {
        return edit_main(&main_cf, &names, edit, remove);
    }
    // Name = value edits without -e (postconf name=value) are edits too, as in Postfix.
    if !names.is_empty() && names.iter().all(|n| n.contains('=')) {
        return edit_main(&main_cf, &names, true, false);
    }
    let mc = if defaults {
        conf::MainCf::default()
    } else {
        match conf::MainCf::load(&main_cf) {
            Ok(m) => m,
            Err(errs) => {
                for e in errs {
                    eprintln!("postconf: error: {e}");
                }
                return 1;
            }
        }
    };
    let cfg = match conf::build(mc.clone(), &dir, &[]) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("postconf: warning: {e}");
            }
            // Still show what is there, unvalidated.
            conf::params::Config::defaults()
        }
    };
    let ov: Vec<(String, String, conf::Origin)> = overrides
        .iter()
        .map(|(n, v)| (n.clone(), v.clone(), conf::Origin::CommandLine))
        .collect();
    let resolver = conf::params::Resolver::new(&mc, &ov);
    let show = |name: &str| -> Option<String> {
        if defaults {
            if let Some(v) = conf::params::computed_default(name) {
                return Some(v);
            }
            if name == "mydomain" {
                return Some(cfg.mydomain.clone());
            }
            if name == "mynetworks" {
                // Computed from mynetworks_style and the interfaces.
                return conf::params::Resolver::default().raw(name).map(|(v, _)| v);
            }
            if name == "config_directory" {
                return Some(dir.display().to_string());
            }
            return conf::params::param(name).map(|p| p.default.to_string());
        }
        if name == "config_directory" && !resolver.is_set(name) {
            return Some(dir.display().to_string());
        }
        let raw = resolver.raw(name).map(|(v, _)| v)?;
        if expand {
            resolver.expand_text(&raw).ok().or(Some(raw))
        } else {
            Some(raw)
        }
    };
    let mut out = String::new();
    let mut status = 0;
    let print = |out: &mut String, name: &str, value: &str| {
        if values_only {
            out.push_str(value);
        } else if value.is_empty() {
            out.push_str(&format!("{name} ="));
        } else {
            out.push_str(&format!("{name} = {value}"));
        }
        out.push('\n');
    };
    if !names.is_empty() {
        for n in &names {
            match show(n) {
                Some(v) => print(&mut out, n, &v),
                None => {
                    eprintln!("postconf: warning: {n}: unknown parameter");
                    status = 0;
                }
            }
        }
    } else if nondefault {
        // As in Postfix, a configuration directory other than the
        // default counts as a setting (postconf -c DIR -n shows it).
        let mut set: Vec<(String, String)> = mc
            .effective()
            .into_iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        if dir != std::path::Path::new(conf::DEFAULT_CONFIG_DIR)
            && !set.iter().any(|(n, _)| n == "config_directory")
        {
            set.push(("config_directory".into(), dir.display().to_string()));
            set.sort();
        }
        for (name, value) in set {
            let v = if expand {
                resolver.expand_text(&value).unwrap_or(value)
            } else {
                value
            };
            print(&mut out, &name, &v);
        }
    } else {
        let mut all: Vec<&str> = PARAMS.iter().map(|p| p.name).collect();
        if !defaults {
            for e in &mc.entries {
                if !all.contains(&e.name.as_str()) {
                    all.push(&e.name);
                }
            }
        }
        all.sort_unstable();
        all.dedup();
        for n in all {
            if let Some(v) = show(n) {
                print(&mut out, n, &v);
            }
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    status
}

fn edit_main(path: &std::path::Path, items: &[String], set: bool, remove: bool) -> i32 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && set => String::new(),
        Err(e) => {
            eprintln!("postconf: fatal: open {}: {e}", path.display());
            return 1;
        }
    };
    let new = if set {
        let mut updates = Vec::new();
        for it in items {
            let Some((n, v)) = it.split_once('=') else {
                eprintln!("postconf: fatal: -e requires name=value, got \"{it}\"");
                return 64;
            };
            let n = n.trim();
            if !conf::maincf::valid_name(n) {
                eprintln!("postconf: fatal: bad parameter name \"{n}\"");
                return 64;
            }
            // Like Postfix, no warning for a name postconf does not know:
            // it may be a user-defined parameter referenced as $name.
            updates.push((n.to_string(), v.trim().to_string()));
        }
        conf::edit::set_params(&text, &updates)
    } else if remove {
        conf::edit::remove_params(&text, items)
    } else {
        conf::edit::comment_out_params(&text, items)
    };
    // Refuse to write a main.cf that no longer parses.
    if let Err(errs) = conf::MainCf::parse(&new, path) {
        for e in errs {
            eprintln!("postconf: error: {e}");
        }
        eprintln!("postconf: fatal: the edit would make main.cf unreadable; nothing written");
        return 1;
    }
    match conf::edit::write_atomically(path, &new) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("postconf: fatal: write {}: {e}", path.display());
            1
        }
    }
}

fn show_master(dir: &std::path::Path, names: &[String]) -> i32 {
    let mc = match conf::mastercf::MasterCf::load(&dir.join("master.cf")) {
        Ok(m) => m,
        Err(errs) => {
            for e in errs {
                eprintln!("postconf: error: {e}");
            }
            return 1;
        }
    };
    let selects = |n: &str, s: &conf::mastercf::Service| match n.split_once('/') {
        Some((name, kind)) => s.name == name && s.kind.as_str() == kind,
        None => s.name == n,
    };
    for n in names {
        if !mc.services.iter().any(|s| selects(n, s)) {
            eprintln!("postconf: warning: unmatched request: \"{n}\"");
        }
    }
    for s in &mc.services {
        if names.is_empty() || names.iter().any(|n| selects(n, s)) {
            println!("{}", s.render());
        }
    }
    0
}

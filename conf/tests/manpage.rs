//! The manual pages in `man/` stay true to the code:
//!
//! - postern.cf(5) documents every parameter of `conf::PARAMS` with its
//!   current default, and no parameter the registry does not know;
//! - its generated PARAMETERS region is exactly what the generator builds
//!   (`cargo run -p conf --example man-params -- --write` fixes that);
//! - every page passes `mandoc -T lint -W warning` and `groff -man -ww -z`
//!   (also at the 78-column line length `man` uses in an 80-column
//!   terminal) without a message, and has the sections an admin expects.
//!
//! mandoc and groff are required: a missing one fails the test with the
//! package to install (the CI script installs both).

#[path = "../examples/man-params/render.rs"]
mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const REGENERATE: &str = "cargo run -p conf --example man-params -- --write";

fn man_root() -> PathBuf {
    render::workspace_root().join("man")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The lines of the generated region of postern.cf(5).
fn region_lines(page: &str) -> Vec<&str> {
    let lines: Vec<&str> = page.lines().collect();
    let begin = lines
        .iter()
        .position(|l| *l == render::BEGIN)
        .unwrap_or_else(|| panic!("man/man5/postern.cf.5 has no line {:?}", render::BEGIN));
    let end = lines[begin..]
        .iter()
        .position(|l| *l == render::END)
        .map(|e| begin + e)
        .unwrap_or_else(|| panic!("man/man5/postern.cf.5 has no line {:?}", render::END));
    lines[begin + 1..end].to_vec()
}

/// The parameter entries of the region, name to `Default:` line. An entry
/// is `.TP`, `.B name`, `Default: ...`; tagged paragraphs inside the
/// extra text (which may not contain `Default:` lines) are not entries.
fn documented(page: &str) -> BTreeMap<String, String> {
    let lines = region_lines(page);
    let mut out = BTreeMap::new();
    for w in lines.windows(3) {
        if let [".TP", name, default] = w
            && let Some(name) = name.strip_prefix(".B ")
            && default.starts_with("Default: ")
        {
            out.insert(name.trim().to_string(), default.to_string());
        }
    }
    out
}

#[test]
fn postern_cf_5_documents_every_parameter_with_its_current_default() {
    let page = read(&render::page_path());
    let doc = documented(&page);
    let mut problems = Vec::new();
    for p in conf::PARAMS {
        let want = render::default_line(p);
        match doc.get(p.name) {
            None => problems.push(format!("{} is not documented", p.name)),
            Some(got) if *got != want => problems.push(format!(
                "{}: the page says {got:?}, the registry {want:?}",
                p.name
            )),
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "man/man5/postern.cf.5 is behind conf::PARAMS:\n  {}\nRun: {REGENERATE}",
        problems.join("\n  ")
    );
}

#[test]
fn postern_cf_5_documents_no_parameter_the_registry_does_not_know() {
    let page = read(&render::page_path());
    let stale: Vec<String> = documented(&page)
        .into_keys()
        .filter(|n| conf::params::param(n).is_none())
        .collect();
    assert!(
        stale.is_empty(),
        "man/man5/postern.cf.5 documents parameters that conf::PARAMS does not know: {}\nRun: {REGENERATE}",
        stale.join(", ")
    );
    let extras = render::parse_extras(&read(&render::extras_path()))
        .unwrap_or_else(|e| panic!("man/postern.cf.5.extra: {e}"));
    let stale: Vec<&String> = extras
        .keys()
        .filter(|n| conf::params::param(n).is_none())
        .collect();
    assert!(
        stale.is_empty(),
        "man/postern.cf.5.extra has text for parameters that conf::PARAMS does not know: {stale:?}; \
         rename or remove those entries"
    );
}

#[test]
fn postern_cf_5_parameter_list_is_what_the_generator_builds() {
    let page = read(&render::page_path());
    let want = render::regenerate(&page, &read(&render::extras_path()))
        .unwrap_or_else(|e| panic!("cannot regenerate postern.cf.5: {e}"));
    if want != page {
        let first = page
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| page.lines().count().min(want.lines().count()));
        panic!(
            "man/man5/postern.cf.5 differs from the generated version from line {} on \
             (page: {:?}, generated: {:?}).\nRun: {REGENERATE}",
            first + 1,
            page.lines().nth(first).unwrap_or("<end of file>"),
            want.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// Every page under `man/manN/`, as paths relative to `man/` (so that
/// `.so man1/sendmail.1` resolves when the tools run in `man/`).
fn pages() -> Vec<PathBuf> {
    let root = man_root();
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for d in dirs.flatten() {
        let dname = d.file_name().to_string_lossy().into_owned();
        let Some(section) = dname.strip_prefix("man") else {
            continue;
        };
        if !d.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            if fname.ends_with(&format!(".{section}")) {
                out.push(PathBuf::from(&dname).join(fname));
            }
        }
    }
    out.sort();
    assert!(
        !out.is_empty(),
        "no manual pages found under {}",
        root.display()
    );
    out
}

/// For a page that only sources another (`.so man1/sendmail.1`), the target.
fn so_target(page: &Path) -> Option<String> {
    let text = read(&man_root().join(page));
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with(".\\\"")).collect();
    match lines.as_slice() {
        [only] => only.strip_prefix(".so ").map(|t| t.trim().to_string()),
        _ => None,
    }
}

/// Runs a formatter on one page in `man/`; `Ok(output)` or `Err` when it
/// cannot be started.
fn run_in_man(program: &str, args: &[&str], page: &Path) -> Result<String, std::io::Error> {
    let out = Command::new(program)
        .args(args)
        .arg(page)
        .current_dir(man_root())
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

fn require(program: &str, package: &str, e: std::io::Error) -> ! {
    panic!(
        "cannot run {program} ({e}): the manual page checks need it; install it with \
         `apt-get install {package}` (.ci/run does)"
    )
}

#[test]
fn every_page_passes_mandoc_lint() {
    let mut problems = Vec::new();
    for page in pages() {
        let out = match run_in_man("mandoc", &["-T", "lint", "-W", "warning"], &page) {
            Ok(o) => o,
            Err(e) => require("mandoc", "mandoc", e),
        };
        let mut lines: Vec<&str> = out.lines().collect();
        if let Some(target) = so_target(&page) {
            // A `.so` stub is what Postfix and Debian ship for mailq(1) and
            // newaliases(1); mandoc always calls .so "fragile". That one
            // warning is expected; the target is linted on its own.
            lines.retain(|l| !l.contains("WARNING: .so is fragile"));
            if !man_root().join(&target).is_file() {
                problems.push(format!(
                    "{}: .so target {target} does not exist",
                    page.display()
                ));
            }
        }
        problems.extend(lines.iter().map(|l| l.to_string()));
    }
    assert!(
        problems.is_empty(),
        "mandoc -T lint -W warning reports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_page_passes_groff_warnings() {
    let mut problems = Vec::new();
    // As typeset for print, and as `man` shows it in an 80-column terminal
    // (man-db passes the warnings on to the reader: a tag or word too long
    // for the line shows as "troff: ... cannot adjust line").
    let runs: [&[&str]; 2] = [
        &["-man", "-ww", "-z"],
        &["-man", "-Tutf8", "-rLL=78n", "-ww", "-z"],
    ];
    for args in runs {
        for page in pages() {
            let out = match run_in_man("groff", args, &page) {
                Ok(o) => o,
                Err(e) => require("groff", "groff-base", e),
            };
            problems.extend(
                out.lines()
                    .map(|l| format!("groff {}: {}: {l}", args.join(" "), page.display())),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "groff reports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_page_has_the_sections_admins_expect() {
    let expected = [
        "man1/sendmail.1",
        "man1/mailq.1",
        "man1/newaliases.1",
        "man1/postqueue.1",
        "man1/postsuper.1",
        "man1/postconf.1",
        "man1/postcat.1",
        "man1/postmap.1",
        "man1/postalias.1",
        "man5/postern.cf.5",
        "man5/postern-master.cf.5",
        "man5/postern-tables.5",
        "man8/postern.8",
        "man8/smtpd.8",
        "man8/qmgr.8",
        "man8/smtp.8",
        "man8/pickup.8",
    ];
    let found: Vec<String> = pages().iter().map(|p| p.display().to_string()).collect();
    let mut problems: Vec<String> = expected
        .iter()
        .filter(|e| !found.iter().any(|f| f == *e))
        .map(|e| format!("man/{e} is missing"))
        .collect();
    for page in pages() {
        if so_target(&page).is_some() {
            continue;
        }
        let text = read(&man_root().join(&page));
        // Commands and daemons (sections 1 and 8) also document their
        // options; the configuration pages (section 5) have none.
        let command = !page.starts_with("man5");
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "FILES",
            "SEE ALSO",
            "EXAMPLES",
        ] {
            if section == "OPTIONS" && !command {
                continue;
            }
            let present = text.lines().any(|l| {
                let l = l.trim_end();
                l == format!(".SH {section}") || l == format!(".SH \"{section}\"")
            });
            if !present {
                problems.push(format!("{}: no .SH {section}", page.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

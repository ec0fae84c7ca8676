//! Regenerates the PARAMETERS region of postern.cf(5) from the parameter
//! registry and `man/postern.cf.5.extra`, keeping the hand-written rest of
//! the page.
//!
//! ```text
//! cargo run -q -p conf --example man-params              # print the page as it must be
//! cargo run -q -p conf --example man-params -- --write   # rewrite man/man5/postern.cf.5
//! cargo run -q -p conf --example man-params | diff man/man5/postern.cf.5 -
//! ```
//!
//! The page is also the template, so do not redirect the output onto it
//! (the shell would empty it before it is read): use `--write`.
//! `cargo test -p conf --test manpage` fails while the page is out of date.

mod render;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = match args.as_slice() {
        [] => false,
        [a] if a == "--write" => true,
        _ => {
            eprintln!("usage: cargo run -p conf --example man-params [-- --write]");
            return ExitCode::from(64);
        }
    };
    let page_path = render::page_path();
    let extras_path = render::extras_path();
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let result = read(&page_path)
        .and_then(|page| Ok((page, read(&extras_path)?)))
        .and_then(|(page, extras)| render::regenerate(&page, &extras).map(|new| (page, new)));
    let (old, new) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("man-params: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !write {
        let mut out = std::io::stdout().lock();
        return match out.write_all(new.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("man-params: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if old == new {
        eprintln!("man-params: {} is up to date", page_path.display());
        return ExitCode::SUCCESS;
    }
    // Write beside the page, then rename over it: never a half-written page.
    let tmp = page_path.with_extension("5.tmp");
    let written = std::fs::write(&tmp, &new).and_then(|()| std::fs::rename(&tmp, &page_path));
    match written {
        Ok(()) => {
            eprintln!("man-params: rewrote {}", page_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("man-params: cannot write {}: {e}", page_path.display());
            ExitCode::FAILURE
        }
    }
}

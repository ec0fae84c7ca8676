//! master.cf: `conf::mastercf::MasterCf::parse` and the `postconf -M` /
//! `postconf -Mf` output (`Service::render`, `Service::render_folded`).
//!
//! Input: master.cf text (decoded lossily, as `MasterCf::load` does).
//!
//! Oracles:
//! - what `postconf -M` prints for a parsed file is itself a master.cf
//!   that parses to the same services (same fields, arguments and `-o`
//!   overrides; line numbers aside), and so is `postconf -Mf` (arguments
//!   whose braces do not nest, and for -Mf arguments starting with `#`,
//!   aside);
//! - inet endpoints and `-o` overrides of parsed services are computed
//!   without panics; errors name a line.
#![no_main]

use conf::mastercf::{MasterCf, Service};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// A service without its line number.
fn key(s: &Service) -> Service {
    Service {
        line: 0,
        ..s.clone()
    }
}

fn reparse(text: &str, what: &str, orig: &MasterCf) {
    let again = MasterCf::parse(text, Path::new("master.cf"))
        .unwrap_or_else(|e| panic!("{what} output does not parse: {e:?}\n{text}"));
    let a: Vec<Service> = orig.services.iter().map(key).collect();
    let b: Vec<Service> = again.services.iter().map(key).collect();
    assert_eq!(a, b, "{what} output parses differently:\n{text}");
}

/// True when the braces in `s` nest properly: every `{` closed, no `}`
/// without an open `{`. Only such text can be printed inside `{ }`.
fn braces_nest(s: &str) -> bool {
    let mut level = 0usize;
    for c in s.chars() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => return false,
            '}' => level -= 1,
            _ => {}
        }
    }
    level == 0
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let m = match MasterCf::parse(&text, Path::new("master.cf")) {
        Ok(m) => m,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
    };
    for s in &m.services {
        let _ = s.inet_endpoint();
        let _ = m.overrides(s);
        assert_eq!(m.render_entry(&s.name, s.kind), Some(s.render()));
    }
    // An argument with braces that do not nest (`-o a=x{y`, which Postfix
    // accepts too: its tokenizer then runs to the end of the entry) cannot
    // be printed in a form that reads back; leave those out.
    if m.services.iter().any(|s| {
        std::iter::once(&s.command)
            .chain(&s.args)
            .chain(s.overrides.iter().flat_map(|(n, v)| [n, v]))
            .any(|a| !braces_nest(a))
    }) {
        return;
    }
    reparse(&m.render(), "postconf -M", &m);
    // Folding may put an argument that starts with `#` at the start of a
    // continuation line, where it reads as a comment (as with Postfix's
    // postconf -Mf); such files are left out of the folded check.
    if m.services
        .iter()
        .any(|s| s.args.iter().any(|a| a.starts_with('#')))
    {
        return;
    }
    let folded: String = m
        .services
        .iter()
        .map(|s| s.render_folded() + "\n")
        .collect();
    reparse(&folded, "postconf -Mf", &m);
});

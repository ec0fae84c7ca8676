//! Lookup tables: `conf::tables::open` / `open_aliases` for every source
//! syntax (postmap text for texthash/hash, aliases(5) text, cidr_table(5),
//! regexp_table(5), pcre_table(5) from a file; `inline:{...}`,
//! `static:...`, `cidr:{...}`, `regexp:{...}`, `pcre:{...}` from the
//! specification itself) and the `conf::tables::Maps` search orders.
//!
//! Input: one control byte (the table type), the table source, then after
//! a NUL byte the lookup keys, one per line.
//!
//! Oracles:
//! - opening never panics; errors and warnings name the table;
//! - key/value tables are case-insensitive (a key and its ASCII upper
//!   case find the same), pattern tables say they are;
//! - a cidr table finds nothing for a key that is not an IP address;
//! - a table never returns an empty value, except an inline table with
//!   `key =` (as in Postfix), and then a `Maps` search of that key is an
//!   error ("returns an empty string result"), never a found value;
//! - the address, domain and transport searches of `Maps` never panic.
#![no_main]

use conf::error::Origin;
use conf::tables::{AddrSearch, Maps, ParentMatch, Table, TableKind, open, open_aliases};
use libfuzzer_sys::fuzz_target;
use postern_fuzz::split_control;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A file per fuzzing process for the file-based table types.
fn table_file() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("postern-fuzz-table-{}", std::process::id()))
    })
}

const FIXED_KEYS: &[&str] = &[
    "user@example.com",
    "user+ext@sub.example.com",
    "@example.com",
    "example.com",
    ".example.com",
    "postmaster",
    "192.0.2.1",
    "10.1.2.3",
    "2001:db8::1",
    "::ffff:192.0.2.1",
    "*",
];

fuzz_target!(|data: &[u8]| {
    let (control, rest) = split_control(data);
    let (source, keys) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &b""[..]),
    };
    let source = String::from_utf8_lossy(source);
    let keys = String::from_utf8_lossy(keys);
    let file = table_file();
    let from_file = |ty: &str| {
        std::fs::write(file, source.as_bytes()).expect("write table file");
        format!("{ty}:{}", file.display())
    };
    let (spec, aliases) = match control % 10 {
        0 => (from_file("texthash"), false),
        1 => (from_file("hash"), true), // aliases(5) format
        2 => (from_file("cidr"), false),
        3 => (from_file("regexp"), false),
        4 => (from_file("pcre"), false),
        5 => (format!("inline:{source}"), false),
        6 => (format!("static:{source}"), false),
        7 => (format!("cidr:{source}"), false),
        8 => (format!("regexp:{source}"), false),
        _ => (format!("pcre:{source}"), false),
    };
    let origin = Origin::File {
        path: PathBuf::from("main.cf"),
        line: 1,
    };
    let opened = if aliases {
        open_aliases(&spec, &origin)
    } else {
        open(&spec, &origin)
    };
    let table: Box<dyn Table> = match opened {
        Ok(t) => t,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
    };
    for w in table.warnings() {
        assert!(!w.to_string().is_empty());
    }
    assert!(!table.name().is_empty());
    let pattern = matches!(control % 10, 2 | 3 | 4 | 7 | 8 | 9);
    assert_eq!(
        table.kind() == TableKind::Pattern,
        pattern,
        "wrong kind for {spec}"
    );

    // Keys: the fixed ones, the input's, and each source line's first word.
    let mut all: Vec<String> = FIXED_KEYS.iter().map(|k| k.to_string()).collect();
    all.extend(keys.split('\n').map(str::to_string));
    all.extend(
        source
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|w| w.trim_end_matches(':').to_string()),
    );
    all.truncate(64);
    let mut empty_keys = Vec::new();
    for key in &all {
        let found = table.lookup(key).expect("in-memory lookups do not fail");
        if let Some(v) = &found {
            assert!(
                !v.is_empty() || table.kind() == TableKind::Pattern || control % 10 == 5,
                "empty value for {key:?}"
            );
            if v.is_empty() {
                empty_keys.push(key.clone());
            }
        }
        match table.kind() {
            TableKind::KeyValue => {
                let upper = table.lookup(&key.to_ascii_uppercase()).expect("lookup");
                assert_eq!(
                    found, upper,
                    "key/value lookup is case-sensitive for {key:?}"
                );
            }
            TableKind::Pattern => {
                if matches!(control % 10, 2 | 7) && key.parse::<std::net::IpAddr>().is_err() {
                    assert_eq!(found, None, "cidr matched a non-address {key:?}");
                }
            }
        }
    }

    let maps = Maps::from_tables(vec![table], &origin);
    for key in empty_keys.iter().filter(|k| !k.is_empty()) {
        assert!(
            maps.find(key).is_err(),
            "an empty inline value for {key:?} was not a configuration error"
        );
    }
    let search = AddrSearch {
        recipient_delimiter: "+-".into(),
        local_domain: control & 0x80 != 0,
    };
    for key in all.iter().take(16) {
        let _ = maps.find(key);
        let _ = maps.find_address(key, &search);
        let _ = maps.find_domain(key, ParentMatch::DotDomain);
        let _ = maps.find_domain(key, ParentMatch::Domain);
        let _ = maps.find_transport_with(key, "+", ParentMatch::Domain);
    }
});

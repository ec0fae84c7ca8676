//! main.cf: `conf::MainCf::parse` (logical lines, `name = value`), `$name`
//! expansion (`conf::expand::expand`), the typed configuration built from
//! it (`conf::Config::build_lenient`: every parameter's value parser), and
//! `postconf -e/-X/-#` editing (`conf::edit`).
//!
//! Input: one control byte (which parameter to edit), then main.cf text
//! (decoded lossily, as `MainCf::load` does).
//!
//! Oracles:
//! - parsed entries have valid names and trimmed values, and writing them
//!   back as `name = value` lines parses to the same settings;
//! - `set_params` changes exactly the one setting: the edited file parses,
//!   has the new value, and every other effective setting is unchanged;
//!   `remove_params` and `comment_out_params` remove exactly that setting;
//! - expansion and building the typed configuration never panic.
#![no_main]

use conf::MainCf;
use conf::edit::{comment_out_params, remove_params, set_params};
use libfuzzer_sys::fuzz_target;
use postern_fuzz::split_control;
use std::path::Path;

/// Effective settings as (name, value), without `skip`.
fn settings(m: &MainCf, skip: &str) -> Vec<(String, String)> {
    m.effective()
        .into_iter()
        .filter(|e| e.name != skip)
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

fn parse(text: &str) -> MainCf {
    MainCf::parse(text, Path::new("main.cf"))
        .unwrap_or_else(|e| panic!("edited main.cf does not parse: {e:?}\n{text}"))
}

fuzz_target!(|data: &[u8]| {
    let (control, bytes) = split_control(data);
    let text = String::from_utf8_lossy(bytes);
    let main = match MainCf::parse(&text, Path::new("main.cf")) {
        Ok(m) => m,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
    };
    for e in &main.entries {
        assert!(conf::maincf::valid_name(&e.name), "{:?}", e.name);
        assert_eq!(e.value, e.value.trim(), "value not trimmed");
        assert!(!e.value.contains('\n'));
    }

    // Written back one setting per line, it reads the same.
    let written: String = main
        .entries
        .iter()
        .map(|e| format!("{} = {}\n", e.name, e.value))
        .collect();
    let again = parse(&written);
    let pairs = |m: &MainCf| -> Vec<(String, String)> {
        m.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    assert_eq!(
        pairs(&again),
        pairs(&main),
        "settings changed when written back"
    );

    // Expansion, with main.cf's own values, and the typed configuration.
    let lookup = |n: &str| main.get(n).map(|e| e.value.clone());
    for e in main.entries.iter().take(16) {
        let _ = conf::expand::expand(&e.value, &lookup);
    }
    let (_cfg, errors) = conf::Config::build_lenient(&main, &[]);
    for e in &errors.0 {
        let _ = e.to_string();
    }

    // postconf -e / -X / -# on one name: an existing one or a new one.
    let name = match main
        .entries
        .get(usize::from(control) % (main.entries.len() + 1))
    {
        Some(e) => e.name.clone(),
        None => "fuzz_new_param".to_string(),
    };
    let value = format!("new {control} value\n$x");
    let edited = parse(&set_params(&text, &[(name.clone(), value.clone())]));
    assert_eq!(
        edited.get(&name).map(|e| e.value.as_str()),
        Some(value.replace('\n', " ").as_str()),
        "postconf -e did not set {name}"
    );
    assert_eq!(
        settings(&edited, &name),
        settings(&main, &name),
        "postconf -e changed other settings"
    );

    let removed = parse(&remove_params(&text, &[&name]));
    assert!(removed.get(&name).is_none(), "postconf -X left {name}");
    assert_eq!(
        settings(&removed, &name),
        settings(&main, &name),
        "postconf -X changed other settings"
    );

    let commented = parse(&comment_out_params(&text, &[&name]));
    assert!(commented.get(&name).is_none(), "postconf -# left {name}");
    assert_eq!(
        settings(&commented, &name),
        settings(&main, &name),
        "postconf -# changed other settings"
    );
});

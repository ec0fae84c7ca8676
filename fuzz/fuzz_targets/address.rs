//! RFC 5321 envelope addresses (`proto::parse_path`, `Mailbox::parse`,
//! their `Display` forms) and xtext (`xtext_decode`, `xtext_encode`).
//!
//! Input: text (decoded lossily). The same text is tried as a path, a bare
//! mailbox and xtext.
//!
//! Oracles:
//! - a parsed path or mailbox prints (`Display`) as text that parses back
//!   to the same value: what smtpd accepted, the queue stores and the smtp
//!   client sends (`MAIL FROM:<...>`) is the same address; the printed form
//!   has no control characters, and a mailbox prints inside `<>` as the
//!   path that parses back to it;
//! - `needs_smtputf8` is true exactly when the address is not ASCII;
//! - xtext: encode then decode is the identity, and a decoded value
//!   re-encodes to xtext that decodes to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::address::{Mailbox, Path, parse_path};
use proto::xtext::{xtext_decode, xtext_encode};

fn check_mailbox(m: &Mailbox) {
    let printed = m.to_string();
    assert!(!printed.chars().any(char::is_control), "{printed:?}");
    let again = Mailbox::parse(&printed)
        .unwrap_or_else(|e| panic!("{m:?} prints as {printed:?}, which fails: {e}"));
    assert_eq!(&again, m, "mailbox changed going through {printed:?}");
    let path = Path::Mailbox(m.clone());
    let wire = path.to_string();
    let again = parse_path(&wire).unwrap_or_else(|e| panic!("{m:?} as a path {wire:?} fails: {e}"));
    assert_eq!(again, path, "path changed going through {wire:?}");
    assert_eq!(path.address(), printed);
    assert_eq!(
        m.needs_smtputf8(),
        !printed.is_ascii(),
        "needs_smtputf8 wrong for {printed:?}"
    );
    let _ = m.has_routing_chars();
    let mut lower = m.clone();
    lower.lowercase_domain();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_path(&text) {
        Ok(Path::Null) => assert_eq!(Path::Null.to_string(), "<>"),
        Ok(Path::Mailbox(m)) => check_mailbox(&m),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(m) = Mailbox::parse(&text) {
        check_mailbox(&m);
    }

    let enc = xtext_encode(&text);
    assert!(enc.bytes().all(|b| (33..=126).contains(&b) && b != b'='));
    assert_eq!(
        xtext_decode(&enc).as_deref(),
        Ok(&*text),
        "xtext round trip"
    );
    if let Ok(dec) = xtext_decode(&text) {
        assert_eq!(xtext_decode(&xtext_encode(&dec)), Ok(dec));
    }
});

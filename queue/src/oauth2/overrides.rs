//! The value syntax of `smtp_oauth2_account_maps`: space-separated
//! `name=value` pairs, a value with spaces in double quotes (`\"` and `\\`
//! inside), names with or without the `smtp_oauth2_` prefix.

/// The settings a table entry may override, by short name.
pub const SETTING_NAMES: &[&str] = &[
    "token_endpoint",
    "client_id",
    "client_secret_file",
    "client_certificate_file",
    "client_key_file",
    "refresh_token_file",
    "scope",
];

/// Index into [`SETTING_NAMES`].
pub(crate) type Setting = usize;
pub(crate) const ENDPOINT: Setting = 0;
pub(crate) const CLIENT_ID: Setting = 1;
pub(crate) const SECRET: Setting = 2;
pub(crate) const CERT: Setting = 3;
pub(crate) const KEY: Setting = 4;
pub(crate) const REFRESH: Setting = 5;
pub(crate) const SCOPE: Setting = 6;

/// Parses a table value into `(setting index, value)` pairs.
///
/// # Errors
/// A word that is not `name=value`, an unknown or repeated name, or an
/// unterminated quote. Messages quote names, never values (a pasted secret
/// must not end up in a log).
pub(crate) fn parse_overrides(value: &str) -> Result<Vec<(usize, String)>, String> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut chars = value.chars().peekable();
    let mut word = 0;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        word += 1;
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            name.push(c);
        }
        if chars.next_if_eq(&'=').is_none() {
            return Err(format!(
                "word {word} is not name=value; expected space-separated name=value pairs"
            ));
        }
        let short = name.strip_prefix("smtp_oauth2_").unwrap_or(&name);
        let Some(index) = SETTING_NAMES.iter().position(|n| *n == short) else {
            let shown: String = name.chars().filter(|c| !c.is_control()).take(60).collect();
            return Err(format!(
                "unknown setting \"{shown}\"; allowed: {} (or with the smtp_oauth2_ prefix)",
                SETTING_NAMES.join(", ")
            ));
        };
        let mut v = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("{short}: missing closing double quote")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => v.push(c),
                        None => return Err(format!("{short}: missing closing double quote")),
                    },
                    Some(c) => v.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!(
                    "{short}: white space expected after the closing double quote"
                ));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                v.push(c);
            }
        }
        if out.iter().any(|(i, _)| *i == index) {
            return Err(format!("{short} is given twice"));
        }
        out.push((index, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn override_parser() {
        assert_eq!(parse_overrides("").unwrap(), vec![]);
        assert_eq!(
            parse_overrides("  client_id=a\tscope=\"x y\\\"z\"  smtp_oauth2_client_secret_file=  ")
                .unwrap(),
            vec![
                (CLIENT_ID, "a".to_string()),
                (SCOPE, "x y\"z".to_string()),
                (SECRET, String::new())
            ]
        );
        for (bad, why) in [
            ("client_id", "word 1 is not name=value"),
            ("=x", "unknown setting \"\""),
            ("client_id=a client_id=b", "given twice"),
            ("scope=\"abc", "missing closing double quote"),
            ("scope=\"abc\\", "missing closing double quote"),
            ("scope=\"a\"b", "white space expected"),
            ("client_secret=hunter2", "unknown setting \"client_secret\""),
        ] {
            let e = parse_overrides(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn override_parser_never_panics(s in "\\PC*") {
            let _ = parse_overrides(&s);
        }

        #[test]
        fn override_parser_never_panics_on_near_misses(
            s in "([a-z_]{0,30}(=(\"[^\"]{0,10}\"?|[^ ]{0,10}))? ?){0,6}"
        ) {
            if let Ok(pairs) = parse_overrides(&s) {
                for (i, _) in &pairs {
                    prop_assert!(*i < SETTING_NAMES.len());
                }
            }
        }

        #[test]
        fn quoted_values_round_trip(v in "[^\\x00]{0,40}") {
            let quoted = format!("scope=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
            let pairs = parse_overrides(&quoted).unwrap();
            prop_assert_eq!(pairs, vec![(SCOPE, v)]);
        }
    }
}

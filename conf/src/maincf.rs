//! main.cf reading, with Postfix's rules for logical lines: `#` comment lines
//! and blank lines are ignored, a line that starts with white space continues
//! the previous logical line, and each logical line is `name = value`.

use crate::error::{Error, Origin};
use std::path::{Path, PathBuf};

/// One `name = value` setting of main.cf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Parameter name.
    pub name: String,
    /// Value with continuation lines joined by a single space and outer white space removed.
    pub value: String,
    /// 1-based line number where the logical line starts.
    pub line: usize,
}

/// A parsed main.cf: its settings in file order (a later setting of the same
/// name overrides an earlier one, as in Postfix).
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    /// The file that was read (empty for text parsed from memory).
    pub path: PathBuf,
    /// Settings in file order.
    pub entries: Vec<Entry>,
}

/// Text with the number of the line it belongs to.
type NumberedLines = Vec<(usize, String)>;

/// The logical lines (text and the line number where each started) and
/// warnings about stray continuation lines.
pub(crate) fn logical_lines(text: &str) -> (NumberedLines, NumberedLines) {
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut last_was_content = false;
    for (i, raw) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start_matches(is_space);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = raw.starts_with(is_space);
        if continues {
            if last_was_content && let Some(last) = lines.last_mut() {
                last.1.push(' ');
                last.1.push_str(trimmed.trim_end_matches(is_space));
                continue;
            }
            warnings.push((
                lineno,
                "continuation line does not continue preceding text; ignored".to_string(),
            ));
            continue;
        }
        lines.push((lineno, raw.trim_end_matches(is_space).to_string()));
        last_was_content = true;
    }
    (lines, warnings)
}

/// Postfix's white space (ISSPACE): what starts a continuation line and
/// is trimmed around names. The same test for reading and for editing
/// (`postconf -e`): before, the reader took a line starting with, say, a
/// vertical tab or U+00A0 for a setting and the editor for a continuation
/// line, so `postconf -X` left the setting in place (found by fuzzing).
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// True when `name` is a syntactically valid parameter name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MainCf {
    /// Reads and parses a main.cf file. A missing file is an error.
    ///
    /// # Errors
    /// I/O errors, and every malformed line (all of them, not only the first).
    pub fn load(path: &Path) -> Result<MainCf, Vec<Error>> {
        let text = std::fs::read(path).map_err(|e| vec![Error::io(path, e)])?;
        let text = String::from_utf8_lossy(&text);
        MainCf::parse(&text, path)
    }

    /// Parses main.cf text; `path` is used in error messages.
    ///
    /// # Errors
    /// Every line that is not `name = value`.
    pub fn parse(text: &str, path: &Path) -> Result<MainCf, Vec<Error>> {
        let (lines, _warnings) = logical_lines(text);
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        for (line, content) in lines {
            let origin = Origin::File {
                path: path.to_path_buf(),
                line,
            };
            let Some(eq) = content.find('=') else {
                errors.push(Error::Syntax {
                    origin,
                    message: format!(
                        "missing '=' after parameter name: \"{}\" (expected name = value)",
                        content.chars().take(60).collect::<String>()
                    ),
                });
                continue;
            };
            let name = content[..eq].trim_matches(is_space);
            if !valid_name(name) {
                errors.push(Error::Syntax {
                    origin,
                    message: format!(
                        "bad parameter name \"{name}\": names use letters, digits and '_' only"
                    ),
                });
                continue;
            }
            entries.push(Entry {
                name: name.to_string(),
                value: content[eq + 1..].trim().to_string(),
                line,
            });
        }
        if errors.is_empty() {
            Ok(MainCf {
                path: path.to_path_buf(),
                entries,
            })
        } else {
            Err(errors)
        }
    }

    /// The last setting of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.name == name)
    }

    /// The effective settings: one per name (the last one), sorted by name.
    pub fn effective(&self) -> Vec<&Entry> {
        let mut map = std::collections::BTreeMap::new();
        for e in &self.entries {
            map.insert(e.name.as_str(), e);
        }
        map.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(t: &str) -> MainCf {
        MainCf::parse(t, Path::new("main.cf")).unwrap()
    }

    #[test]
    fn continuation_comments_and_blank_lines() {
        let m = parse(
            "# comment\nmyhostname = mx.example.com\n\nmydestination = a,\n    b,\n  # inner comment\n\tc\nrelayhost=[smtp.office365.com]:587\n",
        );
        assert_eq!(m.get("myhostname").unwrap().value, "mx.example.com");
        assert_eq!(m.get("mydestination").unwrap().value, "a, b, c");
        assert_eq!(m.get("mydestination").unwrap().line, 4);
        assert_eq!(
            m.get("relayhost").unwrap().value,
            "[smtp.office365.com]:587"
        );
    }

    #[test]
    fn later_setting_wins_and_crlf_is_accepted() {
        let m = parse("a = 1\r\nb = 2\r\na = 3\r\n");
        assert_eq!(m.get("a").unwrap().value, "3");
        assert_eq!(m.effective().len(), 2);
    }

    #[test]
    fn errors_name_file_and_line_and_all_are_reported() {
        let errs = MainCf::parse(
            "good = 1\nno equals here\nbad-name = 2\n",
            Path::new("/etc/postern/main.cf"),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        let s0 = errs[0].to_string();
        assert!(
            s0.starts_with("/etc/postern/main.cf:2: missing '='"),
            "{s0}"
        );
        let s1 = errs[1].to_string();
        assert!(
            s1.starts_with("/etc/postern/main.cf:3: bad parameter name"),
            "{s1}"
        );
    }

    #[test]
    fn empty_value_is_allowed() {
        assert_eq!(parse("relayhost =\n").get("relayhost").unwrap().value, "");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = MainCf::parse(&s, Path::new("x"));
        }

        #[test]
        fn parses_what_it_is_given(
            entries in proptest::collection::vec(("[a-z][a-z0-9_]{0,20}", "[ -~&&[^#]]{0,40}"), 0..20)
        ) {
            let mut text = String::new();
            for (n, v) in &entries {
                text.push_str(&format!("{n} = {v}\n# c\n\n"));
            }
            let m = MainCf::parse(&text, Path::new("x")).unwrap();
            prop_assert_eq!(m.entries.len(), entries.len());
            for (e, (n, v)) in m.entries.iter().zip(entries.iter()) {
                prop_assert_eq!(&e.name, n);
                prop_assert_eq!(&e.value, v.trim());
            }
        }
    }
}

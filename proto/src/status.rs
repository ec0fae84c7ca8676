//! Enhanced mail system status codes (RFC 3463), e.g. `5.7.60`.

use std::fmt;
use std::str::FromStr;

/// An enhanced status code `class.subject.detail` (RFC 3463).
///
/// `class` is 2 (success), 4 (persistent transient failure) or 5 (permanent
/// failure); `subject` and `detail` have one to three digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// 0 to 999.
    pub subject: u16,
    /// 0 to 999.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code from its three parts; the caller keeps them in range.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// Parses exactly one code, e.g. `"5.7.60"`. Returns `None` unless the
    /// whole string is `class.subject.detail` with class 2, 4 or 5 and
    /// subject and detail of one to three ASCII digits.
    pub fn parse(s: &str) -> Option<EnhancedCode> {
        let mut parts = s.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() || class.len() != 1 {
            return None;
        }
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(EnhancedCode {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }

    /// Parses a code at the start of `text` that is followed by whitespace
    /// or the end of the text, as in reply lines (`"2.1.0 Ok"`). Returns the
    /// code and the rest of the text with the separating whitespace removed.
    pub fn parse_prefix(text: &str) -> Option<(EnhancedCode, &str)> {
        let end = text.find([' ', '\t']).unwrap_or(text.len());
        let code = EnhancedCode::parse(&text[..end])?;
        Some((code, text[end..].trim_start_matches([' ', '\t'])))
    }

    /// The generic code for a basic reply code: `2.0.0` for 2xx (and the
    /// 1xx/3xx codes, which have no failure class), `4.0.0` for 4xx and
    /// `5.0.0` for 5xx and anything larger.
    pub const fn default_for(code: u16) -> EnhancedCode {
        let class = match code {
            0..=399 => 2,
            400..=499 => 4,
            _ => 5,
        };
        EnhancedCode::new(class, 0, 0)
    }

    /// True for class 2.
    pub const fn is_success(&self) -> bool {
        self.class == 2
    }

    /// True for class 4.
    pub const fn is_transient(&self) -> bool {
        self.class == 4
    }

    /// True for class 5.
    pub const fn is_permanent(&self) -> bool {
        self.class == 5
    }
}

/// One to three ASCII digits.
fn number(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// The error of [`EnhancedCode::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (want class.subject.detail, class 2, 4 or 5): {0:?}")]
pub struct BadEnhancedCode(pub String);

impl FromStr for EnhancedCode {
    type Err = BadEnhancedCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnhancedCode::parse(s).ok_or_else(|| BadEnhancedCode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_table() {
        type Parts = Option<(u8, u16, u16)>;
        let table: &[(&str, Parts)] = &[
            ("5.7.60", Some((5, 7, 60))),
            ("4.3.2", Some((4, 3, 2))),
            ("2.0.0", Some((2, 0, 0))),
            ("5.999.999", Some((5, 999, 999))),
            ("5.7.1000", None),
            ("3.0.0", None),
            ("1.0.0", None),
            ("55.0.0", None),
            ("5.7", None),
            ("5.7.", None),
            ("5..1", None),
            ("5.7.1.2", None),
            ("5.+7.1", None),
            ("5.7.1 ", None),
            (" 5.7.1", None),
            ("", None),
            ("five", None),
        ];
        for (input, want) in table {
            let got = EnhancedCode::parse(input).map(|c| (c.class, c.subject, c.detail));
            assert_eq!(got, *want, "input {input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        let c = EnhancedCode::parse("5.7.60").unwrap();
        assert_eq!(c.to_string(), "5.7.60");
        assert_eq!(
            "4.4.1".parse::<EnhancedCode>().unwrap(),
            EnhancedCode::new(4, 4, 1)
        );
        assert!("x".parse::<EnhancedCode>().is_err());
    }

    #[test]
    fn prefix() {
        assert_eq!(
            EnhancedCode::parse_prefix("2.1.0 Ok"),
            Some((EnhancedCode::new(2, 1, 0), "Ok"))
        );
        assert_eq!(
            EnhancedCode::parse_prefix("5.7.1"),
            Some((EnhancedCode::new(5, 7, 1), ""))
        );
        assert_eq!(EnhancedCode::parse_prefix("5.7.1: no"), None);
        assert_eq!(EnhancedCode::parse_prefix("mail.example.com ESMTP"), None);
    }

    #[test]
    fn defaults() {
        assert_eq!(EnhancedCode::default_for(250).to_string(), "2.0.0");
        assert_eq!(EnhancedCode::default_for(451).to_string(), "4.0.0");
        assert_eq!(EnhancedCode::default_for(550).to_string(), "5.0.0");
        assert_eq!(EnhancedCode::default_for(354).to_string(), "2.0.0");
        assert!(EnhancedCode::default_for(421).is_transient());
        assert!(EnhancedCode::default_for(554).is_permanent());
        assert!(EnhancedCode::default_for(221).is_success());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,20}") {
            let _ = EnhancedCode::parse(&s);
            let _ = EnhancedCode::parse_prefix(&s);
        }

        #[test]
        fn round_trip(class in prop::sample::select(vec![2u8, 4, 5]), s in 0u16..1000, d in 0u16..1000) {
            let c = EnhancedCode::new(class, s, d);
            prop_assert_eq!(EnhancedCode::parse(&c.to_string()), Some(c));
        }
    }
}

//! xtext (RFC 3461 section 4), the encoding of ESMTP parameter values
//! such as `ORCPT=rfc822;user+40example.com` and `ENVID`.

/// Why [`xtext_decode`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XtextError {
    /// A `+` not followed by two hex digits.
    #[error("'+' not followed by two hex digits in xtext {0:?}")]
    BadEscape(String),
    /// A character outside `!`..`~`, or a raw `=`.
    #[error("character {0:?} not allowed in xtext")]
    BadChar(char),
    /// The decoded bytes are not UTF-8.
    #[error("decoded xtext is not UTF-8")]
    NotUtf8,
}

/// Decodes xtext (RFC 3461 4): `+XX` is the byte with hex value XX (lower
/// case hex digits are tolerated).
///
/// # Errors
/// An [`XtextError`] for a bad escape, a disallowed character or a result
/// that is not UTF-8.
pub fn xtext_decode(s: &str) -> Result<String, XtextError> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| XtextError::BadEscape(s.to_string()))?;
                let byte = u8::from_str_radix(hex, 16)
                    .map_err(|_| XtextError::BadEscape(s.to_string()))?;
                out.push(byte);
                i += 3;
            }
            b @ 33..=126 if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => {
                let c = s[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(XtextError::BadChar(c));
            }
        }
    }
    String::from_utf8(out).map_err(|_| XtextError::NotUtf8)
}

/// Encodes text as xtext: bytes outside `!`..`~`, `+` and `=` become `+XX`
/// (upper-case hex).
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn xtext() {
        assert_eq!(
            xtext_encode("rfc822;a+b=c@d é"),
            "rfc822;a+2Bb+3Dc@d+20+C3+A9"
        );
        assert_eq!(
            xtext_decode("rfc822;a+2Bb+3Dc@d+20+C3+A9").unwrap(),
            "rfc822;a+b=c@d é"
        );
        assert_eq!(xtext_decode("a+2bc").unwrap(), "a+c");
        assert_eq!(
            xtext_decode("a+2"),
            Err(XtextError::BadEscape("a+2".into()))
        );
        assert_eq!(
            xtext_decode("a+zz"),
            Err(XtextError::BadEscape("a+zz".into()))
        );
        assert_eq!(xtext_decode("a b"), Err(XtextError::BadChar(' ')));
        assert_eq!(xtext_decode("a=b"), Err(XtextError::BadChar('=')));
        assert_eq!(xtext_decode("é"), Err(XtextError::BadChar('é')));
        assert_eq!(xtext_decode("+FF"), Err(XtextError::NotUtf8));
    }

    proptest! {
        #[test]
        fn xtext_round_trip(s in "\\PC{0,30}") {
            let enc = xtext_encode(&s);
            prop_assert!(enc.bytes().all(|b| (33..=126).contains(&b) && b != b'='));
            prop_assert_eq!(xtext_decode(&enc), Ok(s));
        }
    }
}

//! The extensions a server announces in its EHLO reply (RFC 5321 4.1.1.1).

use crate::reply::Reply;

/// A parsed EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ehlo {
    /// The text of the first line (the server's name and greeting).
    pub greeting: String,
    /// Each later line as (KEYWORD upper-cased, parameters as sent, with
    /// outer blanks trimmed; empty when there are none). The obsolete
    /// `AUTH=LOGIN PLAIN` form is stored as `("AUTH", "LOGIN PLAIN")`.
    pub extensions: Vec<(String, String)>,
}

/// Parses the lines of an EHLO reply into greeting and extensions. Lines
/// that are empty are skipped; the reply code is not checked.
pub fn parse_ehlo(reply: &Reply) -> Ehlo {
    let mut lines = reply.lines.iter();
    let greeting = lines.next().cloned().unwrap_or_default();
    let mut extensions = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (word, params) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        let upper = word.to_ascii_uppercase();
        if upper.starts_with("AUTH=") {
            // Old Outlook-era form: "AUTH=LOGIN PLAIN".
            let mut mechs = word[5..].to_string();
            if !params.is_empty() {
                if !mechs.is_empty() {
                    mechs.push(' ');
                }
                mechs.push_str(params);
            }
            extensions.push(("AUTH".to_string(), mechs));
        } else {
            extensions.push((upper, params.to_string()));
        }
    }
    Ehlo {
        greeting,
        extensions,
    }
}

impl Ehlo {
    /// True if the server announced `keyword` (case-insensitive).
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(keyword))
    }

    /// The parameters of the first line announcing `keyword`
    /// (case-insensitive): `Some("")` when it has none, `None` when the
    /// keyword is absent.
    pub fn param(&self, keyword: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|(_, v)| v.as_str())
    }

    /// The SASL mechanisms of every `AUTH` line (both the `AUTH X Y` and the
    /// `AUTH=X Y` form), upper-cased, without duplicates, in announced order.
    pub fn auth_mechanisms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, v) in &self.extensions {
            if k != "AUTH" {
                continue;
            }
            for m in v.split_ascii_whitespace() {
                let m = m.to_ascii_uppercase();
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// The `SIZE` limit in bytes. `None` if `SIZE` is absent, has no
    /// number or has an invalid one; `Some(0)` means "no fixed limit"
    /// (RFC 1870).
    pub fn size(&self) -> Option<u64> {
        self.param("SIZE")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;
    use proptest::prelude::*;

    fn ehlo_of(wire: &[u8]) -> Ehlo {
        let mut p = ReplyParser::new();
        p.feed(wire);
        parse_ehlo(&p.next_reply().unwrap().unwrap())
    }

    #[test]
    fn exchange_online() {
        let e = ehlo_of(
            b"250-BN8PR04CA0001.outlook.office365.com Hello [192.0.2.7]\r\n\
              250-SIZE 157286400\r\n\
              250-PIPELINING\r\n\
              250-DSN\r\n\
              250-ENHANCEDSTATUSCODES\r\n\
              250-AUTH LOGIN XOAUTH2\r\n\
              250-8BITMIME\r\n\
              250-BINARYMIME\r\n\
              250-CHUNKING\r\n\
              250 SMTPUTF8\r\n",
        );
        assert_eq!(
            e.greeting,
            "BN8PR04CA0001.outlook.office365.com Hello [192.0.2.7]"
        );
        assert!(e.has("PIPELINING"));
        assert!(e.has("chunking"));
        assert!(!e.has("STARTTLS"));
        assert_eq!(e.size(), Some(157_286_400));
        assert_eq!(e.param("SIZE"), Some("157286400"));
        assert_eq!(e.param("DSN"), Some(""));
        assert_eq!(e.param("XCLIENT"), None);
        assert_eq!(e.auth_mechanisms(), vec!["LOGIN", "XOAUTH2"]);
    }

    #[test]
    fn old_auth_form_and_case() {
        let e = ehlo_of(
            b"250-mx\r\n250-auth=login PLAIN\r\n250-AUTH PLAIN CRAM-MD5\r\n250-size\r\n250 starttls\r\n",
        );
        assert!(e.has("AUTH"));
        assert!(e.has("STARTTLS"));
        assert_eq!(e.auth_mechanisms(), vec!["LOGIN", "PLAIN", "CRAM-MD5"]);
        assert_eq!(e.size(), None);
        assert_eq!(
            e.extensions[0],
            ("AUTH".to_string(), "login PLAIN".to_string())
        );
    }

    #[test]
    fn single_line() {
        let e = ehlo_of(b"250 mx.example.com\r\n");
        assert_eq!(e.greeting, "mx.example.com");
        assert!(e.extensions.is_empty());
        assert!(e.auth_mechanisms().is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(lines in proptest::collection::vec(".{0,40}", 0..6)) {
            let r = Reply { code: 250, enhanced: None, lines };
            let e = parse_ehlo(&r);
            let _ = (e.auth_mechanisms(), e.size(), e.has("AUTH"));
        }
    }
}

//! RFC 2047 encoded words (`=?charset?B|Q?text?=`) in header values, for
//! the Subject that tracking records.

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in UTF-8,
/// US-ASCII and ISO-8859-1 (Windows-1252 read as ISO-8859-1); other
/// charsets and malformed words stay as written.
pub fn decode_words(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut pending_space = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((text, used)) = encoded_word(rest) {
            // Blanks between two encoded words are not part of the text.
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&text);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == ' ' || c == '\t' {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            last_was_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `s`: its text and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, body) = body.split_once('?')?;
    let (enc, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if text.contains(' ') || charset.is_empty() {
        return None;
    }
    let used = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    let bytes = match enc {
        "B" | "b" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .ok()?
        }
        "Q" | "q" => {
            let b = text.as_bytes();
            let mut v = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => v.push(b' '),
                    b'=' => {
                        let h = text.get(i + 1..i + 3)?;
                        v.push(u8::from_str_radix(h, 16).ok()?);
                        i += 2;
                    }
                    x => v.push(x),
                }
                i += 1;
            }
            v
        }
        _ => return None,
    };
    // RFC 2231 language suffix: utf-8*en.
    let cs = charset
        .split('*')
        .next()
        .unwrap_or(charset)
        .to_ascii_lowercase();
    let text = match cs.as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8_lossy(&bytes).into_owned(),
        "iso-8859-1" | "latin1" | "iso-8859-15" | "windows-1252" | "cp1252" => {
            bytes.iter().map(|&b| b as char).collect()
        }
        _ => return None,
    };
    Some((text, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("plain text"), "plain text");
        assert_eq!(decode_words("=?ISO-8859-1?Q?Gr=FC=DFe?="), "Grüße");
        assert_eq!(decode_words("a =?utf-8?b?w6k=?= b"), "a é b");
        assert_eq!(
            decode_words("=?koi8-r?B?8NLJ18XU?="),
            "=?koi8-r?B?8NLJ18XU?="
        );
        assert_eq!(decode_words("=?utf-8?q?bad=Z?="), "=?utf-8?q?bad=Z?=");
    }
}

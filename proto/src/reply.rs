//! SMTP replies: the [`Reply`] value, its wire encoding (server side), the
//! incremental [`ReplyParser`] (client side) and EHLO keyword parsing.

use crate::status::EnhancedCode;

pub use crate::ehlo::{Ehlo, parse_ehlo};

/// The longest reply line [`ReplyParser`] accepts, without its line end.
pub const MAX_REPLY_LINE: usize = 64 * 1024;

/// The largest multi-line reply [`ReplyParser`] accepts, in bytes.
pub const MAX_REPLY_SIZE: usize = 1024 * 1024;

/// One SMTP reply, possibly of several lines.
///
/// `lines` hold the text after `NNN-`/`NNN ` with the enhanced status code
/// removed; `enhanced` is the enhanced code of the first line, if it had one
/// whose class matches the reply code. There is always at least one line
/// (possibly empty) in replies built by [`Reply::new`] or [`ReplyParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, 200 to 599.
    pub code: u16,
    /// The enhanced status code (RFC 3463), if the reply carried one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without code, separator or enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply whose `text` is split on `'\n'` into lines (a `'\r'` before
    /// the `'\n'` is dropped). An empty `text` gives one empty line.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Reply {
        let lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (e.g. 354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced code, or the generic one for the reply code
    /// ([`EnhancedCode::default_for`]).
    pub fn dsn(&self) -> EnhancedCode {
        self.enhanced
            .unwrap_or_else(|| EnhancedCode::default_for(self.code))
    }

    /// The lines joined with `'\n'`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The whole reply on one line: code, enhanced code if any, and the
    /// lines joined by single spaces, e.g.
    /// `550 5.7.60 SMTP; Client does not have permissions to send as this sender`.
    /// Control characters in the text are replaced by spaces.
    pub fn one_line(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(e) = self.enhanced {
            s.push(' ');
            s.push_str(&e.to_string());
        }
        for line in &self.lines {
            if !line.is_empty() {
                s.push(' ');
                s.push_str(line);
            }
        }
        sanitize(&s)
    }

    /// The reply as Postfix quotes a remote reply in its `said:` log text:
    /// every line with its own `NNN-`/`NNN ` prefix and enhanced code,
    /// joined by single spaces (for one line, the same as
    /// [`Reply::one_line`]). Control characters are replaced by spaces.
    pub fn said_text(&self) -> String {
        let wire = self.to_wire();
        let text = String::from_utf8_lossy(&wire);
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        sanitize(&lines.join(" "))
    }

    /// The reply for the wire (server side): `250-first\r\n250 last\r\n`,
    /// with the enhanced code repeated on every line when present. CR and
    /// LF inside line texts are replaced by spaces so one reply can never
    /// turn into two.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let enhanced = self.enhanced.map(|e| e.to_string());
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            out.extend_from_slice(format!("{:03}", self.code).as_bytes());
            let sep = if i + 1 == count { b' ' } else { b'-' };
            let mut body = String::new();
            if let Some(e) = &enhanced {
                body.push_str(e);
            }
            if !text.is_empty() {
                if !body.is_empty() {
                    body.push(' ');
                }
                body.push_str(text);
            }
            if !body.is_empty() || sep == b'-' {
                out.push(sep);
            }
            out.extend(
                body.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

impl std::fmt::Display for Reply {
    /// The same as [`Reply::one_line`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Replaces control characters by spaces, for log lines.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Why [`ReplyParser`] gave up on the server's output. After an error the
/// parser keeps returning it: the connection is not usable any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line does not start with a reply code 200-599 followed by `' '`,
    /// `'-'` or the line end.
    #[error("malformed reply line (no 3-digit reply code): {0:?}")]
    Malformed(String),
    /// A multi-line reply changed its code between lines.
    #[error("inconsistent reply codes in multi-line reply: {first} then {later}")]
    InconsistentCode {
        /// The code of the first line.
        first: u16,
        /// The differing code of a later line.
        later: u16,
    },
    /// A line exceeded [`MAX_REPLY_LINE`] bytes.
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    /// A multi-line reply exceeded [`MAX_REPLY_SIZE`] bytes.
    #[error("multi-line reply longer than {MAX_REPLY_SIZE} bytes")]
    ReplyTooLong,
}

/// Incremental parser for the replies a server sends (client side).
///
/// Feed it whatever the connection delivered, then call
/// [`ReplyParser::next_reply`] until it returns `Ok(None)`; replies come out
/// in order, so pipelined replies are fine. Lines may end in CRLF or a bare
/// LF. Bytes that are not UTF-8 are decoded lossily.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf`.
    pos: usize,
    /// Lines of the reply being assembled.
    pending: Option<Reply>,
    pending_size: usize,
    error: Option<ReplyError>,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Appends bytes received from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes are buffered that do not yet form a whole reply.
    pub fn has_partial(&self) -> bool {
        self.pos < self.buf.len() || self.pending.is_some()
    }

    /// The next complete reply, `Ok(None)` if more input is needed.
    ///
    /// # Errors
    /// A [`ReplyError`] for a malformed line, codes that differ within one
    /// multi-line reply, or over-long lines or replies; the error repeats on
    /// every later call.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.parse() {
            Ok(r) => Ok(r),
            Err(e) => {
                self.error = Some(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                self.pending = None;
                Err(e)
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_REPLY_LINE + 1 {
                    return Err(ReplyError::LineTooLong);
                }
                self.compact();
                return Ok(None);
            };
            let raw = &rest[..nl];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.len() > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let (code, last, text) = parse_line(line)?;
            self.pos += nl + 1;
            self.pending_size += line.len();
            if self.pending_size > MAX_REPLY_SIZE {
                return Err(ReplyError::ReplyTooLong);
            }
            let reply = match self.pending.take() {
                None => {
                    let (enhanced, text) = split_enhanced(code, &text, None);
                    Reply {
                        code,
                        enhanced,
                        lines: vec![text],
                    }
                }
                Some(mut r) => {
                    if r.code != code {
                        return Err(ReplyError::InconsistentCode {
                            first: r.code,
                            later: code,
                        });
                    }
                    // A code on a later line is stripped only when it
                    // repeats the first line's; with none on the first
                    // line it is text (it used to be dropped, found by
                    // fuzzing: `250-a` then `250 2.1.5 b` lost "2.1.5").
                    let text = match r.enhanced {
                        Some(first) => split_enhanced(code, &text, Some(first)).1,
                        None => text,
                    };
                    r.lines.push(text);
                    r
                }
            };
            if last {
                self.pending_size = 0;
                return Ok(Some(reply));
            }
            self.pending = Some(reply);
        }
    }

    /// Drops consumed bytes once they dominate the buffer.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Splits `NNN[-| ]text` into code, "is last line" and text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || ReplyError::Malformed(String::from_utf8_lossy(line).into_owned());
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    if !(200..600).contains(&code) {
        return Err(malformed());
    }
    let (last, text) = match line.get(3) {
        None => (true, &line[3..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(malformed()),
    };
    Ok((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// Removes a leading enhanced code from `text` when its class matches the
/// reply code and, on continuation lines, when it equals `first`'s code.
fn split_enhanced(
    code: u16,
    text: &str,
    first: Option<EnhancedCode>,
) -> (Option<EnhancedCode>, String) {
    if let Some((e, rest)) = EnhancedCode::parse_prefix(text) {
        let class_ok = u16::from(e.class) == code / 100;
        let matches_first = first.is_none_or(|f| f == e);
        if class_ok && matches_first {
            return (Some(e), rest.to_string());
        }
    }
    (None, text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `reply` fuzz target: when the first line had no
    /// enhanced code, one on a later line was stripped and lost, and the
    /// reply no longer printed as it was received.
    #[test]
    fn fuzz_later_code_without_first_is_text() {
        let crash: &[u8] = b"250-8BITMIME\r\n250-AUT535 5.7.M3PRender OK\r\n250 2.11.50 2.0.0 Ok: queued as 12345\r\n";
        let mut p = ReplyParser::new();
        p.feed(crash);
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.lines[2], "2.11.50 2.0.0 Ok: queued as 12345");
        assert_eq!(r.to_wire(), crash);
        // With a code on the first line, repeats are still stripped.
        let mut p = ReplyParser::new();
        p.feed(b"250-2.0.0 a\r\n250 2.0.0 b\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(r.lines, ["a", "b"]);
    }

    /// Feeds `input` split at every pair of positions, expecting the same
    /// replies (or error) every time.
    fn parse_all_splits(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let whole = parse_chunks(&[input]);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = parse_chunks(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, whole, "split at {i},{j} of {input:?}");
            }
        }
        whole
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c);
            while let Some(r) = p.next_reply()? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn e(s: &str) -> Option<EnhancedCode> {
        EnhancedCode::parse(s)
    }

    #[test]
    fn parse_table() {
        type Want<'a> = Vec<(u16, Option<&'a str>, Vec<&'a str>)>;
        let table: &[(&[u8], Want)] = &[
            (
                b"220 mx.example.com ESMTP\r\n",
                vec![(220, None, vec!["mx.example.com ESMTP"])],
            ),
            (b"250 2.1.0 Ok\r\n", vec![(250, Some("2.1.0"), vec!["Ok"])]),
            (
                b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
                vec![(250, None, vec!["mx.example.com", "PIPELINING", "SIZE 1000"])],
            ),
            (
                b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
                vec![(550, Some("5.7.1"), vec!["first", "second", "third"])],
            ),
            // LF-only line ends, bare code, two pipelined replies.
            (
                b"250 2.1.0 Ok\n354\n",
                vec![(250, Some("2.1.0"), vec!["Ok"]), (354, None, vec![""])],
            ),
            // Class mismatch: the "enhanced code" stays text.
            (b"250 5.0.0 odd\r\n", vec![(250, None, vec!["5.0.0 odd"])]),
            // Different code on a later line stays in the text.
            (
                b"550-5.7.1 a\r\n550 5.1.1 b\r\n",
                vec![(550, Some("5.7.1"), vec!["a", "5.1.1 b"])],
            ),
            (b"250-\r\n250 \r\n", vec![(250, None, vec!["", ""])]),
        ];
        for (input, want) in table {
            let got = parse_all_splits(input).unwrap();
            let got: Vec<(u16, Option<String>, Vec<String>)> = got
                .into_iter()
                .map(|r| (r.code, r.enhanced.map(|e| e.to_string()), r.lines))
                .collect();
            let want: Vec<(u16, Option<String>, Vec<String>)> = want
                .iter()
                .map(|(c, e, l)| {
                    (
                        *c,
                        e.map(str::to_string),
                        l.iter().map(|s| s.to_string()).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn errors() {
        let table: &[(&[u8], ReplyError)] = &[
            (b"hello\r\n", ReplyError::Malformed("hello".into())),
            (b"25\r\n", ReplyError::Malformed("25".into())),
            (b"2500 x\r\n", ReplyError::Malformed("2500 x".into())),
            (b"199 x\r\n", ReplyError::Malformed("199 x".into())),
            (b"600 x\r\n", ReplyError::Malformed("600 x".into())),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::InconsistentCode {
                    first: 250,
                    later: 251,
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_all_splits(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn error_is_sticky_and_replies_before_it_come_out() {
        let mut p = ReplyParser::new();
        p.feed(b"250 ok\r\nbogus\r\n250 ok\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().code, 250);
        assert!(p.next_reply().is_err());
        p.feed(b"250 ok\r\n");
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn long_lines() {
        let mut p = ReplyParser::new();
        p.feed(b"250 ");
        p.feed(&vec![b'x'; MAX_REPLY_LINE]);
        assert_eq!(p.next_reply(), Err(ReplyError::LineTooLong));

        let mut p = ReplyParser::new();
        let mut ok = b"250 ".to_vec();
        ok.extend(vec![b'x'; MAX_REPLY_LINE - 4]);
        ok.extend_from_slice(b"\r\n");
        p.feed(&ok);
        assert_eq!(
            p.next_reply().unwrap().unwrap().lines[0].len(),
            MAX_REPLY_LINE - 4
        );

        let mut p = ReplyParser::new();
        let line = format!("250-{}\r\n", "y".repeat(1000));
        for _ in 0..(MAX_REPLY_SIZE / 1000 + 1) {
            p.feed(line.as_bytes());
        }
        assert_eq!(p.next_reply(), Err(ReplyError::ReplyTooLong));
    }

    #[test]
    fn partial_state() {
        let mut p = ReplyParser::new();
        assert!(!p.has_partial());
        p.feed(b"250-a\r\n");
        assert_eq!(p.next_reply(), Ok(None));
        assert!(p.has_partial());
        p.feed(b"250 b\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().lines, vec!["a", "b"]);
        assert!(!p.has_partial());
    }

    #[test]
    fn helpers() {
        let r = Reply::new(
            550,
            e("5.7.60"),
            "SMTP; Client does not have permissions to send as this sender",
        );
        assert!(r.is_permanent() && !r.is_transient() && !r.is_positive());
        assert_eq!(
            r.one_line(),
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        );
        assert_eq!(r.dsn().to_string(), "5.7.60");
        assert_eq!(r.to_string(), r.one_line());
        let r = Reply::new(421, None, "try later");
        assert!(r.is_transient());
        assert_eq!(r.dsn().to_string(), "4.0.0");
        assert!(Reply::new(354, None, "go").is_intermediate());
        assert!(Reply::new(250, None, "").is_positive());
    }

    #[test]
    fn wire_and_text_forms() {
        let r = Reply::new(250, e("2.0.0"), "first\r\nlast");
        assert_eq!(r.lines, vec!["first", "last"]);
        assert_eq!(r.to_wire(), b"250-2.0.0 first\r\n250 2.0.0 last\r\n");
        assert_eq!(r.one_line(), "250 2.0.0 first last");
        assert_eq!(r.said_text(), "250-2.0.0 first 250 2.0.0 last");
        assert_eq!(r.text(), "first\nlast");
        assert_eq!(Reply::new(354, None, "").to_wire(), b"354\r\n");
        assert_eq!(Reply::new(250, e("2.0.0"), "").to_wire(), b"250 2.0.0\r\n");
        assert_eq!(Reply::new(250, None, "a\n").to_wire(), b"250-a\r\n250\r\n");
        let mut odd = Reply::new(250, None, "x");
        odd.lines = vec!["a\r\n250 b".into()];
        assert_eq!(odd.to_wire(), b"250 a  250 b\r\n");
        odd.lines.clear();
        assert_eq!(odd.to_wire(), b"250\r\n");
        assert_eq!(
            Reply::new(550, None, "bad\tthing").one_line(),
            "550 bad thing"
        );
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        (
            200u16..600,
            proptest::option::of((0u16..1000, 0u16..1000)),
            proptest::collection::vec("[a-zA-Z ;:,.()-]{0,30}", 1..5),
        )
            .prop_map(|(code, enh, lines)| {
                let class = (code / 100) as u8;
                let enhanced = match (class, enh) {
                    (2 | 4 | 5, Some((s, d))) => Some(EnhancedCode::new(class, s, d)),
                    _ => None,
                };
                // Texts as a parser would hand them back: no edge blanks.
                let lines = lines.into_iter().map(|l| l.trim().to_string()).collect();
                Reply {
                    code,
                    enhanced,
                    lines,
                }
            })
    }

    proptest! {
        #[test]
        fn wire_round_trip(r in arb_reply(), cut in 0usize..200) {
            let wire = r.to_wire();
            let cut = cut.min(wire.len());
            let got = parse_chunks(&[&wire[..cut], &wire[cut..]]).unwrap();
            prop_assert_eq!(got, vec![r]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(bytes.len());
            let mut p = ReplyParser::new();
            p.feed(&bytes[..cut]);
            while let Ok(Some(_)) = p.next_reply() {}
            p.feed(&bytes[cut..]);
            while let Ok(Some(_)) = p.next_reply() {}
        }
    }
}

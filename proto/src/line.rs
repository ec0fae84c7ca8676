//! Splitting the client's byte stream into command lines (server side),
//! with a length limit and bare-LF detection.

/// One command line, without its line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes, without CRLF or LF.
    pub text: Vec<u8>,
    /// The line ended in a bare LF instead of CRLF.
    pub bare_lf: bool,
}

/// A line exceeded the reader's limit; its bytes were dropped up to and
/// including its line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    /// The limit in force.
    pub max: usize,
}

/// Incremental line splitter for SMTP commands. Lines end in CRLF or a
/// bare LF (reported, for `smtpd_forbid_bare_newline`). A line longer than
/// `max_len` bytes (line end excluded) is reported once as
/// [`LineTooLong`] and dropped, without buffering more than `max_len` + 1
/// bytes of it.
///
/// After a line that switches the session out of command mode (DATA, BDAT,
/// STARTTLS), stop calling [`LineReader::next_line`] and hand
/// [`LineReader::take_buffered`] to the next stage.
#[derive(Debug, Clone)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    max_len: usize,
    /// Dropping the rest of an over-long line.
    discarding: bool,
}

impl LineReader {
    /// A reader that refuses lines longer than `max_len` bytes.
    pub fn new(max_len: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            pos: 0,
            max_len,
            discarding: false,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, `None` if more input is needed.
    ///
    /// # Errors
    /// [`LineTooLong`] once per over-long line.
    pub fn next_line(&mut self) -> Option<Result<Line, LineTooLong>> {
        loop {
            let rest = &self.buf[self.pos..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let raw = &rest[..nl];
                    let (text, bare_lf) = match raw.strip_suffix(b"\r") {
                        Some(t) => (t, false),
                        None => (raw, true),
                    };
                    let too_long = text.len() > self.max_len;
                    let line = Line {
                        text: text.to_vec(),
                        bare_lf,
                    };
                    self.pos += nl + 1;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    return Some(if too_long {
                        Err(LineTooLong { max: self.max_len })
                    } else {
                        Ok(line)
                    });
                }
                None => {
                    // Keep one byte back: it may be the CR of a CRLF.
                    if rest.len() > self.max_len + 1 {
                        let keep_cr = rest.last() == Some(&b'\r');
                        self.buf.clear();
                        self.pos = 0;
                        if keep_cr {
                            self.buf.push(b'\r');
                        }
                        if !self.discarding {
                            self.discarding = true;
                            return Some(Err(LineTooLong { max: self.max_len }));
                        }
                    }
                    return None;
                }
            }
        }
    }

    /// True when bytes past the last returned line are buffered (after
    /// STARTTLS this means the client pipelined plaintext into the TLS
    /// handshake, which must be refused: CVE-2011-0411).
    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The bytes past the last returned line, without taking them.
    pub fn peek_buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Removes and returns the bytes past the last returned line, e.g. the
    /// message content that followed `DATA` or `BDAT` in the same packet.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        self.discarding = false;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Out = Vec<Result<(String, bool), LineTooLong>>;

    fn read(chunks: &[&[u8]], max: usize) -> (Out, Vec<u8>) {
        let mut r = LineReader::new(max);
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c);
            while let Some(l) = r.next_line() {
                out.push(l.map(|l| (String::from_utf8_lossy(&l.text).into_owned(), l.bare_lf)));
            }
        }
        (out, r.take_buffered())
    }

    fn read_all_splits(input: &[u8], max: usize) -> (Out, Vec<u8>) {
        let whole = read(&[input], max);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = read(&[&input[..i], &input[i..j], &input[j..]], max);
                assert_eq!(got.0, whole.0, "split {i},{j} of {input:?}");
                if whole.1.len() <= max {
                    assert_eq!(got.1, whole.1, "split {i},{j} of {input:?}");
                }
            }
        }
        whole
    }

    #[test]
    fn table() {
        let ok = |s: &str, bare| Ok((s.to_string(), bare));
        let long = Err(LineTooLong { max: 8 });
        let table: Vec<(&[u8], Out, &[u8])> = vec![
            (
                b"EHLO x\r\nRSET\r\n",
                vec![ok("EHLO x", false), ok("RSET", false)],
                b"",
            ),
            (
                b"EHLO x\nQUIT\r\n",
                vec![ok("EHLO x", true), ok("QUIT", false)],
                b"",
            ),
            (b"DATA\r\nFrom: x", vec![ok("DATA", false)], b"From: x"),
            (b"\r\n\n", vec![ok("", false), ok("", true)], b""),
            (b"12345678\r\n", vec![ok("12345678", false)], b""),
            (
                b"123456789\r\nQUIT\r\n",
                vec![long.clone(), ok("QUIT", false)],
                b"",
            ),
            (
                b"0123456789abcdef\r\nQUIT\r\n",
                vec![long.clone(), ok("QUIT", false)],
                b"",
            ),
            (b"a\rb\r\n", vec![ok("a\rb", false)], b""),
        ];
        for (input, want, rest) in table {
            let (got, got_rest) = read_all_splits(input, 8);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(got_rest, rest);
        }
    }

    #[test]
    fn pipelined_plaintext_is_visible() {
        let mut r = LineReader::new(100);
        r.feed(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n");
        assert_eq!(r.next_line().unwrap().unwrap().text, b"STARTTLS");
        assert!(r.has_buffered());
        assert_eq!(r.take_buffered(), b"MAIL FROM:<evil@x>\r\n");
        assert!(!r.has_buffered());
    }

    #[test]
    fn huge_line_is_not_buffered() {
        let mut r = LineReader::new(1000);
        for _ in 0..1000 {
            r.feed(&[b'x'; 1000]);
            while let Some(l) = r.next_line() {
                assert!(l.is_err());
            }
            assert!(r.buf.len() <= 2001);
        }
        r.feed(b"\r\nNOOP\r\n");
        assert_eq!(r.next_line().unwrap().unwrap().text, b"NOOP");
    }

    proptest! {
        #[test]
        fn lines_match_reference(input in proptest::collection::vec(
            prop_oneof![prop::sample::select(vec![b'\r', b'\n', b'a']), any::<u8>()], 0..100), cut in 0usize..100) {
            let cut = cut.min(input.len());
            let (got, _) = read(&[&input[..cut], &input[cut..]], 1 << 20);
            let mut want = Vec::new();
            let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            parts.pop(); // the unterminated rest
            for p in parts {
                let (t, bare) = match p.strip_suffix(b"\r") { Some(t) => (t, false), None => (p, true) };
                want.push(Ok((String::from_utf8_lossy(t).into_owned(), bare)));
            }
            prop_assert_eq!(got, want);
        }
    }
}

//! The DATA receiver: finds the end of the message, undoes dot-stuffing and
//! normalises line ends, closing SMTP smuggling.

/// What to do with a line that ends in a bare LF (Postfix's
/// `smtpd_forbid_bare_newline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Accept it as a line end and store CRLF (postern's default).
    #[default]
    Normalize,
    /// Store CRLF too, but remember the violation
    /// ([`DataReceiver::bare_lf_seen`]) so the caller rejects the message.
    Reject,
    /// Keep the bare LF as it is.
    Allow,
}

impl BareLf {
    /// Maps a Postfix `smtpd_forbid_bare_newline` value: `normalize` or
    /// `yes` (its alias), `reject` (refuse), `no` (allow); case-insensitive.
    /// `None` for anything else.
    pub fn from_postfix(value: &str) -> Option<BareLf> {
        match value.trim().to_ascii_lowercase().as_str() {
            // "yes" is Postfix 3.9's alias for normalize.
            "normalize" | "yes" => Some(BareLf::Normalize),
            "reject" => Some(BareLf::Reject),
            "no" => Some(BareLf::Allow),
            _ => None,
        }
    }
}

/// The result of [`DataReceiver::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input was message content; feed more.
    More,
    /// The end-of-data line was found. The first `consumed` input bytes
    /// belonged to the message (terminator included); the rest are the
    /// next, pipelined, commands.
    End {
        /// Input bytes used, terminator included.
        consumed: usize,
    },
}

/// Where the scanner stands. `clean` records whether the current line
/// began after a real CRLF (or at the start of DATA): only such a line can
/// be the end-of-data line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line.
    LineStart { clean: bool },
    /// Inside a line; nothing held back.
    Body,
    /// Inside a line after a CR that is held back until the next byte
    /// shows whether it is a line end.
    BodyCr,
    /// A line began with `.`, held back.
    Dot { clean: bool },
    /// A line began with `.` CR, both held back.
    DotCr { clean: bool },
    /// The end-of-data line was seen.
    Done,
}

/// Incremental receiver for the content after `354` (RFC 5321 4.1.1.4,
/// 4.5.2), safe against SMTP smuggling.
///
/// - Only `<CR><LF>.<CR><LF>` ends the message (at the very start, `.`
///   `<CR><LF>` alone, since DATA's own CRLF precedes it). `\n.\n`,
///   `\n.\r\n`, `\r.\r\n`, `\r\n.\n`, `\r\n.\r` + more, and so on do not.
/// - The output is the content with one leading `.` removed from every line
///   that starts with one, without the terminating `.` line. A `.` line
///   that does not end the message (because a bare LF preceded it or a bare
///   LF ends it) is kept as the content line `.`.
/// - CRLF stays CRLF. A bare LF is a line end, written as CRLF unless
///   [`BareLf::Allow`]. A bare CR is kept as content.
/// - Only a few bytes are held back, so line length does not matter.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    max_size: u64,
    bare_lf: BareLf,
    size: u64,
    too_big: bool,
    bare_lf_seen: bool,
    bare_cr_seen: bool,
}

impl DataReceiver {
    /// A receiver for one message. Content beyond `max_size` bytes (0 = no
    /// limit) is counted but not written out.
    pub fn new(max_size: u64, bare_lf: BareLf) -> DataReceiver {
        DataReceiver {
            state: State::LineStart { clean: true },
            max_size,
            bare_lf,
            size: 0,
            too_big: false,
            bare_lf_seen: false,
            bare_cr_seen: false,
        }
    }

    /// Scans `input`, appending message content to `out` (up to the size
    /// limit). Returns [`Feed::End`] once the end-of-data line is complete;
    /// after that, every call returns `End { consumed: 0 }`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Feed::End { consumed: 0 },
                State::Body => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.emit(&input[i..i + run], out);
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = State::BodyCr;
                    } else {
                        self.bare_line_end(out);
                        self.state = State::LineStart { clean: false };
                    }
                }
                State::BodyCr => match b {
                    b'\n' => {
                        self.emit(b"\r\n", out);
                        self.state = State::LineStart { clean: true };
                    }
                    b'\r' => self.bare_cr(out),
                    _ => {
                        self.bare_cr(out);
                        self.state = State::Body;
                        continue; // `b` is ordinary content: Body takes it.
                    }
                },
                State::LineStart { clean } => match b {
                    b'.' => self.state = State::Dot { clean },
                    b'\r' => self.state = State::BodyCr,
                    b'\n' => {
                        self.bare_line_end(out);
                        self.state = State::LineStart { clean: false };
                    }
                    _ => {
                        self.state = State::Body;
                        continue;
                    }
                },
                State::Dot { clean } => match b {
                    b'\r' => self.state = State::DotCr { clean },
                    b'\n' => {
                        // ".\n" never ends DATA: keep the line ".".
                        self.emit(b".", out);
                        self.bare_line_end(out);
                        self.state = State::LineStart { clean: false };
                    }
                    _ => {
                        // Dot-stuffed line: drop the leading dot.
                        self.state = State::Body;
                        continue;
                    }
                },
                State::DotCr { clean } => match b {
                    b'\n' if clean => {
                        self.state = State::Done;
                        return Feed::End { consumed: i + 1 };
                    }
                    b'\n' => {
                        // "." CRLF after a bare LF: content, not the end.
                        self.emit(b".\r\n", out);
                        self.state = State::LineStart { clean: true };
                    }
                    b'\r' => {
                        // ".\r\r": a stuffed line whose first CR is bare.
                        self.bare_cr(out);
                        self.state = State::BodyCr;
                    }
                    _ => {
                        self.bare_cr(out);
                        self.state = State::Body;
                        continue;
                    }
                },
            }
            i += 1;
        }
        if self.state == State::Done {
            Feed::End { consumed: 0 }
        } else {
            Feed::More
        }
    }

    /// True once the end-of-data line has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Content bytes so far (as written out, with normalised line ends),
    /// counting those dropped beyond the size limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when the content exceeded `max_size`; the output then holds
    /// only the first `max_size` bytes.
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// True when some line ended in a bare LF.
    pub fn bare_lf_seen(&self) -> bool {
        self.bare_lf_seen
    }

    /// True when the content had a CR not followed by LF.
    pub fn bare_cr_seen(&self) -> bool {
        self.bare_cr_seen
    }

    /// A held-back CR turned out not to start a line end.
    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.bare_cr_seen = true;
        self.emit(b"\r", out);
    }

    fn bare_line_end(&mut self, out: &mut Vec<u8>) {
        self.bare_lf_seen = true;
        match self.bare_lf {
            BareLf::Normalize | BareLf::Reject => self.emit(b"\r\n", out),
            BareLf::Allow => self.emit(b"\n", out),
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let len = bytes.len() as u64;
        if self.max_size == 0 {
            out.extend_from_slice(bytes);
        } else {
            let room = self.max_size.saturating_sub(self.size);
            if len > room {
                self.too_big = true;
                // `room < len <= bytes.len()`, so the cast and slice are in range.
                out.extend_from_slice(&bytes[..room as usize]);
            } else {
                out.extend_from_slice(bytes);
            }
        }
        self.size = self.size.saturating_add(len);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `input` in every split into three chunks and checks that the
    /// result never depends on the split. Returns (output, consumed).
    pub(crate) fn receive_all_splits(
        input: &[u8],
        max: u64,
        mode: BareLf,
    ) -> (Vec<u8>, Option<usize>, DataReceiver) {
        let whole = receive(&[input], max, mode);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = receive(&[&input[..i], &input[i..j], &input[j..]], max, mode);
                assert_eq!(
                    (&got.0, got.1),
                    (&whole.0, whole.1),
                    "split {i},{j} of {:?}",
                    String::from_utf8_lossy(input)
                );
                assert_eq!(got.2.bare_lf_seen(), whole.2.bare_lf_seen());
                assert_eq!(got.2.bare_cr_seen(), whole.2.bare_cr_seen());
                assert_eq!(got.2.size(), whole.2.size());
            }
        }
        whole
    }

    /// Feeds chunks until End; returns output and the absolute end offset.
    pub(crate) fn receive(
        chunks: &[&[u8]],
        max: u64,
        mode: BareLf,
    ) -> (Vec<u8>, Option<usize>, DataReceiver) {
        let mut r = DataReceiver::new(max, mode);
        let mut out = Vec::new();
        let mut offset = 0;
        for c in chunks {
            if let Feed::End { consumed } = r.feed(c, &mut out) {
                return (out, Some(offset + consumed), r);
            }
            offset += c.len();
        }
        (out, None, r)
    }

    #[test]
    fn table() {
        // (input, expected content, expected end offset)
        let table: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b".\r\nMAIL", b"", Some(3)),
            (b"a\r\n.\r\n", b"a\r\n", Some(6)),
            (b"a\r\nb\r\n.\r\nQUIT\r\n", b"a\r\nb\r\n", Some(9)),
            (b"..a\r\n.\r\n", b".a\r\n", Some(8)),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10)),
            (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", Some(11)),
            (b"\r\n.\r\n", b"\r\n", Some(5)),
            (b"a\nb\n.\r\n", b"a\r\nb\r\n.\r\n", None),
            (b"a\nb\r\n.\r\n", b"a\r\nb\r\n", Some(8)),
            (b"a\rb\r\n.\r\n", b"a\rb\r\n", Some(8)),
            (b"a\r\r\n.\r\n", b"a\r\r\n", Some(7)),
            (b".a\rb\r\n.\r\n", b"a\rb\r\n", Some(9)),
            (b".\rb\r\n.\r\n", b"\rb\r\n", Some(8)),
            (b".\r\r\n.\r\n", b"\r\r\n", Some(7)),
            (b"a\r\n.", b"a\r\n", None),
            (b"a\r\n.\r", b"a\r\n", None),
            (b"no end", b"no end", None),
            (b"", b"", None),
        ];
        for (input, want, end) in table {
            let (out, got_end, _) = receive_all_splits(input, 0, BareLf::Normalize);
            assert_eq!(
                (String::from_utf8_lossy(&out), got_end),
                (String::from_utf8_lossy(want), *end),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bare_lf_modes() {
        let input = b"a\nb\r\n.\n.\r\nc\r\n.\r\n";
        let (out, end, r) = receive_all_splits(input, 0, BareLf::Normalize);
        assert_eq!(out, b"a\r\nb\r\n.\r\n.\r\nc\r\n");
        assert_eq!(end, Some(input.len()));
        assert!(r.bare_lf_seen() && !r.bare_cr_seen());

        let (out, _, r) = receive_all_splits(input, 0, BareLf::Reject);
        assert_eq!(out, b"a\r\nb\r\n.\r\n.\r\nc\r\n");
        assert!(r.bare_lf_seen());

        let (out, end, r) = receive_all_splits(input, 0, BareLf::Allow);
        assert_eq!(out, b"a\nb\r\n.\n.\r\nc\r\n");
        assert_eq!(end, Some(input.len()));
        assert!(r.bare_lf_seen());

        let (_, _, r) = receive_all_splits(b"a\r\nb\r\n.\r\n", 0, BareLf::Reject);
        assert!(!r.bare_lf_seen() && !r.bare_cr_seen());
        let (_, _, r) = receive_all_splits(b"a\rb\r\n.\r\n", 0, BareLf::Reject);
        assert!(!r.bare_lf_seen() && r.bare_cr_seen());
    }

    #[test]
    fn postfix_values() {
        assert_eq!(BareLf::from_postfix("normalize"), Some(BareLf::Normalize));
        assert_eq!(BareLf::from_postfix("YES"), Some(BareLf::Normalize));
        assert_eq!(BareLf::from_postfix("reject"), Some(BareLf::Reject));
        assert_eq!(BareLf::from_postfix("no"), Some(BareLf::Allow));
        assert_eq!(BareLf::from_postfix("maybe"), None);
        assert_eq!(BareLf::default(), BareLf::Normalize);
    }

    #[test]
    fn size_limit() {
        let input = b"0123456789\r\nabcdef\r\n.\r\nQUIT\r\n";
        let (out, end, r) = receive_all_splits(input, 0, BareLf::Normalize);
        assert_eq!(out.len(), 20);
        assert_eq!((r.size(), r.too_big(), end), (20, false, Some(23)));

        let (out, end, r) = receive_all_splits(input, 20, BareLf::Normalize);
        assert_eq!((out.len(), r.too_big(), end), (20, false, Some(23)));

        let (out, end, r) = receive_all_splits(input, 11, BareLf::Normalize);
        assert_eq!(out, b"0123456789\r");
        assert_eq!((r.size(), r.too_big(), end), (20, true, Some(23)));
    }

    #[test]
    fn after_end_and_long_lines() {
        let mut r = DataReceiver::new(0, BareLf::Normalize);
        let mut out = Vec::new();
        let long = vec![b'x'; 1 << 20];
        assert_eq!(r.feed(&long, &mut out), Feed::More);
        assert_eq!(r.feed(b"\r\n.\r\n", &mut out), Feed::End { consumed: 5 });
        assert!(r.is_done());
        assert_eq!(
            r.feed(b"MAIL FROM:<a@b>\r\n", &mut out),
            Feed::End { consumed: 0 }
        );
        assert_eq!(out.len(), (1 << 20) + 2);
        assert_eq!(r.size(), (1 << 20) + 2);
    }
}

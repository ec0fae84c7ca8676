//! Dot-stuffing for the client side of DATA (RFC 5321 4.5.2).

/// Incremental dot-stuffer: the output is the same for any chunking of the
/// input, and equal to [`dot_stuff`] of the whole.
///
/// Every line end (CRLF, bare CR, bare LF) goes out as CRLF, so no server
/// downstream can see a line structure different from ours; a line that
/// starts with `.` gets another `.`. [`DotStuffer::finish`] ends the last
/// line if needed and writes the terminating `.` CRLF, so the output
/// contains `<CR><LF>.<CR><LF>` exactly once: at its end.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    /// The next byte starts a line.
    line_start: bool,
    /// A CR was seen; it is a line end whatever follows, but if LF follows
    /// the two are one line end.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the content (right after `354`).
    pub fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Writes the wire form of `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                _ => {
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    let run = chunk[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(chunk.len() - i);
                    out.extend_from_slice(&chunk[i..i + run]);
                    self.line_start = false;
                    i += run;
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Ends the last line if it is open and writes the terminator: the
    /// output then ends in `\r\n.\r\n` (or is just `.\r\n` for empty
    /// content, DATA's own CRLF coming before it).
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Writes `content` for the wire after `354`, terminator included; see
/// [`DotStuffer`].
pub fn dot_stuff(content: &[u8], out: &mut Vec<u8>) {
    let mut s = DotStuffer::new();
    s.push(content, out);
    s.finish(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuffed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(content, &mut out);
        out
    }

    #[test]
    fn table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..\r\n", b"a\r\n..b\r\n...\r\n.\r\n"),
            (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
            (b"a\r.\r\n", b"a\r\n..\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"x.y\r\n", b"x.y\r\n.\r\n"),
            (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n.\r\n"),
        ];
        for (content, want) in table {
            assert_eq!(
                String::from_utf8_lossy(&stuffed(content)),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(content)
            );
            // Same output for every split into three pushes.
            for i in 0..=content.len() {
                for j in i..=content.len() {
                    let mut s = DotStuffer::new();
                    let mut out = Vec::new();
                    s.push(&content[..i], &mut out);
                    s.push(&content[i..j], &mut out);
                    s.push(&content[j..], &mut out);
                    s.finish(&mut out);
                    assert_eq!(&out, want, "split {i},{j}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(content in proptest::collection::vec(any::<u8>(), 0..200),
                                    cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(content.len())).collect();
            cuts.sort_unstable();
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain([content.len()]) {
                s.push(&content[prev..c], &mut out);
                prev = c;
            }
            s.finish(&mut out);
            prop_assert_eq!(out, stuffed(&content));
        }
    }
}

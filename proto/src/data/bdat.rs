//! The BDAT receiver (CHUNKING, RFC 3030): counted chunks, no dot-stuffing.

/// Receives the chunks of one message sent with BDAT.
///
/// Chunk sizes are counted in wire bytes; the content is stored with every
/// bare LF turned into CRLF, consistently across chunk (and BDAT command)
/// boundaries: a CR that ends one chunk and an LF that starts the next are
/// one CRLF. Bare CRs are kept.
#[derive(Debug, Clone)]
pub struct BdatReceiver {
    max_size: u64,
    size: u64,
    too_big: bool,
    bare_lf_seen: bool,
    /// The last byte received (in any earlier chunk) was CR.
    last_cr: bool,
}

impl BdatReceiver {
    /// A receiver for one message. Content beyond `max_size` bytes (0 = no
    /// limit) is counted but not written out.
    pub fn new(max_size: u64) -> BdatReceiver {
        BdatReceiver {
            max_size,
            size: 0,
            too_big: false,
            bare_lf_seen: false,
            last_cr: false,
        }
    }

    /// Consumes at most `*remaining` bytes of `input` (the rest of the
    /// current chunk), appends their content to `out`, decreases
    /// `*remaining` and returns how many input bytes it used. Bytes past
    /// the chunk are the next command.
    pub fn feed_chunk(&mut self, input: &[u8], remaining: &mut u64, out: &mut Vec<u8>) -> usize {
        // `min` with `input.len()` makes the cast lossless.
        let n = (*remaining).min(input.len() as u64) as usize;
        let data = &input[..n];
        let mut start = 0;
        for (p, _) in data.iter().enumerate().filter(|&(_, &b)| b == b'\n') {
            let after_cr = if p == 0 {
                self.last_cr
            } else {
                data[p - 1] == b'\r'
            };
            if !after_cr {
                self.bare_lf_seen = true;
                self.emit(&data[start..p], out);
                self.emit(b"\r\n", out);
                start = p + 1;
            }
        }
        self.emit(&data[start..], out);
        if let Some(&last) = data.last() {
            self.last_cr = last == b'\r';
        }
        *remaining -= n as u64;
        n
    }

    /// Content bytes so far, after line-end normalisation, counting those
    /// dropped beyond the size limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when the content exceeded `max_size`; the output then holds
    /// only the first `max_size` bytes.
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// True when some LF was not preceded by CR.
    pub fn bare_lf_seen(&self) -> bool {
        self.bare_lf_seen
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Receives `chunks` (each a BDAT chunk) fed through the given read
    /// boundaries; returns the content.
    fn receive(chunks: &[&[u8]], cut: usize, max: u64) -> (Vec<u8>, BdatReceiver) {
        let mut r = BdatReceiver::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut remaining = chunk.len() as u64;
            // Append the next command to show it is not consumed.
            let mut wire = chunk.to_vec();
            wire.extend_from_slice(b"BDAT 0 LAST\r\n");
            let cut = cut.min(chunk.len());
            let used = r.feed_chunk(&wire[..cut], &mut remaining, &mut out);
            assert_eq!(used, cut);
            let used2 = r.feed_chunk(&wire[cut..], &mut remaining, &mut out);
            assert_eq!(used + used2, chunk.len());
            assert_eq!(remaining, 0);
        }
        (out, r)
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [&'a [u8]], &'a [u8], bool);
        let table: &[Case] = &[
            (&[b"a\r\nb\r\n"], b"a\r\nb\r\n", false),
            (&[b"a\nb\n"], b"a\r\nb\r\n", true),
            (&[b"a\r", b"\nb"], b"a\r\nb", false),
            (&[b"a", b"\nb"], b"a\r\nb", true),
            (&[b"\n"], b"\r\n", true),
            (&[b"a\rb"], b"a\rb", false),
            (&[b".\r\n", b".\r\n"], b".\r\n.\r\n", false),
            (&[b"", b"x"], b"x", false),
        ];
        for (chunks, want, bare) in table {
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            for cut in 0..=total {
                let (out, r) = receive(chunks, cut, 0);
                assert_eq!(&out, want, "{chunks:?} cut {cut}");
                assert_eq!(r.bare_lf_seen(), *bare, "{chunks:?}");
                assert_eq!(r.size(), want.len() as u64);
            }
        }
    }

    #[test]
    fn size_limit() {
        let (out, r) = receive(&[b"0123456789", b"abc\n"], 3, 12);
        assert_eq!(out, b"0123456789ab");
        assert!(r.too_big());
        assert_eq!(r.size(), 15);
        let (_, r) = receive(&[b"0123456789"], 3, 10);
        assert!(!r.too_big());
    }

    proptest! {
        #[test]
        fn splits_do_not_matter(data in proptest::collection::vec(prop::sample::select(vec![b'a', b'\r', b'\n']), 0..40),
                                cuts in proptest::collection::vec(0usize..40, 0..5)) {
            let mut whole_out = Vec::new();
            let mut r = BdatReceiver::new(0);
            let mut rem = data.len() as u64;
            r.feed_chunk(&data, &mut rem, &mut whole_out);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut out = Vec::new();
            let mut r2 = BdatReceiver::new(0);
            let mut prev = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                let mut rem = (c - prev) as u64;
                r2.feed_chunk(&data[prev..c], &mut rem, &mut out);
                prev = c;
            }
            prop_assert_eq!(&out, &whole_out);
            // Every LF in the output is preceded by CR.
            for (i, &b) in out.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && out[i - 1] == b'\r');
                }
            }
        }
    }
}

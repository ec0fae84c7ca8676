//! Message content on the wire: the DATA and BDAT receivers (server side)
//! and dot-stuffing (client side). The SMTP-smuggling defences live here:
//! only `<CR><LF>.<CR><LF>` ends DATA, and everything we send has CRLF line
//! ends and correct dot-stuffing, so no server after us can find an earlier
//! end of data than we did.

mod bdat;
mod receiver;
mod stuff;

pub use bdat::BdatReceiver;
pub use receiver::{BareLf, DataReceiver, Feed};
pub use stuff::{DotStuffer, dot_stuff};

#[cfg(test)]
mod tests {
    use super::receiver::tests::{receive, receive_all_splits};
    use super::*;
    use proptest::prelude::*;

    const BEFORE: &[u8] = b"From: a@example.com\r\nSubject: hi\r\n\r\nhello";
    const SMUGGLED: &[u8] =
        b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nFrom: ceo@example.com\r\n\r\nsmuggled";
    const REAL_END: &[u8] = b"\r\n.\r\n";
    const AFTER: &[u8] = b"QUIT\r\n";

    /// Fake end-of-data sequences from the SMTP smuggling research
    /// (SEC Consult, 2023) and variants.
    const VECTORS: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\x00\r\n",
        b"\n.\r",
        b"\r\n.\n\r\n",
        b"\n\n.\n\n",
        b"\r\r\n.\r",
        b"\r\n \r\n.\n",
        b"\n\r.\r\n",
        b"\r\n.\r\x00\n",
    ];

    /// Where the first `<CR><LF>.<CR><LF>` ends, counting DATA's own CRLF as
    /// preceding the input; the only place DATA may end.
    fn first_terminator(input: &[u8]) -> Option<usize> {
        let mut s = b"\r\n".to_vec();
        s.extend_from_slice(input);
        s.windows(5).position(|w| w == REAL_END).map(|p| p + 5 - 2)
    }

    /// Reference line-end normalisation: CRLF, bare CR and bare LF each
    /// become CRLF; an open last line is closed.
    fn normalized(c: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < c.len() {
            match c[i] {
                b'\r' if c.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn count_terminators(wire: &[u8]) -> usize {
        let mut s = b"\r\n".to_vec();
        s.extend_from_slice(wire);
        s.windows(5).filter(|w| *w == REAL_END).count()
    }

    #[test]
    fn smuggling_vectors_do_not_end_data() {
        for vector in VECTORS {
            let mut input = BEFORE.to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(SMUGGLED);
            input.extend_from_slice(REAL_END);
            let end = input.len();
            input.extend_from_slice(AFTER);
            for mode in [BareLf::Normalize, BareLf::Reject, BareLf::Allow] {
                let (out, got_end, _) = receive_all_splits(&input, 0, mode);
                assert_eq!(got_end, Some(end), "vector {vector:?} mode {mode:?}");
                let text = String::from_utf8_lossy(&out);
                assert!(text.starts_with("From: a@example.com"), "{vector:?}");
                assert!(text.contains("MAIL FROM:<evil@example.com>"), "{vector:?}");
                assert!(
                    text.ends_with("smuggled\r\n"),
                    "{vector:?} {mode:?}: {text:?}"
                );
                // Relayed onwards, it is still exactly one message.
                let mut wire = Vec::new();
                dot_stuff(&out, &mut wire);
                assert_eq!(count_terminators(&wire), 1, "{vector:?} {mode:?}");
                assert!(wire.ends_with(REAL_END));
                let (again, again_end, _) = receive(&[&wire, AFTER], 0, BareLf::Reject);
                assert_eq!(again_end, Some(wire.len()));
                assert_eq!(again, normalized(&out));
            }
        }
    }

    #[test]
    fn smuggling_vectors_flag_bare_line_ends() {
        for vector in VECTORS {
            let mut input = BEFORE.to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(REAL_END);
            let (_, _, r) = receive(&[&input], 0, BareLf::Reject);
            let bare_lf = vector.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
                || vector.starts_with(b"\n");
            assert_eq!(r.bare_lf_seen(), bare_lf, "{vector:?}");
            assert!(
                r.bare_lf_seen() || r.bare_cr_seen() || vector.contains(&0),
                "{vector:?}"
            );
        }
    }

    fn content_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(vec![b'\r', b'\n', b'.']),
            1 => any::<u8>(),
        ]
    }

    fn crlf_content() -> impl Strategy<Value = Vec<u8>> {
        let line = proptest::collection::vec(
            prop_oneof![3 => Just(b'.'), 5 => any::<u8>()]
                .prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..12,
        );
        (proptest::collection::vec(line, 0..8), any::<bool>()).prop_map(|(lines, trailing)| {
            let mut c = lines.join(&b"\r\n"[..]);
            if trailing {
                c.extend_from_slice(b"\r\n");
            }
            c
        })
    }

    fn feed_cuts(input: &[u8], cuts: &[usize], mode: BareLf) -> (Vec<u8>, Option<usize>) {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([input.len()]) {
            chunks.push(&input[prev..c]);
            prev = c;
        }
        let (out, end, _) = receive(&chunks, 0, mode);
        (out, end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// CRLF-only content survives dot_stuff + DataReceiver unchanged,
        /// with the end found exactly after the terminator.
        #[test]
        fn crlf_content_round_trips(c in crlf_content(), cuts in proptest::collection::vec(0usize..150, 0..6)) {
            let mut wire = Vec::new();
            dot_stuff(&c, &mut wire);
            let end = wire.len();
            wire.extend_from_slice(b"MAIL FROM:<x@y>\r\n");
            let (out, got_end) = feed_cuts(&wire, &cuts, BareLf::Reject);
            let mut want = c.clone();
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(out, want);
            prop_assert_eq!(got_end, Some(end));
        }

        /// Whatever the content, dot_stuff's output holds exactly one
        /// terminator, at its end, and DataReceiver sees one message with
        /// the content's lines.
        #[test]
        fn stuffed_output_is_one_message(c in proptest::collection::vec(content_byte(), 0..120),
                                         cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut wire = Vec::new();
            dot_stuff(&c, &mut wire);
            prop_assert_eq!(count_terminators(&wire), 1);
            prop_assert!(wire.ends_with(b".\r\n"));
            prop_assert_eq!(first_terminator(&wire), Some(wire.len()));
            let end = wire.len();
            wire.extend_from_slice(b"\r\n.\r\nRSET\r\n");
            let (out, got_end) = feed_cuts(&wire, &cuts, BareLf::Normalize);
            prop_assert_eq!(got_end, Some(end));
            prop_assert_eq!(out, normalized(&c));
        }

        /// On arbitrary input, DATA ends exactly at the first real
        /// `<CR><LF>.<CR><LF>`, in every mode and chunking.
        #[test]
        fn ends_only_at_first_real_terminator(input in proptest::collection::vec(content_byte(), 0..120),
                                              cuts in proptest::collection::vec(0usize..120, 0..6)) {
            let want = first_terminator(&input);
            for mode in [BareLf::Normalize, BareLf::Reject, BareLf::Allow] {
                let (out, end) = feed_cuts(&input, &cuts, mode);
                prop_assert_eq!(end, want);
                if mode == BareLf::Normalize {
                    // Normalised output has no bare LF.
                    for (i, &b) in out.iter().enumerate() {
                        if b == b'\n' {
                            prop_assert!(i > 0 && out[i - 1] == b'\r');
                        }
                    }
                }
            }
        }

        /// Random bytes never panic and honour the size limit.
        #[test]
        fn garbage_and_limits(input in proptest::collection::vec(any::<u8>(), 0..300), max in 0u64..50) {
            let mut r = DataReceiver::new(max, BareLf::Normalize);
            let mut out = Vec::new();
            let feed = r.feed(&input, &mut out);
            if let Feed::End { consumed } = feed {
                prop_assert!(consumed <= input.len());
            }
            if max > 0 {
                prop_assert!(out.len() as u64 <= max);
                prop_assert_eq!(r.too_big(), r.size() > max);
            }
        }
    }
}

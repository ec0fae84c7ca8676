//! DATA receiver (`proto::DataReceiver`) and dot-stuffing
//! (`proto::dot_stuff`, `proto::DotStuffer`).
//!
//! Input: one control byte, then the bytes a client sends after `354`.
//! The control byte picks the bare-LF mode, a size limit and how the
//! stream is split into reads.
//!
//! Oracles:
//! - DATA ends exactly after the first `<CR><LF>.<CR><LF>` (never earlier,
//!   never at a smuggling look-alike), and nothing after it is consumed;
//! - the content equals a simple whole-input reference model of
//!   unstuffing and line-end normalisation, whatever the read boundaries;
//! - the size limit truncates exactly and `size`/`too_big` agree;
//! - relaying the content (dot_stuff, whole or in pieces) gives a wire form
//!   with exactly one terminator, at its end, that receives back as the
//!   normalised content: one message in, one message out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_fuzz::{count_terminators, data_model, normalized, pieces, split_control};
use proto::data::{BareLf, DataReceiver, DotStuffer, Feed, dot_stuff};

/// Feeds `input` in the given pieces; returns the content, where DATA
/// ended (input offset) and the receiver.
fn receive(
    input: &[u8],
    seed: u8,
    max: u64,
    mode: BareLf,
) -> (Vec<u8>, Option<usize>, DataReceiver) {
    let mut rx = DataReceiver::new(max, mode);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut end = None;
    for piece in pieces(input, seed) {
        match rx.feed(piece, &mut out) {
            Feed::More => {
                assert!(!rx.is_done());
                offset += piece.len();
            }
            Feed::End { consumed } => {
                assert!(consumed >= 1 && consumed <= piece.len());
                end = Some(offset + consumed);
                assert!(rx.is_done());
                // Once done, the receiver takes nothing more.
                let mut more = Vec::new();
                assert_eq!(rx.feed(b"x\r\n.\r\n", &mut more), Feed::End { consumed: 0 });
                assert!(more.is_empty());
                break;
            }
        }
    }
    (out, end, rx)
}

fuzz_target!(|data: &[u8]| {
    let (control, input) = split_control(data);
    let mode = match control & 3 {
        0 | 3 => BareLf::Normalize,
        1 => BareLf::Reject,
        _ => BareLf::Allow,
    };
    let max: u64 = match (control >> 2) & 3 {
        0 | 1 => 0,
        2 => 7,
        _ => 64,
    };
    let seed = control >> 4; // 0: one read; else reads of 1..=15 bytes

    let (out, end, rx) = receive(input, seed, max, mode);
    // Split invariance: one read gives the same as many small ones.
    let (whole, whole_end, whole_rx) = receive(input, 0, max, mode);
    assert_eq!(out, whole, "content depends on read boundaries");
    assert_eq!(end, whole_end, "end of DATA depends on read boundaries");
    assert_eq!(rx.size(), whole_rx.size());
    assert_eq!(rx.bare_lf_seen(), whole_rx.bare_lf_seen());
    assert_eq!(rx.bare_cr_seen(), whole_rx.bare_cr_seen());

    let model = data_model(input, mode == BareLf::Allow);
    assert_eq!(
        end,
        model.as_ref().map(|m| m.consumed),
        "DATA ended at the wrong place"
    );
    let Some(model) = model else {
        // No terminator: everything written so far is a prefix of what the
        // model gives once the client sends the end.
        return;
    };
    assert_eq!(rx.size(), model.content.len() as u64);
    assert_eq!(rx.bare_lf_seen(), model.bare_lf);
    assert_eq!(rx.bare_cr_seen(), model.bare_cr);
    if max == 0 {
        assert_eq!(
            out, model.content,
            "content differs from the reference model"
        );
        assert!(!rx.too_big());
    } else {
        let keep = model.content.len().min(max as usize);
        assert_eq!(out, model.content[..keep], "size-limited content differs");
        assert_eq!(rx.too_big(), model.content.len() as u64 > max);
    }
    if max != 0 {
        return;
    }

    // Relaying it: one message on the wire, whole or streamed in pieces.
    let mut wire = Vec::new();
    dot_stuff(&out, &mut wire);
    let mut streamed = Vec::new();
    let mut st = DotStuffer::new();
    for piece in pieces(&out, seed) {
        st.push(piece, &mut streamed);
    }
    st.finish(&mut streamed);
    assert_eq!(wire, streamed, "DotStuffer differs from dot_stuff");
    assert_eq!(
        count_terminators(&wire),
        1,
        "relayed wire form is not one message"
    );
    assert!(wire.ends_with(b".\r\n"));
    // What a next hop receives is the content with every line end CRLF.
    wire.extend_from_slice(b"RSET\r\n");
    let (again, again_end, _) = receive(&wire, seed, 0, BareLf::Reject);
    assert_eq!(again_end, Some(wire.len() - 6));
    assert_eq!(again, normalized(&out), "relayed content changed");
});

//! SMTP replies, client side: `proto::ReplyParser` on a server's stream,
//! `Reply::to_wire`, `parse_ehlo` and the enhanced status codes.
//!
//! Input: one control byte (how the stream is split into reads), then the
//! server's byte stream.
//!
//! Oracles:
//! - the replies and the first error are the same whatever the read
//!   boundaries, and after an error the parser keeps returning it;
//! - a parsed reply without bare CRs formats (`to_wire`) as lines that
//!   parse back to the same reply (code, enhanced code, texts; after an
//!   enhanced code, leading blanks of a text are not kept);
//! - the EHLO keyword accessors and one-line forms do not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_fuzz::{pieces, split_control};
use proto::reply::{Reply, ReplyError, ReplyParser, parse_ehlo};

fn parse_all(stream: &[u8], seed: u8) -> (Vec<Reply>, Option<ReplyError>) {
    let mut p = ReplyParser::new();
    let mut out = Vec::new();
    for piece in pieces(stream, seed) {
        p.feed(piece);
        loop {
            match p.next_reply() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(p.next_reply(), Err(e.clone()), "error does not stick");
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let (control, stream) = split_control(data);
    let (replies, err) = parse_all(stream, control);
    let (whole, whole_err) = parse_all(stream, 0);
    assert_eq!(replies, whole, "replies depend on read boundaries");
    assert_eq!(err, whole_err, "errors depend on read boundaries");

    for r in &replies {
        let _ = (r.one_line(), r.said_text(), r.text(), r.dsn());
        let ehlo = parse_ehlo(r);
        let _ = (
            ehlo.size(),
            ehlo.auth_mechanisms(),
            ehlo.has("PIPELINING"),
            ehlo.param("SIZE"),
        );
        if r.lines.iter().any(|l| l.contains('\r')) {
            // A bare CR in a server's text goes out as a space, which can
            // make text before it read as an enhanced code: not exact.
            continue;
        }
        let wire = r.to_wire();
        let mut p = ReplyParser::new();
        p.feed(&wire);
        let again = p
            .next_reply()
            .unwrap_or_else(|e| panic!("{r:?} formats as {wire:?}, which fails: {e}"))
            .expect("a whole reply");
        assert!(!p.has_partial());
        assert_eq!(again.code, r.code);
        assert_eq!(
            again.enhanced, r.enhanced,
            "enhanced code changed: {wire:?}"
        );
        // CR and LF in texts go out as spaces; with an enhanced code on
        // every line, blanks after it separate, so leading ones are lost.
        let texts: Vec<String> = r
            .lines
            .iter()
            .map(|l| match r.enhanced {
                Some(_) => l.trim_start_matches([' ', '\t']).to_string(),
                None => l.clone(),
            })
            .collect();
        assert_eq!(again.lines, texts, "reply text changed: {wire:?}");
    }
});

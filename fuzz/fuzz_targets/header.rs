//! RFC 5322 header blocks: `proto::header::{header_end, header_end_so_far,
//! parse_headers, Header::value, fold_header, parse_address_list}`, and
//! cleanup's header rewriting (`queue::cleanup::Cleanup`) as smtpd and
//! pickup use it.
//!
//! Input: one control byte (how the message arrives in reads), then the
//! message content (headers and body).
//!
//! Oracles:
//! - `parse_headers` of the whole message equals that of the header block
//!   `header_end` delimits, and the fields' raw bytes are the block itself
//!   from its first byte, in order, nothing skipped: all that may follow
//!   them is the blank line;
//! - streaming: smtpd decides where the headers end while the message is
//!   still arriving (each read appended, `header_end_so_far` asked
//!   again); the message it stores must be the one cleanup makes of the
//!   whole content at once (pickup's path), whatever the read boundaries;
//! - `fold_header(name, value)` gives one field that parses back with the
//!   same name and value, lines ending in CRLF and no line that could start
//!   a new field;
//! - address lists parse without panics into addresses with no line breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_fuzz::{pieces, split_control};
use proto::header::{
    fold_header, header_end, header_end_so_far, parse_address_list, parse_headers,
};
use queue::cleanup::{Cleanup, HeaderContext};
use queue::file::Envelope;
use queue::id::QueueId;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn cleanup() -> &'static Cleanup {
    static C: OnceLock<Cleanup> = OnceLock::new();
    C.get_or_init(|| {
        let main = conf::MainCf::parse(
            "myhostname = relay.example\nalias_maps =\n",
            std::path::Path::new("main.cf"),
        )
        .expect("main.cf");
        let cfg = conf::Config::build(&main, &[]).expect("config");
        Cleanup::new(&cfg).expect("cleanup")
    })
}

/// What smtpd's DATA writer (`smtpd/src/data.rs`, `Writer::push` and
/// `Writer::finish`) does with content arriving in `reads`: holds the head
/// until `header_end_so_far` finds its end, rewrites it, streams the rest;
/// at the end of the content, splits what is still held with `header_end`.
/// (smtpd is a binary; keep this in step with it.)
fn streamed(reads: &[&[u8]], ctx: &HeaderContext<'_>) -> Vec<u8> {
    let c = cleanup();
    let mut env = Envelope::default();
    let mut head = Some(Vec::new());
    let mut out = Vec::new();
    for chunk in reads {
        let Some(h) = head.as_mut() else {
            out.extend_from_slice(chunk);
            continue;
        };
        h.extend_from_slice(chunk);
        if let Some(end) = header_end_so_far(h) {
            let buf = head.take().unwrap_or_default();
            out = c
                .rewrite_headers(&buf[..end], &mut env, ctx)
                .expect("rewrite")
                .bytes;
            out.extend_from_slice(&buf[end..]);
        }
    }
    if let Some(buf) = head.take() {
        let end = header_end(&buf).unwrap_or(buf.len());
        out = c
            .rewrite_headers(&buf[..end], &mut env, ctx)
            .expect("rewrite")
            .bytes;
        out.extend_from_slice(&buf[end..]);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (control, msg) = split_control(data);
    let end = header_end(msg);
    let hend = end.unwrap_or(msg.len());
    assert!(hend <= msg.len());
    let headers = parse_headers(msg);
    assert_eq!(
        headers,
        parse_headers(&msg[..hend]),
        "parse_headers reads past header_end"
    );

    // The fields are the header block, in order, from its first byte.
    let mut pos = 0;
    for h in &headers {
        let start = h.raw.as_ptr() as usize - msg.as_ptr() as usize;
        assert_eq!(start, pos, "bytes skipped between header fields");
        pos += h.raw.len();
        assert!(proto::header::is_valid_field_name(h.name));
        assert!(h.raw.starts_with(h.name.as_bytes()));
        let value = h.value();
        assert!(!value.contains('\n'));
        if ["to", "cc", "from", "reply-to", "bcc"]
            .iter()
            .any(|n| h.is(n))
        {
            for a in parse_address_list(&value) {
                // (A bare CR in the value may end up inside a quoted part.)
                assert!(!a.address.is_empty() && !a.address.contains('\n'));
                assert!(value.contains('\r') || !a.address.contains('\r'));
            }
        }
        // Folding gives the same field back.
        if !value.contains('\r') {
            let folded = fold_header(h.name, &value);
            let again = parse_headers(folded.as_bytes());
            assert_eq!(
                again.len(),
                1,
                "fold_header made {} fields: {folded:?}",
                again.len()
            );
            assert_eq!(again[0].name, h.name);
            assert_eq!(
                again[0].value(),
                value,
                "fold_header changed the value: {folded:?}"
            );
            assert!(folded.ends_with("\r\n"));
            assert!(!folded.replace("\r\n", "").contains(['\r', '\n']));
        }
    }
    // After the fields: the blank line, or (content that ends in the
    // header block) a final lone CR, which cleanup turns into that line.
    let rest = &msg[pos..hend];
    assert!(
        matches!(rest, b"" | b"\n" | b"\r\n") || (end.is_none() && rest == b"\r"),
        "header block bytes not in any field: {rest:?}"
    );

    // Streaming (smtpd) and whole-message (pickup) cleanup store the same.
    let c = cleanup();
    let id = QueueId::from_time(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let whole = c
        .process(Envelope::default(), msg, None, id, false)
        .expect("cleanup")
        .content;
    let ctx = HeaderContext {
        local: None,
        received: None,
        rewrite_addresses: true,
        add_missing: false,
        extract: false,
        id,
        now: SystemTime::now(),
    };
    let reads = pieces(msg, control);
    let got = streamed(&reads, &ctx);
    assert!(
        got == whole,
        "the stored message depends on read boundaries:\n streamed {:?}\n whole    {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&whole),
    );
    assert!(whole.ends_with(&msg[hend..]), "body changed");
});

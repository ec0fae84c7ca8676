//! SMTP command lines, server side: `proto::LineReader` splitting the
//! client's stream into lines and `proto::parse_command_with` parsing them;
//! client side: `Command::to_wire`.
//!
//! Input: one control byte (line length limit, strict_rfc821_envelopes,
//! how the stream is split into reads), then the client's byte stream.
//!
//! Oracles:
//! - the lines (and over-long-line errors) are those of a whole-input
//!   reference split, whatever the read boundaries; nothing is lost or
//!   invented (CVE-2011-0411 style buffering bugs);
//! - a parsed command formats (`to_wire`) as one CRLF-terminated line with
//!   no other CR or LF, which parses back to a command that formats the
//!   same (a fixpoint), with the same verb; without TABs or control
//!   characters in the line it parses back to the very same command;
//! - every error's reply is a well-formed single 5xx reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_fuzz::{pieces, split_control};
use proto::command::{Command, ParseOptions, parse_command_with};
use proto::line::{Line, LineReader, LineTooLong};
use proto::reply::ReplyParser;

/// The lines of `stream` as a reader with limit `max` must report them:
/// each LF ends a line (one CR before it is dropped); a line longer than
/// `max` is one error; an unfinished last line longer than `max + 1`
/// (the reader keeps one byte back for a possible CR) is one error too.
fn reference_lines(stream: &[u8], max: usize) -> Vec<Result<Line, LineTooLong>> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    for raw in parts {
        let (text, bare_lf) = match raw.strip_suffix(b"\r") {
            Some(t) => (t, false),
            None => (raw, true),
        };
        out.push(if text.len() > max {
            Err(LineTooLong { max })
        } else {
            Ok(Line {
                text: text.to_vec(),
                bare_lf,
            })
        });
    }
    if tail.len() > max + 1 {
        out.push(Err(LineTooLong { max }));
    }
    out
}

fn check_reply(wire: &[u8]) {
    let mut p = ReplyParser::new();
    p.feed(wire);
    let r = p
        .next_reply()
        .expect("error reply parses")
        .expect("complete");
    assert!(r.is_permanent() || r.is_transient());
    assert_eq!(r.to_wire(), wire, "error reply does not round-trip");
    assert!(!p.has_partial());
}

fuzz_target!(|data: &[u8]| {
    let (control, stream) = split_control(data);
    let max = [16, 64, 512, 2048][usize::from(control & 3)];
    let opts = ParseOptions {
        strict_rfc821_envelopes: control & 4 != 0,
    };
    let seed = control >> 3;

    let mut reader = LineReader::new(max);
    let mut got = Vec::new();
    for piece in pieces(stream, seed) {
        reader.feed(piece);
        while let Some(l) = reader.next_line() {
            got.push(l);
        }
    }
    assert_eq!(
        got,
        reference_lines(stream, max),
        "lines depend on read boundaries"
    );

    for line in got.into_iter().flatten() {
        let cmd = match parse_command_with(&line.text, opts) {
            Ok(cmd) => cmd,
            Err(e) => {
                check_reply(&e.reply().to_wire());
                continue;
            }
        };
        let wire = cmd.to_wire();
        let body = wire.strip_suffix(b"\r\n").expect("to_wire ends in CRLF");
        assert!(
            !body.contains(&b'\r') && !body.contains(&b'\n'),
            "to_wire made more than one line: {wire:?}"
        );
        let again = parse_command_with(body, opts)
            .unwrap_or_else(|e| panic!("{cmd:?} formats as {body:?}, which fails: {e}"));
        assert_eq!(again.verb(), cmd.verb());
        assert_eq!(
            again.to_wire(),
            wire,
            "to_wire is not a fixpoint for {cmd:?}"
        );
        let plain = std::str::from_utf8(&line.text).is_ok_and(|s| !s.chars().any(char::is_control));
        if plain && !matches!(cmd, Command::Unknown(_)) {
            assert_eq!(
                again,
                cmd,
                "{:?} does not round-trip",
                String::from_utf8_lossy(&line.text)
            );
        }
        if let Command::Unknown(_) = cmd {
            check_reply(&Command::not_recognized_reply().to_wire());
        }
    }
});

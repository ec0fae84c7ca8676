//! BDAT (CHUNKING, RFC 3030): the `BDAT n [LAST]` command lines and the
//! chunk receiver (`proto::BdatReceiver`), driven the way smtpd drives
//! them: command lines from a `LineReader`, then exactly `n` bytes of the
//! stream (however the reads split them) into the receiver, then back to
//! command lines.
//!
//! Oracles:
//! - every generated `BDAT n [LAST]` line parses back to its size and flag,
//!   and exactly `n` bytes are taken as chunk data (the pipelined command
//!   after the last chunk is still read as a command);
//! - the assembled content equals the concatenated chunks with every bare
//!   LF turned into CRLF, a CR at the end of one chunk and an LF at the
//!   start of the next being one CRLF; the bare-LF flag agrees;
//! - the size limit truncates exactly and `size`/`too_big` agree.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use postern_fuzz::{bare_lf_to_crlf, pieces};
use proto::command::{Command, parse_command};
use proto::data::BdatReceiver;
use proto::line::LineReader;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Chunk contents; the last one is sent with LAST.
    chunks: Vec<Vec<u8>>,
    /// Spell the verb and LAST in lower case, and pad with blanks.
    odd_spelling: bool,
    /// 0: no limit; else the message_size_limit.
    max: u8,
    /// How the stream is split into reads.
    seed: u8,
}

fuzz_target!(|input: Input| {
    let Input {
        chunks,
        odd_spelling,
        max,
        seed,
    } = input;
    let mut wire = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let line = match (odd_spelling, last) {
            (false, false) => format!("BDAT {}\r\n", c.len()),
            (false, true) => format!("BDAT {} LAST\r\n", c.len()),
            (true, false) => format!("bdat \t{:04}  \r\n", c.len()),
            (true, true) => format!("Bdat {} last\r\n", c.len()),
        };
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(c);
    }
    wire.extend_from_slice(b"QUIT\r\n");

    let max = u64::from(max);
    let mut lines = LineReader::new(2048);
    let mut rx = BdatReceiver::new(max);
    let mut content = Vec::new();
    // Bytes read from the "socket" but not yet used by the current stage.
    let mut remaining: u64 = 0;
    let mut commands = Vec::new();
    for piece in pieces(&wire, seed) {
        let mut piece = piece.to_vec();
        loop {
            if remaining > 0 {
                let used = rx.feed_chunk(&piece, &mut remaining, &mut content);
                assert!(used <= piece.len());
                assert!(
                    used == piece.len() || remaining == 0,
                    "chunk bytes left unused"
                );
                piece.drain(..used);
                if remaining > 0 || piece.is_empty() {
                    break;
                }
            }
            lines.feed(&piece);
            piece.clear();
            let Some(line) = lines.next_line() else { break };
            let line = line.expect("generated command lines are short");
            let cmd = parse_command(&line.text).expect("generated command lines parse");
            if let Command::Bdat { size, .. } = cmd {
                remaining = size;
                // What followed the command line in this read is chunk data.
                piece = lines.take_buffered();
            }
            commands.push(cmd);
        }
    }
    // Any complete lines still buffered (the QUIT).
    while let Some(line) = lines.next_line() {
        commands.push(parse_command(&line.expect("short").text).expect("parses"));
    }
    assert_eq!(remaining, 0);

    let mut want_cmds: Vec<Command> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| Command::Bdat {
            size: c.len() as u64,
            last: i + 1 == chunks.len(),
        })
        .collect();
    want_cmds.push(Command::Quit);
    assert_eq!(
        commands, want_cmds,
        "command stream out of step with chunks"
    );

    let (want, bare) = bare_lf_to_crlf(&chunks.concat());
    assert_eq!(rx.size(), want.len() as u64);
    assert_eq!(rx.bare_lf_seen(), bare);
    if max == 0 {
        assert_eq!(content, want, "assembled content differs");
        assert!(!rx.too_big());
    } else {
        let keep = want.len().min(max as usize);
        assert_eq!(content, want[..keep], "size-limited content differs");
        assert_eq!(rx.too_big(), want.len() as u64 > max);
    }
});

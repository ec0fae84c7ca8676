//! Queue files: the reader (`queue::QueueFile::parse`) on arbitrary bytes,
//! and the writer's format (`queue::file::encode_file`, byte for byte what
//! `queue::write::Draft` writes) read back, damaged, and marked done.
//!
//! Input (`arbitrary`): either raw file bytes, or an envelope and content
//! to write plus where to cut and which bits to flip.
//!
//! Oracles:
//! - raw bytes: the reader returns an error or a file whose envelope,
//!   written again, reads back to the same envelope and content;
//! - write then read is the identity (envelope, content); an envelope no
//!   program writes (an empty recipient address) is refused, not misread;
//! - every truncation of a written file is rejected with an error (a torn
//!   write is never taken for a message);
//! - a file with one bit flipped is rejected, or reads back as the very
//!   same message (the trailer's hex digits may change case): never a
//!   different message;
//! - marking recipients done in place (`rcpt` -> `done`, as delivery
//!   agents do) keeps the checksum valid and sets exactly those flags.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use queue::file::{Envelope, QueueFile, Recipient, encode_file};
use std::time::{Duration, UNIX_EPOCH};

/// Attribute keys the programs write.
const KEYS: &[&str] = &[
    "client_name",
    "client_addr",
    "helo",
    "protocol",
    "sasl_method",
    "sasl_username",
    "uid",
    "envid",
    "ret",
    "body",
    "smtputf8",
    "origin",
    "extract",
    "fullname",
    "x_9",
];

#[derive(Arbitrary, Debug)]
struct Rcpt {
    addr: String,
    orcpt: Option<String>,
    notify: Option<String>,
    route: Option<String>,
    done: bool,
}

#[derive(Arbitrary, Debug)]
struct Message {
    secs: u64,
    micros: u32,
    sender: String,
    rcpts: Vec<Rcpt>,
    attrs: Vec<(u8, String)>,
    content: Vec<u8>,
    /// Prefix lengths to try (taken modulo the file length).
    cuts: Vec<u32>,
    /// Bits to flip, one at a time (bit index modulo the file's bits).
    flips: Vec<u32>,
    /// Which recipients to mark done in place.
    mark: Vec<bool>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Written(Message),
}

/// The envelope without the reader's bookkeeping (recipient offsets).
fn normal(env: &Envelope) -> Envelope {
    let mut e = env.clone();
    for r in &mut e.recipients {
        r.offset = 0;
    }
    e
}

fn same_message(a: &QueueFile, b: &QueueFile) -> bool {
    normal(&a.envelope) == normal(&b.envelope) && a.content() == b.content()
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(bytes) => {
            let Ok(qf) = QueueFile::parse(bytes) else {
                return;
            };
            assert!(qf.content_start <= qf.content_end && qf.content_end <= qf.bytes.len());
            for r in &qf.envelope.recipients {
                let line = &qf.bytes[r.offset..];
                assert!(line.starts_with(b"rcpt ") || line.starts_with(b"done "));
            }
            let again = QueueFile::parse(encode_file(&qf.envelope, qf.content()))
                .expect("a file the reader accepted, written again, reads back");
            assert!(same_message(&qf, &again), "rewriting changed the message");
        }
        Input::Written(m) => written(m),
    }
});

fn written(m: Message) {
    let env = Envelope {
        arrival: UNIX_EPOCH
            + Duration::new(m.secs % 100_000_000_000, (m.micros % 1_000_000) * 1000),
        sender: m.sender,
        recipients: m
            .rcpts
            .into_iter()
            .map(|r| Recipient {
                addr: r.addr,
                orcpt: r.orcpt,
                notify: r.notify,
                route: r.route,
                done: r.done,
                offset: 0,
            })
            .collect(),
        attrs: m
            .attrs
            .into_iter()
            .map(|(k, v)| (KEYS[usize::from(k) % KEYS.len()].to_string(), v))
            .collect(),
    };
    let bytes = encode_file(&env, &m.content);
    if env.recipients.iter().any(|r| r.addr.is_empty()) {
        // No program queues an empty recipient address (smtpd refuses
        // RCPT TO:<>, sendmail and cleanup drop empty ones); the reader
        // refuses such a file rather than read something else.
        assert!(
            QueueFile::parse(bytes).is_err(),
            "empty recipient read back"
        );
        return;
    }
    let qf = match QueueFile::parse(bytes.clone()) {
        Ok(qf) => qf,
        Err(e) => panic!("the reader rejects what the writer wrote: {e}\n{env:?}"),
    };
    assert_eq!(
        normal(&qf.envelope),
        env,
        "envelope changed through the file"
    );
    assert_eq!(
        qf.content(),
        &m.content[..],
        "content changed through the file"
    );

    // Torn writes are never messages.
    for cut in m
        .cuts
        .iter()
        .take(8)
        .copied()
        .chain([0, 1, bytes.len() as u32 - 1])
    {
        let len = cut as usize % bytes.len();
        assert!(
            QueueFile::parse(bytes[..len].to_vec()).is_err(),
            "a {len}-byte prefix of a {}-byte file was accepted",
            bytes.len()
        );
    }
    // Flipped bits are detected, or change nothing.
    for &bit in m.flips.iter().take(8) {
        let bit = bit as usize % (bytes.len() * 8);
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        if let Ok(d) = QueueFile::parse(damaged) {
            assert!(
                same_message(&qf, &d),
                "bit {bit} flipped gives a different message"
            );
        }
    }
    // Marking done in place, as mark_done does on disk.
    let mut marked = bytes.clone();
    let mut want = env.clone();
    for ((r, w), &mark) in qf
        .envelope
        .recipients
        .iter()
        .zip(&mut want.recipients)
        .zip(&m.mark)
    {
        if mark {
            marked[r.offset..r.offset + 4].copy_from_slice(b"done");
            w.done = true;
        }
    }
    let d = QueueFile::parse(marked).expect("marking done keeps the file valid");
    assert_eq!(
        normal(&d.envelope),
        want,
        "marking done changed more than the flags"
    );
}

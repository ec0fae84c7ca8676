//! The queue file format. One message is one file:
//!
//! ```text
//! POSTERN-QUEUE 1                      magic and format version
//! arrival 1795000000.123456            arrival time (seconds.microseconds)
//! sender scan@contoso.com              envelope sender ("sender" alone for <>)
//! rcpt bob@contoso.com orcpt=rfc822;bob@contoso.com notify=FAILURE route=...
//! done carol@contoso.com               a recipient already delivered or bounced
//! client_name scanner.lan              ... further "key value" lines ...
//!                                      an empty line ends the envelope
//! <message content, CRLF line ends, not dot-stuffed, exactly as it is sent>
//! END 0000000000000a3f 1c2d3e4f        trailer: content length, CRC-32
//! ```
//!
//! Values escape bytes <= 0x20, 0x7f and `%` as `%XX`. The trailer is 30
//! bytes, fixed width, and its CRC-32 covers everything before it (with
//! `done` lines counted as `rcpt`, because delivery agents mark recipients done
//! in place). A file without a valid trailer is torn or damaged and is never
//! taken for a message.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First line of every queue file.
pub const MAGIC: &[u8] = b"POSTERN-QUEUE 1\n";
/// Length of the fixed-width trailer line.
pub const TRAILER_LEN: usize = 30;
/// Largest envelope (bytes) a reader accepts.
pub const MAX_ENVELOPE: usize = 16 << 20;

/// DSN RET parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a bounce.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// One envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// The address to deliver to (after rewriting).
    pub addr: String,
    /// DSN original recipient (`rfc822;addr`), if known.
    pub orcpt: Option<String>,
    /// DSN NOTIFY (`NEVER` or a comma list of `SUCCESS,FAILURE,DELAY`).
    pub notify: Option<String>,
    /// A fixed route decided before queueing (e.g. `error:5.1.1 text` for
    /// an alias that cannot be delivered); qmgr uses it instead of routing.
    pub route: Option<String>,
    /// True when delivered or bounced already (a `done` line).
    pub done: bool,
    /// Byte offset of this recipient's line in the file (set by the reader).
    pub offset: usize,
}

/// The envelope of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the message arrived.
    pub arrival: SystemTime,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Recipients in order.
    pub recipients: Vec<Recipient>,
    /// Other `key value` lines (client_name, client_addr, helo, protocol,
    /// sasl_username, uid, envid, ret, body, smtputf8, origin, ...), in order.
    pub attrs: Vec<(String, String)>,
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope {
            arrival: UNIX_EPOCH,
            sender: String::new(),
            recipients: Vec::new(),
            attrs: Vec::new(),
        }
    }
}

impl Envelope {
    /// The value of an attribute line.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (replaces) an attribute.
    pub fn set_attr(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(a) = self.attrs.iter_mut().find(|(k, _)| k == key) {
            a.1 = value;
        } else {
            self.attrs.push((key.to_string(), value));
        }
    }

    /// DSN RET, if given.
    pub fn ret(&self) -> Option<Ret> {
        match self.attr("ret") {
            Some(v) if v.eq_ignore_ascii_case("full") => Some(Ret::Full),
            Some(v) if v.eq_ignore_ascii_case("hdrs") => Some(Ret::Hdrs),
            _ => None,
        }
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &Recipient)> {
        self.recipients.iter().enumerate().filter(|(_, r)| !r.done)
    }

    /// Serialises the envelope (magic through the empty line).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 64 * self.recipients.len());
        out.extend_from_slice(MAGIC);
        let d = self.arrival.duration_since(UNIX_EPOCH).unwrap_or_default();
        out.extend_from_slice(
            format!("arrival {}.{:06}\n", d.as_secs(), d.subsec_micros()).as_bytes(),
        );
        out.extend_from_slice(b"sender");
        if !self.sender.is_empty() {
            out.push(b' ');
            escape_into(&self.sender, &mut out);
        }
        out.push(b'\n');
        for r in &self.recipients {
            out.extend_from_slice(if r.done { b"done " } else { b"rcpt " });
            escape_into(&r.addr, &mut out);
            if let Some(o) = &r.orcpt {
                out.extend_from_slice(b" orcpt=");
                escape_into(o, &mut out);
            }
            if let Some(n) = &r.notify {
                out.extend_from_slice(b" notify=");
                escape_into(n, &mut out);
            }
            if let Some(n) = &r.route {
                out.extend_from_slice(b" route=");
                escape_into(n, &mut out);
            }
            out.push(b'\n');
        }
        for (k, v) in &self.attrs {
            out.extend_from_slice(k.as_bytes());
            out.push(b' ');
            escape_into(v, &mut out);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// Why a queue file cannot be read. Each becomes the `.reason` of a file
/// moved to `corrupt/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The file does not start with the magic line.
    #[error("not a postern queue file (missing \"POSTERN-QUEUE 1\" first line)")]
    BadMagic,
    /// The file ends before its trailer: a torn or partial write.
    #[error("incomplete file: no valid end marker (torn write or still being written)")]
    Truncated,
    /// An envelope line is malformed.
    #[error("envelope line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The content length in the trailer does not match.
    #[error("content length mismatch: trailer says {expected} bytes, file has {actual}")]
    Length {
        /// From the trailer.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// The checksum does not match: the file was damaged.
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
}

/// A queue file read into memory and verified.
#[derive(Debug, Clone)]
pub struct QueueFile {
    /// The envelope.
    pub envelope: Envelope,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Where the content starts in `bytes`.
    pub content_start: usize,
    /// Where the content ends (the trailer starts).
    pub content_end: usize,
}

impl QueueFile {
    /// The message content.
    pub fn content(&self) -> &[u8] {
        &self.bytes[self.content_start..self.content_end]
    }

    /// Parses and verifies a whole file.
    ///
    /// # Errors
    /// A [`FileError`] saying what is wrong.
    pub fn parse(bytes: Vec<u8>) -> Result<QueueFile, FileError> {
        if !bytes.starts_with(MAGIC) {
            if MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
                return Err(FileError::Truncated);
            }
            return Err(FileError::BadMagic);
        }
        let (envelope, content_start, crc) = parse_envelope(&bytes)?;
        if bytes.len() < content_start + TRAILER_LEN {
            return Err(FileError::Truncated);
        }
        let content_end = bytes.len() - TRAILER_LEN;
        let (len, sum) = parse_trailer(&bytes[content_end..]).ok_or(FileError::Truncated)?;
        let actual = (content_end - content_start) as u64;
        if len != actual {
            return Err(FileError::Length {
                expected: len,
                actual,
            });
        }
        let mut h = crc;
        h.update(&bytes[content_start..content_end]);
        if h.finalize() != sum {
            return Err(FileError::Checksum);
        }
        Ok(QueueFile {
            envelope,
            bytes,
            content_start,
            content_end,
        })
    }

    /// Reads, parses and verifies the file at `path`.
    ///
    /// # Errors
    /// I/O errors, or [`FileError`] as `InvalidData`.
    pub fn read(path: &std::path::Path) -> std::io::Result<QueueFile> {
        let bytes = std::fs::read(path)?;
        QueueFile::parse(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Formats the trailer for `len` content bytes and checksum `crc`.
pub fn trailer(len: u64, crc: u32) -> [u8; TRAILER_LEN] {
    let s = format!("END {len:016x} {crc:08x}\n");
    let mut out = [0u8; TRAILER_LEN];
    out.copy_from_slice(s.as_bytes());
    out
}

fn parse_trailer(t: &[u8]) -> Option<(u64, u32)> {
    if t.len() != TRAILER_LEN || !t.starts_with(b"END ") || t[20] != b' ' || t[29] != b'\n' {
        return None;
    }
    let len = std::str::from_utf8(&t[4..20]).ok()?;
    let crc = std::str::from_utf8(&t[21..29]).ok()?;
    if !len
        .bytes()
        .chain(crc.bytes())
        .all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    Some((
        u64::from_str_radix(len, 16).ok()?,
        u32::from_str_radix(crc, 16).ok()?,
    ))
}

/// Feeds one envelope line into the checksum, counting `done` as `rcpt`.
pub fn crc_envelope_line(h: &mut crc32fast::Hasher, line_with_lf: &[u8]) {
    if let Some(rest) = line_with_lf.strip_prefix(b"done ") {
        h.update(b"rcpt ");
        h.update(rest);
    } else {
        h.update(line_with_lf);
    }
}

/// Parses the envelope; returns it, the content offset, and the checksum state
/// after the envelope.
fn parse_envelope(bytes: &[u8]) -> Result<(Envelope, usize, crc32fast::Hasher), FileError> {
    let mut h = crc32fast::Hasher::new();
    let mut env = Envelope::default();
    let mut pos = 0;
    let mut lineno = 0;
    let mut saw_arrival = false;
    let mut saw_sender = false;
    loop {
        if pos > MAX_ENVELOPE {
            return Err(FileError::BadLine {
                line: lineno,
                message: format!("envelope larger than {MAX_ENVELOPE} bytes"),
            });
        }
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return Err(FileError::Truncated);
        };
        let line = &bytes[pos..pos + nl];
        let start = pos;
        crc_envelope_line(&mut h, &bytes[pos..pos + nl + 1]);
        pos += nl + 1;
        lineno += 1;
        if lineno == 1 {
            continue; // magic, checked by the caller
        }
        if line.is_empty() {
            break;
        }
        let bad = |m: &str| FileError::BadLine {
            line: lineno,
            message: m.to_string(),
        };
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
        let (key, value) = match text.split_once(' ') {
            Some((k, v)) => (k, v),
            None => (text, ""),
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("bad key"));
        }
        match key {
            "arrival" => {
                let (s, us) = value
                    .split_once('.')
                    .ok_or_else(|| bad("arrival: expected seconds.micros"))?;
                let s: u64 = s.parse().map_err(|_| bad("arrival: bad seconds"))?;
                let us: u32 = us.parse().map_err(|_| bad("arrival: bad microseconds"))?;
                if us >= 1_000_000 {
                    return Err(bad("arrival: bad microseconds"));
                }
                env.arrival = UNIX_EPOCH
                    .checked_add(Duration::new(s, us * 1000))
                    .ok_or_else(|| bad("arrival out of range"))?;
                saw_arrival = true;
            }
            "sender" => {
                env.sender = unescape(value).ok_or_else(|| bad("bad escape"))?;
                saw_sender = true;
            }
            "rcpt" | "done" => {
                let mut parts = value.split(' ');
                let addr = unescape(parts.next().unwrap_or("")).ok_or_else(|| bad("bad escape"))?;
                if addr.is_empty() {
                    return Err(bad("empty recipient"));
                }
                let mut r = Recipient {
                    addr,
                    done: key == "done",
                    offset: start,
                    ..Recipient::default()
                };
                for p in parts {
                    match p.split_once('=') {
                        Some(("orcpt", v)) => {
                            r.orcpt = Some(unescape(v).ok_or_else(|| bad("bad escape"))?)
                        }
                        Some(("notify", v)) => {
                            r.notify = Some(unescape(v).ok_or_else(|| bad("bad escape"))?)
                        }
                        Some(("route", v)) => {
                            r.route = Some(unescape(v).ok_or_else(|| bad("bad escape"))?)
                        }
                        _ => return Err(bad("unknown recipient parameter")),
                    }
                }
                env.recipients.push(r);
            }
            _ => {
                let v = unescape(value).ok_or_else(|| bad("bad escape"))?;
                env.attrs.push((key.to_string(), v));
            }
        }
    }
    if !saw_arrival || !saw_sender {
        return Err(FileError::BadLine {
            line: lineno,
            message: "envelope lacks arrival or sender".into(),
        });
    }
    Ok((env, pos, h))
}

/// Appends `s` with bytes <= 0x20, 0x7f and '%' written as %XX.
pub fn escape_into(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        if b <= 0x20 || b == 0x7f || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// Reverses [`escape_into`]; `None` for a malformed escape or non-UTF-8 result.
pub fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Marks recipients done in place: overwrites `rcpt` with `done` at each
/// recipient line offset (from [`Recipient::offset`]). The checksum is
/// unaffected. A delivery agent does this for delivered recipients before it
/// reports, so that a queue manager that dies and re-reads the file does
/// not deliver them again. No fsync: the page cache survives a process
/// crash, and a power loss only means a repeated delivery.
///
/// # Errors
/// The file cannot be opened, or an offset does not point at a recipient
/// line (the file is left as it was for that recipient).
pub fn mark_done(path: &std::path::Path, offsets: &[usize]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if offsets.is_empty() {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut result = Ok(());
    for &off in offsets {
        let mut cur = [0u8; 5];
        f.read_exact_at(&mut cur, off as u64)?;
        match &cur {
            b"rcpt " => f.write_all_at(b"done", off as u64)?,
            b"done " => {}
            _ => {
                result = Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: offset {off} is not a recipient line", path.display()),
                ))
            }
        }
    }
    result
}

/// Builds a complete file image in memory (envelope, content, trailer).
pub fn encode_file(env: &Envelope, content: &[u8]) -> Vec<u8> {
    let head = env.encode();
    let mut h = crc32fast::Hasher::new();
    for line in head.split_inclusive(|&b| b == b'\n') {
        crc_envelope_line(&mut h, line);
    }
    h.update(content);
    let mut out = Vec::with_capacity(head.len() + content.len() + TRAILER_LEN);
    out.extend_from_slice(&head);
    out.extend_from_slice(content);
    out.extend_from_slice(&trailer(content.len() as u64, h.finalize()));
    out
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Envelope, Vec<u8>) {
        let env = Envelope {
            arrival: UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_000),
            sender: "scan@contoso.com".into(),
            recipients: vec![
                Recipient {
                    addr: "bob@contoso.com".into(),
                    orcpt: Some("rfc822;bob@contoso.com".into()),
                    notify: Some("FAILURE,DELAY".into()),
                    ..Default::default()
                },
                Recipient {
                    addr: "\"john doe\"@contoso.com".into(),
                    ..Default::default()
                },
            ],
            attrs: vec![
                ("client_name".into(), "scanner.lan".into()),
                ("helo".into(), "100% sure".into()),
            ],
        };
        (env, b"Subject: hi\r\n\r\nbody\r\n.leading dot\r\n".to_vec())
    }

    #[test]
    fn round_trip() {
        let (env, content) = sample();
        let bytes = encode_file(&env, &content);
        let f = QueueFile::parse(bytes).unwrap();
        let mut got = f.envelope.clone();
        for r in &mut got.recipients {
            r.offset = 0;
        }
        assert_eq!(got, env);
        assert_eq!(f.content(), &content[..]);
        assert_eq!(f.envelope.attr("helo"), Some("100% sure"));
    }

    #[test]
    fn null_sender_round_trips() {
        let (mut env, content) = sample();
        env.sender.clear();
        let f = QueueFile::parse(encode_file(&env, &content)).unwrap();
        assert_eq!(f.envelope.sender, "");
    }

    #[test]
    fn done_marks_in_place_keep_the_checksum() {
        let (env, content) = sample();
        let mut bytes = encode_file(&env, &content);
        let f = QueueFile::parse(bytes.clone()).unwrap();
        let off = f.envelope.recipients[1].offset;
        bytes[off..off + 4].copy_from_slice(b"done");
        let f = QueueFile::parse(bytes).unwrap();
        assert!(!f.envelope.recipients[0].done);
        assert!(f.envelope.recipients[1].done);
    }

    #[test]
    fn mark_done_writes_in_place_and_refuses_bad_offsets() {
        let (env, content) = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("X");
        std::fs::write(&path, encode_file(&env, &content)).unwrap();
        let f = QueueFile::read(&path).unwrap();
        let off = f.envelope.recipients[0].offset;
        mark_done(&path, &[off]).unwrap();
        mark_done(&path, &[off]).unwrap();
        let f = QueueFile::read(&path).unwrap();
        assert!(f.envelope.recipients[0].done && !f.envelope.recipients[1].done);
        assert!(mark_done(&path, &[3]).is_err());
        assert!(QueueFile::read(&path).is_ok());
    }

    #[test]
    fn every_truncation_is_rejected() {
        let (env, content) = sample();
        let bytes = encode_file(&env, &content);
        for n in 0..bytes.len() {
            assert!(
                QueueFile::parse(bytes[..n].to_vec()).is_err(),
                "accepted a file cut at {n}"
            );
        }
    }

    #[test]
    fn damage_is_detected() {
        let (env, content) = sample();
        let bytes = encode_file(&env, &content);
        let mut b = bytes.clone();
        let n = b.len() - TRAILER_LEN - 3;
        b[n] ^= 0x20;
        assert_eq!(QueueFile::parse(b).unwrap_err(), FileError::Checksum);
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(QueueFile::parse(b).unwrap_err(), FileError::BadMagic);
    }

    proptest! {
            #[test]
            fn random_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = QueueFile::parse(data.clone());
                let mut with_magic = MAGIC.to_vec();
                with_magic.extend_from_slice(&data);
                let _ = QueueFile::parse(with_magic);
            }

            #[test]
            fn round_trips_and_rejects_corruption(
                sender in "[ -~]{0,30}",
                rcpts in proptest::collection::vec("[!-~][ -~]{0,30}", 1..5),
                content in proptest::collection::vec(any::<u8>(), 0..300),
                flip in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let env = Envelope {
                    arrival: UNIX_EPOCH + Duration::new(1_700_000_000, 1000),
                    sender,
    recipients: rcpts
                        .into_iter()
                        .map(|a| Recipient {
                            orcpt: Some(format!("rfc822;{a}")),
                            notify: Some("SUCCESS,DELAY".into()),
                            route: Some(format!("error:5.1.1 no such user {a}%")),
                            addr: a,
                            ..Default::default()
                        })
                        .collect(),
                    attrs: vec![("k".into(), "v %x\n".into())],
                };
                let bytes = encode_file(&env, &content);
                let f = QueueFile::parse(bytes.clone()).unwrap();
                prop_assert_eq!(&f.envelope.sender, &env.sender);
                prop_assert_eq!(f.content(), &content[..]);
                for (got, want) in f.envelope.recipients.iter().zip(&env.recipients) {
                    prop_assert_eq!(&got.addr, &want.addr);
                    prop_assert_eq!(&got.orcpt, &want.orcpt);
                    prop_assert_eq!(&got.notify, &want.notify);
                    prop_assert_eq!(&got.route, &want.route);
                }
                // Flipping any single bit yields an error or, if it hit a
                // rcpt/done marker, the same message.
                let mut b = bytes.clone();
                let i = flip.index(b.len());
                b[i] ^= 1 << bit;
                if let Ok(g) = QueueFile::parse(b) {
                    prop_assert_eq!(g.content(), &content[..]);
                    prop_assert_eq!(&g.envelope.sender, &env.sender);
                    prop_assert_eq!(g.envelope.recipients.len(), env.recipients.len());
                }
            }
        }
}

//! Reading one drop-folder file: a plain RFC 5322 message as the IIS SMTP
//! service's Pickup folder took it. The envelope comes from the file:
//!
//! - a leading run of `X-Sender:` / `X-Receiver:` headers (what .NET's
//!   `SmtpClient` writes for `SpecifiedPickupDirectory`, and what IIS and
//!   Exchange honoured) gives the sender and the recipients; these headers
//!   are removed, like an SMTP envelope;
//! - otherwise the recipients are the `To:`, `Cc:` and `Bcc:` addresses (or
//!   `Resent-To/Cc/Bcc:` when the message has `Resent-` headers), as
//!   `sendmail -t` takes them, and the sender is the first `From:` address.
//!
//! The bytes are normalized as `sendmail -i` reads standard input: every
//! line end becomes CRLF (a CR before LF is dropped), leading mbox `From `
//! lines are dropped, and a UTF-8 byte-order mark (Notepad) is skipped. A
//! lone `.` as the very last line (the old Exchange and IIS convention) is
//! dropped; a `.` line elsewhere is content.
//!
//! Anything that is not plainly a mail message is refused with a reason
//! the admin can act on: an empty file, NUL bytes (binary data, UTF-16
//! text), no header at the start, control characters in the header,
//! a mostly-binary body, a line or header block over its limit, a file over
//! `message_size_limit`, no recipient. The parser never panics, whatever
//! the input (a property test feeds it arbitrary bytes).

use proto::header;

/// Limits a drop file must respect.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message in bytes after line-end normalization (0: no limit):
    /// `message_size_limit`.
    pub max_size: u64,
    /// Longest line in bytes, without its line end: `line_length_limit`.
    pub line_length: usize,
    /// Largest header block in bytes: `header_size_limit`.
    pub header_size: usize,
}

/// A drop file turned into an envelope and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropMessage {
    /// The message with CRLF line ends, without envelope headers.
    pub content: Vec<u8>,
    /// The envelope sender: `X-Sender:` or the first `From:` address
    /// (`Some("")` is the null sender); `None` when the file names none.
    pub sender: Option<String>,
    /// Envelope recipients, in header order (never empty).
    pub recipients: Vec<String>,
    /// True when `X-Sender:`/`X-Receiver:` headers gave the envelope.
    pub envelope_headers: bool,
}

/// Why a drop file is refused; the text goes into the `.reason` file and
/// the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nothing but white space.
    #[error("the file is empty")]
    Empty,
    /// UTF-16 text (Notepad's "Unicode"): recognisable by its byte-order mark.
    #[error("the file is UTF-16 text; save it as UTF-8 or plain ASCII text")]
    Utf16,
    /// A NUL byte: binary data.
    #[error("the file contains a NUL byte (at offset {0}): it is binary data, not a mail message")]
    Nul(usize),
    /// Over `message_size_limit`.
    #[error("the message is {size} bytes; message_size_limit is {limit}")]
    TooBig {
        /// Size in bytes (after line-end normalization).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A line over `line_length_limit`.
    #[error("line {line} is {len} bytes long; line_length_limit is {limit}")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// Its length without the line end.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The first line is not a header field.
    #[error(
        "the file does not start with a header such as \"To: someone@example.com\" (line 1 is \"{0}\")"
    )]
    NoHeader(String),
    /// A control character in the header block.
    #[error("header line {line} contains the control character 0x{byte:02x}")]
    HeaderControl {
        /// 1-based line number.
        line: usize,
        /// The byte.
        byte: u8,
    },
    /// The header block is over `header_size_limit`.
    #[error("the header block is {size} bytes; header_size_limit is {limit}")]
    HeaderTooBig {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is mostly control characters.
    #[error(
        "the body looks binary ({count} of its {len} bytes are control characters); attach binary data MIME-encoded"
    )]
    Binary {
        /// Control characters counted.
        count: usize,
        /// Body length.
        len: usize,
    },
    /// Recipients, none of them a valid address.
    #[error("no valid recipient address (found: {0})")]
    BadRecipients(String),
    /// No address to send to.
    #[error("no recipients: the file has no address in To:, Cc:, Bcc: (or X-Receiver:) headers")]
    NoRecipients,
}

/// Parses a drop file's bytes.
///
/// # Errors
/// The [`Refusal`] that says why the file cannot be sent.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<DropMessage, Refusal> {
    if raw.starts_with(&[0xff, 0xfe]) || raw.starts_with(&[0xfe, 0xff]) {
        return Err(Refusal::Utf16);
    }
    if let Some(i) = raw.iter().position(|&b| b == 0) {
        return Err(Refusal::Nul(i));
    }
    let raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::Empty);
    }
    let content = normalize(raw, limits.line_length)?;
    if limits.max_size > 0 && content.len() as u64 > limits.max_size {
        return Err(Refusal::TooBig {
            size: content.len() as u64,
            limit: limits.max_size,
        });
    }
    let hend = header::header_end(&content).unwrap_or(content.len());
    let headers = header::parse_headers(&content[..hend]);
    if headers.is_empty() {
        return Err(Refusal::NoHeader(preview(&content)));
    }
    let header_len: usize = headers.iter().map(|h| h.raw.len()).sum();
    if header_len > limits.header_size {
        return Err(Refusal::HeaderTooBig {
            size: header_len,
            limit: limits.header_size,
        });
    }
    check_header_bytes(&content[..header_len])?;
    check_body(&content[hend..])?;

    // The leading run of envelope headers.
    let mut x_sender: Option<String> = None;
    let mut x_receivers: Vec<String> = Vec::new();
    let mut envelope_len = 0;
    let mut n_envelope = 0;
    for h in &headers {
        if h.is("x-sender") {
            if x_sender.is_none() {
                x_sender = sender_value(&h.value());
            }
        } else if h.is("x-receiver") {
            x_receivers.extend(addresses(&h.value()));
        } else {
            break;
        }
        envelope_len += h.raw.len();
        n_envelope += 1;
    }
    let rest = &headers[n_envelope..];
    let recipients = if x_receivers.is_empty() {
        extract_recipients(rest)
    } else {
        x_receivers
    };
    if recipients.is_empty() {
        return Err(Refusal::NoRecipients);
    }
    if !recipients.iter().any(|r| valid_address(r)) {
        let mut list = recipients.join(", ");
        if list.len() > 200 {
            let mut end = 200;
            while !list.is_char_boundary(end) {
                end -= 1;
            }
            list.truncate(end);
            list.push_str("...");
        }
        return Err(Refusal::BadRecipients(list.escape_debug().to_string()));
    }
    let sender = x_sender.or_else(|| {
        rest.iter()
            .find(|h| h.is("from"))
            .and_then(|h| addresses(&h.value()).into_iter().next())
    });
    let content = if envelope_len > 0 {
        content[envelope_len..].to_vec()
    } else {
        content
    };
    Ok(DropMessage {
        content,
        sender,
        recipients,
        envelope_headers: n_envelope > 0,
    })
}

/// CRLF line ends, mbox `From ` lines skipped, the final lone `.` dropped,
/// every line within `max_line`.
fn normalize(raw: &[u8], max_line: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut first = true;
    for (n, line) in raw.split_inclusive(|&b| b == b'\n').enumerate() {
        let mut line = line.strip_suffix(b"\n").unwrap_or(line);
        while let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if first {
            let unquoted = &line[line.iter().take_while(|&&b| b == b'>').count()..];
            if unquoted.starts_with(b"From ") {
                continue;
            }
            first = false;
        }
        if line.len() > max_line {
            return Err(Refusal::LineTooLong {
                line: n + 1,
                len: line.len(),
                limit: max_line,
            });
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    if out == b".\r\n" {
        out.clear();
    } else if out.ends_with(b"\r\n.\r\n") {
        out.truncate(out.len() - 3);
    }
    Ok(out)
}

/// Header lines may hold TAB and ESC (raw ISO-2022-JP) but no other
/// control character.
fn check_header_bytes(head: &[u8]) -> Result<(), Refusal> {
    for (n, line) in head.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(&byte) = line
            .iter()
            .find(|&&b| (b < 0x20 && b != b'\t' && b != 0x1b) || b == 0x7f)
        {
            return Err(Refusal::HeaderControl { line: n + 1, byte });
        }
    }
    Ok(())
}

/// A text body has few control characters besides TAB, CR, LF, FF and ESC;
/// more than one in twenty means binary data (an image or a PDF pasted raw).
fn check_body(body: &[u8]) -> Result<(), Refusal> {
    let count = body
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n' | 0x0c | 0x1b)) || b == 0x7f)
        .count();
    if count > 0 && count * 20 > body.len() {
        return Err(Refusal::Binary {
            count,
            len: body.len(),
        });
    }
    Ok(())
}

/// The first line, printable and short, for a refusal reason.
fn preview(content: &[u8]) -> String {
    let line = content.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut s: String = String::from_utf8_lossy(&line[..line.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if line.len() > 60 {
        s.push_str("...");
    }
    s
}

/// The addresses of an address-list value (empty ones skipped).
fn addresses(value: &str) -> Vec<String> {
    header::parse_address_list(value)
        .into_iter()
        .map(|a| a.address)
        .filter(|a| !a.is_empty())
        .collect()
}

/// An address the queue accepts (the same test as for maildrop files):
/// one with bad syntax is bounced, and a file with only such is refused.
pub fn valid_address(a: &str) -> bool {
    !a.is_empty() && !a.chars().any(char::is_control) && proto::address::Mailbox::parse(a).is_ok()
}

/// `X-Sender:` value: `<>` is the null sender, an empty value none.
fn sender_value(value: &str) -> Option<String> {
    if value.trim() == "<>" {
        return Some(String::new());
    }
    addresses(value).into_iter().next()
}

/// Recipients as `sendmail -t` takes them: To/Cc/Bcc, or Resent-To/Cc/Bcc
/// when the message has Resent- headers.
fn extract_recipients(headers: &[header::Header<'_>]) -> Vec<String> {
    let resent = headers
        .iter()
        .any(|h| h.name.len() > 7 && h.name[..7].eq_ignore_ascii_case("resent-"));
    let wanted: &[&str] = if resent {
        &["resent-to", "resent-cc", "resent-bcc"]
    } else {
        &["to", "cc", "bcc"]
    };
    headers
        .iter()
        .filter(|h| wanted.iter().any(|w| h.is(w)))
        .flat_map(|h| addresses(&h.value()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        max_size: 10_240_000,
        line_length: 2048,
        header_size: 102_400,
    };

    fn ok(input: &[u8]) -> DropMessage {
        parse(input, &LIMITS).unwrap_or_else(|e| panic!("refused: {e}"))
    }

    fn refused(input: &[u8]) -> Refusal {
        parse(input, &LIMITS).expect_err("accepted")
    }

    #[test]
    fn a_plain_message_gives_sendmail_t_envelope() {
        let m = ok(b"From: Scanner <scan@contoso.com>\nTo: Bob <bob@contoso.com>, carol@contoso.com\nCc: dave@contoso.com\nBcc: eve@contoso.com\nSubject: Scan\n\nbody\n");
        assert_eq!(m.sender.as_deref(), Some("scan@contoso.com"));
        assert_eq!(
            m.recipients,
            [
                "bob@contoso.com",
                "carol@contoso.com",
                "dave@contoso.com",
                "eve@contoso.com"
            ]
        );
        assert!(!m.envelope_headers);
        // Bcc stays here: cleanup removes it, as for sendmail -t.
        assert!(
            m.content
                .starts_with(b"From: Scanner <scan@contoso.com>\r\nTo: ")
        );
        assert!(m.content.ends_with(b"Subject: Scan\r\n\r\nbody\r\n"));
    }

    #[test]
    fn dotnet_envelope_headers_are_the_envelope_and_are_removed() {
        // As System.Net.Mail's SmtpClient writes a pickup-directory file.
        let m = ok(b"X-Sender: app@contoso.com\r\nX-Receiver: ops@contoso.com\r\nX-Receiver: <audit@contoso.com>\r\nMIME-Version: 1.0\r\nFrom: \"CRM\" <noreply@contoso.com>\r\nTo: customer@example.com\r\nSubject: Invoice\r\n\r\nHello\r\n");
        assert_eq!(m.sender.as_deref(), Some("app@contoso.com"));
        assert_eq!(m.recipients, ["ops@contoso.com", "audit@contoso.com"]);
        assert!(m.envelope_headers);
        assert!(
            m.content.starts_with(b"MIME-Version: 1.0\r\nFrom: "),
            "{:?}",
            String::from_utf8_lossy(&m.content)
        );
        // Only the leading run counts: a later X-Sender is an ordinary header.
        let m = ok(b"To: a@x.com\nX-Sender: eudora@x.com\n\nb\n");
        assert_eq!(m.sender, None);
        assert_eq!(m.recipients, ["a@x.com"]);
        assert!(
            m.content
                .starts_with(b"To: a@x.com\r\nX-Sender: eudora@x.com\r\n")
        );
        // X-Sender: <> is the null sender; X-Sender alone still takes To:.
        let m = ok(b"X-Sender: <>\nTo: a@x.com\n\nb\n");
        assert_eq!(m.sender.as_deref(), Some(""));
        assert_eq!(m.recipients, ["a@x.com"]);
        assert_eq!(m.content, b"To: a@x.com\r\n\r\nb\r\n");
    }

    #[test]
    fn resent_headers_choose_resent_recipients() {
        let m =
            ok(b"From: a@x.com\nTo: old@x.com\nResent-From: me@x.com\nResent-To: new@x.com\n\nb\n");
        assert_eq!(m.recipients, ["new@x.com"]);
    }

    #[test]
    fn normalization_matches_sendmail() {
        let m = ok(b"\xef\xbb\xbfFrom MAILER-DAEMON Mon Jan  1 00:00:00 2024\r\nTo: a@x.com\r\r\n\n.line\n.\n");
        assert_eq!(m.content, b"To: a@x.com\r\n\r\n.line\r\n");
        // A dot line in the middle is content; only the final one goes.
        let m = ok(b"To: a@x.com\n\none\n.\ntwo");
        assert_eq!(m.content, b"To: a@x.com\r\n\r\none\r\n.\r\ntwo\r\n");
        // Headers only.
        let m = ok(b"To: a@x.com\nSubject: s");
        assert_eq!(m.content, b"To: a@x.com\r\nSubject: s\r\n");
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(refused(b""), Refusal::Empty);
        assert_eq!(refused(b" \r\n\n\t"), Refusal::Empty);
        assert_eq!(refused(b"To: a@x.com\n\nab\0c"), Refusal::Nul(15));
        assert_eq!(refused(b"\xff\xfeT\0o\0"), Refusal::Utf16);
        assert_eq!(refused(b"Subject: nobody\n\nbody\n"), Refusal::NoRecipients);
        assert_eq!(
            refused(b"To: undisclosed-recipients:;\n\nbody\n"),
            Refusal::NoRecipients
        );
        assert_eq!(
            refused(b"To: bad@@x, <@>\n\nbody\n"),
            Refusal::BadRecipients("bad@@x, @".into())
        );
        // One good address is enough: the bad one is bounced later.
        assert_eq!(
            ok(b"To: bad@@x, good@x.com\n\nb\n").recipients,
            ["bad@@x", "good@x.com"]
        );
        assert_eq!(
            refused(b"hello world\nTo: a@x.com\n"),
            Refusal::NoHeader("hello world".into())
        );
        assert_eq!(
            refused(b"\nTo: a@x.com\n"),
            Refusal::NoHeader(String::new())
        );
        assert!(matches!(
            refused(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
            Refusal::NoHeader(_)
        ));
        assert_eq!(
            refused(b"To: a@x.com\nSubject: bell\x07\n\nb\n"),
            Refusal::HeaderControl { line: 2, byte: 7 }
        );
        assert!(matches!(
            refused(b"To: a@x.com\n\n\x01\x02\x03\x04binary\x05\x06"),
            Refusal::Binary { count: 6, .. }
        ));
        let long = format!("To: a@x.com\n\n{}\n", "x".repeat(2049));
        assert_eq!(
            refused(long.as_bytes()),
            Refusal::LineTooLong {
                line: 3,
                len: 2049,
                limit: 2048
            }
        );
        let small = Limits {
            max_size: 20,
            ..LIMITS
        };
        assert_eq!(
            parse(b"To: a@x.com\n\n0123456789\n", &small),
            Err(Refusal::TooBig {
                size: 27,
                limit: 20
            })
        );
        let tiny_head = Limits {
            header_size: 10,
            ..LIMITS
        };
        assert!(matches!(
            parse(b"To: a@x.com\n\nb\n", &tiny_head),
            Err(Refusal::HeaderTooBig { size: 13, .. })
        ));
        // The reason text names the problem and the limit.
        assert_eq!(
            Refusal::TooBig {
                size: 30,
                limit: 20
            }
            .to_string(),
            "the message is 30 bytes; message_size_limit is 20"
        );
    }

    #[test]
    fn eight_bit_text_and_escape_sequences_are_text() {
        let m =
            ok("To: a@x.com\nSubject: caf\u{e9} \x1b$B$3$s\x1b(B\n\n\u{fc}ber\x0c\n".as_bytes());
        assert_eq!(m.recipients, ["a@x.com"]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes, &LIMITS);
            let _ = parse(&bytes, &Limits { max_size: 64, line_length: 16, header_size: 32 });
        }

        #[test]
        fn header_like_input_never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    "(To|Cc|Bcc|From|X-Sender|X-Receiver|Resent-To|Subject): [ -~]{0,40}",
                    "[ \t][ -~]{0,20}",
                    Just(String::new()),
                    Just(".".to_string()),
                    "[\\x00-\\x7f]{0,30}",
                ],
                0..20,
            ),
            crlf in any::<bool>(),
        ) {
            let sep = if crlf { "\r\n" } else { "\n" };
            let text = lines.join(sep);
            if let Ok(m) = parse(text.as_bytes(), &LIMITS) {
                // Accepted messages are clean: CRLF only, no NUL, somebody to send to.
                prop_assert!(!m.recipients.is_empty());
                prop_assert!(!m.content.contains(&0));
                for (i, &b) in m.content.iter().enumerate() {
                    if b == b'\n' {
                        prop_assert!(i > 0 && m.content[i - 1] == b'\r');
                    }
                }
                prop_assert!(m.content.is_empty() || m.content.ends_with(b"\r\n"));
            }
        }

        #[test]
        fn lf_and_crlf_files_give_the_same_message(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..12),
        ) {
            let lf = format!("To: a@x.com\nSubject: s\n\n{}", lines.join("\n"));
            let crlf = lf.replace('\n', "\r\n");
            prop_assert_eq!(parse(lf.as_bytes(), &LIMITS), parse(crlf.as_bytes(), &LIMITS));
        }

        #[test]
        fn any_well_formed_message_is_accepted(
            to in "[a-z]{1,10}@[a-z]{1,10}\\.com",
            subject in "[ -~]{0,60}",
            body in proptest::collection::vec("[ -~]{0,100}", 0..10),
        ) {
            let text = format!("To: {to}\nSubject: {subject}\n\n{}\n", body.join("\n"));
            let m = parse(text.as_bytes(), &LIMITS).unwrap();
            prop_assert_eq!(m.recipients, vec![to]);
        }
    }
}

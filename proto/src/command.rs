//! SMTP commands: parsing what a client sends (server side), formatting
//! what a client sends (client side). xtext (RFC 3461) for ESMTP
//! parameter values is re-exported from [`crate::xtext`].

use crate::address::{self, AddressError, Mailbox, Path};
use crate::reply::Reply;
use crate::status::EnhancedCode;

pub use crate::xtext::{XtextError, xtext_decode, xtext_encode};

/// ESMTP parameters of MAIL or RCPT: (KEYWORD upper-cased, value as sent).
pub type Params = Vec<(String, Option<String>)>;

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO name` (all arguments, joined as sent).
    Ehlo(String),
    /// `HELO name`.
    Helo(String),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The reverse-path; [`Path::Null`] for `<>`.
        path: Path,
        /// `SIZE=123`, `BODY=8BITMIME`, `SMTPUTF8`, ...
        params: Params,
    },
    /// `RCPT TO:<path> params`; the path is never [`Path::Null`].
    Rcpt {
        /// The forward-path.
        path: Path,
        /// `NOTIFY=...`, `ORCPT=...`, ...
        params: Params,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP` (arguments ignored, RFC 5321 4.1.1.9).
    Noop,
    /// `QUIT` (arguments ignored).
    Quit,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `STARTTLS`.
    Starttls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The mechanism, upper-cased.
        mechanism: String,
        /// The base64 initial response; `Some("")` for the `=` that stands
        /// for an empty one.
        initial: Option<String>,
    },
    /// `ETRN domain`.
    Etrn(String),
    /// Any other verb; holds the whole line as received.
    Unknown(String),
}

/// Options for [`parse_command_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Require `<>` around MAIL FROM and RCPT TO addresses (Postfix's
    /// `strict_rfc821_envelopes`); off by default as in Postfix.
    pub strict_rfc821_envelopes: bool,
}

/// Why a command line was refused; [`CommandError::reply`] gives the reply
/// Postfix sends for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// An empty (or all-blank) line.
    #[error("empty command line")]
    Empty,
    /// The line is not valid UTF-8.
    #[error("command line is not valid UTF-8")]
    BadUtf8,
    /// A control character other than TAB (NUL, a bare CR, ...).
    #[error("control character {0:?} in command line")]
    ControlChar(char),
    /// Wrong arguments; holds the usage, e.g. `MAIL FROM:<address>`.
    #[error("syntax error, expected {0}")]
    Syntax(String),
    /// EHLO or HELO without a host name; holds the verb.
    #[error("{0} without a host name")]
    MissingHostname(&'static str),
    /// The MAIL FROM address does not parse.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The RCPT TO address does not parse.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// `RCPT TO:<>`.
    #[error("null recipient address <>")]
    NullRecipient,
    /// A MAIL/RCPT parameter that is not `keyword[=value]`.
    #[error("malformed ESMTP parameter {0:?}")]
    BadParameter(String),
}

impl CommandError {
    /// The reply Postfix's smtpd sends for this error, e.g.
    /// `501 5.5.4 Syntax: MAIL FROM:<address>`.
    pub fn reply(&self) -> Reply {
        let e = |c, s, d| Some(EnhancedCode::new(c, s, d));
        match self {
            CommandError::Empty | CommandError::ControlChar(_) => {
                Reply::new(500, e(5, 5, 2), "Error: bad syntax")
            }
            CommandError::BadUtf8 => Reply::new(500, e(5, 5, 2), "Error: bad UTF-8 syntax"),
            CommandError::Syntax(usage) => Reply::new(501, e(5, 5, 4), &format!("Syntax: {usage}")),
            // Postfix sends no enhanced code to HELO/EHLO (RFC 2034 section 3).
            CommandError::MissingHostname(verb) => {
                Reply::new(501, None, &format!("Syntax: {verb} hostname"))
            }
            CommandError::BadSender(_) => Reply::new(501, e(5, 1, 7), "Bad sender address syntax"),
            CommandError::BadRecipient(_) | CommandError::NullRecipient => {
                Reply::new(501, e(5, 1, 3), "Bad recipient address syntax")
            }
            CommandError::BadParameter(p) => {
                Reply::new(555, e(5, 5, 4), &format!("Unsupported option: {p}"))
            }
        }
    }
}

/// Parses one command line (without its CRLF; a trailing CR is ignored)
/// with the default [`ParseOptions`].
///
/// # Errors
/// A [`CommandError`] whose [`reply`](CommandError::reply) is what to send.
/// An unknown verb is not an error but [`Command::Unknown`]. Control
/// characters other than TAB anywhere in the line are refused
/// ([`CommandError::ControlChar`]), so nothing downstream (logs, headers)
/// ever sees them.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    parse_command_with(line, ParseOptions::default())
}

/// Parses one command line; see [`parse_command`].
///
/// # Errors
/// As [`parse_command`].
pub fn parse_command_with(line: &[u8], opts: ParseOptions) -> Result<Command, CommandError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadUtf8)?;
    if let Some(c) = line.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(CommandError::ControlChar(c));
    }
    let trimmed = line.trim_matches(BLANK);
    if trimmed.is_empty() {
        return Err(CommandError::Empty);
    }
    let (verb, args) = match trimmed.find(BLANK) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(BLANK)),
        None => (trimmed, ""),
    };
    let syntax = |usage: &str| Err(CommandError::Syntax(usage.to_string()));
    let cmd = match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if args.is_empty() => {
            let v = if verb.eq_ignore_ascii_case("EHLO") {
                "EHLO"
            } else {
                "HELO"
            };
            return Err(CommandError::MissingHostname(v));
        }
        "EHLO" => Command::Ehlo(args.to_string()),
        "HELO" => Command::Helo(args.to_string()),
        "MAIL" => {
            let Some(rest) = strip_prefix_ci(args, "FROM:") else {
                return syntax("MAIL FROM:<address>");
            };
            let (path, params) = split_path(rest.trim_start_matches(BLANK));
            if path.is_empty() {
                return syntax("MAIL FROM:<address>");
            }
            let path = parse_envelope(path, opts).map_err(CommandError::BadSender)?;
            Command::Mail {
                path,
                params: parse_params(params)?,
            }
        }
        "RCPT" => {
            let Some(rest) = strip_prefix_ci(args, "TO:") else {
                return syntax("RCPT TO:<address>");
            };
            let (path, params) = split_path(rest.trim_start_matches(BLANK));
            if path.is_empty() {
                return syntax("RCPT TO:<address>");
            }
            let path = parse_envelope(path, opts).map_err(CommandError::BadRecipient)?;
            if path.is_null() {
                return Err(CommandError::NullRecipient);
            }
            Command::Rcpt {
                path,
                params: parse_params(params)?,
            }
        }
        "DATA" if args.is_empty() => Command::Data,
        "DATA" => return syntax("DATA"),
        "BDAT" => parse_bdat(args)?,
        "RSET" if args.is_empty() => Command::Rset,
        "RSET" => return syntax("RSET"),
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "VRFY" if args.is_empty() => return syntax("VRFY address"),
        "VRFY" => Command::Vrfy(args.to_string()),
        "EXPN" if args.is_empty() => return syntax("EXPN mailing-list"),
        "EXPN" => Command::Expn(args.to_string()),
        "HELP" => Command::Help((!args.is_empty()).then(|| args.to_string())),
        "STARTTLS" if args.is_empty() => Command::Starttls,
        "STARTTLS" => return syntax("STARTTLS"),
        "AUTH" => {
            let mut words = args.split(BLANK).filter(|w| !w.is_empty());
            match (words.next(), words.next(), words.next()) {
                (Some(mech), initial, None) => Command::Auth {
                    mechanism: mech.to_ascii_uppercase(),
                    initial: initial.map(|i| {
                        if i == "=" {
                            String::new()
                        } else {
                            i.to_string()
                        }
                    }),
                },
                _ => return syntax("AUTH mechanism"),
            }
        }
        "ETRN" if args.is_empty() => return syntax("ETRN domain"),
        "ETRN" => Command::Etrn(args.to_string()),
        _ => Command::Unknown(line.to_string()),
    };
    Ok(cmd)
}

/// Space and tab separate words on a command line.
const BLANK: [char; 2] = [' ', '\t'];

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `<path> params` (quote-aware) or `bare@address params`.
fn split_path(s: &str) -> (&str, &str) {
    let end = match s.strip_prefix('<') {
        Some(inner) => match address::path_end(inner) {
            // The path ends at its '>' only if a blank or nothing follows;
            // otherwise parse_path reports the trailing text.
            Some(i) if inner[i + 1..].is_empty() || inner[i + 1..].starts_with(BLANK) => i + 2,
            _ => s.find(BLANK).unwrap_or(s.len()),
        },
        None => s.find(BLANK).unwrap_or(s.len()),
    };
    (&s[..end], &s[end..])
}

fn parse_envelope(path: &str, opts: ParseOptions) -> Result<Path, AddressError> {
    if path.starts_with('<') || opts.strict_rfc821_envelopes {
        address::parse_path(path)
    } else {
        // Postfix accepts a missing <> unless strict_rfc821_envelopes.
        Mailbox::parse(path).map(Path::Mailbox)
    }
}

/// `KEY[=value]` words (RFC 5321 4.1.2 esmtp-param; UTF-8 values allowed
/// for SMTPUTF8).
fn parse_params(s: &str) -> Result<Params, CommandError> {
    let mut params = Vec::new();
    for word in s.split(BLANK).filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphanumeric())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let value_ok = value.is_none_or(|v| {
            !v.is_empty() && v.chars().all(|c| !c.is_control() && c != '=' && c != ' ')
        });
        if !key_ok || !value_ok {
            return Err(CommandError::BadParameter(word.to_string()));
        }
        params.push((key.to_ascii_uppercase(), value.map(str::to_string)));
    }
    Ok(params)
}

fn parse_bdat(args: &str) -> Result<Command, CommandError> {
    let usage = || CommandError::Syntax("BDAT count [LAST]".to_string());
    let mut words = args.split(BLANK).filter(|w| !w.is_empty());
    let size = words.next().ok_or_else(usage)?;
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage());
    }
    let size = size.parse::<u64>().map_err(|_| usage())?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(usage()),
    };
    if words.next().is_some() {
        return Err(usage());
    }
    Ok(Command::Bdat { size, last })
}

impl Command {
    /// The reply for a [`Command::Unknown`], as Postfix sends it:
    /// `502 5.5.2 Error: command not recognized`.
    pub fn not_recognized_reply() -> Reply {
        Reply::new(
            502,
            Some(EnhancedCode::new(5, 5, 2)),
            "Error: command not recognized",
        )
    }

    /// The verb in upper case (`"UNKNOWN"` for [`Command::Unknown`]), for
    /// logs and per-command counters.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help(_) => "HELP",
            Command::Starttls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::Etrn(_) => "ETRN",
            Command::Unknown(_) => "UNKNOWN",
        }
    }

    /// The command line a client sends, with CRLF. Control characters in
    /// any field (CR, LF, NUL, ...) become spaces, so one command can never
    /// become two on the wire.
    pub fn to_wire(&self) -> Vec<u8> {
        let line = match self {
            Command::Ehlo(h) => format!("EHLO {h}"),
            Command::Helo(h) => format!("HELO {h}"),
            Command::Mail { path, params } => format!("MAIL FROM:{path}{}", wire_params(params)),
            Command::Rcpt { path, params } => format!("RCPT TO:{path}{}", wire_params(params)),
            Command::Data => "DATA".to_string(),
            Command::Bdat { size, last: true } => format!("BDAT {size} LAST"),
            Command::Bdat { size, last: false } => format!("BDAT {size}"),
            Command::Rset => "RSET".to_string(),
            Command::Noop => "NOOP".to_string(),
            Command::Quit => "QUIT".to_string(),
            Command::Vrfy(s) => format!("VRFY {s}"),
            Command::Expn(s) => format!("EXPN {s}"),
            Command::Help(None) => "HELP".to_string(),
            Command::Help(Some(t)) => format!("HELP {t}"),
            Command::Starttls => "STARTTLS".to_string(),
            Command::Auth {
                mechanism,
                initial: None,
            } => format!("AUTH {mechanism}"),
            Command::Auth {
                mechanism,
                initial: Some(i),
            } => {
                let i = if i.is_empty() { "=" } else { i.as_str() };
                format!("AUTH {mechanism} {i}")
            }
            Command::Etrn(d) => format!("ETRN {d}"),
            Command::Unknown(l) => l.clone(),
        };
        let mut out: Vec<u8> = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into_bytes();
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn wire_params(params: &Params) -> String {
    let mut s = String::new();
    for (k, v) in params {
        s.push(' ');
        s.push_str(k);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mb(s: &str) -> Path {
        Path::Mailbox(Mailbox::parse(s).unwrap())
    }

    fn p(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_string(), v.map(str::to_string))
    }

    #[test]
    fn accepted() {
        let table: Vec<(&str, Command)> = vec![
            (
                "EHLO client.example",
                Command::Ehlo("client.example".into()),
            ),
            ("ehlo  [192.0.2.1] \t", Command::Ehlo("[192.0.2.1]".into())),
            ("HELO printer", Command::Helo("printer".into())),
            ("HeLo two words", Command::Helo("two words".into())),
            (
                "MAIL FROM:<a@b> SIZE=123 BODY=8BITMIME",
                Command::Mail {
                    path: mb("a@b"),
                    params: vec![p("SIZE", Some("123")), p("BODY", Some("8BITMIME"))],
                },
            ),
            (
                "mail from: <a@b>",
                Command::Mail {
                    path: mb("a@b"),
                    params: vec![],
                },
            ),
            (
                "MAIL FROM:<>",
                Command::Mail {
                    path: Path::Null,
                    params: vec![],
                },
            ),
            (
                "MAIL FROM:<> smtputf8 ret=HDRS",
                Command::Mail {
                    path: Path::Null,
                    params: vec![p("SMTPUTF8", None), p("RET", Some("HDRS"))],
                },
            ),
            (
                "MAIL FROM:a@b",
                Command::Mail {
                    path: mb("a@b"),
                    params: vec![],
                },
            ),
            (
                "MAIL FROM:<\"john doe\"@example.com> SIZE=1",
                Command::Mail {
                    path: mb("\"john doe\"@example.com"),
                    params: vec![p("SIZE", Some("1"))],
                },
            ),
            (
                "RCPT TO:<@relay:u@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40d",
                Command::Rcpt {
                    path: mb("u@d"),
                    params: vec![
                        p("NOTIFY", Some("SUCCESS,FAILURE")),
                        p("ORCPT", Some("rfc822;u+40d")),
                    ],
                },
            ),
            (
                "RCPT TO:<postmaster>",
                Command::Rcpt {
                    path: mb("postmaster"),
                    params: vec![],
                },
            ),
            ("DATA", Command::Data),
            ("data\r", Command::Data),
            (
                "BDAT 1000",
                Command::Bdat {
                    size: 1000,
                    last: false,
                },
            ),
            (
                "bdat 0 last",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP whatever", Command::Noop),
            ("QUIT", Command::Quit),
            ("VRFY root", Command::Vrfy("root".into())),
            ("EXPN staff", Command::Expn("staff".into())),
            ("HELP", Command::Help(None)),
            ("HELP mail", Command::Help(Some("mail".into()))),
            ("STARTTLS", Command::Starttls),
            (
                "AUTH login",
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial: None,
                },
            ),
            (
                "AUTH PLAIN AHVzZXIAcGFzcw==",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AHVzZXIAcGFzcw==".into()),
                },
            ),
            (
                "AUTH PLAIN =",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some(String::new()),
                },
            ),
            ("ETRN example.com", Command::Etrn("example.com".into())),
            ("XYZZY foo", Command::Unknown("XYZZY foo".into())),
            ("MAILFROM:<a@b>", Command::Unknown("MAILFROM:<a@b>".into())),
            ("GET / HTTP/1.1", Command::Unknown("GET / HTTP/1.1".into())),
        ];
        for (line, want) in table {
            assert_eq!(parse_command(line.as_bytes()), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn rejected_with_postfix_replies() {
        let table: &[(&[u8], &str)] = &[
            (b"", "500 5.5.2 Error: bad syntax"),
            (b"  \t", "500 5.5.2 Error: bad syntax"),
            (b"EHLO \xff", "500 5.5.2 Error: bad UTF-8 syntax"),
            (b"EHLO a\0b", "500 5.5.2 Error: bad syntax"),
            (
                b"MAIL FROM:<a@b>\rRCPT TO:<c@d>",
                "500 5.5.2 Error: bad syntax",
            ),
            (b"NOOP \x1b[2J", "500 5.5.2 Error: bad syntax"),
            (b"EHLO", "501 Syntax: EHLO hostname"),
            (b"helo ", "501 Syntax: HELO hostname"),
            (b"MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            (b"MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            (b"MAIL FROM <a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            (b"MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            (b"MAIL FROM:<a@b@c>", "501 5.1.7 Bad sender address syntax"),
            (b"MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax"),
            (
                b"MAIL FROM:<a@b>SIZE=1",
                "501 5.1.7 Bad sender address syntax",
            ),
            (b"MAIL FROM:<a@b> =1", "555 5.5.4 Unsupported option: =1"),
            (
                b"MAIL FROM:<a@b> SIZE=",
                "555 5.5.4 Unsupported option: SIZE=",
            ),
            (
                b"MAIL FROM:<a@b> SI_ZE=1",
                "555 5.5.4 Unsupported option: SI_ZE=1",
            ),
            (b"RCPT", "501 5.5.4 Syntax: RCPT TO:<address>"),
            (b"RCPT FROM:<a@b>", "501 5.5.4 Syntax: RCPT TO:<address>"),
            (b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
            (b"RCPT TO:<a b@c>", "501 5.1.3 Bad recipient address syntax"),
            (b"DATA now", "501 5.5.4 Syntax: DATA"),
            (b"BDAT", "501 5.5.4 Syntax: BDAT count [LAST]"),
            (b"BDAT -1", "501 5.5.4 Syntax: BDAT count [LAST]"),
            (b"BDAT +1", "501 5.5.4 Syntax: BDAT count [LAST]"),
            (
                b"BDAT 99999999999999999999999",
                "501 5.5.4 Syntax: BDAT count [LAST]",
            ),
            (b"BDAT 1 FIRST", "501 5.5.4 Syntax: BDAT count [LAST]"),
            (b"BDAT 1 LAST x", "501 5.5.4 Syntax: BDAT count [LAST]"),
            (b"RSET x", "501 5.5.4 Syntax: RSET"),
            (b"VRFY", "501 5.5.4 Syntax: VRFY address"),
            (b"EXPN", "501 5.5.4 Syntax: EXPN mailing-list"),
            (b"STARTTLS now", "501 5.5.4 Syntax: STARTTLS"),
            (b"AUTH", "501 5.5.4 Syntax: AUTH mechanism"),
            (b"AUTH PLAIN a b", "501 5.5.4 Syntax: AUTH mechanism"),
            (b"ETRN", "501 5.5.4 Syntax: ETRN domain"),
        ];
        for (line, want) in table {
            let err = parse_command(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!(
                err.reply().one_line(),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            Command::not_recognized_reply().to_wire(),
            b"502 5.5.2 Error: command not recognized\r\n"
        );
    }

    #[test]
    fn strict_envelopes() {
        let strict = ParseOptions {
            strict_rfc821_envelopes: true,
        };
        assert!(matches!(
            parse_command_with(b"MAIL FROM:a@b", strict),
            Err(CommandError::BadSender(_))
        ));
        assert!(matches!(
            parse_command_with(b"RCPT TO:a@b", strict),
            Err(CommandError::BadRecipient(_))
        ));
        assert!(parse_command_with(b"MAIL FROM:<a@b>", strict).is_ok());
    }

    #[test]
    fn wire_forms() {
        let table: Vec<(Command, &str)> = vec![
            (Command::Ehlo("me.example".into()), "EHLO me.example\r\n"),
            (
                Command::Mail {
                    path: Path::Null,
                    params: vec![p("SIZE", Some("10")), p("SMTPUTF8", None)],
                },
                "MAIL FROM:<> SIZE=10 SMTPUTF8\r\n",
            ),
            (
                Command::Rcpt {
                    path: mb("\"a b\"@c"),
                    params: vec![],
                },
                "RCPT TO:<\"a b\"@c>\r\n",
            ),
            (
                Command::Bdat {
                    size: 5,
                    last: true,
                },
                "BDAT 5 LAST\r\n",
            ),
            (
                Command::Bdat {
                    size: 5,
                    last: false,
                },
                "BDAT 5\r\n",
            ),
            (
                Command::Auth {
                    mechanism: "XOAUTH2".into(),
                    initial: Some("dG9r".into()),
                },
                "AUTH XOAUTH2 dG9r\r\n",
            ),
            (
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some(String::new()),
                },
                "AUTH PLAIN =\r\n",
            ),
            (
                Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial: None,
                },
                "AUTH LOGIN\r\n",
            ),
            (Command::Starttls, "STARTTLS\r\n"),
            (Command::Data, "DATA\r\n"),
            (Command::Quit, "QUIT\r\n"),
            (Command::Rset, "RSET\r\n"),
            (Command::Noop, "NOOP\r\n"),
            (Command::Help(None), "HELP\r\n"),
            // Injection attempt: stays one line.
            (
                Command::Ehlo("x\r\nMAIL FROM:<evil@x>".into()),
                "EHLO x  MAIL FROM:<evil@x>\r\n",
            ),
            (
                Command::Mail {
                    path: Path::Mailbox(Mailbox::new("a", Some("b>\r\nRCPT TO:<c@d".into()))),
                    params: vec![],
                },
                "MAIL FROM:<a@b>  RCPT TO:<c@d>\r\n",
            ),
        ];
        for (cmd, want) in table {
            assert_eq!(String::from_utf8(cmd.to_wire()).unwrap(), want);
        }
        assert_eq!(Command::Data.verb(), "DATA");
        assert_eq!(Command::Unknown("x".into()).verb(), "UNKNOWN");
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let word = "[a-zA-Z0-9.\\[\\]:-]{1,12}";
        let mailbox = "[a-z0-9.+-]{1,10}@[a-z]{1,8}\\.(com|net)|\"[a-z @]{1,8}\"@x\\.org";
        let path = prop_oneof![
            Just(Path::Null),
            mailbox.prop_map(|m| Path::Mailbox(Mailbox::parse(&m).unwrap())),
        ];
        let params = proptest::collection::vec(
            ("[A-Z][A-Z0-9-]{0,6}", proptest::option::of("[!-<>-~]{1,8}")),
            0..3,
        );
        prop_oneof![
            word.prop_map(Command::Ehlo),
            word.prop_map(Command::Helo),
            (path.clone(), params.clone())
                .prop_map(|(path, params)| Command::Mail { path, params }),
            (path, params).prop_filter_map("null rcpt", |(path, params)| {
                (!path.is_null()).then_some(Command::Rcpt { path, params })
            }),
            Just(Command::Data),
            (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
            Just(Command::Rset),
            Just(Command::Noop),
            Just(Command::Quit),
            word.prop_map(Command::Vrfy),
            word.prop_map(Command::Expn),
            proptest::option::of(word).prop_map(Command::Help),
            Just(Command::Starttls),
            (
                "[A-Z0-9-]{1,10}",
                proptest::option::of("([A-Za-z0-9+/]{1,20}={0,2})?")
            )
                .prop_map(|(mechanism, initial)| Command::Auth { mechanism, initial }),
            word.prop_map(Command::Etrn),
        ]
    }

    proptest! {
        #[test]
        fn wire_round_trip(cmd in arb_command()) {
            let wire = cmd.to_wire();
            prop_assert!(wire.ends_with(b"\r\n"));
            let line = &wire[..wire.len() - 2];
            prop_assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
            prop_assert_eq!(parse_command(line), Ok(cmd));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Err(e) = parse_command(&bytes) {
                let r = e.reply();
                prop_assert!(r.is_permanent());
            }
        }

        #[test]
        fn commandish_never_panics(s in "(MAIL FROM:|RCPT TO:|BDAT |AUTH )[<>@\" a-z=\\\\:,.\\[\\]]{0,30}") {
            let _ = parse_command(s.as_bytes());
        }
    }
}

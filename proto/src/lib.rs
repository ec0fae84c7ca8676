//! postern's sans-I/O SMTP layer, shared by smtpd, the smtp delivery agent,
//! `postern diagnose` and the tests' fake smart host. Nothing here does
//! I/O: callers feed bytes in and write bytes out.
//!
//! - [`status`]: enhanced status codes ([`EnhancedCode`], RFC 3463).
//! - [`reply`]: [`Reply`], its wire form, the incremental [`ReplyParser`]
//!   (client side) and EHLO extensions ([`Ehlo`]).
//! - [`line`](mod@line): [`LineReader`], command lines from the client's stream.
//! - [`command`]: [`Command`], [`parse_command`] with Postfix's error
//!   replies, [`Command::to_wire`] for clients, xtext.
//! - [`xtext`]: RFC 3461 xtext for ESMTP parameter values.
//! - [`address`]: RFC 5321 [`Path`]s and [`Mailbox`]es.
//! - [`data`]: the smuggling-safe [`DataReceiver`], the [`BdatReceiver`]
//!   and [`dot_stuff`]/[`DotStuffer`].
//! - [`header`]: RFC 5322 header blocks, fields, folding and address lists.
//! - [`sasl`]: AUTH PLAIN, LOGIN and XOAUTH2 encoders and decoders, and the
//!   [`Secret`] type.
#![deny(missing_docs)]

pub mod address;
pub mod command;
pub mod data;
mod ehlo;
pub mod header;
pub mod line;
pub mod reply;
pub mod sasl;
pub mod status;
pub mod xtext;

pub use address::{AddressError, Mailbox, Path, parse_path};
pub use command::{Command, CommandError, ParseOptions, parse_command, parse_command_with};
pub use data::{BareLf, BdatReceiver, DataReceiver, DotStuffer, Feed, dot_stuff};
pub use header::{Header, HeaderAddress};
pub use line::{Line, LineReader, LineTooLong};
pub use reply::{Ehlo, Reply, ReplyError, ReplyParser, parse_ehlo};
pub use sasl::{SaslError, Secret};
pub use status::EnhancedCode;

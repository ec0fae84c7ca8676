//! postern's queue: the files, the index, and the log lines every program
//! shares.
//!
//! - [`file`] is the queue file format (envelope, content, end marker and
//!   checksum) and [`write`] the durable write protocol (temp file, fsync,
//!   rename with no replace, fsync of the directory).
//! - [`layout`] names the queue directories; [`id`] makes queue IDs.
//! - [`index`] is the SQLite mirror of the queue with delivery state.
//! - [`deliver`] is the qmgr ↔ delivery agent protocol; [`wake`] the wake-up hints.
//! - [`log`] writes Postfix-format log lines; [`time`] formats dates.
//! - [`oauth2`] gets, caches and refreshes OAuth2 access tokens for XOAUTH2.
#![deny(missing_docs)]

pub mod cleanup;
pub mod credentials;
pub mod deliver;
pub mod dns;
pub mod explain;
pub mod file;
pub mod id;
pub mod index;
pub mod layout;
pub mod log;
pub mod oauth2;
pub mod route;
pub mod service;
pub mod spare;
pub mod time;
pub mod wake;
pub mod write;

pub use file::{Envelope, QueueFile, Recipient};
pub use id::QueueId;
pub use layout::{Queue, QueueName};

//! End-to-end test support for postern: the real programs against an
//! in-process fake Exchange Online smart host.
//!
//! - [`ca`]: a throw-away PKI ([`ca::TestPki`]) written as PEM files.
//! - [`fake`]: the fake smart host ([`fake::FakeSmartHost`]), scriptable
//!   per phase, recording every message and session.
//! - [`client`]: a small async SMTP client for driving servers.
//! - [`dns`]: a tiny authoritative DNS server for the daemons' unit tests.
//! - [`harness`]: [`harness::TestEnv`], a temporary postern installation
//!   (main.cf, master.cf, queue, log) that runs the real binaries.
//!
//! Integration tests live in `tests/tests/*.rs`; the programs must be built
//! first (`cargo build --bins`).
#![deny(missing_docs)]

pub mod ca;
pub mod client;
pub mod dns;
pub mod fake;
pub mod harness;
pub mod sync_client;

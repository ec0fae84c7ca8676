//! postern's SMTP client: the library behind the `smtp` delivery agent
//! (Postfix's smtp(8)) and `postern diagnose`. The agent takes delivery
//! requests from qmgr over the private socket of its master.cf service;
//! it delivers each by SMTP to the next hop (MX lookup or `[host]:port`,
//! STARTTLS or implicit TLS, SMTP AUTH, connection reuse), or into a
//! Maildir for the `maildir` transport, logs Postfix's delivery lines and
//! returns a result per recipient. `postern diagnose` walks the same steps
//! one at a time with the same pieces and reports each.
//!
//! Modules: [`server`] (qmgr connections), [`delivery`] (one request),
//! [`resolve`] and [`connect`] (finding and reaching servers), [`session`]
//! (greeting, EHLO, TLS, AUTH), [`tls`], [`auth`] and [`oauth`] (SASL and
//! XOAUTH2 tokens), [`transaction`] (MAIL, RCPT, DATA), [`chat`] (I/O with
//! time limits), [`outcome`] (results and reason texts), [`cache`] (idle
//! sessions), [`rewrite`] (generic maps, send-as), [`maildir`],
//! [`settings`].
//!
//! Environment: `POSTERN_DNS_SERVER=ip:port` sends all DNS queries to that
//! server instead of the resolv.conf ones (for tests; see [`resolve`]).

pub mod auth;
pub mod cache;
pub mod chat;
pub mod connect;
pub mod delivery;
pub mod maildir;
pub mod oauth;
pub mod outcome;
pub mod resolve;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod settings;
pub mod tls;
pub mod transaction;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

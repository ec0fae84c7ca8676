//! OAuth2 access tokens for SMTP AUTH XOAUTH2 (Microsoft 365, Entra ID).
//!
//! - [`account`]: an account's settings — the `smtp_oauth2_*` parameters
//!   overridden per SASL user by `smtp_oauth2_account_maps` ([`Account`],
//!   [`Accounts`]).
//! - [`cache`]: the [`TokenCache`] all delivery agents share (memory plus
//!   one file per account, one refresh at a time across processes).
//! - `grant`: the requests — client credentials with a client secret or a
//!   signed certificate assertion (`assertion`), and the refresh-token grant
//!   whose rotated refresh token replaces its file atomically (`refresh`).
//! - [`device`]: device-code sign-in for delegated use
//!   (`postern oauth2 login`).
//! - [`claims`]: what a token says about itself, for diagnostics.
//! - [`OAuthError`]: what failed, what the admin should do, and whether
//!   waiting helps ([`OAuthError::is_transient`]).
//!
//! Everything here blocks (ureq); async callers use `spawn_blocking`.
//! Secrets and tokens stay in [`proto::sasl::Secret`]s and never appear in
//! errors or logs.

pub mod account;
mod assertion;
pub mod cache;
pub mod claims;
pub mod device;
mod endpoint;
mod error;
mod files;
mod grant;
mod overrides;
mod refresh;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use account::{Account, Accounts, ClientAuth, Grant, check_endpoint};
pub use cache::{Obtained, Token, TokenCache};
pub use claims::{ClaimsSummary, Summary, decode_claims, summarize};
pub use device::device_code_login;
pub use error::OAuthError;

/// When the certificate of `account`'s certificate credential expires
/// (`None` for other credentials, or when it cannot be read).
pub fn certificate_expiry(account: &Account) -> Option<std::time::SystemTime> {
    match &account.client_auth {
        ClientAuth::Certificate { cert_file, .. } => {
            let pem = std::fs::read(cert_file).ok()?;
            assertion::not_after(&openssl::x509::X509::from_pem(&pem).ok()?)
        }
        _ => None,
    }
}

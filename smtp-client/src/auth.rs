//! SMTP AUTH as a client (Postfix's smtp_sasl_glue.c): credentials from
//! `smtp_sasl_password_maps`, the choice of mechanism, and the exchange.
//!
//! Credentials are looked up by envelope sender (with
//! `smtp_sender_dependent_authentication`), then by the server's host name,
//! then by the next hop as written (e.g. `[smtp.office365.com]:587`). The
//! value is `user:password`, split at the first `:` (a password may contain
//! `:`, a user name may not). Passwords and tokens stay in [`Secret`]s and
//! are never logged.
//!
//! Mechanisms: PLAIN and LOGIN, and XOAUTH2 when a [`TokenSource`] is
//! configured; filtered by `smtp_sasl_mechanism_filter` and by the security
//! options that apply (`smtp_sasl_security_options` in plaintext,
//! `smtp_sasl_tls_security_options` over TLS).

use crate::chat::{Chat, ChatError};
use crate::outcome::Outcome;
use crate::settings::SaslSettings;
use proto::sasl::{Secret, login_pass, login_user, plain_initial, xoauth2_initial};
use proto::{Command, Reply};
pub use queue::credentials::{Credentials, PasswordMaps};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// What failed and what to do, for the log and the queue.
    pub message: String,
    /// An admin must act first (bad settings, wrong or expired credential,
    /// missing consent): the route is held. Otherwise (network, time-out,
    /// HTTP 5xx) the mail is simply deferred.
    pub needs_admin: bool,
}

/// Where OAuth2 access tokens come from (XOAUTH2). The token fetcher
/// implements this; with none configured, XOAUTH2 is not offered.
pub trait TokenSource: Send + Sync + Debug {
    /// A current access token for `user`; after the server refused one,
    /// pass it as `rejected` to get a newer one.
    fn token<'a>(
        &'a self,
        user: &'a str,
        rejected: Option<&'a Secret>,
    ) -> Pin<Box<dyn Future<Output = Result<Secret, TokenError>> + Send + 'a>>;
}

/// A SASL mechanism postern speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616, with the initial response.
    Plain,
    /// The LOGIN exchange (user name, then password).
    Login,
    /// Bearer token (Microsoft 365, Google).
    Xoauth2,
}

impl Mechanism {
    /// The name in AUTH commands.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::Xoauth2 => "XOAUTH2",
        }
    }
}

/// Why no mechanism could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMechanism {
    /// Nothing in common between the server's list, what postern supports
    /// and `smtp_sasl_mechanism_filter`.
    NoneCompatible,
    /// The security options forbid every candidate (e.g. `noplaintext`
    /// without TLS).
    Forbidden,
}

/// Options that exclude every mechanism postern has: they all send a
/// password or bearer token that a listener could reuse.
const EXCLUDING: &[&str] = &[
    "noplaintext",
    "noactive",
    "nodictionary",
    "mutual_auth",
    "forward_secrecy",
];

/// Chooses the mechanism: XOAUTH2 when a token source exists, then PLAIN,
/// then LOGIN, among those the server offers and the filter allows.
///
/// # Errors
/// [`NoMechanism`] saying why none is left.
pub fn choose(
    offered: &[String],
    sasl: &SaslSettings,
    tls_active: bool,
    have_tokens: bool,
) -> Result<Mechanism, NoMechanism> {
    let mut candidates: Vec<Mechanism> = [Mechanism::Xoauth2, Mechanism::Plain, Mechanism::Login]
        .into_iter()
        .filter(|m| *m != Mechanism::Xoauth2 || have_tokens)
        .filter(|m| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name())))
        .filter(|m| {
            sasl.mechanism_filter.is_empty() || sasl.mechanism_filter.iter().any(|f| f == m.name())
        })
        .collect();
    if candidates.is_empty() {
        return Err(NoMechanism::NoneCompatible);
    }
    let options = if tls_active {
        &sasl.tls_security_options
    } else {
        &sasl.security_options
    };
    if options.iter().any(|o| EXCLUDING.contains(&o.as_str())) {
        candidates.clear();
    }
    candidates.first().copied().ok_or(NoMechanism::Forbidden)
}

/// The reason for a [`NoMechanism`] at `namaddr`.
pub fn no_mechanism_outcome(why: NoMechanism, namaddr: &str) -> Outcome {
    match why {
        NoMechanism::NoneCompatible => Outcome::local(
            "4.7.0",
            format!(
                "SASL authentication failed: server {namaddr} offered no compatible authentication mechanisms for this type of connection security"
            ),
        ),
        NoMechanism::Forbidden => Outcome::local(
            "4.7.0",
            format!(
                "SASL authentication failed; cannot authenticate to server {namaddr}: no mechanism available"
            ),
        ),
    }
}

/// RFC 4954: with the initial response, the AUTH line must fit in 512
/// octets; otherwise the response waits for the server's empty challenge.
fn first_command(mech: Mechanism, initial: Option<Secret>) -> (Vec<u8>, Option<Secret>) {
    match initial {
        Some(ir) if mech.name().len() + ir.expose().len() + 8 <= 512 => {
            let cmd = Command::Auth {
                mechanism: mech.name().into(),
                initial: Some(ir.expose().to_string()),
            };
            (cmd.to_wire(), None)
        }
        other => (
            Command::Auth {
                mechanism: mech.name().into(),
                initial: None,
            }
            .to_wire(),
            other,
        ),
    }
}

/// A failed AUTH exchange.
#[derive(Debug)]
pub struct AuthFailure {
    /// The outcome for every recipient (always deferred).
    pub outcome: Outcome,
    /// The server refused with a 5xx reply: other servers of the same
    /// destination would refuse the same credentials.
    pub permanent: bool,
}

impl From<Outcome> for AuthFailure {
    fn from(outcome: Outcome) -> AuthFailure {
        AuthFailure {
            outcome,
            permanent: false,
        }
    }
}

/// Runs the AUTH exchange. With XOAUTH2, a `535` reply (the token was
/// refused: expired, revoked, or issued just before a permission change)
/// gets one retry with a newly fetched token on the same connection
/// (OFFICE365.md §8 item 3); a second refusal stands.
///
/// # Errors
/// The server's refusal (deferred: a refused login is a configuration
/// problem, never a reason to bounce), a protocol problem, or a lost
/// connection.
pub async fn authenticate(
    chat: &mut Chat,
    mech: Mechanism,
    creds: &Credentials,
    tokens: Option<&dyn TokenSource>,
    limit: Duration,
) -> Result<(), AuthFailure> {
    let namaddr = chat.peer.namaddr();
    let cannot = |why: &str| {
        Outcome::local(
            "4.7.0",
            format!("SASL authentication failed; cannot authenticate to server {namaddr}: {why}"),
        )
    };
    if mech != Mechanism::Xoauth2 {
        return exchange(chat, mech, creds, None, limit)
            .await
            .map_err(|(f, _)| f);
    }
    let src = tokens.ok_or_else(|| cannot("no OAuth2 token source is configured"))?;
    let token = src.token(&creds.user, None).await.map_err(|e| {
        let mut outcome = cannot(&e.message);
        outcome.hold = e.needs_admin;
        // Another server of the destination would get the same answer
        // from the token endpoint.
        AuthFailure {
            outcome,
            permanent: e.needs_admin,
        }
    })?;
    match exchange(chat, mech, creds, Some(&token), limit).await {
        Ok(()) => Ok(()),
        Err((f, Some(535))) => {
            queue::log::info(&format!(
                "XOAUTH2 token for {} refused by {namaddr}; fetching a new one and trying once more",
                creds.user
            ));
            let fresh = match src.token(&creds.user, Some(&token)).await {
                Ok(t) => t,
                Err(e) => {
                    queue::log::warning(&e.message);
                    return Err(f);
                }
            };
            exchange(chat, mech, creds, Some(&fresh), limit)
                .await
                .map_err(|(f, _)| f)
        }
        Err((f, _)) => Err(f),
    }
}

/// One AUTH command and its exchange; the error carries the final reply's
/// code when the server answered.
async fn exchange(
    chat: &mut Chat,
    mech: Mechanism,
    creds: &Credentials,
    token: Option<&Secret>,
    limit: Duration,
) -> Result<(), (AuthFailure, Option<u16>)> {
    let namaddr = chat.peer.namaddr();
    let (initial, mut responses): (Option<Secret>, VecDeque<Secret>) = match mech {
        Mechanism::Plain => (
            Some(Secret::new(plain_initial(
                "",
                &creds.user,
                creds.pass.expose(),
            ))),
            VecDeque::new(),
        ),
        Mechanism::Login => (
            None,
            VecDeque::from([
                Secret::new(login_user(&creds.user)),
                Secret::new(login_pass(creds.pass.expose())),
            ]),
        ),
        Mechanism::Xoauth2 => (
            Some(Secret::new(xoauth2_initial(
                &creds.user,
                token.map(Secret::expose).unwrap_or(""),
            ))),
            VecDeque::new(),
        ),
    };
    let (cmd, deferred) = first_command(mech, initial);
    if let Some(d) = deferred {
        responses.push_front(d);
    }
    let io = |chat: &Chat, e: ChatError| {
        (
            AuthFailure::from(chat.failure(&e, "performing the AUTH handshake")),
            None,
        )
    };
    chat.send(&cmd, limit).await.map_err(|e| io(chat, e))?;
    let mut steps = 0;
    let reply: Reply = loop {
        let r = chat.reply(limit).await.map_err(|e| io(chat, e))?;
        if !r.is_intermediate() {
            break r;
        }
        steps += 1;
        if steps > 100 {
            return Err((
                Outcome::local(
                    "4.3.0",
                    format!(
                        "SASL authentication failed; authentication protocol loop with server {namaddr}"
                    ),
                )
                .into(),
                None,
            ));
        }
        // Out of responses: XOAUTH2's error challenge wants an empty line;
        // any other mechanism cancels with "*".
        let next = responses
            .pop_front()
            .unwrap_or_else(|| Secret::new(if mech == Mechanism::Xoauth2 { "" } else { "*" }));
        let mut line = next.expose().as_bytes().to_vec();
        line.extend_from_slice(b"\r\n");
        chat.send(&line, limit).await.map_err(|e| io(chat, e))?;
    };
    if reply.is_positive() {
        return Ok(());
    }
    let reason = format!(
        "SASL authentication failed; server {namaddr} said: {}",
        reply.said_text()
    );
    Err((
        AuthFailure {
            outcome: Outcome::remote(&chat.peer, &reply, reason).soften(),
            permanent: reply.is_permanent(),
        },
        Some(reply.code),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(filter: &[&str]) -> SaslSettings {
        let (mut s, _) = crate::settings::Settings::from_config(&conf::Config::defaults());
        s.sasl.mechanism_filter = filter.iter().map(|f| f.to_ascii_uppercase()).collect();
        s.sasl
    }

    fn offered(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mechanism_choice() {
        let s = sasl(&[]);
        assert_eq!(
            choose(&offered(&["LOGIN", "PLAIN"]), &s, true, false),
            Ok(Mechanism::Plain)
        );
        assert_eq!(
            choose(&offered(&["LOGIN", "XOAUTH2"]), &s, true, false),
            Ok(Mechanism::Login)
        );
        assert_eq!(
            choose(&offered(&["LOGIN", "XOAUTH2"]), &s, true, true),
            Ok(Mechanism::Xoauth2)
        );
        assert_eq!(
            choose(&offered(&["CRAM-MD5"]), &s, true, false),
            Err(NoMechanism::NoneCompatible)
        );
        // Default smtp_sasl_security_options = noplaintext: no password in plaintext.
        assert_eq!(
            choose(&offered(&["PLAIN"]), &s, false, false),
            Err(NoMechanism::Forbidden)
        );
        let s = sasl(&["login"]);
        assert_eq!(
            choose(&offered(&["PLAIN", "LOGIN"]), &s, true, false),
            Ok(Mechanism::Login)
        );
        let s = sasl(&["xoauth2"]);
        assert_eq!(
            choose(&offered(&["LOGIN", "XOAUTH2"]), &s, true, false),
            Err(NoMechanism::NoneCompatible)
        );
        assert!(
            no_mechanism_outcome(NoMechanism::Forbidden, "h[1.2.3.4]")
                .reason
                .ends_with("h[1.2.3.4]: no mechanism available")
        );
    }

    #[test]
    fn long_initial_responses_wait_for_the_challenge() {
        let (cmd, rest) = first_command(Mechanism::Plain, Some(Secret::new("AHVAAHA=")));
        assert_eq!(cmd, b"AUTH PLAIN AHVAAHA=\r\n");
        assert!(rest.is_none());
        let long = Secret::new("x".repeat(600));
        let (cmd, rest) = first_command(Mechanism::Xoauth2, Some(long.clone()));
        assert_eq!(cmd, b"AUTH XOAUTH2\r\n");
        assert_eq!(rest, Some(long));
    }
}

//! SASL for SMTP AUTH (RFC 4954): the client's initial responses for
//! PLAIN (RFC 4616), LOGIN and XOAUTH2, the server's decoders, and the
//! [`Secret`] type that keeps passwords and tokens out of logs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// A password or token. `Debug` and `Display` print `<redacted>`; only
/// [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret text, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a client's SASL response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The response is not valid base64.
    #[error("SASL response is not valid base64")]
    BadBase64,
    /// The decoded response is not UTF-8.
    #[error("SASL response is not valid UTF-8")]
    BadUtf8,
    /// The decoded response does not have the mechanism's fields; holds
    /// what was expected.
    #[error("malformed SASL response: expected {0}")]
    Malformed(&'static str),
    /// The user name is empty.
    #[error("SASL response has an empty user name")]
    EmptyUser,
    /// The client cancelled the exchange with `*`.
    #[error("SASL exchange cancelled by the client")]
    Cancelled,
}

/// The challenge a LOGIN server sends first: base64 of `Username:`.
pub const LOGIN_USER_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The challenge a LOGIN server sends second: base64 of `Password:`.
pub const LOGIN_PASS_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// PLAIN initial response: base64 of `authzid NUL user NUL pass`
/// (`authzid` is usually empty).
pub fn plain_initial(authzid: &str, user: &str, pass: &str) -> String {
    STANDARD.encode(format!("{authzid}\0{user}\0{pass}"))
}

/// LOGIN response to the user name challenge.
pub fn login_user(user: &str) -> String {
    STANDARD.encode(user)
}

/// LOGIN response to the password challenge.
pub fn login_pass(pass: &str) -> String {
    STANDARD.encode(pass)
}

/// XOAUTH2 initial response (Google / Microsoft):
/// base64 of `user=USER ^A auth=Bearer TOKEN ^A ^A`.
pub fn xoauth2_initial(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// True for the `*` line with which a client cancels AUTH.
pub fn is_cancel(line: &str) -> bool {
    line.trim() == "*"
}

fn decode(b64: &str) -> Result<String, SaslError> {
    let b64 = b64.trim();
    if b64 == "*" {
        return Err(SaslError::Cancelled);
    }
    let bytes = STANDARD.decode(b64).map_err(|_| SaslError::BadBase64)?;
    String::from_utf8(bytes).map_err(|_| SaslError::BadUtf8)
}

/// Decodes a base64 server challenge (`334 text`), e.g. the JSON error a
/// server sends during XOAUTH2; an empty challenge gives `""`.
///
/// # Errors
/// [`SaslError::BadBase64`] or [`SaslError::BadUtf8`].
pub fn decode_challenge(b64: &str) -> Result<String, SaslError> {
    decode(b64)
}

/// Decodes a PLAIN response into (authzid, user, password).
///
/// # Errors
/// Bad base64 or UTF-8, not exactly three NUL-separated fields, an empty
/// user, or `*` ([`SaslError::Cancelled`]).
pub fn decode_plain(b64: &str) -> Result<(String, String, Secret), SaslError> {
    let text = decode(b64)?;
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authzid), Some(user), Some(pass), None) => {
            if user.is_empty() {
                return Err(SaslError::EmptyUser);
            }
            Ok((authzid.to_string(), user.to_string(), Secret::new(pass)))
        }
        _ => Err(SaslError::Malformed("authzid NUL user NUL password")),
    }
}

/// Decodes one LOGIN response (the user name or the password).
///
/// # Errors
/// Bad base64 or UTF-8, or `*` ([`SaslError::Cancelled`]).
pub fn decode_login_step(b64: &str) -> Result<String, SaslError> {
    decode(b64)
}

/// Decodes an XOAUTH2 initial response into (user, bearer token). The
/// `auth` scheme must be `Bearer` (any case); fields may come in any order.
///
/// # Errors
/// Bad base64 or UTF-8, a missing `user=` or `auth=Bearer` field, an empty
/// user, or `*` ([`SaslError::Cancelled`]).
pub fn decode_xoauth2(b64: &str) -> Result<(String, Secret), SaslError> {
    let text = decode(b64)?;
    let mut user = None;
    let mut token = None;
    for field in text.split('\x01').filter(|f| !f.is_empty()) {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u);
        } else if let Some(a) = field.strip_prefix("auth=") {
            let (scheme, t) = a
                .split_once(' ')
                .ok_or(SaslError::Malformed("auth=Bearer TOKEN"))?;
            if !scheme.eq_ignore_ascii_case("Bearer") {
                return Err(SaslError::Malformed("auth=Bearer TOKEN"));
            }
            token = Some(t.trim());
        }
    }
    let user = user.ok_or(SaslError::Malformed("user=USER ^A auth=Bearer TOKEN ^A ^A"))?;
    let token = token.ok_or(SaslError::Malformed("user=USER ^A auth=Bearer TOKEN ^A ^A"))?;
    if user.is_empty() {
        return Err(SaslError::EmptyUser);
    }
    Ok((user.to_string(), Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn client_encodings() {
        assert_eq!(plain_initial("", "user", "pass"), "AHVzZXIAcGFzcw==");
        assert_eq!(login_user("user"), "dXNlcg==");
        assert_eq!(login_pass("pass"), "cGFzcw==");
        assert_eq!(
            xoauth2_initial(
                "someuser@example.com",
                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
            ),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
        assert_eq!(decode_challenge(LOGIN_USER_CHALLENGE).unwrap(), "Username:");
        assert_eq!(decode_challenge(LOGIN_PASS_CHALLENGE).unwrap(), "Password:");
        assert_eq!(decode_challenge("").unwrap(), "");
    }

    #[test]
    fn server_decoding() {
        let (z, u, p) = decode_plain("AHVzZXIAcGFzcw==").unwrap();
        assert_eq!((z.as_str(), u.as_str(), p.expose()), ("", "user", "pass"));
        let (z, u, _) = decode_plain(&plain_initial("admin", "user", "p")).unwrap();
        assert_eq!((z.as_str(), u.as_str()), ("admin", "user"));
        assert_eq!(decode_plain("!!!"), Err(SaslError::BadBase64));
        assert_eq!(
            decode_plain(&STANDARD.encode(b"\xff\0u\0p")),
            Err(SaslError::BadUtf8)
        );
        assert_eq!(
            decode_plain(&STANDARD.encode("user\0pass")),
            Err(SaslError::Malformed("authzid NUL user NUL password"))
        );
        assert_eq!(
            decode_plain(&STANDARD.encode("a\0b\0c\0d")),
            Err(SaslError::Malformed("authzid NUL user NUL password"))
        );
        assert_eq!(
            decode_plain(&plain_initial("", "", "p")),
            Err(SaslError::EmptyUser)
        );
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_login_step("dXNlcg==").unwrap(), "user");
        assert_eq!(decode_login_step(" cGFzcw==\r\n").unwrap(), "pass");

        let (u, t) = decode_xoauth2(&xoauth2_initial("me@x", "tok")).unwrap();
        assert_eq!((u.as_str(), t.expose()), ("me@x", "tok"));
        let odd = STANDARD.encode("auth=bearer tok\x01user=me@x\x01\x01");
        assert_eq!(decode_xoauth2(&odd).unwrap().0, "me@x");
        assert_eq!(
            decode_xoauth2(&STANDARD.encode("user=me\x01auth=Basic x\x01\x01")),
            Err(SaslError::Malformed("auth=Bearer TOKEN"))
        );
        assert!(matches!(
            decode_xoauth2(&STANDARD.encode("user=me\x01\x01")),
            Err(SaslError::Malformed(_))
        ));
        assert_eq!(
            decode_xoauth2(&STANDARD.encode("user=\x01auth=Bearer t\x01\x01")),
            Err(SaslError::EmptyUser)
        );
        assert!(is_cancel("*\r\n") && !is_cancel("x"));
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", (1, Secret::from("x"))), "(1, <redacted>)");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Secret::from(String::from("a")), Secret::new("a"));
    }

    proptest! {
        #[test]
        fn plain_round_trip(z in "[^\0]{0,10}", u in "[^\0]{1,10}", p in "[^\0]{0,10}") {
            let (z2, u2, p2) = decode_plain(&plain_initial(&z, &u, &p)).unwrap();
            prop_assert_eq!((z2, u2, p2.expose().to_string()), (z, u, p));
        }

        #[test]
        fn xoauth2_round_trip(u in "[a-z@.]{1,20}", t in "[A-Za-z0-9._-]{1,40}") {
            let (u2, t2) = decode_xoauth2(&xoauth2_initial(&u, &t)).unwrap();
            prop_assert_eq!((u2, t2.expose().to_string()), (u, t));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,60}") {
            let _ = decode_plain(&s);
            let _ = decode_xoauth2(&s);
            let _ = decode_login_step(&s);
            let _ = decode_xoauth2(&STANDARD.encode(&s));
            let _ = decode_plain(&STANDARD.encode(&s));
        }
    }
}

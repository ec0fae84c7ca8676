//! XOAUTH2 as Exchange Online checks it (OFFICE365.md §4.2, §7): the SASL
//! blob, the access token's signature and lifetime ([`TokenVerifier`]),
//! and the claims a mailbox needs ([`Xoauth2Policy`]).
//!
//! A [`FakeConfig`](super::FakeConfig) gets a policy from
//! [`FakeConfig::accept_tokens_from`](super::FakeConfig::accept_tokens_from);
//! a test can also replace the whole decision with a [`TokenCheck`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use openssl::pkey::{PKey, Public};
use proto::Reply;
use serde_json::Value;

use super::jwt::{self, Claims, Jwt};

/// The `aud` values Exchange takes for SMTP (§4.2, [O9]).
pub const EXO_AUDIENCES: &[&str] = &[
    "https://outlook.office365.com",
    "https://outlook.office.com",
    "https://outlook.office365.us",
];

/// The application permission for app-only SMTP AUTH.
pub const ROLE_SEND_AS_APP: &str = "SMTP.SendAsApp";
/// The application permission HVE wants (§4.2, [V43]).
pub const ROLE_MAIL_SEND: &str = "Mail.Send";
/// The delegated scope for SMTP AUTH.
pub const SCOPE_SMTP_SEND: &str = "SMTP.Send";

/// Decides an XOAUTH2 attempt: `(user, bearer token)` → the token's claims
/// to accept (an empty map will do), or why not.
pub type TokenCheck = Arc<dyn Fn(&str, &str) -> Result<Claims, TokenError> + Send + Sync>;

/// Why an XOAUTH2 attempt failed. The session turns it into the reply of
/// its profile (submission: always `535 5.7.3`; HVE: the 5.5.12x and
/// 5.7.14x codes of §4.2).
#[derive(Debug, Clone)]
pub enum TokenError {
    /// The SASL blob is not `user=..^Aauth=Bearer ..^A^A`; the text says
    /// which part (`base64`, `user`, `auth`, `token`).
    Malformed(&'static str),
    /// Not a JWT, or not one the token endpoint signed.
    Signature(String),
    /// `exp` has passed.
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The server's clock.
        now: i64,
    },
    /// `nbf` is in the future.
    NotYetValid,
    /// Less than the configured margin left (HVE `5.7.142`).
    ExpiresSoon {
        /// Seconds left.
        left: i64,
    },
    /// `aud` not accepted.
    Audience(String),
    /// The app role or delegated scope is missing, or no service principal.
    Permission(String),
    /// Delegated token for another user than `user=`.
    UserMismatch {
        /// `user=` of the blob.
        user: String,
        /// The token's `upn`.
        upn: String,
    },
    /// HVE: the app has no `Add-HVEAppAccess` for the account.
    AppNotAllowed(String),
    /// A custom refusal: this exact reply.
    Refused(Reply),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(what) => write!(f, "malformed XOAUTH2 blob ({what})"),
            TokenError::Signature(why) => write!(f, "bad token: {why}"),
            TokenError::Expired { exp, now } => write!(f, "expired {}s ago", now - exp),
            TokenError::NotYetValid => f.write_str("not yet valid (nbf)"),
            TokenError::ExpiresSoon { left } => write!(f, "expires in {left}s"),
            TokenError::Audience(a) => write!(f, "audience {a:?} not accepted"),
            TokenError::Permission(p) => write!(f, "permission: {p}"),
            TokenError::UserMismatch { user, upn } => {
                write!(f, "token for {upn:?} used as {user:?}")
            }
            TokenError::AppNotAllowed(a) => write!(f, "app {a} not allowed for this account"),
            TokenError::Refused(r) => write!(f, "refused: {}", r.one_line()),
        }
    }
}

/// Splits a base64 XOAUTH2 response into `(user, token)`. `Err(None)` for
/// the client's `*` (cancel).
pub fn parse_blob(b64: &str) -> Result<(String, String), Option<TokenError>> {
    let b64 = b64.trim();
    if b64 == "*" {
        return Err(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| Some(TokenError::Malformed("base64")))?;
    let text = String::from_utf8(bytes).map_err(|_| Some(TokenError::Malformed("base64")))?;
    if !text.ends_with("\x01\x01") {
        return Err(Some(TokenError::Malformed("terminator")));
    }
    let mut user = None;
    let mut auth = None;
    for field in text.split('\x01').filter(|f| !f.is_empty()) {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(a) = field.strip_prefix("auth=") {
            auth = Some(a.to_string());
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or(Some(TokenError::Malformed("user")))?;
    let auth = auth.ok_or(Some(TokenError::Malformed("auth")))?;
    let (scheme, token) = auth.split_once(' ').unwrap_or((auth.as_str(), ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(Some(TokenError::Malformed("auth")));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Some(TokenError::Malformed("token")));
    }
    Ok((user, token.to_string()))
}

/// Checks the signature and lifetime of access tokens a
/// [`FakeTokenEndpoint`](super::FakeTokenEndpoint) issued, as a resource
/// server does. Get one with
/// [`FakeTokenEndpoint::verifier`](super::FakeTokenEndpoint::verifier).
#[derive(Clone)]
pub struct TokenVerifier {
    pub(crate) key: PKey<Public>,
    pub(crate) kid: String,
    /// Tolerance for `nbf` in the future, seconds.
    pub skew: i64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// The token's claims when it is an RS256 JWT signed by the endpoint's
    /// key, not expired and not before its `nbf` (beyond [`skew`](Self::skew)).
    ///
    /// # Errors
    /// [`TokenError::Signature`], [`TokenError::Expired`] or
    /// [`TokenError::NotYetValid`].
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let j = Jwt::parse(token).map_err(TokenError::Signature)?;
        if j.header_str("alg") != Some("RS256") {
            return Err(TokenError::Signature("alg is not RS256".into()));
        }
        if j.header_str("kid").is_some_and(|k| k != self.kid) {
            return Err(TokenError::Signature("unknown kid".into()));
        }
        if !j.verify(&self.key) {
            return Err(TokenError::Signature("signature does not verify".into()));
        }
        let now = jwt::now();
        let exp = j
            .claim_time("exp")
            .ok_or_else(|| TokenError::Signature("no exp".into()))?;
        if now >= exp {
            return Err(TokenError::Expired { exp, now });
        }
        if j.claim_time("nbf").is_some_and(|nbf| nbf > now + self.skew) {
            return Err(TokenError::NotYetValid);
        }
        Ok(j.claims)
    }
}

/// What Exchange wants of a token beyond signature and lifetime (§4.2, §7).
#[derive(Debug, Clone)]
pub struct Xoauth2Policy {
    /// Signature and lifetime.
    pub verifier: TokenVerifier,
    /// Accepted `aud` values ([`EXO_AUDIENCES`]).
    pub audiences: Vec<String>,
    /// App-only tokens need one of these in `roles` ([`ROLE_SEND_AS_APP`];
    /// HVE: [`ROLE_MAIL_SEND`]).
    pub app_roles: Vec<String>,
    /// Apps with an RBAC assignment (`Application SMTP.SendAsApp`), which
    /// need no role in the token.
    pub rbac_apps: Vec<String>,
    /// `Some`: app-only tokens need their `appid` here (`New-ServicePrincipal`).
    /// `None`: every app is registered.
    pub service_principals: Option<Vec<String>>,
    /// Delegated tokens need one of these in `scp` ([`SCOPE_SMTP_SEND`]).
    pub delegated_scopes: Vec<String>,
    /// Mailbox (lower case) → user principal names that may use their own
    /// delegated token for it (FullAccess on a shared mailbox, §4.2).
    pub delegates: HashMap<String, Vec<String>>,
    /// `Some`: HVE's `Add-HVEAppAccess`: account (lower case) → app ids
    /// allowed to send as it; an account missing from the map allows none.
    pub allowed_apps: Option<HashMap<String, Vec<String>>>,
    /// A token with less than this left is refused as expiring soon (HVE
    /// `5.7.142`); zero: only expiry counts.
    pub min_remaining: Duration,
}

impl Xoauth2Policy {
    /// smtp.office365.com: [`EXO_AUDIENCES`], `roles` ∋ `SMTP.SendAsApp`,
    /// `scp` ∋ `SMTP.Send` with `upn` = `user=`.
    pub fn exchange(verifier: TokenVerifier) -> Xoauth2Policy {
        Xoauth2Policy {
            verifier,
            audiences: EXO_AUDIENCES.iter().map(|s| s.to_string()).collect(),
            app_roles: vec![ROLE_SEND_AS_APP.into()],
            rbac_apps: Vec::new(),
            service_principals: None,
            delegated_scopes: vec![SCOPE_SMTP_SEND.into()],
            delegates: HashMap::new(),
            allowed_apps: None,
            min_remaining: Duration::ZERO,
        }
    }

    /// HVE: app tokens need `Mail.Send` and `Add-HVEAppAccess`; a token
    /// with less than 5 minutes left is refused (the real margin is not
    /// documented [U]).
    pub fn hve(verifier: TokenVerifier) -> Xoauth2Policy {
        Xoauth2Policy {
            app_roles: vec![ROLE_MAIL_SEND.into()],
            allowed_apps: Some(HashMap::new()),
            min_remaining: Duration::from_secs(300),
            ..Xoauth2Policy::exchange(verifier)
        }
    }

    /// The claims when `token` lets `user` send.
    ///
    /// # Errors
    /// Why not.
    pub fn check(&self, user: &str, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verifier.verify(token)?;
        let s = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
        let aud = s("aud");
        if !self.audiences.iter().any(|a| a == aud) {
            return Err(TokenError::Audience(aud.into()));
        }
        let user_lc = user.to_ascii_lowercase();
        if let Some(scp) = claims.get("scp").and_then(Value::as_str) {
            if !scp
                .split_whitespace()
                .any(|x| self.delegated_scopes.iter().any(|w| w == x))
            {
                return Err(TokenError::Permission(format!(
                    "scp {scp:?} lacks {}",
                    self.delegated_scopes.join("|")
                )));
            }
            let upn = [s("upn"), s("unique_name"), s("preferred_username")]
                .into_iter()
                .find(|u| !u.is_empty())
                .unwrap_or("");
            let delegate = self
                .delegates
                .get(&user_lc)
                .is_some_and(|d| d.iter().any(|d| d.eq_ignore_ascii_case(upn)));
            if !upn.eq_ignore_ascii_case(user) && !delegate {
                return Err(TokenError::UserMismatch {
                    user: user.into(),
                    upn: upn.into(),
                });
            }
        } else {
            let appid = s("appid");
            let appid = if appid.is_empty() { s("azp") } else { appid };
            let roles: Vec<&str> = claims
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let has_role = roles.iter().any(|r| self.app_roles.iter().any(|w| w == r));
            if !has_role && !self.rbac_apps.iter().any(|a| a == appid) {
                return Err(TokenError::Permission(format!(
                    "roles {roles:?} lack {}",
                    self.app_roles.join("|")
                )));
            }
            if let Some(sps) = &self.service_principals
                && !sps.iter().any(|a| a == appid)
            {
                return Err(TokenError::Permission(format!(
                    "no service principal for {appid}"
                )));
            }
            if let Some(allowed) = &self.allowed_apps
                && !allowed
                    .get(&user_lc)
                    .is_some_and(|l| l.iter().any(|a| a == appid))
            {
                return Err(TokenError::AppNotAllowed(appid.into()));
            }
        }
        let min = self.min_remaining.as_secs() as i64;
        if min > 0
            && let Some(exp) = claims.get("exp").and_then(Value::as_i64)
        {
            let left = exp - jwt::now();
            if left < min {
                return Err(TokenError::ExpiresSoon { left });
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_parsing() {
        let enc = |s: &str| jwt::b64(s.as_bytes());
        assert_eq!(
            parse_blob(&enc("user=a@b\x01auth=Bearer tok\x01\x01")).unwrap(),
            ("a@b".to_string(), "tok".to_string())
        );
        let err = |s: &str| match parse_blob(s) {
            Err(Some(TokenError::Malformed(w))) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("!!"), "base64");
        assert_eq!(err(&enc("user=a@b\x01auth=Bearer tok")), "terminator");
        assert_eq!(err(&enc("auth=Bearer tok\x01\x01")), "user");
        assert_eq!(err(&enc("user=a@b\x01\x01")), "auth");
        assert_eq!(err(&enc("user=a@b\x01auth=Basic x\x01\x01")), "auth");
        assert_eq!(err(&enc("user=a@b\x01auth=Bearer \x01\x01")), "token");
        assert!(matches!(parse_blob("*"), Err(None)));
    }
}

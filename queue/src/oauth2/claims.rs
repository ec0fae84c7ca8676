//! What an access token says about itself, for diagnostics: its JWT
//! payload decoded without verification (only the issuer can verify it),
//! summarised as audience, roles or scopes, user and time left. The token
//! itself is never shown.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Audiences Exchange Online accepts for SMTP AUTH (the last is its
/// application ID, used by v1 tokens).
pub const EXCHANGE_AUDIENCES: &[&str] = &[
    "https://outlook.office365.com",
    "https://outlook.office.com",
    "https://outlook.office365.us",
    "00000002-0000-0ff1-ce00-000000000000",
];

/// The payload of a JWT (`header.payload.signature`), unverified; `None`
/// when `token` is not a JWT with a JSON object payload (some issuers use
/// opaque tokens).
pub fn decode_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// The claims that matter for SMTP AUTH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimsSummary {
    /// `aud` (joined with `, ` when a list).
    pub aud: Option<String>,
    /// `roles` (application permissions, app-only tokens).
    pub roles: Vec<String>,
    /// `scp` (delegated scopes).
    pub scp: Vec<String>,
    /// `upn`, else `unique_name` or `preferred_username` (delegated tokens).
    pub upn: Option<String>,
    /// `appid` or `azp`.
    pub app_id: Option<String>,
    /// `tid`, the tenant.
    pub tenant: Option<String>,
    /// `exp`, when present.
    pub expires_at: Option<SystemTime>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .filter_map(|x| x.as_str())
                .map(String::from)
                .collect();
            (!items.is_empty()).then(|| items.join(", "))
        }
        _ => None,
    }
}

impl ClaimsSummary {
    /// Picks the claims out of a decoded payload.
    pub fn from_claims(c: &Value) -> ClaimsSummary {
        let first = |names: &[&str]| names.iter().find_map(|n| text(&c[*n]));
        ClaimsSummary {
            aud: text(&c["aud"]),
            roles: match &c["roles"] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .map(String::from)
                    .collect(),
                Value::String(s) => s.split_whitespace().map(String::from).collect(),
                _ => Vec::new(),
            },
            scp: c["scp"]
                .as_str()
                .map(|s| s.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            upn: first(&["upn", "unique_name", "preferred_username"]),
            app_id: first(&["appid", "azp"]),
            tenant: first(&["tid"]),
            expires_at: c["exp"]
                .as_u64()
                .or_else(|| c["exp"].as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    /// What in the token will make Exchange Online refuse it for `user`,
    /// in words (empty when nothing is seen).
    pub fn problems(&self, user: &str) -> Vec<String> {
        let mut p = Vec::new();
        match &self.aud {
            Some(a) if EXCHANGE_AUDIENCES.iter().any(|x| a.trim_end_matches('/') == *x) => {}
            Some(a) => p.push(format!(
                "the audience {a} is not Exchange Online's; SMTP AUTH needs a token for https://outlook.office365.com (smtp_oauth2_scope = https://outlook.office365.com/.default)"
            )),
            None => p.push("the token names no audience".into()),
        }
        if !self.scp.is_empty() {
            if !self.scp.iter().any(|s| s.eq_ignore_ascii_case("SMTP.Send")) {
                p.push("the delegated scopes lack SMTP.Send: add that permission (Office 365 Exchange Online) to the application and sign in again".into());
            }
            if let Some(upn) = &self.upn
                && !upn.eq_ignore_ascii_case(user)
            {
                p.push(format!(
                    "the token is for {upn}, but XOAUTH2 signs in as {user}; Exchange wants them to match (or {upn} needs rights on that mailbox)"
                ));
            }
        } else if !self
            .roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case("SMTP.SendAsApp"))
        {
            p.push("the token has no SMTP.SendAsApp role: grant the application permission Office 365 Exchange Online > SMTP.SendAsApp with admin consent (not needed with an Exchange App RBAC assignment)".into());
        }
        p
    }
}

/// `1h 02m 03s`, `4m 05s`, `6s`; `expired 3m 00s ago` for the past.
pub fn format_left(left: i64) -> String {
    let s = left.unsigned_abs();
    let body = if s >= 3600 {
        format!("{}h {:02}m {:02}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    };
    if left < 0 {
        format!("expired {body} ago")
    } else {
        body
    }
}

/// Seconds from `now` to `t` (negative when past).
pub fn seconds_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The summary of `token` at `now`, or `None` when it is not a JWT.
pub fn summarize(token: &str, now: SystemTime) -> Option<Summary> {
    Some(Summary {
        claims: ClaimsSummary::from_claims(&decode_claims(token)?),
        now,
    })
}

/// A [`ClaimsSummary`] at a moment, printable on one line:
/// `aud=https://outlook.office365.com roles=SMTP.SendAsApp upn=- expires in 59m 58s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The claims.
    pub claims: ClaimsSummary,
    /// When "time left" is counted from.
    pub now: SystemTime,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.claims;
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        write!(f, "aud={}", dash(&c.aud))?;
        if c.scp.is_empty() {
            write!(f, " roles={}", list(&c.roles))?;
        } else {
            write!(f, " scp={}", list(&c.scp))?;
        }
        write!(f, " upn={}", dash(&c.upn))?;
        match c.expires_at {
            Some(t) => {
                let left = seconds_until(t, self.now);
                if left < 0 {
                    write!(f, " {}", format_left(left))
                } else {
                    write!(f, " expires in {}", format_left(left))
                }
            }
            None => write!(f, " exp=-"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine;

    /// An unsigned JWT carrying `claims` (test endpoints issue these).
    pub(crate) fn jwt(claims: &Value) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn app_only_token() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = jwt(&serde_json::json!({
            "aud": "https://outlook.office365.com",
            "roles": ["SMTP.SendAsApp"],
            "appid": "app",
            "tid": "tenant",
            "exp": 1_000_000 + 3598,
        }));
        let s = summarize(&t, now).unwrap();
        assert_eq!(
            s.to_string(),
            "aud=https://outlook.office365.com roles=SMTP.SendAsApp upn=- expires in 59m 58s"
        );
        assert_eq!(s.claims.app_id.as_deref(), Some("app"));
        assert!(s.claims.problems("scanner@contoso.com").is_empty());
        assert!(!s.to_string().contains(&t));
    }

    #[test]
    fn delegated_token_problems() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = ClaimsSummary::from_claims(
            &decode_claims(&jwt(&serde_json::json!({
                "aud": "https://graph.microsoft.com",
                "scp": "Mail.Read User.Read",
                "upn": "ceo@contoso.com",
                "exp": 1_000_000 - 180,
            })))
            .unwrap(),
        );
        let p = c.problems("scanner@contoso.com");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("not Exchange Online's"));
        assert!(p[1].contains("SMTP.Send"));
        assert!(p[2].contains("the token is for ceo@contoso.com"));
        let s = Summary { claims: c, now };
        assert_eq!(
            s.to_string(),
            "aud=https://graph.microsoft.com scp=Mail.Read,User.Read upn=ceo@contoso.com expired 3m 00s ago"
        );
        let ok = ClaimsSummary::from_claims(
            &decode_claims(&jwt(&serde_json::json!({
                "aud": "https://outlook.office.com/",
                "scp": "SMTP.Send",
                "upn": "CEO@contoso.com",
            })))
            .unwrap(),
        );
        assert!(ok.problems("ceo@contoso.com").is_empty());
        let norole =
            ClaimsSummary::from_claims(&serde_json::json!({"aud": "https://outlook.office.com"}));
        assert!(norole.problems("x")[0].contains("SMTP.SendAsApp"));
    }

    #[test]
    fn not_a_jwt() {
        for t in ["", "opaque", "a.b", "a.b.c.d", "a.!!!.c", "a.bnVsbA.c"] {
            assert!(decode_claims(t).is_none(), "{t}");
        }
        assert_eq!(format_left(3723), "1h 02m 03s");
        assert_eq!(format_left(5), "5s");
    }
}

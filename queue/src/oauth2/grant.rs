//! Getting an access token from the endpoint: the client-credentials grant
//! (with a client secret or a signed certificate assertion) and the
//! refresh-token grant (whose rotated refresh token is stored at once).

use super::account::{Account, ClientAuth, Grant};
use super::assertion::{self, ASSERTION_TYPE};
use super::cache::Token;
use super::endpoint::Http;
use super::error::OAuthError;
use super::refresh::{self, Stored};
use proto::sasl::Secret;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What fetching needs besides the account.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub http: Http,
    /// The group allowed to read secret files.
    pub readers_gid: Option<u32>,
    /// The token cache directory (rotated refresh tokens may go there).
    pub cache_dir: PathBuf,
    /// Owner of what is created in the cache directory (root: mail_owner).
    pub owner: Option<(u32, u32)>,
}

/// The form fields that authenticate the client; the values are secrets.
pub(crate) fn client_auth_fields(
    env: &Env,
    account: &Account,
    now: SystemTime,
) -> Result<Vec<(&'static str, Secret)>, OAuthError> {
    Ok(match &account.client_auth {
        ClientAuth::None => Vec::new(),
        ClientAuth::Secret(f) => vec![(
            "client_secret",
            super::files::read_secret(f, env.readers_gid, "client secret")?,
        )],
        ClientAuth::Certificate {
            cert_file,
            key_file,
        } => {
            let cred = assertion::load(cert_file, key_file, env.readers_gid)?;
            let jwt = cred.assertion(&account.client_id, &account.token_endpoint, now)?;
            vec![
                ("client_assertion_type", Secret::new(ASSERTION_TYPE)),
                ("client_assertion", Secret::new(jwt)),
            ]
        }
    })
}

/// A successful token answer.
pub(crate) struct Issued {
    pub token: Token,
    pub refresh_token: Option<Secret>,
}

/// Reads a token answer (`access_token`, `token_type`, `expires_in`,
/// `refresh_token`) received at `now`.
///
/// # Errors
/// No access token, a token type other than Bearer, or a lifetime that is
/// not a positive number.
pub(crate) fn parse_answer(
    account: &Account,
    json: &serde_json::Value,
    now: SystemTime,
) -> Result<Issued, OAuthError> {
    let bad = |m: &str| OAuthError::BadResponse {
        endpoint: account.token_endpoint.clone(),
        message: m.to_string(),
    };
    let access = json["access_token"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no access_token in it"))?;
    if let Some(t) = json["token_type"].as_str()
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(bad("token_type is not Bearer"));
    }
    // A number, or (Azure AD v1) a string of digits. Entra ID always sends
    // it; without it, assume the usual hour.
    let expires_in = match &json["expires_in"] {
        serde_json::Value::Null => Some(3600.0),
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
    .ok_or_else(|| bad("expires_in is not a positive number of seconds"))?;
    let refresh_token = json["refresh_token"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    // Whole milliseconds, as the cache file keeps them, so that a token
    // read back from the file equals the one in memory.
    let ms = |t: SystemTime| {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        UNIX_EPOCH + Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(Issued {
        token: Token {
            access_token: Secret::new(access),
            expires_at: ms(expires_at(access, now, Duration::from_secs_f64(expires_in))),
            obtained_at: ms(now),
        },
        refresh_token,
    })
}

/// How much earlier than `now + expires_in` a JWT's own `exp` may be and
/// still be believed: its whole seconds, plus the time the request took.
/// A larger difference is clock skew between this host and the endpoint,
/// for which `expires_in` is right.
const EXP_ROUNDING: Duration = Duration::from_secs(3);

/// When an access token asked for at `now` expires: `now + expires_in`, or
/// the token's own `exp` when that is a little earlier. Endpoints stamp
/// JWTs in whole seconds, so a token asked for at 12:00:00.9 that lives
/// 3599 s may expire at 12:59:59; believing `exp` keeps a token postern
/// deems fresh from being refused as expired (short test tokens notice).
fn expires_at(access_token: &str, now: SystemTime, expires_in: Duration) -> SystemTime {
    let by_lifetime = now + expires_in;
    let own = super::claims::decode_claims(access_token)
        .map(|c| super::claims::ClaimsSummary::from_claims(&c))
        .and_then(|c| c.expires_at);
    match own {
        Some(exp)
            if exp < by_lifetime
                && by_lifetime.duration_since(exp).unwrap_or_default() <= EXP_ROUNDING =>
        {
            exp
        }
        _ => by_lifetime,
    }
}

/// Fetches a new access token for `account` with its grant; a rotated
/// refresh token is stored before the access token is returned.
///
/// # Errors
/// A credential file cannot be used, the endpoint cannot be reached or
/// refuses (see [`OAuthError`]).
pub(crate) fn fetch(env: &Env, account: &Account) -> Result<Token, OAuthError> {
    let now = SystemTime::now();
    let auth = client_auth_fields(env, account, now)?;
    let mut form: Vec<(&str, &str)> = vec![("client_id", &account.client_id)];
    let refresh = match &account.grant {
        Grant::ClientCredentials => {
            form.push(("grant_type", "client_credentials"));
            None
        }
        Grant::RefreshToken(file) => {
            let (rt, source) = refresh::load(file, &env.cache_dir, env.readers_gid)?;
            Some((rt, source))
        }
    };
    if let Some((rt, _)) = &refresh {
        form.push(("grant_type", "refresh_token"));
        form.push(("refresh_token", rt.expose()));
    }
    form.push(("scope", &account.scope));
    form.extend(auth.iter().map(|(k, v)| (*k, v.expose())));
    let json = env
        .http
        .post(account, &account.token_endpoint, &form)?
        .into_ok(account)?;
    let issued = parse_answer(account, &json, now)?;
    if let (Some((_, source)), Some(new)) = (&refresh, &issued.refresh_token) {
        match refresh::store(new, source, &env.cache_dir, env.owner) {
            Ok(Stored::File) => {}
            // Said once, when the copy takes over from the file; later
            // rotations replace the copy as designed (a root-owned file the
            // delivery agents only read is the documented setup).
            Ok(Stored::Cache(copy, why)) if !source.from_copy => crate::log::warning(&format!(
                "OAuth2 {}: cannot replace the refresh token file ({why}); the rotated refresh token is kept in {} instead, until postern oauth2 login {} writes the file again",
                account.user,
                copy.display(),
                account.user
            )),
            Ok(Stored::Cache(..)) => {}
            Err(why) => crate::log::warning(&format!(
                "OAuth2 {}: cannot store the rotated refresh token ({why}); the previous one stays in use until it expires",
                account.user
            )),
        }
    }
    Ok(issued.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        use base64::Engine;
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2ln",
            b(serde_json::json!({"alg": "RS256"})),
            b(serde_json::json!({"exp": exp}))
        )
    }

    #[test]
    fn expiry_believes_the_tokens_exp_when_it_is_rounding() {
        let account = Account {
            user: "u@example.com".into(),
            token_endpoint: "http://127.0.0.1:1/t/oauth2/v2.0/token".into(),
            client_id: "app".into(),
            scope: "s/.default".into(),
            client_auth: ClientAuth::None,
            grant: Grant::ClientCredentials,
            table: None,
        };
        let now = UNIX_EPOCH + Duration::from_millis(1_000_900);
        let at = |token: &str, expires_in: serde_json::Value| {
            let a = serde_json::json!({"access_token": token, "expires_in": expires_in});
            parse_answer(&account, &a, now).unwrap().token
        };
        // Opaque: now + expires_in (fractions from v1 strings kept).
        let t = at("opaque", serde_json::json!(6));
        assert_eq!(t.obtained_at, now);
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_millis(1_006_900));
        let t = at("opaque", serde_json::json!("6.5"));
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_millis(1_007_400));
        // A JWT stamped in whole seconds: its exp.
        let t = at(&jwt(1_006), serde_json::json!(6));
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(1_006));
        assert_eq!(t.lifetime(), Duration::from_millis(5_100));
        // A later exp (this clock is behind) or a much earlier one (this
        // clock is ahead): expires_in.
        for exp in [1_010, 1_002] {
            let t = at(&jwt(exp), serde_json::json!(6));
            assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_millis(1_006_900));
        }
    }
}

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
            expires_at: ms(now + Duration::from_secs_f64(expires_in)),
            obtained_at: ms(now),
        },
        refresh_token,
    })
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
            Ok(Stored::Cache(copy, why)) => crate::log::warning(&format!(
                "OAuth2 {}: cannot replace the refresh token file ({why}); the rotated refresh token is kept in {} instead",
                account.user,
                copy.display()
            )),
            Err(why) => crate::log::warning(&format!(
                "OAuth2 {}: cannot store the rotated refresh token ({why}); the previous one stays in use until it expires",
                account.user
            )),
        }
    }
    Ok(issued.token)
}

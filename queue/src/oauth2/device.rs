//! Device-code sign-in (RFC 8628) for delegated use: the admin opens a web
//! page on any device, enters a code and signs in as the mailbox; postern
//! polls the token endpoint until that is done and keeps the refresh token.

use super::account::{Account, Grant};
use super::cache::{Token, TokenCache};
use super::error::{self, OAuthError};
use super::grant::{self, parse_answer};
use super::refresh;
use std::time::{Duration, Instant, SystemTime};

/// The form value of `grant_type` when polling.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `scope` with `offline_access` added (needed for a refresh token).
pub(crate) fn with_offline_access(scope: &str) -> String {
    if scope.split_whitespace().any(|s| s == "offline_access") {
        scope.to_string()
    } else {
        format!("{scope} offline_access")
    }
}

/// Signs in by device code: asks the device authorization endpoint (see
/// [`Account::device_code_endpoint`]) for a code, shows `on_prompt` the
/// endpoint's `message` (or the page and the code), polls the token
/// endpoint at the interval it asks for (`authorization_pending`,
/// `slow_down`), stores the refresh token in the account's
/// `refresh_token_file` atomically (as root `root:<mail_owner's group>`
/// mode 0640, else mode 0600), and puts the access token in `cache`.
/// `offline_access` is added to `scope` when missing.
///
/// # Errors
/// The account has no refresh token file; the endpoint refuses
/// (`access_denied`, an unknown application...); the code expires before
/// the sign-in is done; the file cannot be written.
pub fn device_code_login(
    cache: &TokenCache,
    account: &Account,
    scope: &str,
    on_prompt: impl FnMut(&str),
) -> Result<Token, OAuthError> {
    login(cache, account, scope, on_prompt, Duration::from_secs(1))
}

/// [`device_code_login`] with the length of the endpoint's "second" (tests
/// make it short).
pub(crate) fn login(
    cache: &TokenCache,
    account: &Account,
    scope: &str,
    mut on_prompt: impl FnMut(&str),
    second: Duration,
) -> Result<Token, OAuthError> {
    let Grant::RefreshToken(file) = &account.grant else {
        return Err(OAuthError::config(
            &account.user,
            format!(
                "a sign-in stores a refresh token, but none is configured; set smtp_oauth2_refresh_token_file (or refresh_token_file= in the smtp_oauth2_account_maps entry for {}) to the file to keep it in",
                account.user
            ),
        ));
    };
    let env = cache.env();
    let scope = with_offline_access(scope);
    let url = account.device_code_endpoint()?;
    let started = Instant::now();
    let code = env
        .http
        .post(
            account,
            &url,
            &[("client_id", &account.client_id), ("scope", &scope)],
        )?
        .into_ok(account)?;
    let bad = |m: &str| OAuthError::BadResponse {
        endpoint: url.clone(),
        message: m.to_string(),
    };
    let device_code = code["device_code"]
        .as_str()
        .ok_or_else(|| bad("no device_code in it"))?;
    let number = |name: &str, default: u64| match &code[name] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(default),
        serde_json::Value::String(s) => s.parse().unwrap_or(default),
        _ => default,
    };
    let mut interval = number("interval", 5).clamp(1, 60);
    let lifetime = number("expires_in", 900).clamp(1, 3600);
    let message = match code["message"].as_str() {
        Some(m) if !m.trim().is_empty() => error::one_line(m),
        _ => {
            let page = code["verification_uri"]
                .as_str()
                .or(code["verification_url"].as_str())
                .ok_or_else(|| bad("no verification_uri in it"))?;
            let user_code = code["user_code"]
                .as_str()
                .ok_or_else(|| bad("no user_code in it"))?;
            format!(
                "To sign in, open {} and enter the code {}",
                error::one_line(page),
                error::one_line(user_code)
            )
        }
    };
    on_prompt(&message);
    let deadline = started + second * u32::try_from(lifetime).unwrap_or(900);
    let mut last_trouble: Option<OAuthError> = None;
    loop {
        std::thread::sleep(second * u32::try_from(interval).unwrap_or(5));
        if Instant::now() >= deadline {
            return Err(last_trouble.unwrap_or_else(|| OAuthError::Login {
                message: format!(
                    "the code expired before the sign-in was completed; run postern oauth2 login {} again",
                    account.user
                ),
            }));
        }
        let now = SystemTime::now();
        let auth = grant::client_auth_fields(env, account, now)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", DEVICE_GRANT),
            ("client_id", &account.client_id),
            ("device_code", device_code),
        ];
        form.extend(auth.iter().map(|(k, v)| (*k, v.expose())));
        let answer = match env.http.post(account, &account.token_endpoint, &form) {
            Ok(a) => a,
            Err(e) => {
                // A network hiccup does not end the sign-in; keep polling.
                last_trouble = Some(e);
                continue;
            }
        };
        if answer.status == 200 {
            let json = answer.into_ok(account)?;
            let issued = parse_answer(account, &json, now)?;
            let Some(rt) = issued.refresh_token else {
                return Err(OAuthError::Login {
                    message: "the endpoint sent no refresh token; add offline_access to smtp_oauth2_scope and to the application's API permissions".into(),
                });
            };
            let group = if nix::unistd::geteuid().is_root() {
                env.owner.map(|(_, g)| g)
            } else {
                None
            };
            refresh::write_new(file, &rt, group, &env.cache_dir).map_err(|e| {
                OAuthError::file(
                    file,
                    format!(
                        "{}: cannot store the refresh token: {e}; sign in again once it can be written",
                        file.display()
                    ),
                )
            })?;
            if with_offline_access(&account.scope) == scope {
                cache.store(account, &issued.token);
            }
            return Ok(issued.token);
        }
        let code_of = |a: &super::endpoint::Answer| {
            a.json
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .map(str::to_string)
        };
        match code_of(&answer).as_deref() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some("expired_token" | "code_expired") => {
                return Err(OAuthError::Login {
                    message: format!(
                        "the code expired before the sign-in was completed; run postern oauth2 login {} again",
                        account.user
                    ),
                });
            }
            Some("access_denied" | "authorization_declined") => {
                return Err(OAuthError::Login {
                    message: "the sign-in was declined in the browser".into(),
                });
            }
            Some("bad_verification_code") => {
                return Err(OAuthError::Login {
                    message: "the endpoint does not know the code it issued; run the command again"
                        .into(),
                });
            }
            _ => {
                let e = error::from_response(account, answer.status, answer.json.as_ref());
                if !e.is_transient() {
                    return Err(e);
                }
                last_trouble = Some(e);
            }
        }
    }
}

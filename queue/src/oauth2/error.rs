//! What can go wrong getting a token, in words an admin can act on, and
//! whether waiting helps ([`OAuthError::is_transient`]).
//!
//! The token endpoint's JSON error (`error`, `error_description`,
//! `error_codes` with Entra ID's AADSTS numbers) becomes an
//! [`OAuthError::Refused`] whose text says what failed and what to change.
//! No error ever holds a secret, a token or a file's contents.

use super::account::{Account, ClientAuth, Grant};
use std::path::PathBuf;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The account's settings are missing or contradict each other.
    #[error("OAuth2 settings for {user}: {message}")]
    Config {
        /// The SASL user name the settings are for.
        user: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file the account names cannot be used (missing, unsafe owner or
    /// mode, empty, not a key or certificate).
    #[error("{message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (naming the file) and how to fix it.
        message: String,
    },
    /// The endpoint could not be reached or did not answer in time.
    #[error("cannot reach the token endpoint {endpoint}: {message}")]
    Unreachable {
        /// The URL.
        endpoint: String,
        /// The network error.
        message: String,
    },
    /// The endpoint is overloaded or failing (HTTP 5xx, 429, or the
    /// `temporarily_unavailable`/`server_error` codes).
    #[error(
        "the token endpoint {endpoint} is unavailable (HTTP {status}{}); postern tries again later",
        detail_suffix(detail)
    )]
    Unavailable {
        /// The URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's own words, if any.
        detail: Option<String>,
    },
    /// The endpoint refused the request: a credential, consent or setting
    /// must change before it can succeed.
    #[error(
        "{advice} (token endpoint {endpoint}: HTTP {status} {code}{})",
        detail_suffix(description)
    )]
    Refused {
        /// The URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth2 `error` code, e.g. `invalid_client`.
        code: String,
        /// The Entra ID error number (the digits of `AADSTS7000215`).
        aadsts: Option<u32>,
        /// The endpoint's `error_description`, on one line and shortened.
        description: Option<String>,
        /// What failed and what the admin should do.
        advice: String,
    },
    /// The endpoint's answer cannot be used (not JSON, no access token).
    #[error("unusable answer from the token endpoint {endpoint}: {message}")]
    BadResponse {
        /// The URL.
        endpoint: String,
        /// What is wrong with it.
        message: String,
    },
    /// A device-code login ended without a token (declined, expired).
    #[error("login: {message}")]
    Login {
        /// What happened and what to do.
        message: String,
    },
}

fn detail_suffix(d: &Option<String>) -> String {
    match d {
        Some(d) => format!(": {d}"),
        None => String::new(),
    }
}

impl OAuthError {
    /// True when the same request may succeed later without anyone
    /// changing anything (network failure, time-out, HTTP 5xx or 429): the
    /// mail waits. False when an admin must act first (wrong or expired
    /// credential, missing consent, bad settings): hold the route and tell
    /// the admin.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OAuthError::Unreachable { .. }
                | OAuthError::Unavailable { .. }
                | OAuthError::BadResponse { .. }
        )
    }

    pub(crate) fn config(user: &str, message: impl Into<String>) -> OAuthError {
        OAuthError::Config {
            user: user.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> OAuthError {
        OAuthError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The endpoint's description cut to one line of at most this many
/// characters (Entra ID appends trace and correlation IDs, which Microsoft
/// support asks for, so they are kept when they fit).
const MAX_DESCRIPTION: usize = 400;

/// One line of printable text from a remote string, shortened.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::new();
    for part in s
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.extend(part.chars().filter(|c| !c.is_control()));
    }
    if out.chars().count() > MAX_DESCRIPTION {
        out = out.chars().take(MAX_DESCRIPTION).collect();
        out.push_str("...");
    }
    out
}

/// Builds the error for a non-200 answer with body `json` (or `None` when
/// it was not a JSON object).
pub(crate) fn from_response(
    account: &Account,
    status: u16,
    json: Option<&serde_json::Value>,
) -> OAuthError {
    let endpoint = account.token_endpoint.clone();
    let field = |name: &str| {
        json.and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(one_line)
            .filter(|s| !s.is_empty())
    };
    let code = field("error");
    let description = field("error_description");
    let aadsts = json
        .and_then(|j| j.get("error_codes"))
        .and_then(|c| c.get(0))
        .and_then(|c| c.as_u64())
        .and_then(|c| u32::try_from(c).ok())
        .or_else(|| description.as_deref().and_then(aadsts_in));
    let transient_code = matches!(
        code.as_deref(),
        Some("temporarily_unavailable" | "server_error")
    );
    if status >= 500 || status == 429 || status == 408 || transient_code {
        return OAuthError::Unavailable {
            endpoint,
            status,
            detail: description.or(code),
        };
    }
    let Some(code) = code else {
        return OAuthError::BadResponse {
            endpoint,
            message: format!("HTTP {status} without an OAuth2 error code"),
        };
    };
    OAuthError::Refused {
        advice: advice(account, &code, aadsts),
        endpoint,
        status,
        code,
        aadsts,
        description,
    }
}

/// The number of the first `AADSTS<digits>` in `text`.
fn aadsts_in(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What failed and what to do, from the OAuth2 code and the AADSTS number.
fn advice(a: &Account, code: &str, aadsts: Option<u32>) -> String {
    let user = &a.user;
    let endpoint_hint = "the tenant (ID or domain) in smtp_oauth2_token_endpoint";
    let login_again = |why: &str| {
        format!("{why}: run postern oauth2 login {user} to sign in again and store a new one")
    };
    let refresh_file = match &a.grant {
        Grant::RefreshToken(f) => f.display().to_string(),
        Grant::ClientCredentials => "the refresh token file".to_string(),
    };
    if let Some(n) = aadsts {
        let specific = match n {
            7000215 => Some(match &a.client_auth {
                ClientAuth::Secret(f) => format!(
                    "client secret wrong: put the secret's Value (not its Secret ID) from Entra ID (App registrations, {}, Certificates & secrets) in {}",
                    a.client_id,
                    f.display()
                ),
                _ => "client secret wrong: create a new secret in Entra ID and configure it with smtp_oauth2_client_secret_file".to_string(),
            }),
            7000222 => Some(format!(
                "client secret expired: create a new secret in Entra ID (App registrations, {}, Certificates & secrets) and put it in {}",
                a.client_id,
                secret_file(a)
            )),
            700027 | 700023 | 50012 if matches!(a.client_auth, ClientAuth::Certificate { .. }) => {
                Some(certificate_advice(a))
            }
            700024 => Some(
                "the signed client assertion is outside its valid time: correct this host's clock (NTP)"
                    .to_string(),
            ),
            700016 => Some(format!(
                "application {} not found in the tenant: check smtp_oauth2_client_id and {endpoint_hint}; an app from another tenant needs admin consent in this one",
                a.client_id
            )),
            90002 | 900023 | 90013 => Some(format!("tenant not found: check {endpoint_hint}")),
            70011 => Some(scope_advice(a)),
            65001 | 65004 | 650056 | 650057 => Some(format!(
                "consent missing: grant admin consent for the API permissions of application {} in Entra ID (SMTP.SendAsApp for app-only use, SMTP.Send and offline_access for a signed-in mailbox)",
                a.client_id
            )),
            7000218 => Some(format!(
                "application {} requires a client credential: configure smtp_oauth2_client_secret_file or smtp_oauth2_client_certificate_file, or turn on \"Allow public client flows\" (App registrations, Authentication) for device-code sign-in",
                a.client_id
            )),
            700082 | 70008 | 50173 | 700084 | 50132 | 50133 | 700081 => Some(login_again(
                &format!("the refresh token in {refresh_file} expired or was revoked"),
            )),
            50076 | 50079 | 50158 | 50072 => Some(login_again(
                "the sign-in needs multi-factor authentication or another interactive step",
            )),
            53003 => Some(
                "blocked by a Conditional Access policy: ask the Entra ID admin to exclude this application, user or location"
                    .to_string(),
            ),
            7000112 => Some(format!(
                "application {} is disabled: enable it in Entra ID (Enterprise applications, Properties)",
                a.client_id
            )),
            50034 | 50053 | 50057 | 50055 => Some(login_again(
                "the account is missing, locked, disabled or its password expired; fix the account in Entra ID, then",
            )),
            _ => None,
        };
        if let Some(s) = specific {
            return s;
        }
    }
    match code {
        "invalid_client" => match &a.client_auth {
            ClientAuth::Secret(f) => format!(
                "client secret wrong or expired: create a new secret in Entra ID and put it in {}",
                f.display()
            ),
            ClientAuth::Certificate { .. } => certificate_advice(a),
            ClientAuth::None => format!(
                "application {} requires a client credential: configure smtp_oauth2_client_secret_file or smtp_oauth2_client_certificate_file",
                a.client_id
            ),
        },
        "invalid_grant" => match &a.grant {
            Grant::RefreshToken(_) => login_again(&format!(
                "the refresh token in {refresh_file} was refused (expired, revoked, or issued to another application)"
            )),
            Grant::ClientCredentials => {
                format!("the grant was refused: check smtp_oauth2_client_id and {endpoint_hint}")
            }
        },
        "unauthorized_client" => format!(
            "application {} may not use this grant in this tenant: check the app registration (supported account types, \"Allow public client flows\" for device-code sign-in) and admin consent",
            a.client_id
        ),
        "invalid_scope" => scope_advice(a),
        "access_denied" | "consent_required" | "interaction_required" => format!(
            "access denied: grant (admin) consent for application {} in Entra ID{}",
            a.client_id,
            match a.grant {
                Grant::RefreshToken(_) => format!(", then run postern oauth2 login {user}"),
                Grant::ClientCredentials => String::new(),
            }
        ),
        "invalid_request" => format!(
            "the endpoint rejected the request as malformed: check smtp_oauth2_token_endpoint, smtp_oauth2_client_id ({}) and smtp_oauth2_scope",
            a.client_id
        ),
        _ => format!(
            "the token endpoint refused the request: check application {} in Entra ID and the smtp_oauth2_* settings",
            a.client_id
        ),
    }
}

fn secret_file(a: &Account) -> String {
    match &a.client_auth {
        ClientAuth::Secret(f) => f.display().to_string(),
        _ => "smtp_oauth2_client_secret_file".to_string(),
    }
}

fn certificate_advice(a: &Account) -> String {
    match &a.client_auth {
        ClientAuth::Certificate {
            cert_file,
            key_file,
        } => format!(
            "certificate not accepted: upload {} to application {} in Entra ID (App registrations, Certificates & secrets, Certificates) and check that {} is its private key",
            cert_file.display(),
            a.client_id,
            key_file.display()
        ),
        _ => "certificate not accepted".to_string(),
    }
}

fn scope_advice(a: &Account) -> String {
    format!(
        "scope \"{}\" refused: app-only use needs https://outlook.office365.com/.default, a signed-in mailbox https://outlook.office.com/SMTP.Send offline_access (smtp_oauth2_scope)",
        a.scope
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(auth: ClientAuth, grant: Grant) -> Account {
        Account {
            user: "scanner@contoso.com".into(),
            token_endpoint: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            scope: "https://outlook.office365.com/.default".into(),
            client_auth: auth,
            grant,
            table: None,
        }
    }

    fn secret_account() -> Account {
        account(
            ClientAuth::Secret("/etc/postern/oauth2_secret".into()),
            Grant::ClientCredentials,
        )
    }

    #[test]
    fn invalid_client_with_a_secret_names_the_file() {
        let body = json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app '1111' are expired.\r\nTrace ID: abc\r\nCorrelation ID: def",
            "error_codes": [7000222],
        });
        let e = from_response(&secret_account(), 401, Some(&body));
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with("client secret expired: create a new secret in Entra ID"),
            "{text}"
        );
        assert!(text.contains("/etc/postern/oauth2_secret"), "{text}");
        assert!(text.contains("AADSTS7000222"), "{text}");
        assert!(
            text.contains("Trace ID: abc; Correlation ID: def"),
            "{text}"
        );
        match e {
            OAuthError::Refused { aadsts, code, .. } => {
                assert_eq!((aadsts, code.as_str()), (Some(7000222), "invalid_client"))
            }
            other => panic!("{other:?}"),
        }
        // Without an AADSTS number: the generic words for the code.
        let e = from_response(
            &secret_account(),
            400,
            Some(&json!({"error": "invalid_client"})),
        );
        assert!(
            e.to_string().starts_with(
                "client secret wrong or expired: create a new secret in Entra ID and put it in /etc/postern/oauth2_secret"
            ),
            "{e}"
        );
    }

    #[test]
    fn aadsts_from_the_description_when_codes_are_missing() {
        let body = json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."});
        match from_response(&secret_account(), 401, Some(&body)) {
            OAuthError::Refused { aadsts, advice, .. } => {
                assert_eq!(aadsts, Some(7000215));
                assert!(advice.contains("Value (not its Secret ID)"), "{advice}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_token_errors_say_log_in_again() {
        let a = account(
            ClientAuth::None,
            Grant::RefreshToken("/etc/postern/rt".into()),
        );
        let body = json!({"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token has expired due to inactivity."});
        let e = from_response(&a, 400, Some(&body));
        assert!(!e.is_transient());
        let t = e.to_string();
        assert!(t.contains("/etc/postern/rt expired or was revoked"), "{t}");
        assert!(
            t.contains("postern oauth2 login scanner@contoso.com"),
            "{t}"
        );
        let e = from_response(&a, 400, Some(&json!({"error": "invalid_grant"})));
        assert!(e.to_string().contains("postern oauth2 login"), "{e}");
    }

    #[test]
    fn other_codes() {
        let a = secret_account();
        for (code, n, want) in [
            ("unauthorized_client", None, "may not use this grant"),
            (
                "invalid_scope",
                None,
                "scope \"https://outlook.office365.com/.default\" refused",
            ),
            ("invalid_request", Some(90002), "tenant not found"),
            ("invalid_client", Some(700016), "not found in the tenant"),
            ("invalid_grant", Some(65001), "consent missing"),
            ("invalid_client", Some(700024), "clock"),
            ("whatever", None, "check application"),
        ] {
            let mut body = json!({ "error": code });
            if let Some(n) = n {
                body["error_codes"] = json!([n]);
            }
            let e = from_response(&a, 400, Some(&body));
            assert!(!e.is_transient(), "{code}");
            assert!(e.to_string().contains(want), "{code}: {e}");
        }
        let c = account(
            ClientAuth::Certificate {
                cert_file: "/etc/postern/app.pem".into(),
                key_file: "/etc/postern/app.key".into(),
            },
            Grant::ClientCredentials,
        );
        let e = from_response(
            &c,
            401,
            Some(&json!({"error": "invalid_client", "error_codes": [700027]})),
        );
        let t = e.to_string();
        assert!(
            t.contains("upload /etc/postern/app.pem") && t.contains("/etc/postern/app.key"),
            "{t}"
        );
    }

    #[test]
    fn transient_answers() {
        let a = secret_account();
        for (status, body) in [
            (500, None),
            (503, Some(json!({"error": "temporarily_unavailable"}))),
            (429, None),
            (
                400,
                Some(json!({"error": "server_error", "error_description": "busy"})),
            ),
        ] {
            let e = from_response(&a, status, body.as_ref());
            assert!(e.is_transient(), "{status}: {e:?}");
            assert!(matches!(e, OAuthError::Unavailable { .. }), "{e:?}");
        }
        let e = from_response(&a, 404, None);
        assert!(matches!(e, OAuthError::BadResponse { .. }), "{e:?}");
        assert!(
            OAuthError::Unreachable {
                endpoint: "x".into(),
                message: "y".into()
            }
            .is_transient()
        );
        assert!(!OAuthError::config("u", "m").is_transient());
    }

    #[test]
    fn descriptions_are_one_short_line() {
        let long = format!("a\r\nb\u{1b}[31m\n{}", "x".repeat(1000));
        let l = one_line(&long);
        assert!(l.starts_with("a; b[31m; x"), "{l}");
        assert!(l.chars().count() <= MAX_DESCRIPTION + 3);
        assert!(!l.contains('\n') && !l.contains('\u{1b}'));
    }
}

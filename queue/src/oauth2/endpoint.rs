//! HTTP to the token endpoint: form POSTs with ureq over native TLS
//! (OpenSSL, the system's root certificates), one time limit for the whole
//! request (`smtp_oauth2_timeout`), no redirects (a redirect would carry a
//! secret elsewhere), and no HTTP proxy for loopback endpoints.

use super::account::Account;
use super::error::{self, OAuthError};
use std::time::Duration;

/// The largest answer read (Entra ID's are a few KiB).
const MAX_BODY: u64 = 256 * 1024;

/// The endpoint's answer: HTTP status and the body when it is a JSON object.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub json: Option<serde_json::Value>,
}

impl Answer {
    /// The JSON object of a 200 answer.
    ///
    /// # Errors
    /// Any other status (see [`error::from_response`]), or a 200 without a
    /// JSON object.
    pub fn into_ok(self, account: &Account) -> Result<serde_json::Value, OAuthError> {
        match (self.status, self.json) {
            (200, Some(j)) => Ok(j),
            (200, None) => Err(OAuthError::BadResponse {
                endpoint: account.token_endpoint.clone(),
                message: "HTTP 200 without a JSON object".into(),
            }),
            (status, json) => Err(error::from_response(account, status, json.as_ref())),
        }
    }
}

/// Blocking HTTP client for token endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// Uses the environment's proxy settings (`https_proxy`, `no_proxy`).
    proxied: ureq::Agent,
    /// Never uses a proxy (loopback endpoints).
    direct: ureq::Agent,
    timeout: Duration,
}

impl Http {
    /// A client whose requests each end after `timeout`.
    pub fn new(timeout: Duration) -> Http {
        let agent = |direct: bool| -> ureq::Agent {
            // ureq's default TLS provider is rustls, which postern does not
            // build: without NativeTls here every https request panics.
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::NativeTls)
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build();
            let mut b = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
                .tls_config(tls);
            if direct {
                b = b.proxy(None);
            }
            b.build().into()
        };
        Http {
            proxied: agent(false),
            direct: agent(true),
            timeout,
        }
    }

    /// The time limit of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `form` (URL-encoded) to `url`, an endpoint of `account`.
    ///
    /// # Errors
    /// The request could not be completed (network, TLS, time-out):
    /// [`OAuthError::Unreachable`]. Any HTTP status is an `Ok` answer.
    pub fn post(
        &self,
        account: &Account,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Answer, OAuthError> {
        let agent = if account.endpoint_is_loopback() {
            &self.direct
        } else {
            &self.proxied
        };
        let unreachable = |e: ureq::Error| OAuthError::Unreachable {
            endpoint: url.to_string(),
            message: match e {
                ureq::Error::Timeout(_) => {
                    format!("no answer within {} s", self.timeout.as_secs_f64())
                }
                other => other.to_string(),
            },
        };
        let mut resp = agent
            .post(url)
            .header("Accept", "application/json")
            .send_form(form.iter().copied())
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(unreachable)?;
        let json = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .filter(serde_json::Value::is_object);
        Ok(Answer { status, json })
    }
}

//! A fake Microsoft Entra ID token endpoint (OFFICE365.md §4.2, §7): plain
//! HTTP/1.1 on 127.0.0.1, `POST /{tenant}/oauth2/v2.0/token` and
//! `POST /{tenant}/oauth2/v2.0/devicecode`, form-encoded, JSON answers with
//! Entra-style errors (`{"error":..,"error_description":"AADSTS...: ..",
//! "error_codes":[..],..}`).
//!
//! It issues RS256 JWT access tokens signed with its own RSA key (check
//! them with [`FakeTokenEndpoint::verify`] or a [`TokenVerifier`]) for:
//!
//! - `client_credentials` with a client secret or a certificate
//!   assertion (verified as Entra does: `alg`, `x5t`/`x5t#S256`,
//!   signature, `aud`, `iss`/`sub`, `exp`/`nbf`/`iat`, `jti` replay);
//! - `refresh_token` (delegated), rotating the refresh token;
//! - the device code flow: `/devicecode`, then polling with
//!   `authorization_pending` until the test calls
//!   [`FakeTokenEndpoint::approve`].
//!
//! Faults: [`FakeTokenEndpoint::fail_next`] (5xx, `invalid_client`, a
//! dropped connection, a delay), [`FakeTokenEndpoint::stop`] and
//! [`FakeTokenEndpoint::start`] on the same port, and a clock offset.
//! Every request is recorded ([`TokenRecords`]) with secrets redacted.
//!
//! Like the smart host it runs on its own thread and runtime; every method
//! takes `&self`. Waits block: call them from synchronous tests (or from a
//! multi-threaded async test).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::jwt::{self, Alg, Claims, Jwt};
use super::listener::{OnAccept, Server};
use super::oauth::{ROLE_SEND_AS_APP, TokenError, TokenVerifier};
use super::replies;

/// `client_assertion_type` for certificate credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of the device code flow.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The audience app tokens get when the scope names no resource the
/// endpoint knows.
pub const DEFAULT_AUDIENCE: &str = "https://outlook.office365.com";
/// The resource Entra assumes for scopes without one (Microsoft Graph).
pub const GRAPH: &str = "https://graph.microsoft.com";

/// Form fields whose values are never recorded.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "client_assertion",
    "refresh_token",
    "device_code",
    "password",
    "code",
];

/// How the endpoint behaves. Defaults follow Entra ID.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `Some`: every access token gets this `aud`. `None`: the resource of
    /// the requested scope (`https://outlook.office365.com/.default` →
    /// `https://outlook.office365.com`; bare scopes → Microsoft Graph).
    pub audience: Option<String>,
    /// Access token lifetime (`expires_in`); Entra: 3599 s for app tokens.
    pub token_lifetime: Duration,
    /// Refresh token lifetime (90 days).
    pub refresh_lifetime: Duration,
    /// How long a device code can be redeemed (`expires_in`, 900 s).
    pub device_code_lifetime: Duration,
    /// `interval` of the device code answer (5 s; 1 s in tests).
    pub device_poll_interval: Duration,
    /// Tolerance for client assertion `nbf`/`iat` in the future (300 s).
    pub clock_skew: Duration,
    /// Longest accepted client assertion lifetime from now (1 h).
    pub max_assertion_lifetime: Duration,
    /// `verification_uri` of the device code answer.
    pub verification_uri: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            audience: None,
            token_lifetime: Duration::from_secs(3599),
            refresh_lifetime: Duration::from_secs(90 * 86_400),
            device_code_lifetime: Duration::from_secs(900),
            device_poll_interval: Duration::from_secs(5),
            clock_skew: Duration::from_secs(300),
            max_assertion_lifetime: Duration::from_secs(3600),
            verification_uri: "https://microsoft.com/devicelogin".into(),
        }
    }
}

impl TokenConfig {
    /// Short lifetimes for tests: access tokens `lifetime`, device codes
    /// 60 s polled every 1 s.
    pub fn for_tests(lifetime: Duration) -> TokenConfig {
        TokenConfig {
            token_lifetime: lifetime,
            device_code_lifetime: Duration::from_secs(60),
            device_poll_interval: Duration::from_secs(1),
            ..TokenConfig::default()
        }
    }

    /// Sets the access token lifetime.
    pub fn token_lifetime(mut self, d: Duration) -> TokenConfig {
        self.token_lifetime = d;
        self
    }

    /// Gives every access token this `aud`.
    pub fn audience(mut self, aud: &str) -> TokenConfig {
        self.audience = Some(aud.into());
        self
    }

    /// Sets the device code lifetime and polling interval.
    pub fn device_code(mut self, lifetime: Duration, interval: Duration) -> TokenConfig {
        self.device_code_lifetime = lifetime;
        self.device_poll_interval = interval;
        self
    }
}

/// A fault for the next requests ([`FakeTokenEndpoint::fail_next`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// This HTTP status (e.g. 500, 503) with a JSON
    /// `temporarily_unavailable` error.
    Status(u16),
    /// `invalid_client` (AADSTS7000215) with status 400 or 401.
    InvalidClient(u16),
    /// A custom Entra error: status, `error`, AADSTS code, description.
    Error {
        /// HTTP status.
        status: u16,
        /// `error`, e.g. `invalid_grant`.
        error: String,
        /// The AADSTS number.
        code: u32,
        /// The description after `AADSTSnnn: `.
        description: String,
    },
    /// Close the connection without an answer.
    Drop,
    /// Answer normally after this delay.
    Delay(Duration),
}

/// One HTTP request the endpoint saw.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The client's address.
    pub peer: SocketAddr,
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request path.
    pub path: String,
    /// The tenant segment of the path.
    pub tenant: Option<String>,
    /// `token`, `devicecode`, or `other`.
    pub endpoint: String,
    /// `grant_type` (`devicecode` for `/devicecode` requests).
    pub grant_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// The form, secrets (`client_secret`, `client_assertion`,
    /// `refresh_token`, `device_code`, ...) replaced by `<redacted>`.
    pub form: Vec<(String, String)>,
    /// The status answered (0 for a dropped connection).
    pub status: u16,
    /// `error` of an error answer.
    pub error: Option<String>,
    /// The AADSTS code of an error answer.
    pub code: Option<u32>,
    /// `error_description` of an error answer.
    pub description: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
}

impl TokenRequest {
    /// A form field (secrets read `<redacted>`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An access token the endpoint issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The grant that produced it.
    pub grant_type: String,
    /// The client.
    pub client_id: String,
    /// The user (delegated tokens).
    pub upn: Option<String>,
    /// `aud`.
    pub audience: String,
    /// `exp`.
    pub exp: i64,
    /// The token itself.
    pub access_token: String,
}

/// What the endpoint recorded.
#[derive(Debug, Clone, Default)]
pub struct TokenRecords {
    /// Every request, in order.
    pub requests: Vec<TokenRequest>,
    /// Requests per `grant_type` (`devicecode` for `/devicecode`).
    pub by_grant: HashMap<String, u64>,
    /// Requests per `client_id`.
    pub by_client: HashMap<String, u64>,
    /// Access tokens issued.
    pub issued: Vec<IssuedToken>,
}

impl TokenRecords {
    /// Requests that got an error answer (or none).
    pub fn failures(&self) -> Vec<&TokenRequest> {
        self.requests.iter().filter(|r| r.status != 200).collect()
    }

    /// A short account for failure messages.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "fake token endpoint: {} requests, {} tokens issued\n",
            self.requests.len(),
            self.issued.len()
        );
        for r in self.requests.iter().rev().take(10).rev() {
            out.push_str(&format!(
                "   {} {} grant={} client={} -> {} {}\n",
                r.method,
                r.path,
                r.grant_type.as_deref().unwrap_or("-"),
                r.client_id.as_deref().unwrap_or("-"),
                r.status,
                r.description.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

/// A pending device code, as a test sees it.
#[derive(Debug, Clone)]
pub struct DeviceCodeInfo {
    /// What the user types at the verification page.
    pub user_code: String,
    /// The client that asked.
    pub client_id: String,
    /// The scope asked for.
    pub scope: String,
    /// The tenant of the request.
    pub tenant: String,
}

/// A registered application (client).
#[derive(Debug, Clone, Default)]
struct App {
    secrets: Vec<String>,
    certs: Vec<X509>,
    roles: Vec<String>,
    public: bool,
    tenant: Option<String>,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    upn: String,
    scope: String,
    tenant: String,
    expires: i64,
}

#[derive(Debug, Clone)]
struct DeviceCode {
    device_code: String,
    info: DeviceCodeInfo,
    expires: i64,
    approved: Option<String>,
    denied: bool,
    redeemed: bool,
}

#[derive(Default)]
struct State {
    apps: HashMap<String, App>,
    refresh: HashMap<String, RefreshGrant>,
    devices: Vec<DeviceCode>,
    used_jti: HashSet<String>,
    faults: VecDeque<Fault>,
    clock_offset: i64,
    rec: TokenRecords,
    /// Every refresh token handed out (rotated ones leave `refresh`), for
    /// the harness's secrets scan.
    refresh_issued: Vec<String>,
}

struct EpShared {
    cfg: Mutex<TokenConfig>,
    key: PKey<Private>,
    kid: String,
    port: OnceLock<u16>,
    state: Mutex<State>,
    cond: Condvar,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    next_task: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EpShared {
    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut lock(&self.state));
        self.cond.notify_all();
        r
    }

    fn cfg(&self) -> TokenConfig {
        lock(&self.cfg).clone()
    }

    fn now(&self) -> i64 {
        jwt::now() + lock(&self.state).clock_offset
    }

    fn url(&self, tenant: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{tenant}/oauth2/v2.0/token",
            self.port.get().copied().unwrap_or_default()
        )
    }
}

/// The secrets of a [`FakeTokenEndpoint`]: see [`FakeTokenEndpoint::secrets`].
#[derive(Clone)]
pub struct TokenSecrets(Arc<EpShared>);

impl std::fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecrets")
    }
}

impl TokenSecrets {
    /// `(kind, value)`: the client secrets of registered apps, every access
    /// token issued, every refresh token handed out, every device code.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        let st = lock(&self.0.state);
        let mut out = Vec::new();
        for app in st.apps.values() {
            out.extend(app.secrets.iter().map(|s| ("client secret", s.clone())));
        }
        out.extend(
            st.rec
                .issued
                .iter()
                .map(|t| ("access token", t.access_token.clone())),
        );
        out.extend(
            st.refresh_issued
                .iter()
                .map(|t| ("refresh token", t.clone())),
        );
        out.extend(
            st.devices
                .iter()
                .map(|d| ("device code", d.device_code.clone())),
        );
        out
    }
}

/// The running endpoint. See the [module docs](self).
pub struct FakeTokenEndpoint {
    shared: Arc<EpShared>,
    server: Server,
}

impl std::fmt::Debug for FakeTokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTokenEndpoint")
            .field("port", &self.server.port())
            .finish_non_exhaustive()
    }
}

impl FakeTokenEndpoint {
    /// Starts the endpoint on 127.0.0.1 with a free port and a new RSA key.
    ///
    /// # Errors
    /// No key, runtime or socket.
    pub fn spawn(cfg: TokenConfig) -> Result<FakeTokenEndpoint> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let kid = jwt::b64url(&hash(MessageDigest::sha1(), &key.public_key_to_der()?)?);
        let shared = Arc::new(EpShared {
            cfg: Mutex::new(cfg),
            key,
            kid,
            port: OnceLock::new(),
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            tasks: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(0),
        });
        let s = shared.clone();
        let on_accept: OnAccept = Arc::new(move |tcp, peer| {
            let id = s.next_task.fetch_add(1, Ordering::Relaxed);
            let s2 = s.clone();
            let h = tokio::spawn(async move {
                serve(&s2, tcp, peer).await;
                lock(&s2.tasks).remove(&id);
            });
            lock(&s.tasks).insert(id, h.abort_handle());
        });
        let server = Server::spawn("fake-token", on_accept)?;
        let _ = shared.port.set(server.port());
        Ok(FakeTokenEndpoint { shared, server })
    }

    // ---- where it is -----------------------------------------------------

    /// The port (the same across [`stop`](Self::stop) and [`start`](Self::start)).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:<port>` (the stand-in for
    /// `https://login.microsoftonline.com`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `http://127.0.0.1:<port>/<tenant>/oauth2/v2.0/token`: the token URL,
    /// and the `aud` a client assertion must carry.
    pub fn url(&self, tenant: &str) -> String {
        self.shared.url(tenant)
    }

    /// `http://127.0.0.1:<port>/<tenant>/oauth2/v2.0/devicecode`.
    pub fn devicecode_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/devicecode", self.base_url())
    }

    // ---- up and down -----------------------------------------------------

    /// Goes down: connections are refused, open ones cut; the port stays
    /// reserved.
    ///
    /// # Errors
    /// The accept loop did not stop.
    pub fn stop(&self) -> Result<()> {
        self.server.stop_listening()?;
        for (_, h) in lock(&self.shared.tasks).drain() {
            h.abort();
        }
        Ok(())
    }

    /// Accepts connections again on the same port.
    ///
    /// # Errors
    /// The port could not be bound again.
    pub fn start(&self) -> Result<()> {
        self.server.start()
    }

    /// True unless stopped.
    pub fn is_listening(&self) -> bool {
        self.server.is_listening()
    }

    // ---- the directory ---------------------------------------------------

    fn app_mut<R>(&self, client_id: &str, f: impl FnOnce(&mut App) -> R) -> R {
        self.shared.update(|s| {
            let app = s.apps.entry(client_id.into()).or_insert_with(|| App {
                roles: vec![ROLE_SEND_AS_APP.into()],
                ..App::default()
            });
            f(app)
        })
    }

    /// Registers a confidential client with a secret (more secrets can be
    /// added). App tokens get `roles: ["SMTP.SendAsApp"]`.
    pub fn register_app(&self, client_id: &str, secret: &str) {
        self.app_mut(client_id, |a| a.secrets.push(secret.into()));
    }

    /// Removes one of the client's secrets (rotation, expiry).
    pub fn remove_secret(&self, client_id: &str, secret: &str) {
        self.app_mut(client_id, |a| a.secrets.retain(|s| s != secret));
    }

    /// Registers a certificate credential for the client (creating it).
    pub fn register_certificate(&self, client_id: &str, cert: &X509) {
        let c = cert.clone();
        self.app_mut(client_id, |a| a.certs.push(c));
    }

    /// Removes a certificate credential.
    pub fn remove_certificate(&self, client_id: &str, cert: &X509) {
        let der = cert.to_der().ok();
        self.app_mut(client_id, |a| a.certs.retain(|c| c.to_der().ok() != der));
    }

    /// Registers a public client ("allow public client flows"): device
    /// code and refresh without a secret.
    pub fn register_public_client(&self, client_id: &str) {
        self.app_mut(client_id, |a| a.public = true);
    }

    /// Sets the application permissions app tokens carry in `roles` (none:
    /// e.g. the RBAC model, or a missing admin consent).
    pub fn set_app_roles(&self, client_id: &str, roles: &[&str]) {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        self.app_mut(client_id, |a| a.roles = roles);
    }

    /// Makes the client exist only in `tenant` (other tenants: AADSTS700016).
    pub fn restrict_to_tenant(&self, client_id: &str, tenant: &str) {
        let t = tenant.to_string();
        self.app_mut(client_id, |a| a.tenant = Some(t));
    }

    // ---- delegated grants ------------------------------------------------

    /// The device codes not yet approved, denied, redeemed or expired,
    /// oldest first.
    pub fn pending_device_codes(&self) -> Vec<DeviceCodeInfo> {
        let now = self.shared.now();
        lock(&self.shared.state)
            .devices
            .iter()
            .filter(|d| d.approved.is_none() && !d.denied && !d.redeemed && d.expires > now)
            .map(|d| d.info.clone())
            .collect()
    }

    /// Blocks until a device code is pending; returns the newest.
    ///
    /// # Errors
    /// Timeout.
    pub fn wait_device_code(&self, timeout: Duration) -> Result<DeviceCodeInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.pending_device_codes().pop() {
                return Ok(d);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "timed out after {timeout:?} waiting for a device code\n{}",
                    self.records().summary()
                );
            }
            let g = lock(&self.shared.state);
            let _ = self
                .shared
                .cond
                .wait_timeout(g, left.min(Duration::from_millis(200)));
        }
    }

    /// The user `upn` signs in with `user_code` and consents: the next poll
    /// gets tokens.
    ///
    /// # Errors
    /// No such pending code.
    pub fn approve(&self, user_code: &str, upn: &str) -> Result<()> {
        self.shared.update(|s| {
            let d = s
                .devices
                .iter_mut()
                .find(|d| d.info.user_code.eq_ignore_ascii_case(user_code) && !d.redeemed)
                .ok_or_else(|| anyhow!("no device code {user_code}"))?;
            d.approved = Some(upn.into());
            Ok(())
        })
    }

    /// The user declines: the next poll gets `authorization_declined`.
    ///
    /// # Errors
    /// No such pending code.
    pub fn deny(&self, user_code: &str) -> Result<()> {
        self.shared.update(|s| {
            let d = s
                .devices
                .iter_mut()
                .find(|d| d.info.user_code.eq_ignore_ascii_case(user_code))
                .ok_or_else(|| anyhow!("no device code {user_code}"))?;
            d.denied = true;
            Ok(())
        })
    }

    /// A refresh token for `upn` as if the user had signed in to
    /// `client_id` for `scope` in `tenant` (to seed a refresh token file).
    pub fn issue_refresh_token(
        &self,
        client_id: &str,
        tenant: &str,
        upn: &str,
        scope: &str,
    ) -> String {
        let expires = self.shared.now() + self.shared.cfg().refresh_lifetime.as_secs() as i64;
        let rt = format!("1.{}", jwt::random_b64(48));
        self.shared.update(|s| {
            s.refresh_issued.push(rt.clone());
            s.refresh.insert(
                rt.clone(),
                RefreshGrant {
                    client_id: client_id.into(),
                    upn: upn.into(),
                    scope: scope.into(),
                    tenant: tenant.into(),
                    expires,
                },
            )
        });
        rt
    }

    /// Invalidates every refresh token of `upn` (password reset, revoked
    /// sessions: AADSTS50173).
    pub fn revoke_refresh_tokens(&self, upn: &str) {
        self.shared.update(|s| {
            s.refresh.retain(|_, g| !g.upn.eq_ignore_ascii_case(upn));
        });
    }

    /// The refresh tokens currently valid.
    pub fn refresh_token_count(&self) -> usize {
        lock(&self.shared.state).refresh.len()
    }

    // ---- tokens without HTTP ---------------------------------------------

    /// The claims of an app-only token for `client_id` in `tenant` (with
    /// the client's roles), to adjust and sign with [`sign_token`](Self::sign_token).
    pub fn app_token_claims(&self, client_id: &str, tenant: &str) -> Claims {
        let cfg = self.shared.cfg();
        let roles = lock(&self.shared.state)
            .apps
            .get(client_id)
            .map(|a| a.roles.clone())
            .unwrap_or_else(|| vec![ROLE_SEND_AS_APP.into()]);
        let aud = cfg.audience.clone().unwrap_or(DEFAULT_AUDIENCE.into());
        app_claims(&self.shared, &cfg, client_id, tenant, &aud, &roles, false)
    }

    /// The claims of a delegated token (`scp: "SMTP.Send"`, `upn`).
    pub fn user_token_claims(&self, client_id: &str, tenant: &str, upn: &str) -> Claims {
        let cfg = self.shared.cfg();
        let aud = cfg
            .audience
            .clone()
            .unwrap_or("https://outlook.office.com".into());
        user_claims(
            &self.shared,
            &cfg,
            client_id,
            tenant,
            &aud,
            "SMTP.Send",
            upn,
        )
    }

    /// Signs `claims` with the endpoint's key, as an access token.
    pub fn sign_token(&self, claims: &Claims) -> String {
        sign_access(&self.shared, claims)
    }

    /// A valid app-only access token (no HTTP, not recorded).
    pub fn app_token(&self, client_id: &str, tenant: &str) -> String {
        self.sign_token(&self.app_token_claims(client_id, tenant))
    }

    /// A valid delegated access token for `upn` (no HTTP, not recorded).
    pub fn user_token(&self, client_id: &str, tenant: &str, upn: &str) -> String {
        self.sign_token(&self.user_token_claims(client_id, tenant, upn))
    }

    // ---- checking tokens -------------------------------------------------

    /// Verifies the signature, lifetime and `nbf` of tokens this endpoint
    /// signs (for resource servers such as the fake smart host).
    pub fn verifier(&self) -> TokenVerifier {
        let pem = self
            .shared
            .key
            .public_key_to_pem()
            .expect("public key to PEM");
        TokenVerifier {
            key: PKey::public_key_from_pem(&pem).expect("public key from PEM"),
            kid: self.shared.kid.clone(),
            skew: 300,
        }
    }

    /// The claims of an access token this endpoint issued, after checking
    /// the signature, `exp`, `nbf`, and that `aud`, `tid`, `iat` and
    /// `appid` are present.
    ///
    /// # Errors
    /// Why the token is not good.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verifier().verify(token)?;
        for c in ["aud", "tid", "iat", "appid"] {
            if !claims.contains_key(c) {
                return Err(TokenError::Signature(format!("no {c} claim")));
            }
        }
        Ok(claims)
    }

    // ---- faults ----------------------------------------------------------

    /// The next `n` requests (any path) get `fault` instead of their answer.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared.update(|s| {
            for _ in 0..n {
                s.faults.push_back(fault.clone());
            }
        });
    }

    /// Drops queued faults.
    pub fn clear_faults(&self) {
        self.shared.update(|s| s.faults.clear());
    }

    /// Shifts the endpoint's clock by `secs` (issued `iat`/`nbf`/`exp` and
    /// its assertion checks): clock skew between client and Entra.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.update(|s| s.clock_offset = secs);
    }

    /// Changes the access token lifetime from now on.
    pub fn set_token_lifetime(&self, d: Duration) {
        lock(&self.shared.cfg).token_lifetime = d;
    }

    // ---- records ---------------------------------------------------------

    /// A handle on the secrets this endpoint knows and hands out, for the
    /// harness's secrets scan ([`crate::harness::TestEnv::watch_token_endpoint`]);
    /// it stays readable after the endpoint is dropped.
    pub fn secrets(&self) -> TokenSecrets {
        TokenSecrets(self.shared.clone())
    }

    /// A copy of everything recorded.
    pub fn records(&self) -> TokenRecords {
        lock(&self.shared.state).rec.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.state).rec.requests.clone()
    }

    /// Requests with this `grant_type` (`devicecode` for `/devicecode`).
    pub fn count_grant(&self, grant_type: &str) -> u64 {
        let g = lock(&self.shared.state);
        g.rec.by_grant.get(grant_type).copied().unwrap_or(0)
    }

    /// Requests from this `client_id`.
    pub fn count_client(&self, client_id: &str) -> u64 {
        let g = lock(&self.shared.state);
        g.rec.by_client.get(client_id).copied().unwrap_or(0)
    }

    /// The form of the last request, secrets redacted.
    pub fn last_form(&self) -> Option<Vec<(String, String)>> {
        let g = lock(&self.shared.state);
        g.rec.requests.last().map(|r| r.form.clone())
    }

    /// Blocks until at least `n` requests were answered; returns the records.
    ///
    /// # Errors
    /// Timeout; the error shows what the endpoint saw.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Result<TokenRecords> {
        self.wait_until(&format!("{n} token requests"), timeout, |r| {
            r.requests.len() >= n
        })
    }

    /// Blocks until `pred` holds for the records.
    ///
    /// # Errors
    /// Timeout; the error names `what` and shows what the endpoint saw.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&TokenRecords) -> bool,
    ) -> Result<TokenRecords> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.shared.state);
        loop {
            if pred(&g.rec) {
                return Ok(g.rec.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    g.rec.summary()
                );
            }
            g = self
                .shared
                .cond
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for FakeTokenEndpoint {
    fn drop(&mut self) {
        for (_, h) in lock(&self.shared.tasks).drain() {
            h.abort();
        }
    }
}

// ---- tokens ------------------------------------------------------------------

fn sign_access(shared: &EpShared, claims: &Claims) -> String {
    let mut h = Claims::new();
    h.insert("kid".into(), json!(shared.kid));
    h.insert("x5t".into(), json!(shared.kid));
    // The key is RSA by construction; signing cannot fail otherwise.
    jwt::sign(&h, claims, &shared.key, Alg::RS256).expect("sign an access token")
}

fn stable_guid(seed: &str) -> String {
    let h = hash(MessageDigest::sha256(), seed.as_bytes())
        .map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .unwrap_or_default();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn base_claims(shared: &EpShared, cfg: &TokenConfig, tenant: &str, aud: &str) -> Claims {
    let now = shared.now();
    let mut c = Claims::new();
    c.insert("aud".into(), json!(aud));
    c.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{tenant}/")),
    );
    c.insert("iat".into(), json!(now));
    c.insert("nbf".into(), json!(now));
    c.insert(
        "exp".into(),
        json!(now + cfg.token_lifetime.as_secs().max(1) as i64),
    );
    c.insert("tid".into(), json!(tenant));
    c.insert("uti".into(), json!(jwt::random_b64(16)));
    c.insert("ver".into(), json!("1.0"));
    c
}

fn app_claims(
    shared: &EpShared,
    cfg: &TokenConfig,
    client_id: &str,
    tenant: &str,
    aud: &str,
    roles: &[String],
    cert: bool,
) -> Claims {
    let mut c = base_claims(shared, cfg, tenant, aud);
    let oid = stable_guid(&format!("sp:{client_id}"));
    c.insert("appid".into(), json!(client_id));
    c.insert("appidacr".into(), json!(if cert { "2" } else { "1" }));
    c.insert("idtyp".into(), json!("app"));
    c.insert("oid".into(), json!(oid));
    c.insert("sub".into(), json!(oid));
    if !roles.is_empty() {
        c.insert("roles".into(), json!(roles));
    }
    c
}

fn user_claims(
    shared: &EpShared,
    cfg: &TokenConfig,
    client_id: &str,
    tenant: &str,
    aud: &str,
    scp: &str,
    upn: &str,
) -> Claims {
    let mut c = base_claims(shared, cfg, tenant, aud);
    let oid = stable_guid(&format!("user:{}", upn.to_ascii_lowercase()));
    c.insert("appid".into(), json!(client_id));
    c.insert("appidacr".into(), json!("0"));
    c.insert("amr".into(), json!(["pwd", "mfa"]));
    c.insert("idtyp".into(), json!("user"));
    c.insert("name".into(), json!(upn.split('@').next().unwrap_or(upn)));
    c.insert("oid".into(), json!(oid));
    c.insert("sub".into(), json!(oid));
    c.insert("scp".into(), json!(scp));
    c.insert("unique_name".into(), json!(upn));
    c.insert("upn".into(), json!(upn));
    c
}

/// The resource and permissions of a scope string: `https://r/.default`
/// → (`https://r`, [`.default`]); bare names → Microsoft Graph.
/// `offline_access`, `openid`, `profile` and `email` are left out.
fn split_scope(scope: &str) -> (String, Vec<String>) {
    let mut resource = None;
    let mut perms = Vec::new();
    for s in scope.split_whitespace() {
        if ["offline_access", "openid", "profile", "email"].contains(&s) {
            continue;
        }
        if let Some(rest) = s.strip_prefix("https://").or(s.strip_prefix("api://")) {
            let scheme = if s.starts_with("api://") {
                "api://"
            } else {
                "https://"
            };
            let (host, perm) = rest.split_once('/').unwrap_or((rest, ""));
            resource.get_or_insert_with(|| format!("{scheme}{host}"));
            if !perm.is_empty() {
                perms.push(perm.to_string());
            }
        } else {
            perms.push(s.to_string());
        }
    }
    (resource.unwrap_or(GRAPH.into()), perms)
}

// ---- HTTP ----------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    host: Option<String>,
    body: Vec<u8>,
}

/// An answer: status and JSON body (`None`: drop the connection).
struct Answer {
    status: u16,
    body: Option<Value>,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body: Some(body),
        }
    }
}

/// An Entra error answer.
fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Answer {
    let (secs, ms) = {
        let d = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_secs() as i64, d.subsec_millis())
    };
    let ts = replies::iso8601(secs, ms);
    let ts = format!("{} {}Z", &ts[..10], &ts[11..19]);
    let trace = jwt::guid();
    let corr = jwt::guid();
    Answer {
        status,
        body: Some(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    }
}

fn missing(param: &str) -> Answer {
    entra_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{param}'."),
    )
}

async fn read_request(tcp: &mut TcpStream) -> std::io::Result<Option<Request>> {
    const MAX_HEAD: usize = 64 * 1024;
    const MAX_BODY: usize = 1024 * 1024;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(path)) = (first.next(), first.next()) else {
        return Ok(None);
    };
    let mut length = 0usize;
    let mut chunked = false;
    let mut host = None;
    let mut expect_continue = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "host" => host = Some(v.to_string()),
            "expect" => expect_continue = v.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    if expect_continue {
        tcp.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut rest = buf[head_end..].to_vec();
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            // Parse as many complete chunks as are buffered.
            let Some(p) = rest.windows(2).position(|w| w == b"\r\n") else {
                let n = tcp.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                rest.extend_from_slice(&chunk[..n]);
                continue;
            };
            let size_line = String::from_utf8_lossy(&rest[..p]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            while rest.len() < p + 2 + size + 2 {
                let n = tcp.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&rest[p + 2..p + 2 + size]);
            rest.drain(..p + 2 + size + 2);
            if body.len() > MAX_BODY {
                return Ok(None);
            }
        }
        body
    } else {
        if length > MAX_BODY {
            return Ok(None);
        }
        while rest.len() < length {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(length);
        rest
    };
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        host,
        body,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

async fn serve(shared: &Arc<EpShared>, mut tcp: TcpStream, peer: SocketAddr) {
    let req = match tokio::time::timeout(Duration::from_secs(30), read_request(&mut tcp)).await {
        Ok(Ok(Some(r))) => r,
        _ => return,
    };
    let form = parse_form(&String::from_utf8_lossy(&req.body));
    let segs: Vec<&str> = req
        .path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/')
        .split('/')
        .collect();
    let (tenant, endpoint) = match segs[..] {
        [t, "oauth2", "v2.0", e] if e == "token" || e == "devicecode" => {
            (Some(t.to_string()), e.to_string())
        }
        _ => (None, "other".to_string()),
    };
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let grant_type = if endpoint == "devicecode" {
        Some("devicecode".to_string())
    } else {
        field("grant_type")
    };
    let client_id = field("client_id");
    let fault = lock(&shared.state).faults.pop_front();
    let answer = match fault {
        Some(Fault::Drop) => Answer {
            status: 0,
            body: None,
        },
        Some(Fault::Status(status)) => entra_error(
            status,
            "temporarily_unavailable",
            50012,
            "The service is temporarily unavailable (injected fault).",
        ),
        Some(Fault::InvalidClient(status)) => entra_error(
            status,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
        Some(Fault::Error {
            status,
            error,
            code,
            description,
        }) => entra_error(status, &error, code, &description),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            route(shared, &req, tenant.as_deref(), &endpoint, &form)
        }
        None => route(shared, &req, tenant.as_deref(), &endpoint, &form),
    };
    // Record before answering, so a client that got its answer sees it
    // in the records.
    let body = answer.body.as_ref();
    let err = |k: &str| body.and_then(|b| b.get(k)).and_then(Value::as_str);
    let record = TokenRequest {
        peer,
        method: req.method.clone(),
        path: req.path.clone(),
        tenant,
        endpoint,
        grant_type: grant_type.clone(),
        client_id: client_id.clone(),
        form: form
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_FIELDS.contains(&k.as_str()) {
                    "<redacted>".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
        status: answer.status,
        error: err("error").map(str::to_string),
        code: body
            .and_then(|b| b.get("error_codes"))
            .and_then(|c| c.get(0))
            .and_then(Value::as_u64)
            .map(|c| c as u32),
        description: err("error_description").map(str::to_string),
        at: SystemTime::now(),
    };
    shared.update(|s| {
        if let Some(g) = &grant_type {
            *s.rec.by_grant.entry(g.clone()).or_default() += 1;
        }
        if let Some(c) = &client_id {
            *s.rec.by_client.entry(c.clone()).or_default() += 1;
        }
        s.rec.requests.push(record);
    });
    let Some(body) = answer.body else {
        return;
    };
    let body = body.to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store, no-cache\r\nPragma: no-cache\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status),
        body.len()
    );
    if answer.status == 401 {
        out.push_str("WWW-Authenticate: Basic realm=\"fake\"\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let _ = tcp.write_all(out.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a form for [`post_form`].
pub fn encode_form(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|c| match c {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (c as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{c:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---- the grants ---------------------------------------------------------------

fn route(
    shared: &Arc<EpShared>,
    req: &Request,
    tenant: Option<&str>,
    endpoint: &str,
    form: &[(String, String)],
) -> Answer {
    let Some(tenant) = tenant else {
        return Answer {
            status: 404,
            body: Some(json!({"error": "not_found", "error_description": "no such endpoint"})),
        };
    };
    if req.method != "POST" {
        return entra_error(
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let f = Form(form);
    let Some(client_id) = f.get("client_id") else {
        return missing("client_id");
    };
    let cfg = shared.cfg();
    let mut st = lock(&shared.state);
    let now = jwt::now() + st.clock_offset;
    let app = match st.apps.get(client_id) {
        Some(a) if a.tenant.as_deref().is_none_or(|t| t == tenant) => a.clone(),
        _ => {
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            );
        }
    };
    if endpoint == "devicecode" {
        let Some(scope) = f.get("scope") else {
            return missing("scope");
        };
        if !app.public {
            return entra_error(
                400,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        let user_code = user_code();
        let device_code = format!("DAQABAAEAAA{}", jwt::random_b64(48));
        st.devices.push(DeviceCode {
            device_code: device_code.clone(),
            info: DeviceCodeInfo {
                user_code: user_code.clone(),
                client_id: client_id.into(),
                scope: scope.into(),
                tenant: tenant.into(),
            },
            expires: now + cfg.device_code_lifetime.as_secs() as i64,
            approved: None,
            denied: false,
            redeemed: false,
        });
        return Answer::ok(json!({
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": cfg.verification_uri,
            "expires_in": cfg.device_code_lifetime.as_secs(),
            "interval": cfg.device_poll_interval.as_secs().max(1),
            "message": format!(
                "To sign in, use a web browser to open the page {} and enter the code {user_code} to authenticate.",
                cfg.verification_uri
            ),
        }));
    }
    let Some(grant) = f.get("grant_type") else {
        return missing("grant_type");
    };
    let urls = assertion_audiences(shared, req, tenant);
    match grant {
        "client_credentials" => {
            let cert = match authenticate(&mut st, &cfg, now, client_id, &app, &f, &urls, true) {
                Ok(c) => c,
                Err(a) => return a,
            };
            let Some(scope) = f.get("scope") else {
                return missing("scope");
            };
            if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
                return entra_error(
                    400,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
            let (resource, _) = split_scope(scope);
            let aud = cfg.audience.clone().unwrap_or(resource);
            // app_claims reads the clock offset: unlock first.
            drop(st);
            let claims = app_claims(shared, &cfg, client_id, tenant, &aud, &app.roles, cert);
            let token = sign_access(shared, &claims);
            issue(
                shared, grant, client_id, None, &aud, &claims, token, None, scope, &cfg,
            )
        }
        "refresh_token" => {
            if let Err(a) = authenticate(&mut st, &cfg, now, client_id, &app, &f, &urls, false) {
                return a;
            }
            let Some(rt) = f.get("refresh_token") else {
                return missing("refresh_token");
            };
            let Some(g) = st.refresh.get(rt).cloned() else {
                return entra_error(
                    400,
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed (unknown, revoked or already rotated refresh token).",
                );
            };
            if g.client_id != client_id {
                return entra_error(
                    400,
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed: the refresh token was issued to a different client.",
                );
            }
            if g.expires <= now {
                st.refresh.remove(rt);
                return entra_error(
                    400,
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity.",
                );
            }
            st.refresh.remove(rt);
            let scope = f.get("scope").unwrap_or(&g.scope).to_string();
            drop(st);
            delegated(
                shared, &cfg, grant, client_id, &g.tenant, &g.upn, &scope, true,
            )
        }
        DEVICE_CODE_GRANT => {
            if let Err(a) = authenticate(&mut st, &cfg, now, client_id, &app, &f, &urls, false) {
                return a;
            }
            let Some(code) = f.get("device_code") else {
                return missing("device_code");
            };
            let Some(d) = st
                .devices
                .iter_mut()
                .find(|d| d.device_code == code && d.info.client_id == client_id)
            else {
                return entra_error(
                    400,
                    "invalid_grant",
                    70000,
                    "The provided value for the input parameter 'device_code' is not valid.",
                );
            };
            if d.redeemed {
                return entra_error(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code.",
                );
            }
            if d.expires <= now {
                return entra_error(
                    400,
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
                );
            }
            if d.denied {
                return entra_error(
                    400,
                    "authorization_declined",
                    65004,
                    "User declined to consent to access the app.",
                );
            }
            let Some(upn) = d.approved.clone() else {
                return entra_error(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                );
            };
            d.redeemed = true;
            let scope = d.info.scope.clone();
            let offline = scope.split_whitespace().any(|s| s == "offline_access");
            drop(st);
            delegated(
                shared, &cfg, grant, client_id, tenant, &upn, &scope, offline,
            )
        }
        other => entra_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

/// The form as a lookup of non-empty fields.
struct Form<'a>(&'a [(String, String)]);

impl Form<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The URLs a client assertion's `aud` may name: the canonical token URL
/// and the one the client actually used (its `Host`).
fn assertion_audiences(shared: &EpShared, req: &Request, tenant: &str) -> Vec<String> {
    let mut v = vec![shared.url(tenant)];
    if let Some(h) = &req.host {
        v.push(format!("http://{h}{}", req.path));
    }
    v
}

/// Authenticates the client: a secret, a certificate assertion, or
/// nothing for a public client (unless `confidential` is demanded).
/// `Ok(true)` when a certificate was used.
#[allow(clippy::too_many_arguments)]
fn authenticate(
    st: &mut State,
    cfg: &TokenConfig,
    now: i64,
    client_id: &str,
    app: &App,
    f: &Form<'_>,
    urls: &[String],
    confidential: bool,
) -> Result<bool, Answer> {
    let assertion = f.get("client_assertion");
    let atype = f.get("client_assertion_type");
    if assertion.is_some() || atype.is_some() {
        if atype != Some(JWT_BEARER) {
            return Err(entra_error(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: it must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let Some(assertion) = assertion else {
            return Err(missing("client_assertion"));
        };
        verify_assertion(st, cfg, now, client_id, app, assertion, urls)?;
        return Ok(true);
    }
    if let Some(secret) = f.get("client_secret") {
        if app.secrets.iter().any(|s| s == secret) {
            return Ok(false);
        }
        return Err(entra_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    if app.public && !confidential {
        return Ok(false);
    }
    Err(entra_error(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ))
}

fn assertion_error(code: u32, text: &str) -> Answer {
    entra_error(400, "invalid_client", code, text)
}

/// Verifies a client assertion as Entra ID does.
fn verify_assertion(
    st: &mut State,
    cfg: &TokenConfig,
    now: i64,
    client_id: &str,
    app: &App,
    assertion: &str,
    urls: &[String],
) -> Result<(), Answer> {
    let j = Jwt::parse(assertion).map_err(|e| {
        assertion_error(50027, &format!("JWT token is invalid or malformed ({e})."))
    })?;
    let alg = j.header_str("alg").unwrap_or("");
    if j.alg().is_none() {
        return Err(assertion_error(
            5002738,
            &format!(
                "Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256, PS256'"
            ),
        ));
    }
    let x5t = j.header_str("x5t");
    let x5t256 = j.header_str("x5t#S256");
    if x5t.is_none() && x5t256.is_none() {
        return Err(assertion_error(
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found. The header has neither x5t nor x5t#S256.]",
        ));
    }
    let cert = app.certs.iter().find(|c| {
        x5t.is_none_or(|t| jwt::thumbprint_sha1(c).is_ok_and(|h| h == t))
            && x5t256.is_none_or(|t| jwt::thumbprint_sha256(c).is_ok_and(|h| h == t))
    });
    let Some(cert) = cert else {
        return Err(assertion_error(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]",
                x5t.or(x5t256).unwrap_or("")
            ),
        ));
    };
    let expired = openssl::asn1::Asn1Time::from_unix(now as libc::time_t)
        .ok()
        .and_then(|t| cert.not_after().compare(&t).ok())
        .is_some_and(|o| o != std::cmp::Ordering::Greater);
    if expired {
        return Err(assertion_error(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key used is expired.]",
        ));
    }
    let key = cert
        .public_key()
        .map_err(|_| assertion_error(700027, "Client assertion failed signature validation."))?;
    if !j.verify(&key) {
        return Err(assertion_error(
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    let aud = j.claim_str("aud").unwrap_or("");
    if !urls.iter().any(|u| u == aud) {
        return Err(assertion_error(
            700212,
            &format!(
                "The audience claim '{aud}' of the client assertion is not the token endpoint '{}'.",
                urls[0]
            ),
        ));
    }
    if j.claim_str("iss") != Some(client_id) || j.claim_str("sub") != Some(client_id) {
        return Err(assertion_error(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter (iss and sub must be the client id).",
        ));
    }
    let skew = cfg.clock_skew.as_secs() as i64;
    let time_error = |why: &str| {
        assertion_error(
            700024,
            &format!(
                "Client assertion is not within its valid time range ({why}). Current time: {now}."
            ),
        )
    };
    let Some(exp) = j.claim_time("exp") else {
        return Err(time_error("no exp"));
    };
    if exp <= now {
        return Err(time_error("expired"));
    }
    if exp > now + cfg.max_assertion_lifetime.as_secs() as i64 + skew {
        return Err(time_error("exp too far in the future"));
    }
    if j.claim_time("nbf").is_some_and(|t| t > now + skew) {
        return Err(time_error("nbf in the future"));
    }
    if j.claim_time("iat").is_some_and(|t| t > now + skew) {
        return Err(time_error("iat in the future"));
    }
    let Some(jti) = j.claim_str("jti").filter(|s| !s.is_empty()) else {
        return Err(assertion_error(
            50027,
            "JWT token is invalid or malformed: the client assertion has no jti.",
        ));
    };
    if !st.used_jti.insert(format!("{client_id}\n{jti}")) {
        return Err(assertion_error(
            700027,
            "Client assertion failed: its jti was already used (replay).",
        ));
    }
    Ok(())
}

/// Issues a delegated access token (and a refresh token when asked).
#[allow(clippy::too_many_arguments)]
fn delegated(
    shared: &Arc<EpShared>,
    cfg: &TokenConfig,
    grant: &str,
    client_id: &str,
    tenant: &str,
    upn: &str,
    scope: &str,
    with_refresh: bool,
) -> Answer {
    let (resource, perms) = split_scope(scope);
    let aud = cfg.audience.clone().unwrap_or(resource);
    let scp = perms.join(" ");
    let claims = user_claims(shared, cfg, client_id, tenant, &aud, &scp, upn);
    let token = sign_access(shared, &claims);
    let refresh = with_refresh.then(|| {
        let rt = format!("1.{}", jwt::random_b64(48));
        let expires = shared.now() + cfg.refresh_lifetime.as_secs() as i64;
        shared.update(|s| {
            s.refresh_issued.push(rt.clone());
            s.refresh.insert(
                rt.clone(),
                RefreshGrant {
                    client_id: client_id.into(),
                    upn: upn.into(),
                    scope: scope.into(),
                    tenant: tenant.into(),
                    expires,
                },
            )
        });
        rt
    });
    issue(
        shared,
        grant,
        client_id,
        Some(upn),
        &aud,
        &claims,
        token,
        refresh,
        scope,
        cfg,
    )
}

#[allow(clippy::too_many_arguments)]
fn issue(
    shared: &Arc<EpShared>,
    grant: &str,
    client_id: &str,
    upn: Option<&str>,
    aud: &str,
    claims: &Claims,
    token: String,
    refresh: Option<String>,
    scope: &str,
    cfg: &TokenConfig,
) -> Answer {
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    shared.update(|s| {
        s.rec.issued.push(IssuedToken {
            grant_type: grant.into(),
            client_id: client_id.into(),
            upn: upn.map(str::to_string),
            audience: aud.into(),
            exp,
            access_token: token.clone(),
        })
    });
    let lifetime = cfg.token_lifetime.as_secs().max(1);
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = json!(rt);
    }
    Answer::ok(body)
}

/// A 9-character user code from an unambiguous alphabet.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 9];
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL RNG");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

// ---- a client ----------------------------------------------------------------

/// An HTTP answer from [`post_form`].
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl HttpAnswer {
    /// A string field of the JSON body.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.json.get(k).and_then(Value::as_str)
    }

    /// The first AADSTS code of an error answer.
    pub fn code(&self) -> Option<u64> {
        self.json.get("error_codes")?.get(0)?.as_u64()
    }
}

/// POSTs a form to an `http://127.0.0.1:port/...` URL (blocking, 10 s
/// timeouts): a minimal client for tests and for the fake ACS listener.
///
/// # Errors
/// Not an `http://` URL, connection or protocol errors.
pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Result<HttpAnswer> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {url}"))?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .with_context(|| format!("resolve {hostport}"))?
        .next()
        .with_context(|| format!("no address for {hostport}"))?;
    let mut tcp = StdTcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connect to {hostport}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = encode_form(fields);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).context("read the HTTP answer")?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok(HttpAnswer {
        status,
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip() {
        let enc = encode_form(&[
            ("scope", "https://x/.default offline_access"),
            ("a", "b&c=d%"),
        ]);
        assert_eq!(
            enc,
            "scope=https%3A%2F%2Fx%2F.default+offline_access&a=b%26c%3Dd%25"
        );
        assert_eq!(
            parse_form(&enc),
            vec![
                (
                    "scope".to_string(),
                    "https://x/.default offline_access".to_string()
                ),
                ("a".to_string(), "b&c=d%".to_string())
            ]
        );
        assert_eq!(
            parse_form("x=%zz&y=%4"),
            vec![
                ("x".to_string(), "%zz".to_string()),
                ("y".to_string(), "%4".to_string())
            ]
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(
            split_scope("https://outlook.office365.com/.default"),
            (
                "https://outlook.office365.com".into(),
                vec![".default".into()]
            )
        );
        assert_eq!(
            split_scope("https://outlook.office.com/SMTP.Send offline_access"),
            (
                "https://outlook.office.com".into(),
                vec!["SMTP.Send".into()]
            )
        );
        assert_eq!(split_scope("SMTP.Send").0, GRAPH);
    }
}

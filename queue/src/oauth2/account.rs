//! An account's OAuth2 settings: the `smtp_oauth2_*` parameters,
//! overridden per SASL user name by `smtp_oauth2_account_maps`.
//!
//! A table value is space-separated `name=value` pairs; a value with spaces
//! is written in double quotes (`\"` and `\\` inside). Names are the
//! parameter names with or without their `smtp_oauth2_` prefix:
//!
//! ```text
//! scanner@contoso.com  client_id=1111... client_secret_file=/etc/postern/scanner.secret
//! ceo@contoso.com      refresh_token_file=/etc/postern/ceo.rt scope="https://outlook.office.com/SMTP.Send offline_access"
//! @fabrikam.com        token_endpoint=https://login.microsoftonline.com/fabrikam.com/oauth2/v2.0/token
//! ```
//!
//! The user name is looked up whole, then as `@domain`. An empty value
//! (`client_secret_file=`) clears a main.cf setting. A table's secret or
//! certificate replaces main.cf's client credential (the other kind is
//! dropped), and a certificate named without a key file is read for the
//! key too. Sovereign clouds are just other endpoints.

use super::error::OAuthError;
pub use super::overrides::SETTING_NAMES;
use super::overrides::{CERT, CLIENT_ID, ENDPOINT, KEY, REFRESH, SCOPE, SECRET, parse_overrides};
use conf::tables::{AddrSearch, Maps};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How the client proves its identity to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: only its client ID (delegated sign-in).
    None,
    /// A client secret, read from this file.
    Secret(PathBuf),
    /// A JWT assertion signed with the certificate's private key.
    Certificate {
        /// The certificate (PEM) registered with the application.
        cert_file: PathBuf,
        /// Its private key (PEM); may be the same file.
        key_file: PathBuf,
    },
}

/// What the client exchanges for an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// App-only access (`client_credentials`), with the client credential.
    ClientCredentials,
    /// Delegated access with the refresh token kept in this file.
    RefreshToken(PathBuf),
}

/// The resolved OAuth2 settings of one SASL user. Holds file names only,
/// never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The SASL user name (the mailbox in XOAUTH2's `user=`).
    pub user: String,
    /// The token endpoint URL (https, or http on a loopback address).
    pub token_endpoint: String,
    /// The application (client) ID.
    pub client_id: String,
    /// The scope requested.
    pub scope: String,
    /// How the client authenticates.
    pub client_auth: ClientAuth,
    /// Which grant gets tokens.
    pub grant: Grant,
    /// The `smtp_oauth2_account_maps` table and key whose entry applied.
    pub table: Option<String>,
}

/// Settings being merged: values and, for each, the table entry that set
/// it (`None`: main.cf).
#[derive(Debug, Clone, Default)]
struct Settings {
    values: [String; SETTING_NAMES.len()],
    from_table: [Option<String>; SETTING_NAMES.len()],
}

impl Settings {
    fn from_config(cfg: &conf::Config) -> Settings {
        let mut s = Settings::default();
        s.values[ENDPOINT] = cfg.smtp_oauth2_token_endpoint.trim().to_string();
        s.values[CLIENT_ID] = cfg.smtp_oauth2_client_id.trim().to_string();
        s.values[SECRET] = cfg.smtp_oauth2_client_secret_file.trim().to_string();
        s.values[CERT] = cfg.smtp_oauth2_client_certificate_file.trim().to_string();
        s.values[KEY] = cfg.smtp_oauth2_client_key_file.trim().to_string();
        s.values[REFRESH] = cfg.smtp_oauth2_refresh_token_file.trim().to_string();
        s.values[SCOPE] = cfg.smtp_oauth2_scope.trim().to_string();
        s
    }

    /// Applies a table entry (see the module documentation for the rules).
    fn apply(&mut self, pairs: &[(usize, String)], entry: &str) {
        let sets = |i: usize| pairs.iter().any(|(j, v)| *j == i && !v.is_empty());
        let clear = |s: &mut Settings, i: usize| {
            s.values[i].clear();
            s.from_table[i] = Some(entry.to_string());
        };
        if sets(SECRET) && !pairs.iter().any(|(j, _)| *j == CERT) {
            clear(self, CERT);
            clear(self, KEY);
        }
        if sets(CERT) {
            if !pairs.iter().any(|(j, _)| *j == SECRET) {
                clear(self, SECRET);
            }
            if !pairs.iter().any(|(j, _)| *j == KEY) {
                let cert = pairs
                    .iter()
                    .find(|(j, _)| *j == CERT)
                    .map(|(_, v)| v.clone());
                self.values[KEY] = cert.unwrap_or_default();
                self.from_table[KEY] = Some(entry.to_string());
            }
        }
        for (i, v) in pairs {
            self.values[*i] = v.trim().to_string();
            self.from_table[*i] = Some(entry.to_string());
        }
    }

    /// How to name setting `i` in a message.
    fn name(&self, i: usize) -> String {
        match &self.from_table[i] {
            Some(entry) => format!("{} in {entry}", SETTING_NAMES[i]),
            None => format!("smtp_oauth2_{}", SETTING_NAMES[i]),
        }
    }

    fn path(&self, user: &str, i: usize) -> Result<Option<PathBuf>, OAuthError> {
        let v = &self.values[i];
        if v.is_empty() {
            return Ok(None);
        }
        if !Path::new(v).is_absolute() {
            return Err(OAuthError::config(
                user,
                format!("{} must be an absolute path", self.name(i)),
            ));
        }
        Ok(Some(PathBuf::from(v)))
    }

    fn into_account(self, user: &str, table: Option<String>) -> Result<Account, OAuthError> {
        let err = |m: String| Err(OAuthError::config(user, m));
        let endpoint = self.values[ENDPOINT].clone();
        if endpoint.is_empty() {
            return err(format!(
                "{} is empty; set it to https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
                self.name(ENDPOINT)
            ));
        }
        if let Err(why) = check_endpoint(&endpoint) {
            return err(format!("{} {endpoint}: {why}", self.name(ENDPOINT)));
        }
        let client_id = self.values[CLIENT_ID].clone();
        if client_id.is_empty() {
            return err(format!(
                "{} is empty; set it to the application (client) ID of the app registration",
                self.name(CLIENT_ID)
            ));
        }
        if client_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return err(format!("{} contains white space", self.name(CLIENT_ID)));
        }
        let scope = self.values[SCOPE].clone();
        if scope.is_empty() {
            return err(format!(
                "{} is empty; app-only use needs https://outlook.office365.com/.default",
                self.name(SCOPE)
            ));
        }
        if scope.chars().any(char::is_control) {
            return err(format!("{} contains control characters", self.name(SCOPE)));
        }
        let secret = self.path(user, SECRET)?;
        let cert = self.path(user, CERT)?;
        let key = self.path(user, KEY)?;
        let refresh = self.path(user, REFRESH)?;
        let client_auth = match (secret, cert, key) {
            (Some(_), Some(_), _) => {
                return err(format!(
                    "both {} and {} are set; set only one client credential",
                    self.name(SECRET),
                    self.name(CERT)
                ));
            }
            (Some(s), None, None) => ClientAuth::Secret(s),
            (Some(_), None, Some(_)) | (None, None, Some(_)) => {
                return err(format!(
                    "{} is set without {}; set both, or neither",
                    self.name(KEY),
                    self.name(CERT)
                ));
            }
            (None, Some(c), k) => ClientAuth::Certificate {
                key_file: k.unwrap_or_else(|| c.clone()),
                cert_file: c,
            },
            (None, None, None) => ClientAuth::None,
        };
        let grant = match refresh {
            Some(f) => Grant::RefreshToken(f),
            None if client_auth == ClientAuth::None => {
                return err(format!(
                    "no credential; set {} (client secret), {} (certificate with its key), or {} (a signed-in mailbox; postern oauth2 login {user} writes it)",
                    self.name(SECRET),
                    self.name(CERT),
                    self.name(REFRESH)
                ));
            }
            None => Grant::ClientCredentials,
        };
        Ok(Account {
            user: user.to_string(),
            token_endpoint: endpoint,
            client_id,
            scope,
            client_auth,
            grant,
            table,
        })
    }
}

/// Checks a token endpoint URL: https, or plain http only when the host is
/// a loopback address (127.0.0.0/8, ::1, localhost); no user name or
/// password in it.
///
/// # Errors
/// Why the URL is refused.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains white space".into());
    }
    let lower = url.to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err("expected an https:// URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("the URL must not contain a user name or password".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err("unterminated [IPv6 address]".into());
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("expected :port after the [IPv6 address]")?,
            ),
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("[{h}] is not an IPv6 address"));
        }
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|n| n > 0)
    {
        return Err(format!("bad port \"{p}\""));
    }
    if !https && !is_loopback(host) {
        return Err(
            "plain http is allowed only on a loopback address (127.0.0.1, ::1, localhost); use https"
                .into(),
        );
    }
    Ok(())
}

/// True for `localhost`, 127.0.0.0/8 and ::1.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Account {
    /// The settings for SASL user `user`: main.cf's `smtp_oauth2_*`
    /// parameters with the user's `smtp_oauth2_account_maps` entry applied.
    /// Opens the tables each time; a daemon keeps an [`Accounts`] instead.
    ///
    /// # Errors
    /// A table cannot be opened or has a bad entry for `user`; the settings
    /// give no usable credential or endpoint. The message names the
    /// parameter or table entry to fix.
    pub fn for_user(cfg: &conf::Config, user: &str) -> Result<Account, OAuthError> {
        Accounts::open(cfg)?.get(user)
    }

    /// True when the endpoint is on this machine (tests, local proxies):
    /// then no HTTP proxy is used.
    pub fn endpoint_is_loopback(&self) -> bool {
        let rest = self
            .token_endpoint
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or("");
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        is_loopback(host)
    }

    /// The device authorization endpoint: the token endpoint with its last
    /// path segment `token` replaced by `devicecode` (Entra ID's layout).
    ///
    /// # Errors
    /// The token endpoint's path does not end in `/token`.
    pub fn device_code_endpoint(&self) -> Result<String, OAuthError> {
        let url = &self.token_endpoint;
        let cut = url.find(['?', '#']).unwrap_or(url.len());
        let (path, tail) = url.split_at(cut);
        match path.strip_suffix("/token") {
            Some(base) => Ok(format!("{base}/devicecode{tail}")),
            None => Err(OAuthError::config(
                &self.user,
                format!(
                    "cannot derive the device code endpoint from {url}: its path does not end in /token"
                ),
            )),
        }
    }

    /// The account's cache name: hex SHA-256 of
    /// `endpoint|client_id|scope|user` (no secret goes into it).
    pub fn cache_key(&self) -> String {
        let text = format!(
            "{}|{}|{}|{}",
            self.token_endpoint, self.client_id, self.scope, self.user
        );
        hex(&openssl::sha::sha256(text.as_bytes()))
    }

    /// The grant in words, with its files, e.g. `client credentials with
    /// the client secret in /etc/postern/oauth2_secret`.
    pub fn describe_grant(&self) -> String {
        let auth = match &self.client_auth {
            ClientAuth::None => String::new(),
            ClientAuth::Secret(f) => format!("the client secret in {}", f.display()),
            ClientAuth::Certificate {
                cert_file,
                key_file,
            } if cert_file == key_file => {
                format!(
                    "a certificate assertion signed with {}",
                    cert_file.display()
                )
            }
            ClientAuth::Certificate {
                cert_file,
                key_file,
            } => format!(
                "a certificate assertion ({} signed with {})",
                cert_file.display(),
                key_file.display()
            ),
        };
        match &self.grant {
            Grant::ClientCredentials => format!("client credentials with {auth}"),
            Grant::RefreshToken(f) if auth.is_empty() => {
                format!("refresh token in {}", f.display())
            }
            Grant::RefreshToken(f) => format!("refresh token in {} with {auth}", f.display()),
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `smtp_oauth2_account_maps` opened once, with main.cf's settings: hands
/// out [`Account`]s without reading the tables again.
#[derive(Debug)]
pub struct Accounts {
    base: Settings,
    tables: Vec<(String, Maps)>,
}

impl Accounts {
    /// Opens the tables of `smtp_oauth2_account_maps`.
    ///
    /// # Errors
    /// A table cannot be opened (every problem is listed).
    pub fn open(cfg: &conf::Config) -> Result<Accounts, OAuthError> {
        let origin = cfg
            .resolver
            .raw("smtp_oauth2_account_maps")
            .map(|(_, o)| o)
            .unwrap_or_default();
        let mut tables = Vec::new();
        let mut errors = Vec::new();
        for spec in &cfg.smtp_oauth2_account_maps {
            match Maps::open(std::slice::from_ref(spec), &origin) {
                Ok(m) => tables.push((spec.clone(), m)),
                Err(e) => errors.extend(e.iter().map(|e| e.to_string())),
            }
        }
        if !errors.is_empty() {
            return Err(OAuthError::config(
                "every account",
                format!("smtp_oauth2_account_maps: {}", errors.join("; ")),
            ));
        }
        Ok(Accounts {
            base: Settings::from_config(cfg),
            tables,
        })
    }

    /// The settings for SASL user `user` (see [`Account::for_user`]).
    ///
    /// # Errors
    /// As [`Account::for_user`].
    pub fn get(&self, user: &str) -> Result<Account, OAuthError> {
        let mut s = self.base.clone();
        let mut table = None;
        for (spec, maps) in &self.tables {
            let found = maps
                .find_address(user, &AddrSearch::default())
                .map_err(|e| OAuthError::config(user, format!("smtp_oauth2_account_maps: {e}")))?;
            if let Some((value, key)) = found {
                let entry = format!("smtp_oauth2_account_maps table {spec} entry {key}");
                let pairs = parse_overrides(&value)
                    .map_err(|e| OAuthError::config(user, format!("{entry}: {e}")))?;
                s.apply(&pairs, &entry);
                table = Some(format!("{spec} ({key})"));
                break;
            }
        }
        s.into_account(user, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(main_cf: &str) -> (tempfile::TempDir, conf::Config) {
        let dir = tempfile::tempdir().unwrap();
        let text = main_cf.replace("DIR", &dir.path().display().to_string());
        std::fs::write(dir.path().join("main.cf"), text).unwrap();
        let c = conf::load(dir.path(), &[]).unwrap();
        (dir, c)
    }

    const BASE: &str = "smtp_oauth2_token_endpoint = https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token
smtp_oauth2_client_id = 11111111-2222-3333-4444-555555555555
smtp_oauth2_client_secret_file = /etc/postern/oauth2_secret
";

    #[test]
    fn main_cf_settings() {
        let (_d, c) = cfg(BASE);
        let a = Account::for_user(&c, "scanner@contoso.com").unwrap();
        assert_eq!(a.client_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(a.scope, "https://outlook.office365.com/.default");
        assert_eq!(
            a.client_auth,
            ClientAuth::Secret("/etc/postern/oauth2_secret".into())
        );
        assert_eq!(a.grant, Grant::ClientCredentials);
        assert_eq!(a.table, None);
        assert_eq!(
            a.device_code_endpoint().unwrap(),
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode"
        );
        assert_eq!(a.cache_key().len(), 64);
        let b = Account::for_user(&c, "other@contoso.com").unwrap();
        assert_ne!(a.cache_key(), b.cache_key());
        assert!(
            a.describe_grant()
                .contains("client secret in /etc/postern/oauth2_secret")
        );
    }

    #[test]
    fn certificate_key_defaults_to_the_certificate_file() {
        let (_d, c) = cfg(
            "smtp_oauth2_token_endpoint = https://login.microsoftonline.us/t/oauth2/v2.0/token
smtp_oauth2_client_id = app
smtp_oauth2_client_certificate_file = /etc/postern/app.pem
",
        );
        let a = Account::for_user(&c, "u").unwrap();
        assert_eq!(
            a.client_auth,
            ClientAuth::Certificate {
                cert_file: "/etc/postern/app.pem".into(),
                key_file: "/etc/postern/app.pem".into()
            }
        );
    }

    #[test]
    fn credential_rules() {
        let ep = "smtp_oauth2_token_endpoint = https://login.microsoftonline.com/t/oauth2/v2.0/token\nsmtp_oauth2_client_id = app\n";
        for (extra, want) in [
            ("", "no credential; set smtp_oauth2_client_secret_file"),
            (
                "smtp_oauth2_client_secret_file = /s\nsmtp_oauth2_client_certificate_file = /c\n",
                "set only one client credential",
            ),
            (
                "smtp_oauth2_client_key_file = /k\n",
                "smtp_oauth2_client_key_file is set without smtp_oauth2_client_certificate_file",
            ),
            (
                "smtp_oauth2_client_secret_file = secret.txt\n",
                "smtp_oauth2_client_secret_file must be an absolute path",
            ),
        ] {
            let (_d, c) = cfg(&format!("{ep}{extra}"));
            let e = Account::for_user(&c, "u").unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
            assert!(e.starts_with("OAuth2 settings for u: "), "{e}");
        }
        // A refresh token alone (public client), or with a secret.
        let (_d, c) = cfg(&format!("{ep}smtp_oauth2_refresh_token_file = /rt\n"));
        let a = Account::for_user(&c, "u").unwrap();
        assert_eq!(
            (a.client_auth, a.grant),
            (ClientAuth::None, Grant::RefreshToken("/rt".into()))
        );
        let (_d, c) = cfg(&format!(
            "{ep}smtp_oauth2_refresh_token_file = /rt\nsmtp_oauth2_client_secret_file = /s\n"
        ));
        let a = Account::for_user(&c, "u").unwrap();
        assert_eq!(
            (a.client_auth, a.grant),
            (
                ClientAuth::Secret("/s".into()),
                Grant::RefreshToken("/rt".into())
            )
        );
        let (_d, c) = cfg("smtp_oauth2_client_id = app\nsmtp_oauth2_client_secret_file = /s\n");
        let e = Account::for_user(&c, "u").unwrap_err().to_string();
        assert!(e.contains("smtp_oauth2_token_endpoint is empty"), "{e}");
    }

    #[test]
    fn http_only_on_loopback() {
        for ok in [
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "HTTPS://login.partner.microsoftonline.cn/t/oauth2/v2.0/token",
            "http://127.0.0.1:8080/t/oauth2/v2.0/token",
            "http://127.1.2.3/token",
            "http://[::1]:9/token",
            "http://localhost:1234/token",
            "https://[2001:db8::1]/token",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (
                "http://login.microsoftonline.com/t/token",
                "only on a loopback",
            ),
            ("http://10.0.0.1/token", "only on a loopback"),
            ("http://[2001:db8::1]/token", "only on a loopback"),
            ("http://127.0.0.1.evil.example/token", "only on a loopback"),
            (
                "http://localhost@evil.example/token",
                "user name or password",
            ),
            ("ftp://x/token", "https://"),
            ("login.microsoftonline.com/token", "https://"),
            ("https:///token", "no host"),
            ("https://x:0/token", "bad port"),
            ("https://x:99999/token", "bad port"),
            ("https://[::1/token", "unterminated"),
            ("https://x/a b", "white space"),
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let (_d, c) = cfg(
            "smtp_oauth2_token_endpoint = http://login.example.com/token\nsmtp_oauth2_client_id = a\nsmtp_oauth2_client_secret_file = /s\n",
        );
        let e = Account::for_user(&c, "u").unwrap_err().to_string();
        assert!(
            e.contains("smtp_oauth2_token_endpoint http://login.example.com/token: plain http is allowed only on a loopback address"),
            "{e}"
        );
    }

    #[test]
    fn device_code_endpoint_needs_a_token_path() {
        let (_d, c) = cfg(BASE);
        let mut a = Account::for_user(&c, "u").unwrap();
        a.token_endpoint = "http://127.0.0.1:5/t/oauth2/v2.0/token?x=1".into();
        assert_eq!(
            a.device_code_endpoint().unwrap(),
            "http://127.0.0.1:5/t/oauth2/v2.0/devicecode?x=1"
        );
        assert!(a.endpoint_is_loopback());
        a.token_endpoint = "https://idp.example/oauth/access".into();
        assert!(a.device_code_endpoint().is_err());
        assert!(!a.endpoint_is_loopback());
    }

    #[test]
    fn account_map_overrides() {
        let (dir, c) = cfg(&format!(
            "{BASE}smtp_oauth2_account_maps = texthash:DIR/accounts\n"
        ));
        std::fs::write(
            dir.path().join("accounts"),
            "ceo@contoso.com refresh_token_file=/etc/postern/ceo.rt client_secret_file= scope=\"https://outlook.office.com/SMTP.Send offline_access\"\n\
             cert@contoso.com smtp_oauth2_client_certificate_file=/etc/postern/cert.pem smtp_oauth2_client_id=22222222\n\
             @fabrikam.com token_endpoint=https://login.microsoftonline.com/fabrikam.com/oauth2/v2.0/token client_id=333\n\
             bad@contoso.com clientid=abc\n\
             worse@contoso.com client_id=a secret-value-pasted-here\n",
        )
        .unwrap();
        let ceo = Account::for_user(&c, "ceo@contoso.com").unwrap();
        assert_eq!(ceo.client_auth, ClientAuth::None);
        assert_eq!(ceo.grant, Grant::RefreshToken("/etc/postern/ceo.rt".into()));
        assert_eq!(
            ceo.scope,
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        assert!(ceo.table.as_deref().unwrap().contains("ceo@contoso.com"));

        let cert = Account::for_user(&c, "cert@contoso.com").unwrap();
        assert_eq!(cert.client_id, "22222222");
        assert_eq!(
            cert.client_auth,
            ClientAuth::Certificate {
                cert_file: "/etc/postern/cert.pem".into(),
                key_file: "/etc/postern/cert.pem".into()
            },
            "the table's certificate replaces main.cf's secret"
        );

        let fab = Account::for_user(&c, "scan@fabrikam.com").unwrap();
        assert_eq!(fab.client_id, "333");
        assert!(fab.token_endpoint.contains("fabrikam.com"));
        assert_eq!(
            fab.client_auth,
            ClientAuth::Secret("/etc/postern/oauth2_secret".into())
        );

        let plain = Account::for_user(&c, "other@contoso.com").unwrap();
        assert_eq!(plain.client_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(plain.table, None);

        let e = Account::for_user(&c, "bad@contoso.com")
            .unwrap_err()
            .to_string();
        assert!(e.contains("table texthash:"), "{e}");
        assert!(e.contains("entry bad@contoso.com"), "{e}");
        assert!(e.contains("unknown setting \"clientid\""), "{e}");
        assert!(
            e.contains("allowed: token_endpoint, client_id, client_secret_file"),
            "{e}"
        );

        let e = Account::for_user(&c, "worse@contoso.com")
            .unwrap_err()
            .to_string();
        assert!(e.contains("word 2 is not name=value"), "{e}");
        assert!(!e.contains("secret-value"), "values are never quoted: {e}");
    }

    #[test]
    fn bad_account_table() {
        let (_d, c) = cfg(&format!(
            "{BASE}smtp_oauth2_account_maps = texthash:/nonexistent/accounts\n"
        ));
        let e = Account::for_user(&c, "u").unwrap_err().to_string();
        assert!(e.contains("smtp_oauth2_account_maps"), "{e}");
    }
}

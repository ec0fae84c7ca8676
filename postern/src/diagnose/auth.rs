//! The AUTH step: the credentials the delivery agent would find, the
//! mechanism it would choose and why, for XOAUTH2 the access token from
//! the real token cache with the claims Exchange Online checks, then the
//! agent's own AUTH exchange (with its one retry on a new token after a
//! `535`). Passwords, secrets and tokens are never shown.

use super::report::{Report, Status, Step};
use super::walk::{Job, Open, dests, meaning};
use conf::Config;
use conf::nexthop::Nexthop;
use proto::Ehlo;
use proto::sasl::Secret;
use queue::credentials::PasswordMaps;
use queue::oauth2::{Accounts, Obtained, Token, TokenCache, claims};
use serde_json::{Value, json};
use smtp_client::auth::{self, Mechanism, NoMechanism, TokenError, TokenSource};
use smtp_client::settings::Settings;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One token the walk obtained, described (never the token itself).
#[derive(Debug, Clone)]
struct Fetched {
    /// Where it came from.
    source: String,
    /// Its claims, or why there is no token.
    result: Result<Claims, String>,
}

#[derive(Debug, Clone)]
struct Claims {
    lines: Vec<String>,
    problems: Vec<String>,
    data: Value,
}

/// The delivery agent's token source, recording what it hands out.
#[derive(Debug)]
struct Tokens {
    accounts: Arc<Accounts>,
    cache: Arc<TokenCache>,
    fetched: Arc<Mutex<Vec<Fetched>>>,
}

impl Tokens {
    fn fetched(&self) -> Vec<Fetched> {
        self.fetched.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl TokenSource for Tokens {
    fn token<'a>(
        &'a self,
        user: &'a str,
        rejected: Option<&'a Secret>,
    ) -> Pin<Box<dyn Future<Output = Result<Secret, TokenError>> + Send + 'a>> {
        let (accounts, cache, log) = (
            self.accounts.clone(),
            self.cache.clone(),
            self.fetched.clone(),
        );
        let user = user.to_string();
        // As the delivery agent does: only the refused value matters.
        let rejected = rejected.map(|s| Token {
            access_token: s.clone(),
            expires_at: UNIX_EPOCH,
            obtained_at: UNIX_EPOCH,
        });
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || {
                let record = |source: String, result: Result<Claims, String>| {
                    if let Ok(mut g) = log.lock() {
                        g.push(Fetched { source, result });
                    }
                };
                let account = match accounts.get(&user) {
                    Ok(a) => a,
                    Err(e) => {
                        record("the OAuth2 settings".into(), Err(e.to_string()));
                        return Err(TokenError {
                            message: e.to_string(),
                            needs_admin: true,
                        });
                    }
                };
                let endpoint = format!(
                    "the endpoint {} ({}, client id {}, scope {})",
                    account.token_endpoint,
                    account.describe_grant(),
                    account.client_id,
                    account.scope
                );
                match cache.get(&account, rejected.as_ref()) {
                    Ok((t, how)) => {
                        let source = match (how, rejected.is_some()) {
                            (_, true) => {
                                format!("fetched again after the refusal, from {endpoint}")
                            }
                            (Obtained::Endpoint, false) => format!("fetched from {endpoint}"),
                            (Obtained::CacheFile, false) => {
                                format!("from the token cache {}", cache.file(&account).display())
                            }
                            (Obtained::Memory, false) => "from memory".to_string(),
                        };
                        record(source, Ok(describe(&t, &user)));
                        Ok(t.access_token)
                    }
                    Err(e) => {
                        let message = format!("OAuth2 token for {user}: {e}");
                        record(endpoint, Err(message.clone()));
                        Err(TokenError {
                            message,
                            needs_admin: !e.is_transient(),
                        })
                    }
                }
            });
            work.await.map_err(|e| TokenError {
                message: format!("OAuth2 token request failed: {e}"),
                needs_admin: false,
            })?
        })
    }
}

/// The claims that matter, as lines and as data.
fn describe(t: &Token, user: &str) -> Claims {
    let now = SystemTime::now();
    let left = claims::seconds_until(t.expires_at, now);
    let expires = format!(
        "{} ({})",
        queue::time::rfc2822_date(t.expires_at),
        if left < 0 {
            claims::format_left(left)
        } else {
            format!("in {}", claims::format_left(left))
        }
    );
    let Some(s) = queue::oauth2::summarize(t.access_token.expose(), now) else {
        return Claims {
            lines: vec![
                "claims: none (the token is not a JWT)".into(),
                format!("expires: {expires}"),
            ],
            problems: Vec::new(),
            data: json!({ "jwt": false, "expires_in": left }),
        };
    };
    let c = &s.claims;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    let mut lines = vec![format!("aud: {}", dash(&c.aud))];
    if c.scp.is_empty() {
        lines.push(format!("roles: {}", list(&c.roles)));
    } else {
        lines.push(format!("scp: {}", list(&c.scp)));
    }
    lines.push(format!("upn: {}", dash(&c.upn)));
    lines.push(format!("appid: {}", dash(&c.app_id)));
    lines.push(format!("tid: {}", dash(&c.tenant)));
    lines.push(format!("expires: {expires}"));
    let problems = c.problems(user);
    let exp = c
        .expires_at
        .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Claims {
        lines,
        data: json!({
            "jwt": true,
            "aud": c.aud,
            "roles": c.roles,
            "scp": c.scp,
            "upn": c.upn,
            "appid": c.app_id,
            "tid": c.tenant,
            "exp": exp,
            "expires_in": left,
            "problems": problems,
        }),
        problems,
    }
}

/// The OAuth2 token source, when OAuth2 is configured; `Err` when its
/// settings cannot be used.
fn token_source(cfg: &Config) -> Option<Result<Tokens, String>> {
    if !smtp_client::oauth::configured(cfg) {
        return None;
    }
    Some(
        Accounts::open(cfg)
            .map(|a| Tokens {
                accounts: Arc::new(a),
                cache: Arc::new(TokenCache::new(cfg)),
                fetched: Arc::default(),
            })
            .map_err(|e| e.to_string()),
    )
}

/// Runs the AUTH step. `Some(mailbox)` to go on (the SASL user, `None`
/// without AUTH); `None` when the step failed.
pub async fn step(
    cfg: &Config,
    s: &Settings,
    nexthop: &Nexthop,
    job: &Job<'_>,
    o: &mut Open,
    ehlo: Option<&Ehlo>,
    r: &mut Report,
) -> Option<Option<String>> {
    if !s.sasl.enable {
        r.push(Step::new(
            "auth",
            Status::Skip,
            "smtp_sasl_auth_enable = no: postern does not sign in",
        ));
        return Some(None);
    }
    let keys = dests(job.nexthop, nexthop);
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let passwords = PasswordMaps::open(cfg);
    let looked = format!(
        "{}{}, {}",
        if s.sasl.sender_dependent {
            format!("{}, ", job.sender)
        } else {
            String::new()
        },
        o.chat.peer.name,
        keys.join(", ")
    );
    let creds = match passwords.lookup(
        s.sasl.sender_dependent,
        job.sender,
        Some(&o.chat.peer.name),
        &key_refs,
    ) {
        Ok(Some(c)) => c,
        Ok(None) => {
            r.push(
                Step::new("auth", Status::Warn, "no credentials for this server in smtp_sasl_password_maps: postern sends without signing in")
                    .line(format!("looked up: {looked}"))
                    .explain(format!("Add a line for the next hop to the table, e.g. \"{} mailbox@example.com:password\" (or \"mailbox@example.com:xoauth2\" with OAuth2), then run postmap.", keys[0])),
            );
            return Some(None);
        }
        Err(e) => {
            r.push(
                Step::fail("auth", format!("smtp_sasl_password_maps lookup failed: {e}"))
                    .explain("postern cannot read the password table. Fix it (postmap, permissions); it is readable by root and mail_owner only, so run postern diagnose as root."),
            );
            return None;
        }
    };
    let tls_active = o.tls.is_some();
    let Some(ehlo) = ehlo.filter(|e| e.has("AUTH")) else {
        let fix = if tls_active {
            "This server offers no AUTH: postern sends without signing in, and a server that needs a sign-in refuses MAIL FROM (530 5.7.57)."
        } else {
            "The server offers no AUTH before TLS (Exchange Online offers it only after STARTTLS): set smtp_tls_security_level = encrypt (or verify)."
        };
        r.push(
            Step::new(
                "auth",
                Status::Warn,
                format!(
                    "the server offers no AUTH{}; postern sends without signing in as {}",
                    if tls_active { "" } else { " without TLS" },
                    creds.user
                ),
            )
            .explain(fix),
        );
        return Some(None);
    };
    let offered = ehlo.auth_mechanisms();
    let tokens = token_source(cfg);
    let usable = tokens.as_ref().and_then(|t| t.as_ref().ok());
    let filter = if s.sasl.mechanism_filter.is_empty() {
        "(empty: any)".to_string()
    } else {
        s.sasl.mechanism_filter.join(", ").to_ascii_lowercase()
    };
    let oauth_note = match &tokens {
        None => "OAuth2: not configured (no smtp_oauth2_token_endpoint)".to_string(),
        Some(Ok(_)) => "OAuth2: configured".to_string(),
        Some(Err(e)) => format!("OAuth2: configured but unusable: {e}"),
    };
    let options_name = if tls_active {
        "smtp_sasl_tls_security_options"
    } else {
        "smtp_sasl_security_options"
    };
    let options = if tls_active {
        &s.sasl.tls_security_options
    } else {
        &s.sasl.security_options
    };
    let why = vec![
        format!("server offers: {}", offered.join(" ")),
        format!("smtp_sasl_mechanism_filter = {filter}"),
        oauth_note,
        format!("{options_name} = {}", options.join(", ")),
    ];
    let mech = match auth::choose(&offered, &s.sasl, tls_active, usable.is_some()) {
        Ok(m) => m,
        Err(no) => {
            let fix = match no {
                NoMechanism::NoneCompatible => "Nothing is in common between what the server offers, smtp_sasl_mechanism_filter and what postern can use (XOAUTH2 needs OAuth2 configured). For Microsoft 365: smtp_sasl_mechanism_filter = xoauth2 with the smtp_oauth2_* settings (or login with a password while Microsoft still allows it).".to_string(),
                NoMechanism::Forbidden => format!("{options_name} forbids every mechanism postern has (they all send a password or a token): {}", if tls_active { "remove noplaintext from smtp_sasl_tls_security_options." } else { "use TLS (smtp_tls_security_level = encrypt) so smtp_sasl_tls_security_options apply." }),
            };
            let mut step = Step::fail(
                "auth",
                auth::no_mechanism_outcome(no, &o.chat.peer.namaddr()).reason,
            );
            step.detail = why;
            r.push(step.explain(fix));
            return None;
        }
    };
    let mut step = Step::ok("auth", "");
    step.detail.push(format!(
        "mechanism: {} (postern takes XOAUTH2 when OAuth2 is configured, then PLAIN, then LOGIN, among those the server offers and the filter allows)",
        mech.name()
    ));
    step.detail.extend(why);
    step.detail.push(match mech {
        Mechanism::Xoauth2 => format!(
            "user: {} (from smtp_sasl_password_maps; its password field is not used with XOAUTH2)",
            creds.user
        ),
        _ => format!(
            "user: {} (from smtp_sasl_password_maps; the password is not shown)",
            creds.user
        ),
    });
    let source: Option<&dyn TokenSource> = match (mech, usable) {
        (Mechanism::Xoauth2, Some(t)) => Some(t),
        _ => None,
    };
    let result = auth::authenticate(&mut o.chat, mech, &creds, source, s.timeouts.helo).await;
    let fetched = usable.map(Tokens::fetched).unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    let mut token_data: Vec<Value> = Vec::new();
    let mut token_failed: Option<String> = None;
    for (i, f) in fetched.iter().enumerate() {
        step.detail.push(format!(
            "{} token: {}",
            if i == 0 { "access" } else { "second" },
            f.source
        ));
        match &f.result {
            Ok(c) => {
                step.detail.extend(c.lines.iter().map(|l| format!("  {l}")));
                for p in &c.problems {
                    step.detail.push(format!("  problem: {p}"));
                    if !problems.contains(p) {
                        problems.push(p.clone());
                    }
                }
                token_data.push(c.data.clone());
            }
            Err(e) => token_failed = Some(e.clone()),
        }
    }
    if !token_data.is_empty() {
        step = step
            .data(json!({ "mechanism": mech.name(), "user": creds.user, "tokens": token_data }));
    } else {
        step = step.data(json!({ "mechanism": mech.name(), "user": creds.user }));
    }
    if fetched.len() > 1 {
        step.detail.push("the server refused the first token; like the delivery agent, postern fetched a new one and tried once more".into());
    }
    match result {
        Ok(()) => {
            step.summary = format!("signed in as {} with {}", creds.user, mech.name());
            if !problems.is_empty() {
                step.status = Status::Warn;
                step = step.explain("Exchange Online accepted the token, but its claims look wrong (see above); check the app registration before it stops working.");
            }
            r.push(step);
            Some(Some(creds.user))
        }
        Err(f) => {
            step.status = Status::Fail;
            if let Some(e) = token_failed.filter(|_| f.outcome.diagnostic.is_none()) {
                step.summary = format!("no OAuth2 access token for {}", creds.user);
                step = step.line(e).explain(
                    "The token endpoint refused or could not be reached (the text above says which and what to change). postern oauth2 token USER shows the same request on its own.",
                );
                r.push(step);
                return None;
            }
            match &f.outcome.diagnostic {
                Some(said) => {
                    o.alive = !said.starts_with("421");
                    step.summary = format!("{} as {} refused", mech.name(), creds.user);
                    let mut fix = meaning(said, "AUTH");
                    if !problems.is_empty() {
                        fix.push_str(" What the token says: ");
                        fix.push_str(&problems.join("; "));
                        fix.push('.');
                    }
                    step = step.reply(said.clone()).explain(fix);
                }
                None => {
                    o.alive = false;
                    step.summary = f.outcome.reason.clone();
                    step = step.explain("The connection broke during AUTH; the server may drop clients it distrusts.");
                }
            }
            r.push(step);
            None
        }
    }
}

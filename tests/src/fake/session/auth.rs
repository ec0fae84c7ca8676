//! AUTH: LOGIN, PLAIN and XOAUTH2 exchanges and the checks of §7.

use std::time::SystemTime;

use proto::{Reply, sasl};
use serde_json::Value;

use super::{Flow, Session, flow};
use crate::fake::config::{AcsConfig, Profile};
use crate::fake::oauth::{self, TokenError};
use crate::fake::record::Xoauth2Attempt;
use crate::fake::replies;
use crate::fake::script::Phase;
use crate::fake::token;

/// The credentials a mechanism collected.
struct Creds {
    user: String,
    /// `None`: accepted; else the refusal.
    verdict: Option<Reply>,
    /// XOAUTH2: the token's `appid`.
    app: Option<String>,
    /// XOAUTH2: why the token was refused.
    reason: Option<String>,
}

impl Session {
    /// Reads one SASL response line; `None` at end of stream.
    async fn sasl_line(&mut self) -> std::io::Result<Option<String>> {
        let line = self.next_line().await?;
        if line.is_some() {
            self.shared.transcript(self.id, "C: <sasl>".into());
        }
        Ok(line.map(|l| String::from_utf8_lossy(&l.text).into_owned()))
    }

    pub(super) async fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> std::io::Result<Flow> {
        let cfg = &self.shared.cfg;
        if self.helo.is_none() {
            return self.simple(replies::bad_sequence("Send hello first"));
        }
        if self.auth_user.is_some() {
            return self.simple(replies::bad_sequence("Already authenticated"));
        }
        if self.tx.is_some() {
            return self.simple(replies::bad_sequence("Mail transaction in progress"));
        }
        self.shared.auth_attempt();
        let offered = (self.tls.is_some() || !cfg.auth_requires_tls)
            && cfg.auth_mechanisms.iter().any(|m| m == mechanism);
        if !offered {
            self.shared.auth_failed();
            return self.simple(replies::auth_unrecognized());
        }
        if let Some(v) = self.tls
            && v < cfg.auth_tls_floor
        {
            self.shared.auth_failed();
            self.push_reply(&replies::tls_too_old(cfg));
            return Ok(Flow::Close);
        }
        // Collect the credentials: Ok(creds) or a protocol error.
        let creds = match mechanism {
            "LOGIN" => self.login(initial).await?,
            "PLAIN" => self.plain(initial).await?,
            "XOAUTH2" => self.xoauth2(initial).await?,
            _ => Err(replies::auth_unrecognized()),
        };
        let creds = match creds {
            Ok(c) => c,
            Err(reply) => {
                self.shared.auth_failed();
                if reply.code == 0 {
                    return Ok(Flow::Close); // end of stream
                }
                return self.simple(reply);
            }
        };
        let normal = creds.verdict.clone().unwrap_or_else(replies::auth_ok);
        let who = creds.user.clone();
        let sent = self
            .respond(Phase::Auth, normal, |e| e.auth_user = Some(who))
            .await?;
        let ok = sent.ok();
        if mechanism == "XOAUTH2" {
            let reply = match &sent {
                super::Sent::Reply { reply, .. } => Some(reply.one_line()),
                super::Sent::Silent => None,
            };
            self.shared.xoauth2_attempt(Xoauth2Attempt {
                session: self.id,
                user: creds.user.clone(),
                app: creds.app.clone(),
                ok,
                reason: if ok { None } else { creds.reason.clone() },
                reply,
                at: SystemTime::now(),
            });
        }
        if ok {
            self.shared
                .auth_succeeded(self.id, &creds.user, mechanism, creds.app.as_deref());
            self.auth_user = Some(creds.user);
            self.auth_app = creds.app;
        } else {
            self.shared.auth_failed();
        }
        flow(sent)
    }

    /// Reads a SASL response, sending `challenge` first unless `initial`
    /// was given. `Err` with code 0 means end of stream.
    async fn response(
        &mut self,
        initial: Option<String>,
        challenge: &str,
    ) -> std::io::Result<Result<String, Reply>> {
        if let Some(i) = initial {
            return Ok(Ok(i));
        }
        self.push_challenge(challenge);
        Ok(match self.sasl_line().await? {
            Some(l) => Ok(l),
            None => Err(Reply::new(0, None, "")),
        })
    }

    fn sasl_error(e: sasl::SaslError) -> Reply {
        match e {
            sasl::SaslError::Cancelled => replies::auth_aborted(),
            _ => replies::cannot_decode(),
        }
    }

    /// `None` when the password matches, else the `535`.
    fn check_password(&self, user: &str, pass: &str) -> Option<Reply> {
        let ok = self
            .shared
            .read(|g| g.users.get(user).is_some_and(|p| p == pass));
        (!ok).then(|| replies::auth_bad_credentials(&self.shared.cfg))
    }

    async fn login(&mut self, initial: Option<String>) -> std::io::Result<Result<Creds, Reply>> {
        let user = match self.response(initial, sasl::LOGIN_USER_CHALLENGE).await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let user = match sasl::decode_login_step(&user) {
            Ok(u) => u,
            Err(e) => return Ok(Err(Self::sasl_error(e))),
        };
        let pass = match self.response(None, sasl::LOGIN_PASS_CHALLENGE).await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let pass = match sasl::decode_login_step(&pass) {
            Ok(p) => p,
            Err(e) => return Ok(Err(Self::sasl_error(e))),
        };
        let verdict = match (&self.shared.cfg.profile, &self.shared.cfg.acs) {
            (Profile::Acs, Some(acs)) => self.acs_check(acs.clone(), &user, &pass).await,
            (Profile::Acs, None) => Some(replies::auth_token_refused(&self.shared.cfg)),
            _ => self.check_password(&user, &pass),
        };
        Ok(Ok(Creds {
            user,
            verdict,
            app: None,
            reason: None,
        }))
    }

    /// ACS: `<resource>.<app id>.<tenant>` (or `|`-separated) and the app's
    /// client secret, exchanged at the token endpoint as ACS does.
    async fn acs_check(&self, acs: AcsConfig, user: &str, pass: &str) -> Option<Reply> {
        let cfg = &self.shared.cfg;
        let parts: Vec<&str> = if user.contains('|') {
            user.split('|').collect()
        } else {
            user.split('.').collect()
        };
        let [resource, app, tenant] = parts[..] else {
            return Some(replies::auth_token_refused(cfg));
        };
        if !resource.eq_ignore_ascii_case(&acs.resource) || app.is_empty() || tenant.is_empty() {
            return Some(replies::auth_token_refused(cfg));
        }
        let url = format!("{}/{tenant}/oauth2/v2.0/token", acs.token_base);
        let (app, pass) = (app.to_string(), pass.to_string());
        let answer = tokio::task::spawn_blocking(move || {
            token::post_form(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app),
                    ("client_secret", &pass),
                    ("scope", &acs.scope),
                ],
            )
        })
        .await;
        match answer {
            Ok(Ok(a)) if a.status == 200 && a.str("access_token").is_some() => None,
            Ok(Ok(a)) if (400..500).contains(&a.status) => Some(replies::auth_token_refused(cfg)),
            _ => Some(replies::temp_auth_failure(cfg)),
        }
    }

    async fn plain(&mut self, initial: Option<String>) -> std::io::Result<Result<Creds, Reply>> {
        let resp = match self.response(initial, "").await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        match sasl::decode_plain(&resp) {
            Ok((_authz, user, pass)) => {
                let verdict = self.check_password(&user, pass.expose());
                Ok(Ok(Creds {
                    user,
                    verdict,
                    app: None,
                    reason: None,
                }))
            }
            Err(e) => Ok(Err(Self::sasl_error(e))),
        }
    }

    /// XOAUTH2, initial response or after `334 ` (§2, §7).
    async fn xoauth2(&mut self, initial: Option<String>) -> std::io::Result<Result<Creds, Reply>> {
        let resp = match self.response(initial, "").await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let cfg = &self.shared.cfg;
        let (user, token) = match oauth::parse_blob(&resp) {
            Ok(ut) => ut,
            Err(None) => return Ok(Err(replies::auth_aborted())),
            Err(Some(e)) => {
                let reply = replies::xoauth2_refused(cfg, &e);
                self.shared.xoauth2_attempt(Xoauth2Attempt {
                    session: self.id,
                    user: String::new(),
                    app: None,
                    ok: false,
                    reason: Some(e.to_string()),
                    reply: Some(reply.one_line()),
                    at: SystemTime::now(),
                });
                return Ok(Err(reply));
            }
        };
        let (check, policy) = self.shared.read(|g| (g.xoauth2.clone(), g.oauth.clone()));
        let result = match (check, policy) {
            (Some(f), _) => f(&user, &token),
            (None, Some(p)) => p.check(&user, &token),
            (None, None) => Err(TokenError::Refused(replies::auth_token_refused(cfg))),
        };
        Ok(Ok(match result {
            Ok(claims) => Creds {
                user,
                verdict: None,
                app: claims
                    .get("appid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                reason: None,
            },
            Err(e) => Creds {
                user,
                verdict: Some(replies::xoauth2_refused(cfg, &e)),
                app: None,
                reason: Some(e.to_string()),
            },
        }))
    }
}

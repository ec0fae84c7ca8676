//! AUTH: LOGIN, PLAIN and XOAUTH2 exchanges and the checks of §7.

use proto::{Reply, sasl};

use super::{Flow, Session, flow};
use crate::fake::replies;
use crate::fake::script::Phase;

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
            self.shared.auth_result(self.id, None);
            return self.simple(replies::auth_unrecognized());
        }
        if let Some(v) = self.tls
            && v < cfg.auth_tls_floor
        {
            self.shared.auth_result(self.id, None);
            self.push_reply(&replies::tls_too_old(cfg));
            return Ok(Flow::Close);
        }
        // Collect the credentials: Ok((user, verdict)) or a protocol error.
        let creds = match mechanism {
            "LOGIN" => self.login(initial).await?,
            "PLAIN" => self.plain(initial).await?,
            "XOAUTH2" => self.xoauth2(initial).await?,
            _ => Err(replies::auth_unrecognized()),
        };
        let (user, verdict) = match creds {
            Ok(c) => c,
            Err(reply) => {
                self.shared.auth_result(self.id, None);
                if reply.code == 0 {
                    return Ok(Flow::Close); // end of stream
                }
                return self.simple(reply);
            }
        };
        let normal = verdict.unwrap_or_else(replies::auth_ok);
        let who = user.clone();
        let sent = self
            .respond(Phase::Auth, normal, |e| e.auth_user = Some(who))
            .await?;
        if sent.ok() {
            self.shared.auth_result(self.id, Some(&user));
            self.auth_user = Some(user);
        } else {
            self.shared.auth_result(self.id, None);
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

    /// `(user, None)` when the password matches, else `(user, Some(535))`.
    fn check_password(&self, user: &str, pass: &str) -> Option<Reply> {
        let ok = self
            .shared
            .read(|g| g.users.get(user).is_some_and(|p| p == pass));
        (!ok).then(|| replies::auth_bad_credentials(&self.shared.cfg))
    }

    async fn login(
        &mut self,
        initial: Option<String>,
    ) -> std::io::Result<Result<(String, Option<Reply>), Reply>> {
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
        let verdict = self.check_password(&user, &pass);
        Ok(Ok((user, verdict)))
    }

    async fn plain(
        &mut self,
        initial: Option<String>,
    ) -> std::io::Result<Result<(String, Option<Reply>), Reply>> {
        let resp = match self.response(initial, "").await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        match sasl::decode_plain(&resp) {
            Ok((_authz, user, pass)) => {
                let verdict = self.check_password(&user, pass.expose());
                Ok(Ok((user, verdict)))
            }
            Err(e) => Ok(Err(Self::sasl_error(e))),
        }
    }

    async fn xoauth2(
        &mut self,
        initial: Option<String>,
    ) -> std::io::Result<Result<(String, Option<Reply>), Reply>> {
        let resp = match self.response(initial, "").await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let cfg = &self.shared.cfg;
        match sasl::decode_xoauth2(&resp) {
            Ok((user, token)) => {
                let check = self.shared.read(|g| g.xoauth2.clone());
                let verdict = match check {
                    Some(f) => f(&user, token.expose()).err(),
                    None => Some(replies::auth_token_refused(cfg)),
                };
                Ok(Ok((user, verdict)))
            }
            Err(sasl::SaslError::Cancelled) => Ok(Err(replies::auth_aborted())),
            Err(_) => Ok(Err(replies::auth_token_refused(cfg))),
        }
    }
}

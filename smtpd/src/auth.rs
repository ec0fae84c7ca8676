//! AUTH PLAIN and LOGIN against postern's own user file, offered only
//! inside TLS unless `smtpd_tls_auth_only = no`. Failed attempts are
//! counted per client; past `smtpd_client_auth_failure_limit` the client is
//! refused further AUTH for the rest of the time unit. Passwords never
//! reach the log.

use crate::commands::Next;
use crate::session::{End, Session};
use proto::sasl::{self, Secret};
use queue::log;

/// The mechanisms to advertise in EHLO, if any.
pub fn offered(s: &Session) -> Option<String> {
    let cfg = &s.shared.cfg;
    if !cfg.smtpd_sasl_auth_enable || s.shared.auth.is_none() || s.sasl.is_some() {
        return None;
    }
    // At the encrypt level nothing, AUTH included, happens before TLS.
    if s.tls.is_none() && (cfg.smtpd_tls_auth_only || cfg.smtpd_tls_security_level == "encrypt") {
        return None;
    }
    let opts = if s.tls.is_some() {
        &cfg.smtpd_sasl_tls_security_options
    } else {
        &cfg.smtpd_sasl_security_options
    };
    if opts.iter().any(|o| o == "noplaintext") {
        return None;
    }
    Some("PLAIN LOGIN".into())
}

fn fail(s: &mut Session, code: u16, enh: &str, text: &str) {
    s.count("auth", false);
    s.reply(code, enh, text);
}

/// Reads one SASL response line; `None` when the client cancelled.
/// The client has used up its failed AUTH attempts: log it, answer 421
/// and close.
fn refuse_blocked(s: &mut Session, myhostname: &str) -> Next {
    log::warning(&format!(
        "{}: too many failed AUTH attempts; AUTH refused",
        s.peer.namaddr()
    ));
    fail(
        s,
        421,
        "4.7.0",
        &format!("{myhostname} Error: too many failed authentication attempts"),
    );
    Next::Close
}

async fn response(s: &mut Session, challenge: &str) -> Result<Option<String>, End> {
    s.reply(334, "", challenge);
    let line = match s.next_line().await? {
        Ok(l) => l,
        Err(()) => return Ok(None),
    };
    let text = String::from_utf8_lossy(&line.text).trim().to_string();
    if sasl::is_cancel(&text) {
        return Ok(None);
    }
    Ok(Some(text))
}

/// AUTH mechanism [initial-response].
pub async fn auth(s: &mut Session, mechanism: &str, initial: Option<String>) -> Result<Next, End> {
    let mech = mechanism.to_ascii_uppercase();
    let shared = s.shared.clone();
    let cfg = &shared.cfg;
    if !cfg.smtpd_sasl_auth_enable || s.shared.auth.is_none() {
        fail(s, 503, "5.5.1", "Error: authentication not enabled");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if s.tls.is_none() && cfg.smtpd_tls_auth_only {
        fail(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if s.sasl.is_some() {
        fail(s, 503, "5.5.1", "Error: already authenticated");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if s.tx.is_some() {
        fail(s, 503, "5.5.1", "Error: MAIL transaction in progress");
        s.error().await?;
        return Ok(Next::Continue);
    }
    if s.shared.failures.blocked(s.peer.addr) {
        return Ok(refuse_blocked(s, &cfg.myhostname));
    }
    let rate = if s.shared.limit_exceptions.matches(s.peer.addr, false) {
        Ok(())
    } else {
        s.shared.anvil.auth(s.peer.addr)
    };
    if let Err(rate) = rate {
        log::warning(&format!(
            "AUTH command rate limit exceeded: {rate} from {} for service {}",
            s.peer.namaddr(),
            s.shared.service
        ));
        fail(
            s,
            450,
            "4.7.1",
            &format!("Error: too many AUTH commands from {}", s.peer.addr),
        );
        s.error().await?;
        return Ok(Next::Continue);
    }
    if offered(s).is_none() {
        fail(
            s,
            535,
            "5.7.8",
            "Error: authentication failed: no mechanism available",
        );
        s.error().await?;
        return Ok(Next::Continue);
    }
    // "=" is an empty initial response (RFC 4954).
    let initial = initial.map(|i| if i == "=" { String::new() } else { i });
    let creds: Option<(String, Secret)> = match mech.as_str() {
        "PLAIN" => {
            let data = match initial {
                Some(i) => Some(i),
                None => response(s, "").await?,
            };
            let Some(data) = data else {
                fail(s, 501, "5.7.0", "Authentication aborted");
                return Ok(Next::Continue);
            };
            match sasl::decode_plain(&data) {
                Ok((authzid, user, pass)) if authzid.is_empty() || authzid == user => {
                    Some((user, pass))
                }
                Ok(_) => None,
                Err(_) => {
                    fail(s, 501, "5.5.2", "Cannot decode response");
                    s.error().await?;
                    return Ok(Next::Continue);
                }
            }
        }
        "LOGIN" => {
            let user_b64 = match initial {
                Some(i) => Some(i),
                None => response(s, sasl::LOGIN_USER_CHALLENGE).await?,
            };
            let Some(user_b64) = user_b64 else {
                fail(s, 501, "5.7.0", "Authentication aborted");
                return Ok(Next::Continue);
            };
            let Ok(user) = sasl::decode_login_step(&user_b64) else {
                fail(s, 501, "5.5.2", "Cannot decode response");
                s.error().await?;
                return Ok(Next::Continue);
            };
            let Some(pass_b64) = response(s, sasl::LOGIN_PASS_CHALLENGE).await? else {
                fail(s, 501, "5.7.0", "Authentication aborted");
                return Ok(Next::Continue);
            };
            let Ok(pass) = sasl::decode_login_step(&pass_b64) else {
                fail(s, 501, "5.5.2", "Cannot decode response");
                s.error().await?;
                return Ok(Next::Continue);
            };
            Some((user, Secret::from(pass)))
        }
        _ => {
            fail(
                s,
                535,
                "5.7.8",
                "Error: authentication failed: Invalid authentication mechanism",
            );
            s.error().await?;
            return Ok(Next::Continue);
        }
    };
    // The limit is checked again, in this client's turn, just before the
    // password is: parallel connections must not get more guesses.
    let turn = shared.failures.turn(s.peer.addr).await;
    if shared.failures.blocked(s.peer.addr) {
        drop(turn);
        return Ok(refuse_blocked(s, &cfg.myhostname));
    }
    let ok = match (&creds, &s.shared.auth) {
        (Some((user, pass)), Some(a)) => a.verify(user, pass).await,
        _ => false,
    };
    if !ok {
        shared.failures.record_failure(s.peer.addr);
    }
    drop(turn);
    if ok {
        let user = creds.map(|(u, _)| u).unwrap_or_default();
        s.sasl = Some((mech, user));
        s.count("auth", true);
        s.reply(235, "2.7.0", "Authentication successful");
    } else {
        // Postfix 3.7's smtpd_sasl_glue.c: the name the client tried, or
        // "(unavailable)"; at most 100 characters, non-printables as '?'.
        let tried = creds
            .as_ref()
            .map(|(u, _)| printable(u, 100))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "(unavailable)".into());
        log::warning(&format!(
            "{}: SASL {mech} authentication failed: authentication failure, sasl_username={tried}",
            s.peer.namaddr()
        ));
        fail(
            s,
            535,
            "5.7.8",
            "Error: authentication failed: authentication failure",
        );
        s.error().await?;
    }
    Ok(Next::Continue)
}

/// Postfix's printable(): control and non-ASCII characters become `?`;
/// at most `max` characters (`%.100s`).
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

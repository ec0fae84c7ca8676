//! Opening a session on a connected socket (Postfix's smtp_helo()): the
//! greeting, EHLO (HELO when EHLO is refused), STARTTLS or implicit TLS
//! with the checks of the security level, a second EHLO inside TLS, and
//! AUTH. The result is a [`Session`] ready for MAIL FROM, or a
//! [`SiteFailure`] that says whether another server may be tried.

use crate::auth::{self, Credentials, PasswordMaps, TokenSource};
use crate::chat::{Chat, ChatError, Stream};
use crate::outcome::{Outcome, Peer, SiteFailure};
use crate::settings::{Settings, TlsLevel};
use crate::tls::{self, TlsEngine, TlsInfo, Trust};
use proto::{Command, Ehlo, Reply, parse_ehlo};
use queue::log;
use std::time::Instant;
use tokio::net::TcpStream;

/// What opening a session needs besides the socket.
pub struct Setup<'a> {
    /// Configuration.
    pub settings: &'a Settings,
    /// TLS contexts.
    pub tls: &'a TlsEngine,
    /// `smtp_sasl_password_maps`.
    pub passwords: &'a PasswordMaps,
    /// OAuth2 tokens for XOAUTH2, when configured.
    pub tokens: Option<&'a dyn TokenSource>,
    /// The TLS level for this destination.
    pub level: TlsLevel,
    /// The next hop's host or domain (TLS name checks, SNI).
    pub nexthop_host: &'a str,
    /// The next hop as written, then canonical (password lookup keys).
    pub dests: Vec<String>,
    /// The envelope sender (sender-dependent authentication).
    pub sender: &'a str,
}

/// An open session, ready for a mail transaction.
#[derive(Debug)]
pub struct Session {
    /// Connection and reply parser.
    pub chat: Chat,
    /// The EHLO reply; `None` after HELO.
    pub ehlo: Option<Ehlo>,
    /// TLS, when active.
    pub tls: Option<TlsInfo>,
    /// When the connection was made.
    pub created: Instant,
    /// Deliveries made on it so far (the next one is `uses + 1`).
    pub uses: u32,
}

impl Session {
    /// The server announced `keyword` in its EHLO reply.
    pub fn has(&self, keyword: &str) -> bool {
        self.ehlo.as_ref().is_some_and(|e| e.has(keyword))
    }
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum SetupError {
    /// Give up on this server (and maybe on the destination).
    Failed(SiteFailure),
    /// The STARTTLS handshake failed at the `may` level: connect to the
    /// same server again without TLS.
    RetryPlain(SiteFailure),
}

fn fail_io(chat: &Chat, e: &ChatError, while_: &str) -> SetupError {
    SetupError::Failed(SiteFailure::at(&chat.peer, chat.failure(e, while_)))
}

/// `host NAME[ADDR] refused to talk to me: REPLY`; a 5xx reply is final
/// unless `soften` (smtp_skip_5xx_greeting).
fn refused(chat: &Chat, r: &Reply, soften: bool) -> SiteFailure {
    let reason = format!(
        "host {} refused to talk to me: {}",
        chat.peer.namaddr(),
        r.said_text()
    );
    let mut o = Outcome::remote(&chat.peer, r, reason);
    let permanent = r.is_permanent() && !soften;
    if soften {
        o = o.soften();
    }
    let f = SiteFailure::at(&chat.peer, o);
    if permanent { f.final_() } else { f }
}

/// Opens a session on `tcp`. With `allow_tls` false (the retry after a
/// failed opportunistic handshake) STARTTLS is not attempted.
///
/// # Errors
/// [`SetupError`] with the outcome for every recipient.
pub async fn establish(
    tcp: TcpStream,
    peer: Peer,
    setup: &Setup<'_>,
    allow_tls: bool,
) -> Result<Session, SetupError> {
    let s = setup.settings;
    let t = s.timeouts;
    let created = Instant::now();
    let mut chat = Chat::new(Stream::Plain(tcp), peer);
    // Credentials are looked up first: whether they exist decides if a
    // failed opportunistic handshake may fall back to plaintext.
    let creds = if s.sasl.enable {
        let dests: Vec<&str> = setup.dests.iter().map(String::as_str).collect();
        setup
            .passwords
            .lookup(s.sasl.sender_dependent, setup.sender, Some(&chat.peer.name), &dests)
            .map_err(|e| {
                let mut o = Outcome::local(
                    "4.3.5",
                    format!("smtp_sasl_password_maps lookup failed: {e}; fix the table and run postern reload"),
                );
                o.hold = true;
                SetupError::Failed(SiteFailure::at(&chat.peer, o).final_())
            })?
    } else {
        None
    };
    let mut tls_info = None;
    if s.tls.wrappermode {
        tls_info = Some(start_tls(&mut chat, setup, false).await?);
    }
    let greeting = chat
        .reply(t.helo)
        .await
        .map_err(|e| fail_io(&chat, &e, "receiving the initial server greeting"))?;
    if !greeting.is_positive() {
        let f = refused(&chat, &greeting, s.skip_5xx_greeting);
        chat.quit(t.quit).await;
        return Err(SetupError::Failed(f));
    }
    let esmtp = s.always_send_ehlo
        || greeting.lines.first().is_some_and(|l| {
            l.split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("ESMTP"))
        });
    let mut ehlo = hello(&mut chat, setup, esmtp).await?;
    let offered = ehlo.as_ref().is_some_and(|e| e.has("STARTTLS"));
    if tls_info.is_none() && allow_tls && setup.level >= TlsLevel::May && offered {
        match setup.tls.context(setup.level) {
            Ok(_) => {
                let r = chat
                    .command(&Command::Starttls, t.starttls)
                    .await
                    .map_err(|e| fail_io(&chat, &e, "receiving the STARTTLS response"))?;
                if r.is_positive() {
                    let plain_ok = setup.level == TlsLevel::May && creds.is_none();
                    tls_info = Some(start_tls(&mut chat, setup, plain_ok).await?);
                    ehlo = hello(&mut chat, setup, true).await?;
                } else if setup.level.required() {
                    let reason = format!(
                        "TLS is required, but host {} refused to start TLS: {}",
                        chat.peer.namaddr(),
                        r.said_text()
                    );
                    let o = Outcome::remote(&chat.peer, &r, reason).soften();
                    let peer = chat.peer.clone();
                    chat.quit(t.quit).await;
                    return Err(SetupError::Failed(SiteFailure::at(&peer, o)));
                }
            }
            Err(e) if setup.level.required() => {
                let o = Outcome::local(
                    "4.7.5",
                    format!("TLS is required, but our TLS engine is unavailable: {e}"),
                );
                let peer = chat.peer.clone();
                chat.quit(t.quit).await;
                return Err(SetupError::Failed(SiteFailure::at(&peer, o)));
            }
            Err(_) => {}
        }
    } else if tls_info.is_none() {
        if offered && setup.level == TlsLevel::None && s.tls.note_starttls_offer {
            log::info(&format!("Host offered STARTTLS: [{}]", chat.peer.name));
        }
        if setup.level.required() {
            let o = Outcome::local(
                "4.7.4",
                format!(
                    "TLS is required, but was not offered by host {}",
                    chat.peer.namaddr()
                ),
            );
            let peer = chat.peer.clone();
            chat.quit(t.quit).await;
            return Err(SetupError::Failed(SiteFailure::at(&peer, o)));
        }
    }
    if let (Some(c), Some(e)) = (&creds, &ehlo)
        && e.has("AUTH")
    {
        let offered = e.auth_mechanisms();
        if let Err(err) = login(&mut chat, setup, c, &offered, tls_info.is_some()).await {
            chat.quit(t.quit).await;
            return Err(err);
        }
    }
    Ok(Session {
        chat,
        ehlo,
        tls: tls_info,
        created,
        uses: 0,
    })
}

/// EHLO, or HELO when EHLO is refused with anything but 421 (or when
/// `esmtp` is false).
async fn hello(
    chat: &mut Chat,
    setup: &Setup<'_>,
    esmtp: bool,
) -> Result<Option<Ehlo>, SetupError> {
    let t = setup.settings.timeouts;
    let name = setup.settings.helo_name.clone();
    if esmtp {
        let r = chat
            .command(&Command::Ehlo(name.clone()), t.helo)
            .await
            .map_err(|e| fail_io(chat, &e, "performing the EHLO handshake"))?;
        if r.is_positive() {
            return Ok(Some(parse_ehlo(&r)));
        }
        if r.code == 421 {
            return Err(SetupError::Failed(refused(chat, &r, false)));
        }
    }
    let r = chat
        .command(&Command::Helo(name), t.helo)
        .await
        .map_err(|e| fail_io(chat, &e, "performing the HELO handshake"))?;
    if r.is_positive() {
        Ok(None)
    } else {
        Err(SetupError::Failed(refused(chat, &r, false)))
    }
}

/// The TLS handshake on the session's socket, then the checks of the
/// security level. `plain_ok`: a handshake failure may be retried without
/// TLS.
async fn start_tls(
    chat: &mut Chat,
    setup: &Setup<'_>,
    plain_ok: bool,
) -> Result<TlsInfo, SetupError> {
    let s = setup.settings;
    let peer = chat.peer.clone();
    let ctx = setup.tls.context(setup.level).map_err(|e| {
        SetupError::Failed(SiteFailure::at(
            &peer,
            Outcome::local(
                "4.7.5",
                format!("TLS is required, but our TLS engine is unavailable: {e}"),
            ),
        ))
    })?;
    if chat.has_unread() {
        log::warning(&format!(
            "{}: discarding plaintext the server sent before the TLS handshake",
            peer.namaddrport()
        ));
    }
    chat.discard_buffered();
    let Stream::Plain(tcp) = std::mem::replace(&mut chat.stream, Stream::Closed) else {
        return Err(SetupError::Failed(SiteFailure::at(
            &peer,
            Outcome::local(
                "4.7.5",
                "Cannot start TLS: the session is already encrypted",
            ),
        )));
    };
    let sni = tls::sni(&s.tls, &peer.name, setup.nexthop_host);
    let stream = match tls::handshake(tcp, ctx, sni.as_deref(), s.timeouts.starttls).await {
        Ok(st) => st,
        Err(e) => {
            log::info(&format!("SSL_connect error to {}: {e}", peer.namaddrport()));
            let f = SiteFailure::at(
                &peer,
                Outcome::local("4.7.5", "Cannot start TLS: handshake failure"),
            );
            return Err(if plain_ok {
                SetupError::RetryPlain(f)
            } else {
                SetupError::Failed(f)
            });
        }
    };
    let patterns = tls::match_patterns(&s.tls, setup.level, &peer.name, setup.nexthop_host);
    let info = tls::evaluate(&stream, setup.level, &patterns);
    chat.stream = Stream::Tls(Box::new(stream));
    if s.tls.loglevel >= 1 {
        log::info(&tls::summary(&peer.namaddrport(), &info, false));
    }
    if setup.level.must_match() && info.trust != Trust::Verified {
        log::info(&format!(
            "server certificate verification failed for {}: {}",
            peer.namaddrport(),
            info.problem.as_deref().unwrap_or("not verified")
        ));
        let f = SiteFailure::at(
            &peer,
            Outcome::local("4.7.5", "Server certificate not verified"),
        );
        let c = std::mem::replace(chat, Chat::new(Stream::Closed, peer));
        c.quit(s.timeouts.quit).await;
        return Err(SetupError::Failed(f));
    }
    Ok(info)
}

/// AUTH with `creds`. A 5xx refusal is final for the destination (the
/// same credentials fail everywhere, and every retry risks an account
/// lockout); a 4xx one lets the next server try.
async fn login(
    chat: &mut Chat,
    setup: &Setup<'_>,
    creds: &Credentials,
    offered: &[String],
    tls_active: bool,
) -> Result<(), SetupError> {
    let s = setup.settings;
    let mech =
        auth::choose(offered, &s.sasl, tls_active, setup.tokens.is_some()).map_err(|why| {
            SetupError::Failed(SiteFailure::at(
                &chat.peer,
                auth::no_mechanism_outcome(why, &chat.peer.namaddr()),
            ))
        })?;
    match auth::authenticate(chat, mech, creds, setup.tokens, s.timeouts.helo).await {
        Ok(()) => Ok(()),
        Err(f) => {
            let permanent = f.permanent;
            let site = SiteFailure::at(&chat.peer, f.outcome);
            Err(SetupError::Failed(if permanent {
                site.final_()
            } else {
                site
            }))
        }
    }
}

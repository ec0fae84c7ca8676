//! Cleanup: what happens to every new message before it enters the queue
//! (Postfix's cleanup(8)). Addresses are qualified (`@$myorigin`), rewritten
//! by canonical maps, and recipients expanded by virtual_alias_maps and, for
//! domains in `$mydestination`, by alias_maps. Local submissions get a
//! `Received:` header, lose their `Bcc:` headers, and get missing
//! `Message-Id:`, `Date:` and `From:` headers as Postfix adds them.
//! Recipients that cannot be delivered (an alias to a command, a forwarding
//! loop) get an `error:` route so qmgr bounces them with the reason.

use crate::file::{Envelope, Recipient};
use crate::id::QueueId;
use conf::tables::{AddrSearch, Maps};
use conf::{Config, Origin};
use proto::header;
use std::collections::HashSet;
use std::time::SystemTime;

/// Largest number of addresses one recipient may expand to.
const EXPANSION_LIMIT: usize = 1000;
/// Deepest alias nesting followed.
const RECURSION_LIMIT: usize = 100;

/// A lookup that failed (the table could not be read): the message must wait.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CleanupError(pub String);

/// Details of a local submission (sendmail, the drop folder).
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Submitting user.
    pub uid: u32,
    /// Full name for an added From: header.
    pub fullname: Option<String>,
}

/// How the header block of one message is treated.
#[derive(Debug, Clone)]
pub struct HeaderContext<'a> {
    /// A local submission (sendmail): its Received: header, Bcc removal,
    /// the user's full name.
    pub local: Option<&'a Local>,
    /// A complete Received: header to prepend (smtpd), CRLF-terminated.
    pub received: Option<String>,
    /// Rewrite header addresses with the canonical maps
    /// (local_header_rewrite_clients).
    pub rewrite_addresses: bool,
    /// Add missing Message-Id, Date and From headers
    /// (local_header_rewrite_clients, always_add_missing_headers).
    pub add_missing: bool,
    /// sendmail -t: Resent-Bcc goes too.
    pub extract: bool,
    /// The queue ID of the message.
    pub id: QueueId,
    /// Time stamp for added headers.
    pub now: SystemTime,
}

/// A rewritten header block.
#[derive(Debug, Clone)]
pub struct Headers {
    /// The header block, ending with the empty line.
    pub bytes: Vec<u8>,
    /// The Message-ID, existing or added.
    pub message_id: Option<String>,
    /// True when the Message-ID was added.
    pub message_id_added: bool,
}

/// The result of cleanup.
#[derive(Debug, Clone)]
pub struct Output {
    /// Envelope with rewritten sender and expanded recipients.
    pub env: Envelope,
    /// The message content as it will be queued.
    pub content: Vec<u8>,
    /// The Message-ID (angle brackets included), existing or added.
    pub message_id: Option<String>,
    /// True when the Message-ID was added here.
    pub message_id_added: bool,
}

/// Cleanup with its lookup tables opened once.
#[derive(Debug)]
pub struct Cleanup {
    cfg: Config,
    canonical: Maps,
    sender_canonical: Maps,
    recipient_canonical: Maps,
    virtual_alias: Maps,
    aliases: Maps,
    /// Warnings found while opening tables (e.g. a missing /etc/aliases).
    pub warnings: Vec<String>,
}

fn open_maps(specs: &[String], name: &str) -> Result<Maps, Vec<conf::Error>> {
    let origin = Origin::File {
        path: std::path::PathBuf::from("main.cf"),
        line: 0,
    };
    let _ = name;
    Maps::open(specs, &origin)
}

impl Cleanup {
    /// Opens the tables the configuration names.
    ///
    /// # Errors
    /// Tables that cannot be opened (except a missing alias file, which is a warning).
    pub fn new(cfg: &Config) -> Result<Cleanup, Vec<conf::Error>> {
        let mut warnings = Vec::new();
        let mut alias_tables = Vec::new();
        for spec in &cfg.alias_maps {
            match conf::tables::open_aliases(spec, &Origin::Default) {
                Ok(t) => alias_tables.push(t),
                Err(errs) => {
                    for e in errs {
                        warnings.push(format!(
                            "{e}; this alias table is ignored until it is fixed"
                        ));
                    }
                }
            }
        }
        let aliases = Maps::from_tables(alias_tables, &Origin::Default);
        Ok(Cleanup {
            cfg: cfg.clone(),
            canonical: open_maps(&cfg.canonical_maps, "canonical_maps")?,
            sender_canonical: open_maps(&cfg.sender_canonical_maps, "sender_canonical_maps")?,
            recipient_canonical: open_maps(
                &cfg.recipient_canonical_maps,
                "recipient_canonical_maps",
            )?,
            virtual_alias: open_maps(&cfg.virtual_alias_maps, "virtual_alias_maps")?,
            aliases,
            warnings,
        })
    }

    /// True when `domain` is one of `$mydestination`.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.cfg
            .mydestination
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain.trim_end_matches('.')))
    }

    /// Appends `@$myorigin` (and `.$mydomain`) to addresses that lack them.
    pub fn qualify(&self, addr: &str) -> String {
        if addr.is_empty() {
            return String::new();
        }
        match split_addr(addr) {
            (local, None) => {
                if self.cfg.append_at_myorigin {
                    format!("{local}@{}", self.cfg.myorigin)
                } else {
                    addr.to_string()
                }
            }
            (local, Some(domain)) => {
                if self.cfg.append_dot_mydomain && !domain.contains('.') && !domain.starts_with('[')
                {
                    format!("{local}@{domain}.{}", self.cfg.mydomain)
                } else {
                    addr.to_string()
                }
            }
        }
    }

    fn search(&self, addr: &str) -> AddrSearch {
        AddrSearch {
            recipient_delimiter: self.cfg.recipient_delimiter.clone(),
            local_domain: self.local_for(addr),
        }
    }

    fn local_for(&self, addr: &str) -> bool {
        split_addr(addr)
            .1
            .map(|d| self.is_local_domain(d))
            .unwrap_or(true)
    }

    fn canonical(&self, addr: &str, sender: bool) -> Result<String, CleanupError> {
        let class = if sender {
            "envelope_sender"
        } else {
            "envelope_recipient"
        };
        self.canonical_for(addr, sender, class)
    }

    fn header_canonical(&self, addr: &str, sender: bool) -> Result<String, CleanupError> {
        let class = if sender {
            "header_sender"
        } else {
            "header_recipient"
        };
        self.canonical_for(addr, sender, class)
    }

    /// sender_ or recipient_canonical_maps, then canonical_maps, each when
    /// its `*_classes` parameter names `class`.
    fn canonical_for(&self, addr: &str, sender: bool, class: &str) -> Result<String, CleanupError> {
        let (specific, specific_classes) = if sender {
            (&self.sender_canonical, &self.cfg.sender_canonical_classes)
        } else {
            (
                &self.recipient_canonical,
                &self.cfg.recipient_canonical_classes,
            )
        };
        let mut a = addr.to_string();
        if specific_classes.iter().any(|c| c == class) {
            a = self.map_address(specific, &a)?;
        }
        if self.cfg.canonical_classes.iter().any(|c| c == class) {
            a = self.map_address(&self.canonical, &a)?;
        }
        Ok(a)
    }

    /// One canonical-style lookup: `user@domain`, `user` (local domains),
    /// `@domain`; a result `@other` keeps the user part.
    fn map_address(&self, maps: &Maps, addr: &str) -> Result<String, CleanupError> {
        if maps.is_empty() || addr.is_empty() {
            return Ok(addr.to_string());
        }
        let found = maps
            .find_address(addr, &self.search(addr))
            .map_err(|e| CleanupError(e.to_string()))?
            .map(|(v, _)| v);
        Ok(match found {
            Some(result) => {
                let first = conf::values::split_list(&result)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if let Some(dom) = first.strip_prefix('@') {
                    format!("{}@{dom}", split_addr(addr).0)
                } else {
                    first
                }
            }
            None => addr.to_string(),
        })
    }

    /// Expands one recipient through virtual_alias_maps and, for local
    /// domains, alias_maps. Returns (address, route) pairs.
    fn expand(&self, addr: &str) -> Result<Vec<(String, Option<String>)>, CleanupError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.expand_into(addr, 0, &mut seen, &mut out)?;
        Ok(out)
    }

    fn expand_into(
        &self,
        addr: &str,
        depth: usize,
        seen: &mut HashSet<String>,
        out: &mut Vec<(String, Option<String>)>,
    ) -> Result<(), CleanupError> {
        if out.len() >= EXPANSION_LIMIT {
            return Ok(());
        }
        if depth > RECURSION_LIMIT {
            out.push((
                addr.to_string(),
                Some(
                    "error:5.4.6 alias expansion is nested too deeply (mail forwarding loop)"
                        .into(),
                ),
            ));
            return Ok(());
        }
        let key = addr.to_ascii_lowercase();
        if !seen.insert(key) {
            // Already expanded on this path: deliver it as is (a self-reference).
            push_unique(out, addr, None);
            return Ok(());
        }
        let local = self.local_for(addr);
        // virtual_alias_maps applies to every domain.
        if !self.virtual_alias.is_empty()
            && let Some(result) = self
                .virtual_alias
                .find_address(
                    addr,
                    &AddrSearch {
                        recipient_delimiter: self.cfg.recipient_delimiter.clone(),
                        local_domain: local,
                    },
                )
                .map_err(|e| CleanupError(e.to_string()))?
                .map(|(v, _)| v)
        {
            let targets = conf::values::split_list(&result);
            for t in targets {
                let t = self.qualify(&t);
                if t.eq_ignore_ascii_case(addr) {
                    push_unique(out, &t, None);
                } else {
                    self.expand_into(&t, depth + 1, seen, out)?;
                }
            }
            return Ok(());
        }
        // alias_maps applies to $mydestination, keyed by the local part.
        if local && !self.aliases.is_empty() {
            let user = split_addr(addr).0.trim_matches('"').to_ascii_lowercase();
            if let Some(result) = self
                .aliases
                .find(&user)
                .map_err(|e| CleanupError(e.to_string()))?
            {
                for t in alias_values(&result) {
                    if t.starts_with('|')
                        || t.starts_with('/')
                        || t.to_ascii_lowercase().starts_with(":include:")
                    {
                        out.push((
                            addr.to_string(),
                            Some(format!(
                                "error:5.3.0 alias {user}: delivery to a command, file or include file (\"{t}\") is not supported by postern; alias it to a mail address"
                            )),
                        ));
                        continue;
                    }
                    let t = self.qualify(&t);
                    if t.eq_ignore_ascii_case(addr) {
                        push_unique(out, &t, None);
                    } else {
                        self.expand_into(&t, depth + 1, seen, out)?;
                    }
                }
                return Ok(());
            }
        }
        push_unique(out, addr, None);
        Ok(())
    }

    /// Rewrites the envelope: the sender is qualified and canonicalized;
    /// each recipient is qualified, canonicalized and expanded through
    /// virtual_alias_maps and alias_maps (with its original address kept as
    /// ORCPT).
    ///
    /// # Errors
    /// A lookup table that cannot be read: try again later.
    pub fn rewrite_envelope(&self, mut env: Envelope) -> Result<Envelope, CleanupError> {
        if !env.sender.is_empty() {
            let s = self.qualify(&env.sender);
            env.sender = self.canonical(&s, true)?;
        }
        let mut rcpts: Vec<Recipient> = Vec::new();
        for r in std::mem::take(&mut env.recipients) {
            let q = self.qualify(&r.addr);
            let orcpt = r.orcpt.clone().or_else(|| Some(format!("rfc822;{q}")));
            let c = self.canonical(&q, false)?;
            for (addr, route) in self.expand(&c)? {
                if rcpts
                    .iter()
                    .any(|x| x.addr.eq_ignore_ascii_case(&addr) && x.route == route)
                {
                    continue;
                }
                rcpts.push(Recipient {
                    addr,
                    orcpt: orcpt.clone(),
                    notify: r.notify.clone(),
                    route: route.or_else(|| r.route.clone()),
                    ..Default::default()
                });
            }
        }
        env.recipients = rcpts;
        Ok(env)
    }

    /// Rewrites a message's header block (`head`, as returned up to
    /// [`proto::header::header_end`], blank line included or not) and
    /// returns the new header block *including* the blank line that ends
    /// it. Recipients get an error route when the message has looped.
    ///
    /// # Errors
    /// A lookup table that cannot be read: try again later.
    pub fn rewrite_headers(
        &self,
        head: &[u8],
        env: &mut Envelope,
        ctx: &HeaderContext<'_>,
    ) -> Result<Headers, CleanupError> {
        let now = ctx.now;
        let local = ctx.local;
        let headers = header::parse_headers(head);
        let mut out: Vec<u8> = Vec::with_capacity(head.len() + 512);
        if let Some(received) = &ctx.received {
            out.extend_from_slice(received.as_bytes());
        } else if let Some(l) = local {
            out.extend_from_slice(
                format!(
                    "Received: by {} ({}, from userid {})\r\n\tid {}; {}\r\n",
                    self.cfg.myhostname,
                    self.cfg.mail_name,
                    l.uid,
                    ctx.id,
                    crate::time::rfc2822_date(now)
                )
                .as_bytes(),
            );
        }
        let rewrite = ctx.rewrite_addresses || local.is_some();
        let add_missing = ctx.add_missing || local.is_some() || self.cfg.always_add_missing_headers;
        let mut seen_mid = None;
        let mut seen_date = false;
        let mut seen_from = false;
        let mut seen_to = false;
        let mut hops = 0usize;
        for h in &headers {
            let lname = h.name.to_ascii_lowercase();
            match lname.as_str() {
                "received" => hops += 1,
                "message-id" => seen_mid = Some(h.value()),
                "date" => seen_date = true,
                "from" => seen_from = true,
                "to" | "cc" => seen_to = true,
                _ => {}
            }
            if local.is_some() && (lname == "bcc" || (ctx.extract && lname == "resent-bcc")) {
                continue;
            }
            let class = address_class(&lname);
            match class {
                Some(sender) if rewrite && (local.is_some() || self.has_header_rewrite()) => {
                    match self.rewrite_header(h, sender, local.is_some())? {
                        Some(new) => out.extend_from_slice(new.as_bytes()),
                        None => out.extend_from_slice(h.raw),
                    }
                }
                _ => out.extend_from_slice(h.raw),
            }
            if !h.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        if hops >= self.cfg.hopcount_limit as usize {
            for r in &mut env.recipients {
                r.route = Some(format!(
                    "error:5.4.6 too many hops ({hops} Received: headers; hopcount_limit is {}): mail forwarding loop",
                    self.cfg.hopcount_limit
                ));
            }
        }
        let mut message_id = seen_mid.clone();
        let mut message_id_added = false;
        if add_missing {
            if seen_mid.is_none() {
                let mid = format!(
                    "<{}.{}@{}>",
                    crate::time::message_id_stamp(now),
                    ctx.id,
                    self.cfg.myhostname
                );
                out.extend_from_slice(format!("Message-Id: {mid}\r\n").as_bytes());
                message_id = Some(mid);
                message_id_added = true;
            }
            if !seen_date {
                out.extend_from_slice(
                    format!("Date: {}\r\n", crate::time::rfc2822_date(now)).as_bytes(),
                );
            }
            if !seen_from {
                let addr = if env.sender.is_empty() {
                    "MAILER-DAEMON".to_string()
                } else {
                    env.sender.clone()
                };
                let line = match local
                    .and_then(|l| l.fullname.as_deref())
                    .filter(|f| !f.trim().is_empty() && !env.sender.is_empty())
                {
                    Some(name) if self.cfg.hfrom_format == "obsolete" => {
                        format!("From: {addr} ({})\r\n", sanitize_comment(name))
                    }
                    Some(name) => format!("From: {} <{addr}>\r\n", quote_phrase(name)),
                    None => format!("From: {addr}\r\n"),
                };
                out.extend_from_slice(line.as_bytes());
            }
            if !seen_to && !self.cfg.undisclosed_recipients_header.is_empty() {
                out.extend_from_slice(self.cfg.undisclosed_recipients_header.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        // Exactly one empty line ends the header block: the original one
        // was part of `head` (and is not a header), and a message without
        // one (body only, headers only, or a body that starts with a
        // non-header line) gets one, as MIME needs.
        out.extend_from_slice(b"\r\n");
        Ok(Headers {
            bytes: out,
            message_id,
            message_id_added,
        })
    }

    /// Cleans up one message held in memory (pickup): envelope, then the
    /// header block, then the body unchanged. `id` is the queue ID the file
    /// will get (it appears in the Received: and Message-Id: headers).
    ///
    /// # Errors
    /// A lookup table that cannot be read: try again later.
    pub fn process(
        &self,
        env: Envelope,
        content: &[u8],
        local: Option<&Local>,
        id: QueueId,
        extract: bool,
    ) -> Result<Output, CleanupError> {
        let mut env = self.rewrite_envelope(env)?;
        let hend = header::header_end(content).unwrap_or(content.len());
        let (head, body) = content.split_at(hend);
        let ctx = HeaderContext {
            local,
            received: None,
            // Local submissions and the drop folder: always "local" clients.
            rewrite_addresses: true,
            add_missing: local.is_some(),
            extract,
            id,
            now: SystemTime::now(),
        };
        let h = self.rewrite_headers(head, &mut env, &ctx)?;
        let mut out = h.bytes;
        out.reserve(body.len());
        out.extend_from_slice(body);
        Ok(Output {
            env,
            content: out,
            message_id: h.message_id,
            message_id_added: h.message_id_added,
        })
    }

    fn has_header_rewrite(&self) -> bool {
        !(self.canonical.is_empty()
            && self.sender_canonical.is_empty()
            && self.recipient_canonical.is_empty())
    }

    /// Rewrites the addresses of one address header; `None` when nothing changed.
    fn rewrite_header(
        &self,
        h: &header::Header<'_>,
        sender: bool,
        qualify: bool,
    ) -> Result<Option<String>, CleanupError> {
        let value = h.value();
        let list = header::parse_address_list(&value);
        if list.is_empty() {
            return Ok(None);
        }
        let mut changed = false;
        let mut parts = Vec::new();
        for a in list {
            let mut addr = a.address.clone();
            if qualify {
                addr = self.qualify(&addr);
            }
            addr = self.header_canonical(&addr, sender)?;
            if addr != a.address {
                changed = true;
            }
            parts.push(match &a.display_name {
                Some(d) if !d.is_empty() => format!("{} <{addr}>", quote_phrase(d)),
                _ => addr,
            });
        }
        if !changed {
            return Ok(None);
        }
        Ok(Some(header::fold_header(h.name, &parts.join(", "))))
    }
}

fn push_unique(out: &mut Vec<(String, Option<String>)>, addr: &str, route: Option<String>) {
    if !out
        .iter()
        .any(|(a, r)| a.eq_ignore_ascii_case(addr) && *r == route)
    {
        out.push((addr.to_string(), route));
    }
}

/// Which address headers are rewritten: Some(true) sender class, Some(false) recipient class.
fn address_class(lname: &str) -> Option<bool> {
    match lname {
        "from" | "sender" | "reply-to" | "errors-to" | "return-receipt-to" | "resent-from"
        | "resent-sender" | "resent-reply-to" => Some(true),
        "to" | "cc" | "bcc" | "apparently-to" | "resent-to" | "resent-cc" | "resent-bcc" => {
            Some(false)
        }
        _ => None,
    }
}

/// Splits an address at its last `@` outside quotes: (local part, domain).
pub fn split_addr(addr: &str) -> (&str, Option<&str>) {
    let mut in_quote = false;
    let mut escape = false;
    let mut at = None;
    for (i, c) in addr.char_indices() {
        if escape {
            escape = false;
            continue;
        }
        match c {
            '\\' => escape = true,
            '"' => in_quote = !in_quote,
            '@' if !in_quote => at = Some(i),
            _ => {}
        }
    }
    match at {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    }
}

/// Splits an aliases(5) value into its targets (quoted targets may contain commas).
fn alias_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    for c in v.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ',' if !in_quote => {
                let t = cur.trim().trim_matches('"').trim().to_string();
                if !t.is_empty() {
                    out.push(t);
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let t = cur.trim().trim_matches('"').trim().to_string();
    if !t.is_empty() {
        out.push(t);
    }
    out
}

/// Quotes a display name when it contains RFC 5322 specials.
pub fn quote_phrase(name: &str) -> String {
    let name: String = name.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let special = name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c));
    if special {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name
    }
}

fn sanitize_comment(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '(' | ')' | '\r' | '\n' | '\\'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cfg(extra: &str) -> Config {
        let text = format!("myhostname = relay.contoso.com\nalias_maps =\n{extra}");
        let main = conf::MainCf::parse(&text, std::path::Path::new("main.cf")).unwrap();
        Config::build(&main, &[]).unwrap()
    }

    fn env(sender: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            arrival: SystemTime::now(),
            sender: sender.into(),
            recipients: rcpts
                .iter()
                .map(|r| Recipient {
                    addr: r.to_string(),
                    ..Default::default()
                })
                .collect(),
            attrs: vec![],
        }
    }

    #[test]
    fn local_submission_gets_postfix_headers() {
        let c = Cleanup::new(&cfg("")).unwrap();
        let id = QueueId::parse("5D0E9A441100").unwrap();
        let out = c
            .process(
                env("backup", &["admin@contoso.com"]),
                b"Subject: backup done\r\n\r\nok\r\n",
                Some(&Local {
                    uid: 1000,
                    fullname: None,
                }),
                id,
                true,
            )
            .unwrap();
        assert_eq!(out.env.sender, "backup@relay.contoso.com");
        assert_eq!(out.env.recipients[0].addr, "admin@contoso.com");
        assert_eq!(
            out.env.recipients[0].orcpt.as_deref(),
            Some("rfc822;admin@contoso.com")
        );
        let text = String::from_utf8(out.content).unwrap();
        assert!(
            text.starts_with(
                "Received: by relay.contoso.com (postern, from userid 1000)\r\n\tid 5D0E9A441100; "
            ),
            "{text}"
        );
        assert!(
            text.contains("\r\nSubject: backup done\r\nMessage-Id: <"),
            "{text}"
        );
        assert!(
            text.contains(".5D0E9A441100@relay.contoso.com>\r\nDate: "),
            "{text}"
        );
        assert!(
            text.contains("\r\nFrom: backup@relay.contoso.com\r\n\r\nok\r\n"),
            "{text}"
        );
        assert!(out.message_id_added);
    }

    #[test]
    fn bcc_removed_full_name_used_existing_headers_kept() {
        let c = Cleanup::new(&cfg("")).unwrap();
        let id = QueueId::parse("5D0E9A441100").unwrap();
        let msg = b"To: a@x\r\nBcc: secret@x\r\nMessage-ID: <m1@host>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n";
        let out = c
            .process(
                env("root", &["a@x", "secret@x"]),
                msg,
                Some(&Local {
                    uid: 0,
                    fullname: Some("Cron Daemon".into()),
                }),
                id,
                true,
            )
            .unwrap();
        let text = String::from_utf8(out.content).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.contains("From: Cron Daemon <root@relay.contoso.com>\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("Date:").count(), 1);
        assert_eq!(out.message_id.as_deref(), Some("<m1@host>"));
    }

    #[test]
    fn aliases_and_virtual_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let aliases = dir.path().join("aliases");
        let mut f = std::fs::File::create(&aliases).unwrap();
        writeln!(f, "postmaster: root\nroot: admin@contoso.com, backup\nbackup: ops@contoso.com\npipe: |/usr/bin/foo").unwrap();
        let virt = dir.path().join("virtual");
        std::fs::write(
            &virt,
            "sales@contoso.com  alice@contoso.com, bob@contoso.com\n",
        )
        .unwrap();
        let c = Cleanup::new(&cfg(&format!(
            "alias_maps = hash:{}\nvirtual_alias_maps = texthash:{}\n",
            aliases.display(),
            virt.display()
        )))
        .unwrap();
        let id = QueueId::now();
        let out = c
            .process(
                env(
                    "root",
                    &["postmaster", "sales@contoso.com", "pipe@localhost"],
                ),
                b"\r\nx\r\n",
                None,
                id,
                false,
            )
            .unwrap();
        let addrs: Vec<_> = out
            .env
            .recipients
            .iter()
            .map(|r| (r.addr.as_str(), r.route.is_some()))
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("admin@contoso.com", false),
                ("ops@contoso.com", false),
                ("alice@contoso.com", false),
                ("bob@contoso.com", false),
                ("pipe@localhost", true),
            ]
        );
        assert_eq!(
            out.env.recipients[0].orcpt.as_deref(),
            Some("rfc822;postmaster@relay.contoso.com")
        );
    }

    #[test]
    fn canonical_rewrites_envelope_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let canon = dir.path().join("canonical");
        std::fs::write(
            &canon,
            "scanner@printer.local  scanner@contoso.com\n@old.example  @contoso.com\n",
        )
        .unwrap();
        let c = Cleanup::new(&cfg(&format!(
            "sender_canonical_maps = texthash:{}\n",
            canon.display()
        )))
        .unwrap();
        let out = c
            .process(
                env("scanner@printer.local", &["x@y.com"]),
                b"From: Scanner <scanner@printer.local>\r\nReply-To: joe@old.example\r\nTo: x@y.com\r\n\r\nscan\r\n",
                None,
                QueueId::now(),
                false,
            )
            .unwrap();
        assert_eq!(out.env.sender, "scanner@contoso.com");
        let text = String::from_utf8(out.content).unwrap();
        assert!(text.starts_with("From: Scanner <scanner@contoso.com>\r\nReply-To: joe@contoso.com\r\nTo: x@y.com\r\n\r\nscan\r\n"), "{text}");
    }

    #[test]
    fn body_only_message_gets_a_separator() {
        let c = Cleanup::new(&cfg("")).unwrap();
        let out = c
            .process(
                env("u", &["a@x.com"]),
                b"just a line\r\n",
                Some(&Local::default()),
                QueueId::now(),
                false,
            )
            .unwrap();
        let text = String::from_utf8(out.content).unwrap();
        assert!(text.ends_with("\r\n\r\njust a line\r\n"), "{text}");
    }

    #[test]
    fn an_empty_first_body_line_survives() {
        let c = Cleanup::new(&cfg("")).unwrap();
        let out = c
            .process(
                env("u", &["a@x.com"]),
                b"Subject: s\r\n\r\n\r\nafter an empty line\r\n",
                None,
                QueueId::now(),
                false,
            )
            .unwrap();
        assert_eq!(
            out.content,
            b"Subject: s\r\n\r\n\r\nafter an empty line\r\n"
        );
        let out = c
            .process(
                env("u", &["a@x.com"]),
                b"Subject: headers only\r\n",
                None,
                QueueId::now(),
                false,
            )
            .unwrap();
        assert_eq!(out.content, b"Subject: headers only\r\n\r\n");
    }

    #[test]
    fn split_and_quote() {
        assert_eq!(split_addr("a@b"), ("a", Some("b")));
        assert_eq!(split_addr("\"x@y\"@b"), ("\"x@y\"", Some("b")));
        assert_eq!(split_addr("root"), ("root", None));
        assert_eq!(quote_phrase("Cron Daemon"), "Cron Daemon");
        assert_eq!(quote_phrase("Doe, John"), "\"Doe, John\"");
        assert_eq!(alias_values("a, \"b, c\" ,d"), vec!["a", "b, c", "d"]);
    }
}

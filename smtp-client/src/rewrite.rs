//! Rewriting just before delivery, on the copy that goes out (the queue
//! file is not changed):
//!
//! - `smtp_generic_maps` (Postfix): envelope sender and recipients, and the
//!   addresses in From, Sender, Reply-To, To and Cc;
//! - `smtp_send_as_mailbox`: Exchange Online checks the header `From:`
//!   against the mailbox that logged in (`550 5.7.60`, OFFICE365.md §6.3),
//!   so the envelope sender and From become that mailbox. A display name
//!   is kept, and the original From goes to `Reply-To:` unless the message
//!   has one, so replies still reach the device's owner.
//!   The result always has exactly one From with one address, which is
//!   what Exchange insists on (`5.1.20`, `5.7.512`), and no Sender of
//!   someone else (that would make it "on behalf of").
//!
//! With both, the generic maps apply first: the Reply-To carries the
//! mapped (routable) form of the device's address, and a From the maps
//! already turned into the mailbox is kept as it is.
//!
//! Without these settings the message goes out byte for byte as queued.

use conf::tables::{AddrSearch, Maps};
use proto::header::{self, Header, HeaderAddress};
use queue::cleanup::quote_phrase;
use queue::deliver::RcptRequest;

/// What to rewrite, from the transport's configuration.
#[derive(Debug)]
pub struct Rewriter {
    generic: Maps,
    send_as: bool,
}

/// The delivery as it goes out; `None` fields are unchanged.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Envelope sender.
    pub sender: Option<String>,
    /// Envelope recipients (generic maps).
    pub recipients: Option<Vec<RcptRequest>>,
    /// The message with its new header block.
    pub content: Option<Vec<u8>>,
}

const ADDRESS_HEADERS: &[&str] = &["from", "sender", "reply-to", "to", "cc"];

impl Rewriter {
    /// Opens `smtp_generic_maps`.
    ///
    /// # Errors
    /// The tables cannot be opened.
    pub fn new(cfg: &conf::Config) -> Result<Rewriter, String> {
        let origin = cfg
            .resolver
            .raw("smtp_generic_maps")
            .map(|(_, o)| o)
            .unwrap_or_default();
        let generic = Maps::open(&cfg.smtp_generic_maps, &origin).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(Rewriter {
            generic,
            send_as: cfg.smtp_send_as_mailbox,
        })
    }

    fn generic(&self, addr: &str) -> Result<Option<String>, String> {
        if self.generic.is_empty() || addr.is_empty() {
            return Ok(None);
        }
        let found = self
            .generic
            .find_address(addr, &AddrSearch::default())
            .map_err(|e| format!("smtp_generic_maps: {e}"))?;
        Ok(found.and_then(|(v, _)| {
            let first = conf::values::split_list(&v).into_iter().next()?;
            let new = match first.strip_prefix('@') {
                Some(dom) => format!("{}@{dom}", addr.rsplit_once('@').map_or(addr, |(l, _)| l)),
                None => first,
            };
            (new != addr).then_some(new)
        }))
    }

    /// Rewrites one delivery. `mailbox` is the SASL user the session logs
    /// in as (used by `smtp_send_as_mailbox` when it is an address).
    ///
    /// # Errors
    /// A generic table lookup failed (the delivery is deferred).
    pub fn apply(
        &self,
        mailbox: Option<&str>,
        sender: &str,
        rcpts: &[RcptRequest],
        content: &[u8],
    ) -> Result<Rewritten, String> {
        let mut out = Rewritten::default();
        let mailbox = mailbox.filter(|m| self.send_as && m.contains('@'));
        // The envelope.
        if let Some(m) = mailbox {
            if !sender.is_empty() && !sender.eq_ignore_ascii_case(m) {
                out.sender = Some(m.to_string());
            }
        } else if let Some(s) = self.generic(sender)? {
            out.sender = Some(s);
        }
        if !self.generic.is_empty() {
            let mut changed = false;
            let mut list = rcpts.to_vec();
            for r in &mut list {
                if let Some(a) = self.generic(&r.addr)? {
                    r.addr = a;
                    changed = true;
                }
            }
            if changed {
                out.recipients = Some(list);
            }
        }
        // The header block.
        let end = header::header_end(content).unwrap_or(content.len());
        let (head, body) = content.split_at(end);
        let headers = header::parse_headers(head);
        if let Some(new_head) = self.headers(&headers, head, mailbox)? {
            let mut c = Vec::with_capacity(content.len() + 256);
            c.extend_from_slice(&new_head);
            c.extend_from_slice(body);
            out.content = Some(c);
        }
        Ok(out)
    }

    /// The new header block, or `None` when nothing changes.
    ///
    /// Generic maps apply to every address header first; send-as then
    /// works on the result, so the Reply-To it adds carries the mapped
    /// (routable) form of the device's address, and a From the maps
    /// already turned into the mailbox is left alone.
    fn headers(
        &self,
        headers: &[Header<'_>],
        head: &[u8],
        mailbox: Option<&str>,
    ) -> Result<Option<Vec<u8>>, String> {
        // Each address header's addresses after the generic maps, and
        // whether the maps changed it.
        let mut mapped: Vec<Option<(Vec<HeaderAddress>, bool)>> = Vec::with_capacity(headers.len());
        for h in headers {
            if !ADDRESS_HEADERS.iter().any(|n| h.is(n)) {
                mapped.push(None);
                continue;
            }
            let mut list = header::parse_address_list(&h.value());
            let mut hit = false;
            if !self.generic.is_empty() {
                for a in &mut list {
                    if let Some(new) = self.generic(&a.address)? {
                        a.address = new;
                        hit = true;
                    }
                }
            }
            mapped.push(Some((list, hit)));
        }
        let froms: Vec<HeaderAddress> = headers
            .iter()
            .zip(&mapped)
            .filter(|(h, _)| h.is("from"))
            .filter_map(|(_, m)| m.as_ref())
            .flat_map(|(l, _)| l.iter().cloned())
            .collect();
        let has_reply_to = headers.iter().any(|h| h.is("reply-to"));
        let mut changed = false;
        let mut added: Vec<String> = Vec::new();
        let mut replaced: Vec<(usize, Option<String>)> = Vec::new(); // index → new field (None: drop)
        let send_as =
            mailbox.filter(|m| !(froms.len() == 1 && froms[0].address.eq_ignore_ascii_case(m)));
        if let Some(m) = send_as {
            let display = froms
                .first()
                .and_then(|a| a.display_name.clone())
                .filter(|d| !d.trim().is_empty());
            let value = match display {
                Some(d) => format!("{} <{m}>", quote_phrase(&d)),
                None => m.to_string(),
            };
            let mut first = true;
            for (i, h) in headers.iter().enumerate() {
                if h.is("from") {
                    replaced.push((i, first.then(|| header::fold_header("From", &value))));
                    first = false;
                }
            }
            if first {
                added.push(header::fold_header("From", &value));
            }
            if !has_reply_to && !froms.is_empty() {
                added.push(header::fold_header("Reply-To", &render(&froms)));
            }
            changed = true;
        }
        // Sending as the mailbox: a Sender of someone else would make it
        // "on behalf of" (even when the From already is the mailbox).
        if let Some(m) = mailbox {
            for (i, h) in headers.iter().enumerate() {
                let own = mapped[i]
                    .as_ref()
                    .is_some_and(|(l, _)| l.len() == 1 && l[0].address.eq_ignore_ascii_case(m));
                if h.is("sender") && !own {
                    replaced.push((i, None));
                    changed = true;
                }
            }
        }
        // Generic maps on the address headers send-as left in place.
        for (i, h) in headers.iter().enumerate() {
            if replaced.iter().any(|(j, _)| *j == i) {
                continue;
            }
            if let Some((list, true)) = &mapped[i] {
                replaced.push((i, Some(header::fold_header(h.name, &render(list)))));
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(head.len() + 256);
        let mut inserted = false;
        let mut pos = 0usize;
        for (i, h) in headers.iter().enumerate() {
            pos += h.raw.len();
            match replaced.iter().find(|(j, _)| *j == i) {
                Some((_, Some(new))) => out.extend_from_slice(new.as_bytes()),
                Some((_, None)) => {}
                None => out.extend_from_slice(h.raw),
            }
            // New fields go right after the first From (or at the end).
            if !inserted && h.is("from") {
                for a in &added {
                    out.extend_from_slice(a.as_bytes());
                }
                inserted = true;
            }
        }
        if !inserted {
            for a in &added {
                out.extend_from_slice(a.as_bytes());
            }
        }
        // Whatever followed the fields (the blank line) stays.
        out.extend_from_slice(&head[pos.min(head.len())..]);
        Ok(Some(out))
    }
}

fn render(list: &[HeaderAddress]) -> String {
    list.iter()
        .map(|a| match &a.display_name {
            Some(d) if !d.trim().is_empty() => format!("{} <{}>", quote_phrase(d), a.address),
            _ => a.address.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rewriter(extra: &str, generic: Option<&str>) -> (Rewriter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("myhostname = relay.contoso.com\n{extra}");
        if let Some(g) = generic {
            let p = dir.path().join("generic");
            std::fs::write(&p, g).unwrap();
            text.push_str(&format!("smtp_generic_maps = texthash:{}\n", p.display()));
        }
        let main = conf::MainCf::parse(&text, std::path::Path::new("main.cf")).unwrap();
        let cfg = conf::Config::build(&main, &[]).unwrap();
        (Rewriter::new(&cfg).unwrap(), dir)
    }

    fn rcpt(a: &str) -> RcptRequest {
        RcptRequest {
            idx: 0,
            addr: a.into(),
            orcpt: None,
            notify: None,
        }
    }

    fn text(r: &Rewritten) -> String {
        String::from_utf8(r.content.clone().unwrap()).unwrap()
    }

    #[test]
    fn send_as_the_mailbox_keeps_the_name_and_a_way_back() {
        let (rw, _d) = rewriter("smtp_send_as_mailbox = yes\n", None);
        let msg = b"Received: x\r\nFrom: \"Scan Station 3\" <scanner@printer.local>\r\nSender: other@printer.local\r\nSubject: scan\r\n\r\nbody\r\nFrom: not a header\r\n";
        let r = rw
            .apply(
                Some("scanner@contoso.com"),
                "scanner@printer.local",
                &[rcpt("a@b.c")],
                msg,
            )
            .unwrap();
        assert_eq!(r.sender.as_deref(), Some("scanner@contoso.com"));
        let t = text(&r);
        assert_eq!(
            t,
            "Received: x\r\nFrom: Scan Station 3 <scanner@contoso.com>\r\nReply-To: Scan Station 3 <scanner@printer.local>\r\nSubject: scan\r\n\r\nbody\r\nFrom: not a header\r\n"
        );
        // Already the mailbox: nothing to do; bounces keep <>.
        let ok = b"From: Scanner <Scanner@Contoso.com>\r\n\r\nx\r\n";
        let r = rw.apply(Some("scanner@contoso.com"), "", &[], ok).unwrap();
        assert_eq!(r, Rewritten::default());
        // Without a From: one is added; an existing Reply-To is kept.
        let r = rw
            .apply(
                Some("scanner@contoso.com"),
                "x@y",
                &[],
                b"Reply-To: boss@contoso.com\r\nSubject: s\r\n\r\nb\r\n",
            )
            .unwrap();
        assert_eq!(
            text(&r),
            "Reply-To: boss@contoso.com\r\nSubject: s\r\nFrom: scanner@contoso.com\r\n\r\nb\r\n"
        );
        // A user name that is not an address changes nothing.
        assert_eq!(
            rw.apply(Some("app-id"), "x@y", &[], b"From: x@y\r\n\r\n")
                .unwrap(),
            Rewritten::default()
        );
    }

    #[test]
    fn without_settings_the_message_is_untouched() {
        let (rw, _d) = rewriter("", None);
        let msg = b"From: a@contoso.com, b@contoso.com\r\nFrom: c@x\r\n\r\nbody\r\n";
        assert_eq!(
            rw.apply(None, "scan@contoso.com", &[], msg).unwrap(),
            Rewritten::default()
        );
        // send-as with several From addresses: exactly one, the mailbox.
        let (rw, _d) = rewriter("smtp_send_as_mailbox = yes\n", None);
        let r = rw
            .apply(Some("m@contoso.com"), "scan@contoso.com", &[], msg)
            .unwrap();
        assert_eq!(
            text(&r),
            "From: m@contoso.com\r\nReply-To: a@contoso.com, b@contoso.com, c@x\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn generic_maps_envelope_and_headers() {
        let (rw, _d) = rewriter(
            "",
            Some("root@relay.local  it@contoso.com\n@printer.local @contoso.com\n"),
        );
        let r = rw
            .apply(
                None,
                "root@relay.local",
                &[rcpt("user@printer.local"), rcpt("x@y.z")],
                b"From: Root <root@relay.local>\r\nTo: user@printer.local, x@y.z\r\n\r\nb\r\n",
            )
            .unwrap();
        assert_eq!(r.sender.as_deref(), Some("it@contoso.com"));
        let rs = r.recipients.clone().unwrap();
        assert_eq!(
            (rs[0].addr.as_str(), rs[1].addr.as_str()),
            ("user@contoso.com", "x@y.z")
        );
        assert_eq!(
            text(&r),
            "From: Root <it@contoso.com>\r\nTo: user@contoso.com, x@y.z\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn send_as_and_generic_maps_together() {
        let (rw, _d) = rewriter(
            "smtp_send_as_mailbox = yes\n",
            Some("dev@printer.local  devices@contoso.com\n@legacy.local @contoso.com\n"),
        );
        let msg = b"From: Dev <dev@printer.local>\r\nSender: m@contoso.com\r\nTo: boss@legacy.local, x@y.z\r\n\r\nb\r\n";
        let r = rw
            .apply(
                Some("m@contoso.com"),
                "dev@printer.local",
                &[rcpt("boss@legacy.local")],
                msg,
            )
            .unwrap();
        assert_eq!(r.sender.as_deref(), Some("m@contoso.com"));
        assert_eq!(r.recipients.unwrap()[0].addr, "boss@contoso.com");
        // The way back is the routable (mapped) address; the recipients'
        // headers are mapped as well; the mailbox's own Sender stays.
        assert_eq!(
            String::from_utf8(r.content.unwrap()).unwrap(),
            "From: Dev <m@contoso.com>\r\nReply-To: Dev <devices@contoso.com>\r\nSender: m@contoso.com\r\nTo: boss@contoso.com, x@y.z\r\n\r\nb\r\n"
        );
        // The maps already made the From the mailbox: no Reply-To needed;
        // a foreign Sender still goes.
        let (rw, _d) = rewriter(
            "smtp_send_as_mailbox = yes\n",
            Some("@printer.local @contoso.com\n"),
        );
        let r = rw
            .apply(
                Some("scan@contoso.com"),
                "scan@printer.local",
                &[],
                b"From: Scan <scan@printer.local>\r\nSender: x@elsewhere\r\n\r\nb\r\n",
            )
            .unwrap();
        assert_eq!(text(&r), "From: Scan <scan@contoso.com>\r\n\r\nb\r\n");
    }

    proptest! {
        #[test]
        fn any_message_keeps_its_body(head in "[ -~]{0,60}(\r\n[A-Za-z-]{1,8}: [ -~]{0,40}){0,4}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (rw, _d) = rewriter("smtp_send_as_mailbox = yes\n", None);
            let mut msg = head.into_bytes();
            msg.extend_from_slice(b"\r\n\r\n");
            msg.extend_from_slice(&body);
            let r = rw.apply(Some("m@contoso.com"), "s@x", &[], &msg).unwrap();
            let out = r.content.unwrap_or(msg.clone());
            prop_assert!(out.ends_with(&body));
            let froms = header::parse_headers(&out).iter().filter(|h| h.is("from")).count();
            prop_assert!(froms <= 1);
        }
    }
}

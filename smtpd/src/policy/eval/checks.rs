//! Address and host name restrictions: reject_non_fqdn_*,
//! reject_unknown_*, reject_unlisted_*, reject_invalid_helo_hostname and the
//! relay decision (permit_auth_destination, reject_unauth_destination,
//! defer_unauth_destination).

use super::{ErrClass, Eval, HELO, RECIPIENT, SENDER, Status, truncate_dot};
use crate::policy::access::{dsn_fix, quote_local};
use crate::policy::dns::Status as Dns;
use crate::policy::relay::{Class, Destinations, literal_addr, valid_hostname};
use crate::policy::restriction::Step;
use conf::tables::AddrSearch;

impl Eval<'_, '_> {
    /// reject_non_fqdn_*, reject_unknown_*_domain, reject_unlisted_*.
    pub(super) async fn address_check(&mut self, step: &Step) -> Status {
        use Step::*;
        let (addr, rc) = match step {
            RejectNonFqdnSender | RejectUnknownSenderDomain | RejectUnlistedSender => {
                (self.sender.clone(), SENDER)
            }
            _ => (self.recipient.clone(), RECIPIENT),
        };
        let Some(addr) = addr.filter(|a| !a.is_empty()) else {
            return Status::Dunno;
        };
        match step {
            RejectNonFqdnSender | RejectNonFqdnRecipient => self.non_fqdn_address(&addr, rc),
            RejectUnknownSenderDomain | RejectUnknownRecipientDomain => {
                self.unknown_address(&addr, rc).await
            }
            _ => self.unlisted(&addr, rc),
        }
    }

    /// permit_auth_destination, reject_unauth_destination,
    /// defer_unauth_destination.
    pub(super) fn relay_check(&mut self, step: &Step) -> Status {
        let p = self.p;
        let Some(rcpt) = self.recipient.clone() else {
            return Status::Dunno;
        };
        let authorized = match self.authorized(&rcpt) {
            Ok(a) => a,
            Err(e) => {
                queue::log::warning(&e.to_string());
                return self.dict_retry(&rcpt);
            }
        };
        match step {
            Step::PermitAuthDestination if authorized => Status::Ok,
            Step::RejectUnauthDestination if !authorized => self.reject(
                ErrClass::Policy,
                p.codes.relay,
                "5.7.1",
                format!("<{rcpt}>: Relay access denied"),
            ),
            Step::DeferUnauthDestination if !authorized => self.reject(
                ErrClass::Policy,
                p.codes.relay.saturating_sub(100),
                "4.7.1",
                format!("<{rcpt}>: Relay access denied"),
            ),
            _ => Status::Dunno,
        }
    }

    /// An authorized destination: not source-routed, no routing operator
    /// in the local part, and resolving to a local, virtual alias or relay
    /// domain.
    pub(super) fn authorized(&self, rcpt: &str) -> Result<bool, conf::Error> {
        let local = rcpt.rfind('@').map_or(rcpt, |at| &rcpt[..at]);
        if self.recipient_routed || local.contains(['@', '%', '!']) {
            return Ok(false);
        }
        Ok(Destinations::authorized(&self.p.dest.resolve(rcpt)?))
    }

    pub(super) fn helo_reject(&mut self, code: u16, helo: &str, why: &str) -> Status {
        self.reject(
            ErrClass::Policy,
            code,
            "5.5.2",
            format!("<{helo}>: {HELO} rejected: {why}"),
        )
    }

    /// reject_invalid_hostaddr(): a HELO address literal must be valid.
    pub(super) fn invalid_hostaddr(&mut self, helo: &str) -> Status {
        let inner = if helo.len() > 2 && helo.starts_with('[') && helo.ends_with(']') {
            &helo[1..helo.len() - 1]
        } else {
            helo
        };
        if literal_addr(inner).is_some() {
            return Status::Dunno;
        }
        self.helo_reject(self.p.codes.invalid_hostname, helo, "invalid ip address")
    }

    /// reject_unknown_helo_hostname: no A, AAAA or MX record.
    pub(super) async fn unknown_hostname(&mut self, helo: &str) -> Status {
        let p = self.p;
        let msg = |why: &str| format!("<{helo}>: {HELO} rejected: {why}");
        match p.dns.host(helo).await {
            Dns::Found | Dns::NullMx => Status::Dunno,
            Dns::TryAgain => self.defer_if_permit(
                p.unk_name_defer_if_permit,
                450,
                "4.7.1",
                msg("Host not found"),
            ),
            Dns::NotFound => self.reject(
                ErrClass::Policy,
                p.codes.unknown_hostname,
                "4.7.1",
                msg("Host not found"),
            ),
            Dns::Invalid => self.reject(
                ErrClass::Policy,
                p.codes.unknown_hostname,
                "4.7.1",
                msg("Malformed DNS server reply"),
            ),
        }
    }

    /// reject_non_fqdn_sender / reject_non_fqdn_recipient.
    pub(super) fn non_fqdn_address(&mut self, addr: &str, rc: &'static str) -> Status {
        let domain = addr.rfind('@').map_or("", |at| &addr[at + 1..]);
        if domain.starts_with('[') && domain.ends_with(']') {
            return Status::Dunno;
        }
        let d = truncate_dot(domain);
        if !d.is_empty() && valid_hostname(d) && d.contains('.') {
            return Status::Dunno;
        }
        let msg = format!("<{addr}>: {rc} rejected: need fully-qualified address");
        self.reject(ErrClass::Policy, self.p.codes.non_fqdn, "4.5.2", msg)
    }

    /// reject_unknown_sender_domain / reject_unknown_recipient_domain.
    pub(super) async fn unknown_address(&mut self, addr: &str, rc: &'static str) -> Status {
        let p = self.p;
        let resolved = match p.dest.resolve(addr) {
            Ok(r) => r,
            Err(e) => {
                queue::log::warning(&e.to_string());
                return self.dict_retry(addr);
            }
        };
        let domain = resolved.domain();
        if matches!(resolved.class, Class::Local | Class::Alias) || domain.starts_with('[') {
            return Status::Dunno;
        }
        let sender = rc == SENDER;
        let dsn = if sender { "4.1.8" } else { "4.1.2" };
        let msg = |why: &str| format!("<{addr}>: {rc} rejected: {why}");
        match p.dns.mail_host(domain).await {
            Dns::Found => Status::Dunno,
            Dns::NullMx => self.reject(
                ErrClass::Policy,
                if sender { 550 } else { 556 },
                if sender { "4.7.27" } else { "4.1.10" },
                msg(&format!("Domain {domain} does not accept mail (nullMX)")),
            ),
            Dns::NotFound => self.reject(
                ErrClass::Policy,
                p.codes.unknown_address,
                dsn,
                msg("Domain not found"),
            ),
            Dns::Invalid => self.reject(
                ErrClass::Policy,
                p.codes.unknown_address,
                dsn,
                msg("Malformed DNS server reply"),
            ),
            Dns::TryAgain => self.defer_if_permit(
                p.unk_addr_defer_if_permit,
                450,
                dsn,
                msg("Domain not found"),
            ),
        }
    }

    /// reject_unlisted_sender / reject_unlisted_recipient: an address in a
    /// virtual alias domain must be in virtual_alias_maps (postern has no
    /// local or relay recipient tables).
    pub(super) fn unlisted(&mut self, addr: &str, rc: &'static str) -> Status {
        let p = self.p;
        let resolved = match p.dest.resolve(addr) {
            Ok(r) => r,
            Err(e) => {
                queue::log::warning(&e.to_string());
                return self.dict_retry(addr);
            }
        };
        let external = format!("{}@{}", quote_local(resolved.local()), resolved.domain());
        let opts = AddrSearch {
            recipient_delimiter: p.recipient_delimiter.clone(),
            local_domain: resolved.class == Class::Local,
        };
        match p.virtual_alias_maps.find_address(&external, &opts) {
            Ok(Some(_)) => return Status::Dunno,
            Ok(None) => {}
            Err(e) => {
                queue::log::warning(&e.to_string());
                return self.dict_retry(addr);
            }
        }
        if resolved.class != Class::Alias {
            return Status::Dunno;
        }
        let msg = format!("<{addr}>: {rc} rejected: User unknown in virtual alias table");
        self.reject(
            ErrClass::Policy,
            p.codes.virtual_alias,
            &dsn_fix("5.1.1", rc),
            msg,
        )
    }
}

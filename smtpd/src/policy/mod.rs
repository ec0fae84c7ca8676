//! Access policy: Postfix's SMTP server restrictions, with Postfix's
//! parameter names, evaluation order, reply codes and reply texts
//! (smtpd_check.c, access(5), postconf(5)).
//!
//! - [`Policy::new`] parses every restriction list
//!   ([`restriction`]), opens every table and builds mynetworks
//!   ([`networks`]) and the destination lists ([`relay`]) once, reporting
//!   every configuration error with file and line.
//! - [`Policy::check`] evaluates one SMTP stage ([`eval`]): with
//!   `smtpd_delay_reject = yes` (the default) the client, HELO and sender
//!   restrictions wait for RCPT TO, which then runs them before
//!   smtpd_relay_restrictions and smtpd_recipient_restrictions.
//! - check_*_access search orders and results are in [`access`]; DNS
//!   existence checks in [`dns`].
//!
//! Never an open relay: Policy::new refuses a configuration whose relay
//! and recipient restrictions both lack reject_unauth_destination (or
//! another restriction that refuses by default), and relay tricks
//! (`user%other@relay`, `"user@other"@relay`, `user@other@relay`,
//! `other!user@relay`, source routes) are never an authorized destination.

// conf::Error carries file, line, parameter and value for the operator, which
// makes it large; errors are built at start-up or on rare table failures,
// never per message, so it stays unboxed (as in conf).
#![allow(clippy::result_large_err)]

mod access;
mod clients;
mod dns;
mod eval;
mod networks;
mod relay;
mod restriction;
#[cfg(test)]
mod tests;

pub use clients::ClientList;

use conf::tables::Maps;
use conf::{Config, Error, Origin};
use networks::{ListKind, MatchList};
use proto::reply::Reply;
use relay::{Destinations, parent_style};
use restriction::{Parser, Step, Tables, has_required};
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

/// The SMTP stage a check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The client connected (smtpd_client_restrictions when
    /// smtpd_delay_reject = no).
    Connect,
    /// HELO or EHLO (smtpd_helo_restrictions when smtpd_delay_reject = no).
    Helo,
    /// MAIL FROM (smtpd_sender_restrictions when smtpd_delay_reject = no).
    Mail,
    /// RCPT TO: the delayed lists, smtpd_relay_restrictions and
    /// smtpd_recipient_restrictions.
    Rcpt,
    /// DATA or the first BDAT: smtpd_data_restrictions.
    Data,
}

/// What the session knows about the client and the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The client's address.
    pub client_addr: IpAddr,
    /// Its verified host name, or `unknown`.
    pub client_name: &'a str,
    /// The HELO/EHLO argument, once given.
    pub helo: Option<&'a str>,
    /// The MAIL FROM address as given, without `<>`; `None` before MAIL,
    /// `Some("")` for the null sender.
    pub sender: Option<&'a str>,
    /// The RCPT TO address as given, without `<>` (Rcpt stage; at the Data
    /// stage only when the message has exactly one recipient, as Postfix).
    pub recipient: Option<&'a str>,
    /// The RCPT TO path had a source route (`<@a,@b:user@c>`).
    pub recipient_routed: bool,
    /// The SASL login name after a successful AUTH.
    pub sasl_user: Option<&'a str>,
    /// The session is encrypted.
    pub tls: bool,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, ... for log lines.
    pub protocol: &'a str,
    /// The client sent commands ahead where that is not allowed
    /// (for reject_unauth_pipelining).
    pub ill_pipelining: bool,
}

/// The decision for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Permit,
    /// Refuse with `reply`.
    Reject {
        /// The reply to send.
        reply: Reply,
        /// The reply as Postfix logs it after `reject: RCPT from
        /// host[addr]: `, e.g. `554 5.7.1 <a@b.example>: Relay access denied`.
        log: String,
    },
}

/// The restriction lists of each stage.
#[derive(Debug, Default)]
pub(crate) struct Lists {
    pub client: Vec<Step>,
    pub helo: Vec<Step>,
    pub sender: Vec<Step>,
    pub relay: Vec<Step>,
    pub recipient: Vec<Step>,
    pub data: Vec<Step>,
}

/// Reply codes of the `*_reject_code` parameters.
#[derive(Debug, Clone)]
pub(crate) struct Codes {
    pub reject: u16,
    pub defer: u16,
    pub relay: u16,
    pub map_reject: u16,
    pub map_defer: u16,
    pub non_fqdn: u16,
    pub unknown_address: u16,
    pub unknown_hostname: u16,
    pub invalid_hostname: u16,
    pub unknown_client: u16,
    pub plaintext: u16,
    pub virtual_alias: u16,
}

/// The access policy of one SMTP service, built once from the
/// configuration.
#[derive(Debug)]
pub struct Policy {
    pub(crate) delay_reject: bool,
    pub(crate) soft_bounce: bool,
    pub(crate) sasl_enable: bool,
    pub(crate) null_key: String,
    pub(crate) recipient_delimiter: String,
    /// smtpd_access_maps is in parent_domain_matches_subdomains.
    pub(crate) access_parent: bool,
    pub(crate) lists: Lists,
    pub(crate) classes: Vec<Vec<Step>>,
    pub(crate) class_names: HashMap<String, usize>,
    pub(crate) tables: Tables,
    pub(crate) mynetworks: Arc<MatchList>,
    pub(crate) own_addrs: Arc<Vec<IpAddr>>,
    pub(crate) dest: Destinations,
    pub(crate) virtual_alias_maps: Maps,
    pub(crate) codes: Codes,
    pub(crate) unk_addr_defer_if_permit: bool,
    pub(crate) unk_name_defer_if_permit: bool,
    pub(crate) dns: dns::Dns,
}

fn origin(cfg: &Config, name: &str) -> Origin {
    cfg.resolver.raw(name).map(|(_, o)| o).unwrap_or_default()
}

/// A parameter outside the registry (e.g. `access_map_reject_code`), or
/// `None` when unset or empty.
fn extra(cfg: &Config, name: &str) -> Option<String> {
    cfg.get(name).filter(|v| !v.trim().is_empty())
}

/// This host's addresses: inet_interfaces (`all`: every interface;
/// `loopback-only`) and proxy_interfaces.
fn own_addresses(cfg: &Config) -> Vec<IpAddr> {
    let mut items = cfg.inet_interfaces.clone();
    items.extend(cfg.proxy_interfaces.iter().cloned());
    let mut out: Vec<IpAddr> = Vec::new();
    for item in items {
        let item = item.trim_start_matches('[').trim_end_matches(']');
        match item.to_ascii_lowercase().as_str() {
            "all" => out.extend(
                conf::mynetworks::interface_addresses()
                    .iter()
                    .map(|i| i.addr),
            ),
            "loopback-only" | "localhost" => out.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]),
            _ => match item.parse::<IpAddr>() {
                Ok(a) => out.push(a),
                // A host name: its addresses, looked up once at start-up.
                Err(_) => {
                    if let Ok(addrs) = (item, 0).to_socket_addrs() {
                        out.extend(addrs.map(|sa| sa.ip()));
                    }
                }
            },
        }
    }
    let mut uniq = Vec::new();
    for a in out.into_iter().map(networks::normalize) {
        if !uniq.contains(&a) {
            uniq.push(a);
        }
    }
    uniq
}

impl Policy {
    /// Builds the policy from the configuration: parses every restriction
    /// list and restriction class, opens every table, reads mynetworks and
    /// the destination lists.
    ///
    /// # Errors
    /// Every problem found, each naming the parameter and where it was set:
    /// unknown or unsupported restrictions, tables that do not open, bad
    /// mynetworks entries, bad reply codes, and relay and recipient
    /// restrictions that would make an open relay.
    pub fn new(cfg: &Config) -> Result<Policy, Vec<Error>> {
        let mut errors = Vec::new();
        let class_list = &cfg.smtpd_restriction_classes;
        let mut class_names = HashMap::new();
        for name in class_list {
            let n = class_names.len();
            class_names.entry(name.clone()).or_insert(n);
        }
        let mut tables = Tables::default();
        let mut parser = Parser {
            tables: &mut tables,
            classes: &class_names,
        };
        let mut classes = vec![Vec::new(); class_names.len()];
        for (name, i) in &class_names {
            let Some(value) = extra(cfg, name) else {
                errors.push(Error::BadValue {
                    origin: origin(cfg, "smtpd_restriction_classes"),
                    name: "smtpd_restriction_classes".into(),
                    value: name.clone(),
                    allowed: format!("restriction class {name} needs a definition: add \"{name} = restrictions\" to main.cf"),
                });
                continue;
            };
            match parser.parse(
                name,
                &conf::values::split_list(&value),
                &origin(cfg, name),
                true,
            ) {
                Ok(steps) => classes[*i] = steps,
                Err(e) => errors.extend(e),
            }
        }
        let mut parse =
            |param: &str, items: &[String], bare_tables: bool, errors: &mut Vec<Error>| {
                parser
                    .parse(param, items, &origin(cfg, param), bare_tables)
                    .map_err(|e| errors.extend(e))
                    .ok()
            };
        let client = parse(
            "smtpd_client_restrictions",
            &cfg.smtpd_client_restrictions,
            true,
            &mut errors,
        );
        let helo = parse(
            "smtpd_helo_restrictions",
            &cfg.smtpd_helo_restrictions,
            true,
            &mut errors,
        );
        let sender = parse(
            "smtpd_sender_restrictions",
            &cfg.smtpd_sender_restrictions,
            true,
            &mut errors,
        );
        let relay = parse(
            "smtpd_relay_restrictions",
            &cfg.smtpd_relay_restrictions,
            true,
            &mut errors,
        );
        let recipient = parse(
            "smtpd_recipient_restrictions",
            &cfg.smtpd_recipient_restrictions,
            true,
            &mut errors,
        );
        let data = parse(
            "smtpd_data_restrictions",
            &cfg.smtpd_data_restrictions,
            false,
            &mut errors,
        );
        if let (Some(rl), Some(rc)) = (&relay, &recipient)
            && !has_required(rl, &classes, 0)
            && !has_required(rc, &classes, 0)
        {
            errors.push(Error::BadValue {
                origin: origin(cfg, "smtpd_relay_restrictions"),
                name: "smtpd_relay_restrictions".into(),
                value: cfg.smtpd_relay_restrictions.join(", "),
                allowed: format!(
                    "at least one of smtpd_relay_restrictions or smtpd_recipient_restrictions must contain \
                     reject_unauth_destination or similar (defer_unauth_destination, reject, defer, \
                     defer_if_permit), else this server is an open relay; smtpd_recipient_restrictions is \"{}\"",
                    cfg.smtpd_recipient_restrictions.join(", ")
                ),
            });
        }
        let mynetworks = MatchList::build(
            ListKind::Clients,
            "mynetworks",
            &cfg.mynetworks,
            parent_style(cfg, "mynetworks"),
            &origin(cfg, "mynetworks"),
        )
        .unwrap_or_else(|e| {
            errors.extend(e);
            MatchList::empty(ListKind::Clients)
        });
        let own_addrs = Arc::new(own_addresses(cfg));
        let dest = Destinations::new(cfg, own_addrs.clone())
            .map_err(|e| errors.extend(e))
            .ok();
        let virtual_alias_maps =
            Maps::open(&cfg.virtual_alias_maps, &origin(cfg, "virtual_alias_maps"))
                .map_err(|e| errors.extend(e))
                .ok();
        // The registry has checked the ranges (400..=599) and the choices.
        let c = |v: i64| v as u16;
        let codes = Codes {
            reject: c(cfg.reject_code),
            defer: c(cfg.defer_code),
            relay: c(cfg.relay_domains_reject_code),
            map_reject: c(cfg.access_map_reject_code),
            map_defer: c(cfg.access_map_defer_code),
            non_fqdn: c(cfg.non_fqdn_reject_code),
            unknown_address: c(cfg.unknown_address_reject_code),
            unknown_hostname: c(cfg.unknown_hostname_reject_code),
            invalid_hostname: c(cfg.invalid_hostname_reject_code),
            unknown_client: c(cfg.unknown_client_reject_code),
            plaintext: c(cfg.plaintext_reject_code),
            virtual_alias: c(cfg.unknown_virtual_alias_reject_code),
        };
        let unk_addr_defer_if_permit = cfg.unknown_address_tempfail_action == "defer_if_permit";
        let unk_name_defer_if_permit =
            cfg.unknown_helo_hostname_tempfail_action == "defer_if_permit";
        let dns = dns::Dns::from_env().map_err(|allowed| {
            errors.push(Error::BadValue {
                origin: Origin::CommandLine,
                name: dns::DNS_SERVER_ENV.into(),
                value: std::env::var(dns::DNS_SERVER_ENV).unwrap_or_default(),
                allowed,
            })
        });
        let (Some(client), Some(helo), Some(sender), Some(relay), Some(recipient), Some(data)) =
            (client, helo, sender, relay, recipient, data)
        else {
            return Err(errors);
        };
        let (Some(dest), Some(virtual_alias_maps), Ok(dns)) = (dest, virtual_alias_maps, dns)
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let unlisted = [&client, &helo, &sender, &relay, &recipient, &data]
            .into_iter()
            .chain(classes.iter())
            .flatten()
            .any(|s| {
                matches!(
                    s,
                    Step::RejectUnlistedRecipient | Step::RejectUnlistedSender
                )
            });
        if unlisted {
            queue::log::warning(
                "reject_unlisted_recipient, reject_unlisted_sender: postern validates only addresses in \
                 virtual alias domains (against virtual_alias_maps); addresses in $mydestination and \
                 $relay_domains are accepted without a recipient table",
            );
        }
        Ok(Policy {
            delay_reject: cfg.smtpd_delay_reject,
            soft_bounce: cfg.soft_bounce,
            sasl_enable: cfg.smtpd_sasl_auth_enable,
            null_key: cfg.smtpd_null_access_lookup_key.clone(),
            recipient_delimiter: cfg.recipient_delimiter.clone(),
            access_parent: parent_style(cfg, "smtpd_access_maps"),
            lists: Lists {
                client,
                helo,
                sender,
                relay,
                recipient,
                data,
            },
            classes,
            class_names,
            tables,
            mynetworks: Arc::new(mynetworks),
            own_addrs,
            dest,
            virtual_alias_maps,
            codes,
            unk_addr_defer_if_permit,
            unk_name_defer_if_permit,
            dns,
        })
    }

    /// True when `addr` is in mynetworks. Host name entries of mynetworks
    /// cannot match here (no name is given); [`Policy::check`] uses them.
    #[allow(dead_code)] // API for the session; not called by it yet.
    pub fn in_mynetworks(&self, addr: IpAddr) -> bool {
        self.mynetworks
            .match_client(None, Some(addr))
            .unwrap_or(false)
    }

    /// A client list from a parameter value such as
    /// `cfg.smtpd_client_event_limit_exceptions`,
    /// `cfg.smtpd_forbid_bare_newline_exclusions` or
    /// `cfg.local_header_rewrite_clients`: network items as in mynetworks,
    /// plus `permit_mynetworks`, `permit_sasl_authenticated` and
    /// `permit_inet_interfaces`. Bad items are logged as warnings and never
    /// match; use [`Policy::client_list_for`] to refuse them instead.
    pub fn client_list(&self, items: &[String]) -> ClientList {
        let (list, errors) = ClientList::build(
            items,
            "client list",
            &Origin::Default,
            false,
            self.mynetworks.clone(),
            self.own_addrs.clone(),
        );
        for e in errors {
            queue::log::warning(&e.to_string());
        }
        list
    }

    /// Like [`Policy::client_list`] for the parameter `param` of `cfg`,
    /// with errors naming the parameter and where it was set.
    ///
    /// # Errors
    /// Every bad item (unreadable files, bad networks, tables that do not
    /// open).
    #[allow(dead_code)] // API for the session; not called by it yet.
    pub fn client_list_for(&self, cfg: &Config, param: &str) -> Result<ClientList, Vec<Error>> {
        let items = cfg
            .get(param)
            .map(|v| conf::values::split_list(&v))
            .unwrap_or_default();
        let (list, errors) = ClientList::build(
            &items,
            param,
            &origin(cfg, param),
            parent_style(cfg, param),
            self.mynetworks.clone(),
            self.own_addrs.clone(),
        );
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    /// Evaluates the restrictions of `stage` for the session `ctx`.
    pub async fn check(&self, stage: Stage, ctx: &Ctx<'_>) -> Verdict {
        eval::check(self, stage, ctx).await
    }
}

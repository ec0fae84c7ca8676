//! Client lists as local_header_rewrite_clients,
//! smtpd_client_event_limit_exceptions and
//! smtpd_forbid_bare_newline_exclusions name them: mynetworks-style items
//! plus `permit_mynetworks`, `permit_sasl_authenticated` and
//! `permit_inet_interfaces`.

use super::networks::{Entry, ListKind, MatchList, Parsed, entry_matches, normalize, parse_entry};
use conf::{Error, Origin};
use std::net::IpAddr;
use std::sync::Arc;

/// One item of a [`ClientList`].
#[derive(Debug)]
enum ClientItem {
    Mynetworks,
    SaslAuthenticated,
    InetInterfaces,
    Pattern(Entry),
}

/// A list of clients as local_header_rewrite_clients,
/// smtpd_client_event_limit_exceptions or
/// smtpd_forbid_bare_newline_exclusions name them; built by
/// [`super::Policy::client_list`].
#[derive(Debug)]
pub struct ClientList {
    items: Vec<ClientItem>,
    parent: bool,
    mynetworks: Arc<MatchList>,
    own_addrs: Arc<Vec<IpAddr>>,
}

impl ClientList {
    pub(crate) fn build(
        items: &[String],
        param: &str,
        origin: &Origin,
        parent: bool,
        mynetworks: Arc<MatchList>,
        own_addrs: Arc<Vec<IpAddr>>,
    ) -> (ClientList, Vec<Error>) {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for item in items {
            match item.to_ascii_lowercase().as_str() {
                "permit_mynetworks" => out.push(ClientItem::Mynetworks),
                "permit_sasl_authenticated" => out.push(ClientItem::SaslAuthenticated),
                "permit_inet_interfaces" => out.push(ClientItem::InetInterfaces),
                _ => match parse_entry(
                    ListKind::Clients,
                    param,
                    item,
                    false,
                    origin,
                    0,
                    &mut errors,
                ) {
                    Parsed::One(e) => out.push(ClientItem::Pattern(e)),
                    Parsed::Many(v) => out.extend(v.into_iter().map(ClientItem::Pattern)),
                    Parsed::Bad => {}
                },
            }
        }
        let list = ClientList {
            items: out,
            parent,
            mynetworks,
            own_addrs,
        };
        (list, errors)
    }

    /// True when the client at `addr` (authenticated or not) is in the
    /// list. The first item that matches decides; a `!` item that matches
    /// means "not in the list". A table that cannot be searched counts as
    /// no match.
    pub fn matches(&self, addr: IpAddr, sasl_authenticated: bool) -> bool {
        let addr = normalize(addr);
        for item in &self.items {
            match item {
                ClientItem::Mynetworks => {
                    if self
                        .mynetworks
                        .match_client(None, Some(addr))
                        .unwrap_or(false)
                    {
                        return true;
                    }
                }
                ClientItem::SaslAuthenticated => {
                    if sasl_authenticated {
                        return true;
                    }
                }
                ClientItem::InetInterfaces => {
                    if self.own_addrs.contains(&addr) {
                        return true;
                    }
                }
                ClientItem::Pattern(e) => {
                    if entry_matches(e, self.parent, None, Some(addr)).unwrap_or(false) {
                        return !e.negate;
                    }
                }
            }
        }
        false
    }
}

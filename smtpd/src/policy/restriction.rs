//! Restriction lists (smtpd_*_restrictions, smtpd_restriction_classes)
//! parsed once into typed [`Step`]s, with the tables of check_*_access
//! opened up front. Unknown names, Postfix restrictions postern does not
//! implement and check_*_access without a table are configuration errors
//! naming the parameter and where it was set.

use conf::tables::Table;
use conf::{Error, Origin};
use std::collections::HashMap;

/// What a check_*_access restriction looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessKind {
    /// check_client_access: host name and address.
    Client,
    /// check_helo_access: the HELO/EHLO name.
    Helo,
    /// check_sender_access: the MAIL FROM address.
    Sender,
    /// check_recipient_access: the RCPT TO address.
    Recipient,
    /// check_sasl_access: the SASL login name.
    Sasl,
}

/// One restriction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Permit,
    Reject,
    Defer,
    DeferIfPermit,
    DeferIfReject,
    WarnIfReject,
    RejectUnauthPipelining,
    RejectPlaintextSession,
    PermitMynetworks,
    PermitInetInterfaces,
    PermitSaslAuthenticated,
    RejectUnknownClientHostname,
    /// check_*_access with the index of its table.
    Access(AccessKind, usize),
    /// A bare `type:table`: the access type of the list it is in.
    BareTable(usize),
    RejectInvalidHeloHostname,
    RejectNonFqdnHeloHostname,
    RejectUnknownHeloHostname,
    RejectNonFqdnSender,
    RejectUnknownSenderDomain,
    RejectUnlistedSender,
    RejectNonFqdnRecipient,
    RejectUnknownRecipientDomain,
    RejectUnlistedRecipient,
    PermitAuthDestination,
    RejectUnauthDestination,
    DeferUnauthDestination,
    /// A restriction class (index into the class lists).
    Class(usize),
}

/// Restriction names postern implements (with Postfix's older aliases),
/// as listed in errors and the manual.
pub(crate) const SUPPORTED: &[(&str, Step)] = &[
    ("permit", Step::Permit),
    ("reject", Step::Reject),
    ("defer", Step::Defer),
    ("defer_if_permit", Step::DeferIfPermit),
    ("defer_if_reject", Step::DeferIfReject),
    ("warn_if_reject", Step::WarnIfReject),
    ("reject_unauth_pipelining", Step::RejectUnauthPipelining),
    ("reject_plaintext_session", Step::RejectPlaintextSession),
    ("permit_mynetworks", Step::PermitMynetworks),
    ("permit_inet_interfaces", Step::PermitInetInterfaces),
    ("permit_sasl_authenticated", Step::PermitSaslAuthenticated),
    (
        "reject_unknown_client_hostname",
        Step::RejectUnknownClientHostname,
    ),
    ("reject_unknown_client", Step::RejectUnknownClientHostname),
    (
        "reject_invalid_helo_hostname",
        Step::RejectInvalidHeloHostname,
    ),
    ("reject_invalid_hostname", Step::RejectInvalidHeloHostname),
    (
        "reject_non_fqdn_helo_hostname",
        Step::RejectNonFqdnHeloHostname,
    ),
    ("reject_non_fqdn_hostname", Step::RejectNonFqdnHeloHostname),
    (
        "reject_unknown_helo_hostname",
        Step::RejectUnknownHeloHostname,
    ),
    ("reject_unknown_hostname", Step::RejectUnknownHeloHostname),
    ("reject_non_fqdn_sender", Step::RejectNonFqdnSender),
    (
        "reject_unknown_sender_domain",
        Step::RejectUnknownSenderDomain,
    ),
    ("reject_unknown_address", Step::RejectUnknownSenderDomain),
    ("reject_unlisted_sender", Step::RejectUnlistedSender),
    ("reject_non_fqdn_recipient", Step::RejectNonFqdnRecipient),
    (
        "reject_unknown_recipient_domain",
        Step::RejectUnknownRecipientDomain,
    ),
    ("reject_unlisted_recipient", Step::RejectUnlistedRecipient),
    ("check_recipient_maps", Step::RejectUnlistedRecipient),
    ("permit_auth_destination", Step::PermitAuthDestination),
    ("reject_unauth_destination", Step::RejectUnauthDestination),
    ("defer_unauth_destination", Step::DeferUnauthDestination),
];

/// The check_*_access restrictions postern implements.
pub(crate) const ACCESS: &[(&str, AccessKind)] = &[
    ("check_client_access", AccessKind::Client),
    ("check_helo_access", AccessKind::Helo),
    ("check_sender_access", AccessKind::Sender),
    ("check_recipient_access", AccessKind::Recipient),
    ("check_sasl_access", AccessKind::Sasl),
];

/// Postfix restrictions postern does not implement, with the number of
/// arguments each takes (so the argument is not reported as well).
const UNSUPPORTED: &[(&str, usize)] = &[
    ("permit_tls_clientcerts", 0),
    ("permit_tls_all_clientcerts", 0),
    ("permit_mx_backup", 0),
    ("reject_unknown_reverse_client_hostname", 0),
    ("reject_unknown_forward_client_hostname", 0),
    ("reject_unverified_sender", 0),
    ("reject_unverified_recipient", 0),
    ("reject_sender_login_mismatch", 0),
    ("reject_authenticated_sender_login_mismatch", 0),
    ("reject_known_sender_login_mismatch", 0),
    ("reject_unauthenticated_sender_login_mismatch", 0),
    ("reject_multi_recipient_bounce", 0),
    ("reject_maps_rbl", 0),
    ("check_relay_domains", 0),
    ("permit_naked_ip_address", 0),
    ("reject_rbl_client", 1),
    ("reject_rbl", 1),
    ("reject_rhsbl_client", 1),
    ("reject_rhsbl_reverse_client", 1),
    ("reject_rhsbl_helo", 1),
    ("reject_rhsbl_sender", 1),
    ("reject_rhsbl_recipient", 1),
    ("permit_dnswl_client", 1),
    ("permit_rhswl_client", 1),
    ("check_policy_service", 1),
    ("sleep", 1),
    ("check_ccert_access", 1),
    ("check_reverse_client_hostname_access", 1),
    ("check_client_ns_access", 1),
    ("check_client_mx_access", 1),
    ("check_client_a_access", 1),
    ("check_reverse_client_hostname_ns_access", 1),
    ("check_reverse_client_hostname_mx_access", 1),
    ("check_reverse_client_hostname_a_access", 1),
    ("check_helo_ns_access", 1),
    ("check_helo_mx_access", 1),
    ("check_helo_a_access", 1),
    ("check_sender_ns_access", 1),
    ("check_sender_mx_access", 1),
    ("check_sender_a_access", 1),
    ("check_recipient_ns_access", 1),
    ("check_recipient_mx_access", 1),
    ("check_recipient_a_access", 1),
    ("check_etrn_access", 1),
    ("check_address_map", 1),
];

/// The tables of all check_*_access restrictions, each opened once.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    list: Vec<Box<dyn Table>>,
    index: HashMap<String, usize>,
}

impl Tables {
    /// The table with index `i` (from [`Step::Access`] or [`Step::BareTable`]).
    pub(crate) fn get(&self, i: usize) -> Option<&dyn Table> {
        self.list.get(i).map(|t| t.as_ref())
    }

    fn open(&mut self, spec: &str, origin: &Origin) -> Result<usize, Vec<Error>> {
        if let Some(i) = self.index.get(spec) {
            return Ok(*i);
        }
        let t = conf::tables::open(spec, origin)?;
        self.list.push(t);
        let i = self.list.len() - 1;
        self.index.insert(spec.to_string(), i);
        Ok(i)
    }
}

enum Name {
    Simple(Step),
    Access(AccessKind),
    Unsupported(usize),
    Class(usize),
}

fn lookup_name(name: &str, classes: &HashMap<String, usize>) -> Option<Name> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, s)) = SUPPORTED.iter().find(|(n, _)| *n == lower) {
        return Some(Name::Simple(s.clone()));
    }
    if let Some((_, k)) = ACCESS.iter().find(|(n, _)| *n == lower) {
        return Some(Name::Access(*k));
    }
    if let Some((_, args)) = UNSUPPORTED.iter().find(|(n, _)| *n == lower) {
        return Some(Name::Unsupported(*args));
    }
    classes.get(name).map(|c| Name::Class(*c))
}

/// All supported names, for error messages.
fn supported_names() -> String {
    let mut v: Vec<&str> = SUPPORTED
        .iter()
        .map(|(n, _)| *n)
        .chain(ACCESS.iter().map(|(n, _)| *n))
        .collect();
    v.sort_unstable();
    v.join(", ")
}

/// The closest supported name, if it is close enough to be a typo.
fn suggestion(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    SUPPORTED
        .iter()
        .map(|(n, _)| *n)
        .chain(ACCESS.iter().map(|(n, _)| *n))
        .map(|n| (distance(&lower, n), n))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses the lists of one configuration, sharing tables and classes.
pub(crate) struct Parser<'a> {
    pub tables: &'a mut Tables,
    pub classes: &'a HashMap<String, usize>,
}

impl Parser<'_> {
    /// Parses `items`, the split value of restriction parameter `param` set
    /// at `origin`. `bare_tables` says whether a bare `type:table` is
    /// allowed (every list but smtpd_data_restrictions).
    ///
    /// # Errors
    /// Every bad item.
    pub(crate) fn parse(
        &mut self,
        param: &str,
        items: &[String],
        origin: &Origin,
        bare_tables: bool,
    ) -> Result<Vec<Step>, Vec<Error>> {
        let mut steps = Vec::new();
        let mut errors = Vec::new();
        let bad = |value: &str, allowed: String| Error::BadValue {
            origin: origin.clone(),
            name: param.to_string(),
            value: value.to_string(),
            allowed,
        };
        let mut i = 0;
        while i < items.len() {
            let item = items[i].as_str();
            i += 1;
            if item.contains(':') || item.starts_with('{') {
                if !bare_tables {
                    errors.push(bad(
                        item,
                        "a lookup table here needs check_client_access, check_helo_access, \
                         check_sender_access or check_recipient_access before it"
                            .into(),
                    ));
                    continue;
                }
                match self.tables.open(item, origin) {
                    Ok(t) => steps.push(Step::BareTable(t)),
                    Err(e) => errors.extend(e),
                }
                continue;
            }
            match lookup_name(item, self.classes) {
                Some(Name::Simple(s)) => steps.push(s),
                Some(Name::Class(c)) => steps.push(Step::Class(c)),
                Some(Name::Access(kind)) => {
                    let Some(spec) = items.get(i).filter(|s| s.contains(':')) else {
                        errors.push(bad(
                            item,
                            format!(
                                "{item} needs a lookup table (maptype:mapname), e.g. \
                                 {item} hash:/etc/postern/access"
                            ),
                        ));
                        continue;
                    };
                    i += 1;
                    match self.tables.open(spec, origin) {
                        Ok(t) => steps.push(Step::Access(kind, t)),
                        Err(e) => errors.extend(e),
                    }
                }
                Some(Name::Unsupported(args)) => {
                    errors.push(bad(
                        item,
                        format!(
                            "this Postfix restriction is not supported by postern; remove it or use one of: {}",
                            supported_names()
                        ),
                    ));
                    i += args.min(items.len() - i);
                }
                None => {
                    let hint = suggestion(item)
                        .map(|s| format!("did you mean {s}? "))
                        .unwrap_or_default();
                    errors.push(bad(
                        item,
                        format!(
                            "unknown restriction; {hint}postern supports: {}, and the names in smtpd_restriction_classes",
                            supported_names()
                        ),
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(steps)
        } else {
            Err(errors)
        }
    }
}

/// Parses restrictions found in an access table result. Only restrictions
/// without arguments and restriction classes are allowed there (tables must
/// be opened at start-up, as in Postfix).
///
/// # Errors
/// The first bad name, as a message for the log.
pub(crate) fn parse_runtime(
    value: &str,
    classes: &HashMap<String, usize>,
) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for item in conf::values::split_list(value) {
        match lookup_name(&item, classes) {
            Some(Name::Simple(s)) => steps.push(s),
            Some(Name::Class(c)) => steps.push(Step::Class(c)),
            Some(Name::Access(_)) => {
                return Err(format!(
                    "restriction {item}: bad argument: need maptype:mapname"
                ));
            }
            Some(Name::Unsupported(_)) => {
                return Err(format!(
                    "restriction \"{item}\" is not supported by postern"
                ));
            }
            None => return Err(format!("unknown smtpd restriction: \"{item}\"")),
        }
    }
    Ok(steps)
}

/// Postfix has_required(): the list contains a restriction that refuses
/// mail by default (reject_unauth_destination, defer_unauth_destination,
/// reject, defer, defer_if_permit), looking into restriction classes. A
/// `permit` ends the search (what follows it never runs) and a
/// `warn_if_reject` disarms the next restriction.
pub(crate) fn has_required(steps: &[Step], classes: &[Vec<Step>], depth: usize) -> bool {
    let mut i = 0;
    while i < steps.len() {
        match &steps[i] {
            Step::WarnIfReject if i + 1 < steps.len() => {
                i += 2;
                continue;
            }
            Step::Permit => return false,
            Step::Reject
            | Step::Defer
            | Step::DeferIfPermit
            | Step::RejectUnauthDestination
            | Step::DeferUnauthDestination => return true,
            Step::Class(c)
                if depth < 100
                    && classes
                        .get(*c)
                        .is_some_and(|l| has_required(l, classes, depth + 1)) =>
            {
                return true;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &str) -> Result<Vec<Step>, Vec<String>> {
        let mut tables = Tables::default();
        let classes = HashMap::from([("myclass".to_string(), 0)]);
        let mut p = Parser {
            tables: &mut tables,
            classes: &classes,
        };
        let origin = Origin::File {
            path: "/etc/postern/main.cf".into(),
            line: 12,
        };
        p.parse(
            "smtpd_recipient_restrictions",
            &conf::values::split_list(items),
            &origin,
            true,
        )
        .map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn every_supported_name_parses() {
        for (name, step) in SUPPORTED {
            assert_eq!(parse(name).unwrap(), vec![step.clone()], "{name}");
            assert_eq!(
                parse(&name.to_ascii_uppercase()).unwrap(),
                vec![step.clone()],
                "{name}"
            );
        }
        for (name, kind) in ACCESS {
            assert_eq!(
                parse(&format!("{name} inline:{{a=OK}}")).unwrap(),
                vec![Step::Access(*kind, 0)],
                "{name}"
            );
        }
        assert_eq!(
            parse("myclass, static:OK").unwrap(),
            vec![Step::Class(0), Step::BareTable(0)]
        );
        assert_eq!(
            parse("check_client_access inline:{a=OK} check_sender_access inline:{a=OK}").unwrap(),
            vec![
                Step::Access(AccessKind::Client, 0),
                Step::Access(AccessKind::Sender, 0)
            ],
            "the same table is opened once"
        );
    }

    #[test]
    fn bad_names_are_reported_with_file_and_line() {
        let e = parse("permit_mynetworks reject_unauth_destinaton").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "/etc/postern/main.cf:12: bad value for smtpd_recipient_restrictions: \"reject_unauth_destinaton\": \
                 unknown restriction; did you mean reject_unauth_destination? postern supports: "
            ),
            "{e:?}"
        );
        let e =
            parse("reject_rbl_client zen.spamhaus.org, check_policy_service inet:127.0.0.1:10023")
                .unwrap_err();
        assert_eq!(e.len(), 2, "arguments are not reported separately: {e:?}");
        assert!(e[0].contains("not supported by postern"), "{e:?}");
        let e = parse("check_sender_access").unwrap_err();
        assert!(e[0].contains("needs a lookup table"), "{e:?}");
        let e = parse("check_sender_access permit").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        let e = parse("check_client_access hash:/nonexistent/postern/access").unwrap_err();
        assert!(
            e[0].contains("cannot read /nonexistent/postern/access"),
            "{e:?}"
        );
        let e = parse("bogus1, bogus2").unwrap_err();
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn runtime_lists() {
        let classes = HashMap::from([("c".to_string(), 3)]);
        assert_eq!(
            parse_runtime("permit_mynetworks, reject c", &classes).unwrap(),
            vec![Step::PermitMynetworks, Step::Reject, Step::Class(3)]
        );
        assert!(parse_runtime("check_client_access", &classes).is_err());
        assert!(parse_runtime("reject_rbl_client", &classes).is_err());
        assert_eq!(
            parse_runtime("bogus", &classes).unwrap_err(),
            "unknown smtpd restriction: \"bogus\""
        );
    }

    #[test]
    fn required_restrictions() {
        use Step::*;
        let classes = vec![vec![RejectUnauthDestination], vec![Class(1)]];
        assert!(has_required(
            &[PermitMynetworks, RejectUnauthDestination],
            &classes,
            0
        ));
        assert!(!has_required(
            &[PermitMynetworks, Permit, RejectUnauthDestination],
            &classes,
            0
        ));
        assert!(!has_required(
            &[WarnIfReject, RejectUnauthDestination],
            &classes,
            0
        ));
        assert!(!has_required(&[WarnIfReject], &[], 0));
        assert!(has_required(&[Class(0)], &classes, 0));
        assert!(!has_required(&[Class(1)], &classes, 0), "a class loop ends");
        assert!(has_required(&[DeferIfPermit], &classes, 0));
        assert!(!has_required(&[PermitAuthDestination], &classes, 0));
    }
}

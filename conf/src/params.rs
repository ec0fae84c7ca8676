//! The parameter registry: every main.cf parameter postern knows, with its
//! type, its Postfix-syntax default and a one-line description. From this one
//! table come the typed [`Config`], `postconf -d`, and the parameter list of
//! the postern.cf(5) manual page (a test checks that the manual documents each
//! parameter).

use crate::error::{Error, Errors, Origin};
use crate::expand::expand;
use crate::maincf::MainCf;
use crate::values;
use std::collections::HashMap;
use std::time::Duration;

/// The type of a parameter, which fixes how its value is parsed and described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// `yes` or `no`.
    Bool,
    /// A whole number within bounds.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A time with a unit (s, m, h, d, w); `unit` applies to bare numbers.
    Time {
        /// Unit of a bare number.
        unit: char,
    },
    /// A size in bytes.
    Size,
    /// A list of items separated by commas or white space.
    List,
    /// A list of lookup tables (`type:name`), searched in order.
    Maps,
    /// One word from a fixed set.
    Choice(&'static [&'static str]),
    /// `N/period`, e.g. `30/60s` or `10000/24h` (0 or empty: no limit).
    Rate,
}

impl Kind {
    /// How the type is described in errors and the manual.
    pub fn describe(&self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Bool => "yes or no".into(),
            Kind::Int { min, max } if *max == i64::MAX => format!("a whole number >= {min}"),
            Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Time { unit } => format!("a time (s, m, h, d, w; bare numbers in '{unit}')"),
            Kind::Size => "a size in bytes".into(),
            Kind::List => "a list separated by commas or spaces".into(),
            Kind::Maps => "a list of lookup tables, type:name".into(),
            Kind::Choice(c) => format!("one of: {}", c.join(", ")),
            Kind::Rate => "a count per time, e.g. 30/60s or 10000/24h (0: no limit)".into(),
        }
    }
}

/// One parameter of the registry.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// The main.cf name.
    pub name: &'static str,
    /// The type.
    pub kind: Kind,
    /// The default as `postconf -d` prints it (may contain `$name`). For
    /// parameters computed at run time (myhostname, mydomain, ...) this is
    /// empty and [`computed_default`] supplies the value.
    pub default: &'static str,
    /// One-line description.
    pub doc: &'static str,
}

/// Conversion from a parameter's expanded text to a typed field value.
pub trait FromParam: Sized {
    /// Parses `s` according to `kind`.
    ///
    /// # Errors
    /// A description of what is allowed.
    fn from_param(kind: Kind, s: &str) -> Result<Self, String>;
}

impl FromParam for String {
    fn from_param(kind: Kind, s: &str) -> Result<Self, String> {
        if let Kind::Choice(allowed) = kind {
            let v = s.trim();
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
                return Ok(v.to_ascii_lowercase());
            }
            return Err(format!("expected one of: {}", allowed.join(", ")));
        }
        Ok(s.trim().to_string())
    }
}

impl FromParam for bool {
    fn from_param(_: Kind, s: &str) -> Result<Self, String> {
        values::parse_bool(s)
    }
}

impl FromParam for i64 {
    fn from_param(kind: Kind, s: &str) -> Result<Self, String> {
        match kind {
            Kind::Int { min, max } => values::parse_int(s, min, max),
            _ => values::parse_int(s, i64::MIN, i64::MAX),
        }
    }
}

impl FromParam for Duration {
    fn from_param(kind: Kind, s: &str) -> Result<Self, String> {
        match kind {
            Kind::Time { unit } => values::parse_time(s, unit),
            _ => values::parse_time(s, 's'),
        }
    }
}

impl FromParam for u64 {
    fn from_param(_: Kind, s: &str) -> Result<Self, String> {
        values::parse_size(s)
    }
}

/// A limit of `count` events per sliding window of `per`; `count` 0 means
/// no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// Events allowed per window (0: unlimited).
    pub count: u64,
    /// The window.
    pub per: Duration,
}

impl RateLimit {
    /// True when there is no limit.
    pub fn unlimited(&self) -> bool {
        self.count == 0
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.count, self.per.as_secs())
    }
}

impl FromParam for RateLimit {
    fn from_param(_: Kind, s: &str) -> Result<Self, String> {
        let t = s.trim();
        let err =
            || "expected a count per time, e.g. 30/60s or 10000/24h (0: no limit)".to_string();
        if t.is_empty() || t == "0" {
            return Ok(RateLimit {
                count: 0,
                per: Duration::from_secs(1),
            });
        }
        let (n, per) = t.split_once('/').ok_or_else(err)?;
        let count: u64 = n.trim().parse().map_err(|_| err())?;
        let per = values::parse_time(per, 's').map_err(|_| err())?;
        if per.is_zero() {
            return Err(err());
        }
        Ok(RateLimit { count, per })
    }
}

impl FromParam for Vec<String> {
    fn from_param(kind: Kind, s: &str) -> Result<Self, String> {
        let items = values::split_list(s);
        if kind == Kind::Maps {
            for it in &items {
                if !it.contains(':') {
                    return Err(format!(
                        "\"{it}\" is not a lookup table; expected type:name, e.g. hash:/etc/postern/transport"
                    ));
                }
            }
        }
        Ok(items)
    }
}

macro_rules! registry {
    ($( $field:ident $( as $pname:literal )? : $ty:ty, $kind:expr, $default:expr, $doc:expr; )*) => {
        /// Every parameter postern knows, in registry order.
        pub static PARAMS: &[ParamDef] = &[
            $( ParamDef {
                name: registry!(@name $field $( $pname )?),
                kind: $kind,
                default: $default,
                doc: $doc,
            }, )*
        ];

        /// The typed configuration of one program or service: every registry
        /// parameter, expanded and validated once.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( #[doc = $doc] pub $field: $ty, )*
            /// Raw values and origins, for parameters outside the registry
            /// (user-defined names, per-transport names such as
            /// `relay_destination_concurrency_limit`) and for `postconf`.
            pub resolver: Resolver,
        }

        impl Config {
            /// Every parameter typed; a bad value is reported in the
            /// returned errors and replaced by the parameter's default.
            fn from_resolver(resolver: Resolver) -> (Config, Errors) {
                let mut errors = Errors::default();
                let cfg = Config {
                    $( $field: resolver.typed::<$ty>(
                        registry!(@name $field $( $pname )?), $kind, &mut errors), )*
                    resolver,
                };
                (cfg, errors)
            }
        }
    };
    (@name $field:ident $pname:literal) => { $pname };
    (@name $field:ident) => { stringify!($field) };
}

use Kind::*;

const TIME_S: Kind = Time { unit: 's' };
const TIME_H: Kind = Time { unit: 'h' };
const TIME_D: Kind = Time { unit: 'd' };
const NONNEG: Kind = Int {
    min: 0,
    max: i64::MAX,
};
const POSITIVE: Kind = Int {
    min: 1,
    max: i64::MAX,
};

const TLS_LEVELS: &[&str] = &[
    "none",
    "may",
    "encrypt",
    "verify",
    "secure",
    "dane",
    "dane-only",
];
const FACILITIES: &[&str] = &[
    "mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];

registry! {
    // --- Locations and identity -------------------------------------------------
    config_directory: String, Text, "/etc/postern",
        "Directory with main.cf and master.cf; programs also honour MAIL_CONFIG and -c.";
    queue_directory: String, Text, "/var/spool/postern",
        "Root of the mail queue: maildrop, incoming, active, deferred, hold, corrupt and the index.";
    queue_minfree: i64, NONNEG, "0",
        "Free space (bytes) the queue file system must keep; smtpd refuses MAIL with 452 4.3.1 below it or below 1.5 times the SIZE announced.";
    data_directory: String, Text, "/var/lib/postern",
        "Directory for postern's own writable data other than the queue (token caches, locks).";
    daemon_directory: String, Text, "/usr/lib/postern",
        "Directory with the daemon programs (qmgr, smtp, pickup, smtpd); unset in a build tree means beside postern itself.";
    command_directory: String, Text, "/usr/sbin",
        "Directory with the administrative commands (postern, postqueue, postsuper, postconf, postcat, postmap).";
    mail_owner: String, Text, "postern",
        "Unprivileged account the daemons run as when started by root; it owns the queue.";
    mail_name: String, Text, "postern",
        "Name of the mail system, used in Received: headers and the SMTP greeting.";
    mail_version: String, Text, "",
        "Version of postern (read-only).";
    myhostname: String, Text, "",
        "Internet host name of this mail system; default: the system's fully qualified host name.";
    mydomain: String, Text, "",
        "Internet domain name of this mail system; default: $myhostname without its first label.";
    myorigin: String, Text, "$myhostname",
        "Domain appended to unqualified addresses of locally submitted mail.";
    mydestination: Vec<String>, List, "$myhostname, localhost.$mydomain, localhost",
        "Domains this machine considers its own: their recipients go through alias_maps and local_transport.";
    inet_interfaces: Vec<String>, List, "all",
        "Network interface addresses the SMTP server listens on (all, loopback-only, or addresses).";
    inet_protocols: Vec<String>, List, "all",
        "Internet protocols to use: ipv4, ipv6 or all.";
    compatibility_level: String, Text, "3.6",
        "Postfix compatibility level whose defaults postern follows (accepted for Postfix configurations).";

    // --- Logging ----------------------------------------------------------------
    syslog_name: String, Text, "postern",
        "Prefix of the syslog ident: programs log as $syslog_name/<program>[pid].";
    syslog_facility: String, Choice(FACILITIES), "mail",
        "Syslog facility of postern's log lines.";
    maillog_file: String, Text, "",
        "Write log lines to this file (or /dev/stdout, /dev/stderr) instead of syslog.";
    delay_logging_resolution_limit: i64, Int { min: 0, max: 6 }, "2",
        "Maximal number of decimals in delay= and delays= log fields.";

    // --- Monitoring ---------------------------------------------------------------
    metrics_listen: String, Text, "",
        "Where qmgr serves Prometheus metrics over HTTP: a port (on 127.0.0.1) or IP:port; empty turns it off; a non-loopback IP only when written out.";

    // --- Message limits -----------------------------------------------------------
    message_size_limit: u64, Size, "10240000",
        "Largest message (headers and body, bytes) accepted; 0 means no limit.";
    hopcount_limit: i64, POSITIVE, "50",
        "Largest number of Received: headers before a message is bounced as looping.";

    // --- Drop folder (pickup) -------------------------------------------------------
    drop_directory: String, Text, "",
        "Directory (IIS Pickup style) whose plain RFC 5322 files pickup sends as sendmail -t would, then removes; empty turns it off.";
    drop_badmail_directory: String, Text, "${drop_directory?{$drop_directory/../badmail}}",
        "Where pickup moves drop files it refuses, each with a <name>.reason file saying why (IIS Badmail).";
    drop_settle_time: Duration, TIME_S, "2s",
        "A drop file is taken only when it has not changed for this long and looked the same at two scans.";

    // --- Address rewriting and headers -------------------------------------------
    append_at_myorigin: bool, Bool, "yes",
        "Append @$myorigin to locally submitted addresses without a domain.";
    append_dot_mydomain: bool, Bool, "no",
        "Append .$mydomain to addresses whose domain has no dot.";
    recipient_delimiter: String, Text, "",
        "Characters that separate a user name from an address extension (user+ext).";
    alias_maps: Vec<String>, Maps, "hash:/etc/aliases",
        "Alias tables (aliases(5) format) for recipients in $mydestination, as local(8) uses them.";
    alias_database: Vec<String>, Maps, "hash:/etc/aliases",
        "Alias tables that newaliases checks.";
    virtual_alias_maps: Vec<String>, Maps, "",
        "Tables that rewrite recipient addresses of any domain to one or more addresses.";
    canonical_maps: Vec<String>, Maps, "",
        "Tables that rewrite sender and recipient addresses in the envelope and headers.";
    sender_canonical_maps: Vec<String>, Maps, "",
        "Tables that rewrite sender addresses in the envelope and headers.";
    recipient_canonical_maps: Vec<String>, Maps, "",
        "Tables that rewrite recipient addresses in the envelope and headers.";
    canonical_classes: Vec<String>, List, "envelope_sender, envelope_recipient, header_sender, header_recipient",
        "Which addresses canonical_maps rewrites.";
    sender_canonical_classes: Vec<String>, List, "envelope_sender, header_sender",
        "Which addresses sender_canonical_maps rewrites.";
    recipient_canonical_classes: Vec<String>, List, "envelope_recipient, header_recipient",
        "Which addresses recipient_canonical_maps rewrites.";
    undisclosed_recipients_header: String, Text, "",
        "Header added when a message has no To: or Cc: header (empty: add none).";
    always_add_missing_headers: bool, Bool, "no",
        "Add missing From:, Date: and Message-ID: headers to all mail, not only to local submissions.";
    hfrom_format: String, Choice(&["standard", "obsolete"]), "standard",
        "Format of an added From: header: standard is \"Name <addr>\", obsolete \"addr (Name)\".";
    empty_address_recipient: String, Text, "MAILER-DAEMON",
        "Recipient of mail addressed to the null address.";

    // --- Routing ---------------------------------------------------------------------
    relayhost: String, Text, "",
        "Default next hop: [host]:port (no MX lookup), host:port or domain (MX lookup); empty means direct MX delivery.";
    transport_maps: Vec<String>, Maps, "",
        "Tables that map recipient addresses or domains to transport:nexthop.";
    default_transport: String, Text, "smtp",
        "Transport for recipients not in $mydestination or $relay_domains (transport or transport:nexthop).";
    relay_transport: String, Text, "relay",
        "Transport for recipients in $relay_domains.";
    local_transport: String, Text, "error:5.1.1 local delivery is not available on this relay; add the address to alias_maps or virtual_alias_maps",
        "Transport for recipients in $mydestination that no alias rewrote (postern has no local mailbox delivery).";
    relay_domains: Vec<String>, List, "",
        "Domains this machine relays mail to (with relay_transport).";
    sender_dependent_relayhost_maps: Vec<String>, Maps, "",
        "Tables that choose the relay host by envelope sender address or @domain.";
    sender_dependent_default_transport_maps: Vec<String>, Maps, "",
        "Tables that choose the default transport by envelope sender address or @domain.";

    // --- Queue and scheduling ------------------------------------------------------
    soft_bounce: bool, Bool, "no",
        "Defer instead of bouncing (for testing a configuration without losing mail).";
    maximal_queue_lifetime: Duration, TIME_D, "5d",
        "Time a message may stay in the queue before it is bounced as undeliverable.";
    bounce_queue_lifetime: Duration, TIME_D, "5d",
        "Time a bounce message may stay in the queue before it is discarded.";
    minimal_backoff_time: Duration, TIME_S, "300s",
        "Shortest time between delivery attempts of a deferred message.";
    maximal_backoff_time: Duration, TIME_S, "4000s",
        "Longest time between delivery attempts of a deferred message.";
    queue_run_delay: Duration, TIME_S, "300s",
        "Time between scans of the deferred queue for messages that are due.";
    delay_warning_time: Duration, TIME_H, "0h",
        "Send the sender a warning after a message has been delayed this long (0 turns warnings off).";
    qmgr_message_active_limit: i64, POSITIVE, "20000",
        "Largest number of messages in the active queue.";
    default_process_limit: i64, POSITIVE, "100",
        "Default maxproc of master.cf services: for a delivery agent, its number of simultaneous deliveries.";
    default_destination_concurrency_limit: i64, POSITIVE, "20",
        "Default largest number of parallel deliveries to one destination.";
    smtp_destination_concurrency_limit: i64, POSITIVE, "$default_destination_concurrency_limit",
        "Largest number of parallel deliveries to one destination with the smtp transport.";
    initial_destination_concurrency: i64, POSITIVE, "5",
        "Number of parallel deliveries a destination starts with before concurrency grows.";
    default_destination_recipient_limit: i64, POSITIVE, "50",
        "Default largest number of recipients per message delivery.";
    smtp_destination_recipient_limit: i64, POSITIVE, "$default_destination_recipient_limit",
        "Largest number of recipients per message delivery with the smtp transport.";
    default_destination_rate_delay: Duration, TIME_S, "0s",
        "Default pause between two deliveries to the same destination.";
    smtp_destination_rate_delay: Duration, TIME_S, "$default_destination_rate_delay",
        "Pause between two deliveries to the same destination with the smtp transport.";
    default_destination_concurrency_failed_cohort_limit: i64, POSITIVE, "1",
        "Connection failures in a row after which a destination is considered dead until its next retry.";

    // --- Notifications -------------------------------------------------------------------
    notify_classes: Vec<String>, List, "resource, software",
        "Problem classes reported to the postmaster: bounce, 2bounce, delay, policy, protocol, resource, software.";
    bounce_notice_recipient: String, Text, "postmaster",
        "Recipient of postmaster copies of bounces (notify_classes bounce).";
    double_bounce_notice_recipient as "2bounce_notice_recipient": String, Text, "postmaster",
        "Recipient of undeliverable bounces (notify_classes 2bounce).";
    delay_notice_recipient: String, Text, "postmaster",
        "Recipient of postmaster copies of delay warnings (notify_classes delay).";
    double_bounce_sender: String, Text, "double-bounce",
        "Sender of postmaster notices; mail to it is discarded, which ends bounce loops.";
    bounce_size_limit: i64, POSITIVE, "50000",
        "Largest amount of the original message (bytes) returned in a bounce.";

    // --- Message tracking (postern log) ----------------------------------------------------
    tracking_retention_time: Duration, TIME_D, "90d",
        "How long the queue index keeps each accepted message and delivery attempt for postern log (0 turns tracking off).";
    tracking_subject: bool, Bool, "no",
        "Also record each message's Subject header for postern log.";

    // --- SMTP server (smtpd) ---------------------------------------------------------------
    smtpd_banner: String, Text, "$myhostname ESMTP $mail_name",
        "Text after the 220 code of the SMTP server's greeting.";
    mynetworks: Vec<String>, List, "",
        "Trusted clients (network/prefix, [ipv6]/prefix, type:table) that may relay; default: per mynetworks_style.";
    mynetworks_style: String, Choice(&["host", "subnet", "class"]), "host",
        "Default mynetworks: host (this machine's addresses only), subnet (its local subnets) or class.";
    parent_domain_matches_subdomains: Vec<String>, List, "debug_peer_list, fast_flush_domains, mynetworks, permit_mx_backup_networks, qmqpd_authorized_clients, relay_domains, smtpd_access_maps",
        "Features where example.com also matches subdomains (otherwise write .example.com).";
    smtpd_delay_reject: bool, Bool, "yes",
        "Evaluate client, HELO and sender restrictions at RCPT TO, so rejections name the recipient.";
    smtpd_client_restrictions: Vec<String>, List, "",
        "Restrictions applied to the client's address and name.";
    smtpd_helo_restrictions: Vec<String>, List, "",
        "Restrictions applied to the HELO/EHLO name.";
    smtpd_sender_restrictions: Vec<String>, List, "",
        "Restrictions applied to the MAIL FROM address.";
    smtpd_relay_restrictions: Vec<String>, List, "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        "Relay control, applied at RCPT TO before smtpd_recipient_restrictions.";
    smtpd_recipient_restrictions: Vec<String>, List, "",
        "Restrictions applied to each RCPT TO address, after smtpd_relay_restrictions.";
    smtpd_data_restrictions: Vec<String>, List, "",
        "Restrictions applied to the DATA and BDAT commands.";
    smtpd_helo_required: bool, Bool, "no",
        "Require HELO or EHLO before MAIL FROM.";
    smtpd_null_access_lookup_key: String, Text, "<>",
        "Key looked up in access tables for the null sender.";
    strict_rfc821_envelopes: bool, Bool, "no",
        "Require <> around MAIL FROM and RCPT TO addresses and no comments.";
    disable_vrfy_command: bool, Bool, "yes",
        "Refuse VRFY (postern's default differs from Postfix: a relay has nobody to verify).";
    smtpd_recipient_limit: i64, POSITIVE, "1000",
        "Most recipients accepted per message.";
    smtpd_recipient_overshoot_limit: i64, NONNEG, "1000",
        "Recipients refused for smtpd_recipient_limit in one transaction before each further one counts as an error.";
    smtpd_timeout: Duration, TIME_S, "300s",
        "Time limit for reading a client command or data, and for sending a reply.";
    smtpd_per_request_deadline: bool, Bool, "no",
        "Make smtpd_timeout a limit for receiving a whole command line, DATA text or BDAT chunk, not for each read; cuts off clients that trickle bytes.";
    smtpd_min_data_rate: i64, POSITIVE, "500",
        "With smtpd_per_request_deadline, the bytes per second of DATA and BDAT text that earn back deadline time, up to smtpd_timeout.";
    smtpd_starttls_timeout: Duration, TIME_S, "300s",
        "Time limit for the TLS handshake after STARTTLS or at connect (wrapper mode).";
    smtpd_hard_error_limit: i64, POSITIVE, "20",
        "Errors after which the server disconnects.";
    smtpd_soft_error_limit: i64, NONNEG, "10",
        "Errors after which each error reply is delayed by smtpd_error_sleep_time.";
    smtpd_error_sleep_time: Duration, TIME_S, "1s",
        "Delay of error replies once smtpd_soft_error_limit is reached.";
    smtpd_junk_command_limit: i64, POSITIVE, "100",
        "Most NOOP, VRFY and RSET commands per session before each one counts as an error.";
    line_length_limit: i64, POSITIVE, "2048",
        "Longest SMTP command line accepted (at least 512 bytes are always allowed); message lines are stored as received.";
    header_size_limit: i64, POSITIVE, "102400",
        "Largest message header block (bytes) that is parsed; the rest is treated as body.";
    smtpd_client_connection_count_limit: i64, NONNEG, "50",
        "Most simultaneous connections from one client address (0: no limit).";
    smtpd_client_connection_rate_limit: i64, NONNEG, "0",
        "Most connections one client may make per anvil_rate_time_unit (0: no limit).";
    smtpd_client_message_rate_limit: i64, NONNEG, "0",
        "Most messages one client may send per anvil_rate_time_unit (0: no limit).";
    smtpd_client_auth_rate_limit: i64, NONNEG, "0",
        "Most AUTH commands one client may send per anvil_rate_time_unit (0: no limit).";
    smtpd_client_auth_failure_limit: i64, NONNEG, "5",
        "Most failed AUTH attempts per client per anvil_rate_time_unit before AUTH is refused (0: no limit).";
    smtpd_client_event_limit_exceptions: Vec<String>, List, "$mynetworks",
        "Clients exempt from the connection, rate and message limits (not from the failed-AUTH limit).";
    anvil_rate_time_unit: Duration, TIME_S, "60s",
        "Time unit of the per-client rate limits.";
    smtpd_forbid_bare_newline: String, Choice(&["normalize", "yes", "reject", "no"]), "normalize",
        "Bare LF in SMTP input: normalize (accept as line end; only CRLF.CRLF ends DATA), reject it, or no.";
    smtpd_forbid_bare_newline_exclusions: Vec<String>, List, "",
        "Clients excluded from smtpd_forbid_bare_newline (postern's default: none, even $mynetworks).";
    smtpd_forbid_bare_newline_reject_code: i64, Int { min: 400, max: 599 }, "550",
        "Reply code when smtpd_forbid_bare_newline = reject refuses a message.";
    smtpd_upstream_proxy_protocol: String, Choice(&["", "haproxy"]), "",
        "Expect the haproxy PROXY protocol (v1 or v2) from a load balancer before SMTP.";
    smtpd_upstream_proxy_timeout: Duration, TIME_S, "5s",
        "Time limit for reading the PROXY protocol header.";
    smtpd_peername_lookup: bool, Bool, "yes",
        "Look up the client's host name (reverse DNS, confirmed by a forward lookup).";
    smtputf8_enable: bool, Bool, "yes",
        "Offer SMTPUTF8 (UTF-8 addresses and headers).";
    local_header_rewrite_clients: Vec<String>, List, "permit_mynetworks, permit_sasl_authenticated",
        "Clients whose messages get missing Date, Message-Id and From headers added and header addresses rewritten.";

    // --- SMTP server TLS --------------------------------------------------------------------
    smtpd_tls_security_level: String, Choice(&["none", "may", "encrypt"]), "may",
        "TLS for incoming mail: none, may (offer STARTTLS when a certificate is configured) or encrypt (require it).";
    smtpd_tls_cert_file: String, Text, "",
        "Server certificate (PEM, with intermediate certificates after it); postern tls new-cert makes one.";
    smtpd_tls_key_file: String, Text, "$smtpd_tls_cert_file",
        "Private key (PEM) of smtpd_tls_cert_file.";
    smtpd_tls_protocols: String, Text, ">=TLSv1.2",
        "TLS protocols offered at the may level; e.g. >=TLSv1 on one listener for an old device.";
    smtpd_tls_mandatory_protocols: String, Text, ">=TLSv1.2",
        "TLS protocols allowed at the encrypt level and in wrapper mode.";
    smtpd_tls_ciphers: String, Choice(&["high", "medium", "low", "export", "null"]), "medium",
        "Cipher grade at the may level.";
    smtpd_tls_mandatory_ciphers: String, Choice(&["high", "medium", "low", "export", "null"]), "medium",
        "Cipher grade at the encrypt level and in wrapper mode.";
    smtpd_tls_wrappermode: bool, Bool, "no",
        "Implicit TLS (SMTPS, port 465): the handshake starts at connect.";
    smtpd_tls_loglevel: i64, Int { min: 0, max: 4 }, "1",
        "TLS logging: 1 logs each connection's protocol and cipher (postern's default; Postfix's is 0).";
    smtpd_tls_received_header: bool, Bool, "no",
        "Add the TLS protocol and cipher to the Received: header.";
    smtpd_tls_auth_only: bool, Bool, "yes",
        "Offer AUTH only inside TLS (postern's default; Postfix's is no).";

    // --- SMTP server authentication ----------------------------------------------------------
    smtpd_sasl_auth_enable: bool, Bool, "no",
        "Offer AUTH (PLAIN, LOGIN) against smtpd_sasl_password_file.";
    smtpd_sasl_password_file: String, Text, "$config_directory/smtpd_passwd",
        "postern's own user file for inbound AUTH (user:hashed password); postern passwd manages it.";
    smtpd_sasl_security_options: Vec<String>, List, "noanonymous",
        "SASL restrictions without TLS (noplaintext keeps PLAIN and LOGIN out of plaintext sessions).";
    smtpd_sasl_tls_security_options: Vec<String>, List, "$smtpd_sasl_security_options",
        "SASL restrictions inside TLS.";
    smtpd_sasl_authenticated_header: bool, Bool, "no",
        "Name the authenticated user in the Received: header.";

    // --- SMTP server reply codes and restriction classes --------------------------------------
    smtpd_restriction_classes: Vec<String>, List, "",
        "Names of restriction classes; each is defined as a main.cf parameter holding restrictions.";
    virtual_alias_domains: Vec<String>, List, "$virtual_alias_maps",
        "Domains whose every address is rewritten by virtual_alias_maps (unknown ones are rejected).";
    proxy_interfaces: Vec<String>, List, "",
        "Addresses this host receives mail on through a proxy or NAT (count as its own addresses).";
    reject_code: i64, Int { min: 400, max: 599 }, "554",
        "Reply code of the reject restriction.";
    defer_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of the defer restriction and of access table DEFER_IF_* results resolved as defer.";
    relay_domains_reject_code: i64, Int { min: 400, max: 599 }, "554",
        "Reply code when reject_unauth_destination refuses to relay.";
    access_map_reject_code: i64, Int { min: 400, max: 599 }, "554",
        "Reply code of an access table REJECT result.";
    access_map_defer_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of an access table DEFER result.";
    non_fqdn_reject_code: i64, Int { min: 400, max: 599 }, "504",
        "Reply code of reject_non_fqdn_sender, reject_non_fqdn_recipient and reject_non_fqdn_helo_hostname.";
    unknown_address_reject_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of reject_unknown_sender_domain and reject_unknown_recipient_domain when the domain does not exist.";
    unknown_hostname_reject_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of reject_unknown_helo_hostname.";
    invalid_hostname_reject_code: i64, Int { min: 400, max: 599 }, "501",
        "Reply code of reject_invalid_helo_hostname.";
    unknown_client_reject_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of reject_unknown_client_hostname.";
    plaintext_reject_code: i64, Int { min: 400, max: 599 }, "450",
        "Reply code of reject_plaintext_session.";
    unknown_virtual_alias_reject_code: i64, Int { min: 400, max: 599 }, "550",
        "Reply code for an unknown address in virtual_alias_domains.";
    reject_tempfail_action: String, Choice(&["defer_if_permit", "defer"]), "defer_if_permit",
        "What a restriction does when a lookup fails temporarily.";
    unknown_address_tempfail_action: String, Choice(&["defer_if_permit", "defer"]), "$reject_tempfail_action",
        "Temporary failure action of reject_unknown_sender_domain and reject_unknown_recipient_domain.";
    unknown_helo_hostname_tempfail_action: String, Choice(&["defer_if_permit", "defer"]), "$reject_tempfail_action",
        "Temporary failure action of reject_unknown_helo_hostname.";

    // --- SMTP client -----------------------------------------------------------------------
    smtp_helo_name: String, Text, "$myhostname",
        "Host name sent in the SMTP EHLO or HELO command.";
    smtp_connect_timeout: Duration, TIME_S, "30s",
        "Time limit for completing a TCP connection to the server.";
    smtp_helo_timeout: Duration, TIME_S, "300s",
        "Time limit for the greeting and the EHLO reply.";
    smtp_starttls_timeout: Duration, TIME_S, "300s",
        "Time limit for the STARTTLS exchange and the TLS handshake.";
    smtp_mail_timeout: Duration, TIME_S, "300s",
        "Time limit for the reply to MAIL FROM.";
    smtp_rcpt_timeout: Duration, TIME_S, "300s",
        "Time limit for the reply to RCPT TO.";
    smtp_data_init_timeout: Duration, TIME_S, "120s",
        "Time limit for the reply to DATA.";
    smtp_data_xfer_timeout: Duration, TIME_S, "180s",
        "Time limit for sending message content when the server stops reading.";
    smtp_data_done_timeout: Duration, TIME_S, "600s",
        "Time limit for the reply to the end of the message.";
    smtp_quit_timeout: Duration, TIME_S, "300s",
        "Time limit for the reply to QUIT.";
    smtp_skip_5xx_greeting: bool, Bool, "yes",
        "Try the next server (instead of bouncing) when a server greets with a 5xx reply.";
    smtp_always_send_ehlo: bool, Bool, "yes",
        "Always send EHLO at the start of a session.";
    smtp_host_lookup: Vec<String>, List, "dns",
        "How the client finds server addresses: dns, native (the system resolver), or both in order.";
    smtp_mx_address_limit: i64, NONNEG, "5",
        "Largest number of MX server addresses tried for one delivery (0: no limit).";
    smtp_mx_session_limit: i64, NONNEG, "2",
        "Largest number of SMTP sessions tried for one delivery (0: no limit).";
    smtp_tcp_port: String, Text, "smtp",
        "Port the client connects to when the next hop names none (a number or smtp, submission, submissions).";
    smtp_bind_address: String, Text, "",
        "Local IPv4 address the client connects from, e.g. the static address of an Exchange Online IP connector.";
    smtp_bind_address6: String, Text, "",
        "Local IPv6 address the client connects from.";
    smtp_bind_address_enforce: bool, Bool, "no",
        "Defer delivery when the client cannot bind to smtp_bind_address (or smtp_bind_address6), instead of connecting from any address.";
    smtp_address_preference: String, Choice(&["any", "ipv4", "ipv6"]), "any",
        "Address family tried first when a server has IPv4 and IPv6 addresses.";
    smtp_connection_cache_on_demand: bool, Bool, "yes",
        "Keep a session open when more mail for the same destination is waiting, and reuse it.";
    smtp_connection_cache_time_limit: Duration, TIME_S, "2s",
        "How long an unused cached session stays open.";
    smtp_connection_reuse_time_limit: Duration, TIME_S, "300s",
        "How long a session may be reused before it is closed.";
    smtp_connection_reuse_count_limit: i64, NONNEG, "0",
        "How many times a session may be reused (0: no limit).";
    smtp_line_length_limit: i64, NONNEG, "998",
        "Longest line sent; longer lines are folded (0: no limit).";

    // --- SMTP client TLS -----------------------------------------------------------------
    smtp_tls_security_level: String, Choice(TLS_LEVELS), "may",
        "TLS for outgoing mail: none, may (opportunistic), encrypt, verify or secure (certificate and name checked).";
    smtp_tls_wrappermode: bool, Bool, "no",
        "Use implicit TLS (SMTPS, port 465) instead of STARTTLS.";
    smtp_tls_cafile as "smtp_tls_CAfile": String, Text, "",
        "File with trusted CA certificates (PEM); empty means the system's trust store.";
    smtp_tls_capath as "smtp_tls_CApath": String, Text, "",
        "Directory with trusted CA certificates (hashed, as c_rehash makes).";
    smtp_tls_cert_file: String, Text, "",
        "Client certificate (PEM) presented to servers, e.g. for a certificate-based Exchange Online connector.";
    smtp_tls_key_file: String, Text, "$smtp_tls_cert_file",
        "Private key (PEM) of smtp_tls_cert_file.";
    smtp_tls_mandatory_protocols: String, Text, ">=TLSv1.2",
        "TLS protocols allowed at the encrypt, verify and secure levels, e.g. >=TLSv1.2.";
    smtp_tls_protocols: String, Text, ">=TLSv1.2",
        "TLS protocols allowed at the may level.";
    smtp_tls_mandatory_ciphers: String, Choice(&["high", "medium", "low", "export", "null"]), "medium",
        "Cipher grade at the encrypt, verify and secure levels.";
    smtp_tls_ciphers: String, Choice(&["high", "medium", "low", "export", "null"]), "medium",
        "Cipher grade at the may level.";
    smtp_tls_servername: String, Text, "",
        "SNI name sent to the server: empty (none), hostname (the server name), nexthop, or a literal name.";
    smtp_tls_verify_cert_match: Vec<String>, List, "hostname",
        "Names a server certificate must match at the verify level.";
    smtp_tls_secure_cert_match: Vec<String>, List, "nexthop, dot-nexthop",
        "Names a server certificate must match at the secure level.";
    smtp_tls_loglevel: i64, Int { min: 0, max: 4 }, "0",
        "TLS logging: 0 none, 1 a summary line per connection, 2 and more for debugging.";
    smtp_tls_note_starttls_offer: bool, Bool, "no",
        "Log the host names of servers that offer STARTTLS when TLS is not used.";

    // --- SMTP client authentication --------------------------------------------------------
    smtp_sasl_auth_enable: bool, Bool, "no",
        "Authenticate to the server with SASL (AUTH PLAIN, LOGIN).";
    smtp_sasl_password_maps: Vec<String>, Maps, "",
        "Tables of user:password by [host]:port, host, or (with smtp_sender_dependent_authentication) sender.";
    smtp_sasl_security_options: Vec<String>, List, "noplaintext, noanonymous",
        "SASL restrictions without TLS: noplaintext forbids PLAIN and LOGIN, noanonymous forbids anonymous.";
    smtp_sasl_tls_security_options: Vec<String>, List, "noanonymous",
        "SASL restrictions over TLS (plaintext mechanisms are then safe).";
    smtp_sasl_mechanism_filter: Vec<String>, List, "",
        "Mechanisms the client may use, e.g. login or plain; empty means all that the server offers and postern supports.";
    smtp_sender_dependent_authentication: bool, Bool, "no",
        "Look up smtp_sasl_password_maps by envelope sender first.";

    // --- SMTP client OAuth2 (XOAUTH2) ------------------------------------------------------
    smtp_oauth2_token_endpoint: String, Text, "",
        "OAuth2 token endpoint, e.g. https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token (http:// only on loopback).";
    smtp_oauth2_client_id: String, Text, "",
        "Application (client) ID of the app registration.";
    smtp_oauth2_client_secret_file: String, Text, "",
        "File holding the client secret (client credentials grant); mode 0600 or 0640.";
    smtp_oauth2_client_secret_expires: String, Text, "",
        "The client secret's expiry date as Entra ID shows it (YYYY-MM-DD); postern check warns 30 days ahead and fails after it. Empty: unknown.";
    smtp_oauth2_client_certificate_file: String, Text, "",
        "Certificate (PEM) registered with the app, for a signed client assertion instead of a secret.";
    smtp_oauth2_client_key_file: String, Text, "$smtp_oauth2_client_certificate_file",
        "Private key (PEM) of smtp_oauth2_client_certificate_file.";
    smtp_oauth2_refresh_token_file: String, Text, "",
        "File holding a delegated refresh token (postern oauth2 login writes it; rotated tokens replace it atomically).";
    smtp_oauth2_scope: String, Text, "https://outlook.office365.com/.default",
        "Scope requested; delegated logins use https://outlook.office.com/SMTP.Send offline_access.";
    smtp_oauth2_refresh_margin: Duration, TIME_S, "10m",
        "Refresh a token when less than this (or a quarter of its lifetime, if less) remains.";
    smtp_oauth2_account_maps: Vec<String>, Maps, "",
        "Per-account OAuth2 settings by SASL user name: name=value pairs overriding the smtp_oauth2_* parameters.";
    smtp_oauth2_token_cache_directory: String, Text, "$data_directory/oauth2",
        "Where access tokens are cached (mode 0700; files 0600), shared by all delivery agents.";
    smtp_oauth2_timeout: Duration, TIME_S, "30s",
        "Time limit for one request to the token endpoint.";

    // --- Per-account (per-mailbox) traffic shaping -------------------------------------
    smtp_account_rate_limit: RateLimit, Rate, "30/60s",
        "Most messages started per account (SASL user) in any sliding window of this length (Exchange Online: 30/min).";
    smtp_account_concurrency_limit: i64, NONNEG, "3",
        "Most simultaneous connections per account (Exchange Online refuses a 4th; 2 leaves room for other clients). 0: no limit.";
    smtp_account_recipient_limit: RateLimit, Rate, "10000/24h",
        "Most recipients per account in any rolling window (kept in the queue index, survives restarts).";
    smtp_account_message_recipient_limit: i64, NONNEG, "500",
        "Most recipients per message submitted for an account; larger messages are split (0: no limit).";
    smtp_account_throttle_delay: Duration, TIME_S, "60s",
        "After a throttling reply (432 4.3.2) the account pauses this long (plus jitter) and its concurrency drops by one.";
    smtp_account_hold_retry_time: Duration, TIME_S, "10m",
        "How often a held account or route (configuration error, quota) is tried again with one message.";

    // --- Sender rewriting at delivery -----------------------------------------------------
    smtp_generic_maps: Vec<String>, Maps, "",
        "Address rewriting by the SMTP client (envelope and headers) just before delivery.";
    smtp_send_as_mailbox: bool, Bool, "no",
        "Send as the authenticated mailbox: envelope sender and header From become the SASL user, keeping the display name; the original From goes to Reply-To. smtp_generic_maps apply first.";
}

/// A runtime default: values that depend on the machine.
pub fn computed_default(name: &str) -> Option<String> {
    match name {
        "myhostname" => Some(system_hostname()),
        "mydomain" => Some(domain_of(&system_hostname())),
        "mail_version" => Some(env!("CARGO_PKG_VERSION").to_string()),
        _ => None,
    }
}

/// `host` without its first label, or `localdomain` when it has only one.
pub fn domain_of(host: &str) -> String {
    match host.split_once('.') {
        Some((_, d)) if !d.is_empty() => d.to_string(),
        _ => "localdomain".to_string(),
    }
}

/// The system's host name; Postfix appends `.localdomain` to a name without dots.
fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    if name.contains('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.localdomain", name.to_ascii_lowercase())
    }
}

/// The registry entry for `name`.
pub fn param(name: &str) -> Option<&'static ParamDef> {
    static INDEX: std::sync::OnceLock<HashMap<&'static str, &'static ParamDef>> =
        std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| PARAMS.iter().map(|p| (p.name, p)).collect())
        .get(name)
        .copied()
}

thread_local! {
    /// The derived defaults being computed on this thread (bit set).
    static DERIVING: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}
const DERIVING_MYDOMAIN: u8 = 1;
const DERIVING_MYNETWORKS: u8 = 2;

/// Computes the derived default `which` (mydomain from myhostname,
/// mynetworks from mynetworks_style) with `f`, which expands another
/// parameter; `None` when `f` is already computing it. The other parameter
/// may refer back (`myhostname = mail.$mydomain` with mydomain unset): the
/// inner reference then reads as undefined, i.e. empty, as an unset name
/// expands in Postfix, and myhostname becomes `mail.localdomain`. Before,
/// each side expanded the other until the stack overflowed (found by the
/// `maincf` fuzz target), so such a main.cf crashed every program.
fn derive(which: u8, f: impl FnOnce() -> String) -> Option<String> {
    let busy = DERIVING.with(|d| {
        let old = d.get();
        d.set(old | which);
        old & which != 0
    });
    if busy {
        return None;
    }
    let v = f();
    DERIVING.with(|d| d.set(d.get() & !which));
    Some(v)
}

/// Raw parameter values from every source, in precedence order: service
/// overrides (`-o` in master.cf or on the command line), main.cf, then
/// defaults. Values are expanded on request.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    main: HashMap<String, (String, Origin)>,
    overrides: HashMap<String, (String, Origin)>,
}

impl Resolver {
    /// Builds a resolver from main.cf and overrides (later overrides win).
    pub fn new(main: &MainCf, overrides: &[(String, String, Origin)]) -> Resolver {
        let mut r = Resolver::default();
        for e in &main.entries {
            r.main.insert(
                e.name.clone(),
                (
                    e.value.clone(),
                    Origin::File {
                        path: main.path.clone(),
                        line: e.line,
                    },
                ),
            );
        }
        for (n, v, o) in overrides {
            r.overrides.insert(n.clone(), (v.clone(), o.clone()));
        }
        r
    }

    /// The unexpanded value of `name` and where it came from; `None` when the
    /// name is neither set nor known to the registry.
    pub fn raw(&self, name: &str) -> Option<(String, Origin)> {
        if let Some(v) = self.overrides.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = self.main.get(name) {
            return Some(v.clone());
        }
        if name == "mynetworks" {
            // Postfix computes the default from mynetworks_style and the
            // machine's interfaces.
            return derive(DERIVING_MYNETWORKS, || {
                let style = self
                    .get("mynetworks_style")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                crate::mynetworks::default_for(
                    style.trim(),
                    &crate::mynetworks::interface_addresses(),
                )
            })
            .map(|v| (v, Origin::Default));
        }
        if name == "mydomain" {
            // Postfix derives mydomain from the configured myhostname.
            return derive(DERIVING_MYDOMAIN, || {
                let host = self.get("myhostname").ok().flatten().unwrap_or_default();
                domain_of(&host)
            })
            .map(|v| (v, Origin::Default));
        }
        if let Some(v) = computed_default(name) {
            return Some((v, Origin::Default));
        }
        param(name).map(|p| (p.default.to_string(), Origin::Default))
    }

    /// True when `name` is set in main.cf or by an override.
    pub fn is_set(&self, name: &str) -> bool {
        self.overrides.contains_key(name) || self.main.contains_key(name)
    }

    /// Names set in main.cf or by overrides.
    pub fn set_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .main
            .keys()
            .chain(self.overrides.keys())
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The expanded value of `name`; `Ok(None)` when the name is unknown and unset.
    ///
    /// # Errors
    /// A malformed `$name` reference or a reference loop.
    pub fn get(&self, name: &str) -> Result<Option<String>, Error> {
        let Some((raw, origin)) = self.raw(name) else {
            return Ok(None);
        };
        let lookup = |n: &str| self.raw(n).map(|(v, _)| v);
        expand(&raw, &lookup)
            .map(Some)
            .map_err(|message| Error::Expansion {
                origin,
                name: name.to_string(),
                message,
            })
    }

    /// Expands arbitrary text against these parameters.
    ///
    /// # Errors
    /// A malformed `$name` reference or a reference loop.
    pub fn expand_text(&self, text: &str) -> Result<String, String> {
        let lookup = |n: &str| self.raw(n).map(|(v, _)| v);
        expand(text, &lookup)
    }

    fn typed<T: FromParam + Default>(&self, name: &str, kind: Kind, errors: &mut Errors) -> T {
        let fallback = || {
            let def = param(name)
                .map(|p| {
                    computed_default(name)
                        .unwrap_or_else(|| self.expand_text(p.default).unwrap_or_default())
                })
                .unwrap_or_default();
            T::from_param(kind, &def).unwrap_or_default()
        };
        let value = match self.get(name) {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                errors.push(e);
                return fallback();
            }
        };
        match T::from_param(kind, &value) {
            Ok(v) => v,
            Err(allowed) => {
                let origin = self.raw(name).map(|(_, o)| o).unwrap_or_default();
                errors.push(Error::BadValue {
                    origin,
                    name: name.to_string(),
                    value,
                    allowed,
                });
                fallback()
            }
        }
    }
}

impl Config {
    /// Builds and validates the configuration from main.cf plus overrides.
    ///
    /// # Errors
    /// Every bad value and every bad `$name` reference, each naming file, line
    /// and parameter.
    pub fn build(main: &MainCf, overrides: &[(String, String, Origin)]) -> Result<Config, Errors> {
        let (cfg, errors) = Config::build_lenient(main, overrides);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Builds the configuration even when some values are bad: each bad
    /// value is replaced by its default and reported. For commands that
    /// must keep working with a broken main.cf (sendmail must not lose a
    /// message because an unrelated parameter is misspelt; mailq and
    /// postconf must show what is wrong).
    pub fn build_lenient(
        main: &MainCf,
        overrides: &[(String, String, Origin)],
    ) -> (Config, Errors) {
        let (cfg, mut errors) = Config::from_resolver(Resolver::new(main, overrides));
        if let Err(e) = cfg.validate() {
            errors.0.extend(e.0);
        }
        (cfg, errors)
    }

    /// The configuration with every parameter at its default.
    pub fn defaults() -> Config {
        // Defaults are checked by a unit test, so this cannot fail.
        Config::build(&MainCf::default(), &[]).expect("registry defaults are valid")
    }

    /// Checks that go beyond one value's type.
    fn validate(&self) -> Result<(), Errors> {
        let mut errors = Errors::default();
        let origin = |n: &str| self.resolver.raw(n).map(|(_, o)| o).unwrap_or_default();
        if self.minimal_backoff_time > self.maximal_backoff_time {
            errors.push(Error::BadValue {
                origin: origin("minimal_backoff_time"),
                name: "minimal_backoff_time".into(),
                value: values::format_time(self.minimal_backoff_time),
                allowed: format!(
                    "must not exceed maximal_backoff_time ({})",
                    values::format_time(self.maximal_backoff_time)
                ),
            });
        }
        for name in ["smtp_tls_mandatory_protocols", "smtp_tls_protocols"] {
            let v = self.resolver.get(name).ok().flatten().unwrap_or_default();
            if let Err(allowed) = crate::tls::parse_protocols(&v) {
                errors.push(Error::BadValue {
                    origin: origin(name),
                    name: name.into(),
                    value: v,
                    allowed,
                });
            }
        }
        for v in &self.smtp_host_lookup {
            if v != "dns" && v != "native" {
                errors.push(Error::BadValue {
                    origin: origin("smtp_host_lookup"),
                    name: "smtp_host_lookup".into(),
                    value: self.smtp_host_lookup.join(", "),
                    allowed: "expected dns, native, or both".into(),
                });
                break;
            }
        }
        for v in &self.inet_protocols {
            if !matches!(v.as_str(), "all" | "ipv4" | "ipv6") {
                errors.push(Error::BadValue {
                    origin: origin("inet_protocols"),
                    name: "inet_protocols".into(),
                    value: self.inet_protocols.join(", "),
                    allowed: "expected all, ipv4, ipv6, or ipv4, ipv6".into(),
                });
                break;
            }
        }
        if crate::nexthop::service_port(&self.smtp_tcp_port).is_none() {
            errors.push(Error::BadValue {
                origin: origin("smtp_tcp_port"),
                name: "smtp_tcp_port".into(),
                value: self.smtp_tcp_port.clone(),
                allowed: "expected a port number or smtp, submission, submissions, smtps, lmtp"
                    .into(),
            });
        }
        for (name, v4) in [("smtp_bind_address", true), ("smtp_bind_address6", false)] {
            let v = if v4 {
                &self.smtp_bind_address
            } else {
                &self.smtp_bind_address6
            };
            if v.is_empty() {
                continue;
            }
            let ok = match v.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.is_ipv4() == v4,
                Err(_) => false,
            };
            if !ok {
                errors.push(Error::BadValue {
                    origin: origin(name),
                    name: name.into(),
                    value: v.clone(),
                    allowed: if v4 {
                        "expected an IPv4 address, e.g. 192.0.2.25".into()
                    } else {
                        "expected an IPv6 address, e.g. 2001:db8::25".into()
                    },
                });
            }
        }
        self.validate_drop_folder(&mut errors);
        if let Err(allowed) = crate::net::listen_address(&self.metrics_listen) {
            errors.push(Error::BadValue {
                origin: origin("metrics_listen"),
                name: "metrics_listen".into(),
                value: self.metrics_listen.clone(),
                allowed,
            });
        }
        if !self.relayhost.is_empty()
            && let Err(allowed) = crate::nexthop::Nexthop::parse(&self.relayhost, 25)
        {
            errors.push(Error::BadValue {
                origin: origin("relayhost"),
                name: "relayhost".into(),
                value: self.relayhost.clone(),
                allowed,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The drop folder and its badmail directory are absolute and distinct
    /// (pickup moves refused files between them by renaming).
    fn validate_drop_folder(&self, errors: &mut Errors) {
        if self.drop_directory.is_empty() {
            return;
        }
        let origin = |n: &str| self.resolver.raw(n).map(|(_, o)| o).unwrap_or_default();
        let bad = |name: &str, value: &str, allowed: &str| Error::BadValue {
            origin: origin(name),
            name: name.into(),
            value: value.into(),
            allowed: allowed.into(),
        };
        let drop = std::path::Path::new(&self.drop_directory);
        if !drop.is_absolute() {
            errors.push(bad(
                "drop_directory",
                &self.drop_directory,
                "expected an absolute path, e.g. /srv/postern/pickup",
            ));
        }
        let badmail = std::path::Path::new(&self.drop_badmail_directory);
        if !badmail.is_absolute() {
            errors.push(bad(
                "drop_badmail_directory",
                &self.drop_badmail_directory,
                "expected an absolute path, e.g. /srv/postern/badmail",
            ));
        } else if badmail.components().eq(drop.components()) {
            errors.push(bad(
                "drop_badmail_directory",
                &self.drop_badmail_directory,
                "must differ from drop_directory (refused files would be picked up again)",
            ));
        }
    }

    /// The expanded value of any parameter, including names outside the registry.
    pub fn get(&self, name: &str) -> Option<String> {
        self.resolver.get(name).ok().flatten()
    }

    /// A per-transport parameter such as `relay_destination_concurrency_limit`:
    /// `<transport>_<suffix>` if set or known, else `default_<suffix>`.
    pub fn transport_param(&self, transport: &str, suffix: &str) -> Option<String> {
        let specific = format!("{transport}_{suffix}");
        if self.resolver.raw(&specific).is_some() {
            return self.get(&specific);
        }
        self.get(&format!("default_{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `maincf` fuzz target: mydomain's default expands
    /// myhostname, which referred back to mydomain; each expanded the
    /// other until the stack overflowed. The same for mynetworks and
    /// mynetworks_style.
    #[test]
    fn fuzz_derived_defaults_that_refer_back_do_not_recurse() {
        let crash = "myhostname = rel${mydomain}]:587\nx = ${myorigin?{yes}:{no}} $$ $(mydomain)\n";
        let main = MainCf::parse(crash, std::path::Path::new("main.cf")).unwrap();
        let r = Resolver::new(&main, &[]);
        assert_eq!(r.get("myhostname").unwrap().unwrap(), "rellocaldomain]:587");
        let _ = Config::build_lenient(&main, &[]);

        let text = "myhostname = mail.$mydomain\nmynetworks_style = ${mynetworks?host}\n";
        let main = MainCf::parse(text, std::path::Path::new("main.cf")).unwrap();
        let r = Resolver::new(&main, &[]);
        assert_eq!(r.get("myhostname").unwrap().unwrap(), "mail.localdomain");
        assert_eq!(r.get("mydomain").unwrap().unwrap(), "localdomain");
        assert!(r.get("mynetworks").unwrap().is_some());
        // Derived defaults still see each other where there is no loop.
        let text = "myhostname = mx.example.com\nx = $mydomain\n";
        let main = MainCf::parse(text, std::path::Path::new("main.cf")).unwrap();
        assert_eq!(
            Resolver::new(&main, &[]).get("x").unwrap().unwrap(),
            "example.com"
        );
    }

    #[test]
    fn rate_limits() {
        let r = |v: &str| RateLimit::from_param(Kind::Rate, v);
        assert_eq!(
            r("30/60s").unwrap(),
            RateLimit {
                count: 30,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(r("10000/24h").unwrap().per, Duration::from_secs(86400));
        assert_eq!(
            r("6 / 10").unwrap(),
            RateLimit {
                count: 6,
                per: Duration::from_secs(10)
            }
        );
        assert!(r("0").unwrap().unlimited() && r("").unwrap().unlimited());
        for bad in ["30", "x/60s", "30/0s", "30/soon", "-1/60s"] {
            assert!(r(bad).is_err(), "{bad}");
        }
        let c = Config::defaults();
        assert_eq!(
            (
                c.smtp_account_rate_limit.count,
                c.smtp_account_recipient_limit.count
            ),
            (30, 10000)
        );
    }
    use std::path::Path;

    #[test]
    fn defaults_are_valid_and_names_unique() {
        let c = Config::defaults();
        assert_eq!(c.minimal_backoff_time, Duration::from_secs(300));
        assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(5 * 86400));
        assert_eq!(c.smtp_destination_concurrency_limit, 20);
        assert!(c.myorigin == c.myhostname);
        let mut names: Vec<_> = PARAMS.iter().map(|p| p.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate parameter names");
        assert!(param("2bounce_notice_recipient").is_some());
        for p in PARAMS {
            assert!(!p.doc.is_empty() && p.doc.len() < 200, "{}", p.name);
        }
    }

    #[test]
    fn main_cf_values_and_overrides() {
        let main = MainCf::parse(
            "myhostname = relay.contoso.com\nminimal_backoff_time = 60s\nrelayhost = [smtp.office365.com]:587\n",
            Path::new("/etc/postern/main.cf"),
        )
        .unwrap();
        let ov = vec![(
            "minimal_backoff_time".to_string(),
            "2m".to_string(),
            Origin::CommandLine,
        )];
        let c = Config::build(&main, &ov).unwrap();
        assert_eq!(c.myhostname, "relay.contoso.com");
        assert_eq!(c.mydestination[0], "relay.contoso.com");
        assert_eq!(c.mydestination[1], "localhost.contoso.com");
        assert_eq!(c.minimal_backoff_time, Duration::from_secs(120));
        assert_eq!(c.relayhost, "[smtp.office365.com]:587");
        assert_eq!(
            c.transport_param("smtp", "destination_concurrency_limit")
                .as_deref(),
            Some("20")
        );
        assert_eq!(
            c.transport_param("relay", "destination_concurrency_limit")
                .as_deref(),
            Some("20")
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_file_and_line() {
        let main = MainCf::parse(
            "minimal_backoff_time = soon\nsmtp_tls_security_level = maybe\nsoft_bounce = perhaps\nmyorigin = ${broken\n",
            Path::new("/etc/postern/main.cf"),
        )
        .unwrap();
        let errs = Config::build(&main, &[]).unwrap_err();
        let text = errs.to_string();
        assert_eq!(errs.0.len(), 4, "{text}");
        assert!(
            text.contains("/etc/postern/main.cf:1: bad value for minimal_backoff_time: \"soon\""),
            "{text}"
        );
        assert!(text.contains("/etc/postern/main.cf:2: bad value for smtp_tls_security_level: \"maybe\": expected one of: none, may"), "{text}");
        assert!(
            text.contains("/etc/postern/main.cf:3: bad value for soft_bounce"),
            "{text}"
        );
        assert!(
            text.contains("/etc/postern/main.cf:4: myorigin: truncated macro reference"),
            "{text}"
        );
    }

    #[test]
    fn cross_checks() {
        let main = MainCf::parse(
            "minimal_backoff_time = 2h\nmaximal_backoff_time = 1h\nrelayhost = [unclosed:25\nsmtp_tls_mandatory_protocols = TLSv9\n",
            Path::new("m"),
        )
        .unwrap();
        let errs = Config::build(&main, &[]).unwrap_err();
        assert_eq!(errs.0.len(), 3, "{errs}");
    }

    #[test]
    fn drop_folder_paths() {
        let build = |text: &str| Config::build(&MainCf::parse(text, Path::new("m")).unwrap(), &[]);
        let off = build("").unwrap();
        assert_eq!(off.drop_directory, "");
        assert_eq!(off.drop_badmail_directory, "");
        let on = build("drop_directory = /srv/mailroot/pickup\n").unwrap();
        assert_eq!(on.drop_badmail_directory, "/srv/mailroot/pickup/../badmail");
        assert_eq!(on.drop_settle_time, Duration::from_secs(2));
        let errs = build("drop_directory = pickup\n").unwrap_err();
        assert_eq!(errs.0.len(), 2, "{errs}");
        let errs =
            build("drop_directory = /srv/d\ndrop_badmail_directory = /srv/d/\n").unwrap_err();
        assert!(errs.to_string().contains("must differ"), "{errs}");
    }
}

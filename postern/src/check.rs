//! `postern check`: every configuration problem at once — main.cf and
//! master.cf syntax and values, lookup tables named by `*_maps`
//! parameters, programs, the queue directory and its permissions, TLS and
//! secret files, certificate expiry dates (server and client certificates:
//! an error once expired, a warning within 30 days), and smart-host names
//! (relayhost, the next hops of transport_maps and
//! sender_dependent_relayhost_maps must resolve; `[ip]` needs no lookup).
//! Exit status 0 when all is well (warnings allowed), 1 otherwise.

use conf::Origin;
use queue::layout::{Queue, QueueName};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub fn run(dir: &Path) -> i32 {
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let (cfg, mc) = match crate::master::load_all(dir) {
        Ok(x) => x,
        Err(errs) => {
            for e in &errs {
                println!("error: {e}");
            }
            println!(
                "postern check: {} problem{} found",
                errs.len(),
                if errs.len() == 1 { "" } else { "s" }
            );
            return 1;
        }
    };
    // Unknown parameter names: Postfix warns, so do we (user-defined names
    // referenced as $name elsewhere are fine).
    if let Ok(main) = conf::MainCf::load(&dir.join("main.cf")) {
        let text = main
            .entries
            .iter()
            .map(|e| e.value.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for e in &main.entries {
            let known = conf::params::param(&e.name).is_some()
                || e.name.ends_with("_destination_concurrency_limit")
                || e.name.ends_with("_destination_recipient_limit")
                || e.name.ends_with("_destination_rate_delay")
                || text.contains(&format!("${}", e.name))
                || text.contains(&format!("${{{}", e.name))
                || mc
                    .services
                    .iter()
                    .any(|s| s.overrides.iter().any(|(_, v)| v.contains(&e.name)));
            if !known {
                warnings.push(format!(
                    "{}:{}: unknown parameter {}",
                    main.path.display(),
                    e.line,
                    e.name
                ));
            }
        }
    }
    // Lookup tables.
    let maps_params: Vec<&conf::ParamDef> = conf::PARAMS
        .iter()
        .filter(|p| p.kind == conf::params::Kind::Maps)
        .collect();
    for p in maps_params {
        let Some(value) = cfg.get(p.name) else {
            continue;
        };
        for spec in conf::values::split_list(&value) {
            let origin = cfg
                .resolver
                .raw(p.name)
                .map(|(_, o)| o)
                .unwrap_or(Origin::Default);
            let opened = if p.name == "alias_maps" || p.name == "alias_database" {
                conf::tables::open_aliases(&spec, &origin)
            } else {
                conf::tables::open(&spec, &origin)
            };
            match opened {
                Ok(t) => warnings.extend(t.warnings().iter().map(|w| w.to_string())),
                Err(errs) => {
                    for e in errs {
                        let s = format!("{}: {e}", p.name);
                        if p.name == "alias_maps" || p.name == "alias_database" {
                            warnings.push(format!(
                                "{s} (local aliases are not applied until this is fixed)"
                            ));
                        } else {
                            problems.push(s);
                        }
                    }
                }
            }
        }
    }
    // Programs.
    for s in &mc.services {
        let (prog, _) = queue::service::locate_program(&cfg, "daemon_directory", &s.command);
        if !prog.exists() {
            problems.push(format!(
                "{}:{}: service {}: program {} not found",
                mc.path.display(),
                s.line,
                s.name,
                prog.display()
            ));
        }
    }
    // Queue.
    let q = Queue::new(&cfg.queue_directory);
    if !q.root.exists() {
        warnings.push(format!(
            "queue_directory {} does not exist yet; postern start creates it",
            q.root.display()
        ));
    } else {
        for qn in QueueName::ALL {
            let d = q.dir(qn);
            match std::fs::metadata(&d) {
                Ok(m) => {
                    let want = if qn == QueueName::Maildrop {
                        0o1733
                    } else {
                        0o700
                    };
                    if m.permissions().mode() & 0o7777 != want {
                        problems.push(format!(
                            "{}: mode {:o}, expected {:o} (postern start fixes it)",
                            d.display(),
                            m.permissions().mode() & 0o7777,
                            want
                        ));
                    }
                }
                Err(e) => warnings.push(format!("{}: {e} (postern start creates it)", d.display())),
            }
        }
    }
    if nix::unistd::geteuid().is_root()
        && let Err(e) = queue::service::mail_owner_ids(&cfg)
    {
        problems.push(e);
    }
    // TLS and secret files.
    for (name, path) in [
        ("smtp_tls_CAfile", &cfg.smtp_tls_cafile),
        ("smtp_tls_cert_file", &cfg.smtp_tls_cert_file),
        ("smtp_tls_key_file", &cfg.smtp_tls_key_file),
    ] {
        if !path.is_empty() && std::fs::File::open(path).is_err() {
            problems.push(format!("{name} = {path}: cannot read the file"));
        }
    }
    if !cfg.smtp_tls_key_file.is_empty()
        && let Ok(m) = std::fs::metadata(&cfg.smtp_tls_key_file)
        && m.mode() & 0o077 != 0
        && m.mode() & 0o037 != 0
    {
        problems.push(format!(
            "smtp_tls_key_file {}: mode {:o} lets other users read the private key; use chmod 600",
            cfg.smtp_tls_key_file,
            m.mode() & 0o777
        ));
    }
    for spec in &cfg.smtp_sasl_password_maps {
        if let Some((_, file)) = spec.split_once(':')
            && file.starts_with('/')
            && let Ok(m) = std::fs::metadata(file)
            && m.mode() & 0o007 != 0
        {
            problems.push(format!(
                "{file}: holds passwords but is readable by every user (mode {:o}); use chmod 600",
                m.mode() & 0o777
            ));
        }
    }
    if cfg.smtp_sasl_auth_enable && cfg.smtp_sasl_password_maps.is_empty() {
        problems.push("smtp_sasl_auth_enable = yes but smtp_sasl_password_maps is empty".into());
    }
    oauth2_settings(&cfg, &mut problems, &mut warnings);
    certificate_expiry(&cfg, &mc, &mut problems, &mut warnings);
    smart_hosts(&cfg, &mc, &mut problems, &mut warnings);
    if cfg.smtp_sasl_auth_enable && cfg.smtp_tls_security_level == "none" {
        warnings.push("smtp_sasl_auth_enable = yes with smtp_tls_security_level = none: passwords would travel in clear text, and Exchange Online offers AUTH only after STARTTLS".into());
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    for p in &problems {
        println!("error: {p}");
    }
    if problems.is_empty() {
        println!(
            "postern check: configuration in {} is OK{}",
            dir.display(),
            if warnings.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} warning{})",
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                )
            }
        );
        0
    } else {
        println!(
            "postern check: {} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        1
    }
}

/// OAuth2 (XOAUTH2): the account tables open, the endpoint is acceptable,
/// main.cf's credential files can be read and are private, and a
/// certificate credential is not about to expire. Entries of
/// `smtp_oauth2_account_maps` are checked when a delivery (or `postern
/// oauth2 token USER`) uses them.
fn oauth2_settings(cfg: &conf::Config, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    use queue::oauth2::{Accounts, ClientAuth, Grant};
    if cfg.smtp_oauth2_token_endpoint.is_empty() && cfg.smtp_oauth2_account_maps.is_empty() {
        return;
    }
    if !cfg.smtp_sasl_auth_enable {
        warnings.push(
            "smtp_oauth2_* is set but smtp_sasl_auth_enable = no: postern never signs in".into(),
        );
    }
    if !matches!(cfg.smtp_tls_security_level.as_str(), "verify" | "secure") {
        warnings.push(format!(
            "OAuth2 access tokens are sent to servers whose certificate is not verified (smtp_tls_security_level = {}); use secure",
            cfg.smtp_tls_security_level
        ));
    }
    let accounts = match Accounts::open(cfg) {
        Ok(a) => a,
        Err(e) => {
            problems.push(e.to_string());
            return;
        }
    };
    if cfg.smtp_oauth2_token_endpoint.is_empty() {
        return; // every account comes from the tables
    }
    // A user no table names: main.cf's settings alone.
    const NOBODY: &str = "postern-check";
    let account = match accounts.get(NOBODY) {
        Ok(a) => a,
        Err(e) => {
            problems.push(
                e.to_string()
                    .replace(&format!("for {NOBODY}"), "in main.cf"),
            );
            return;
        }
    };
    let private =
        |param: &str, path: &Path, problems: &mut Vec<String>| match std::fs::metadata(path) {
            Err(e) => problems.push(format!("{param} = {}: {e}", path.display())),
            Ok(m) if m.mode() & 0o077 != 0 && m.mode() & 0o037 != 0 => problems.push(format!(
                "{param} = {}: mode {:o} lets other users read a secret; use chmod 600",
                path.display(),
                m.mode() & 0o777
            )),
            Ok(_) => {}
        };
    match &account.client_auth {
        ClientAuth::None => {}
        ClientAuth::Secret(path) => {
            private("smtp_oauth2_client_secret_file", path, problems);
            secret_expiry(&cfg.smtp_oauth2_client_secret_expires, problems, warnings);
        }
        ClientAuth::Certificate {
            cert_file,
            key_file,
        } => {
            private("smtp_oauth2_client_key_file", key_file, problems);
            match queue::oauth2::certificate_expiry(&account) {
                None => problems.push(format!(
                    "smtp_oauth2_client_certificate_file = {}: cannot read a PEM certificate",
                    cert_file.display()
                )),
                Some(exp) => {
                    let left = exp
                        .duration_since(std::time::SystemTime::now())
                        .map(|d| d.as_secs() / 86400);
                    match left {
                        Err(_) => problems.push(format!(
                            "smtp_oauth2_client_certificate_file = {}: the certificate has expired; upload a new one to the application",
                            cert_file.display()
                        )),
                        Ok(days) if days < 30 => warnings.push(format!(
                            "smtp_oauth2_client_certificate_file = {}: the certificate expires in {days} days; upload a new one to the application",
                            cert_file.display()
                        )),
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    if let Grant::RefreshToken(path) = &account.grant
        && !path.exists()
    {
        warnings.push(format!(
            "smtp_oauth2_refresh_token_file = {}: no refresh token yet; run postern oauth2 login MAILBOX",
            path.display()
        ));
    }
}

/// How many days before expiry a certificate draws a warning.
const EXPIRY_WARNING_DAYS: i32 = 30;

/// The TLS certificates postern presents: `smtpd_tls_cert_file` (main.cf
/// and master.cf `-o` overrides) and `smtp_tls_cert_file`. Expired is an
/// error (clients and connectors refuse it), expiring within 30 days a
/// warning; a file that is not a PEM certificate is an error.
fn certificate_expiry(
    cfg: &conf::Config,
    mc: &conf::mastercf::MasterCf,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let mut files: Vec<(String, String)> = Vec::new();
    for name in ["smtpd_tls_cert_file", "smtp_tls_cert_file"] {
        if let Some(v) = cfg.get(name)
            && !v.is_empty()
        {
            files.push((format!("{name} = {v}"), v));
        }
    }
    for s in &mc.services {
        for (n, v) in &s.overrides {
            if n == "smtpd_tls_cert_file"
                && !v.is_empty()
                && cfg.get("smtpd_tls_cert_file").as_deref() != Some(v.as_str())
            {
                files.push((
                    format!(
                        "{}:{}: service {}: -o {n}={v}",
                        mc.path.display(),
                        s.line,
                        s.name
                    ),
                    v.clone(),
                ));
            }
        }
    }
    for (what, path) in files {
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) => {
                // smtp_tls_cert_file's readability is reported above.
                if !what.starts_with("smtp_tls_cert_file") {
                    problems.push(format!("{what}: cannot read the file: {e}"));
                }
                continue;
            }
        };
        let cert = match openssl::x509::X509::from_pem(&pem) {
            Ok(c) => c,
            Err(_) => {
                problems.push(format!("{what}: not a PEM certificate"));
                continue;
            }
        };
        let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
            continue;
        };
        let not_after = cert.not_after();
        let days = now.diff(not_after).map(|d| d.days).unwrap_or(0);
        let subject = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_else(|| "?".into());
        if not_after < now {
            problems.push(format!(
                "{what}: the certificate for {subject} expired on {not_after}; install a new one"
            ));
        } else if days < EXPIRY_WARNING_DAYS {
            warnings.push(format!(
                "{what}: the certificate for {subject} expires in {days} day{} ({not_after}); renew it",
                if days == 1 { "" } else { "s" }
            ));
        }
    }
}

/// One next hop to resolve, and where it was configured.
struct Hop {
    /// `main.cf:7: relayhost = [smtp.office365.com]:587`, or the table line.
    what: String,
    nexthop: conf::nexthop::Nexthop,
}

/// Every smart host postern may connect to resolves: relayhost, the next
/// hops of transport_maps entries whose transport is the smtp client, and
/// the values of sender_dependent_relayhost_maps. A name that does not
/// exist (or has no address) is an error naming it; a lookup that fails
/// for now (no DNS server answers) a warning. `[192.0.2.1]` needs none.
fn smart_hosts(
    cfg: &conf::Config,
    mc: &conf::mastercf::MasterCf,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let mut hops: Vec<Hop> = Vec::new();
    let origin = |name: &str| {
        cfg.resolver
            .raw(name)
            .map(|(_, o)| o.to_string())
            .unwrap_or_else(|| "main.cf".into())
    };
    if !cfg.relayhost.is_empty() {
        match conf::nexthop::Nexthop::parse_list(&cfg.relayhost, 25) {
            Ok(list) => hops.extend(list.into_iter().map(|nexthop| Hop {
                what: format!("{}: relayhost = {}", origin("relayhost"), cfg.relayhost),
                nexthop,
            })),
            Err(e) => problems.push(format!("{}: relayhost: {e}", origin("relayhost"))),
        }
    }
    let smtp_transport = |t: &str| {
        let t = if t.is_empty() {
            cfg.default_transport.as_str()
        } else {
            t
        };
        mc.services
            .iter()
            .any(|s| s.name == t && s.command == "smtp")
    };
    for spec in &cfg.transport_maps {
        for (at, key, value) in table_entries(spec) {
            let Some((transport, nexthop)) = value.split_once(':') else {
                continue;
            };
            let nexthop = nexthop.strip_prefix("inet:").unwrap_or(nexthop);
            if !smtp_transport(transport) || nexthop.is_empty() || nexthop.starts_with("unix:") {
                continue;
            }
            push_hop(
                &mut hops,
                problems,
                format!("{at}: transport_maps {key} {value}"),
                nexthop,
            );
        }
    }
    for spec in &cfg.sender_dependent_relayhost_maps {
        for (at, key, value) in table_entries(spec) {
            push_hop(
                &mut hops,
                problems,
                format!("{at}: sender_dependent_relayhost_maps {key} {value}"),
                &value,
            );
        }
    }
    hops.retain(|h| h.nexthop.host.parse::<std::net::IpAddr>().is_err());
    if hops.is_empty() {
        return;
    }
    let dns = cfg.smtp_host_lookup.iter().any(|m| m == "dns");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warnings.push(format!("cannot check smart-host names: {e}"));
            return;
        }
    };
    let results = rt.block_on(async {
        let resolver = if dns {
            match queue::dns::server_from_env().and_then(queue::dns::resolver) {
                Ok(r) => Some(std::sync::Arc::new(r)),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mut set = tokio::task::JoinSet::new();
        for (i, h) in hops.iter().enumerate() {
            let (host, mx, port) = (h.nexthop.host.clone(), h.nexthop.mx, h.nexthop.port);
            let resolver = resolver.clone();
            set.spawn(async move {
                let r = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    resolve(resolver.as_deref(), &host, mx, port),
                )
                .await
                .unwrap_or(Err(Lookup::TryAgain("no answer within 10 seconds".into())));
                (i, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(x) = r {
                out.push(x);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            warnings.push(format!("cannot check smart-host names: {e}"));
            return;
        }
    };
    for (i, r) in results {
        let h = &hops[i];
        match r {
            Ok(()) => {}
            Err(Lookup::NotFound(why)) => problems.push(format!(
                "{}: smart host {} does not resolve: {why}",
                h.what, h.nexthop.host
            )),
            Err(Lookup::TryAgain(why)) => warnings.push(format!(
                "{}: cannot resolve smart host {} now: {why}",
                h.what, h.nexthop.host
            )),
        }
    }
}

fn push_hop(hops: &mut Vec<Hop>, problems: &mut Vec<String>, what: String, nexthop: &str) {
    match conf::nexthop::Nexthop::parse(nexthop, 25) {
        Ok(nexthop) => hops.push(Hop { what, nexthop }),
        Err(e) => problems.push(format!("{what}: {e}")),
    }
}

/// Why a name did not resolve.
enum Lookup {
    /// The name does not exist or has no address: an error.
    NotFound(String),
    /// The lookup failed for now: a warning.
    TryAgain(String),
}

/// Resolves a next hop as the smtp client would: for a domain its MX
/// records (or, without them, its own addresses), for `[host]` its
/// addresses; through DNS, or with `smtp_host_lookup = native` through the
/// system resolver (`resolver` is `None`).
async fn resolve(
    resolver: Option<&hickory_resolver::TokioResolver>,
    host: &str,
    mx: bool,
    port: u16,
) -> Result<(), Lookup> {
    use hickory_resolver::proto::rr::RecordType;
    let Some(resolver) = resolver else {
        return match tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::count)
        {
            Ok(0) => Err(Lookup::NotFound("host not found".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(Lookup::NotFound(e.to_string())),
        };
    };
    let name = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    let classify = |e: &hickory_resolver::net::NetError, rtype: &str| {
        let text = |t: &str| format!("Name service error for name={host} type={rtype}: {t}");
        if e.is_nx_domain() {
            Err(Lookup::NotFound(text("Host not found")))
        } else if e.is_no_records_found() {
            Ok(false)
        } else {
            Err(Lookup::TryAgain(text("Host not found, try again")))
        }
    };
    if mx {
        match resolver.lookup(name.as_str(), RecordType::MX).await {
            Ok(l) if !l.answers().is_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                classify(&e, "MX")?;
            }
        }
    }
    let mut found = false;
    for rtype in [RecordType::A, RecordType::AAAA] {
        match resolver.lookup(name.as_str(), rtype).await {
            Ok(l) => found |= !l.answers().is_empty(),
            Err(e) => found |= classify(&e, if rtype == RecordType::A { "A" } else { "AAAA" })?,
        }
        if found {
            return Ok(());
        }
    }
    Err(Lookup::NotFound(format!(
        "Name service error for name={host} type=A: Host found but no data record of requested type"
    )))
}

/// The entries of a table whose entries can be listed: files in postmap
/// format (hash, texthash, lmdb, btree, cdb, ...), `static:` and
/// `inline:`; as (file:line, key, value). Pattern tables (regexp, pcre,
/// cidr) are skipped: their results depend on the address.
fn table_entries(spec: &str) -> Vec<(String, String, String)> {
    let Some((kind, name)) = spec.split_once(':') else {
        return Vec::new();
    };
    let Ok(table) = conf::tables::open(spec, &Origin::Default) else {
        return Vec::new(); // reported with the other tables above
    };
    let keys: Vec<(String, String)> = match kind {
        "hash" | "texthash" | "lmdb" | "btree" | "cdb" | "dbm" | "sdbm" => {
            let Ok(text) = std::fs::read_to_string(name) else {
                return Vec::new();
            };
            text.lines()
                .enumerate()
                .filter(|(_, l)| {
                    let t = l.trim_start();
                    !t.is_empty() && !t.starts_with('#') && !l.starts_with([' ', '\t'])
                })
                .filter_map(|(i, l)| {
                    let key = l.split_whitespace().next()?;
                    Some((
                        format!("{name}:{}", i + 1),
                        key.trim_matches('"').to_string(),
                    ))
                })
                .collect()
        }
        "static" => vec![(spec.to_string(), "*".to_string())],
        "inline" => name
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
            .filter(|k| !k.is_empty())
            .map(|k| (spec.to_string(), k))
            .collect(),
        _ => Vec::new(),
    };
    keys.into_iter()
        .filter_map(|(at, key)| {
            let value = table.lookup(&key.to_lowercase()).ok().flatten()?;
            Some((at, key, value))
        })
        .collect()
}

/// `smtp_oauth2_client_secret_expires`: Entra ID does not say when a secret
/// expires, so the admin writes the date the portal shows.
fn secret_expiry(value: &str, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    let value = value.trim();
    if value.is_empty() {
        return;
    }
    let Some(days) = days_from_date(value) else {
        problems.push(format!(
            "smtp_oauth2_client_secret_expires = {value}: expected a date as YYYY-MM-DD"
        ));
        return;
    };
    let today = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / 86400) as i64;
    let left = days - today;
    if left < 0 {
        problems.push(format!(
            "smtp_oauth2_client_secret_expires = {value}: the client secret has expired; add a new secret to the application, put it in smtp_oauth2_client_secret_file and update this date"
        ));
    } else if left < 30 {
        warnings.push(format!(
            "smtp_oauth2_client_secret_expires = {value}: the client secret expires in {left} days; add a new secret to the application before then"
        ));
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
fn days_from_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod secret_expiry_tests {
    use super::days_from_date;

    #[test]
    fn dates() {
        assert_eq!(days_from_date("1970-01-01"), Some(0));
        assert_eq!(days_from_date("2000-03-01"), Some(11_017));
        assert_eq!(days_from_date("2026-11-22"), Some(20_779));
        assert_eq!(days_from_date("2026-13-01"), None);
        assert_eq!(days_from_date("26-11-22"), None);
        assert_eq!(days_from_date("tomorrow"), None);
    }
}

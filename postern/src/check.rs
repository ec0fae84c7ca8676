//! `postern check`: every configuration problem at once — main.cf and
//! master.cf syntax and values, lookup tables named by `*_maps`
//! parameters, programs, the queue directory and its permissions, TLS and
//! secret files. Exit status 0 when all is well, 1 otherwise.

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
        ClientAuth::Secret(path) => private("smtp_oauth2_client_secret_file", path, problems),
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

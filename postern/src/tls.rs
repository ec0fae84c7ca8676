//! `postern tls new-cert`: a self-signed certificate and private key for
//! smtpd's STARTTLS, for a first install (AUTH is offered only inside TLS
//! by default).
//!
//! - RSA 2048 by default: the one key type every TLS 1.0-era device
//!   (printers, scanners, Windows XP-era software) can use; `--ec` makes a
//!   P-256 key for modern clients.
//! - 825 days by default: the longest validity Apple's systems accept for
//!   a TLS server certificate, so a Mac or iPhone told to trust it does not
//!   refuse it; long enough that a LAN relay does not need yearly care.
//! - The key is written like every secret (`conf::passwd::write_secret_file`),
//!   mode 0600: smtpd loads it before dropping privileges, as Postfix does.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: postern [-c config_dir] tls new-cert [--host NAME]... [--days N] [--cert PATH] [--key PATH] [--ec] [--force]";

/// Default validity in days (see the module documentation).
const DEFAULT_DAYS: u32 = 825;

/// `tls new-cert` options as given.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    hosts: Vec<String>,
    days: Option<u32>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ec: bool,
    force: bool,
}

/// What to make and where, with the configuration applied.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    hosts: Vec<String>,
    days: u32,
    ec: bool,
    force: bool,
    cert: PathBuf,
    /// Equal to `cert` for one file holding key and certificate (Postfix's
    /// default `smtpd_tls_key_file = $smtpd_tls_cert_file`).
    key: PathBuf,
}

fn parse(args: &[String]) -> Result<Options, String> {
    match args.first().map(String::as_str) {
        Some("new-cert") => {}
        Some(other) => return Err(format!("tls: unknown command: {other}")),
        None => return Err("tls: no command given".into()),
    }
    let mut o = Options::default();
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("tls new-cert: {name} needs a value")),
            }
        };
        match name {
            "--host" => {
                let h = value()?;
                check_host(&h)?;
                if !o.hosts.contains(&h) {
                    o.hosts.push(h);
                }
            }
            "--days" => {
                let v = value()?;
                o.days = Some(
                    v.parse()
                        .ok()
                        .filter(|d| (1..=36500).contains(d))
                        .ok_or_else(|| format!("tls new-cert: --days {v}: expected 1 to 36500"))?,
                );
            }
            "--cert" => o.cert = Some(PathBuf::from(value()?)),
            "--key" => o.key = Some(PathBuf::from(value()?)),
            "--ec" if inline.is_none() => o.ec = true,
            "--force" if inline.is_none() => o.force = true,
            _ => return Err(format!("tls new-cert: unknown option {arg}")),
        }
    }
    Ok(o)
}

/// A DNS name (letters, digits, '-', '.', optionally `*.` first) or an IP
/// address.
fn check_host(h: &str) -> Result<(), String> {
    if h.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && h.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tls new-cert: --host {h}: expected a host name or an IP address"
        ))
    }
}

/// Fills in what the options leave open from the configuration: the host
/// is `$myhostname`; the files are `smtpd_tls_cert_file` and
/// `smtpd_tls_key_file` when set, else `$config_directory/smtpd.pem` and
/// `$config_directory/smtpd.key`.
fn plan(o: Options, cfg: &conf::Config) -> Result<Plan, String> {
    let hosts = if o.hosts.is_empty() {
        if cfg.myhostname.is_empty() {
            return Err("tls new-cert: myhostname is empty; name the host with --host".into());
        }
        vec![cfg.myhostname.clone()]
    } else {
        o.hosts
    };
    if hosts[0].len() > 64 {
        return Err(format!(
            "tls new-cert: {} is longer than 64 characters, the limit of a certificate's common name; give a shorter name first",
            hosts[0]
        ));
    }
    let confdir = PathBuf::from(&cfg.config_directory);
    let key = if let Some(k) = o.key {
        k
    } else if cfg.resolver.is_set("smtpd_tls_key_file") && !cfg.smtpd_tls_key_file.is_empty() {
        PathBuf::from(&cfg.smtpd_tls_key_file)
    } else if o.cert.is_none() && !cfg.smtpd_tls_cert_file.is_empty() {
        // Postfix's default smtpd_tls_key_file is $smtpd_tls_cert_file:
        // key and certificate in one file.
        PathBuf::from(&cfg.smtpd_tls_cert_file)
    } else {
        confdir.join("smtpd.key")
    };
    let cert = match o.cert {
        Some(c) => c,
        None if !cfg.smtpd_tls_cert_file.is_empty() => PathBuf::from(&cfg.smtpd_tls_cert_file),
        None => confdir.join("smtpd.pem"),
    };
    Ok(Plan {
        hosts,
        days: o.days.unwrap_or(DEFAULT_DAYS),
        ec: o.ec,
        force: o.force,
        cert,
        key,
    })
}

/// Makes a self-signed server certificate for `hosts` (the first is also
/// the subject's CN) valid for `days`, with an RSA 2048 or P-256 key.
fn generate(hosts: &[String], days: u32, ec: bool) -> Result<(X509, PKey<Private>), String> {
    let e = |e: openssl::error::ErrorStack| format!("cannot make the certificate: {e}");
    let key = if ec {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
        PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?
    } else {
        PKey::from_rsa(Rsa::generate(2048).map_err(e)?).map_err(e)?
    };
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &hosts[0])
        .map_err(e)?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(e)?;
    b.set_version(2).map_err(e)?;
    let mut serial = BigNum::new().map_err(e)?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false).map_err(e)?;
    let serial = serial.to_asn1_integer().map_err(e)?;
    b.set_serial_number(&serial).map_err(e)?;
    b.set_subject_name(&name).map_err(e)?;
    b.set_issuer_name(&name).map_err(e)?;
    b.set_pubkey(&key).map_err(e)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // An hour of slack for clients whose clocks are a little behind.
    let not_before = Asn1Time::from_unix(now - 3600).map_err(e)?;
    let not_after = Asn1Time::from_unix(now + i64::from(days) * 86400).map_err(e)?;
    b.set_not_before(&not_before).map_err(e)?;
    b.set_not_after(&not_after).map_err(e)?;
    b.append_extension(BasicConstraints::new().critical().build().map_err(e)?)
        .map_err(e)?;
    let mut usage = KeyUsage::new();
    usage.critical().digital_signature();
    if !ec {
        // RSA key exchange (TLS 1.0-1.2 without ECDHE) encrypts to the key.
        usage.key_encipherment();
    }
    b.append_extension(usage.build().map_err(e)?).map_err(e)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e)?)
        .map_err(e)?;
    let mut san = SubjectAlternativeName::new();
    for h in hosts {
        if h.parse::<IpAddr>().is_ok() {
            san.ip(h);
        } else {
            san.dns(h);
        }
    }
    let san = san.build(&b.x509v3_context(None, None)).map_err(e)?;
    b.append_extension(san).map_err(e)?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(e)?;
    b.append_extension(ski).map_err(e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(e)?;
    Ok((b.build(), key))
}

/// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
fn fingerprint(cert: &X509) -> Result<String, String> {
    let d = cert
        .digest(MessageDigest::sha256())
        .map_err(|e| format!("cannot hash the certificate: {e}"))?;
    Ok(d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Makes and writes the certificate and key of `plan`; `group` as for
/// `conf::passwd::write_secret_file`. Returns the certificate.
fn write(plan: &Plan, group: Option<u32>) -> Result<X509, String> {
    if !plan.force {
        for p in [&plan.cert, &plan.key] {
            if std::fs::symlink_metadata(p).is_ok() {
                return Err(format!(
                    "{} already exists; use --force to replace it",
                    p.display()
                ));
            }
        }
    }
    let (cert, key) = generate(&plan.hosts, plan.days, plan.ec)?;
    let e = |e: openssl::error::ErrorStack| format!("cannot encode the certificate: {e}");
    let cert_pem = cert.to_pem().map_err(e)?;
    let key_pem = key.private_key_to_pem_pkcs8().map_err(e)?;
    let write_err = |p: &Path, err: std::io::Error| format!("cannot write {}: {err}", p.display());
    if plan.cert == plan.key {
        let mut both = key_pem;
        both.extend_from_slice(&cert_pem);
        conf::passwd::write_secret_file(&plan.key, &both, group)
            .map_err(|err| write_err(&plan.key, err))?;
    } else {
        // Key first: a certificate never sits beside a key it does not match
        // unless writing the certificate itself fails.
        conf::passwd::write_secret_file(&plan.key, &key_pem, group)
            .map_err(|err| write_err(&plan.key, err))?;
        let text = String::from_utf8_lossy(&cert_pem);
        conf::edit::write_atomically(&plan.cert, &text)
            .map_err(|err| write_err(&plan.cert, err))?;
    }
    Ok(cert)
}

/// Runs `postern tls ARGS` on the configuration in `dir`; returns the exit
/// status.
pub fn main(dir: &Path, args: &[String]) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let cfg = match queue::service::load_for_command("postern", dir, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let plan = match plan(opts, &cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return 1;
        }
    };
    let cert = match write(&plan, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return 1;
        }
    };
    report(dir, &cfg, &plan, &cert);
    0
}

fn report(dir: &Path, cfg: &conf::Config, plan: &Plan, cert: &X509) {
    let kind = if plan.ec { "EC P-256" } else { "RSA 2048" };
    println!(
        "postern tls: wrote a self-signed certificate for {} ({kind}, valid until {})",
        plan.hosts.join(", "),
        cert.not_after()
    );
    let access = "mode 0600";
    if plan.cert == plan.key {
        println!("  key and certificate: {} ({access})", plan.cert.display());
    } else {
        println!("  certificate: {}", plan.cert.display());
        println!("  private key: {} ({access})", plan.key.display());
    }
    match fingerprint(cert) {
        Ok(f) => println!("  SHA256 Fingerprint={f}"),
        Err(e) => eprintln!("postern: warning: {e}"),
    }
    let mut settings: Vec<String> = Vec::new();
    let cert_s = plan.cert.display().to_string();
    let key_s = plan.key.display().to_string();
    if cfg.smtpd_tls_cert_file != cert_s {
        settings.push(format!("smtpd_tls_cert_file = {cert_s}"));
    }
    // An unset smtpd_tls_key_file follows smtpd_tls_cert_file.
    let key_needs_setting = if cfg.resolver.is_set("smtpd_tls_key_file") {
        cfg.smtpd_tls_key_file != key_s
    } else {
        key_s != cert_s
    };
    if key_needs_setting {
        settings.push(format!("smtpd_tls_key_file = {key_s}"));
    }
    if cfg.smtpd_tls_security_level == "none" {
        settings.push("smtpd_tls_security_level = may".into());
    }
    let c = crate::passwd::dash_c(dir);
    if settings.is_empty() {
        println!("Run postern {c}reload to use it.");
    } else {
        println!("To use it, run:");
        let quoted: Vec<String> = settings.iter().map(|s| format!("'{s}'")).collect();
        println!("  postconf {c}-e {}", quoted.join(" "));
        println!("  postern {c}reload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::{SslContext, SslFiletype, SslMethod};
    use std::os::unix::fs::MetadataExt;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_options() {
        assert_eq!(parse(&args(&["new-cert"])), Ok(Options::default()));
        let o = parse(&args(&[
            "new-cert",
            "--host",
            "relay.contoso.com",
            "--host=192.168.1.5",
            "--days",
            "90",
            "--cert=/x/c.pem",
            "--key",
            "/x/c.key",
            "--ec",
            "--force",
        ]))
        .unwrap();
        assert_eq!(
            o,
            Options {
                hosts: vec!["relay.contoso.com".into(), "192.168.1.5".into()],
                days: Some(90),
                cert: Some("/x/c.pem".into()),
                key: Some("/x/c.key".into()),
                ec: true,
                force: true,
            }
        );
        for bad in [
            &[][..],
            &["old-cert"],
            &["new-cert", "--host"],
            &["new-cert", "--host", "bad name"],
            &["new-cert", "--host", "-x.example"],
            &["new-cert", "--days", "0"],
            &["new-cert", "--days", "x"],
            &["new-cert", "--days", "99999"],
            &["new-cert", "--ec=yes"],
            &["new-cert", "--frob"],
            &["new-cert", "extra"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(check_host("*.contoso.com").is_ok());
        assert!(check_host("::1").is_ok());
    }

    fn cfg_with(main_cf: &str) -> (tempfile::TempDir, conf::Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), main_cf).unwrap();
        let cfg = conf::load(dir.path(), &[]).unwrap();
        (dir, cfg)
    }

    #[test]
    fn paths_and_host_from_the_configuration() {
        let (dir, cfg) = cfg_with("myhostname = relay.contoso.com\n");
        let p = plan(Options::default(), &cfg).unwrap();
        assert_eq!(p.hosts, vec!["relay.contoso.com"]);
        assert_eq!(p.days, 825);
        assert_eq!(p.cert, dir.path().join("smtpd.pem"));
        assert_eq!(p.key, dir.path().join("smtpd.key"));
        assert!(!p.ec && !p.force);

        // Only the certificate set: the key lives in the same file, as
        // Postfix's default smtpd_tls_key_file = $smtpd_tls_cert_file says.
        let (_d, cfg) = cfg_with("smtpd_tls_cert_file = /etc/x/both.pem\n");
        let p = plan(Options::default(), &cfg).unwrap();
        assert_eq!(
            (p.cert.as_path(), p.key.as_path()),
            (Path::new("/etc/x/both.pem"), Path::new("/etc/x/both.pem"))
        );
        let o = Options {
            cert: Some("/o/c.pem".into()),
            ..Options::default()
        };
        let p = plan(o, &cfg).unwrap();
        assert_eq!(p.key, _d.path().join("smtpd.key"));

        let (_d, cfg) =
            cfg_with("smtpd_tls_cert_file = /etc/x/c.pem\nsmtpd_tls_key_file = /etc/x/k.pem\n");
        let p = plan(
            Options {
                hosts: vec!["h.example".into()],
                ..Options::default()
            },
            &cfg,
        )
        .unwrap();
        assert_eq!(
            (p.cert.as_path(), p.key.as_path()),
            (Path::new("/etc/x/c.pem"), Path::new("/etc/x/k.pem"))
        );
        assert_eq!(p.hosts, vec!["h.example"]);
        let long = format!("{}.example", "a".repeat(60));
        assert!(
            plan(
                Options {
                    hosts: vec![long],
                    ..Options::default()
                },
                &cfg
            )
            .is_err()
        );
    }

    fn plan_in(dir: &Path, ec: bool) -> Plan {
        Plan {
            hosts: vec!["relay.contoso.com".into(), "192.168.1.5".into()],
            days: 30,
            ec,
            force: false,
            cert: dir.join("smtpd.pem"),
            key: dir.join("smtpd.key"),
        }
    }

    fn check_files(p: &Plan, ec: bool) {
        let cert = X509::from_pem(&std::fs::read(&p.cert).unwrap()).unwrap();
        let key = PKey::private_key_from_pem(&std::fs::read(&p.key).unwrap()).unwrap();
        assert!(cert.public_key().unwrap().public_eq(&key), "key matches");
        assert_eq!(
            key.id(),
            if ec {
                openssl::pkey::Id::EC
            } else {
                openssl::pkey::Id::RSA
            }
        );
        if !ec {
            assert_eq!(key.bits(), 2048);
        }
        let cn = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap();
        assert_eq!(cn.data().to_string().unwrap(), "relay.contoso.com");
        let sans = cert.subject_alt_names().unwrap();
        let dns: Vec<&str> = sans.iter().filter_map(|n| n.dnsname()).collect();
        let ips: Vec<&[u8]> = sans.iter().filter_map(|n| n.ipaddress()).collect();
        assert_eq!(dns, vec!["relay.contoso.com"]);
        assert_eq!(ips, vec![&[192u8, 168, 1, 5][..]]);
        assert!(cert.verify(&key).unwrap(), "self-signed");
        let in_30_days = Asn1Time::days_from_now(30).unwrap();
        let diff = cert.not_after().diff(&in_30_days).unwrap();
        assert!(diff.days == 0 && diff.secs.abs() < 120, "{diff:?}");
        // As smtpd loads them.
        let mut ctx = SslContext::builder(SslMethod::tls_server()).unwrap();
        ctx.set_certificate_chain_file(&p.cert).unwrap();
        ctx.set_private_key_file(&p.key, SslFiletype::PEM).unwrap();
        ctx.check_private_key().unwrap();
        let key_mode = std::fs::metadata(&p.key).unwrap().mode() & 0o7777;
        assert_eq!(key_mode, 0o600);
        assert!(conf::passwd::check_permissions(&p.key, None).is_ok());
        let f = fingerprint(&cert).unwrap();
        assert_eq!(f.len(), 32 * 3 - 1);
    }

    #[test]
    fn new_cert_rsa_and_ec() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan_in(dir.path(), false);
        write(&p, None).unwrap();
        check_files(&p, false);
        assert_eq!(std::fs::metadata(&p.cert).unwrap().mode() & 0o7777, 0o644);
        let before = std::fs::read(&p.key).unwrap();
        let e = write(&p, None).unwrap_err();
        assert!(e.contains("already exists; use --force"), "{e}");
        assert_eq!(std::fs::read(&p.key).unwrap(), before, "untouched");
        p.force = true;
        p.ec = true;
        write(&p, None).unwrap();
        check_files(&p, true);
        assert_ne!(std::fs::read(&p.key).unwrap(), before);
    }

    #[test]
    fn new_cert_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan_in(dir.path(), true);
        p.key = p.cert.clone();
        write(&p, None).unwrap();
        let pem = std::fs::read_to_string(&p.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(pem.contains("-----BEGIN CERTIFICATE-----"));
        check_files(&p, true);
    }

    #[test]
    fn new_cert_key_for_mail_owner_group_as_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = plan_in(dir.path(), true);
        write(&p, Some(65534)).unwrap();
        let m = std::fs::metadata(&p.key).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 65534, 0o640));
        assert!(conf::passwd::check_permissions(&p.key, Some(65534)).is_ok());
    }
}

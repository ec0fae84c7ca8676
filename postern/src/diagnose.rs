//! `postern diagnose [--from ADDR] [--to ADDR] [--send] [--json] [--relay
//! NEXTHOP]`: the troubleshooting walk the IIS guides do by hand with
//! telnet, done against the route postern would really use, with postern's
//! own client code and settings.
//!
//! The route comes from qmgr's resolver (relayhost, transport_maps,
//! sender_dependent_relayhost_maps), the settings from main.cf plus the
//! transport's master.cf `-o` overrides, as the delivery agent sees them.
//! Then [`walk`] goes through it one step at a time — resolve, connect,
//! banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, optionally DATA, QUIT — with
//! the `smtp_client` library the `smtp` delivery agent is built on, and
//! [`report`] prints each step's result, the server's exact reply, and what
//! it means and how to fix it ([`queue::explain`] for Exchange Online).
//!
//! Exit status: 0 when every step passed, 1 when one failed (or the
//! configuration cannot be read), 64 for a usage error. Passwords, client
//! secrets and access tokens are never printed; for XOAUTH2 the claims of
//! the token that matter (aud, roles or scp, upn, appid, tid, exp) are.

mod auth;
mod report;
mod tls;
mod walk;

use queue::route::{self, Route, Router};
use report::{Report, Step};
use std::path::Path;

const USAGE: &str = "usage: postern [-c config_dir] diagnose [--from ADDR] [--to ADDR] [--send] [--json] [--relay NEXTHOP]";

/// What to diagnose.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// Envelope sender; default: the mailbox the route signs in as, else
    /// `postmaster@$myorigin`.
    pub from: Option<String>,
    /// Recipient; default: the sender.
    pub to: Option<String>,
    /// Send a test message (DATA).
    pub send: bool,
    /// One JSON document instead of text.
    pub json: bool,
    /// Use this next hop (`[host]:port`, `host`) instead of the route.
    pub relay: Option<String>,
}

/// Parses the arguments after `diagnose`; `Ok(None)` for `--help`.
fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            let v = match &inline {
                Some(v) => v.clone(),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("diagnose: {name} needs {what}"))?,
            };
            if v.trim().is_empty() || v.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("diagnose: {name}: bad value \"{v}\""));
            }
            Ok(v)
        };
        match name {
            "--from" | "-f" => o.from = Some(address(&value("an address")?)?),
            "--to" | "-t" => o.to = Some(address(&value("an address")?)?),
            "--relay" => o.relay = Some(value("a next hop such as [smtp.office365.com]:587")?),
            "--send" if inline.is_none() => o.send = true,
            "--json" if inline.is_none() => o.json = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("diagnose: unknown argument {other}")),
        }
    }
    Ok(Some(o))
}

/// Checks an address as MAIL FROM/RCPT TO would carry it (`<>` and
/// angle brackets are accepted and stripped).
fn address(a: &str) -> Result<String, String> {
    let bare = a
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a);
    if bare.is_empty() {
        return Ok(String::new());
    }
    proto::parse_path(&format!("<{bare}>"))
        .map(|_| bare.to_string())
        .map_err(|e| format!("diagnose: bad address {a}: {e}"))
}

/// Runs `postern diagnose ARGS` with the configuration in `dir`; returns
/// the exit status.
pub fn main(dir: &Path, args: &[String]) -> i32 {
    let opts = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("postern: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let report = match conf::load_lenient(dir, &[]) {
        Ok((cfg, warnings)) => {
            for w in &warnings.0 {
                eprintln!("postern: warning: {w}; using the default");
            }
            queue::log::init(
                &cfg,
                "diagnose",
                queue::log::Options {
                    stderr_name: Some("postern".into()),
                    verbose_stderr: false,
                },
            );
            let r = diagnose(dir, &cfg, &opts);
            queue::log::info(&log_line(&r));
            r
        }
        Err(errs) => {
            let mut step = Step::fail("config", "the configuration cannot be read");
            step.detail = errs.0.iter().map(|e| e.to_string()).collect();
            let mut r = Report {
                send: opts.send,
                ..Report::default()
            };
            r.push(step.explain(
                "Fix main.cf (postern check lists every problem), then run postern diagnose again.",
            ));
            r
        }
    };
    if opts.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.render(report::use_colour()));
    }
    report.exit_code()
}

/// The mail log's record of the run.
fn log_line(r: &Report) -> String {
    let result = match r.failed() {
        None => "every step passed".to_string(),
        Some(s) => format!("failed at {}: {}", s.name, s.summary),
    };
    format!(
        "from=<{}>, to=<{}>, route={}, send={}: {result}",
        r.sender,
        r.recipient,
        r.route.as_deref().unwrap_or("none"),
        if r.send { "yes" } else { "no" }
    )
}

/// A route the walk can follow.
struct Smtp {
    transport: String,
    nexthop: String,
}

fn diagnose(dir: &Path, cfg: &conf::Config, opts: &Options) -> Report {
    let mut r = Report {
        send: opts.send,
        ..Report::default()
    };
    let router = if opts.relay.is_some() {
        None
    } else {
        match Router::new(cfg) {
            Ok(x) => Some(x),
            Err(errs) => {
                r.push(
                    Step::fail("route", "the routing tables cannot be opened")
                        .line(
                            errs.iter()
                                .map(|e| e.to_string())
                                .collect::<Vec<_>>()
                                .join("; "),
                        )
                        .explain("Fix transport_maps / sender_dependent_relayhost_maps (postern check), then try again."),
                );
                return r;
            }
        }
    };
    // Without --from, the sender is the mailbox the route signs in as, so
    // a send-as check passes; the route of the null sender decides which.
    let from = match &opts.from {
        Some(f) => f.clone(),
        None => {
            let probe = opts.to.clone().unwrap_or_default();
            let nexthop = match &router {
                None => opts.relay.clone(),
                Some(rt) => match rt.resolve(cfg, &probe, None, "") {
                    Ok(Route::Agent { nexthop, .. }) => Some(nexthop),
                    _ => None,
                },
            };
            nexthop
                .and_then(|nh| walk::mailbox_for(cfg, &nh))
                .unwrap_or_else(|| format!("postmaster@{}", cfg.myorigin))
        }
    };
    let to = opts.to.clone().unwrap_or_else(|| from.clone());
    r.sender = from.clone();
    r.recipient = to.clone();
    let Some(smtp) = route_step(&mut r, cfg, router.as_ref(), opts, &from, &to) else {
        return r;
    };
    let (tcfg, note) = transport_config(dir, cfg, &smtp.transport);
    if let (Some(n), Some(last)) = (note, r.steps.last_mut()) {
        last.detail.push(n);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            r.push(Step::fail(
                "resolve",
                format!("cannot start the event loop: {e}"),
            ));
            return r;
        }
    };
    let job = walk::Job {
        nexthop: &smtp.nexthop,
        sender: &from,
        recipient: &to,
        send: opts.send,
    };
    rt.block_on(walk::run(&tcfg, &job, &mut r));
    // Background DNS tasks are not waited for.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    r
}

/// The `route` step: where mail from `from` to `to` goes. `None` when the
/// walk cannot go on (an error route, local delivery, a bad next hop).
fn route_step(
    r: &mut Report,
    cfg: &conf::Config,
    router: Option<&Router>,
    opts: &Options,
    from: &str,
    to: &str,
) -> Option<Smtp> {
    let (route, source) = match (router, &opts.relay) {
        (_, Some(relay)) => (
            Route::Agent {
                transport: "smtp".into(),
                nexthop: relay.clone(),
            },
            "--relay".to_string(),
        ),
        (Some(rt), None) => match rt.resolve(cfg, to, None, from) {
            Ok(route) => {
                let source = match &route {
                    Route::Agent { nexthop, .. }
                        if !cfg.relayhost.is_empty() && *nexthop == cfg.relayhost =>
                    {
                        format!("relayhost = {}", cfg.relayhost)
                    }
                    Route::Agent { nexthop, .. } if *nexthop == route::rcpt_domain(to) => {
                        "the recipient's domain: MX lookup (relayhost is empty)".to_string()
                    }
                    _ => "transport_maps, sender_dependent_relayhost_maps or default_transport"
                        .to_string(),
                };
                (route, source)
            }
            Err(e) => {
                r.push(
                    Step::fail("route", format!("routing lookup for {to} failed: {e}"))
                        .explain("A lookup table used for routing failed; fix it (postern check) and try again."),
                );
                return None;
            }
        },
        (None, None) => return None,
    };
    match route {
        Route::Agent { transport, nexthop } => {
            let desc = format!("{transport}:{nexthop}");
            r.route = Some(desc.clone());
            if transport == "maildir" || nexthop.starts_with('/') {
                r.push(
                    Step::ok("route", format!("{desc} (local Maildir delivery)"))
                        .line(format!("from {source}"))
                        .explain("Mail for this recipient is written into a Maildir on this machine; there is no SMTP server to diagnose. Set relayhost (e.g. [smtp.office365.com]:587) or use --relay to check a smart host."),
                );
                return None;
            }
            if let Err(e) = conf::nexthop::Nexthop::parse(&nexthop, 25) {
                r.push(
                    Step::fail("route", format!("{desc}: bad next hop"))
                        .line(format!("from {source}"))
                        .explain(e),
                );
                return None;
            }
            r.push(Step::ok("route", desc).line(format!("from {source}")));
            Some(Smtp { transport, nexthop })
        }
        Route::Error { dsn, text } => {
            r.route = Some(format!("error:{dsn} {text}"));
            let fate = if dsn.starts_with('4') {
                "deferred"
            } else {
                "bounced"
            };
            r.push(
                Step::fail("route", format!("mail to {to} is {fate} by the configuration: {dsn} {text}"))
                    .explain("The route for this recipient is an error: or retry: transport (transport_maps, default_transport or an alias); change it to deliver by SMTP."),
            );
            None
        }
        Route::Discard { text } => {
            r.route = Some(format!("discard:{text}"));
            r.push(
                Step::fail("route", format!("mail to {to} is discarded by the configuration: {text}"))
                    .explain("The route for this recipient is the discard: transport; change it to deliver by SMTP."),
            );
            None
        }
    }
}

/// main.cf with the `-o` overrides of master.cf service `transport`, as
/// that delivery agent sees its configuration; plus a note on what was
/// applied.
fn transport_config(
    dir: &Path,
    main: &conf::Config,
    transport: &str,
) -> (conf::Config, Option<String>) {
    let path = dir.join("master.cf");
    let Ok(mc) = conf::mastercf::MasterCf::load(&path) else {
        return (main.clone(), None);
    };
    let Some(svc) = mc
        .services
        .iter()
        .find(|s| s.name == transport && s.kind != conf::mastercf::ServiceType::Inet)
    else {
        return (
            main.clone(),
            Some(format!(
                "transport {transport} is not a service in {}: qmgr cannot deliver this mail",
                path.display()
            )),
        );
    };
    if svc.overrides.is_empty() {
        return (main.clone(), None);
    }
    let o: Vec<(String, String, conf::Origin)> = svc
        .overrides
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.clone(),
                conf::Origin::Override {
                    path: path.clone(),
                    line: svc.line,
                    service: svc.name.clone(),
                },
            )
        })
        .collect();
    let list = svc
        .overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    match conf::load_lenient(dir, &o) {
        Ok((c, _)) => (
            c,
            Some(format!("master.cf overrides of {transport}: {list}")),
        ),
        Err(e) => (
            main.clone(),
            Some(format!(
                "cannot apply the master.cf overrides of {transport} ({e}); using main.cf alone"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        assert_eq!(parse(&args(&[])), Ok(Some(Options::default())));
        let o = parse(&args(&[
            "--from",
            "a@b.test",
            "--to=<c@d.test>",
            "--send",
            "--json",
            "--relay",
            "[smtp.office365.com]:587",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            o,
            Options {
                from: Some("a@b.test".into()),
                to: Some("c@d.test".into()),
                send: true,
                json: true,
                relay: Some("[smtp.office365.com]:587".into()),
            }
        );
        assert_eq!(parse(&args(&["--help"])), Ok(None));
        for bad in [
            &["--from"][..],
            &["--to", "a b@c"],
            &["--frob"],
            &["--send=yes"],
            &["--from", "<a@@b>"],
            &["--relay", ""],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(address("<>"), Ok(String::new()));
    }

    #[test]
    fn usage_error_and_unreadable_configuration() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(main(dir.path(), &args(&["--bogus"])), 64);
        // No main.cf at all.
        assert_eq!(main(&dir.path().join("nowhere"), &args(&["--json"])), 1);
    }

    fn cfg(dir: &Path, extra: &str) -> conf::Config {
        std::fs::write(
            dir.join("main.cf"),
            format!("myhostname = relay.contoso.test\nmydestination =\n{extra}"),
        )
        .unwrap();
        conf::load_lenient(dir, &[]).unwrap().0
    }

    #[test]
    fn routes_that_cannot_be_walked() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("transport");
        std::fs::write(
            &t,
            "bad.test error:5.7.1 no mail here\nlocal.test maildir:/var/mail/x\n",
        )
        .unwrap();
        let c = cfg(
            dir.path(),
            &format!("transport_maps = texthash:{}\n", t.display()),
        );
        let o = Options {
            from: Some("a@relay.contoso.test".into()),
            to: Some("x@bad.test".into()),
            ..Options::default()
        };
        let r = diagnose(dir.path(), &c, &o);
        assert_eq!(r.exit_code(), 1);
        let s = r.failed().unwrap();
        assert_eq!(s.name, "route");
        assert!(
            s.summary
                .contains("bounced by the configuration: 5.7.1 no mail here")
        );
        let o = Options {
            to: Some("x@local.test".into()),
            ..o
        };
        let r = diagnose(dir.path(), &c, &o);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].status, report::Status::Ok);
        assert_eq!(r.route.as_deref(), Some("maildir:/var/mail/x"));
    }

    #[test]
    fn master_cf_overrides_apply() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), "smtp_tls_security_level = may\n");
        std::fs::write(
            dir.path().join("master.cf"),
            "relay unix - - n - - smtp\n  -o smtp_tls_security_level=encrypt\n",
        )
        .unwrap();
        let (t, note) = transport_config(dir.path(), &c, "relay");
        assert_eq!(t.smtp_tls_security_level, "encrypt");
        assert!(note.unwrap().contains("smtp_tls_security_level=encrypt"));
        let (t, note) = transport_config(dir.path(), &c, "smtp");
        assert_eq!(t.smtp_tls_security_level, "may");
        assert!(note.unwrap().contains("not a service"));
    }
}

use super::*;
use proptest::prelude::*;

const SAMPLE: &str = "\
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
# ==========================================================================
smtp      inet  n       -       n       -       -       smtpd
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  # a comment inside the entry
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_banner = $myhostname ESMTP relay }
127.0.0.1:2525 inet n   -       n       -       1       smtpd -v -o smtpd_sasl_auth_enable=no
[::1]:25  inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
qmgr      unix  n       -       n       300?    1       qmgr
relay     unix  -       -       n       -       -       smtp -vD -osmtp_helo_timeout=5 -- extra {two words}
bounce    unix  -       -       -       -       0       bounce
";

fn parse(text: &str) -> MasterCf {
    MasterCf::parse(text, Path::new("/etc/postern/master.cf")).unwrap()
}

fn errors(text: &str) -> Vec<String> {
    MasterCf::parse(text, Path::new("/etc/postern/master.cf"))
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn postfix_style_entries() {
    let m = parse(SAMPLE);
    assert_eq!(m.services.len(), 8);
    let smtp = m.find("smtp", ServiceType::Inet).unwrap();
    assert!(!smtp.private && smtp.unpriv && !smtp.chroot);
    assert_eq!((smtp.wakeup, smtp.maxproc, smtp.line), (0, None, 4));
    assert_eq!(smtp.command, "smtpd");
    assert!(smtp.args.is_empty() && smtp.overrides.is_empty());

    let sub = m.find("submission", ServiceType::Inet).unwrap();
    assert_eq!(sub.line, 5);
    assert_eq!(
        sub.overrides,
        vec![
            ("syslog_name".to_string(), "postfix/submission".to_string()),
            ("smtpd_tls_security_level".into(), "encrypt".into()),
            ("smtpd_banner".into(), "$myhostname ESMTP relay".into()),
        ]
    );
    let local = m.find("127.0.0.1:2525", ServiceType::Inet).unwrap();
    assert_eq!(local.maxproc, Some(1));
    assert_eq!(local.args, vec!["-v"]);
    assert_eq!(
        local.inet_endpoint(),
        Some((Some("127.0.0.1".into()), "2525".into()))
    );
    assert_eq!(
        m.find("[::1]:25", ServiceType::Inet)
            .unwrap()
            .inet_endpoint(),
        Some((Some("::1".into()), "25".into()))
    );
    assert_eq!(smtp.inet_endpoint(), Some((None, "smtp".into())));

    let pickup = m.find("pickup", ServiceType::Unix).unwrap();
    assert_eq!(
        (pickup.wakeup, pickup.wakeup_if_used, pickup.private),
        (60, false, false)
    );
    let qmgr = m.find("qmgr", ServiceType::Unix).unwrap();
    assert_eq!((qmgr.wakeup, qmgr.wakeup_if_used), (300, true));
    assert_eq!(qmgr.inet_endpoint(), None);

    let relay = m.find("relay", ServiceType::Unix).unwrap();
    assert!(relay.private);
    assert_eq!(relay.args, vec!["-vD", "--", "extra", "two words"]);
    assert_eq!(
        relay.overrides,
        vec![("smtp_helo_timeout".to_string(), "5".to_string())]
    );
    let bounce = m.find("bounce", ServiceType::Unix).unwrap();
    assert_eq!(bounce.maxproc, Some(0));
    assert!(m.find("bounce", ServiceType::Inet).is_none());

    let ov = m.overrides(sub);
    assert_eq!(
        ov[0].2.to_string(),
        "/etc/postern/master.cf:5 (service submission)"
    );
}

#[test]
fn renders_like_postconf_m() {
    let m = parse(SAMPLE);
    let r = |n: &str, t| m.render_entry(n, t).unwrap();
    assert_eq!(
        r("smtp", ServiceType::Inet),
        "smtp       inet  n       -       n       -       -       smtpd"
    );
    assert_eq!(
        r("submission", ServiceType::Inet),
        "submission inet  n       -       n       -       -       smtpd -o syslog_name=postfix/submission \
         -o smtpd_tls_security_level=encrypt -o {smtpd_banner=$myhostname ESMTP relay}"
    );
    assert_eq!(
        r("127.0.0.1:2525", ServiceType::Inet),
        "127.0.0.1:2525 inet n    -       n       -       1       smtpd -v -o smtpd_sasl_auth_enable=no"
    );
    assert_eq!(
        r("relay", ServiceType::Unix),
        "relay      unix  -       -       n       -       -       smtp -vD -o smtp_helo_timeout=5 -- extra {two words}"
    );
    assert_eq!(
        m.find("submission", ServiceType::Inet)
            .unwrap()
            .render_folded(),
        "submission inet  n       -       n       -       -       smtpd\n    \
         -o syslog_name=postfix/submission\n    -o smtpd_tls_security_level=encrypt\n    \
         -o {smtpd_banner=$myhostname ESMTP relay}"
    );
    assert_eq!(m.render().lines().count(), 8);
}

#[test]
fn rendered_text_parses_back() {
    let m = parse(SAMPLE);
    for folded in [false, true] {
        let text: String = m
            .services
            .iter()
            .map(|s| if folded { s.render_folded() } else { s.render() } + "\n")
            .collect();
        let again = parse(&text);
        for (a, b) in m.services.iter().zip(&again.services) {
            assert_eq!(
                Service {
                    line: 0,
                    ..a.clone()
                },
                Service {
                    line: 0,
                    ..b.clone()
                }
            );
        }
    }
}

#[test]
fn every_bad_entry_is_reported() {
    let e = errors(
        "  stray\n\
         smtp inet n - n - - smtpd\n\
         short unix - -\n\
         a bogus - - - - - x\n\
         b unix yes - maybe 5s -1 -\n\
         smtp inet n - n - - smtpd\n\
         25 inet n - n - - smtpd\n\
         host:99999 inet n - n - - smtpd\n\
         c unix - - n - - cmd -o\n\
         d unix - - n - - cmd -o novalue\n\
         e unix - - n - - cmd -o name = value\n\
         f unix - - n - - cmd -o {bad name=x}\n\
         g unix - - n - - cmd -o {x=y\n\
         [::1 inet n - n - - smtpd\n\
         priv inet - - n - - smtpd\n",
    );
    let has = |i: usize, line: usize, text: &str| {
        assert!(
            e[i].starts_with(&format!("/etc/postern/master.cf:{line}: ")) && e[i].contains(text),
            "error {i}: {e:#?}"
        )
    };
    has(0, 1, "does not continue a service entry");
    has(1, 3, "bad field count: 4 fields, expected at least 8");
    has(
        2,
        4,
        "invalid type field \"bogus\": expected inet, unix, unix-dgram, fifo or pass",
    );
    has(
        3,
        5,
        "invalid private field \"yes\": expected y, n or - (default y)",
    );
    has(4, 5, "invalid chroot field \"maybe\"");
    has(5, 5, "invalid wakeup field \"5s\"");
    has(6, 5, "invalid maxproc field \"-1\"");
    has(7, 5, "command field has no default value");
    has(
        8,
        6,
        "duplicate service \"smtp inet\" (first defined at line 2)",
    );
    has(
        9,
        7,
        "duplicate service \"25 inet\" (first defined at line 2)",
    );
    has(10, 8, "bad port \"99999\"");
    has(11, 9, "-o at the end of the line");
    has(12, 10, "invalid \"-o novalue\": missing '='");
    has(13, 11, "write -o { name = ... }");
    has(14, 12, "bad parameter name \"bad name\"");
    has(15, 13, "missing '}'");
    has(16, 14, "bad inet service name \"[::1\": missing \"]\"");
    has(
        17,
        15,
        "inet service cannot be private: set the private column to n (it is \"-\")",
    );
    assert_eq!(e.len(), 18, "{e:#?}");
}

#[test]
fn inet_names() {
    assert_eq!(parse_inet("smtp").unwrap(), (None, "smtp".into()));
    assert_eq!(parse_inet(":2525").unwrap(), (None, "2525".into()));
    assert_eq!(
        parse_inet("relay.lan:submission").unwrap(),
        (Some("relay.lan".into()), "submission".into())
    );
    assert_eq!(
        parse_inet("[ipv6:2001:db8::1]:25").unwrap(),
        (Some("2001:db8::1".into()), "25".into())
    );
    assert!(
        parse_inet("[ipv6:nope]:25")
            .unwrap_err()
            .contains("malformed IPv6")
    );
    assert!(parse_inet("[::1]x").unwrap_err().contains("garbage"));
    assert!(parse_inet("[::1]").unwrap_err().contains("missing port"));
    assert!(parse_inet("host:").unwrap_err().contains("missing port"));
    assert!(
        parse_inet("bad host:25")
            .unwrap_err()
            .contains("not a valid host name")
    );
    assert!(parse_inet("25x").unwrap_err().contains("bad port"));
    assert!(parse_inet("0").unwrap_err().contains("bad port"));
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("master.cf");
    std::fs::write(&p, SAMPLE).unwrap();
    let m = MasterCf::load(&p).unwrap();
    assert_eq!(m.path, p);
    assert_eq!(m.services.len(), 8);
    let e = MasterCf::load(&dir.path().join("missing")).unwrap_err();
    assert!(e[0].to_string().contains("missing"));
}

/// Found by the `mastercf` fuzz target: an argument in `{ }` that starts
/// with `-` (and ends the options, as `{ }` does) was printed as an option
/// without braces, so `postconf -M` output read back as other arguments,
/// and a literal `-o` argument after it as an override.
#[test]
fn fuzz_braced_arguments_that_look_like_options_read_back() {
    for (line, args, overrides) in [
        (
            "smtp inet n - n - - smtpd -o a=b -v { -  n 51 } x",
            &["-v", "-  n 51", "x"][..],
            1,
        ),
        (
            "smtp inet n - n - - smtpd -v {-x} -o a=b",
            &["-v", "-x", "-o", "a=b"][..],
            0,
        ),
        (
            "smtp inet n - n - - smtpd -- -o a=b",
            &["--", "-o", "a=b"][..],
            0,
        ),
    ] {
        let m = parse(line);
        let s = &m.services[0];
        assert_eq!(s.args, args, "{line}");
        assert_eq!(s.overrides.len(), overrides, "{line}");
        for text in [s.render(), s.render_folded()] {
            let again = parse(&text);
            assert_eq!(again.services[0].args, s.args, "{text}");
            assert_eq!(again.services[0].overrides, s.overrides, "{text}");
        }
    }
}

proptest! {
    #[test]
    fn never_panics(s in "\\PC*") {
        let _ = MasterCf::parse(&s, Path::new("m"));
    }

    #[test]
    fn truncated_sample_never_panics(cut in 0usize..1200) {
        let t: String = SAMPLE.chars().take(cut).collect();
        let _ = MasterCf::parse(&t, Path::new("m"));
    }

    #[test]
    fn entry_shaped_lines_never_panic(
        fields in proptest::collection::vec("[a-z0-9:\\[\\]{}?=_ -]{0,8}|-o|-vo|\\{ a = b \\}", 0..14)
    ) {
        let _ = MasterCf::parse(&fields.join(" "), Path::new("m"));
    }

    #[test]
    fn generated_services_round_trip(
        name in "[a-z][a-z0-9_]{0,12}",
        private in "[yn-]", unpriv in "[yn-]", chroot in "[yn-]",
        wakeup in "-|[0-9]{1,4}\\??", maxproc in "-|[0-9]{1,3}",
        flags in proptest::collection::vec("-[vD]", 0..2),
        overrides in proptest::collection::vec(("[a-z_]{1,10}", "[a-z$ ]{0,12}"), 0..4),
        rest in proptest::collection::vec("[a-z=/]{1,8}|[a-z]{1,4} [a-z]{1,4}", 0..3),
        fold in any::<bool>(),
    ) {
        let mut line = format!("{name} unix {private} {unpriv} {chroot} {wakeup} {maxproc} cmd");
        for f in &flags { line.push(' '); line.push_str(f); }
        for (n, v) in &overrides { line.push_str(&format!(" -o {{ {n} = {v} }}")); }
        for r in &rest { line.push_str(&format!(" {{{r}}}")); }
        let m = parse(&line);
        let s = &m.services[0];
        prop_assert_eq!(&s.args[..flags.len()], &flags[..]);
        prop_assert_eq!(s.overrides.len(), overrides.len());
        let text = if fold { s.render_folded() } else { s.render() };
        let again = parse(&text);
        prop_assert_eq!(Service { line: 0, ..s.clone() }, Service { line: 0, ..again.services[0].clone() });
    }
}

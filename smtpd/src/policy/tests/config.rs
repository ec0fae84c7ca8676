//! Configuration errors and random restriction lists.

use super::*;

#[test]
fn configuration_errors_name_file_and_line() {
    // Every supported name is accepted in every list.
    let all: Vec<&str> = restriction::SUPPORTED.iter().map(|(n, _)| *n).collect();
    let all = all.join(", ");
    let access = "check_client_access inline:{a=OK}, check_helo_access inline:{a=OK}, check_sender_access inline:{a=OK}, \
                  check_recipient_access inline:{a=OK}, check_sasl_access inline:{a=OK}";
    for list in [
        "smtpd_client_restrictions",
        "smtpd_helo_restrictions",
        "smtpd_sender_restrictions",
        "smtpd_recipient_restrictions",
        "smtpd_data_restrictions",
    ] {
        let e = errors(&format!("{list} = {all}, {access}\n"));
        assert!(e.is_empty(), "{list}: {e:?}");
    }
    let e = errors(
        "relay_domains = contoso.test\nsmtpd_recipient_restrictions = permit_mynetworks,\n  reject_unauth_destinaton\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(&format!(
            "{MAIN_CF}:6: bad value for smtpd_recipient_restrictions: \"reject_unauth_destinaton\": unknown restriction; did you mean reject_unauth_destination?"
        )),
        "{e:?}"
    );
    let e = errors(
        "smtpd_client_restrictions = reject_rbl_client zen.spamhaus.org\nsmtpd_data_restrictions = static:OK\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(&format!(
            "{MAIN_CF}:5: bad value for smtpd_client_restrictions"
        )) && e[0].contains("not supported by postern"),
        "{e:?}"
    );
    assert!(
        e[1].contains("smtpd_data_restrictions") && e[1].contains("needs check_client_access"),
        "{e:?}"
    );
    let e = errors("smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(&format!("{MAIN_CF}:5: bad value for smtpd_relay_restrictions"))
            && e[0].contains("at least one of smtpd_relay_restrictions or smtpd_recipient_restrictions must contain reject_unauth_destination or similar"),
        "{e:?}"
    );
    assert_eq!(
        errors(
            "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
        ),
        Vec::<String>::new()
    );
    assert_eq!(errors("smtpd_relay_restrictions = permit_mynetworks, warn_if_reject, reject_unauth_destination\n").len(), 1);
    assert_eq!(
        errors("smtpd_relay_restrictions = permit, reject_unauth_destination\n").len(),
        1
    );
    assert_eq!(errors("smtpd_restriction_classes = c\nc = reject_unauth_destination\nsmtpd_relay_restrictions = permit_mynetworks c\n").len(), 0);
    let e = errors("mynetworks = 10.0.0.5/24\n");
    assert!(
        e[0].contains(r#"non-null host address bits in "10.0.0.5/24", perhaps you should use "10.0.0.0/24" instead"#),
        "{e:?}"
    );
    let e = errors("smtpd_restriction_classes = undefined\nrelay_domains = inline:{ }\n");
    assert_eq!(e.len(), 2, "{e:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const WORDS: &[&str] = &[
        "permit",
        "reject",
        "defer",
        "warn_if_reject",
        "defer_if_permit",
        "defer_if_reject",
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "reject_unauth_destination",
        "defer_unauth_destination",
        "permit_auth_destination",
        "reject_non_fqdn_sender",
        "reject_unknown_sender_domain",
        "reject_unknown_helo_hostname",
        "reject_unlisted_recipient",
        "check_sender_access",
        "inline:{a@b=REJECT,c=permit_mynetworks,d=DEFER_IF_PERMIT}",
        "check_client_access",
        "static:DUNNO",
        "cls",
        "bogus",
        "reject_rbl_client",
        ",",
        "{",
        "}",
        ":",
    ];

    fn list() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(WORDS), 0..8).prop_map(|v| v.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_restriction_lists_never_panic(client in list(), sender in list(), relay in list(), rcpt_list in list(), class in list(),
                                                from in "[a-z@%!\".]{0,12}", to in "[a-z@%!\".:\\[\\]]{0,14}") {
            let extra = format!(
                "smtpd_restriction_classes = cls\ncls = {class}\nsmtpd_client_restrictions = {client}\n\
                 smtpd_sender_restrictions = {sender}\nsmtpd_relay_restrictions = {relay}\n\
                 smtpd_recipient_restrictions = {rcpt_list} reject_unauth_destination\n"
            );
            let main = conf::MainCf::parse(&format!("myhostname = relay.example.net\n{extra}"), Path::new(MAIN_CF));
            let Ok(main) = main else { return Ok(()) };
            let Ok(c) = Config::build(&main, &[]) else { return Ok(()) };
            if let Ok(mut p) = Policy::new(&c) {
                p.dns = dns::Dns::offline();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let c = ctx(OUTSIDE, &from, &to);
                for stage in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
                    let v = rt.block_on(p.check(stage, &c));
                    if let Verdict::Reject { reply, .. } = v {
                        prop_assert!((400..600).contains(&reply.code));
                    }
                }
            }
        }
    }
}

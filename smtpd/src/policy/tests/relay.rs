//! The default policy, the open-relay battery, relay_domains and client lists.

use super::*;

#[tokio::test]
async fn default_policy_relays_only_for_mynetworks_and_authenticated_clients() {
    let p = policy("");
    for (addr, sasl, to, want) in [
        ("127.0.0.1", None, "x@y", "OK"),
        ("10.0.0.9", None, "x@y", "OK"),
        ("::1", None, "x@y", "OK"),
        ("::ffff:10.0.0.9", None, "x@y", "OK"),
        (OUTSIDE, Some("bob"), "x@y", "OK"),
        (OUTSIDE, None, "x@y", "554 5.7.1 <x@y>: Relay access denied"),
        (
            "10.0.1.9",
            None,
            "x@y",
            "554 5.7.1 <x@y>: Relay access denied",
        ),
        (
            "2001:db8::1",
            None,
            "x@y",
            "554 5.7.1 <x@y>: Relay access denied",
        ),
        (OUTSIDE, None, "user@relay.example.net", "OK"),
        (OUTSIDE, None, "user@localhost.example.net", "OK"),
        // Our own address literal: not local to postern, which delivers
        // nothing locally (the queue would send it to the relayhost).
        (
            OUTSIDE,
            None,
            "user@[192.0.2.25]",
            "554 5.7.1 <user@[192.0.2.25]>: Relay access denied",
        ),
        (OUTSIDE, None, "postmaster", "OK"),
        (OUTSIDE, None, "PostMaster", "OK"),
    ] {
        let mut c = ctx(addr, "sender@example.com", to);
        c.sasl_user = sasl;
        assert_eq!(rcpt(&p, &c).await, want, "{addr} {sasl:?} {to}");
    }
    let Verdict::Reject { reply, .. } = p.check(Stage::Rcpt, &ctx(OUTSIDE, "", "x@y")).await else {
        panic!("relayed");
    };
    assert_eq!(reply.code, 554);
    assert_eq!(reply.enhanced, Some(EnhancedCode::new(5, 7, 1)));
    assert_eq!(reply.text(), "<x@y>: Relay access denied");
    assert!(p.in_mynetworks("10.0.0.200".parse().unwrap()));
    assert!(!p.in_mynetworks("10.0.1.1".parse().unwrap()));
}

/// Classic relay tests (rlytest and friends): from a client outside
/// mynetworks, not authenticated, none of these may be relayed, whether
/// the trick points at this host ("relay" below), at a relay domain or at
/// an address literal.
const RELAY_BATTERY: &[(&str, bool)] = &[
    ("user@other.example", false),
    ("USER@OTHER.EXAMPLE", false),
    ("user@other.example.", false),
    ("user@Other.Example.", false),
    ("user%other.example@relay.example.net", false),
    ("user%other.example@RELAY.EXAMPLE.NET.", false),
    ("user%other.example@localhost", false),
    ("user%other.example@[192.0.2.25]", false),
    ("user%other.example", false),
    ("\"user%other.example\"", false),
    ("\"user%other.example\"@relay.example.net", false),
    ("\"user@other.example\"", false),
    ("\"user@other.example\"@relay.example.net", false),
    ("\"user@other.example\"@[192.0.2.25]", false),
    ("user@other.example@relay.example.net", false),
    ("user@other.example@[192.0.2.25]", false),
    ("other.example!user", false),
    ("other.example!user@relay.example.net", false),
    ("\"other.example!user\"@relay.example.net", false),
    (
        "relay.example.net!other.example!user@relay.example.net",
        false,
    ),
    (
        "user%other.example%relay.example.net@relay.example.net",
        false,
    ),
    (
        "other.example!user%relay.example.net@relay.example.net",
        false,
    ),
    (
        "user@other.example%relay.example.net@relay.example.net",
        false,
    ),
    ("user%relay.example.net@other.example", false),
    ("user@[1.2.3.4]", false),
    ("user@[192.0.2.99]", false),
    ("user@[IPv6:2001:db8::1]", false),
    ("user@1.2.3.4", false),
    ("user@other.example", true),
    ("@relay.example.net:user@other.example", false),
    ("@relay.example.net,@localhost:user@other.example", false),
    ("@[192.0.2.25]:user@other.example", false),
    ("@relay.example.net:user@relay.example.net", false),
    ("user%contoso.test@relay.example.net", false),
    ("user%other.example@contoso.test", false),
    ("\"user@other.example\"@contoso.test", false),
    ("user@other.example@contoso.test", false),
    ("other.example!user@contoso.test", false),
    ("@other.example:user@contoso.test", false),
    ("user@contoso.test", true),
];

const _: () = assert!(RELAY_BATTERY.len() >= 20);

#[tokio::test]
async fn open_relay_battery_nothing_is_relayed() {
    for extra in [
        "",
        "relay_domains = contoso.test\n",
        "relay_domains = contoso.test\nsmtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n",
    ] {
        let p = policy(extra);
        for (to, routed) in RELAY_BATTERY {
            let mut c = ctx(OUTSIDE, "sender@example.com", to);
            c.recipient_routed = *routed;
            let got = rcpt(&p, &c).await;
            assert!(
                got.starts_with("554 5.7.1 <") && got.ends_with(">: Relay access denied"),
                "relayed {to} (routed: {routed}) with {extra:?}: {got}"
            );
            // The session may leave the route in the address; the policy strips it.
            assert!(!got.contains('"') && !got.contains("<@"), "{got}");
        }
    }
    let p = policy("");
    assert_eq!(
        rcpt(
            &p,
            &ctx(OUTSIDE, "", "\"user@other.example\"@relay.example.net")
        )
        .await,
        "554 5.7.1 <user@other.example@relay.example.net>: Relay access denied",
        "Postfix shows the address in internal (unquoted) form"
    );
}

#[tokio::test]
async fn relay_domains_are_accepted_from_anyone() {
    let p = policy("relay_domains = contoso.test, .fabrikam.test\n");
    for (to, want) in [
        ("user@contoso.test", "OK"),
        ("User@Contoso.Test.", "OK"),
        ("user@sub.contoso.test", "OK"),
        // As in Postfix, ".domain" entries do nothing when relay_domains is
        // in parent_domain_matches_subdomains (the default).
        (
            "user@sub.fabrikam.test",
            "554 5.7.1 <user@sub.fabrikam.test>: Relay access denied",
        ),
        (
            "user@fabrikam.test",
            "554 5.7.1 <user@fabrikam.test>: Relay access denied",
        ),
        (
            "user@contoso.test.evil.example",
            "554 5.7.1 <user@contoso.test.evil.example>: Relay access denied",
        ),
        (
            "user@xcontoso.test",
            "554 5.7.1 <user@xcontoso.test>: Relay access denied",
        ),
    ] {
        assert_eq!(
            rcpt(&p, &ctx(OUTSIDE, "s@example.com", to)).await,
            want,
            "{to}"
        );
    }
    let p = policy(
        "relay_domains = contoso.test, .fabrikam.test\nparent_domain_matches_subdomains =\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@example.com", "user@sub.contoso.test")).await,
        "554 5.7.1 <user@sub.contoso.test>: Relay access denied"
    );
    assert_eq!(
        rcpt(
            &p,
            &ctx(OUTSIDE, "s@example.com", "user@a.sub.fabrikam.test")
        )
        .await,
        "OK"
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@example.com", "user@fabrikam.test")).await,
        "554 5.7.1 <user@fabrikam.test>: Relay access denied"
    );
    let p = policy(
        "relay_domains = inline:{ contoso.test = x }\nsmtpd_relay_restrictions = permit_mynetworks, defer_unauth_destination\n",
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@example.com", "user@sub.contoso.test")).await,
        "OK"
    );
    assert_eq!(
        rcpt(&p, &ctx(OUTSIDE, "s@example.com", "user@other.example")).await,
        "454 4.7.1 <user@other.example>: Relay access denied"
    );
}

#[tokio::test]
async fn recipient_access_ok_never_authorizes_a_routed_address() {
    let p = policy(
        "relay_domains = contoso.test\n\
         smtpd_relay_restrictions = check_recipient_access inline:{ contoso.test = OK, other.example = OK, blocked@contoso.test = REJECT }, permit_mynetworks, reject_unauth_destination\n",
    );
    for (to, want) in [
        ("user@other.example", "OK"),
        (
            "blocked@contoso.test",
            "554 5.7.1 <blocked@contoso.test>: Recipient address rejected: Access denied",
        ),
        (
            "user%evil.example@contoso.test",
            "554 5.7.1 <user%evil.example@contoso.test>: Relay access denied",
        ),
        (
            "\"user@evil.example\"@contoso.test",
            "554 5.7.1 <user@evil.example@contoso.test>: Relay access denied",
        ),
    ] {
        assert_eq!(
            rcpt(&p, &ctx(OUTSIDE, "s@example.com", to)).await,
            want,
            "{to}"
        );
    }
}

#[test]
fn client_lists() {
    let p = policy("");
    let l = p.client_list(&conf::values::split_list(
        "permit_mynetworks, !192.0.2.7, 192.0.2.0/24, permit_sasl_authenticated",
    ));
    assert!(l.matches("10.0.0.1".parse().unwrap(), false));
    assert!(l.matches("192.0.2.8".parse().unwrap(), false));
    assert!(!l.matches("192.0.2.7".parse().unwrap(), false));
    assert!(
        !l.matches("192.0.2.7".parse().unwrap(), true),
        "the exclusion comes first"
    );
    assert!(l.matches("198.51.100.1".parse().unwrap(), true));
    assert!(!l.matches("198.51.100.1".parse().unwrap(), false));
    let l = p.client_list(&["permit_inet_interfaces".into(), "10.0.0.5/24".into()]);
    assert!(l.matches("192.0.2.25".parse().unwrap(), false));
    assert!(
        !l.matches("10.0.0.5".parse().unwrap(), false),
        "bad items never match"
    );
    let c = cfg("smtpd_forbid_bare_newline_exclusions = 10.0.0.5/24\n");
    let e = p
        .client_list_for(&c, "smtpd_forbid_bare_newline_exclusions")
        .unwrap_err();
    assert!(
        e[0].to_string().starts_with(&format!(
            "{MAIN_CF}:5: bad value for smtpd_forbid_bare_newline_exclusions"
        )),
        "{e:?}"
    );
    let c = cfg("");
    assert!(
        p.client_list_for(&c, "local_header_rewrite_clients")
            .unwrap()
            .matches("127.0.0.1".parse().unwrap(), false)
    );
}

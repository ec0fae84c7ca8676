//! The mail transaction and the session around it: pipelining, replies
//! per recipient, refusals, lost connections, timeouts, long lines.

use super::*;

#[tokio::test]
async fn pipelining_with_mixed_recipient_replies() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        // Everything up to DATA arrives before the first reply: pipelining.
        let cmds = read_envelope(&mut c, 3).await;
        assert_eq!(
            cmds[0],
            format!("MAIL FROM:<scan@contoso.com> SIZE={} BODY=8BITMIME", CONTENT.len())
        );
        assert_eq!(cmds[1], "RCPT TO:<ok@contoso.com> NOTIFY=FAILURE ORCPT=rfc822;ok@contoso.com");
        c.say("250 2.1.0 Sender OK").await;
        c.say("250 2.1.5 Recipient OK").await;
        c.say("550 5.1.1 <gone@contoso.com>: Recipient address rejected: User unknown").await;
        c.say("450 4.2.1 <busy@contoso.com>: try later").await;
        c.say("354 Start mail input; end with <CRLF>.<CRLF>").await;
        let data = c.data().await;
        assert!(data.ends_with(b"hello\r\n..hidden dot\r\n"), "{}", String::from_utf8_lossy(&data));
        c.say("250 2.0.0 OK <id@CH2PR14MB4005.namprd14.prod.outlook.com> [Hostname=CH2PR14MB4005.namprd14.prod.outlook.com]")
            .await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["ok@contoso.com", "gone@contoso.com", "busy@contoso.com"],
    )
    .await;
    server.finish().await;
    let relay = format!("127.0.0.1[127.0.0.1]:{}", server.addr.port());
    assert!(!r.site_failure && !r.hold_route);
    let got: Vec<(Status, &str)> = r
        .results
        .iter()
        .map(|x| (x.status, x.dsn.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Status::Sent, "2.0.0"),
            (Status::Bounced, "5.1.1"),
            (Status::Deferred, "4.2.1")
        ]
    );
    assert_eq!(
        r.results[0].reason,
        "250 2.0.0 OK <id@CH2PR14MB4005.namprd14.prod.outlook.com> [Hostname=CH2PR14MB4005.namprd14.prod.outlook.com]"
    );
    assert_eq!(
        r.results[1].reason,
        "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <gone@contoso.com>: Recipient address rejected: User unknown (in reply to RCPT TO command)"
    );
    assert_eq!(r.results[1].remote_mta.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.results[1].diagnostic.as_deref(),
        Some("550 5.1.1 <gone@contoso.com>: Recipient address rejected: User unknown")
    );
    assert!(r.results.iter().all(|x| x.relay == relay));
    assert_eq!(
        r.results.iter().map(|x| x.idx).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[tokio::test]
async fn without_pipelining_commands_go_one_at_a_time() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(&["250-mx.test", "250 8BITMIME"]).await;
        let mail = c.expect("MAIL FROM:<scan@contoso.com>").await;
        assert!(
            !mail.contains("SIZE=") && !mail.contains("NOTIFY"),
            "{mail}"
        );
        assert!(c.quiet().await, "client pipelined without PIPELINING");
        c.say("250 2.1.0 ok").await;
        c.expect("RCPT TO:<a@contoso.com>").await;
        assert!(c.quiet().await);
        c.say("250 2.1.5 ok").await;
        c.expect("RCPT TO:<b@contoso.com>").await;
        c.say("250 2.1.5 ok").await;
        c.expect("DATA").await;
        c.say("354 go").await;
        c.data().await;
        c.say("250 2.0.0 queued").await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com", "b@contoso.com"],
    )
    .await;
    server.finish().await;
    assert!(
        r.results
            .iter()
            .all(|x| x.status == Status::Sent && x.reason == "250 2.0.0 queued")
    );
}

#[tokio::test]
async fn no_accepted_recipient_means_no_content() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 2).await;
        c.say("250 2.1.0 Sender OK").await;
        c.say("550 5.4.1 Recipient address rejected: Access denied")
            .await;
        c.say("550 5.4.1 Recipient address rejected: Access denied")
            .await;
        c.say("554 5.5.1 Error: no valid recipients").await;
        // RSET or QUIT next: never message content.
        let next = c.line().await;
        assert!(next == "QUIT" || next == "RSET", "{next}");
        c.say("221 bye").await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["x@fabrikam.com", "y@fabrikam.com"],
    )
    .await;
    server.finish().await;
    for x in &r.results {
        assert_eq!((x.status, x.dsn.as_str()), (Status::Bounced, "5.4.1"));
        assert!(
            x.reason
                .ends_with("Access denied (in reply to RCPT TO command)"),
            "{}",
            x.reason
        );
    }
}

#[tokio::test]
async fn end_of_data_rejection_applies_to_accepted_recipients() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, n| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        let rcpts = if n == 0 { 2 } else { 1 };
        read_envelope(&mut c, rcpts).await;
        c.say("250 2.1.0 Sender OK").await;
        for _ in 0..rcpts {
            c.say("250 2.1.5 Recipient OK").await;
        }
        c.say("354 go").await;
        c.data().await;
        if n == 0 {
            c.say("550 5.7.60 SMTP; Client does not have permissions to send as this sender").await;
        } else {
            c.say("432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=X]").await;
        }
        c.quit().await;
    })
    .await;
    let cfg = config("none");
    let r = deliver(
        &cfg,
        None,
        &bracket(server.addr),
        &["a@contoso.com", "b@contoso.com"],
    )
    .await;
    for x in &r.results {
        assert_eq!((x.status, x.dsn.as_str()), (Status::Bounced, "5.7.60"));
        assert_eq!(
            x.reason,
            "host 127.0.0.1[127.0.0.1] said: 550 5.7.60 SMTP; Client does not have permissions to send as this sender (in reply to end of DATA command)"
        );
    }
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    assert_eq!(
        (r.results[0].status, r.results[0].dsn.as_str()),
        (Status::Deferred, "4.3.2")
    );
    assert!(!r.hold_route);
    server.finish().await;
}

#[tokio::test]
async fn mail_from_refusal_that_means_configuration_holds_the_route() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 1).await;
        c.say("530 5.7.57 Client not authenticated to send mail. [X.prod.outlook.com]")
            .await;
        c.say("503 5.5.1 need MAIL").await;
        c.say("503 5.5.1 need MAIL").await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.7.57"));
    assert!(r.hold_route);
    assert!(
        x.reason.ends_with("(in reply to MAIL FROM command)"),
        "{}",
        x.reason
    );
}

#[tokio::test]
async fn greeting_4xx_is_a_site_failure() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.say("421 4.3.2 Service not available, closing transmission channel")
            .await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    assert!(r.site_failure);
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.3.2"));
    assert_eq!(
        x.reason,
        "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 Service not available, closing transmission channel"
    );
    assert_eq!(
        x.relay,
        format!("127.0.0.1[127.0.0.1]:{}", server.addr.port())
    );
}

#[tokio::test]
async fn connection_refused_is_worded_as_postfix() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let r = deliver(&config("none"), None, &bracket(addr), &["a@contoso.com"]).await;
    let x = &r.results[0];
    assert!(r.site_failure);
    assert_eq!(
        (x.status, x.dsn.as_str(), x.relay.as_str()),
        (Status::Deferred, "4.4.1", "none")
    );
    assert_eq!(
        x.reason,
        format!(
            "connect to 127.0.0.1[127.0.0.1]:{}: Connection refused",
            addr.port()
        )
    );
}

#[tokio::test]
async fn greeting_5xx_moves_on_to_the_next_mx() {
    let first = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.say("554 5.7.1 go away").await;
        c.quit().await;
    })
    .await;
    let port = first.addr.port();
    let second = FakeServer::start(&format!("127.0.0.2:{port}"), |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say("250 2.0.0 delivered").await;
        c.quit().await;
    })
    .await;
    let dns = DnsServer::start(&[
        ("example.test", "MX", "10 mx1.example.test"),
        ("example.test", "MX", "20 mx2.example.test"),
        ("mx1.example.test", "A", "127.0.0.1"),
        ("mx2.example.test", "A", "127.0.0.2"),
    ])
    .await;
    let r = deliver(
        &config("none"),
        Some(dns.addr),
        &format!("example.test:{port}"),
        &["a@example.test"],
    )
    .await;
    first.finish().await;
    second.finish().await;
    assert_eq!(r.results[0].status, Status::Sent, "{}", r.results[0].reason);
    assert_eq!(
        r.results[0].relay,
        format!("mx2.example.test[127.0.0.2]:{port}")
    );
    assert_eq!(r.results[0].remote_mta.as_deref(), Some("mx2.example.test"));
}

#[tokio::test]
async fn rejected_ehlo_falls_back_to_helo() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.say("220 old.test SMTP").await;
        c.expect("EHLO relay.test").await;
        c.say("502 5.5.2 Error: command not recognized").await;
        c.expect("HELO relay.test").await;
        c.say("250 old.test").await;
        assert_eq!(c.expect("MAIL FROM:").await, "MAIL FROM:<scan@contoso.com>");
        c.say("250 ok").await;
        assert_eq!(c.expect("RCPT TO:").await, "RCPT TO:<a@contoso.com>");
        c.say("250 ok").await;
        c.expect("DATA").await;
        c.say("354 go").await;
        c.data().await;
        c.say("250 fine").await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    assert_eq!(
        (r.results[0].status, r.results[0].dsn.as_str()),
        (Status::Sent, "2.0.0")
    );
}

#[tokio::test]
async fn server_that_drops_mid_data_defers() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.line().await;
        c.drop_now().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.4.2"));
    assert!(
        x.reason
            .starts_with("lost connection with 127.0.0.1[127.0.0.1] while sending "),
        "{}",
        x.reason
    );
}

#[tokio::test]
async fn long_lines_are_broken_and_dots_stuffed() {
    let long = "x".repeat(1200);
    let content = format!("Subject: t\r\n\r\n{long}\r\n.\r\n..two\r\n");
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        let data = String::from_utf8(c.data().await).unwrap();
        let want = format!(
            "Subject: t\r\n\r\n{}\r\n {}\r\n..\r\n...two\r\n",
            "x".repeat(998),
            "x".repeat(202)
        );
        assert_eq!(data, want);
        c.say("250 ok").await;
        c.quit().await;
    })
    .await;
    let (agent, _) = Agent::new(&config("none"), None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], content.as_bytes());
    let r = agent
        .deliver(&request(
            &q,
            "smtp",
            &bracket(server.addr),
            &["a@contoso.com"],
            false,
        ))
        .await;
    server.finish().await;
    assert_eq!(r.results[0].status, Status::Sent);
}

#[tokio::test]
async fn message_over_the_servers_size_limit_bounces_without_mail_from() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, _| async move {
        c.greet_ehlo(&["250-mx.test", "250 SIZE 10"]).await;
        c.quit().await;
    })
    .await;
    let r = deliver(
        &config("none"),
        None,
        &bracket(server.addr),
        &["a@contoso.com"],
    )
    .await;
    server.finish().await;
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Bounced, "5.3.4"));
    assert_eq!(
        x.reason,
        format!(
            "message size {} exceeds size limit 10 of server 127.0.0.1[127.0.0.1]",
            CONTENT.len()
        )
    );
}

#[tokio::test]
async fn a_silent_server_times_out_during_the_greeting() {
    let server = FakeServer::start("127.0.0.1:0", |c, _| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(c);
    })
    .await;
    let mut cfg = config("none");
    cfg.smtp_helo_timeout = Duration::from_secs(1);
    let r = deliver(&cfg, None, &bracket(server.addr), &["a@contoso.com"]).await;
    let x = &r.results[0];
    assert!(r.site_failure);
    assert_eq!(
        (x.dsn.as_str(), x.reason.as_str()),
        (
            "4.4.2",
            "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
        )
    );
    server.finish().await;
}

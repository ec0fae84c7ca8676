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

/// Queue files up to the inline limit are read on the event loop, larger
/// ones on the blocking pool: both arrive whole.
#[tokio::test]
async fn small_and_large_queue_files_are_delivered_whole() {
    let limit = crate::delivery::INLINE_READ_LIMIT as usize;
    for body_len in [1000, limit + 64 * 1024] {
        let line = format!("{}\r\n", "y".repeat(76));
        let body = line.repeat(body_len / line.len() + 1);
        let content = format!("Subject: size {body_len}\r\n\r\n{body}");
        let want = content.clone();
        let server = FakeServer::start("127.0.0.1:0", move |mut c, _| {
            let want = want.clone();
            async move {
                c.greet_ehlo(EHLO_PLAIN).await;
                read_envelope(&mut c, 1).await;
                for l in ["250 ok", "250 ok", "354 go"] {
                    c.say(l).await;
                }
                let data = String::from_utf8(c.data().await).unwrap();
                assert_eq!(data.len(), want.len());
                assert!(data == want, "the content changed on the way");
                c.say("250 ok").await;
                c.quit().await;
            }
        })
        .await;
        let (agent, _) = Agent::new(&config("none"), None);
        let q = queue_file("scan@contoso.com", &["a@contoso.com"], content.as_bytes());
        let size = std::fs::metadata(&q.path).unwrap().len() as usize;
        assert_eq!(size > limit, body_len > limit, "queue file of {size} bytes");
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
        assert_eq!(r.results[0].status, Status::Sent, "{body_len}: {r:?}");
    }
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

/// A server that accepts MAIL, answers the RCPTs with `rcpt` (in order)
/// and takes the message when any recipient was accepted.
async fn mx_server(bind: &str, rcpt: &'static [&'static str], done: &'static str) -> FakeServer {
    FakeServer::start(bind, move |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, rcpt.len()).await;
        c.say("250 2.1.0 Sender OK").await;
        for r in rcpt {
            c.say(r).await;
        }
        if rcpt.iter().any(|r| r.starts_with('2')) {
            c.say("354 go").await;
            c.data().await;
            c.say(done).await;
        } else {
            c.say("554 5.5.1 no valid recipients").await;
        }
        c.quit().await;
    })
    .await
}

/// The port of a listener on 127.0.0.1 that another loopback address can
/// share.
fn shared_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn recipients_with_a_4xx_go_to_the_next_mx() {
    let port = shared_port();
    let first = mx_server(
        &format!("127.0.0.1:{port}"),
        &[
            "250 2.1.5 Recipient OK",
            "451 4.7.500 Server busy. Please try again later from [127.0.0.1]. (AS843)",
            "550 5.4.1 Recipient address rejected: Access denied",
        ],
        "250 2.0.0 first",
    )
    .await;
    let second = FakeServer::start(&format!("127.0.0.2:{port}"), |mut c, _| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        let env = read_envelope(&mut c, 1).await;
        assert!(env[1].starts_with("RCPT TO:<busy@example.test>"), "{env:?}");
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say("250 2.0.0 second").await;
        c.quit().await;
    })
    .await;
    let dns = DnsServer::start(&[
        ("example.test", "MX", "20 mx2.example.test"),
        ("example.test", "MX", "10 mx1.example.test"),
        ("mx1.example.test", "A", "127.0.0.1"),
        ("mx2.example.test", "A", "127.0.0.2"),
    ])
    .await;
    let r = deliver(
        &config("none"),
        Some(dns.addr),
        &format!("example.test:{port}"),
        &["ok@example.test", "busy@example.test", "gone@example.test"],
    )
    .await;
    first.finish().await;
    second.finish().await;
    let got: Vec<(Status, &str, &str)> = r
        .results
        .iter()
        .map(|x| (x.status, x.reason.as_str(), x.relay.as_str()))
        .collect();
    let (mx1, mx2) = (
        format!("mx1.example.test[127.0.0.1]:{port}"),
        format!("mx2.example.test[127.0.0.2]:{port}"),
    );
    assert_eq!(got[0], (Status::Sent, "250 2.0.0 first", mx1.as_str()));
    assert_eq!(got[1], (Status::Sent, "250 2.0.0 second", mx2.as_str()));
    assert_eq!((got[2].0, got[2].2), (Status::Bounced, mx1.as_str()));
    assert!(!r.site_failure);
    assert_eq!((first.count(), second.count()), (1, 1));
}

#[tokio::test]
async fn a_4xx_at_the_last_server_allowed_defers_with_its_reply() {
    let port = shared_port();
    let first = mx_server(&format!("127.0.0.1:{port}"), &["451 4.3.0 first busy"], "").await;
    let second = mx_server(&format!("127.0.0.2:{port}"), &["452 4.3.1 second busy"], "").await;
    // smtp_mx_session_limit = 2: the third server is never tried.
    let third = mx_server(&format!("127.0.0.3:{port}"), &["250 ok"], "250 2.0.0 third").await;
    let dns = DnsServer::start(&[
        ("example.test", "MX", "10 mx1.example.test"),
        ("example.test", "MX", "20 mx2.example.test"),
        ("example.test", "MX", "30 mx3.example.test"),
        ("mx1.example.test", "A", "127.0.0.1"),
        ("mx2.example.test", "A", "127.0.0.2"),
        ("mx3.example.test", "A", "127.0.0.3"),
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
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.3.1"));
    assert_eq!(
        x.reason,
        "host mx2.example.test[127.0.0.2] said: 452 4.3.1 second busy (in reply to RCPT TO command)"
    );
    assert_eq!((first.count(), second.count(), third.count()), (1, 1, 0));
    assert!(!r.site_failure);
}

#[tokio::test]
async fn a_failed_connection_after_a_4xx_keeps_the_servers_reply() {
    let port = shared_port();
    let first = mx_server(
        &format!("127.0.0.1:{port}"),
        &["451 4.7.500 Server busy"],
        "",
    )
    .await;
    // mx2 (127.0.0.2) does not listen.
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
    let x = &r.results[0];
    assert_eq!(x.status, Status::Deferred);
    assert!(
        x.reason.contains("said: 451 4.7.500 Server busy"),
        "{}",
        x.reason
    );
    assert!(!r.site_failure);
}

#[tokio::test]
async fn mailbox_throttling_is_not_sent_to_another_server() {
    let port = shared_port();
    let first = mx_server(
        &format!("127.0.0.1:{port}"),
        &["250 2.1.5 Recipient OK"],
        "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname=X]",
    )
    .await;
    let second = mx_server(
        &format!("127.0.0.2:{port}"),
        &["250 ok"],
        "250 2.0.0 second",
    )
    .await;
    let dns = DnsServer::start(&[
        ("example.test", "A", "127.0.0.1"),
        ("example.test", "A", "127.0.0.2"),
    ])
    .await;
    let r = deliver(
        &config("none"),
        Some(dns.addr),
        &format!("[example.test]:{port}"),
        &["a@example.test"],
    )
    .await;
    first.finish().await;
    assert_eq!(r.results[0].dsn, "4.3.2");
    assert_eq!(second.count(), 0);
}

#[tokio::test]
async fn smtp_tcp_port_is_the_port_of_next_hops_without_one() {
    let port = shared_port();
    let server = mx_server(
        &format!("127.0.0.1:{port}"),
        &["250 ok"],
        "250 2.0.0 via A record",
    )
    .await;
    let dns = DnsServer::start(&[("nomx.test", "A", "127.0.0.1")]).await;
    let mut cfg = config("none");
    cfg.smtp_tcp_port = port.to_string();
    let r = deliver(&cfg, Some(dns.addr), "nomx.test", &["a@nomx.test"]).await;
    server.finish().await;
    assert_eq!(r.results[0].reason, "250 2.0.0 via A record");
    assert_eq!(r.results[0].relay, format!("nomx.test[127.0.0.1]:{port}"));
}

/// Accepts one connection, notes the client's address and refuses it.
async fn peer_recorder() -> (
    SocketAddr,
    tokio::task::JoinHandle<Option<std::net::IpAddr>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let accepted = tokio::time::timeout(Duration::from_secs(3), l.accept()).await;
        let (mut tcp, peer) = accepted.ok()?.ok()?;
        use tokio::io::AsyncWriteExt;
        let _ = tcp.write_all(b"421 4.3.2 not now\r\n").await;
        Some(peer.ip())
    });
    (addr, h)
}

#[tokio::test]
async fn smtp_bind_address_is_the_source_address() {
    let (addr, seen) = peer_recorder().await;
    let mut cfg = config("none");
    cfg.smtp_bind_address = "127.0.0.2".into();
    deliver(&cfg, None, &bracket(addr), &["a@contoso.com"]).await;
    assert_eq!(seen.await.unwrap(), Some("127.0.0.2".parse().unwrap()));

    // An address this host does not have: any address, unless enforced.
    let (addr, seen) = peer_recorder().await;
    cfg.smtp_bind_address = "192.0.2.25".into();
    deliver(&cfg, None, &bracket(addr), &["a@contoso.com"]).await;
    assert_eq!(seen.await.unwrap(), Some("127.0.0.1".parse().unwrap()));
    let (addr, seen) = peer_recorder().await;
    cfg.smtp_bind_address_enforce = true;
    let r = deliver(&cfg, None, &bracket(addr), &["a@contoso.com"]).await;
    let x = &r.results[0];
    assert_eq!((x.status, x.dsn.as_str()), (Status::Deferred, "4.4.1"));
    assert_eq!(
        x.reason,
        format!(
            "connect to 127.0.0.1[127.0.0.1]:{}: cannot bind to smtp_bind_address = 192.0.2.25: Cannot assign requested address",
            addr.port()
        )
    );
    assert_eq!(seen.await.unwrap(), None);
}

//! Session reuse, the maildir transport, and the qmgr socket.

use super::*;

/// Serves `transactions` messages on each connection.
async fn multi_server(transactions: usize, die_after_first: bool) -> FakeServer {
    FakeServer::start("127.0.0.1:0", move |mut c, n| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        for i in 0..transactions {
            let first = c.line().await;
            if first == "QUIT" || first.is_empty() {
                c.say("221 2.0.0 bye").await;
                return;
            }
            assert!(first.starts_with("MAIL FROM:"), "{first}");
            if die_after_first && n == 0 && i == 1 {
                c.say("421 4.4.2 idle timeout, closing").await;
                c.drop_now().await;
                return;
            }
            c.expect("RCPT TO:").await;
            c.expect("DATA").await;
            for l in ["250 ok", "250 ok", "354 go"] {
                c.say(l).await;
            }
            c.data().await;
            c.say(&format!("250 2.0.0 conn {n} message {i}")).await;
        }
        c.quit().await;
    })
    .await
}

fn cache_key(nexthop: &str) -> Key {
    Key {
        nexthop: nexthop.to_ascii_lowercase(),
        level: TlsLevel::None,
        sasl_user: None,
    }
}

#[tokio::test]
async fn sessions_are_reused_when_more_mail_waits() {
    let server = multi_server(2, false).await;
    let mut cfg = config("none");
    cfg.smtp_connection_cache_time_limit = Duration::from_secs(30);
    let (agent, _) = Agent::new(&cfg, None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let nh = bracket(server.addr);
    let r1 = agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    let r2 = agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    assert_eq!(r1.results[0].reason, "250 2.0.0 conn 0 message 0");
    assert_eq!(r2.results[0].reason, "250 2.0.0 conn 0 message 1");
    assert_eq!(server.count(), 1);
    let mut stale = Vec::new();
    let s = agent
        .cache
        .take(&cache_key(&nh), &mut stale)
        .expect("session cached");
    assert_eq!(s.uses, 2);
    assert_eq!(agent.cache.len(), 0);
    agent.cache.put(cache_key(&nh), s);
    agent.cache.close_all(Duration::from_secs(2)).await;
    server.finish().await;
}

#[tokio::test]
async fn reuse_count_limit_closes_the_session() {
    let server = multi_server(1, false).await;
    let mut cfg = config("none");
    cfg.smtp_connection_cache_time_limit = Duration::from_secs(30);
    cfg.smtp_connection_reuse_count_limit = 1;
    let (agent, _) = Agent::new(&cfg, None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let nh = bracket(server.addr);
    agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    let r = agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    assert_eq!(r.results[0].reason, "250 2.0.0 conn 1 message 0");
    assert_eq!(agent.cache.len(), 0);
    server.finish().await;
}

#[tokio::test]
async fn a_dead_cached_session_is_retried_on_a_new_connection() {
    let server = multi_server(2, true).await;
    let mut cfg = config("none");
    cfg.smtp_connection_cache_time_limit = Duration::from_secs(30);
    let (agent, _) = Agent::new(&cfg, None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let nh = bracket(server.addr);
    agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    let r = agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], false))
        .await;
    assert_eq!(r.results[0].reason, "250 2.0.0 conn 1 message 0");
    assert_eq!(server.count(), 2);
    agent.cache.close_all(Duration::from_secs(2)).await;
    server.finish().await;
}

#[tokio::test]
async fn maildir_transport_writes_one_file_per_recipient() {
    let root = tempfile::tempdir().unwrap();
    let md = root.path().join("Maildir");
    let (agent, _) = Agent::new(&config("none"), None);
    let q = queue_file(
        "scan@contoso.com",
        &["a@contoso.com", "b@contoso.com"],
        CONTENT,
    );
    let rcpts = ["a@contoso.com", "b@contoso.com"];
    let r = agent
        .deliver(&request(
            &q,
            "maildir",
            &md.display().to_string(),
            &rcpts,
            false,
        ))
        .await;
    for x in &r.results {
        assert_eq!(
            (
                x.status,
                x.dsn.as_str(),
                x.reason.as_str(),
                x.relay.as_str()
            ),
            (Status::Sent, "2.0.0", "delivered to maildir", "maildir")
        );
    }
    assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
    let r = agent
        .deliver(&request(&q, "maildir", "relative/dir", &rcpts, false))
        .await;
    assert_eq!(r.results[0].dsn, "4.3.5");
    let q2 = Queued {
        _dir: tempfile::tempdir().unwrap(),
        path: PathBuf::from("/nonexistent/ABC"),
    };
    let r = agent
        .deliver(&request(
            &q2,
            "maildir",
            &md.display().to_string(),
            &rcpts,
            false,
        ))
        .await;
    assert_eq!(r.results[0].status, Status::Deferred);
    assert!(
        r.results[0]
            .reason
            .starts_with("cannot read queue file /nonexistent/ABC"),
        "{}",
        r.results[0].reason
    );
}

async fn read_response(c: &mut tokio::net::UnixStream, buf: &mut Vec<u8>) -> Option<Response> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(r) = queue::deliver::decode::<Response>(buf).unwrap() {
            return Some(r);
        }
        let mut chunk = [0u8; 4096];
        let n = c.read(&mut chunk).await.unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn qmgr_connection_carries_many_requests_and_closes_on_garbage() {
    use tokio::io::AsyncWriteExt;
    let root = tempfile::tempdir().unwrap();
    let sock = root.path().join("smtp");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (agent, _) = Agent::new(&config("none"), None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::run(
        listener,
        std::sync::Arc::new(agent),
        2,
        async move {
            let _ = stopped.await;
        },
    ));
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let md = root.path().join("Maildir").display().to_string();
    let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
    for n in [7, 8, 9] {
        let mut req = request(&q, "maildir", &md, &["a@contoso.com"], false);
        req.req = n;
        c.write_all(&queue::deliver::encode(&req).unwrap())
            .await
            .unwrap();
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = read_response(&mut c, &mut buf).await.expect("a response");
        assert_eq!(r.results[0].status, Status::Sent);
        got.push(r.req);
    }
    got.sort();
    assert_eq!(got, vec![7, 8, 9]);
    c.write_all(&[0, 0, 0, 3, b'x', b'y', b'z']).await.unwrap();
    assert!(
        read_response(&mut c, &mut buf).await.is_none(),
        "connection closed after garbage"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_session_the_server_closed_while_idle_is_not_reused() {
    let server = FakeServer::start("127.0.0.1:0", |mut c, n| async move {
        c.greet_ehlo(EHLO_PLAIN).await;
        read_envelope(&mut c, 1).await;
        for l in ["250 ok", "250 ok", "354 go"] {
            c.say(l).await;
        }
        c.data().await;
        c.say(&format!("250 2.0.0 conn {n}")).await;
        if n == 0 {
            // Idle timeout on the server side.
            c.say("421 4.4.2 timeout waiting for client input").await;
            c.drop_now().await;
        } else {
            c.quit().await;
        }
    })
    .await;
    let mut cfg = config("none");
    cfg.smtp_connection_cache_time_limit = Duration::from_secs(30);
    let (agent, _) = Agent::new(&cfg, None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let nh = bracket(server.addr);
    agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], true))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = agent
        .deliver(&request(&q, "smtp", &nh, &["a@contoso.com"], false))
        .await;
    assert_eq!(r.results[0].reason, "250 2.0.0 conn 1");
    assert_eq!(server.count(), 2);
    server.finish().await;
}

/// A request left behind by a queue manager that died, and the new queue
/// manager's request for the same message: one delivery, never two.
#[tokio::test]
async fn a_recipient_done_in_the_queue_file_or_in_progress_is_not_delivered_again() {
    let root = tempfile::tempdir().unwrap();
    let md = root.path().join("Maildir");
    let (agent, _) = Agent::new(&config("none"), None);
    let q = queue_file("scan@contoso.com", &["a@contoso.com"], CONTENT);
    let req = request(
        &q,
        "maildir",
        &md.display().to_string(),
        &["a@contoso.com"],
        false,
    );
    let files = || std::fs::read_dir(md.join("new")).map_or(0, |d| d.count());

    // Both at once: one is delivered, the other waits for it.
    let (a, b) = tokio::join!(agent.deliver(&req), agent.deliver(&req));
    let mut got: Vec<(Status, String, String)> = [a, b]
        .into_iter()
        .map(|r| {
            let x = &r.results[0];
            (x.status, x.dsn.clone(), x.reason.clone())
        })
        .collect();
    // The delivered one first.
    got.sort_by_key(|g| g.2 != "delivered to maildir");
    assert_eq!(files(), 1, "{got:?}");
    assert_eq!(
        got[0],
        (Status::Sent, "2.0.0".into(), "delivered to maildir".into())
    );
    assert!(
        got[1]
            == (
                Status::Sent,
                "2.0.0".into(),
                "done already (delivered or bounced)".into()
            )
            || got[1]
                == (
                    Status::Deferred,
                    "4.3.0".into(),
                    "a delivery of this recipient is in progress".into()
                ),
        "{got:?}"
    );

    // Later: the file says done; nothing is delivered.
    let r = agent.deliver(&req).await;
    assert_eq!(
        (r.results[0].status, r.results[0].reason.as_str()),
        (Status::Sent, "done already (delivered or bounced)")
    );
    assert_eq!(files(), 1);
}

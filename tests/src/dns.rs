//! A minimal authoritative DNS server on 127.0.0.1 (UDP), for the unit
//! tests of the delivery agent (MX resolution) and of smtpd's policy
//! (reject_unknown_*_domain); the daemons are pointed at it with
//! `POSTERN_DNS_SERVER`.

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// The server; it runs until the test's runtime ends.
pub struct DnsServer {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Serves `records`: (name, type, value) with types MX (`pref host`,
    /// `0 .` for a null MX), A, AAAA, SERVFAIL (every query for the name
    /// fails) and any other type (the name exists without data). Unknown
    /// names get NXDOMAIN, known names without the type an empty answer.
    pub async fn start(records: &[(&str, &str, &str)]) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let records: Vec<(String, String, String)> = records
            .iter()
            .map(|(n, t, v)| (n.to_ascii_lowercase(), t.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let resp = answer(&q, &records);
                let _ = sock.send_to(&resp.to_vec().unwrap(), from).await;
            }
        });
        DnsServer { addr }
    }
}

fn answer(q: &Message, records: &[(String, String, String)]) -> Message {
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    let Some(query) = q.queries.first() else {
        return m;
    };
    m.add_query(query.clone());
    let qname = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mine: Vec<&(String, String, String)> = records.iter().filter(|r| r.0 == qname).collect();
    if mine.is_empty() {
        m.metadata.response_code = ResponseCode::NXDomain;
        return m;
    }
    if mine.iter().any(|r| r.1 == "SERVFAIL") {
        m.metadata.response_code = ResponseCode::ServFail;
        return m;
    }
    for (_, t, v) in mine {
        let rdata = match (t.as_str(), query.query_type()) {
            ("MX", RecordType::MX) => {
                let (p, h) = v.split_once(' ').unwrap();
                let name = if h == "." {
                    Name::root()
                } else {
                    Name::from_ascii(format!("{h}.")).unwrap()
                };
                RData::MX(MX::new(p.parse().unwrap(), name))
            }
            ("A", RecordType::A) => RData::A(A(v.parse().unwrap())),
            ("AAAA", RecordType::AAAA) => RData::AAAA(AAAA(v.parse().unwrap())),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(query.name().clone(), 60, rdata));
    }
    m
}

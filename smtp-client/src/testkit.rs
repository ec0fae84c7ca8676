//! Test peers: a scripted SMTP server on loopback (plain or STARTTLS) and
//! a throw-away certificate authority; the tiny DNS server is
//! postern-tests' ([`DnsServer`]).

use crate::chat::Stream;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_openssl::SslStream;

pub use postern_tests::dns::DnsServer;

/// A throw-away CA and a server certificate for `names`.
pub struct Pki {
    /// PEM file with the CA certificate (for smtp_tls_CAfile).
    pub ca_file: PathBuf,
    /// Acceptor presenting the server certificate.
    pub acceptor: Arc<SslAcceptor>,
    _dir: tempfile::TempDir,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn cert(
    cn: &str,
    names: &[&str],
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(std::process::id() ^ 0x5eed)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    match issuer {
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            if !names.is_empty() {
                let mut san = SubjectAlternativeName::new();
                for n in names {
                    san.dns(n);
                }
                let ext = san.build(&b.x509v3_context(Some(ca), None)).unwrap();
                b.append_extension(ext).unwrap();
            }
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build().unwrap())
                .unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

impl Pki {
    /// A CA and a server certificate with CN `names[0]` and `names` as
    /// DNS subject alternative names.
    pub fn new(names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = key();
        let ca = cert("postern test CA", &[], &ca_key, None);
        let srv_key = key();
        let srv = cert(names[0], names, &srv_key, Some((&ca, &ca_key)));
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        a.set_private_key(&srv_key).unwrap();
        a.set_certificate(&srv).unwrap();
        a.add_extra_chain_cert(ca).unwrap();
        Pki {
            ca_file,
            acceptor: Arc::new(a.build()),
            _dir: dir,
        }
    }
}

/// One accepted connection of the scripted server.
pub struct FakeConn {
    io: BufReader<Stream>,
    /// Every line the client sent, in order (shared by all connections).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl FakeConn {
    /// Sends one reply line (CRLF added).
    pub async fn say(&mut self, line: &str) {
        let _ = self
            .io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await;
        let _ = self.io.get_mut().flush().await;
    }

    /// Reads one command line, without CRLF; "" at end of stream.
    pub async fn line(&mut self) -> String {
        let mut s = String::new();
        let _ = self.io.read_line(&mut s).await;
        let s = s.trim_end_matches(['\r', '\n']).to_string();
        self.log.lock().unwrap().push(s.clone());
        s
    }

    /// Reads a line and checks that it starts with `prefix` (any case).
    pub async fn expect(&mut self, prefix: &str) -> String {
        let l = self.line().await;
        assert!(
            l.to_ascii_uppercase()
                .starts_with(&prefix.to_ascii_uppercase()),
            "expected {prefix:?}, client sent {l:?}"
        );
        l
    }

    /// Reads message content up to the lone `.` line; returns it as sent
    /// (still dot-stuffed, CRLF line ends).
    pub async fn data(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.io.read_until(b'\n', &mut line).await.unwrap();
            if n == 0 || line == b".\r\n" {
                return out;
            }
            out.extend_from_slice(&line);
        }
    }

    /// Performs the server side of the TLS handshake after `220` to
    /// STARTTLS (or at connect, for wrapper mode).
    pub async fn starttls(&mut self, acceptor: &SslAcceptor) -> bool {
        assert!(
            self.io.buffer().is_empty(),
            "client pipelined data after STARTTLS"
        );
        let inner = std::mem::replace(self.io.get_mut(), Stream::Closed);
        let Stream::Plain(tcp) = inner else {
            panic!("already TLS")
        };
        let ssl = Ssl::new(acceptor.context()).unwrap();
        let mut s = SslStream::new(ssl, tcp).unwrap();
        let ok = Pin::new(&mut s).accept().await.is_ok();
        *self.io.get_mut() = Stream::Tls(Box::new(s));
        ok
    }

    /// Drops the connection without a word.
    pub async fn drop_now(mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }

    /// True when the client sends nothing more within 200 ms (it waits
    /// for a reply instead of pipelining).
    pub async fn quiet(&mut self) -> bool {
        let wait =
            tokio::time::timeout(std::time::Duration::from_millis(200), self.io.fill_buf()).await;
        !matches!(wait, Ok(Ok(b)) if !b.is_empty())
    }

    /// Answers QUIT, if the client sends it, and ends the connection.
    pub async fn quit(mut self) {
        let l = self.line().await;
        if l.eq_ignore_ascii_case("QUIT") {
            self.say("221 2.0.0 Service closing transmission channel")
                .await;
        }
    }
}

/// A scripted SMTP server: each accepted connection runs `script(conn, n)`
/// where `n` counts connections from 0.
pub struct FakeServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Lines clients sent.
    pub log: Arc<Mutex<Vec<String>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

type Script =
    Arc<dyn Fn(FakeConn, usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl FakeServer {
    /// Listens on `bind` (e.g. `127.0.0.1:0`) and runs `script` per connection.
    pub async fn start<F, Fut>(bind: &str, script: F) -> FakeServer
    where
        F: Fn(FakeConn, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind(bind).await.unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(move |c, n| Box::pin(script(c, n)));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (count, lg, ts) = (connections.clone(), log.clone(), tasks.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    return;
                };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let conn = FakeConn {
                    io: BufReader::new(Stream::Plain(tcp)),
                    log: lg.clone(),
                };
                ts.lock().unwrap().push(tokio::spawn(script(conn, n)));
            }
        });
        FakeServer {
            addr,
            connections,
            log,
            tasks,
        }
    }

    /// Waits for every connection's script to end and re-raises the first
    /// failed assertion of a script.
    pub async fn finish(&self) {
        let handles: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for h in handles {
            match tokio::time::timeout(std::time::Duration::from_secs(10), h).await {
                Err(_) => panic!("a server script did not finish within 10 s"),
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => {}
            }
        }
    }

    /// The lines clients sent so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The EHLO reply of Exchange Online before STARTTLS.
pub const EHLO_PRE_TLS: &[&str] = &[
    "250-fake.outlook.test Hello [127.0.0.1]",
    "250-SIZE 157286400",
    "250-PIPELINING",
    "250-DSN",
    "250-ENHANCEDSTATUSCODES",
    "250-STARTTLS",
    "250-8BITMIME",
    "250 SMTPUTF8",
];

impl FakeConn {
    /// Greets and answers EHLO with `lines`.
    pub async fn greet_ehlo(&mut self, lines: &[&str]) {
        self.say("220 fake.outlook.test Microsoft ESMTP MAIL Service ready")
            .await;
        self.expect("EHLO ").await;
        for l in lines {
            self.say(l).await;
        }
    }
}

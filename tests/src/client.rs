//! A minimal async SMTP client for driving servers in tests (the fake's
//! self-tests, later smtpd): raw lines in, parsed [`Reply`]s out, STARTTLS
//! against the test CA.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslOptions, SslVerifyMode};
use proto::{Reply, ReplyParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::fake::TlsVersion;

/// How long [`TestClient::reply`] waits.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    Gone,
}

/// One client connection.
pub struct TestClient {
    stream: Stream,
    parser: ReplyParser,
}

/// A connector that trusts `ca_file` only, allowing TLS from `min` to
/// `max` (OpenSSL's security level is lowered for versions below 1.2).
/// `ca_file = None` disables verification.
///
/// # Errors
/// OpenSSL errors.
pub fn connector(
    ca_file: Option<&Path>,
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    match ca_file {
        Some(ca) => b.set_ca_file(ca)?,
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if min.is_some_and(|v| v < TlsVersion::Tls12) || max.is_some_and(|v| v < TlsVersion::Tls12) {
        b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
        b.set_cipher_list("DEFAULT:@SECLEVEL=0")?;
    }
    b.set_min_proto_version(min.map(TlsVersion::ssl))?;
    b.set_max_proto_version(max.map(TlsVersion::ssl))?;
    Ok(b.build())
}

impl TestClient {
    /// Connects (no greeting read yet).
    ///
    /// # Errors
    /// The connection fails (e.g. refused).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<TestClient> {
        Ok(TestClient {
            stream: Stream::Plain(TcpStream::connect(addr).await?),
            parser: ReplyParser::new(),
        })
    }

    /// Connects with TLS from the first byte (implicit TLS), verifying
    /// `server_name`; no greeting read yet.
    ///
    /// # Errors
    /// The connection or the handshake fails.
    pub async fn connect_tls(
        addr: SocketAddr,
        connector: &SslConnector,
        server_name: &str,
    ) -> Result<TestClient> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let ssl: Ssl = connector.configure()?.into_ssl(server_name)?;
        let mut s = SslStream::new(ssl, tcp)?;
        Pin::new(&mut s).connect().await.context("TLS handshake")?;
        Ok(TestClient {
            stream: Stream::Tls(Box::new(s)),
            parser: ReplyParser::new(),
        })
    }

    /// Connects and reads the greeting.
    ///
    /// # Errors
    /// The connection fails or no greeting comes.
    pub async fn connect_greeted(addr: SocketAddr) -> Result<(TestClient, Reply)> {
        let mut c = TestClient::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        let r = c.reply().await?;
        Ok((c, r))
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).await?,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await?;
            }
            Stream::Gone => bail!("not connected"),
        }
        Ok(())
    }

    /// The next reply.
    ///
    /// # Errors
    /// End of stream, a malformed reply, or [`REPLY_TIMEOUT`].
    pub async fn reply(&mut self) -> Result<Reply> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(r) = self.parser.next_reply()? {
                return Ok(r);
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.read(&mut buf))
                .await
                .context("timed out waiting for a reply")??;
            if n == 0 {
                bail!("connection closed while waiting for a reply");
            }
            self.parser.feed(&buf[..n]);
        }
    }

    /// Sends `line` with CRLF and reads the reply.
    ///
    /// # Errors
    /// As [`TestClient::reply`].
    pub async fn cmd(&mut self, line: &str) -> Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// True when the server closed the connection (reads to the end;
    /// unread replies are dropped). False when it stays open for 5 s.
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// STARTTLS, then the handshake verifying `server_name` against
    /// `connector`'s CA.
    ///
    /// # Errors
    /// Not `220`, or the handshake fails.
    pub async fn starttls_with(
        &mut self,
        connector: &SslConnector,
        server_name: &str,
    ) -> Result<()> {
        let r = self.cmd("STARTTLS").await?;
        if r.code != 220 {
            bail!("STARTTLS refused: {}", r.one_line());
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            bail!("STARTTLS on a TLS connection");
        };
        let ssl: Ssl = connector.configure()?.into_ssl(server_name)?;
        let mut s = SslStream::new(ssl, tcp)?;
        Pin::new(&mut s).connect().await.context("TLS handshake")?;
        self.stream = Stream::Tls(Box::new(s));
        self.parser = ReplyParser::new();
        Ok(())
    }

    /// STARTTLS trusting `ca_file`, for `localhost`.
    ///
    /// # Errors
    /// As [`TestClient::starttls_with`].
    pub async fn starttls(&mut self, ca_file: &Path) -> Result<()> {
        self.starttls_with(&connector(Some(ca_file), None, None)?, "localhost")
            .await
    }

    /// The negotiated TLS version, once TLS is up.
    pub fn tls_version(&self) -> Option<TlsVersion> {
        match &self.stream {
            Stream::Tls(s) => s.ssl().version2().and_then(TlsVersion::from_ssl),
            _ => None,
        }
    }

    /// `AUTH LOGIN` with the two challenges; returns the final reply.
    ///
    /// # Errors
    /// A challenge other than `334`, or I/O errors.
    pub async fn auth_login(&mut self, user: &str, pass: &str) -> Result<Reply> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let r = self.cmd("AUTH LOGIN").await?;
        if r.code != 334 {
            return Ok(r);
        }
        let r = self.cmd(&b64.encode(user)).await?;
        if r.code != 334 {
            return Ok(r);
        }
        self.cmd(&b64.encode(pass)).await
    }

    /// Greeting read already: EHLO, STARTTLS, EHLO, AUTH LOGIN; fails
    /// unless AUTH gives `235`.
    ///
    /// # Errors
    /// Any step fails.
    pub async fn login(&mut self, ca_file: &Path, user: &str, pass: &str) -> Result<()> {
        self.cmd("EHLO client.test").await?;
        self.starttls(ca_file).await?;
        self.cmd("EHLO client.test").await?;
        let r = self.auth_login(user, pass).await?;
        if r.code != 235 {
            bail!("AUTH failed: {}", r.one_line());
        }
        Ok(())
    }
}

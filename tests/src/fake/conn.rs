//! The connection under a session, plain or TLS, and the TLS acceptor.

use std::pin::Pin;

use anyhow::Result;
use openssl::nid::Nid;
use openssl::ssl::{NameType, Ssl, SslAcceptor, SslMethod, SslOptions, SslVerifyMode};
use openssl::x509::{X509Ref, X509VerifyResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::config::{FakeConfig, TlsVersion};
use crate::ca::CertFiles;

/// Builds the acceptor for `cert` with the version range of `cfg`. Below
/// TLS 1.2 OpenSSL's security level is lowered to 0, as a legacy endpoint
/// must (SHA-1 handshake signatures). With a client CA the server asks for
/// a client certificate but never fails the handshake over it: the session
/// looks at the verification result afterwards (attribution, §7 `mx`).
///
/// # Errors
/// OpenSSL refuses the key, certificate or settings.
pub fn acceptor(cfg: &FakeConfig, cert: &CertFiles) -> Result<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    if cfg.tls_handshake_min < TlsVersion::Tls12 {
        b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
        b.set_cipher_list("DEFAULT:@SECLEVEL=0")?;
    }
    b.set_min_proto_version(Some(cfg.tls_handshake_min.ssl()))?;
    b.set_max_proto_version(cfg.tls_max.map(TlsVersion::ssl))?;
    b.set_private_key(&cert.key)?;
    b.set_certificate(&cert.cert)?;
    for c in &cert.chain {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.check_private_key()?;
    if let Some(ca) = &cfg.client_ca {
        b.set_ca_file(ca)?;
        let names = openssl::x509::X509Name::load_client_ca_file(ca)?;
        b.set_client_ca_list(names);
        b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        b.set_session_id_context(b"postern-fake-mx")?;
    }
    Ok(b.build())
}

/// What a finished handshake tells the session.
pub struct TlsInfo {
    /// The negotiated version.
    pub version: Option<TlsVersion>,
    /// The SNI name the client sent.
    pub sni: Option<String>,
    /// The client certificate's SAN DNS names, then its CN.
    pub client_names: Vec<String>,
    /// The client certificate verified against the client CA.
    pub client_verified: bool,
}

/// SAN DNS names, then the CN.
fn cert_names(c: &X509Ref) -> Vec<String> {
    let mut v: Vec<String> = c
        .subject_alt_names()
        .map(|s| {
            s.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    for e in c.subject_name().entries_by_nid(Nid::COMMONNAME) {
        if let Ok(cn) = e.data().to_string() {
            v.push(cn.to_ascii_lowercase());
        }
    }
    v
}

/// A session's connection.
pub enum Conn {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// After the handshake.
    Tls(Box<SslStream<TcpStream>>),
    /// Transient state during the upgrade, or after a failed one.
    Gone,
}

impl Conn {
    /// Reads some bytes; 0 at end of stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes and flushes all of `bytes`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs the server handshake over the plain connection.
    ///
    /// # Errors
    /// OpenSSL's reason as text; the connection is then [`Conn::Gone`].
    pub async fn upgrade(&mut self, acceptor: &SslAcceptor) -> Result<TlsInfo, String> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err("STARTTLS on a connection that is not plain".into());
        };
        let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
        let mut s = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut s).accept().await.map_err(|e| e.to_string())?;
        let peer = s.ssl().peer_certificate();
        let info = TlsInfo {
            version: s.ssl().version2().and_then(TlsVersion::from_ssl),
            sni: s.ssl().servername(NameType::HOST_NAME).map(str::to_string),
            client_names: peer.as_deref().map(cert_names).unwrap_or_default(),
            client_verified: peer.is_some() && s.ssl().verify_result() == X509VerifyResult::OK,
        };
        *self = Conn::Tls(Box::new(s));
        Ok(info)
    }
}

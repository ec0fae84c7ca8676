//! A blocking SMTP client for tests of postern's smtpd: raw lines, replies
//! with their codes, STARTTLS, and a choice of source address (127.0.0.2 is
//! "a foreign client" on loopback).

use anyhow::{Context, Result, bail};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

enum Io {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    Gone,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
            Io::Gone => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
            Io::Gone => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
            Io::Gone => Ok(()),
        }
    }
}

/// A connection to an SMTP server.
pub struct Smtp {
    io: BufReader<Io>,
}

/// A reply: code and the text of all lines joined by `\n` (with the code
/// and separator removed).
#[derive(Debug, Clone)]
pub struct Resp {
    /// Reply code.
    pub code: u16,
    /// Text lines.
    pub text: String,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl Smtp {
    /// Connects from 127.0.0.1 (or `from`, e.g. "127.0.0.2") to 127.0.0.1:port
    /// and reads the greeting.
    ///
    /// # Errors
    /// Connection or read errors.
    pub fn connect(port: u16, from: Option<&str>) -> Result<(Smtp, Resp)> {
        let mut s = Smtp::connect_raw(port, from)?;
        let greeting = s.reply()?;
        Ok((s, greeting))
    }

    /// Connects without reading anything.
    ///
    /// # Errors
    /// Connection errors.
    pub fn connect_raw(port: u16, from: Option<&str>) -> Result<Smtp> {
        let to: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let tcp = match from {
            None => TcpStream::connect_timeout(&to, Duration::from_secs(10))?,
            Some(src) => {
                let src: std::net::IpAddr = src.parse()?;
                let sock = socket_bound(src)?;
                sock.connect(&to.into()).context("connect")?;
                TcpStream::from(sock)
            }
        };
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Smtp {
            io: BufReader::new(Io::Plain(tcp)),
        })
    }

    /// Sends raw bytes.
    ///
    /// # Errors
    /// Write errors.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.get_mut().write_all(bytes)?;
        self.io.get_mut().flush()?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    ///
    /// # Errors
    /// End of input or a malformed line.
    pub fn reply(&mut self) -> Result<Resp> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line)? == 0 {
                bail!("connection closed while waiting for a reply (got so far: {text:?})");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 {
                bail!("malformed reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .with_context(|| format!("malformed reply line {line:?}"))?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Resp {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Sends a command line and reads its reply.
    ///
    /// # Errors
    /// I/O errors.
    pub fn cmd(&mut self, line: &str) -> Result<Resp> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// True when the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.io.read(&mut b), Ok(0) | Err(_))
    }

    /// STARTTLS (certificate not verified: tests check the server, not the PKI).
    ///
    /// # Errors
    /// The server refused or the handshake failed.
    pub fn starttls(&mut self) -> Result<()> {
        let r = self.cmd("STARTTLS")?;
        if r.code != 220 {
            bail!("STARTTLS refused: {r}");
        }
        self.wrap_tls()
    }

    /// Starts TLS on the connection now (implicit TLS).
    ///
    /// # Errors
    /// The handshake failed.
    pub fn wrap_tls(&mut self) -> Result<()> {
        let io = std::mem::replace(self.io.get_mut(), Io::Gone);
        let Io::Plain(tcp) = io else {
            bail!("TLS already active")
        };
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_verify(SslVerifyMode::NONE);
        let c = b.build();
        let tls = c
            .configure()?
            .verify_hostname(false)
            .connect("localhost", tcp)
            .map_err(|e| anyhow::anyhow!("TLS handshake: {e}"))?;
        *self.io.get_mut() = Io::Tls(Box::new(tls));
        Ok(())
    }

    /// AUTH PLAIN with an initial response.
    ///
    /// # Errors
    /// I/O errors.
    pub fn auth_plain(&mut self, user: &str, pass: &str) -> Result<Resp> {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {b}"))
    }
}

fn socket_bound(src: std::net::IpAddr) -> Result<socket2_lite::Socket> {
    socket2_lite::Socket::bound(src)
}

/// Just enough of a socket to bind a source address before connecting.
mod socket2_lite {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub struct Socket(OwnedFd);

    impl Socket {
        pub fn bound(src: std::net::IpAddr) -> anyhow::Result<Socket> {
            let std::net::IpAddr::V4(v4) = src else {
                anyhow::bail!("only IPv4 source addresses")
            };
            // SAFETY: plain socket(2); the result is checked.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            // SAFETY: fd is a fresh socket.
            let s = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sa is a valid sockaddr_in.
            let rc = unsafe {
                libc::bind(
                    s.0.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            Ok(s)
        }

        pub fn connect(&self, to: &SockAddr) -> std::io::Result<()> {
            // SAFETY: to holds a valid sockaddr_in.
            let rc = unsafe {
                libc::connect(
                    self.0.as_raw_fd(),
                    &to.0 as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }

    pub struct SockAddr(libc::sockaddr_in);

    impl From<std::net::SocketAddr> for SockAddr {
        fn from(a: std::net::SocketAddr) -> SockAddr {
            let std::net::SocketAddr::V4(v4) = a else {
                return SockAddr(libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr { s_addr: 0 },
                    sin_zero: [0; 8],
                });
            };
            SockAddr(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            })
        }
    }

    impl From<Socket> for std::net::TcpStream {
        fn from(s: Socket) -> std::net::TcpStream {
            std::net::TcpStream::from(s.0)
        }
    }
}

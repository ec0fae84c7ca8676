//! The byte level of a session (Postfix's smtp_chat.c): a TCP or TLS
//! stream, commands written with a time limit, replies read with a time
//! limit through the sans-I/O [`ReplyParser`]. Every I/O problem becomes a
//! [`ChatError`], which [`Chat::failure`] words as Postfix does: `lost
//! connection with HOST[ADDR] while PHASE` or `conversation with HOST[ADDR]
//! timed out while PHASE`.

use crate::outcome::{Outcome, Peer};
use proto::{Command, Reply, ReplyError, ReplyParser};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// A connection, before or after TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<SslStream<TcpStream>>),
    /// Taken apart for the TLS upgrade; every operation fails.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Why an exchange with the server failed.
#[derive(Debug)]
pub enum ChatError {
    /// The time limit of the phase passed.
    Timeout,
    /// The server closed the connection, or it broke.
    Lost,
    /// The server sent something that is not an SMTP reply.
    Malformed(ReplyError),
}

/// One session's connection and reply parser.
#[derive(Debug)]
pub struct Chat {
    /// The stream.
    pub stream: Stream,
    parser: ReplyParser,
    /// The server.
    pub peer: Peer,
}

impl Chat {
    /// A chat over a freshly connected stream.
    pub fn new(stream: Stream, peer: Peer) -> Chat {
        Chat {
            stream,
            parser: ReplyParser::new(),
            peer,
        }
    }

    /// Writes `bytes` and flushes them within `limit`.
    ///
    /// # Errors
    /// [`ChatError::Timeout`] or [`ChatError::Lost`].
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), ChatError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Err(_) => Err(ChatError::Timeout),
            Ok(Err(_)) => Err(ChatError::Lost),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads the next reply within `limit`.
    ///
    /// # Errors
    /// [`ChatError`]: time limit, end of stream, I/O error or garbage.
    pub async fn reply(&mut self, limit: Duration) -> Result<Reply, ChatError> {
        match tokio::time::timeout(limit, self.read_reply()).await {
            Err(_) => Err(ChatError::Timeout),
            Ok(r) => r,
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ChatError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = self.parser.next_reply().map_err(ChatError::Malformed)? {
                return Ok(r);
            }
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(ChatError::Lost),
                Ok(n) => self.parser.feed(&buf[..n]),
            }
        }
    }

    /// Sends one command and reads its reply, each within `limit`.
    ///
    /// # Errors
    /// As [`Chat::send`] and [`Chat::reply`].
    pub async fn command(&mut self, cmd: &Command, limit: Duration) -> Result<Reply, ChatError> {
        self.send(&cmd.to_wire(), limit).await?;
        self.reply(limit).await
    }

    /// True when the server sent bytes that no reply was read for yet.
    pub fn has_unread(&self) -> bool {
        self.parser.has_partial()
    }

    /// Forgets buffered server output. After STARTTLS, plaintext the
    /// server (or an attacker) sent before the handshake must not be read as
    /// a reply inside TLS (CVE-2011-0411).
    pub fn discard_buffered(&mut self) {
        self.parser = ReplyParser::new();
    }

    /// Reads whatever the server sent while the session was idle, without
    /// waiting. True when the session is still usable: nothing was sent
    /// and the connection is open.
    pub async fn idle_check(&mut self) -> bool {
        let mut buf = [0u8; 512];
        // Polls the read once: a pending read means a quiet, open connection.
        match tokio::time::timeout(Duration::ZERO, self.stream.read(&mut buf)).await {
            Err(_) => !self.has_unread(),
            Ok(_) => false,
        }
    }

    /// The outcome for every recipient when the exchange failed `while`
    /// (e.g. `receiving the initial server greeting`).
    pub fn failure(&self, err: &ChatError, while_: &str) -> Outcome {
        let who = self.peer.namaddr();
        match err {
            ChatError::Timeout => Outcome::local(
                "4.4.2",
                format!("conversation with {who} timed out while {while_}"),
            ),
            ChatError::Lost => Outcome::local(
                "4.4.2",
                format!("lost connection with {who} while {while_}"),
            ),
            ChatError::Malformed(e) => Outcome::local(
                "4.5.0",
                format!("host {who} sent an invalid SMTP reply while {while_}: {e}"),
            ),
        }
    }

    /// Sends QUIT and waits briefly for the reply; errors are ignored
    /// because the session ends either way.
    pub async fn quit(mut self, limit: Duration) {
        if self.send(&Command::Quit.to_wire(), limit).await.is_ok() {
            let _ = self.reply(limit).await;
        }
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
    }
}

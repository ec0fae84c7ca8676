//! Connections to delivery agents. Each transport (master.cf service) gets
//! one stream connection to its socket, carrying many requests; a writer
//! task sends requests and a reader task turns responses into events for the
//! manager. A broken connection becomes an `AgentDown` event: the manager
//! defers everything that was in flight on it.

use queue::deliver::{self, Request, Response};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// What agent connections report to the manager.
#[derive(Debug)]
pub enum Event {
    /// An agent answered a request.
    Response {
        /// Transport name.
        transport: String,
        /// The answer.
        resp: Response,
    },
    /// A connection to an agent is ready.
    Connected {
        /// Transport name.
        transport: String,
        /// The connection.
        agent: AgentConn,
    },
    /// Connecting to an agent failed.
    ConnectFailed {
        /// Transport name.
        transport: String,
        /// Why.
        error: String,
    },
    /// A connection failed or closed.
    AgentDown {
        /// Transport name.
        transport: String,
        /// Connection generation.
        conn: u64,
        /// Why.
        error: String,
    },
}

/// A live connection to one agent.
#[derive(Debug)]
pub struct AgentConn {
    /// Generation number (to ignore events of older connections).
    pub conn: u64,
    tx: mpsc::UnboundedSender<Request>,
}

impl AgentConn {
    /// Queues a request for sending; false when the writer is gone.
    pub fn send(&self, r: Request) -> bool {
        self.tx.send(r).is_ok()
    }
}

/// The socket of a transport's agent: private/ first, then public/.
pub fn socket_path(queue: &queue::Queue, transport: &str) -> Option<PathBuf> {
    if transport.is_empty() || transport.contains('/') || transport.starts_with('.') {
        return None;
    }
    [
        queue.private_dir().join(transport),
        queue.public_dir().join(transport),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// Connects to an agent and starts its reader and writer tasks.
///
/// # Errors
/// The socket does not exist or refuses the connection.
pub async fn connect(
    path: PathBuf,
    transport: String,
    conn: u64,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<AgentConn> {
    let stream = UnixStream::connect(&path).await?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    let ev = events.clone();
    let t = transport.clone();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let bytes = match deliver::encode(&req) {
                Ok(b) => b,
                Err(e) => {
                    let _ = ev.send(Event::AgentDown {
                        transport: t.clone(),
                        conn,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            if let Err(e) = wr.write_all(&bytes).await {
                let _ = ev.send(Event::AgentDown {
                    transport: t.clone(),
                    conn,
                    error: e.to_string(),
                });
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            loop {
                match deliver::decode::<Response>(&mut buf) {
                    Ok(Some(resp)) => {
                        if events
                            .send(Event::Response {
                                transport: transport.clone(),
                                resp,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = events.send(Event::AgentDown {
                            transport,
                            conn,
                            error: format!("malformed response: {e}"),
                        });
                        return;
                    }
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) => {
                    let _ = events.send(Event::AgentDown {
                        transport,
                        conn,
                        error: "connection closed".into(),
                    });
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    let _ = events.send(Event::AgentDown {
                        transport,
                        conn,
                        error: e.to_string(),
                    });
                    return;
                }
            }
        }
    });
    Ok(AgentConn { conn, tx })
}

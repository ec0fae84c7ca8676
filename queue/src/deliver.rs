//! The protocol between the queue manager and delivery agents, over the
//! agent's stream socket (`private/<transport>`): length-prefixed JSON frames
//! (4-byte big-endian length, then the JSON text). qmgr sends [`Request`]s,
//! tagged with a request number, on one connection; the agent answers each
//! with a [`Response`] in any order. If the connection breaks, qmgr treats
//! every unanswered request as deferred (the agent may have delivered some
//! recipients: at-least-once).

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Largest frame accepted (a request with 10,000 long recipients fits).
pub const MAX_FRAME: usize = 16 << 20;

/// One recipient to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptRequest {
    /// Position in the queue file's envelope.
    pub idx: usize,
    /// Address to deliver to.
    pub addr: String,
    /// DSN original recipient.
    pub orcpt: Option<String>,
    /// DSN NOTIFY.
    pub notify: Option<String>,
}

/// A delivery request: one message, one destination, some recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Request number, unique on the connection.
    pub req: u64,
    /// Queue ID.
    pub queue_id: String,
    /// Absolute path of the queue file.
    pub path: String,
    /// Transport (master.cf service) name, e.g. `smtp`, `relay`, `maildir`.
    pub transport: String,
    /// Next hop: `[host]:port`, `host:port`, a domain, or a Maildir path.
    pub nexthop: String,
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// Recipients for this destination.
    pub recipients: Vec<RcptRequest>,
    /// Message arrival, microseconds since the epoch.
    pub arrival_us: i64,
    /// When qmgr activated the message, microseconds.
    pub active_us: i64,
    /// More mail for this destination is waiting: keep the session open.
    pub more_waiting: bool,
}

/// Outcome of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted by the next hop.
    Sent,
    /// Temporary failure: try again later.
    Deferred,
    /// Permanent failure: return to sender.
    Bounced,
}

/// Result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptResult {
    /// Position in the envelope.
    pub idx: usize,
    /// The outcome.
    pub status: Status,
    /// Enhanced status code, e.g. `5.7.60`.
    pub dsn: String,
    /// Full reason as logged: the server reply with context, or a local error.
    pub reason: String,
    /// The server that answered (`host[addr]:port`), or `none`.
    pub relay: String,
    /// The server's host name for DSN Remote-MTA, if one answered.
    pub remote_mta: Option<String>,
    /// The server's reply text alone, for DSN Diagnostic-Code.
    pub diagnostic: Option<String>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request number.
    pub req: u64,
    /// One result per requested recipient.
    pub results: Vec<RcptResult>,
    /// True when the destination itself failed (no connection, bad
    /// greeting, TLS or AUTH failure): qmgr suspends the destination.
    pub site_failure: bool,
    /// True when the failure is a configuration problem that the admin must
    /// fix (e.g. authentication refused): qmgr holds the route instead of
    /// bouncing the backlog.
    pub hold_route: bool,
}

/// Encodes a frame.
///
/// # Errors
/// Serialisation errors (cannot happen for these types) as `InvalidData`.
pub fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body =
        serde_json::to_vec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Extracts one complete frame from the front of `buf`, if present.
///
/// # Errors
/// An over-long frame or malformed JSON (`InvalidData`).
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &mut Vec<u8>) -> io::Result<Option<T>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too long"),
        ));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[4..4 + len])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    buf.drain(..4 + len);
    Ok(Some(msg))
}

/// Writes one frame to a blocking stream.
///
/// # Errors
/// Write errors.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)
}

/// Reads one frame from a blocking stream; `Ok(None)` at a clean end of stream.
///
/// # Errors
/// Read errors, truncated or malformed frames.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too long"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let r = Response {
            req: 7,
            results: vec![RcptResult {
                idx: 0,
                status: Status::Bounced,
                dsn: "5.7.60".into(),
                reason: "host x said: 550 ...".into(),
                relay: "x[1.2.3.4]:587".into(),
                remote_mta: Some("x".into()),
                diagnostic: Some("550 5.7.60 no".into()),
            }],
            site_failure: false,
            hold_route: false,
        };
        let bytes = encode(&r).unwrap();
        let mut buf = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.push(*b);
            let got: Option<Response> = decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none());
            } else {
                assert_eq!(got.unwrap(), r);
            }
        }
        assert!(buf.is_empty());
        let mut cursor = std::io::Cursor::new(bytes);
        assert_eq!(read_frame::<Response>(&mut cursor).unwrap().unwrap(), r);
        assert!(read_frame::<Response>(&mut cursor).unwrap().is_none());
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Response>(&mut buf).is_err());
        let mut buf = vec![0, 0, 0, 3, b'x', b'y', b'z'];
        assert!(decode::<Response>(&mut buf).is_err());
    }
}

//! Wake-up hints: one-byte datagrams to a daemon's socket in `public/`.
//! They are only hints (Postfix's triggers): a daemon also scans on a timer,
//! so a lost wake-up delays mail but never loses it.

use crate::layout::Queue;
use std::os::unix::net::UnixDatagram;

/// New mail in incoming/ (qmgr) or maildrop/ (pickup).
pub const NEW_MAIL: u8 = b'I';
/// Deliver all deferred mail now (postqueue -f, postern flush).
pub const FLUSH: u8 = b'F';
/// Scan the deferred queue for due messages.
pub const SCAN_DEFERRED: u8 = b'D';
/// Re-read the queue and index (after postsuper changed them).
pub const RESCAN: u8 = b'R';
/// Write the status file now (`postern status --json`); the rest of the
/// datagram is a token the file then carries, so the caller knows it is
/// the answer to its own request.
pub const STATUS: u8 = b'S';
/// The status file qmgr writes in `pid/` (JSON, mode 0600).
pub const STATUS_FILE: &str = "qmgr.status.json";

/// Sends `trigger` to the service's public socket. Returns false when no
/// daemon listens (it will find the mail on its next scan or start).
pub fn wake(queue: &Queue, service: &str, trigger: &[u8]) -> bool {
    let path = queue.public_dir().join(service);
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let _ = sock.set_nonblocking(true);
    sock.send_to(trigger, &path).is_ok()
}

//! Queue IDs: 12 upper-case hex characters, like Postfix's short IDs. The
//! first 8 encode the creation second, the last 4 the fraction of that second
//! (units of 1/65536 s), so IDs sort roughly by age. Uniqueness within a queue
//! directory is enforced by creating names with `RENAME_NOREPLACE`; a writer
//! that loses the race takes the next ID.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u64);

impl QueueId {
    /// The ID for a time.
    pub fn from_time(t: SystemTime) -> QueueId {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
        QueueId((secs << 16) | (frac & 0xffff))
    }

    /// A fresh ID for the current time.
    pub fn now() -> QueueId {
        QueueId::from_time(SystemTime::now())
    }

    /// The next ID, used when a name is already taken.
    pub fn next(self) -> QueueId {
        QueueId((self.0 + 1) & 0xffff_ffff_ffff)
    }

    /// Parses an ID as it appears in file names, logs and commands.
    pub fn parse(s: &str) -> Option<QueueId> {
        if !is_valid(s) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(QueueId)
    }
}

/// True for 10 to 12 upper-case hex characters (Postfix's short-ID form).
pub fn is_valid(s: &str) -> bool {
    (10..=12).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012X}", self.0)
    }
}

/// A random name of 32 hex characters for a maildrop file: unguessable, so
/// that users who can create files in the world-writable maildrop directory
/// cannot open each other's submissions.
pub fn random_name() -> String {
    let mut buf = [0u8; 16];
    fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the kernel's random source.
pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - filled,
                0,
            )
        };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) cannot fail on Linux >= 3.17 once the pool is
            // initialised; fall back to time and pid rather than abort.
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
                ^ (u64::from(std::process::id()) << 32);
            for (i, b) in buf[filled..].iter_mut().enumerate() {
                *b = (t >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn format_and_parse() {
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 500_000_000);
        let id = QueueId::from_time(t);
        let s = id.to_string();
        assert_eq!(s.len(), 12);
        assert!(is_valid(&s));
        assert_eq!(QueueId::parse(&s), Some(id));
        assert!(s.ends_with("8000"), "{s}");
        assert!(QueueId::parse("abcdef012345").is_none());
        assert!(QueueId::parse("ABC").is_none());
        assert!(QueueId::parse("8F3A21C09B").is_some());
        assert_ne!(id.next(), id);
        assert_eq!(random_name().len(), 32);
        assert_ne!(random_name(), random_name());
    }
}

//! Reading a message from standard input as Postfix's sendmail does: leading
//! `From ` lines are dropped, a CR before LF is removed and every line end
//! becomes CRLF, and (unless -i) a line with a single dot ends the input.

use std::io::{self, BufRead};

/// The message content and whether the size limit was exceeded.
#[derive(Debug, Default)]
pub struct Read {
    /// Content with CRLF line ends.
    pub content: Vec<u8>,
    /// True when more than the limit was offered; content is then incomplete.
    pub too_big: bool,
}

/// Reads a message; `limit` 0 means no limit.
///
/// # Errors
/// Read errors from the input.
pub fn read_message(input: &mut impl BufRead, dot_ends: bool, limit: u64) -> io::Result<Read> {
    let mut out = Read::default();
    let mut line = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        if first {
            let rest = line
                .iter()
                .skip_while(|&&b| b == b'>')
                .copied()
                .collect::<Vec<u8>>();
            if rest.starts_with(b"From ") {
                continue;
            }
            first = false;
        }
        if dot_ends && line == b"." {
            break;
        }
        if limit > 0 && out.content.len() as u64 + line.len() as u64 + 2 > limit {
            out.too_big = true;
            // Keep reading so the writer does not get SIGPIPE, but store nothing more.
            let mut sink = Vec::new();
            while input.read_until(b'\n', &mut sink)? > 0 {
                sink.clear();
            }
            break;
        }
        out.content.extend_from_slice(&line);
        out.content.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(input: &str, dot: bool) -> String {
        String::from_utf8(read_message(&mut input.as_bytes(), dot, 0).unwrap().content).unwrap()
    }

    #[test]
    fn normalizes_and_stops() {
        assert_eq!(
            r("Subject: backup done\n\nok\n", true),
            "Subject: backup done\r\n\r\nok\r\n"
        );
        assert_eq!(r("a\r\nb\r\r\nlast", true), "a\r\nb\r\nlast\r\n");
        assert_eq!(
            r("From me Tue\n>From x\nSubject: s\n\nFrom inside\n", true),
            "Subject: s\r\n\r\nFrom inside\r\n"
        );
        assert_eq!(r("a\n.\nb\n", true), "a\r\n");
        assert_eq!(r("a\n.\nb\n", false), "a\r\n.\r\nb\r\n");
        assert_eq!(r("a\n..\n", true), "a\r\n..\r\n");
        assert_eq!(r("", true), "");
    }

    #[test]
    fn limit() {
        let big = "x".repeat(100) + "\n";
        let input = big.repeat(10);
        let got = read_message(&mut input.as_bytes(), true, 500).unwrap();
        assert!(got.too_big);
        assert!(got.content.len() <= 500);
        let got = read_message(&mut input.as_bytes(), true, 0).unwrap();
        assert!(!got.too_big);
        assert_eq!(got.content.len(), 1020);
    }
}

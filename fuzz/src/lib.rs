//! Helpers shared by the fuzz targets: splitting an input into the reads a
//! socket might deliver, and small reference models ("oracles") that the
//! incremental parsers are checked against.

/// Splits `data` into consecutive pieces, as a network might deliver it.
/// `seed` 0 gives one piece; other seeds give pseudo-random piece lengths
/// from 1 to `seed` bytes (so small seeds mean many tiny reads, the hard
/// case for incremental parsers).
pub fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = (state % u32::from(seed)) as usize + 1;
        let (a, b) = rest.split_at(len.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// Takes the first byte of `data` as a control byte (0 when empty).
pub fn split_control(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => (0, data),
    }
}

/// Reference model of DATA content handling (RFC 5321 4.1.1.4, 4.5.2 and
/// postern's smuggling rules), written for clarity, not speed: the whole
/// input at once.
#[derive(Debug, PartialEq, Eq)]
pub struct DataModel {
    /// Input bytes up to and including the end-of-data line.
    pub consumed: usize,
    /// The content, unstuffed and line-end-normalised as configured.
    pub content: Vec<u8>,
    /// Some line ended in a bare LF.
    pub bare_lf: bool,
    /// The content had a CR not followed by LF.
    pub bare_cr: bool,
}

/// Where DATA ends in `input` (bytes consumed, terminator included): the
/// first `<CR><LF>.<CR><LF>`, counting DATA's own CRLF as preceding the
/// input. `None` when the input holds no terminator.
pub fn data_end(input: &[u8]) -> Option<usize> {
    let mut s = b"\r\n".to_vec();
    s.extend_from_slice(input);
    s.windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5 - 2)
}

/// The reference DATA receiver; `allow_bare_lf` keeps bare LFs as they are
/// (`smtpd_forbid_bare_newline = no`), otherwise they become CRLF.
/// `None` when the input holds no terminator.
pub fn data_model(input: &[u8], allow_bare_lf: bool) -> Option<DataModel> {
    let consumed = data_end(input)?;
    // Everything before the terminating "." line: empty, or ends in CRLF.
    let body = &input[..consumed - 3];
    let mut m = DataModel {
        consumed,
        content: Vec::new(),
        bare_lf: false,
        bare_cr: false,
    };
    let mut clean = true;
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    // The piece after the last LF is empty (body ends with LF or is empty).
    let last = lines.pop();
    assert_eq!(last, Some(&b""[..]), "body must end with a line end");
    for raw in lines {
        let (mut text, crlf) = match raw.strip_suffix(b"\r") {
            Some(t) => (t, true),
            None => (raw, false),
        };
        if text == b"." {
            // A "." line that did not end DATA (bare LF before or after it).
            assert!(!(crlf && clean), "an unclean terminator slipped through");
        } else if let Some(t) = text.strip_prefix(b".") {
            text = t;
        }
        if text.contains(&b'\r') {
            m.bare_cr = true;
        }
        m.content.extend_from_slice(text);
        if crlf {
            m.content.extend_from_slice(b"\r\n");
        } else {
            m.bare_lf = true;
            m.content
                .extend_from_slice(if allow_bare_lf { b"\n" } else { b"\r\n" });
        }
        clean = crlf;
    }
    Some(m)
}

/// Every CR or LF that is not part of a CRLF becomes CRLF, and an
/// unterminated last line is closed: what [`proto::dot_stuff`] sends.
pub fn normalized(c: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            b'\r' if c.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every LF not preceded by CR becomes CRLF (the BDAT receiver's rule,
/// applied to the whole content at once).
pub fn bare_lf_to_crlf(c: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(c.len());
    let mut bare = false;
    for (i, &b) in c.iter().enumerate() {
        if b == b'\n' && (i == 0 || c[i - 1] != b'\r') {
            out.push(b'\r');
            bare = true;
        }
        out.push(b);
    }
    (out, bare)
}

/// How many `<CR><LF>.<CR><LF>` sequences `wire` holds, counting a leading
/// `.<CR><LF>` (DATA's own CRLF precedes it).
pub fn count_terminators(wire: &[u8]) -> usize {
    let mut s = b"\r\n".to_vec();
    s.extend_from_slice(wire);
    s.windows(5).filter(|w| *w == b"\r\n.\r\n").count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_input() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in 0..=255u8 {
            let p = pieces(&data, seed);
            assert_eq!(p.concat(), data);
            assert!(p.iter().all(|x| !x.is_empty()));
        }
    }

    #[test]
    fn data_model_basics() {
        let m = data_model(b"a\r\n..b\r\n.\r\nQUIT\r\n", false).unwrap();
        assert_eq!(m.content, b"a\r\n.b\r\n");
        assert_eq!(m.consumed, 11);
        let m = data_model(b"a\n.\nb\r\n.\r\n", false).unwrap();
        assert_eq!(m.content, b"a\r\n.\r\nb\r\n");
        assert!(m.bare_lf);
        assert!(data_model(b"a\n.\n", false).is_none());
        assert_eq!(data_model(b".\r\n", false).unwrap().content, b"");
    }
}

//! The haproxy PROXY protocol (v1 text, v2 binary), for listeners behind a
//! load balancer (`smtpd_upstream_proxy_protocol = haproxy`): the real
//! client address arrives before the SMTP conversation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Reads a PROXY header. `Ok(Some(addr))` gives the client's address,
/// `Ok(None)` means the proxy's own connection (`PROXY UNKNOWN` or a v2
/// LOCAL command: use the connection's address).
///
/// # Errors
/// A malformed or truncated header, described in words.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<SocketAddr>, String> {
    let mut first = [0u8; 12];
    r.read_exact(&mut first[..5])
        .await
        .map_err(|e| format!("reading the PROXY header: {e}"))?;
    if &first[..5] == b"PROXY" {
        // v1: one line of at most 107 bytes ending in CRLF.
        let mut line = b"PROXY".to_vec();
        loop {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)
                .await
                .map_err(|e| format!("reading the PROXY header: {e}"))?;
            line.push(b[0]);
            if line.ends_with(b"\r\n") {
                break;
            }
            if line.len() > 107 {
                return Err("PROXY v1 header longer than 107 bytes".into());
            }
        }
        return parse_v1(&line[..line.len() - 2]);
    }
    r.read_exact(&mut first[5..12])
        .await
        .map_err(|e| format!("reading the PROXY header: {e}"))?;
    if first != V2_SIGNATURE {
        return Err(
            "no PROXY protocol header (smtpd_upstream_proxy_protocol = haproxy expects one)".into(),
        );
    }
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the PROXY v2 header: {e}"))?;
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    if len > 1024 {
        return Err(format!("PROXY v2 header of {len} bytes is too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading the PROXY v2 addresses: {e}"))?;
    parse_v2(head[0], head[1], &body)
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "PROXY v1 header is not text".to_string())?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| format!("PROXY v1: bad source address {src}"))?;
            if (*proto == "TCP4") != ip.is_ipv4() {
                return Err(format!("PROXY v1: {proto} with address {src}"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| format!("PROXY v1: bad source port {sport}"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err("malformed PROXY v1 header".into()),
    }
}

fn parse_v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Result<Option<SocketAddr>, String> {
    if ver_cmd >> 4 != 2 {
        return Err(format!("PROXY v2: unsupported version {}", ver_cmd >> 4));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None), // LOCAL: health check from the proxy itself
        1 => {}
        c => return Err(format!("PROXY v2: unsupported command {c}")),
    }
    match fam >> 4 {
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let port = u16::from_be_bytes([body[8], body[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        2 if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port)))
        }
        0 => Ok(None),
        f => Err(format!(
            "PROXY v2: unsupported address family {f} or short address block"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
        let mut r = bytes;
        read_header(&mut r).await
    }

    #[tokio::test]
    async fn v1_and_v2() {
        assert_eq!(
            read(b"PROXY TCP4 10.0.0.5 10.0.0.1 40000 25\r\nEHLO x\r\n")
                .await
                .unwrap(),
            Some("10.0.0.5:40000".parse().unwrap())
        );
        assert_eq!(
            read(b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 25\r\n")
                .await
                .unwrap(),
            Some("[2001:db8::5]:40000".parse().unwrap())
        );
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.unwrap(), None);
        assert!(read(b"PROXY TCP4 bogus 10.0.0.1 1 2\r\n").await.is_err());
        assert!(read(b"EHLO x\r\n\r\n\r\n").await.is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0x9c, 0x40, 0, 25,
        ]);
        assert_eq!(
            read(&v2).await.unwrap(),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.unwrap(), None);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = rt.block_on(read(&data));
        }
    }
}

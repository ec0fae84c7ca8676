//! The Received: header smtpd prepends, in Postfix's layout:
//!
//! ```text
//! Received: from HELO (NAME [ADDR])
//!         (using TLSv1.3 with cipher ... (256/256 bits))          optional
//!         (Authenticated sender: USER)                             optional
//!         by MYHOSTNAME (postern) with ESMTPSA id QUEUEID
//!         for <RCPT>; DATE                                         "for" with one recipient
//! ```

use crate::tls::TlsInfo;
use std::net::IpAddr;

/// What the header says about the session.
pub struct ReceivedInfo<'a> {
    /// HELO/EHLO name, if any.
    pub helo: Option<&'a str>,
    /// Verified client name or `unknown`.
    pub client_name: &'a str,
    /// Client address.
    pub client_addr: IpAddr,
    /// TLS, when smtpd_tls_received_header is on.
    pub tls: Option<&'a TlsInfo>,
    /// SASL user, when smtpd_sasl_authenticated_header is on.
    pub sasl_user: Option<&'a str>,
    /// `myhostname`.
    pub by: &'a str,
    /// `mail_name`.
    pub mail_name: &'a str,
    /// SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    pub protocol: &'a str,
    /// Queue ID.
    pub id: &'a str,
    /// The recipient, when there is exactly one.
    pub single_rcpt: Option<&'a str>,
    /// The date (RFC 5322 form).
    pub date: &'a str,
}

/// Builds the header, CRLF-terminated, folded as Postfix folds it.
pub fn format(r: &ReceivedInfo<'_>) -> String {
    let addr = match r.client_addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    let helo = r
        .helo
        .map(sanitize)
        .unwrap_or_else(|| r.client_name.to_string());
    let mut s = format!("Received: from {helo} ({} [{addr}])\r\n", r.client_name);
    if let Some(t) = r.tls {
        s.push_str(&format!("\t(using {})\r\n", t.describe()));
    }
    if let Some(u) = r.sasl_user {
        s.push_str(&format!("\t(Authenticated sender: {})\r\n", sanitize(u)));
    }
    s.push_str(&format!(
        "\tby {} ({}) with {} id {}",
        r.by, r.mail_name, r.protocol, r.id
    ));
    match r.single_rcpt {
        Some(rcpt) => s.push_str(&format!("\r\n\tfor <{}>; {}\r\n", sanitize(rcpt), r.date)),
        None => s.push_str(&format!(";\r\n\t{}\r\n", r.date)),
    }
    s
}

/// Client-supplied text in a header: no line breaks, no controls.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let h = format(&ReceivedInfo {
            helo: Some("scanner.lan"),
            client_name: "unknown",
            client_addr: "10.0.0.5".parse().unwrap(),
            tls: None,
            sasl_user: None,
            by: "relay.contoso.com",
            mail_name: "postern",
            protocol: "ESMTP",
            id: "8F3A21C09B00",
            single_rcpt: Some("bob@contoso.com"),
            date: "Sun, 22 Nov 2026 05:50:00 +0000 (UTC)",
        });
        assert_eq!(
            h,
            "Received: from scanner.lan (unknown [10.0.0.5])\r\n\tby relay.contoso.com (postern) with ESMTP id 8F3A21C09B00\r\n\tfor <bob@contoso.com>; Sun, 22 Nov 2026 05:50:00 +0000 (UTC)\r\n"
        );
        let h = format(&ReceivedInfo {
            helo: Some("evil\r\nX-Injected: 1"),
            client_name: "unknown",
            client_addr: "2001:db8::1".parse().unwrap(),
            tls: None,
            sasl_user: Some("app"),
            by: "r",
            mail_name: "postern",
            protocol: "ESMTPA",
            id: "X",
            single_rcpt: None,
            date: "D",
        });
        assert!(h.starts_with("Received: from evil??X-Injected: 1 (unknown [IPv6:2001:db8::1])\r\n\t(Authenticated sender: app)\r\n\tby r (postern) with ESMTPA id X;\r\n\tD\r\n"), "{h}");
    }
}

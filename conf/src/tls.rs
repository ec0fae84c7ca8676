//! TLS protocol lists as Postfix writes them: `>=TLSv1.2`, `<=TLSv1.3`,
//! `!SSLv2, !SSLv3`, or an explicit list such as `TLSv1.2, TLSv1.3`.

/// TLS protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// SSL 2 (never enabled; accepted in exclusions).
    Ssl2,
    /// SSL 3 (never enabled; accepted in exclusions).
    Ssl3,
    /// TLS 1.0.
    Tls1,
    /// TLS 1.1.
    Tls1_1,
    /// TLS 1.2.
    Tls1_2,
    /// TLS 1.3.
    Tls1_3,
}

const ALL: [(TlsVersion, &str); 6] = [
    (TlsVersion::Ssl2, "SSLv2"),
    (TlsVersion::Ssl3, "SSLv3"),
    (TlsVersion::Tls1, "TLSv1"),
    (TlsVersion::Tls1_1, "TLSv1.1"),
    (TlsVersion::Tls1_2, "TLSv1.2"),
    (TlsVersion::Tls1_3, "TLSv1.3"),
];

impl TlsVersion {
    /// The name Postfix and OpenSSL use.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(v, _)| *v == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
    fn from_name(s: &str) -> Option<TlsVersion> {
        ALL.iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(v, _)| *v)
    }
}

/// The protocols a setting allows: an inclusive range (SSLv2/SSLv3 are never allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolRange {
    /// Oldest allowed.
    pub min: TlsVersion,
    /// Newest allowed.
    pub max: TlsVersion,
}

/// Parses a protocol setting.
///
/// # Errors
/// A description of the accepted syntax, or a setting that allows nothing.
pub fn parse_protocols(s: &str) -> Result<ProtocolRange, String> {
    let allowed = || {
        "expected e.g. >=TLSv1.2, <=TLSv1.3, !SSLv2, !SSLv3, or TLSv1.2, TLSv1.3 (protocols: SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)".to_string()
    };
    let mut enabled: Vec<TlsVersion> = ALL
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| *v >= TlsVersion::Tls1)
        .collect();
    let mut explicit: Vec<TlsVersion> = Vec::new();
    for item in crate::values::split_list(s)
        .iter()
        .flat_map(|i| i.split(':').map(str::to_string).collect::<Vec<_>>())
    {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(v) = item.strip_prefix(">=") {
            let v = TlsVersion::from_name(v).ok_or_else(allowed)?;
            enabled.retain(|x| *x >= v);
        } else if let Some(v) = item.strip_prefix("<=") {
            let v = TlsVersion::from_name(v).ok_or_else(allowed)?;
            enabled.retain(|x| *x <= v);
        } else if let Some(v) = item.strip_prefix('!') {
            let v = TlsVersion::from_name(v).ok_or_else(allowed)?;
            enabled.retain(|x| *x != v);
        } else {
            explicit.push(TlsVersion::from_name(item).ok_or_else(allowed)?);
        }
    }
    if !explicit.is_empty() {
        enabled.retain(|x| explicit.contains(x));
    }
    match (enabled.iter().min(), enabled.iter().max()) {
        (Some(min), Some(max)) => Ok(ProtocolRange {
            min: *min,
            max: *max,
        }),
        _ => Err(format!("the setting allows no TLS protocol; {}", allowed())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TlsVersion::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse_protocols(">=TLSv1.2").unwrap(),
            ProtocolRange {
                min: Tls1_2,
                max: Tls1_3
            }
        );
        assert_eq!(
            parse_protocols("!SSLv2, !SSLv3").unwrap(),
            ProtocolRange {
                min: Tls1,
                max: Tls1_3
            }
        );
        assert_eq!(parse_protocols("!SSLv2:!SSLv3:!TLSv1").unwrap().min, Tls1_1);
        assert_eq!(
            parse_protocols(">=TLSv1, <=TLSv1.2").unwrap(),
            ProtocolRange {
                min: Tls1,
                max: Tls1_2
            }
        );
        assert_eq!(
            parse_protocols("TLSv1.3").unwrap(),
            ProtocolRange {
                min: Tls1_3,
                max: Tls1_3
            }
        );
        assert_eq!(parse_protocols("").unwrap().min, Tls1);
        assert!(parse_protocols("TLSv9").is_err());
        assert!(parse_protocols(">=TLSv1.3, <=TLSv1.2").is_err());
    }
}

//! The TLS step of `postern diagnose`: the handshake with the delivery
//! agent's TLS contexts, then what the server presented — protocol, cipher,
//! each certificate's subject, issuer and expiry, the chain's verification
//! — and the name check that `smtp_tls_security_level` asks for, enforced
//! as the agent enforces it.

use super::report::{Report, Status, Step};
use super::walk::{Open, level_name};
use conf::nexthop::Nexthop;
use openssl::asn1::Asn1Time;
use openssl::x509::{X509NameRef, X509Ref};
use serde_json::{Value, json};
use smtp_client::chat::Stream;
use smtp_client::settings::{Settings, TlsLevel};
use smtp_client::tls::{self, TlsEngine, Trust};

/// The TLS handshake on the connection, the certificate shown and
/// checked as the security level asks.
pub async fn handshake(
    s: &Settings,
    engine: &TlsEngine,
    nexthop: &Nexthop,
    o: &mut Open,
    r: &mut Report,
    name: &'static str,
    how: &str,
) -> Option<()> {
    let level = s.tls.level;
    let peer = o.chat.peer.clone();
    let ctx = match engine.context(level) {
        Ok(c) => c,
        Err(e) => {
            r.push(
                Step::fail(name, format!("postern's TLS settings are unusable: {e}")).explain(
                    "Fix the smtp_tls_* parameter named above (postern check), then try again.",
                ),
            );
            return None;
        }
    };
    o.chat.discard_buffered();
    let Stream::Plain(tcp) = std::mem::replace(&mut o.chat.stream, Stream::Closed) else {
        r.push(Step::fail(name, "the session is already encrypted"));
        return None;
    };
    let sni = tls::sni(&s.tls, &peer.name, &nexthop.host);
    let stream = match tls::handshake(tcp, ctx, sni.as_deref(), s.timeouts.starttls).await {
        Ok(x) => x,
        Err(e) => {
            o.alive = false;
            let p = if level.required() {
                s.tls.mandatory_protocols
            } else {
                s.tls.protocols
            };
            let which = if level.required() {
                "smtp_tls_mandatory_protocols"
            } else {
                "smtp_tls_protocols"
            };
            r.push(
                Step::fail(name, format!("TLS handshake with {} failed", peer.namaddrport()))
                    .line(e)
                    .line(format!("{which} allows {:?} to {:?}", p.min, p.max))
                    .explain(format!(
                        "The server and postern agree on no TLS version or cipher, or the connection was cut. Exchange Online needs TLS 1.2 or newer: keep {which} = >=TLSv1.2.{}",
                        if level.required() {
                            ""
                        } else {
                            " (At smtp_tls_security_level = may the delivery agent then tries once more without TLS, unless it has a password to send.)"
                        }
                    )),
            );
            return None;
        }
    };
    let must = level.must_match();
    let enforced = tls::match_patterns(&s.tls, level, &peer.name, &nexthop.host);
    let info = tls::evaluate(&stream, level, &enforced);
    let check_level = if level == TlsLevel::Secure {
        TlsLevel::Secure
    } else {
        TlsLevel::Verify
    };
    let patterns = tls::match_patterns(&s.tls, check_level, &peer.name, &nexthop.host);
    let ssl = stream.ssl();
    let leaf = ssl.peer_certificate();
    let names = leaf.as_deref().map(tls::cert_names).unwrap_or_default();
    let matched = tls::matches(&names, &patterns);
    let mut certs: Vec<Value> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let chain: Vec<&X509Ref> = match ssl.peer_cert_chain() {
        Some(c) if !c.is_empty() => c.iter().collect(),
        _ => leaf.as_deref().into_iter().collect(),
    };
    for (i, c) in chain.iter().enumerate() {
        let (expires, left) = expiry(c);
        lines.push(format!(
            "certificate {i}: {} (issuer {}), expires {expires}{}",
            x509_name(c.subject_name()),
            x509_name(c.issuer_name()),
            left.map(|d| if d < 0 {
                " (EXPIRED)".to_string()
            } else {
                format!(" (in {d} days)")
            })
            .unwrap_or_default()
        ));
        certs.push(json!({
            "subject": x509_name(c.subject_name()),
            "issuer": x509_name(c.issuer_name()),
            "not_after": expires,
            "days_left": left,
        }));
    }
    let verify = ssl.verify_result();
    let chain_line = if verify == openssl::x509::X509VerifyResult::OK {
        format!("chain: trusted ({})", trust_source(s))
    } else {
        format!(
            "chain: NOT trusted: {} ({})",
            verify.error_string(),
            trust_source(s)
        )
    };
    let lvl = level_name(level);
    let name_line = format!(
        "name check: certificate names [{}] {} [{}] ({})",
        names.join(", "),
        if matched { "match" } else { "do not match" },
        patterns.join(", "),
        if must {
            format!("required at smtp_tls_security_level = {lvl}")
        } else {
            format!("not enforced at smtp_tls_security_level = {lvl}")
        }
    );
    let trust = match info.trust {
        Trust::Untrusted => "Untrusted",
        Trust::Trusted => "Trusted",
        Trust::Verified => "Verified",
    };
    let summary = format!(
        "{how}: {} with cipher {} ({}/{} bits), {trust}",
        info.protocol, info.cipher, info.bits, info.alg_bits
    );
    let data = json!({
        "protocol": info.protocol,
        "cipher": info.cipher,
        "bits": info.bits,
        "trust": trust,
        "level": lvl,
        "sni": sni,
        "certificates": certs,
        "names": names,
        "patterns": patterns,
        "name_match": matched,
        "problem": info.problem,
    });
    let old = matches!(info.protocol.as_str(), "TLSv1" | "TLSv1.1" | "SSLv3");
    let mut step = Step::ok(name, summary).data(data);
    step.detail = lines;
    step.detail.push(chain_line);
    step.detail.push(name_line);
    o.chat.stream = Stream::Tls(Box::new(stream));
    if must && info.trust != Trust::Verified {
        step.status = Status::Fail;
        step.summary = format!(
            "server certificate not verified: {}",
            info.problem.as_deref().unwrap_or("not verified")
        );
        step = step.explain(if info.trust == Trust::Untrusted {
            "The certificate chain does not lead to a CA postern trusts. Install the issuing CA in the system store or name it in smtp_tls_CAfile; a self-signed or intercepted certificate (a TLS-inspecting firewall) shows up here too.".to_string()
        } else {
            format!(
                "The certificate is not for the name postern connects to. Use the name on the certificate as the next hop (relayhost = [smtp.office365.com]:587, not an IP address or an alias), or add its name to smtp_tls_{}_cert_match.",
                if level == TlsLevel::Secure { "secure" } else { "verify" }
            )
        });
        r.push(step);
        return None;
    }
    if old {
        step.status = Status::Warn;
        step = step.explain(format!(
            "{} is older than TLS 1.2: Exchange Online refuses AUTH over it (421 4.7.66). Keep smtp_tls_mandatory_protocols = >=TLSv1.2 and smtp_tls_protocols = >=TLSv1.2.",
            info.protocol
        ));
    }
    o.tls = Some(info);
    r.push(step);
    Some(())
}

/// Where trusted CAs come from.
fn trust_source(s: &Settings) -> String {
    match (s.tls.cafile.is_empty(), s.tls.capath.is_empty()) {
        (true, true) => "the system's CA store".into(),
        (false, true) => format!("smtp_tls_CAfile = {}", s.tls.cafile),
        (true, false) => format!("smtp_tls_CApath = {}", s.tls.capath),
        (false, false) => format!(
            "smtp_tls_CAfile = {}, smtp_tls_CApath = {}",
            s.tls.cafile, s.tls.capath
        ),
    }
}

/// `CN=localhost, O=postern tests`.
fn x509_name(n: &X509NameRef) -> String {
    let parts: Vec<String> = n
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect();
    if parts.is_empty() {
        "(empty)".into()
    } else {
        parts.join(", ")
    }
}

/// `notAfter` as OpenSSL prints it and the whole days left (negative once
/// expired).
fn expiry(c: &X509Ref) -> (String, Option<i64>) {
    let after = c.not_after();
    let left = Asn1Time::days_from_now(0)
        .ok()
        .and_then(|now| now.diff(after).ok())
        .map(|d| i64::from(d.days));
    (after.to_string(), left)
}

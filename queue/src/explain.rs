//! What a smart host's reply means and what the admin can do about it. The
//! table covers Exchange Online's replies (the relay's main destination)
//! and a few generic ones; bounces, `postern diagnose` and the logs use it so
//! an admin reads the fix next to the error.

/// How a reply should be treated beyond its 4xx/5xx class
/// (OFFICE365.md §5, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Follow the reply code: 4xx defers, 5xx bounces.
    Normal,
    /// A configuration problem (authentication, tenant settings,
    /// connector, blocked sender or IP): hold the route or account and
    /// alert; never bounce the backlog for it.
    HoldRoute,
    /// The mailbox is out of quota or throttled by the server for a while:
    /// hold that account until its window frees.
    HoldAccount,
    /// Too many connections for the mailbox: defer, pause the account and
    /// lower its concurrency.
    SlowDown,
}

impl Treatment {
    /// True for the two hold kinds (a 5xx reply is then deferred, not bounced).
    pub fn holds(self) -> bool {
        matches!(self, Treatment::HoldRoute | Treatment::HoldAccount)
    }
}

struct Entry {
    /// Enhanced status code the reply must carry.
    dsn: &'static str,
    /// Text the reply must contain (case-insensitive), or "".
    contains: &'static str,
    treatment: Treatment,
    help: &'static str,
}

/// OFFICE365.md §5 gives `5.7.67`, the fake's 421 carries `4.7.67`.
const LEGACY_TLS: &str = "TLS 1.0/1.1 was negotiated with the legacy endpoint (smtp-legacy.office365.com), but the tenant has not opted in (AllowLegacyTLSClients). Use TLS 1.2 or newer with smtp.office365.com (smtp_tls_mandatory_protocols = >=TLSv1.2).";

const TABLE: &[Entry] = &[
    Entry {
        dsn: "5.7.139",
        contains: "disabled for the tenant",
        treatment: Treatment::HoldRoute,
        help: "SMTP AUTH is turned off for the whole Microsoft 365 tenant (this also blocks XOAUTH2). Run Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or enable it for this mailbox with Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false; changes take up to an hour.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "disabled for the mailbox",
        treatment: Treatment::HoldRoute,
        help: "SMTP AUTH is turned off for this mailbox. Run Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false (or Microsoft 365 admin center > user > Mail > Manage email apps > Authenticated SMTP); changes take up to an hour.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "basic authentication is disabled",
        treatment: Treatment::HoldRoute,
        help: "Microsoft refuses password (basic) authentication for SMTP. Switch this route to OAuth2: smtp_sasl_mechanism_filter = xoauth2 with an app registration (see postern(8), MICROSOFT 365).",
    },
    Entry {
        dsn: "5.7.139",
        contains: "security defaults",
        treatment: Treatment::HoldRoute,
        help: "Security Defaults block password authentication for this account. Use OAuth2 (XOAUTH2) instead of turning Security Defaults off.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "did not meet the criteria",
        treatment: Treatment::HoldRoute,
        help: "A Conditional Access policy blocks this sign-in (legacy authentication or this IP address). Use OAuth2, or ask the Entra ID admin for an exclusion.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "credentials were incorrect",
        treatment: Treatment::HoldRoute,
        help: "The password in smtp_sasl_password_maps is wrong. Fix it and run postmap; postern stops retrying so the account is not locked out.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "account locked",
        treatment: Treatment::HoldRoute,
        help: "Entra ID locked the account after failed sign-ins. Unlock it in Entra ID and fix the credential before retrying.",
    },
    Entry {
        dsn: "5.7.139",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "Exchange Online refused the sign-in for a policy reason given in the reply; fix the account or tenant setting it names.",
    },
    Entry {
        dsn: "5.7.30",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "Basic authentication is retired for SMTP client submission in this tenant. Configure OAuth2 (smtp_sasl_mechanism_filter = xoauth2), or relay through a connector.",
    },
    Entry {
        dsn: "5.7.3",
        contains: "authentication unsuccessful",
        treatment: Treatment::HoldRoute,
        help: "Authentication failed. With a password: check smtp_sasl_password_maps. With OAuth2: the token's audience must be https://outlook.office365.com, the app needs SMTP.SendAsApp with admin consent, and the service principal must be registered with New-ServicePrincipal and given FullAccess to the mailbox.",
    },
    Entry {
        dsn: "5.7.57",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The server requires authentication before MAIL FROM. Set smtp_sasl_auth_enable = yes with credentials for this relay, or send through the tenant's MX host (Direct Send or a connector) instead.",
    },
    Entry {
        dsn: "5.7.60",
        contains: "",
        treatment: Treatment::Normal,
        help: "The authenticated mailbox may not send as the message's From address. Set smtp_send_as_mailbox = yes (postern then sends as the mailbox, keeping the display name and the original address in Reply-To), or grant Send As: Add-RecipientPermission <from-address> -Trustee <mailbox> -AccessRights SendAs.",
    },
    Entry {
        dsn: "5.2.252",
        contains: "sendasdenied",
        treatment: Treatment::Normal,
        help: "The authenticated mailbox may not send as the message's From address. Set smtp_send_as_mailbox = yes, or grant Send As (Add-RecipientPermission <from-address> -Trustee <mailbox> -AccessRights SendAs). Repeated refusals get the mailbox throttled.",
    },
    Entry {
        dsn: "5.2.0",
        contains: "sendasdenied",
        treatment: Treatment::Normal,
        help: "The authenticated mailbox may not send as the message's From address. Set smtp_send_as_mailbox = yes, or grant Send As (Add-RecipientPermission <from-address> -Trustee <mailbox> -AccessRights SendAs).",
    },
    Entry {
        dsn: "5.2.0",
        contains: "maxsubmissionexceeded",
        treatment: Treatment::Normal,
        help: "The message is larger than the sending mailbox's MaxSendSize (35 MB by default; attachments grow by about a third when encoded). Send it smaller, or raise the limit with Set-Mailbox <mailbox> -MaxSendSize (up to 150 MB).",
    },
    Entry {
        dsn: "5.2.0",
        contains: "submissionquotaexceeded",
        treatment: Treatment::HoldAccount,
        help: "The mailbox reached Exchange Online's limit of 10,000 recipients per 24 hours. Mail is held and sent when the rolling window frees; spread the load over more mailboxes or use High Volume Email.",
    },
    Entry {
        dsn: "5.1.90",
        contains: "",
        treatment: Treatment::HoldAccount,
        help: "The mailbox reached its daily recipient limit. Mail is held until the 24-hour window frees.",
    },
    Entry {
        dsn: "5.2.251",
        contains: "throttled",
        treatment: Treatment::HoldAccount,
        help: "Exchange Online throttles this mailbox after repeated mailbox-full errors. Free space in the mailbox and wait.",
    },
    Entry {
        dsn: "5.2.252",
        contains: "throttled",
        treatment: Treatment::HoldAccount,
        help: "Exchange Online throttles this mailbox after repeated Send As refusals. Fix the sender rewriting (smtp_send_as_mailbox = yes) or grant Send As, then wait for the throttle to expire.",
    },
    Entry {
        dsn: "5.2.253",
        contains: "throttled",
        treatment: Treatment::HoldAccount,
        help: "Exchange Online throttles this mailbox after repeated licence errors. Assign a licence to the mailbox, then wait.",
    },
    Entry {
        dsn: "5.2.254",
        contains: "throttled",
        treatment: Treatment::HoldAccount,
        help: "Exchange Online throttles this mailbox after repeated too-many-recipients errors. Lower smtp_destination_recipient_limit, then wait.",
    },
    Entry {
        dsn: "5.2.255",
        contains: "throttled",
        treatment: Treatment::HoldAccount,
        help: "Exchange Online throttles this mailbox after repeated invalid-recipient errors. Clean the recipient lists, then wait.",
    },
    Entry {
        dsn: "4.3.2",
        contains: "resource forest",
        treatment: Treatment::Normal,
        help: "Exchange Online is overloaded (too many connections to one of its resource forests); this is not about your mailbox. postern retries with backoff; nothing to fix unless it lasts for hours (check Microsoft 365 service health).",
    },
    Entry {
        dsn: "4.3.2",
        contains: "concurrent connections",
        treatment: Treatment::SlowDown,
        help: "More than 3 connections submitted as this mailbox at once (other clients using the same mailbox count too). postern pauses the mailbox for smtp_account_throttle_delay, retries with one connection fewer and delivers later; if it recurs, lower smtp_account_concurrency_limit (2 leaves room for other clients).",
    },
    Entry {
        dsn: "4.3.2",
        contains: "sender thread limit",
        treatment: Treatment::SlowDown,
        help: "More than 3 connections submitted as this mailbox at once (other clients using the same mailbox count too). postern pauses the mailbox for smtp_account_throttle_delay, retries with one connection fewer and delivers later; if it recurs, lower smtp_account_concurrency_limit.",
    },
    Entry {
        dsn: "5.1.8",
        contains: "bad outbound sender",
        treatment: Treatment::HoldRoute,
        help: "Microsoft restricted this mailbox for sending spam. Secure the account, then release it in Microsoft Defender > Restricted entities (about an hour to take effect).",
    },
    Entry {
        dsn: "5.2.2",
        contains: "mailbox full",
        treatment: Treatment::HoldAccount,
        help: "The sending mailbox is full (Sent Items copies count). Add a retention policy for Sent Items or raise the quota.",
    },
    Entry {
        dsn: "4.2.0",
        contains: "mailbox logon failure",
        treatment: Treatment::Normal,
        help: "The app authenticated but has no rights on the mailbox yet: grant FullAccess to the service principal (Add-MailboxPermission) and allow up to an hour to propagate.",
    },
    Entry {
        dsn: "5.7.64",
        contains: "tenantattribution",
        treatment: Treatment::HoldRoute,
        help: "Exchange Online could not tie this connection to your tenant's inbound connector: update the connector's IP address or the certificate name (TlsSenderCertificateName).",
    },
    Entry {
        dsn: "5.7.64",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "Relay access denied by Exchange Online: the sender's domain is not an accepted domain, or no connector matches this server.",
    },
    Entry {
        dsn: "5.7.68",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The tenant rejects Direct Send. Create a partner inbound connector (certificate or IP) or turn off RejectDirectSend.",
    },
    Entry {
        dsn: "4.7.66",
        contains: "",
        treatment: Treatment::Normal,
        help: "TLS 1.0/1.1 was negotiated; Exchange Online requires TLS 1.2 or newer. Keep smtp_tls_mandatory_protocols = >=TLSv1.2.",
    },
    Entry {
        dsn: "4.7.67",
        contains: "",
        treatment: Treatment::Normal,
        help: LEGACY_TLS,
    },
    Entry {
        dsn: "5.7.67",
        contains: "",
        treatment: Treatment::Normal,
        help: LEGACY_TLS,
    },
    Entry {
        dsn: "5.7.4",
        contains: "unrecognized authentication type",
        treatment: Treatment::HoldRoute,
        help: "The server does not offer that authentication mechanism (Exchange Online offers LOGIN and XOAUTH2 only after STARTTLS). Set smtp_tls_security_level = encrypt and check smtp_sasl_mechanism_filter.",
    },
    Entry {
        dsn: "5.7.606",
        contains: "banned sending ip",
        treatment: Treatment::HoldRoute,
        help: "Microsoft blocks this server's IP address. Request delisting at https://sender.office.com/.",
    },
    Entry {
        dsn: "4.7.0",
        contains: "temporary server error",
        treatment: Treatment::Normal,
        help: "A temporary problem inside Exchange Online; postern retries with backoff. Nothing to fix unless it lasts for hours (check Microsoft 365 service health).",
    },
    Entry {
        dsn: "4.4.62",
        contains: "",
        treatment: Treatment::Normal,
        help: "Exchange Online could not tie the connection to your tenant's region: fix the inbound connector (this server's IP address or TlsSenderCertificateName) and relay to the tenant's own MX host (<tenant>.mail.protection.outlook.com).",
    },
    Entry {
        dsn: "5.7.142",
        contains: "",
        treatment: Treatment::Normal,
        help: "High Volume Email refuses OAuth2 tokens close to expiry. Check the clock of this server and raise smtp_oauth2_refresh_margin.",
    },
    Entry {
        dsn: "5.7.143",
        contains: "",
        treatment: Treatment::Normal,
        help: "The OAuth2 token had expired when it reached Exchange Online. Check the clock of this server and smtp_oauth2_refresh_margin.",
    },
    Entry {
        dsn: "5.7.144",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The app's token lacks the permission High Volume Email needs: give the app registration Office 365 Exchange Online > Application > Mail.Send with admin consent.",
    },
    Entry {
        dsn: "5.7.240",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The app is not allowed for this High Volume Email account: run Add-HVEAppAccess -Identity <hve-account> -AppIds <app id> (takes up to 5 minutes).",
    },
    Entry {
        dsn: "4.7.500",
        contains: "",
        treatment: Treatment::Normal,
        help: "Exchange Online is greylisting this IP address; postern retries. An inbound connector for this server avoids it.",
    },
    Entry {
        dsn: "5.7.705",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The tenant is blocked for sending (spam or an expired subscription). Secure the tenant and contact Microsoft Support.",
    },
    Entry {
        dsn: "5.7.708",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "Exchange Online does not accept traffic from this IP (low reputation, often trial tenants). Contact Microsoft Support.",
    },
    Entry {
        dsn: "5.7.750",
        contains: "",
        treatment: Treatment::HoldRoute,
        help: "The tenant is blocked for sending from unregistered domains. Add and verify the sender domains in Microsoft 365.",
    },
    Entry {
        dsn: "5.4.1",
        contains: "recipient address rejected",
        treatment: Treatment::Normal,
        help: "The recipient does not exist in the tenant (Directory-Based Edge Blocking).",
    },
    Entry {
        dsn: "5.1.20",
        contains: "",
        treatment: Treatment::Normal,
        help: "The message has several From addresses and no Sender header.",
    },
    Entry {
        dsn: "5.7.512",
        contains: "",
        treatment: Treatment::Normal,
        help: "The message lacks a valid From header (RFC 5322 3.6.2).",
    },
    Entry {
        dsn: "5.3.4",
        contains: "header size",
        treatment: Treatment::Normal,
        help: "The message's header block is larger than Exchange Online accepts (often from many Received or long custom headers added on the way). Trim the headers the sending device or application adds.",
    },
    Entry {
        dsn: "5.3.4",
        contains: "size",
        treatment: Treatment::Normal,
        help: "The message is larger than the server accepts (for Exchange Online the mailbox's MaxSendSize, 35 MB by default, counts after about 33% MIME growth).",
    },
];

fn dsn_of(reply: &str) -> Option<&str> {
    // "550 5.7.60 text" or "host ... said: 550 5.7.60 text".
    let mut words = reply.split_whitespace();
    while let Some(w) = words.next() {
        if w.len() == 3
            && w.bytes().all(|b| b.is_ascii_digit())
            && matches!(w.as_bytes()[0], b'2' | b'4' | b'5')
        {
            let next = words.next()?;
            let code = next.trim_end_matches([',', ';']);
            return proto::status::EnhancedCode::parse(code).map(|_| code);
        }
    }
    None
}

fn find(reply: &str) -> Option<&'static Entry> {
    let dsn = dsn_of(reply)?;
    let lower = reply.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|e| e.dsn == dsn && (e.contains.is_empty() || lower.contains(e.contains)))
}

/// The meaning of a reply and the fix, when known.
pub fn explain(reply: &str) -> Option<&'static str> {
    find(reply).map(|e| e.help)
}

/// How a reply should be treated (see [`Treatment`]).
pub fn treatment(reply: &str) -> Treatment {
    find(reply)
        .map(|e| e.treatment)
        .unwrap_or(Treatment::Normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_replies() {
        let r = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com]";
        assert!(explain(r).unwrap().contains("Set-TransportConfig"));
        assert_eq!(treatment(r), Treatment::HoldRoute);
        let r = "host smtp.office365.com[1.2.3.4] said: 550 5.7.60 SMTP; Client does not have permissions to send as this sender (in reply to end of DATA command)";
        assert!(explain(r).unwrap().contains("SendAs"));
        assert_eq!(treatment(r), Treatment::Normal);
        let r = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message";
        assert_eq!(treatment(r), Treatment::HoldAccount);
        let r = "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.";
        assert_eq!(treatment(r), Treatment::SlowDown);
        assert_eq!(
            treatment("550 5.2.252 Sender throttled due to continuous send as denied errors."),
            Treatment::HoldAccount
        );
        assert_eq!(
            treatment("554 5.2.252 SendAsDenied; a@b not allowed to send as c@d"),
            Treatment::Normal
        );
        assert_eq!(
            treatment("550 5.1.8 Access denied, bad outbound sender"),
            Treatment::HoldRoute
        );
        let r = "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed";
        assert_eq!(treatment(r), Treatment::Normal);
        // The same 554 5.2.0, three meanings: the text decides.
        let r = "554 5.2.0 STOREDRV.Submission.Exception:MessageSubmissionExceededException.MapiExceptionMaxSubmissionExceeded; Message size exceeds maximum size limit";
        assert_eq!(treatment(r), Treatment::Normal);
        assert!(explain(r).unwrap().contains("MaxSendSize"));
        assert!(explain("554 5.2.0 something else").is_none());
        // Header size is not message size.
        let h = explain("552 5.3.4 Header size exceeds fixed maximum size").unwrap();
        assert!(h.contains("header block"), "{h}");
        let m = explain("552 5.3.4 Message size exceeds fixed maximum message size").unwrap();
        assert!(m.contains("MaxSendSize"), "{m}");
        // 4.3.2 for the service's own load is not the mailbox's throttle.
        let r = "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel.";
        assert_eq!(treatment(r), Treatment::Normal);
        assert!(explain(r).unwrap().contains("not about your mailbox"));
        assert!(
            explain("451 4.7.0 Temporary server error. Please try again later. PRX4 [X]")
                .unwrap()
                .contains("retries with backoff")
        );
        assert_eq!(
            treatment(
                "550 5.7.240 The application is not allowed for use with this High Volume Email account"
            ),
            Treatment::HoldRoute
        );
        // The throttle's fix names the per-mailbox parameter.
        assert!(
            explain("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
                .unwrap()
                .contains("smtp_account_concurrency_limit")
        );
        assert!(
            explain("421 4.7.67 TLS 1.0 and 1.1 are not supported by your organization")
                .unwrap()
                .contains("AllowLegacyTLSClients")
        );
        assert!(explain("250 2.0.0 OK").is_none());
        assert!(explain("garbage").is_none());
    }
}

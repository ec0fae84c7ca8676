//! Delivery results as values: what happened to a recipient (sent,
//! deferred, bounced), the enhanced status code, and the reason text exactly
//! as Postfix's smtp(8) words it, e.g. `host mx[192.0.2.1] said: 550 5.1.1
//! <x@y>: Recipient address rejected (in reply to RCPT TO command)`.
//!
//! A remote reply keeps its server (`remote_mta`) and its own text
//! (`diagnostic`) for the DSN. Replies that Exchange Online uses for
//! account or configuration problems ([`queue::explain::treatment`] says
//! `Hold`) defer instead of bouncing and ask qmgr to hold the route.

use proto::Reply;
use queue::deliver::Status;
use std::fmt;
use std::net::IpAddr;

/// The server end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Host name (the MX name, the bracketed host, or the address itself).
    pub name: String,
    /// Address connected to.
    pub addr: IpAddr,
    /// TCP port.
    pub port: u16,
}

impl Peer {
    /// `name[addr]`, as in Postfix's `host ... said:` texts.
    pub fn namaddr(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }

    /// `name[addr]:port`, the `relay=` field.
    pub fn namaddrport(&self) -> String {
        format!("{}[{}]:{}", self.name, self.addr, self.port)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.namaddrport())
    }
}

/// What happened to one recipient (or to all of them, for a failure that
/// ends the whole delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Sent, deferred or bounced.
    pub status: Status,
    /// Enhanced status code, e.g. `5.1.1`.
    pub dsn: String,
    /// The reason as logged.
    pub reason: String,
    /// The server that answered, for the DSN Remote-MTA field.
    pub remote_mta: Option<String>,
    /// The server's reply alone, for the DSN Diagnostic-Code field.
    pub diagnostic: Option<String>,
    /// The reply means an account or configuration problem: hold the route.
    pub hold: bool,
}

impl Outcome {
    /// A local failure (no server reply involved). `dsn` decides deferred
    /// (4.x.x) or bounced (5.x.x).
    pub fn local(dsn: &str, reason: impl Into<String>) -> Outcome {
        let status = if dsn.starts_with('5') {
            Status::Bounced
        } else {
            Status::Deferred
        };
        Outcome {
            status,
            dsn: dsn.to_string(),
            reason: reason.into(),
            remote_mta: None,
            diagnostic: None,
            hold: false,
        }
    }

    /// A local success (maildir delivery).
    pub fn sent_local(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Sent,
            dsn: "2.0.0".into(),
            reason: reason.into(),
            remote_mta: None,
            diagnostic: None,
            hold: false,
        }
    }

    /// The server accepted the message: the reason is the whole reply,
    /// including Exchange's `[Hostname=...]` suffix.
    pub fn sent(peer: &Peer, reply: &Reply) -> Outcome {
        Outcome {
            status: Status::Sent,
            dsn: reply.dsn().to_string(),
            reason: reply.said_text(),
            remote_mta: Some(peer.name.clone()),
            diagnostic: Some(reply.said_text()),
            hold: false,
        }
    }

    /// A 4xx or 5xx reply to `command` (`RCPT TO command`, `end of DATA
    /// command`, ...): `host NAME[ADDR] said: REPLY (in reply to COMMAND)`.
    pub fn rejected(peer: &Peer, reply: &Reply, command: &str) -> Outcome {
        let said = reply.said_text();
        Outcome::remote(
            peer,
            reply,
            format!(
                "host {} said: {said} (in reply to {command})",
                peer.namaddr()
            ),
        )
    }

    /// A failing reply with a caller-worded reason (greeting, STARTTLS,
    /// AUTH). The status follows the reply code, except that a reply
    /// hold treatment (`queue::explain::Treatment::holds`) defers and holds the route.
    pub fn remote(peer: &Peer, reply: &Reply, reason: String) -> Outcome {
        let said = reply.said_text();
        let hold = queue::explain::treatment(&said).holds();
        let mut dsn = reply.dsn().to_string();
        let status = if reply.is_permanent() && !hold {
            Status::Bounced
        } else {
            Status::Deferred
        };
        if status == Status::Deferred && dsn.starts_with('5') {
            dsn.replace_range(0..1, "4");
        }
        Outcome {
            status,
            dsn,
            reason,
            remote_mta: Some(peer.name.clone()),
            diagnostic: Some(said),
            hold,
        }
    }

    /// The same outcome, deferred instead of bounced (soft bounce of a
    /// failure that is final for this server but not for the message).
    pub fn soften(mut self) -> Outcome {
        if self.status == Status::Bounced {
            self.status = Status::Deferred;
            self.dsn.replace_range(0..1, "4");
        }
        self
    }

    /// A held 5xx refusal of one recipient in a session that delivered to
    /// others: the route works, so the refusal is about this recipient
    /// (Direct Send to an outside address gets `550 5.7.64`). It bounces
    /// like any 5xx reply instead of holding everyone's mail.
    pub fn recipient_refusal(mut self) -> Outcome {
        if self.hold
            && self
                .diagnostic
                .as_deref()
                .is_some_and(|d| d.starts_with('5'))
        {
            self.hold = false;
            self.status = Status::Bounced;
            self.dsn.replace_range(0..1, "5");
        }
        self
    }

    /// `sent`, `deferred` or `bounced`, for the log line.
    pub fn status_word(&self) -> &'static str {
        match self.status {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        }
    }
}

/// A failure that ends a delivery attempt before any recipient was tried:
/// DNS, connect, greeting, EHLO, TLS or AUTH. It applies to every
/// recipient and marks the destination as failing (`site_failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFailure {
    /// The outcome for every recipient.
    pub outcome: Outcome,
    /// `relay=` for the log: the server, or `none` when none answered.
    pub relay: String,
    /// Another server of the same destination may do better.
    pub try_next: bool,
}

impl SiteFailure {
    /// A failure with no server involved (DNS, connect).
    pub fn no_relay(outcome: Outcome) -> SiteFailure {
        SiteFailure {
            outcome,
            relay: "none".into(),
            try_next: true,
        }
    }

    /// A failure at a server: the next server may be tried.
    pub fn at(peer: &Peer, outcome: Outcome) -> SiteFailure {
        SiteFailure {
            outcome,
            relay: peer.namaddrport(),
            try_next: true,
        }
    }

    /// No other server of this destination is tried after this failure.
    pub fn final_(mut self) -> SiteFailure {
        self.try_next = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ReplyParser;

    fn reply(wire: &str) -> Reply {
        let mut p = ReplyParser::new();
        p.feed(wire.as_bytes());
        p.next_reply().unwrap().unwrap()
    }

    fn peer() -> Peer {
        Peer {
            name: "mx.example.com".into(),
            addr: "192.0.2.1".parse().unwrap(),
            port: 25,
        }
    }

    #[test]
    fn rcpt_rejections_are_worded_as_postfix() {
        let r = reply("550 5.1.1 <x@y>: Recipient address rejected: User unknown\r\n");
        let o = Outcome::rejected(&peer(), &r, "RCPT TO command");
        assert_eq!(o.status, Status::Bounced);
        assert_eq!(o.dsn, "5.1.1");
        assert_eq!(
            o.reason,
            "host mx.example.com[192.0.2.1] said: 550 5.1.1 <x@y>: Recipient address rejected: User unknown (in reply to RCPT TO command)"
        );
        assert_eq!(o.remote_mta.as_deref(), Some("mx.example.com"));
        assert_eq!(
            o.diagnostic.as_deref(),
            Some("550 5.1.1 <x@y>: Recipient address rejected: User unknown")
        );
        assert!(!o.hold);

        let o = Outcome::rejected(&peer(), &reply("450 busy\r\n"), "RCPT TO command");
        assert_eq!((o.status, o.dsn.as_str()), (Status::Deferred, "4.0.0"));
        let o = Outcome::rejected(&peer(), &reply("554 no\r\n"), "DATA command");
        assert_eq!((o.status, o.dsn.as_str()), (Status::Bounced, "5.0.0"));
    }

    #[test]
    fn multi_line_replies_keep_every_line() {
        let r = reply("550-5.7.1 first\r\n550 5.7.1 second\r\n");
        let o = Outcome::rejected(&peer(), &r, "end of DATA command");
        assert_eq!(
            o.reason,
            "host mx.example.com[192.0.2.1] said: 550-5.7.1 first 550 5.7.1 second (in reply to end of DATA command)"
        );
    }

    #[test]
    fn a_held_refusal_of_one_recipient_bounces_when_others_were_delivered() {
        let r = reply("550 5.7.64 TenantAttribution; Relay Access Denied\r\n");
        let o = Outcome::rejected(&peer(), &r, "RCPT TO command");
        assert_eq!(
            (o.status, o.dsn.as_str(), o.hold),
            (Status::Deferred, "4.7.64", true)
        );
        let o = o.recipient_refusal();
        assert_eq!(
            (o.status, o.dsn.as_str(), o.hold),
            (Status::Bounced, "5.7.64", false)
        );
        // A transient reply stays deferred; an ordinary one is unchanged.
        let r = reply("432 4.3.2 Concurrent connections limit exceeded\r\n");
        let o = Outcome::rejected(&peer(), &r, "end of DATA command").recipient_refusal();
        assert_eq!(o.status, Status::Deferred);
        let r = reply("550 5.1.1 unknown\r\n");
        let o = Outcome::rejected(&peer(), &r, "RCPT TO command");
        assert_eq!(o.clone().recipient_refusal(), o);
    }

    #[test]
    fn configuration_replies_hold_instead_of_bouncing() {
        let r = reply("530 5.7.57 Client not authenticated to send mail. [X.prod.outlook.com]\r\n");
        let o = Outcome::rejected(&peer(), &r, "MAIL FROM command");
        assert_eq!(o.status, Status::Deferred);
        assert_eq!(o.dsn, "4.7.57");
        assert!(o.hold);
        assert!(
            o.reason
                .contains("said: 530 5.7.57 Client not authenticated")
        );
        assert_eq!(
            o.diagnostic.as_deref(),
            Some("530 5.7.57 Client not authenticated to send mail. [X.prod.outlook.com]")
        );
        // SendAs refusals are about the message: they bounce.
        let r =
            reply("550 5.7.60 SMTP; Client does not have permissions to send as this sender\r\n");
        let o = Outcome::rejected(&peer(), &r, "end of DATA command");
        assert_eq!((o.status, o.hold), (Status::Bounced, false));
    }

    #[test]
    fn sent_keeps_the_whole_reply_and_local_outcomes_follow_the_dsn() {
        let r = reply("250 2.0.0 OK <a@b> [Hostname=CH2PR14MB4005.namprd14.prod.outlook.com]\r\n");
        let o = Outcome::sent(&peer(), &r);
        assert_eq!(o.status, Status::Sent);
        assert_eq!(o.dsn, "2.0.0");
        assert_eq!(
            o.reason,
            "250 2.0.0 OK <a@b> [Hostname=CH2PR14MB4005.namprd14.prod.outlook.com]"
        );
        assert_eq!(Outcome::local("5.4.4", "x").status, Status::Bounced);
        assert_eq!(Outcome::local("4.4.1", "x").status, Status::Deferred);
        let soft = Outcome::local("5.4.4", "x").soften();
        assert_eq!(
            (soft.status, soft.dsn.as_str()),
            (Status::Deferred, "4.4.4")
        );
        assert_eq!(peer().namaddrport(), "mx.example.com[192.0.2.1]:25");
        let v6 = Peer {
            name: "h".into(),
            addr: "2001:db8::1".parse().unwrap(),
            port: 587,
        };
        assert_eq!(v6.to_string(), "h[2001:db8::1]:587");
    }
}

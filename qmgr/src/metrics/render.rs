//! A [`Snapshot`] as JSON (`postern status --json`, `/status`) and as
//! Prometheus text exposition format 0.0.4 (`/metrics`). The metric names
//! are listed in postern(8), METRICS.

use super::{CLASSES, STATUSES, Snapshot};
use serde_json::{Value, json};
use std::fmt::Write;
use std::time::SystemTime;

/// Seconds since the epoch.
fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds since the epoch (JSON).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The status document. Limits of 0 mean "no limit", as in main.cf.
pub fn json(s: &Snapshot) -> Value {
    let queues: serde_json::Map<String, Value> = s
        .queues
        .iter()
        .map(|(q, n)| (q.as_str().to_string(), json!(n)))
        .collect();
    let routes: Vec<Value> = s
        .routes
        .iter()
        .map(|((route, queue), l)| {
            json!({"route": route, "queue": queue, "messages": l.messages, "recipients": l.recipients})
        })
        .collect();
    let mut deliveries = serde_json::Map::new();
    for (i, status) in STATUSES.iter().enumerate() {
        let by: serde_json::Map<String, Value> = CLASSES
            .iter()
            .enumerate()
            .map(|(j, c)| (c.to_string(), json!(s.deliveries[i][j])))
            .collect();
        deliveries.insert(status.to_string(), Value::Object(by));
    }
    let accounts: Vec<Value> = s
        .accounts
        .iter()
        .map(|a| {
            let l = &a.limits;
            let u = &a.usage;
            let budget = &l.recipients;
            json!({
                "account": a.name,
                "recipients": {
                    "limit": budget.count,
                    "window_seconds": budget.per.as_secs(),
                    "used": u.recipients_used,
                    "left": (!budget.unlimited()).then(|| budget.count.saturating_sub(u.recipients_used)),
                },
                "rate": {
                    "limit": l.rate.count,
                    "window_seconds": l.rate.per.as_secs(),
                    "used": u.rate_used,
                },
                "in_flight": u.in_flight,
                "concurrency": u.concurrency,
                "paused_until": u.paused_until.map(unix_secs),
                "held": u.hold.is_some(),
                "hold": u.hold.as_ref().map(|h| json!({"until": unix_secs(h.until), "reason": h.reason})),
            })
        })
        .collect();
    let held_routes: Vec<Value> = s
        .held_routes
        .iter()
        .map(|(r, h)| json!({"route": r, "until": unix_secs(h.until), "reason": h.reason}))
        .collect();
    let tokens: Vec<Value> = s
        .tokens
        .iter()
        .map(|t| {
            let left = t
                .expires_at
                .duration_since(s.time)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_else(|e| -(e.duration().as_secs() as i64));
            json!({
                "account": t.account,
                "client_id": t.client_id,
                "expires_at": unix_secs(t.expires_at),
                "obtained_at": unix_secs(t.obtained_at),
                "seconds_left": left,
                "expired": left <= 0,
            })
        })
        .collect();
    json!({
        "version": 1,
        "time": unix_secs(s.time),
        "qmgr": {"pid": s.pid, "started": unix_secs(s.started)},
        "answered": s.answered,
        "queues": queues,
        "routes": routes,
        "deliveries": deliveries,
        "accounts": accounts,
        "held_routes": held_routes,
        "oauth2_tokens": tokens,
    })
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The metrics in Prometheus text format.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = Out(String::new());
    o.family(
        "postern_qmgr_start_time_seconds",
        "gauge",
        "When the queue manager started (Unix time).",
    );
    o.sample("postern_qmgr_start_time_seconds", &[], unix(s.started));

    o.family("postern_queue_messages", "gauge", "Messages in each queue.");
    for (q, n) in &s.queues {
        o.sample("postern_queue_messages", &[("queue", q.as_str())], n);
    }

    o.family(
        "postern_route_messages",
        "gauge",
        "Messages with recipients waiting for a route (transport:nexthop), by queue.",
    );
    for ((route, queue), l) in &s.routes {
        o.sample(
            "postern_route_messages",
            &[("route", route), ("queue", queue)],
            l.messages,
        );
    }
    o.family(
        "postern_route_recipients",
        "gauge",
        "Recipients waiting for a route (transport:nexthop), by queue.",
    );
    for ((route, queue), l) in &s.routes {
        o.sample(
            "postern_route_recipients",
            &[("route", route), ("queue", queue)],
            l.recipients,
        );
    }

    o.family(
        "postern_deliveries_total",
        "counter",
        "Recipient delivery attempts since the queue manager started, by outcome and reply class.",
    );
    for (i, status) in STATUSES.iter().enumerate() {
        for (j, class) in CLASSES.iter().enumerate() {
            o.sample(
                "postern_deliveries_total",
                &[("status", status), ("class", class)],
                s.deliveries[i][j],
            );
        }
    }

    type Get = fn(&super::AccountStatus) -> Option<f64>;
    let account_metrics: [(&str, &str, Get); 11] = [
        (
            "postern_account_recipient_limit",
            "Recipients a mailbox may send per rolling window (0: no limit).",
            |a| Some(a.limits.recipients.count as f64),
        ),
        (
            "postern_account_recipient_window_seconds",
            "Length of the mailbox's rolling recipient window.",
            |a| Some(a.limits.recipients.per.as_secs_f64()),
        ),
        (
            "postern_account_recipients_used",
            "Recipients counted in the mailbox's rolling window now.",
            |a| Some(a.usage.recipients_used as f64),
        ),
        (
            "postern_account_recipient_budget_remaining",
            "Recipients the mailbox may still send in its rolling window (limited mailboxes only).",
            |a| {
                let b = a.limits.recipients;
                (!b.unlimited()).then(|| b.count.saturating_sub(a.usage.recipients_used) as f64)
            },
        ),
        (
            "postern_account_rate_limit",
            "Messages a mailbox may start per rate window (0: no limit).",
            |a| Some(a.limits.rate.count as f64),
        ),
        (
            "postern_account_rate_window_seconds",
            "Length of the mailbox's message rate window.",
            |a| Some(a.limits.rate.per.as_secs_f64()),
        ),
        (
            "postern_account_rate_used",
            "Deliveries counted in the mailbox's rate window now (in flight included).",
            |a| Some(a.usage.rate_used as f64),
        ),
        (
            "postern_account_in_flight",
            "Deliveries in progress for the mailbox.",
            |a| Some(a.usage.in_flight as f64),
        ),
        (
            "postern_account_concurrency_limit",
            "Simultaneous deliveries allowed for the mailbox now, lowered after throttling (0: no limit).",
            |a| Some(a.usage.concurrency as f64),
        ),
        (
            "postern_account_held",
            "1 while the mailbox's deliveries are held (a configuration or quota reply).",
            |a| Some(if a.usage.hold.is_some() { 1.0 } else { 0.0 }),
        ),
        (
            "postern_account_hold_until_timestamp_seconds",
            "When a held mailbox is tried again (Unix time; held mailboxes only).",
            |a| a.usage.hold.as_ref().map(|h| unix(h.until)),
        ),
    ];
    for (name, help, get) in account_metrics {
        o.family(name, "gauge", help);
        for a in &s.accounts {
            if let Some(v) = get(a) {
                o.sample(name, &[("account", &a.name)], v);
            }
        }
    }

    o.family(
        "postern_route_held_until_timestamp_seconds",
        "gauge",
        "When a held route without a mailbox is tried again (Unix time; held routes only).",
    );
    for (route, h) in &s.held_routes {
        o.sample(
            "postern_route_held_until_timestamp_seconds",
            &[("route", route)],
            unix(h.until),
        );
    }

    o.family(
        "postern_oauth2_token_expiry_timestamp_seconds",
        "gauge",
        "When each cached OAuth2 access token expires (Unix time).",
    );
    for t in &s.tokens {
        o.sample(
            "postern_oauth2_token_expiry_timestamp_seconds",
            &[("account", &t.account), ("client_id", &t.client_id)],
            unix(t.expires_at),
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Limits, Usage};
    use crate::metrics::{AccountStatus, RouteLoad, TokenStatus};
    use queue::layout::QueueName;
    use std::time::Duration;

    fn snap() -> Snapshot {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut routes = std::collections::BTreeMap::new();
        routes.insert(
            ("relay:[smtp.office365.com]:587".to_string(), "deferred"),
            RouteLoad {
                messages: 2,
                recipients: 3,
            },
        );
        let mut deliveries = [[0; 4]; 3];
        deliveries[0][0] = 7;
        deliveries[1][3] = 1;
        Snapshot {
            time: t0,
            started: t0 - Duration::from_secs(60),
            pid: 42,
            queues: QueueName::ALL.iter().map(|&q| (q, 1)).collect(),
            routes,
            deliveries,
            accounts: vec![AccountStatus {
                name: "scan\"ner@contoso.com".into(),
                limits: Limits::from_config(&conf::Config::defaults()),
                usage: Usage {
                    rate_used: 2,
                    recipients_used: 40,
                    in_flight: 1,
                    concurrency: 3,
                    paused_until: None,
                    hold: None,
                },
            }],
            held_routes: Vec::new(),
            tokens: vec![TokenStatus {
                account: "scanner@contoso.com".into(),
                client_id: "app".into(),
                expires_at: t0 + Duration::from_secs(3600),
                obtained_at: t0,
            }],
            answered: vec!["t1".into()],
        }
    }

    #[test]
    fn prometheus_text() {
        let text = prometheus(&snap());
        for line in [
            "postern_queue_messages{queue=\"deferred\"} 1",
            "postern_route_recipients{route=\"relay:[smtp.office365.com]:587\",queue=\"deferred\"} 3",
            "postern_deliveries_total{status=\"sent\",class=\"normal\"} 7",
            "postern_deliveries_total{status=\"deferred\",class=\"slow_down\"} 1",
            "postern_account_recipient_budget_remaining{account=\"scan\\\"ner@contoso.com\"} 9960",
            "postern_account_rate_limit{account=\"scan\\\"ner@contoso.com\"} 30",
            "postern_oauth2_token_expiry_timestamp_seconds{account=\"scanner@contoso.com\",client_id=\"app\"} 1800003600",
            "# TYPE postern_deliveries_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Every sample belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{l}");
            }
        }
    }

    #[test]
    fn json_document() {
        let j = json(&snap());
        assert_eq!(j["queues"]["hold"], 1);
        assert_eq!(j["deliveries"]["sent"]["normal"], 7);
        assert_eq!(j["accounts"][0]["recipients"]["left"], 9960);
        assert_eq!(j["accounts"][0]["rate"]["window_seconds"], 60);
        assert_eq!(j["oauth2_tokens"][0]["seconds_left"], 3600);
        assert_eq!(j["routes"][0]["messages"], 2);
        assert_eq!(j["answered"][0], "t1");
    }
}

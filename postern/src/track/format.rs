//! The three output formats of `postern log`: an aligned table for people,
//! CSV (RFC 4180, with a header line) for spreadsheets, JSON lines for
//! scripts. Times are local: `2026-11-22 05:30:00` in the table, ISO 8601
//! with the UTC offset in CSV and JSON. The table and CSV replace control
//! characters with `?`: subjects and replies come from outside and must not
//! steer the terminal.

use super::when;
use queue::index::track::{Summary, SummaryRow, TrackRow, TrackedMessage};

/// The client as Postfix names it, `name[addr]`, or `local` for
/// submissions from this machine (sendmail, the drop folder, bounces).
pub fn client(m: &TrackedMessage) -> String {
    match &m.client_addr {
        Some(a) => format!("{}[{a}]", m.client_name.as_deref().unwrap_or("unknown")),
        None => "local".into(),
    }
}

fn sender(m: &TrackedMessage) -> &str {
    if m.sender.is_empty() { "<>" } else { &m.sender }
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Lays out `rows` under `header` in columns two spaces apart; the last
/// column is not padded.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == width.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = width[i] - cell.chars().count() + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// The table: one line per attempt (or waiting recipient).
pub fn table(rows: &[TrackRow]) -> String {
    let header = [
        "TIME",
        "QUEUE ID",
        "STATUS",
        "FROM",
        "TO",
        "CLIENT",
        "SASL USER",
        "RELAY",
        "DELAY",
        "DSN",
        "REPLY",
    ];
    let dash = || "-".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.message;
            vec![
                when::table(r.time),
                m.queue_id.clone(),
                r.status.as_str().to_string(),
                printable(sender(m)),
                printable(&r.recipient),
                printable(&client(m)),
                m.sasl_user.as_deref().map_or_else(dash, printable),
                r.relay.as_deref().map_or_else(dash, printable),
                r.delay.map_or_else(dash, |d| format!("{d:.1}")),
                r.dsn.as_deref().map_or_else(dash, printable),
                r.reply.as_deref().map_or_else(dash, printable),
            ]
        })
        .collect();
    columns(&header, &cells)
}

const CSV_HEADER: [&str; 21] = [
    "time",
    "queue_id",
    "status",
    "sender",
    "recipient",
    "orig_recipient",
    "relay",
    "delay",
    "dsn",
    "reply",
    "arrival",
    "client",
    "client_name",
    "client_addr",
    "sasl_user",
    "uid",
    "origin",
    "size",
    "nrcpt",
    "message_id",
    "subject",
];

fn csv_field(s: &str) -> String {
    let s = printable(s);
    if s.contains([',', '"', '\r', '\n']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The fields of a row, in [`CSV_HEADER`] order (`None`: no value).
fn fields(r: &TrackRow) -> [Option<String>; 21] {
    let m = &r.message;
    [
        Some(when::iso8601(r.time)),
        Some(m.queue_id.clone()),
        Some(r.status.as_str().to_string()),
        Some(m.sender.clone()),
        Some(r.recipient.clone()),
        r.orig_recipient.clone(),
        r.relay.clone(),
        r.delay.map(|d| format!("{d:.3}")),
        r.dsn.clone(),
        r.reply.clone(),
        Some(when::iso8601(m.arrival)),
        Some(client(m)),
        m.client_name.clone(),
        m.client_addr.clone(),
        m.sasl_user.clone(),
        m.uid.map(|u| u.to_string()),
        m.origin.clone(),
        Some(m.size.to_string()),
        Some(m.recipients.len().to_string()),
        m.message_id.clone(),
        m.subject.clone(),
    ]
}

/// CSV with a header line; the null sender is an empty field.
pub fn csv(rows: &[TrackRow]) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for r in rows {
        let line: Vec<String> = fields(r)
            .iter()
            .map(|f| f.as_deref().map(csv_field).unwrap_or_default())
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// JSON lines: one object per row, keys as the CSV header; numbers for
/// delay, uid, size and nrcpt; `null` for no value.
pub fn json(rows: &[TrackRow]) -> String {
    let numeric = ["delay", "uid", "size", "nrcpt"];
    let mut out = String::new();
    for r in rows {
        out.push('{');
        for (i, (k, v)) in CSV_HEADER.iter().zip(fields(r)).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&json_str(k));
            out.push_str(": ");
            match v {
                None => out.push_str("null"),
                Some(v) if numeric.contains(k) => out.push_str(&v),
                Some(v) => out.push_str(&json_str(&v)),
            }
        }
        out.push_str("}\n");
    }
    out
}

fn summary_cells(name: String, r: &SummaryRow) -> Vec<String> {
    vec![
        name,
        r.messages.to_string(),
        r.recipients.to_string(),
        r.bytes.to_string(),
        r.sent.to_string(),
        r.deferred.to_string(),
        r.bounced.to_string(),
    ]
}

/// The summary as two tables (per mailbox, per client) and the totals.
pub fn summary_table(s: &Summary, since: Option<i64>, until: Option<i64>) -> String {
    let from = since.map_or_else(|| "the first record".into(), when::table);
    let to = until.map_or_else(|| "now".into(), when::table);
    let mut out = format!("Messages accepted and delivery attempts from {from} to {to}\n\n");
    let counts = [
        "MESSAGES",
        "RECIPIENTS",
        "BYTES",
        "SENT",
        "DEFERRED",
        "BOUNCED",
    ];
    let section = |title: &str, rows: &[SummaryRow], none: &str| {
        let mut header = vec![title];
        header.extend(counts);
        let mut cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let name = if r.name.is_empty() {
                    none.to_string()
                } else {
                    printable(&r.name)
                };
                summary_cells(name, r)
            })
            .collect();
        cells.push(summary_cells("total".into(), &s.total));
        numeric_columns(&header, &cells)
    };
    out.push_str(&section("MAILBOX (SASL USER)", &s.by_user, "(none)"));
    out.push('\n');
    out.push_str(&section("CLIENT", &s.by_client, "local"));
    out
}

/// Like [`columns`], but every column after the first (numbers) is
/// right-aligned under its header.
fn numeric_columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = format!("{:<w$}", cells[0], w = width[0]);
        for (i, c) in cells.iter().enumerate().skip(1) {
            l.push_str(&format!("  {c:>w$}", w = width[i]));
        }
        l.push('\n');
        l
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// CSV: `kind,name,messages,recipients,bytes,sent,deferred,bounced`, kind
/// `mailbox`, `client` or `total`.
pub fn summary_csv(s: &Summary) -> String {
    let mut out = String::from("kind,name,messages,recipients,bytes,sent,deferred,bounced\r\n");
    let mut push = |kind: &str, name: &str, r: &SummaryRow| {
        out.push_str(&format!(
            "{kind},{},{},{},{},{},{},{}\r\n",
            csv_field(name),
            r.messages,
            r.recipients,
            r.bytes,
            r.sent,
            r.deferred,
            r.bounced
        ));
    };
    for r in &s.by_user {
        push("mailbox", &r.name, r);
    }
    for r in &s.by_client {
        push(
            "client",
            if r.name.is_empty() { "local" } else { &r.name },
            r,
        );
    }
    push("total", "", &s.total);
    out
}

/// JSON lines, one per group and one total: `{"kind": "mailbox", "name":
/// ..., "messages": ..., ...}`; no SASL user is `"name": null`.
pub fn summary_json(s: &Summary) -> String {
    let mut out = String::new();
    let mut push = |kind: &str, name: Option<&str>, r: &SummaryRow| {
        out.push_str(&format!(
            "{{\"kind\": {}, \"name\": {}, \"messages\": {}, \"recipients\": {}, \"bytes\": {}, \"sent\": {}, \"deferred\": {}, \"bounced\": {}}}\n",
            json_str(kind),
            name.map_or_else(|| "null".into(), json_str),
            r.messages,
            r.recipients,
            r.bytes,
            r.sent,
            r.deferred,
            r.bounced
        ));
    };
    for r in &s.by_user {
        push(
            "mailbox",
            (!r.name.is_empty()).then_some(r.name.as_str()),
            r,
        );
    }
    for r in &s.by_client {
        push(
            "client",
            Some(if r.name.is_empty() { "local" } else { &r.name }),
            r,
        );
    }
    push("total", None, &s.total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("bell\x07"), "bell?");
    }

    #[test]
    fn columns_align_and_do_not_pad_the_last() {
        let t = columns(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z z\n");
    }
}

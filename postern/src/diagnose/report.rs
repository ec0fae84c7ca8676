//! The result of a `postern diagnose` walk: one [`Step`] per stage, printed
//! for a person ([`Report::render`], colour only on a terminal) or as one
//! JSON document for scripts ([`Report::to_json`]).

use serde_json::{Value, json};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It worked.
    Ok,
    /// It worked, with something the admin should know (STARTTLS not
    /// offered at the `may` level, TLS 1.1, ...). Does not fail the walk.
    Warn,
    /// It failed; the walk stops here (QUIT aside).
    Fail,
    /// Not run: not configured, or not asked for (DATA without `--send`).
    Skip,
}

impl Status {
    fn tag(self) -> &'static str {
        match self {
            Status::Ok => "[ OK ]",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
            Status::Skip => "[SKIP]",
        }
    }

    /// ANSI SGR colour of the tag.
    fn colour(self) -> &'static str {
        match self {
            Status::Ok => "32",
            Status::Warn => "33",
            Status::Fail => "1;31",
            Status::Skip => "2",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warning",
            Status::Fail => "failed",
            Status::Skip => "skipped",
        }
    }
}

/// One stage of the walk.
#[derive(Debug, Clone)]
pub struct Step {
    /// `route`, `resolve`, `connect`, `banner`, `ehlo`, `starttls`,
    /// `ehlo-tls`, `auth`, `mail`, `rcpt`, `data`, `quit`.
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// One line: what happened.
    pub summary: String,
    /// More lines: what was looked at and found.
    pub detail: Vec<String>,
    /// The server's reply, exactly (one line), when it matters.
    pub reply: Option<String>,
    /// What the reply or failure means and how to fix it.
    pub explanation: Option<String>,
    /// Facts for scripts (TLS, certificates, token claims).
    pub data: Option<Value>,
}

impl Step {
    /// A step with `status` and `summary`.
    pub fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Step {
        Step {
            name,
            status,
            summary: summary.into(),
            detail: Vec::new(),
            reply: None,
            explanation: None,
            data: None,
        }
    }

    /// An [`Status::Ok`] step.
    pub fn ok(name: &'static str, summary: impl Into<String>) -> Step {
        Step::new(name, Status::Ok, summary)
    }

    /// A [`Status::Fail`] step.
    pub fn fail(name: &'static str, summary: impl Into<String>) -> Step {
        Step::new(name, Status::Fail, summary)
    }

    /// Adds a detail line.
    pub fn line(mut self, l: impl Into<String>) -> Step {
        self.detail.push(l.into());
        self
    }

    /// Sets the server's reply.
    pub fn reply(mut self, r: impl Into<String>) -> Step {
        self.reply = Some(r.into());
        self
    }

    /// Sets the explanation.
    pub fn explain(mut self, e: impl Into<String>) -> Step {
        self.explanation = Some(e.into());
        self
    }

    /// Sets the facts for scripts.
    pub fn data(mut self, d: Value) -> Step {
        self.data = Some(d);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "ok": self.status != Status::Fail,
            "status": self.status.word(),
            "summary": self.summary,
            "detail": self.detail,
            "reply": self.reply,
            "explanation": self.explanation,
            "data": self.data,
        })
    }
}

/// The whole walk.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Envelope sender as given or chosen.
    pub sender: String,
    /// Recipient.
    pub recipient: String,
    /// `transport:nexthop` of the route, once known.
    pub route: Option<String>,
    /// `--send` was given.
    pub send: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// Width the explanation is wrapped to on a terminal.
const WIDTH: usize = 100;
/// Where detail lines start (after the tag and the step name).
const INDENT: usize = 17;

impl Report {
    /// Adds a step.
    pub fn push(&mut self, s: Step) {
        self.steps.push(s);
    }

    /// True when no step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.status != Status::Fail)
    }

    /// The first failed step.
    pub fn failed(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    /// The exit status: 0 when every step passed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.passed() { 0 } else { 1 }
    }

    /// One JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.passed(),
            "sender": self.sender,
            "recipient": self.recipient,
            "route": self.route,
            "send": self.send,
            "failed_step": self.failed().map(|s| s.name),
            "steps": self.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
        })
    }

    /// The terminal text; `colour` adds ANSI colours to the status tags.
    pub fn render(&self, colour: bool) -> String {
        let paint = |status: Status, text: &str| {
            if colour {
                format!("\x1b[{}m{text}\x1b[0m", status.colour())
            } else {
                text.to_string()
            }
        };
        let mut out = format!(
            "postern diagnose: from <{}> to <{}>{}\n\n",
            self.sender,
            self.recipient,
            self.route
                .as_deref()
                .map(|r| format!(" via {r}"))
                .unwrap_or_default()
        );
        let pad = " ".repeat(INDENT);
        for s in &self.steps {
            out.push_str(&format!(
                "{} {:<9} {}\n",
                paint(s.status, s.status.tag()),
                s.name,
                s.summary
            ));
            for l in &s.detail {
                // Long lines wrap, continued two columns further in.
                let body = l.trim_start();
                let lead = " ".repeat(l.len() - body.len());
                for (i, w) in wrap(body, WIDTH - INDENT - lead.len() - 2)
                    .into_iter()
                    .enumerate()
                {
                    let more = if i == 0 { "" } else { "  " };
                    out.push_str(&format!("{pad}{lead}{more}{w}\n"));
                }
            }
            if let Some(r) = &s.reply {
                out.push_str(&format!("{pad}server said: {r}\n"));
            }
            if let Some(e) = &s.explanation {
                let label = if s.status == Status::Fail {
                    "fix: "
                } else {
                    "note: "
                };
                for (i, l) in wrap(e, WIDTH - INDENT - label.len())
                    .into_iter()
                    .enumerate()
                {
                    let lead = if i == 0 {
                        label.to_string()
                    } else {
                        " ".repeat(label.len())
                    };
                    out.push_str(&format!("{pad}{lead}{l}\n"));
                }
            }
        }
        out.push('\n');
        match self.failed() {
            None => out.push_str(&format!(
                "{} every step passed\n",
                paint(Status::Ok, "postern diagnose:")
            )),
            Some(s) => out.push_str(&format!(
                "{} failed at {}: {}\n",
                paint(Status::Fail, "postern diagnose:"),
                s.name,
                s.summary
            )),
        }
        out
    }
}

/// Splits `text` into lines of at most `width` characters at blanks
/// (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + w.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// True when stdout is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub fn use_colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    // SAFETY: isatty only inspects the descriptor.
    !no_color && unsafe { libc::isatty(1) } == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report {
            sender: "a@b.test".into(),
            recipient: "c@d.test".into(),
            route: Some("smtp:[smtp.b.test]:587".into()),
            send: false,
            steps: Vec::new(),
        };
        r.push(
            Step::ok("connect", "connected")
                .line("to x")
                .line(format!("  long: {}", "item, ".repeat(30))),
        );
        r.push(
            Step::fail("auth", "LOGIN refused")
                .reply("535 5.7.3 Authentication unsuccessful")
                .explain("word ".repeat(40)),
        );
        r.push(Step::new("data", Status::Skip, "not sent"));
        r
    }

    #[test]
    fn terminal_text_and_exit_status() {
        let r = sample();
        assert_eq!(r.exit_code(), 1);
        let t = r.render(false);
        assert!(t.starts_with(
            "postern diagnose: from <a@b.test> to <c@d.test> via smtp:[smtp.b.test]:587\n"
        ));
        assert!(t.contains("[ OK ] connect   connected\n                 to x\n"));
        assert!(t.contains(
            "[FAIL] auth      LOGIN refused\n                 server said: 535 5.7.3 Authentication unsuccessful\n                 fix: word word"
        ));
        assert!(t.lines().all(|l| l.chars().count() <= WIDTH), "{t}");
        assert!(t.contains("\n                   long: item, item,"), "{t}");
        assert!(t.contains("\n                     item, item,"), "{t}");
        assert!(t.ends_with("postern diagnose: failed at auth: LOGIN refused\n"));
        assert!(!t.contains('\x1b'));
        let c = r.render(true);
        assert!(c.contains("\x1b[1;31m[FAIL]\x1b[0m auth"));
    }

    #[test]
    fn json_document() {
        let v = sample().to_json();
        assert_eq!(v["ok"], false);
        assert_eq!(v["failed_step"], "auth");
        assert_eq!(v["steps"][1]["ok"], false);
        assert_eq!(
            v["steps"][1]["reply"],
            "535 5.7.3 Authentication unsuccessful"
        );
        assert_eq!(v["steps"][2]["status"], "skipped");
        assert_eq!(v["steps"][2]["ok"], true);
        assert_eq!(v["steps"][0]["detail"][0], "to x");
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("https://aka.ms/very-long-url x", 5).len(), 2);
        assert!(wrap("  ", 5).is_empty());
    }
}

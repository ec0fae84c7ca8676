//! master.cf: one service per logical line,
//! `service type private unpriv chroot wakeup maxproc command [args]`, with
//! Postfix's rules (comments, continuation lines that start with white
//! space, `-` for a column's default, `-o name=value` and
//! `-o { name = value with spaces }` overrides).
//!
//! [`MasterCf::parse`] reports every bad line; [`Service::render`] prints an
//! entry as `postconf -M` does.

use crate::error::{Error, Origin};
use crate::maincf::valid_name;
use crate::tables::{logical_lines, strip_group, tokens};
use std::fmt;
use std::path::{Path, PathBuf};

/// The transport of a service (second column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// A TCP listener: `port`, `host:port` or `[address]:port`.
    Inet,
    /// A UNIX-domain stream socket.
    Unix,
    /// A UNIX-domain datagram socket (`unix-dgram`).
    UnixDgram,
    /// A named pipe.
    Fifo,
    /// A UNIX-domain socket receiving file descriptors (postscreen-style).
    Pass,
}

impl ServiceType {
    /// Every type, in the order errors list them.
    pub const ALL: [ServiceType; 5] = [
        ServiceType::Inet,
        ServiceType::Unix,
        ServiceType::UnixDgram,
        ServiceType::Fifo,
        ServiceType::Pass,
    ];

    /// The master.cf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }

    /// Parses the master.cf spelling (case-sensitive, as Postfix).
    pub fn parse(s: &str) -> Option<ServiceType> {
        ServiceType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Columns 3 to 7 exactly as written (`-` included), for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawColumns {
    /// private
    pub private: String,
    /// unpriv
    pub unpriv: String,
    /// chroot
    pub chroot: String,
    /// wakeup (with its `?`)
    pub wakeup: String,
    /// maxproc
    pub maxproc: String,
}

/// One master.cf entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Service name: `smtp`, `127.0.0.1:2525`, `[::1]:25`, `pickup`...
    pub name: String,
    /// Transport type.
    pub kind: ServiceType,
    /// Private to the mail system (default y; inet services must say n).
    pub private: bool,
    /// Runs with the mail_owner's privileges (default y).
    pub unpriv: bool,
    /// Runs chrooted to the queue directory (default n).
    pub chroot: bool,
    /// Wake-up interval in seconds (0: none).
    pub wakeup: u32,
    /// The wake-up value ended in `?`: wake the service only after it was used.
    pub wakeup_if_used: bool,
    /// Process limit; `None` (`-`) means `default_process_limit`, 0 no limit.
    pub maxproc: Option<u32>,
    /// The program, relative to daemon_directory.
    pub command: String,
    /// Arguments after the command other than `-o` overrides, `{ }` removed.
    pub args: Vec<String>,
    /// `-o name=value` overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// 1-based line where the entry starts.
    pub line: usize,
    /// Columns 3 to 7 as written.
    pub raw: RawColumns,
}

/// Column where postconf -M starts each of the first eight fields.
const COLUMN_GOAL: [usize; 8] = [0, 11, 17, 25, 33, 41, 49, 57];
/// Line length postconf -Mf folds at, and the indent of folded lines.
const LINE_LIMIT: usize = 80;
const INDENT: usize = 4;
const BLANKS: &[char] = &[' ', '\t', '\r', '\n', '\x0b', '\x0c'];

impl Service {
    /// The entry on one line, as `postconf -M` prints it: the eight
    /// columns aligned, then the arguments; arguments and `-o` values with
    /// white space in `{ }`. `-o` options come after other options.
    pub fn render(&self) -> String {
        self.render_with(false)
    }

    /// The entry as `postconf -Mf` prints it: each `-o` on its own line and
    /// long lines folded at 80 columns with a 4-space indent.
    pub fn render_folded(&self) -> String {
        self.render_with(true)
    }

    fn render_with(&self, fold: bool) -> String {
        let fields = [
            self.name.as_str(),
            self.kind.as_str(),
            &self.raw.private,
            &self.raw.unpriv,
            &self.raw.chroot,
            &self.raw.wakeup,
            &self.raw.maxproc,
            &self.command,
        ];
        let mut out = String::new();
        let mut len = 0;
        for (f, goal) in fields.iter().zip(COLUMN_GOAL) {
            if len > 0 {
                loop {
                    out.push(' ');
                    len += 1;
                    if len >= goal {
                        break;
                    }
                }
            }
            out.push_str(f);
            len += f.chars().count();
        }
        let blank = |s: &str| s.contains(BLANKS);
        // Options, then -o overrides, then the other arguments. Options are
        // the leading arguments that read back as options: an argument with
        // blanks came from `{ }` (which ends the options) and one with an
        // `o` would read back as `-o`; the first other argument is braced
        // when it starts with `-`, so the options end there again. (Printing
        // such arguments bare made postconf -M output read back as other
        // arguments and overrides; found by fuzzing.)
        let split = self
            .args
            .iter()
            .position(|a| !a.starts_with('-') || a == "--" || a[1..].contains('o') || blank(a))
            .unwrap_or(self.args.len());
        let mut items: Vec<(String, Option<String>)> = self.args[..split]
            .iter()
            .map(|a| (a.clone(), None))
            .collect();
        items.extend(
            self.overrides
                .iter()
                .map(|(n, v)| ("-o".to_string(), Some(format!("{n}={v}")))),
        );
        items.extend(self.args[split..].iter().map(|a| (a.clone(), None)));
        for (n, (arg, value)) in items.iter().enumerate() {
            let is_option = n < split + self.overrides.len();
            let ends_options = n == split + self.overrides.len();
            let braced = |s: &str| {
                if blank(s)
                    || (!is_option && s.is_empty())
                    || (ends_options && s.starts_with('-') && s != "--")
                {
                    format!("{{{s}}}")
                } else {
                    s.to_string()
                }
            };
            let text = match value {
                Some(v) => format!("{arg} {}", braced(v)),
                None if is_option => arg.clone(),
                None => braced(arg),
            };
            if value.is_some() {
                len = LINE_LIMIT;
            }
            let text_len = text.chars().count();
            if !fold || len + 1 + text_len < LINE_LIMIT {
                out.push(' ');
                len += 1;
            } else {
                out.push('\n');
                out.push_str(&" ".repeat(INDENT));
                len = INDENT;
            }
            out.push_str(&text);
            len += text_len;
            if value.is_some() {
                len = LINE_LIMIT;
            }
        }
        out
    }

    /// For an inet service, the host to listen on (`None`: all of
    /// `inet_interfaces`) and the port or service name.
    pub fn inet_endpoint(&self) -> Option<(Option<String>, String)> {
        if self.kind != ServiceType::Inet {
            return None;
        }
        parse_inet(&self.name).ok()
    }

    /// Identity for duplicate detection: inet names compare by host and port.
    fn identity(&self) -> (ServiceType, String) {
        let name = match self.inet_endpoint() {
            Some((host, port)) => {
                let port = crate::nexthop::service_port(&port).map_or(port, |p| p.to_string());
                format!("{}|{port}", host.unwrap_or_default().to_ascii_lowercase())
            }
            None => self.name.clone(),
        };
        (self.kind, name)
    }
}

/// Splits an inet service name into host and port (Postfix host_port()).
fn parse_inet(name: &str) -> Result<(Option<String>, String), String> {
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or("missing \"]\"")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "",
            None => return Err("garbage after \"]\"".into()),
        };
        let (ipv6, host) = match inner.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("ipv6:") => (true, &inner[5..]),
            _ => (false, inner),
        };
        if ipv6 && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("malformed IPv6 address".into());
        }
        (Some(host), port)
    } else {
        match name.rsplit_once(':') {
            Some((h, p)) => ((!h.is_empty()).then_some(h), p),
            None => (None, name),
        }
    };
    if port.is_empty() {
        return Err("missing port or service name".into());
    }
    if let Some(h) = host {
        let hostname = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !hostname && h.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "\"{h}\" is not a valid host name or network address"
            ));
        }
    }
    if port.starts_with(|c: char| c.is_ascii_digit()) {
        if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
            return Err(format!("bad port \"{port}\" (expected 1 to 65535)"));
        }
    } else if !port
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("bad service name \"{port}\""));
    }
    Ok((host.map(str::to_string), port.to_string()))
}

/// A parsed master.cf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterCf {
    /// The file that was read.
    pub path: PathBuf,
    /// Entries in file order.
    pub services: Vec<Service>,
}

impl MasterCf {
    /// Reads and parses a master.cf file.
    ///
    /// # Errors
    /// I/O errors, and every bad entry.
    pub fn load(path: &Path) -> Result<MasterCf, Vec<Error>> {
        let text = std::fs::read(path).map_err(|e| vec![Error::io(path, e)])?;
        MasterCf::parse(&String::from_utf8_lossy(&text), path)
    }

    /// Parses master.cf text; `path` is used in error messages.
    ///
    /// # Errors
    /// Every problem of every entry, each with file and line, and
    /// duplicate service name/type pairs.
    pub fn parse(text: &str, path: &Path) -> Result<MasterCf, Vec<Error>> {
        let (lines, stray) = logical_lines(text);
        let origin = |line| Origin::File {
            path: path.to_path_buf(),
            line,
        };
        let mut errors: Vec<Error> = stray
            .into_iter()
            .map(|line| Error::Syntax {
                origin: origin(line),
                message: "line starts with white space but does not continue a service entry \
                          (only continuation lines may be indented)"
                    .into(),
            })
            .collect();
        let mut services: Vec<Service> = Vec::new();
        for l in lines {
            match parse_entry(&l.text, l.line) {
                Ok(s) => {
                    if let Some(prev) = services.iter().find(|p| p.identity() == s.identity()) {
                        errors.push(Error::Syntax {
                            origin: origin(l.line),
                            message: format!(
                                "duplicate service \"{} {}\" (first defined at line {})",
                                s.name, s.kind, prev.line
                            ),
                        });
                    } else {
                        services.push(s);
                    }
                }
                Err(msgs) => errors.extend(msgs.into_iter().map(|message| Error::Syntax {
                    origin: origin(l.line),
                    message,
                })),
            }
        }
        if errors.is_empty() {
            Ok(MasterCf {
                path: path.to_path_buf(),
                services,
            })
        } else {
            Err(errors)
        }
    }

    /// The entry for `name` and `kind`.
    pub fn find(&self, name: &str, kind: ServiceType) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name && s.kind == kind)
    }

    /// `postconf -M name/type`: the entry on one line, if it exists.
    pub fn render_entry(&self, name: &str, kind: ServiceType) -> Option<String> {
        self.find(name, kind).map(Service::render)
    }

    /// `postconf -M`: every entry, one per line.
    pub fn render(&self) -> String {
        self.services.iter().map(|s| s.render() + "\n").collect()
    }

    /// A service's `-o` overrides with their origins, as [`crate::load`] takes them.
    pub fn overrides(&self, service: &Service) -> Vec<(String, String, Origin)> {
        service
            .overrides
            .iter()
            .map(|(n, v)| {
                let origin = Origin::Override {
                    path: self.path.clone(),
                    line: service.line,
                    service: service.name.clone(),
                };
                (n.clone(), v.clone(), origin)
            })
            .collect()
    }
}

/// Parses one logical line; returns every problem found.
fn parse_entry(text: &str, line: usize) -> Result<Service, Vec<String>> {
    let toks = tokens(text, BLANKS);
    if toks.len() < 8 {
        return Err(vec![format!(
            "bad field count: {} fields, expected at least 8 (service type private unpriv chroot wakeup maxproc command)",
            toks.len()
        )]);
    }
    let mut errs = Vec::new();
    let name = toks[0];
    let kind = ServiceType::parse(toks[1]).unwrap_or_else(|| {
        errs.push(format!(
            "invalid type field \"{}\": expected inet, unix, unix-dgram, fifo or pass",
            toks[1]
        ));
        ServiceType::Unix
    });
    let mut flag = |col: &str, v: &str, default: bool| match v {
        "y" => true,
        "n" => false,
        "-" => default,
        _ => {
            errs.push(format!(
                "invalid {col} field \"{v}\": expected y, n or - (default {})",
                if default { "y" } else { "n" }
            ));
            default
        }
    };
    let private = flag("private", toks[2], true);
    let unpriv = flag("unpriv", toks[3], true);
    let chroot = flag("chroot", toks[4], false);
    let (wakeup, wakeup_if_used) = match toks[5] {
        "-" => (0, false),
        w => {
            let (digits, cond) = match w.strip_suffix('?') {
                Some(d) => (d, true),
                None => (w, false),
            };
            match digits.parse::<u32>() {
                Ok(n) if digits.bytes().all(|b| b.is_ascii_digit()) => (n, cond && n > 0),
                _ => {
                    errs.push(format!(
                        "invalid wakeup field \"{w}\": expected seconds (0 for none), optionally followed by ?, or -"
                    ));
                    (0, false)
                }
            }
        }
    };
    let maxproc = match toks[6] {
        "-" => None,
        m => match m.parse::<u32>() {
            Ok(n) if m.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                errs.push(format!(
                    "invalid maxproc field \"{m}\": expected a number (0 for no limit) or - (default_process_limit)"
                ));
                None
            }
        },
    };
    if toks[7] == "-" {
        errs.push("command field has no default value; name the program, e.g. smtpd".into());
    }
    if kind == ServiceType::Inet {
        if private {
            errs.push(format!(
                "inet service cannot be private: set the private column to n (it is \"{}\")",
                toks[2]
            ));
        }
        if let Err(m) = parse_inet(name) {
            errs.push(format!(
                "bad inet service name \"{name}\": {m}; expected port, host:port or [address]:port"
            ));
        }
    }
    let (args, overrides) = daemon_args(&toks[8..], &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Service {
        name: name.to_string(),
        kind,
        private,
        unpriv,
        chroot,
        wakeup,
        wakeup_if_used,
        maxproc,
        command: toks[7].to_string(),
        args,
        overrides,
        line,
        raw: RawColumns {
            private: toks[2].into(),
            unpriv: toks[3].into(),
            chroot: toks[4].into(),
            wakeup: toks[5].into(),
            maxproc: toks[6].into(),
        },
    })
}

/// Splits the arguments after the command into other arguments and `-o`
/// overrides, as the daemons' getopt() sees them: options end at the first
/// argument that does not start with `-`, or at `--`.
fn daemon_args(toks: &[&str], errs: &mut Vec<String>) -> (Vec<String>, Vec<(String, String)>) {
    let mut args = Vec::new();
    let mut overrides = Vec::new();
    let mut in_options = true;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        i += 1;
        if !in_options || !t.starts_with('-') || t == "--" {
            in_options = false;
            if t.starts_with('{') {
                match strip_group(t) {
                    Ok(inner) => args.push(inner.to_string()),
                    Err(m) => errs.push(m),
                }
            } else {
                args.push(t.to_string());
            }
            continue;
        }
        // getopt(): in "-vo..." the 'o' takes the rest, or the next argument.
        let Some(o) = t[1..].find('o').map(|p| p + 1) else {
            args.push(t.to_string());
            continue;
        };
        if o > 1 {
            args.push(t[..o].to_string());
        }
        let value = if o + 1 < t.len() {
            &t[o + 1..]
        } else if let Some(v) = toks.get(i) {
            i += 1;
            v
        } else {
            errs.push("-o at the end of the line: expected -o name=value".into());
            break;
        };
        let nameval = if value.starts_with('{') {
            match strip_group(value) {
                Ok(inner) => inner,
                Err(m) => {
                    errs.push(m);
                    continue;
                }
            }
        } else {
            value
        };
        let Some((name, val)) = nameval.split_once('=') else {
            let hint = if toks.get(i).is_some_and(|n| n.starts_with('=')) {
                format!(" (to put spaces around '=', write -o {{ {value} = ... }})")
            } else {
                String::new()
            };
            errs.push(format!(
                "invalid \"-o {value}\": missing '=', expected -o name=value{hint}"
            ));
            continue;
        };
        let name = name.trim();
        if !valid_name(name) {
            errs.push(format!(
                "invalid \"-o {nameval}\": bad parameter name \"{name}\" (letters, digits and '_' only)"
            ));
            continue;
        }
        overrides.push((name.to_string(), val.trim().to_string()));
    }
    (args, overrides)
}

#[cfg(test)]
mod tests;

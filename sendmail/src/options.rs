//! Postfix sendmail's command line: getopt with the option letters
//! `A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx`, plus `-q` alone.

use std::path::PathBuf;

/// What the command is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Read a message and queue it (default, -bm).
    Enqueue,
    /// List the queue (-bp, mailq).
    Mailq,
    /// Check the alias database (-bi, -I, newaliases).
    Newaliases,
    /// SMTP on standard input and output (-bs).
    Smtp,
    /// Deliver deferred mail now (-q, -qR, -qI).
    Flush {
        /// `-qRsite`
        site: Option<String>,
        /// `-qIid`
        id: Option<String>,
    },
    /// Daemon mode (-bd): not how postern starts.
    Daemon,
    /// Options that Postfix accepts and ignores (-bh, -bH, -qinterval).
    Ignore,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The mode.
    pub mode: Mode,
    /// -C: configuration file or directory.
    pub config: Option<PathBuf>,
    /// -f / -r: envelope sender.
    pub sender: Option<String>,
    /// -F: full name for an added From: header.
    pub full_name: Option<String>,
    /// -t: extract recipients from the headers.
    pub extract: bool,
    /// True unless -i / -oi: a line with a single dot ends the message.
    pub dot_ends: bool,
    /// -N: DSN NOTIFY.
    pub notify: Option<String>,
    /// -R: DSN RET.
    pub ret: Option<String>,
    /// -V: DSN ENVID.
    pub envid: Option<String>,
    /// -B: body type.
    pub body: Option<String>,
    /// -v: verbose.
    pub verbose: bool,
    /// -bv: verify only (not supported: reported as such).
    pub verify: bool,
    /// Recipients on the command line.
    pub recipients: Vec<String>,
    /// Warnings about ignored or bad option values.
    pub warnings: Vec<String>,
}

const WITH_ARG: &str = "ABCFLNORVXbefhopqr";
const NO_ARG: &str = "GIUcimntvx";

/// Parses the arguments (without argv[0]); `mode` is the mode implied by
/// the program name (mailq, newaliases).
///
/// # Errors
/// A usage message (exit status 64).
pub fn parse(argv: &[String], mode: Mode) -> Result<Options, String> {
    let mut o = Options {
        mode,
        config: None,
        sender: None,
        full_name: None,
        extract: false,
        dot_ends: true,
        notify: None,
        ret: None,
        envid: None,
        body: None,
        verbose: false,
        verify: false,
        recipients: Vec::new(),
        warnings: Vec::new(),
    };
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        if arg == "-q" {
            o.mode = Mode::Flush {
                site: None,
                id: None,
            };
            i += 1;
            continue;
        }
        let chars: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            if WITH_ARG.contains(c) {
                let rest: String = chars[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    argv.get(i)
                        .cloned()
                        .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                };
                apply_with_arg(&mut o, c, &val)?;
                break;
            } else if NO_ARG.contains(c) {
                match c {
                    't' => o.extract = true,
                    'i' => o.dot_ends = false,
                    'I' => o.mode = Mode::Newaliases,
                    'v' => o.verbose = true,
                    'n' => return Err("-n option not supported".into()),
                    _ => {}
                }
                j += 1;
            } else {
                return Err(format!("invalid option -- '{c}'"));
            }
        }
        i += 1;
    }
    o.recipients.extend(argv[i..].iter().cloned());
    if o.extract && o.mode != Mode::Enqueue {
        return Err("-t can be used only in delivery mode".into());
    }
    Ok(o)
}

fn apply_with_arg(o: &mut Options, c: char, val: &str) -> Result<(), String> {
    match c {
        'B' => match val {
            "8BITMIME" | "7BIT" => o.body = Some(val.to_string()),
            _ => return Err("-B option needs 8BITMIME or 7BIT".into()),
        },
        'C' => o.config = Some(PathBuf::from(val)),
        'F' => o.full_name = Some(val.to_string()),
        'N' => {
            let v = val.to_ascii_uppercase();
            let ok = v == "NEVER"
                || v.split(',')
                    .all(|p| matches!(p.trim(), "SUCCESS" | "FAILURE" | "DELAY"));
            if ok {
                o.notify = Some(v.split(',').map(str::trim).collect::<Vec<_>>().join(","));
            } else {
                o.warnings
                    .push(format!("bad -N option value: '{val}' -- ignored"));
            }
        }
        'R' => match val.to_ascii_lowercase().as_str() {
            "full" => o.ret = Some("FULL".into()),
            "hdrs" => o.ret = Some("HDRS".into()),
            _ => o.warnings.push("bad -R option value -- ignored".into()),
        },
        'V' => {
            if val.len() > 100
                || !val
                    .chars()
                    .all(|ch| (' '..='~').contains(&ch) || ch == '\t')
            {
                o.warnings.push("bad -V option value -- ignored".into());
            } else {
                o.envid = Some(val.to_string());
            }
        }
        'X' => {
            return Err(format!(
                "unsupported: -X{}",
                val.chars().next().unwrap_or(' ')
            ));
        }
        'b' => match val.chars().next() {
            Some('d') | Some('l') => o.mode = Mode::Daemon,
            Some('h') | Some('H') => o.mode = Mode::Ignore,
            Some('i') => o.mode = Mode::Newaliases,
            Some('m') => o.mode = Mode::Enqueue,
            Some('p') => o.mode = Mode::Mailq,
            Some('s') => o.mode = Mode::Smtp,
            Some('v') => o.verify = true,
            _ => return Err(format!("unsupported: -b{val}")),
        },
        'f' | 'r' => o.sender = Some(val.to_string()),
        'o' => {
            if val.starts_with('i') {
                o.dot_ends = false;
            } else if val == "A" {
                return Err("-oA requires pathname".into());
            }
        }
        'q' => {
            if let Some(site) = val.strip_prefix('R') {
                if site.is_empty() {
                    return Err("specify: -qRsitename".into());
                }
                o.mode = Mode::Flush {
                    site: Some(site.to_string()),
                    id: None,
                };
            } else if let Some(id) = val.strip_prefix('I') {
                if id.is_empty() {
                    return Err("specify: -qIqueueid".into());
                }
                o.mode = Mode::Flush {
                    site: None,
                    id: Some(id.to_string()),
                };
            } else if val.starts_with(|ch: char| ch.is_ascii_digit()) {
                o.mode = Mode::Ignore;
            } else {
                return Err(format!(
                    "-q{} is not implemented",
                    val.chars().next().unwrap_or(' ')
                ));
            }
        }
        _ => {} // -A -L -O -e -h -p: accepted and ignored, as Postfix does
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        parse(
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Mode::Enqueue,
        )
    }

    #[test]
    fn common_command_lines() {
        let o = p(&["-t", "admin@contoso.com"]).unwrap();
        assert!(o.extract && o.dot_ends);
        assert_eq!(o.recipients, vec!["admin@contoso.com"]);
        let o = p(&["-oi", "-f", "cron@host", "-F", "Cron Daemon", "a@b", "c@d"]).unwrap();
        assert!(!o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("cron@host"));
        assert_eq!(o.full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(o.recipients.len(), 2);
        let o = p(&[
            "-ti",
            "-fme@x",
            "-NSUCCESS,FAILURE",
            "-R",
            "hdrs",
            "-V",
            "env1",
        ])
        .unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("me@x"));
        assert_eq!(o.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(o.ret.as_deref(), Some("HDRS"));
        assert_eq!(o.envid.as_deref(), Some("env1"));
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::Mailq);
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(
            p(&["-q"]).unwrap().mode,
            Mode::Flush {
                site: None,
                id: None
            }
        );
        assert_eq!(
            p(&["-qIABCDEF0123"]).unwrap().mode,
            Mode::Flush {
                site: None,
                id: Some("ABCDEF0123".into())
            }
        );
        assert_eq!(p(&["-q30m"]).unwrap().mode, Mode::Ignore);
        assert_eq!(
            p(&["-C", "/tmp/cf", "-oem", "-odb", "x@y"]).unwrap().config,
            Some(PathBuf::from("/tmp/cf"))
        );
        assert_eq!(
            p(&["-B", "8BITMIME", "--", "-weird@x"]).unwrap().recipients,
            vec!["-weird@x"]
        );
    }

    #[test]
    fn usage_errors() {
        assert!(p(&["-f"]).is_err());
        assert!(p(&["-Z"]).is_err());
        assert!(p(&["-B", "9BIT"]).is_err());
        assert!(p(&["-bp", "-t"]).is_err());
        assert!(p(&["-bz"]).is_err());
        assert!(!p(&["-N", "bogus"]).unwrap().warnings.is_empty());
    }
}

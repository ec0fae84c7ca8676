//! POSIX getopt for the Postfix-style commands: single-letter options that
//! can be grouped (`-vv`), values attached or separate (`-cDIR`, `-c DIR`),
//! `--` ends options, the first non-option ends options.

/// One parsed option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// A flag or an option with its value.
    Flag(char, Option<String>),
}

/// Parses `args` against `spec` (letters; a letter followed by ':' takes a
/// value). Returns the options and the remaining operands.
///
/// # Errors
/// An unknown option or a missing value, as a usage message.
pub fn parse(args: &[String], spec: &str) -> Result<(Vec<Opt>, Vec<String>), String> {
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            let pos = spec
                .find(c)
                .ok_or_else(|| format!("invalid option -- '{c}'"))?;
            let takes = spec[pos + c.len_utf8()..].starts_with(':');
            if takes {
                let rest: String = chars[j + 1..].iter().collect();
                let v = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| format!("option requires an argument -- '{c}'"))?
                };
                opts.push(Opt::Flag(c, Some(v)));
                break;
            }
            opts.push(Opt::Flag(c, None));
            j += 1;
        }
        i += 1;
    }
    Ok((opts, args[i..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a: Vec<String> = ["-c", "/x", "-vv", "-dALL", "deferred", "-n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (o, rest) = parse(&a, "c:d:v").unwrap();
        assert_eq!(
            o,
            vec![
                Opt::Flag('c', Some("/x".into())),
                Opt::Flag('v', None),
                Opt::Flag('v', None),
                Opt::Flag('d', Some("ALL".into())),
            ]
        );
        assert_eq!(rest, vec!["deferred", "-n"]);
        assert!(parse(&["-z".into()], "c:").is_err());
        assert!(parse(&["-c".into()], "c:").is_err());
    }
}

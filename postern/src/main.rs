//! postern: the supervisor (`postern start|start-fg|stop|reload|status|flush|check`),
//! message tracking (`postern log`)
//! and Postfix's administrative commands, which are links to this program:
//! postqueue, postsuper, postconf, postcat, postmap, postalias. Each command
//! can also be run as `postern <command> ...`.

mod check;
mod control;
mod demo;
mod diagnose;
mod getopt;
mod listen;
mod master;
mod oauth2;
mod passwd;
mod postcat;
mod postconf;
mod postmap;
mod postqueue;
mod postsuper;
mod status;
mod tls;
mod track;

use std::path::Path;

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().cloned().unwrap_or_else(|| "postern".into());
    let mut prog = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postern".into());
    if prog == "postern"
        && let Some(sub) = args.get(1)
        && matches!(
            sub.as_str(),
            "postqueue" | "postsuper" | "postconf" | "postcat" | "postmap" | "postalias" | "mailq"
        )
    {
        prog = sub.clone();
        args.remove(0);
    }
    let rest = &args[1..];
    let code = match prog.as_str() {
        "postqueue" => postqueue::main(rest),
        "mailq" => postqueue::main(&["-p".to_string()]),
        "postsuper" => postsuper::main(rest),
        "postconf" => postconf::main(rest),
        "postcat" => postcat::main(rest),
        "postmap" => postmap::main(rest, false),
        "postalias" => postmap::main(rest, true),
        _ => control::main(rest),
    };
    std::process::exit(code);
}

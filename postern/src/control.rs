//! `postern [-c DIR] command`: start, start-fg, stop, reload, status,
//! flush, check, diagnose, log, demo, passwd, tls, oauth2.

use crate::master::{self, Master};
use queue::layout::Queue;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: postern [-c config_dir] start | start-fg | stop | reload | status [--json] | flush | check | diagnose [--from ADDR] [--to ADDR] [--send] [--json] [--relay NEXTHOP] | log [options] | demo [dir] | passwd add|delete|check USER | passwd list | tls new-cert [options] | oauth2 login USER | oauth2 token [--refresh] USER";

pub fn main(args: &[String]) -> i32 {
    let (opts, rest) = match crate::getopt::parse(args, "c:v") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("postern: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let mut dir: Option<PathBuf> = None;
    for crate::getopt::Opt::Flag(c, v) in opts {
        if c == 'c' {
            dir = v.map(PathBuf::from);
        }
    }
    let dir = conf::config_dir(dir.as_deref());
    let Some(cmd) = rest.first() else {
        eprintln!("postern: fatal: no command given\n{USAGE}");
        return 64;
    };
    // `postern -c DIR mailq`, `postern -c DIR postqueue -f`: the admin tools
    // with this configuration directory.
    let tool_args = |first: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["-c".into(), dir.display().to_string()];
        v.extend(first.iter().map(|s| s.to_string()));
        v.extend(rest[1..].iter().cloned());
        v
    };
    match cmd.as_str() {
        "mailq" => return crate::postqueue::main(&tool_args(&["-p"])),
        "postqueue" => return crate::postqueue::main(&tool_args(&[])),
        "postsuper" => return crate::postsuper::main(&tool_args(&[])),
        "postconf" => return crate::postconf::main(&tool_args(&[])),
        "postcat" => return crate::postcat::main(&tool_args(&[])),
        _ => {}
    }
    match cmd.as_str() {
        "start" => start(&dir, false),
        "start-fg" => start(&dir, true),
        "stop" => stop(&dir),
        "reload" => signal(
            &dir,
            nix::sys::signal::Signal::SIGHUP,
            "refreshing the postern mail system",
        ),
        "status" => match rest.get(1).map(String::as_str) {
            None => status(&dir),
            Some("--json") if rest.len() == 2 => crate::status::json(&dir),
            Some(_) => {
                eprintln!("postern: fatal: usage: postern status [--json]");
                64
            }
        },
        "flush" => flush(&dir),
        "check" => crate::check::run(&dir),
        "log" => crate::track::main(&dir, &rest[1..]),
        "diagnose" => crate::diagnose::main(&dir, &rest[1..]),
        "demo" => crate::demo::run(rest.get(1).map(PathBuf::from)),
        "passwd" => crate::passwd::main(&dir, &rest[1..]),
        "tls" => crate::tls::main(&dir, &rest[1..]),
        "oauth2" => crate::oauth2::main(&dir, &rest[1..]),
        "version" | "--version" => {
            println!("postern {}", env!("CARGO_PKG_VERSION"));
            0
        }
        other => {
            eprintln!("postern: fatal: unknown command: {other}\n{USAGE}");
            64
        }
    }
}

fn script_msg(cfg: Option<&conf::Config>, text: &str) {
    // Postfix's postfix-script prints these and logs them.
    eprintln!("postern/postern-script: {text}");
    if let Some(c) = cfg {
        queue::log::init(c, "master", queue::log::Options::default());
        queue::log::log_ident("postern-script", queue::log::Level::Info, text);
    }
}

fn load(dir: &std::path::Path) -> Option<conf::Config> {
    match conf::load(dir, &[]) {
        Ok(c) => Some(c),
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("postern: error: {e}");
            }
            eprintln!(
                "postern: fatal: fix the configuration errors above (postern check lists them)"
            );
            None
        }
    }
}

fn start(dir: &std::path::Path, foreground: bool) -> i32 {
    let Some(cfg) = load(dir) else { return 1 };
    let queue = Queue::new(&cfg.queue_directory);
    if let Some(pid) = master::running_pid(&queue) {
        eprintln!(
            "postern/postern-script: fatal: the postern mail system is already running (pid {pid})"
        );
        return 1;
    }
    if !foreground {
        script_msg(Some(&cfg), "starting the postern mail system");
    }
    let ready_pipe = if foreground {
        None
    } else {
        match master::daemonize() {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!("postern: fatal: cannot detach: {e}");
                return 1;
            }
        }
    };
    queue::log::init(
        &cfg,
        "master",
        queue::log::Options {
            stderr_name: None,
            verbose_stderr: false,
        },
    );
    let m = match Master::prepare(dir) {
        Ok(m) => m,
        Err(e) => {
            let text = format!("{e:#}");
            queue::log::log(queue::log::Level::Fatal, &text);
            match ready_pipe {
                Some(fd) => {
                    let mut f = std::fs::File::from(fd);
                    let _ = f.write_all(text.as_bytes());
                }
                None => eprintln!("postern: fatal: {text}"),
            }
            return 1;
        }
    };
    let result = m.run(move || {
        if let Some(fd) = ready_pipe {
            let mut f = std::fs::File::from(fd);
            let _ = f.write_all(b"ok");
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            queue::log::log(queue::log::Level::Fatal, &format!("{e:#}"));
            1
        }
    }
}

fn stop(dir: &std::path::Path) -> i32 {
    let Some(cfg) = load(dir) else { return 1 };
    let queue = Queue::new(&cfg.queue_directory);
    let Some(pid) = master::running_pid(&queue) else {
        eprintln!("postern/postern-script: fatal: the postern mail system is not running");
        return 1;
    };
    script_msg(Some(&cfg), "stopping the postern mail system");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if master::running_pid(&queue).is_none() {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("postern: warning: the supervisor (pid {pid}) did not stop within 60 seconds");
    1
}

fn signal(dir: &std::path::Path, sig: nix::sys::signal::Signal, text: &str) -> i32 {
    let Some(cfg) = load(dir) else { return 1 };
    let queue = Queue::new(&cfg.queue_directory);
    let Some(pid) = master::running_pid(&queue) else {
        eprintln!("postern/postern-script: fatal: the postern mail system is not running");
        return 1;
    };
    script_msg(Some(&cfg), text);
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("postern: fatal: cannot signal pid {pid}: {e}");
            1
        }
    }
}

fn status(dir: &std::path::Path) -> i32 {
    let Some(cfg) = load(dir) else { return 1 };
    let queue = Queue::new(&cfg.queue_directory);
    match master::running_pid(&queue) {
        Some(pid) => {
            eprintln!("postern/postern-script: the postern mail system is running: PID: {pid}");
            for (name, kind, cmd, p) in master::read_status(&queue) {
                println!(
                    "{name:<20} {kind:<6} {cmd:<10} {}",
                    if p == "-" {
                        "restarting".to_string()
                    } else {
                        format!("pid {p}")
                    }
                );
            }
            0
        }
        None => {
            eprintln!("postern/postern-script: the postern mail system is not running");
            3
        }
    }
}

fn flush(dir: &std::path::Path) -> i32 {
    let Some(cfg) = load(dir) else { return 1 };
    crate::postqueue::flush(&cfg, &[queue::wake::FLUSH])
}

//! Finding the built programs and running them with a time limit.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The directory holding the postern binaries: `$POSTERN_BIN_DIR`, else
/// the directory above the test executable's `deps/` (`target/debug`).
///
/// # Errors
/// The test executable's path is unknown.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("POSTERN_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locate the test executable")?;
    let mut dir = exe
        .parent()
        .context("the test executable has no directory")?
        .to_path_buf();
    // target/<profile>/deps (tests) or target/<profile>/examples.
    if dir.file_name() == Some(OsStr::new("deps"))
        || dir.file_name() == Some(OsStr::new("examples"))
    {
        dir.pop();
    }
    Ok(dir)
}

/// The binary that implements `program`, and the argv\[0\] to run it with:
/// mailq and newaliases are `sendmail`; postqueue, postsuper, postconf,
/// postcat and postmap are `postern`.
pub fn binary_for(program: &str) -> (&'static str, String) {
    let bin = match program {
        "mailq" | "newaliases" | "sendmail" => "sendmail",
        "postqueue" | "postsuper" | "postconf" | "postcat" | "postmap" | "postalias"
        | "postern" => "postern",
        "pickup" => "pickup",
        "qmgr" => "qmgr",
        "smtp" => "smtp",
        _ => "",
    };
    (bin, program.to_string())
}

/// The path of binary `name` in [`bin_dir`].
///
/// # Errors
/// It does not exist: the message says to build the programs.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "postern program {} not found; run `cargo build --bins` first (or set POSTERN_BIN_DIR to the directory holding the binaries)",
            path.display()
        );
    }
    Ok(path)
}

/// A [`Command`] for `program` (see [`binary_for`]).
///
/// # Errors
/// The binary is missing or `program` is unknown.
pub fn command(program: &str) -> Result<Command> {
    let (bin, argv0) = binary_for(program);
    if bin.is_empty() {
        bail!("unknown postern program {program}");
    }
    let mut cmd = Command::new(binary(bin)?);
    cmd.arg0(argv0);
    Ok(cmd)
}

/// What a finished command printed and returned.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// The exit code; `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `self` when the command exited 0.
    ///
    /// # Errors
    /// Any other exit; the message shows the output.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout:\n{}--- stderr:\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Describes `cmd` as a shell-like line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with `stdin` as its input, killing it after
/// `timeout`.
///
/// # Errors
/// It cannot be started, or it ran out of time.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let line = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("run {line}"))?;
    let pid = child.id() as libc::pid_t;
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut w), Some(data)) => {
            let data = data.to_vec();
            // A command may exit without reading all input: ignore EPIPE.
            Some(std::thread::spawn(move || {
                let _ = w.write_all(&data);
            }))
        }
        _ => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r.with_context(|| format!("wait for {line}"))?,
        Err(_) => {
            // SAFETY: kill(2) on our own child, which is not reaped yet
            // (the waiting thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().ok().and_then(Result::ok);
            let (o, e) = out
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default();
            bail!(
                "`{line}` did not finish within {timeout:?}; killed\n--- stdout:\n{o}--- stderr:\n{e}"
            );
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        command: line,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

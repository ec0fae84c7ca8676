//! `postern demo [DIR]`: a self-contained postern for a first look. It
//! writes a configuration under DIR (default ./postern-demo) with the queue
//! in DIR/spool, logs on the terminal, and delivers every message into the
//! Maildir DIR/Maildir, then runs in the foreground. No root, no smart host.

use std::path::{Path, PathBuf};

pub fn run(dir: Option<PathBuf>) -> i32 {
    let dir = dir.unwrap_or_else(|| PathBuf::from("postern-demo"));
    let dir = match std::path::absolute(&dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("postern: fatal: {}: {e}", dir.display());
            return 1;
        }
    };
    if let Err(e) = write_config(&dir) {
        eprintln!(
            "postern: fatal: cannot write the demo configuration in {}: {e}",
            dir.display()
        );
        return 1;
    }
    let etc = dir.join("etc");
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    eprintln!("postern demo: configuration in {}", etc.display());
    eprintln!(
        "postern demo: mail is delivered into {}/Maildir/new",
        dir.display()
    );
    eprintln!("postern demo: try, in another terminal:");
    eprintln!(
        "  printf 'Subject: hello\\n\\nIt works.\\n' | {}/sendmail -C {}/main.cf -t you@example.com",
        bin.display(),
        etc.display()
    );
    eprintln!(
        "  {}/postern -c {} mailq    # the queue",
        bin.display(),
        etc.display()
    );
    eprintln!(
        "  swaks --server 127.0.0.1:2525 --to you@example.com    # over SMTP, as a scanner would"
    );
    eprintln!("  ls {}/Maildir/new", dir.display());
    eprintln!("postern demo: press Ctrl-C to stop");
    crate::control::main(&["-c".into(), etc.display().to_string(), "start-fg".into()])
}

fn write_config(dir: &Path) -> std::io::Result<()> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::create_dir_all(dir.join("data"))?;
    // The daemons run as the current user; as root they must run as an
    // unprivileged account, which then needs to write the demo's folders.
    let root = nix::unistd::geteuid().is_root();
    let user = if root {
        if nix::unistd::User::from_name("postern")
            .ok()
            .flatten()
            .is_some()
        {
            "postern".to_string()
        } else {
            "nobody".to_string()
        }
    } else {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "nobody".into())
    };
    std::fs::create_dir_all(dir.join("Maildir"))?;
    if root {
        if let Ok(Some(u)) = nix::unistd::User::from_name(&user) {
            for d in [dir.join("data"), dir.join("Maildir")] {
                std::os::unix::fs::chown(&d, Some(u.uid.as_raw()), Some(u.gid.as_raw()))?;
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755))?;
    }
    let main_cf = etc.join("main.cf");
    if !main_cf.exists() {
        let mut text = String::new();
        text.push_str("# postern demo configuration, written by 'postern demo'.\n");
        text.push_str(
            "# Everything stays in this directory; every message lands in the Maildir.\n",
        );
        text.push_str(&format!("queue_directory = {}/spool\n", dir.display()));
        text.push_str(&format!("data_directory = {}/data\n", dir.display()));
        text.push_str("maillog_file = /dev/stderr\n");
        text.push_str(&format!("mail_owner = {user}\n"));
        text.push_str("inet_interfaces = loopback-only\n");
        text.push_str("alias_maps =\n");
        text.push_str(&format!(
            "default_transport = maildir:{}/Maildir\n",
            dir.display()
        ));
        text.push_str(&format!(
            "local_transport = maildir:{}/Maildir\n",
            dir.display()
        ));
        text.push_str(
            "minimal_backoff_time = 10s\nmaximal_backoff_time = 60s\nqueue_run_delay = 10s\n",
        );
        std::fs::write(&main_cf, text)?;
    }
    let master_cf = etc.join("master.cf");
    if !master_cf.exists() {
        std::fs::write(&master_cf, DEMO_MASTER_CF)?;
    }
    Ok(())
}

const DEMO_MASTER_CF: &str = "\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525 inet n   -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
qmgr      unix  n       -       n       300     1       qmgr
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
maildir   unix  -       -       n       -       -       smtp
";

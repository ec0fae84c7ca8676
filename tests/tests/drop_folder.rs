//! Issue 5, part 5: the drop folder (the IIS Pickup folder's replacement).
//! A file written into `drop_directory` is sent as `sendmail -t` would send
//! it and removed; what cannot be sent goes to badmail with a reason;
//! half-written, hostile and malformed files never become mail and never
//! stop the others.

use postern_tests::fake::FakeSmartHost;
use postern_tests::harness::{TestEnv, re, running_as_root};
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A test installation with a drop folder at `<root>/mailroot/pickup` and
/// the default badmail beside it (`<root>/mailroot/badmail`, made here
/// because the daemons may not write into `mailroot/`).
struct Folder {
    env: TestEnv,
    fake: FakeSmartHost,
    dir: PathBuf,
    badmail: PathBuf,
}

impl Folder {
    fn new() -> Folder {
        let mut env = TestEnv::new().unwrap();
        let fake = env.office365_fake().unwrap();
        let dir = env.maildir("mailroot/pickup").unwrap();
        let badmail = env.maildir("mailroot/badmail").unwrap();
        env.set_many(&[
            ("drop_directory", &dir.display().to_string()),
            ("drop_settle_time", "1s"),
        ])
        .unwrap();
        Folder {
            env,
            fake,
            dir,
            badmail,
        }
    }

    /// Writes a file the way a device without rename does: in place.
    fn put(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn reason(&self, name: &str) -> String {
        std::fs::read_to_string(self.badmail.join(format!("{name}.reason"))).unwrap_or_else(|e| {
            panic!(
                "no reason file for {name} ({e}); log:\n{}",
                self.env.log_text()
            )
        })
    }

    fn wait_gone(&self, path: &Path) {
        let deadline = Instant::now() + WAIT;
        while path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} was not removed; log:\n{}",
                path.display(),
                self.env.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn good_files_are_sent_as_sendmail_t_would_and_removed() {
    let mut d = Folder::new();
    d.env.start().unwrap();
    d.env.wait_log("watching drop_directory", WAIT).unwrap();
    // A scanner's file: LF line ends, a Bcc, an unqualified Cc.
    let scan = d.put(
        "scan0001.eml",
        b"From: Scanner <scanner@contoso.test>\n\
To: Bob <bob@contoso.test>\n\
Cc: ops\n\
Bcc: audit@contoso.test\n\
Subject: Scan from the 2nd floor\n\
\n\
Your scan is attached.\n",
    );
    let msgs = d.fake.wait_messages(1, WAIT).unwrap();
    let m = &msgs[0];
    assert_eq!(m.mail_from, "scanner@contoso.test");
    assert_eq!(
        sorted(m.rcpt_to.clone()),
        [
            "audit@contoso.test",
            "bob@contoso.test",
            "ops@relay.test.example"
        ]
    );
    let text = m.text();
    assert!(
        !text.contains("Bcc:") && !text.contains("audit@"),
        "Bcc was sent:\n{text}"
    );
    assert!(
        text.starts_with("Received: by relay.test.example (postern, from userid "),
        "{text}"
    );
    assert!(
        text.contains("\r\nCc: ops@relay.test.example\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nSubject: Scan from the 2nd floor\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nMessage-Id: <") && text.contains("\r\nDate: "),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nYour scan is attached.\r\n"),
        "{text}"
    );
    d.wait_gone(&scan);
    // Postfix-style log lines, in order, and one naming the file.
    d.env
        .wait_log(re(r"postern/qmgr\[\d+\]: [0-9A-F]{12}: removed"), WAIT)
        .unwrap();
    let log = d.env.log_text();
    let rx = regex::Regex::new(
        r"postern/pickup\[\d+\]: ([0-9A-F]{12}): uid=\d+ from=<scanner@contoso\.test>",
    )
    .unwrap();
    let id = rx.captures(&log).expect(&log)[1].to_string();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    let patterns = [
        format!(r"postern/pickup\[\d+\]: {id}: uid=\d+ from=<scanner@contoso\.test>$"),
        format!(r"postern/pickup\[\d+\]: {id}: message-id=<\d{{14}}\.{id}@relay\.test\.example>$"),
        format!(
            r"postern/pickup\[\d+\]: {id}: drop_file={}, size=\d+$",
            regex::escape(&scan.display().to_string())
        ),
        format!(
            r"postern/qmgr\[\d+\]: {id}: from=<scanner@contoso\.test>, size=\d+, nrcpt=3 \(queue active\)$"
        ),
        format!(r"postern/smtp\[\d+\]: {id}: to=<bob@contoso\.test>, .*status=sent"),
        format!(r"postern/qmgr\[\d+\]: {id}: removed$"),
    ];
    let mut pos = 0;
    for p in &patterns {
        let rx = regex::Regex::new(p).unwrap();
        let found = lines[pos..].iter().position(|l| rx.is_match(l));
        assert!(
            found.is_some(),
            "no line matching {p} (in order) in:\n{}",
            lines.join("\n")
        );
        pos += found.unwrap() + 1;
    }

    // A file as .NET's SmtpClient writes it for SpecifiedPickupDirectory:
    // X-Sender/X-Receiver are the envelope and do not travel.
    let dotnet = d.put(
        "5f0c8f3e-1b7a-4c2e-9d51-0a6c0e2b7d11.eml",
        b"X-Sender: crm@contoso.test\r\n\
X-Receiver: ops-team@contoso.test\r\n\
X-Receiver: archive@contoso.test\r\n\
MIME-Version: 1.0\r\n\
From: \"CRM\" <noreply@contoso.test>\r\n\
To: customer@example.test\r\n\
Date: Sun, 22 Nov 2026 09:00:00 +0000\r\n\
Subject: Invoice 42\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Please find your invoice.\r\n",
    );
    // A writer that creates a dot file and renames it when complete.
    let hidden = d.put(".upload-in-progress", b"To: later@contoso.test\n\nlater\n");
    let msgs = d.fake.wait_messages(2, WAIT).unwrap();
    let m = &msgs[1];
    assert_eq!(m.mail_from, "crm@contoso.test");
    assert_eq!(
        sorted(m.rcpt_to.clone()),
        ["archive@contoso.test", "ops-team@contoso.test"]
    );
    let text = m.text();
    assert!(
        !text.contains("X-Sender") && !text.contains("X-Receiver"),
        "{text}"
    );
    assert!(
        text.contains("\r\nDate: Sun, 22 Nov 2026 09:00:00 +0000\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("\r\nDate: ").count(), 1, "{text}");
    d.wait_gone(&dotnet);
    assert!(hidden.exists(), "a dot file was taken");
    std::fs::rename(&hidden, d.dir.join("later.eml")).unwrap();
    let msgs = d.fake.wait_messages(3, WAIT).unwrap();
    assert_eq!(msgs[2].rcpt_to, ["later@contoso.test"]);
    d.wait_gone(&d.dir.join("later.eml"));
    assert_eq!(d.fake.messages().len(), 3, "a file was sent twice");
    assert!(std::fs::read_dir(&d.badmail).unwrap().next().is_none());
    d.env.stop().unwrap();
}

#[test]
fn bad_and_hostile_files_go_to_badmail_and_nothing_else_stops() {
    let mut d = Folder::new();
    d.env.set("message_size_limit", "1000000").unwrap();
    d.env.start().unwrap();
    d.env.wait_log("watching drop_directory", WAIT).unwrap();
    let pickup = d.env.daemon_pid("pickup").expect("pickup runs");
    let mark = d.env.log_mark();
    let outside = d.env.root.join("outside.eml");
    std::fs::write(
        &outside,
        b"To: thief@example.test\n\nnot for the drop folder\n",
    )
    .unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cases: Vec<(&str, &str)> = Vec::new();
    symlink("/etc/shadow", d.dir.join("shadow.eml")).unwrap();
    cases.push(("shadow.eml", "symbolic link"));
    symlink(&outside, d.dir.join("link.eml")).unwrap();
    cases.push(("link.eml", "symbolic link"));
    std::fs::hard_link(&outside, d.dir.join("hardlink.eml")).unwrap();
    cases.push(("hardlink.eml", "2 links"));
    nix::unistd::mkfifo(
        &d.dir.join("fifo.eml"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    cases.push(("fifo.eml", "FIFO"));
    if running_as_root() {
        // /dev/null's numbers: opening it would be harmless, but nothing
        // opens it at all.
        nix::sys::stat::mknod(
            &d.dir.join("device.eml"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        cases.push(("device.eml", "device node"));
    }
    // 100 GB, sparse: refused from its size; reading it would take hours.
    let huge = std::fs::File::create(d.dir.join("huge.eml")).unwrap();
    huge.set_len(100_000_000_000).unwrap();
    drop(huge);
    cases.push((
        "huge.eml",
        "message_size_limit is 1000000 (it was not read)",
    ));
    d.put(
        "nul.eml",
        b"To: bob@contoso.test\nSubject: x\n\nhalf text\0half binary\n",
    );
    cases.push(("nul.eml", "NUL byte"));
    d.put("utf16.txt", b"\xff\xfeT\0o\0:\0 \0b\0@\0x\0\n\0");
    cases.push(("utf16.txt", "UTF-16"));
    d.put(
        "norcpt.eml",
        b"From: scanner@contoso.test\nSubject: to nobody\n\nx\n",
    );
    cases.push(("norcpt.eml", "no recipients"));
    d.put("memo.txt", b"Please send this to Bob.\nThanks\n");
    cases.push(("memo.txt", "does not start with a header"));
    d.put("image.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01");
    cases.push(("image.jpg", "NUL byte"));
    d.put(
        "control.eml",
        b"To: bob@contoso.test\n\n\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f",
    );
    cases.push(("control.eml", "looks binary"));
    d.put(
        "longline.eml",
        format!("To: bob@contoso.test\n\n{}\n", "A".repeat(100_000)).as_bytes(),
    );
    cases.push(("longline.eml", "line_length_limit is 2048"));
    d.put("badaddr.eml", b"To: bob@@contoso\n\nx\n");
    cases.push(("badaddr.eml", "no valid recipient address"));
    d.put("empty.eml", b"");
    cases.push(("empty.eml", "empty"));
    // Unreadable by the daemons: left alone, logged once.
    let unreadable = running_as_root().then(|| {
        let p = d.put("private.eml", b"To: bob@contoso.test\n\nprivate\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    });
    d.env
        .wait_log_count(mark, "refused:", cases.len(), WAIT)
        .unwrap();
    for (name, why) in &cases {
        assert!(
            std::fs::symlink_metadata(d.dir.join(name)).is_err(),
            "{name} is still in the drop folder"
        );
        assert!(
            std::fs::symlink_metadata(d.badmail.join(name)).is_ok(),
            "{name} is not in badmail"
        );
        let reason = d.reason(name);
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(
            reason.contains(&format!("\nfrom: {}\n", d.dir.join(name).display())),
            "{reason}"
        );
    }
    assert!(
        d.reason("shadow.eml")
            .contains("symbolic link to: /etc/shadow (not followed)")
    );
    assert!(
        d.badmail
            .join("shadow.eml")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link itself is in badmail"
    );
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        b"To: thief@example.test\n\nnot for the drop folder\n",
        "a link target was touched"
    );
    let log = d.env.log_text();
    assert!(
        re(r"postern/pickup\[\d+\]: warning: drop file .*/norcpt\.eml \(uid=\d+\): refused: no recipients: .*; moved to .*/mailroot/badmail/norcpt\.eml$")
            .matches(log.lines().find(|l| l.contains("norcpt.eml")).unwrap()),
        "{log}"
    );

    // Nothing else stopped: a good file and sendmail still go through, by
    // the same pickup process, and nothing hostile was sent.
    let good = d.put(
        "after.eml",
        b"To: bob@contoso.test\nSubject: after the storm\n\nok\n",
    );
    let out = d
        .env
        .sendmail(
            &["-t", "-i"],
            b"To: carol@contoso.test\nSubject: via sendmail\n\nok\n",
        )
        .unwrap();
    assert!(out.success(), "{out}");
    let msgs = d.fake.wait_messages(2, WAIT).unwrap();
    d.wait_gone(&good);
    let subjects: Vec<String> = msgs.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(
        sorted(subjects),
        ["after the storm", "via sendmail"],
        "something else was sent"
    );
    assert_eq!(d.env.daemon_pid("pickup"), Some(pickup), "pickup restarted");
    if let Some(p) = unreadable {
        assert!(p.exists(), "an unreadable file was moved or removed");
        // Still there after more scans, and the warning was given once.
        std::thread::sleep(Duration::from_secs(3));
        assert!(p.exists());
        let warnings = d.env.log_grep("private.eml: cannot open it");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.fake.messages().len(), 2);
    d.env.stop().unwrap();
}

#[test]
fn a_file_written_slowly_is_sent_whole_once_complete() {
    let mut d = Folder::new();
    d.env.set("drop_settle_time", "2s").unwrap();
    d.env.start().unwrap();
    d.env.wait_log("watching drop_directory", WAIT).unwrap();
    // A device writing over a slow link: a chunk every 300 ms for 4 s, in
    // place, headers first (each prefix is a sendable message).
    let path = d.dir.join("slow.eml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"To: bob@contoso.test\nSubject: slow scan\n\n")
        .unwrap();
    for i in 0..14 {
        std::thread::sleep(Duration::from_millis(300));
        writeln!(f, "line {i:02} of the scan").unwrap();
        f.flush().unwrap();
        assert!(
            d.fake.messages().is_empty(),
            "a file still being written was sent"
        );
    }
    drop(f);
    let msgs = d.fake.wait_messages(1, WAIT).unwrap();
    let text = msgs[0].text();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let want: String = (0..14)
        .map(|i| format!("line {i:02} of the scan\r\n"))
        .collect();
    assert_eq!(body, want, "the message is not the whole file");
    d.wait_gone(&path);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.fake.messages().len(), 1, "sent more than once");
    d.env.stop().unwrap();
}

#[test]
fn a_file_dropped_while_pickup_is_stopped_is_sent_after_start() {
    let mut d = Folder::new();
    d.env.create_queue().unwrap();
    let path = d.put(
        "overnight.eml",
        b"From: backup@contoso.test\nTo: admin@contoso.test\nSubject: nightly backup\n\ndone\n",
    );
    d.env.start().unwrap();
    let msgs = d.fake.wait_messages(1, WAIT).unwrap();
    assert_eq!(msgs[0].rcpt_to, ["admin@contoso.test"]);
    assert_eq!(msgs[0].header("Subject").as_deref(), Some("nightly backup"));
    d.wait_gone(&path);
    d.env.stop().unwrap();
}

use super::*;
use queue::file::QueueFile;
use std::os::unix::fs::symlink;

struct Fixture {
    tmp: tempfile::TempDir,
    queue: Queue,
    cleanup: Cleanup,
    drop: DropFolder,
}

impl Fixture {
    fn new(extra: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pickup");
        std::fs::create_dir(&dir).unwrap();
        let text = format!(
            "queue_directory = {}\nmyhostname = relay.test.example\nalias_maps =\n\
             drop_directory = {}\ndrop_settle_time = 0s\nmessage_size_limit = 100000\n{extra}",
            tmp.path().join("spool").display(),
            dir.display()
        );
        let main = conf::MainCf::parse(&text, Path::new("main.cf")).unwrap();
        let cfg = conf::Config::build(&main, &[]).unwrap();
        let queue = Queue::new(&cfg.queue_directory);
        queue.ensure(None).unwrap();
        let cleanup = Cleanup::new(&cfg).unwrap();
        let drop = DropFolder::new(&cfg).unwrap();
        Fixture {
            tmp,
            queue,
            cleanup,
            drop,
        }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("pickup")
    }

    fn badmail(&self) -> PathBuf {
        self.tmp.path().join("badmail")
    }

    fn put(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Two scans: the first look, then the second that takes settled files.
    fn scan2(&mut self) {
        self.drop.scan(&self.queue, &self.cleanup).unwrap();
        self.drop.scan(&self.queue, &self.cleanup).unwrap();
    }

    fn queued(&self) -> Vec<QueueFile> {
        let mut ids = self.queue.list(QueueName::Incoming).unwrap();
        ids.sort();
        ids.iter()
            .map(|id| QueueFile::read(&self.queue.path(QueueName::Incoming, id)).unwrap())
            .collect()
    }

    fn reason(&self, name: &str) -> String {
        std::fs::read_to_string(self.badmail().join(format!("{name}.reason")))
            .unwrap_or_else(|e| panic!("no reason for {name}: {e}"))
    }
}

fn rcpts(q: &QueueFile) -> Vec<&str> {
    q.envelope
        .recipients
        .iter()
        .map(|r| r.addr.as_str())
        .collect()
}

#[test]
fn a_good_file_is_queued_as_sendmail_t_and_removed() {
    let mut f = Fixture::new("");
    let p = f.put(
        "scan0001.eml",
        b"From: Scanner <scanner@contoso.test>\nTo: Bob <bob@contoso.test>\nBcc: audit\nSubject: Scan\n\nPDF follows\n",
    );
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    assert!(p.exists(), "taken at the first look");
    assert!(f.queued().is_empty());
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    assert!(!p.exists(), "not removed after queueing");
    let q = f.queued();
    assert_eq!(q.len(), 1);
    let q = &q[0];
    assert_eq!(q.envelope.sender, "scanner@contoso.test");
    // The unqualified Bcc got @$myorigin; Bcc is gone from the header.
    assert_eq!(rcpts(q), ["bob@contoso.test", "audit@relay.test.example"]);
    assert_eq!(q.envelope.attr("origin"), Some("drop"));
    assert_eq!(q.envelope.attr("drop_file"), Some("scan0001.eml"));
    let text = String::from_utf8(q.content().to_vec()).unwrap();
    assert!(
        text.starts_with("Received: by relay.test.example (postern, from userid "),
        "{text}"
    );
    assert!(!text.contains("Bcc"), "{text}");
    assert!(
        text.contains("\r\nMessage-Id: <") && text.contains("\r\nDate: "),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nPDF follows\r\n"), "{text}");
    assert!(!f.badmail().join("scan0001.eml").exists());
}

#[test]
fn envelope_headers_and_owner_fallback() {
    let mut f = Fixture::new("");
    f.put(
        "dotnet.eml",
        b"X-Sender: crm@contoso.test\r\nX-Receiver: ops@contoso.test\r\nFrom: noreply@contoso.test\r\nTo: customer@example.test\r\nSubject: x\r\n\r\nbody\r\n",
    );
    f.put("nofrom.eml", b"To: a@contoso.test\n\nno sender\n");
    f.scan2();
    let q = f.queued();
    assert_eq!(q.len(), 2);
    let dotnet = q
        .iter()
        .find(|q| q.envelope.attr("drop_file") == Some("dotnet.eml"))
        .unwrap();
    assert_eq!(dotnet.envelope.sender, "crm@contoso.test");
    assert_eq!(rcpts(dotnet), ["ops@contoso.test"]);
    let text = String::from_utf8_lossy(dotnet.content());
    assert!(
        !text.contains("X-Sender") && !text.contains("X-Receiver"),
        "{text}"
    );
    // No From: and no X-Sender: the file's owner sends, as with sendmail -t.
    let nofrom = q
        .iter()
        .find(|q| q.envelope.attr("drop_file") == Some("nofrom.eml"))
        .unwrap();
    let me = crate::scan::login_name(nix::unistd::geteuid().as_raw()).unwrap();
    assert_eq!(nofrom.envelope.sender, format!("{me}@relay.test.example"));
    assert!(
        String::from_utf8_lossy(nofrom.content())
            .contains(&format!("\r\nFrom: {me}@relay.test.example\r\n"))
    );
}

#[test]
fn files_being_written_wait() {
    let mut f = Fixture::new("drop_settle_time = 1h\n");
    let p = f.put("young.eml", b"To: a@contoso.test\n\nx\n");
    f.scan2();
    assert!(
        p.exists() && f.queued().is_empty(),
        "a young file was taken"
    );
    // Changed between two looks (settle time 0): not taken at the second.
    let mut f = Fixture::new("");
    let p = f.put("growing.eml", b"To: a@contoso.test\n\npart 1\n");
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    std::fs::write(&p, b"To: a@contoso.test\n\npart 1\npart 2\n").unwrap();
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    assert!(
        p.exists() && f.queued().is_empty(),
        "a changing file was taken"
    );
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    let q = f.queued();
    assert!(String::from_utf8_lossy(q[0].content()).ends_with("part 1\r\npart 2\r\n"));
    // Dot files, *.tmp and directories are never touched.
    let mut f = Fixture::new("");
    f.put(".hidden", b"To: a@contoso.test\n\nx\n");
    f.put("upload.TMP", b"To: a@contoso.test\n\nx\n");
    std::fs::create_dir(f.dir().join("sub")).unwrap();
    f.scan2();
    assert!(f.queued().is_empty());
    assert!(f.dir().join(".hidden").exists() && f.dir().join("upload.TMP").exists());
    assert!(!f.badmail().join("sub").exists());
}

#[test]
fn hostile_entries_go_to_badmail_with_a_reason() {
    let mut f = Fixture::new("");
    let outside = f.tmp.path().join("secret");
    std::fs::write(&outside, b"To: thief@example.test\n\nsecret\n").unwrap();
    symlink("/etc/shadow", f.dir().join("shadow.eml")).unwrap();
    symlink(&outside, f.dir().join("link.eml")).unwrap();
    std::fs::hard_link(&outside, f.dir().join("hard.eml")).unwrap();
    nix::unistd::mkfifo(
        &f.dir().join("fifo.eml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // 64 GiB, sparse: reading it would never finish.
    let huge = File::create(f.dir().join("huge.eml")).unwrap();
    huge.set_len(64 << 30).unwrap();
    drop(huge);
    f.put("nul.eml", b"To: a@contoso.test\n\nbinary\0data\n");
    f.put(
        "norcpt.eml",
        b"From: a@contoso.test\nSubject: to nobody\n\nx\n",
    );
    f.put("garbage.eml", b"\x89PNG\r\n\x1a\n\x01\x02\x03");
    f.put("empty.eml", b"");
    f.put(
        "longline.eml",
        format!("To: a@contoso.test\n\n{}\n", "x".repeat(5000)).as_bytes(),
    );
    f.put("good.eml", b"To: a@contoso.test\n\nfine\n");
    f.scan2();
    let q = f.queued();
    assert_eq!(q.len(), 1, "only the good file is queued");
    assert_eq!(q[0].envelope.attr("drop_file"), Some("good.eml"));
    for (name, why) in [
        ("shadow.eml", "symbolic link"),
        ("link.eml", "symbolic link"),
        ("hard.eml", "2 links"),
        ("fifo.eml", "FIFO"),
        ("huge.eml", "message_size_limit is 100000 (it was not read)"),
        ("nul.eml", "NUL byte"),
        ("norcpt.eml", "no recipients"),
        ("garbage.eml", "does not start with a header"),
        ("empty.eml", "empty"),
        ("longline.eml", "line_length_limit"),
    ] {
        assert!(
            !f.dir().join(name).exists()
                && std::fs::symlink_metadata(f.badmail().join(name)).is_ok(),
            "{name} was not moved to badmail"
        );
        let reason = f.reason(name);
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(
            reason.contains(&format!("from: {}", f.dir().join(name).display())),
            "{reason}"
        );
    }
    assert!(
        f.reason("shadow.eml")
            .contains("symbolic link to: /etc/shadow (not followed)")
    );
    // Nothing was followed: the targets are untouched.
    assert!(outside.exists());
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        b"To: thief@example.test\n\nsecret\n"
    );
    assert!(Path::new("/etc/shadow").exists() || !Path::new("/etc").exists());
}

#[test]
fn unusable_badmail_leaves_refused_files_in_place() {
    let mut f = Fixture::new("");
    std::fs::write(f.badmail(), "a file, not a directory").unwrap();
    let p = f.put("norcpt.eml", b"Subject: x\n\nx\n");
    f.scan2();
    f.scan2();
    assert!(p.exists());
    assert!(f.drop.quiet.contains_key(OsStr::new("norcpt.eml")));
    // Fixed: the file goes at the next scan.
    std::fs::remove_file(f.badmail()).unwrap();
    f.drop.scan(&f.queue, &f.cleanup).unwrap();
    assert!(!p.exists());
    assert!(f.reason("norcpt.eml").starts_with("refused: no recipients"));
}

#[test]
fn a_claimed_name_left_by_a_crash_is_taken() {
    let mut f = Fixture::new("");
    f.put(
        ".postern-claim.6B02B69E5C85.scan.eml",
        b"To: a@contoso.test\n\nx\n",
    );
    f.scan2();
    let q = f.queued();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].envelope.attr("drop_file"), Some("scan.eml"));
    assert!(
        !f.dir()
            .join(".postern-claim.6B02B69E5C85.scan.eml")
            .exists()
    );
}

/// A Prepared for a file of the fixture, as scan() would have it just
/// before removal.
fn prepared(f: &Fixture, name: &str) -> Prepared {
    let path = f.dir().join(name);
    let file = File::open(&path).unwrap();
    let look = Look::of(&file.metadata().unwrap());
    Prepared {
        name: name.into(),
        file,
        look,
        id: queue::QueueId::parse("6B02B69E5C85").unwrap(),
        uid: 0,
        sender: String::new(),
        message_id: None,
    }
}

#[test]
fn removal_never_takes_a_file_that_was_not_read() {
    let mut f = Fixture::new("");
    std::fs::create_dir(f.badmail()).unwrap();
    // Replaced under the same name after it was read: the new file stays.
    f.put("same.eml", b"To: a@x.test\n\nfirst\n");
    let mut p = prepared(&f, "same.eml");
    let tmp = f.put("new.tmp", b"To: a@x.test\n\nsecond\n");
    std::fs::rename(&tmp, f.dir().join("same.eml")).unwrap();
    f.drop.remove(&mut p);
    assert_eq!(
        std::fs::read(f.dir().join("same.eml")).unwrap(),
        b"To: a@x.test\n\nsecond\n"
    );
    assert!(
        !f.dir()
            .join(".postern-claim.6B02B69E5C85.same.eml")
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(f.dir()).unwrap().count(),
        1,
        "a claimed name was left"
    );
    // Appended to through an open descriptor after it was read: removed,
    // and the whole file is kept in badmail.
    let path = f.put("grow.eml", b"To: a@x.test\n\nfirst\n");
    let mut p = prepared(&f, "grow.eml");
    let mut w = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut w, b"more\n").unwrap();
    f.drop.remove(&mut p);
    assert!(!path.exists());
    assert_eq!(
        std::fs::read(f.badmail().join("grow.eml")).unwrap(),
        b"To: a@x.test\n\nfirst\nmore\n"
    );
    assert!(
        f.reason("grow.eml")
            .contains("changed after it was queued as 6B02B69E5C85")
    );
}

#[test]
fn names_and_log_text() {
    assert!(candidate(OsStr::new("scan.eml")));
    assert!(!candidate(OsStr::new(".x")));
    assert!(!candidate(OsStr::new("a.tmp")));
    assert!(candidate(OsStr::new(".postern-claim.a")));
    assert!(!candidate(OsStr::new(".postern-claim.")));
    assert_eq!(
        shown_name(OsStr::new(".postern-claim.6B02B69E5C85.a.eml")),
        "a.eml"
    );
    assert_eq!(printable(Path::new("/d/evil\nname")), "/d/evil\\nname");
}

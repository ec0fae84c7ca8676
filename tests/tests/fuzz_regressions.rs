//! End-to-end checks for bugs the fuzz targets (`fuzz/`) found in code
//! that only runs inside smtpd; the parsers' own regression tests are unit
//! tests named `fuzz_*` in their crates.

use postern_tests::harness::TestEnv;
use postern_tests::sync_client::Smtp;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Found by the `header` fuzz target: smtpd looked for the end of the
/// header block after every read, and a read that ended inside a header
/// line (`Sub`) ended the header block there, so `Subject:` and the fields
/// after it were relayed as body text. The content arrives here in two
/// writes split inside `Subject:`, then in BDAT chunks split the same way.
#[test]
fn a_header_line_split_across_reads_stays_in_the_header() {
    let mut env = TestEnv::new().unwrap();
    let fake = env.office365_fake().unwrap();
    let port = env.add_smtpd(&[]).unwrap();
    env.start().unwrap();
    let (mut c, _) = Smtp::connect(port, None).unwrap();
    assert_eq!(c.cmd("EHLO scanner.lan").unwrap().code, 250);

    // DATA, two reads.
    assert_eq!(c.cmd("MAIL FROM:<scan@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("DATA").unwrap().code, 354);
    c.send(b"From: scan@contoso.test\r\nSub").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"ject: split\r\nX-After: yes\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    assert_eq!(c.reply().unwrap().code, 250);

    // BDAT, the chunk boundary inside the field name.
    assert_eq!(c.cmd("MAIL FROM:<scan@contoso.test>").unwrap().code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.test>").unwrap().code, 250);
    let first = b"From: scan@contoso.test\r\nSub";
    let second = b"ject: split\r\nX-After: yes\r\n\r\nbody";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes())
        .unwrap();
    c.send(first).unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.send(format!("BDAT {} LAST\r\n", second.len()).as_bytes())
        .unwrap();
    c.send(second).unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").unwrap().code, 221);

    for m in fake.wait_messages(2, WAIT).unwrap() {
        let text = m.text();
        let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
        assert!(
            head.contains("\r\nSubject: split\r\nX-After: yes"),
            "{text}"
        );
        assert!(body.starts_with("body"), "{text}");
    }
}

use super::*;
use proptest::prelude::*;

const MAIN: &str = "\
# postern main.cf
myhostname = relay.contoso.com

relayhost = [old.example.com]:25
mydestination = a,
    b,
# comment between continuation lines
\tc
  # indented comment
inet_interfaces=all
relayhost=[again.example.com]
smtpd_banner = $myhostname ESMTP
";

fn sv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn set_replaces_every_setting_in_place_and_appends_new_names_sorted() {
    let out = set_params(
        MAIN,
        &sv(&[
            ("relayhost", "[smtp.office365.com]:587"),
            ("mydestination", "localhost"),
            ("zz_new", "1"),
            ("aa_new", "x"),
            ("zz_new", "2"),
        ]),
    );
    assert_eq!(
        out,
        "\
# postern main.cf
myhostname = relay.contoso.com

relayhost = [smtp.office365.com]:587
mydestination = localhost
# comment between continuation lines
  # indented comment
inet_interfaces=all
relayhost = [smtp.office365.com]:587
smtpd_banner = $myhostname ESMTP
aa_new = x
zz_new = 2
"
    );
    let parsed = crate::MainCf::parse(&out, Path::new("m")).unwrap();
    assert_eq!(parsed.get("mydestination").unwrap().value, "localhost");
    assert_eq!(parsed.get("zz_new").unwrap().value, "2");
}

#[test]
fn remove_and_comment_out() {
    let out = remove_params(MAIN, &["mydestination", "relayhost", "unknown"]);
    assert_eq!(
        out,
        "\
# postern main.cf
myhostname = relay.contoso.com

# comment between continuation lines
  # indented comment
inet_interfaces=all
smtpd_banner = $myhostname ESMTP
"
    );
    let out = comment_out_params(
        MAIN,
        &["mydestination".to_string(), "inet_interfaces".to_string()],
    );
    assert_eq!(
        out,
        "\
# postern main.cf
myhostname = relay.contoso.com

relayhost = [old.example.com]:25
#mydestination = a,
#    b,
# comment between continuation lines
#\tc
  # indented comment
#inet_interfaces=all
relayhost=[again.example.com]
smtpd_banner = $myhostname ESMTP
"
    );
    let parsed = crate::MainCf::parse(&out, Path::new("m")).unwrap();
    assert!(parsed.get("mydestination").is_none() && parsed.get("inet_interfaces").is_none());
}

#[test]
fn line_endings_and_prefix_names() {
    assert_eq!(
        set_params("a = 1\r\nab = 2", &sv(&[("a", "3")])),
        "a = 3\r\nab = 2"
    );
    assert_eq!(set_params("ab = 2", &sv(&[("a", "3")])), "ab = 2\na = 3\n");
    assert_eq!(set_params("", &sv(&[("a", "x\ny")])), "a = x y\n");
    assert_eq!(comment_out_params("a = 1", &["a"]), "#a = 1\n");
    assert_eq!(remove_params("  stray\na = 1\n", &["a"]), "  stray\n");
}

#[test]
fn argument_checks() {
    assert_eq!(
        parse_assignment(" relayhost = [x]:587 ").unwrap(),
        ("relayhost".into(), "[x]:587".into())
    );
    assert_eq!(parse_assignment("a=").unwrap(), ("a".into(), "".into()));
    assert!(parse_assignment("a").unwrap_err().contains("missing '='"));
    assert!(
        parse_assignment("# a=b")
            .unwrap_err()
            .contains("no comment")
    );
    assert!(
        parse_assignment("a=b\nc=d")
            .unwrap_err()
            .contains("multi-line")
    );
    assert!(
        parse_assignment("bad-name=1")
            .unwrap_err()
            .contains("bad parameter name")
    );
    assert_eq!(parse_name(" relayhost ").unwrap(), "relayhost");
    assert!(parse_name("a=b").unwrap_err().contains("without value"));
    assert!(parse_name("").is_err());
}

#[test]
fn atomic_write_keeps_mode_and_follows_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("main.cf");
    write_atomically(&p, "a = 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 1\n");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_atomically(&p, "a = 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 2\n");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let link = dir.path().join("link.cf");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    write_atomically(&link, "a = 3\n").unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 3\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    assert!(write_atomically(&dir.path().join("no/such/dir/main.cf"), "x").is_err());
}

/// Physical lines of `text` that do not belong to a setting of `names`.
fn unrelated(text: &str, names: &[&str]) -> Vec<String> {
    let mut keep = Vec::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.trim_end().is_empty() || t.starts_with('#') {
            keep.push(line.trim_end_matches('\n').to_string());
        } else if line.len() != t.len() {
            if !inside {
                keep.push(line.trim_end_matches('\n').to_string());
            }
        } else {
            let end = line
                .find(|c: char| c.is_ascii_whitespace() || c == '=')
                .unwrap_or(line.len());
            inside = names.contains(&&line[..end]);
            if !inside {
                keep.push(line.trim_end_matches('\n').to_string());
            }
        }
    }
    keep
}

fn main_cf() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            "[a-e] ?= ?[a-z0-9 $]{0,10}",
            "[ \t]+[a-z,]{1,8}",
            "[ \t]*#[ -~]{0,10}",
            "[ \t]{0,3}",
            "[a-e]{2}=[0-9]",
        ],
        0..25,
    )
    .prop_map(|lines| lines.join("\n") + "\n")
}

proptest! {
    #[test]
    fn never_panics(s in "\\PC*", n in "\\PC{0,8}", v in "\\PC{0,8}") {
        let _ = set_params(&s, &[(n.clone(), v)]);
        let _ = remove_params(&s, &[n.as_str()]);
        let _ = comment_out_params(&s, &[n.as_str()]);
        let _ = parse_assignment(&s);
        let _ = parse_name(&s);
    }

    #[test]
    fn unrelated_lines_are_byte_identical(text in main_cf(), name in "[a-e]", value in "[a-z0-9]{0,6}") {
        let names = [name.as_str()];
        let before = unrelated(&text, &names);
        let set = set_params(&text, &[(name.clone(), value.clone())]);
        let removed = remove_params(&text, &names);
        let commented = comment_out_params(&text, &names);
        prop_assert_eq!(&unrelated(&removed, &names), &before);
        prop_assert_eq!(&removed.lines().map(str::to_string).collect::<Vec<_>>(), &before);
        let c: Vec<String> = commented.lines().filter(|l| !l.starts_with(&format!("#{name}"))).map(str::to_string).collect();
        prop_assert!(c.iter().filter(|l| !before.contains(l)).all(|l| l.starts_with('#')), "{:?}", c);
        prop_assert_eq!(&unrelated(&set, &names), &before);
        // The result says what was asked, and removing is idempotent.
        let parsed = crate::MainCf::parse(&set, Path::new("m")).unwrap();
        prop_assert_eq!(parsed.get(&name).map(|e| e.value.as_str()), Some(value.as_str()));
        prop_assert!(crate::MainCf::parse(&removed, Path::new("m")).unwrap().get(&name).is_none());
        prop_assert!(crate::MainCf::parse(&commented, Path::new("m")).unwrap().get(&name).is_none());
        prop_assert_eq!(remove_params(&removed, &names), removed.clone());
    }
}

/// Found by the `maincf` fuzz target: a line starting with a vertical tab
/// (or another white space character that is not a space or tab) was a
/// setting for the main.cf reader but a continuation line for the editor,
/// so `postconf -X myhostname` left the setting in place. Both now use
/// Postfix's white space: such a line continues the previous one, and a
/// name after a non-ASCII space (U+00A0) is a bad name.
#[test]
fn fuzz_reader_and_editor_agree_on_white_space() {
    let parse = |t: &str| crate::MainCf::parse(t, Path::new("main.cf"));
    let crash = "# c\n\x0bmyhostname = relay.contoso.com\nrelayhost = [x]:587\n";
    let m = parse(crash).unwrap();
    assert!(m.get("myhostname").is_none());
    for text in [
        crash,
        "relayhost = a\n\x0cmyhostname = b\n",
        "relayhost = a\n\rmyhostname = b\n",
    ] {
        let before = parse(text).unwrap();
        let removed = parse(&remove_params(text, &["myhostname"])).unwrap();
        assert_eq!(
            removed.get("myhostname"),
            before.get("myhostname"),
            "{text:?}"
        );
        let set = parse(&set_params(text, &sv(&[("myhostname", "new")]))).unwrap();
        assert_eq!(set.get("myhostname").unwrap().value, "new", "{text:?}");
        assert_eq!(set.get("relayhost"), before.get("relayhost"), "{text:?}");
    }
    assert!(parse("\u{a0}myhostname = b\n").is_err());
}

//! `postern oauth2 login|token USER`: sign a mailbox in by device code
//! (delegated XOAUTH2), and fetch a token the way the delivery agents do,
//! printing what it says — never the token ([`queue::oauth2`]).

use queue::oauth2::{
    self, Account, ClientAuth, Grant, OAuthError, Obtained, Token, TokenCache, claims,
};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

const USAGE: &str =
    "usage: postern [-c config_dir] oauth2 login USER | oauth2 token [--refresh] USER";

/// sysexits.h EX_TEMPFAIL: trying again later may work.
const EX_TEMPFAIL: i32 = 75;

/// One `postern oauth2` command.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Login(String),
    Token { user: String, refresh: bool },
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let verb = args.first().map(String::as_str);
    let mut refresh = false;
    let mut users: Vec<&String> = Vec::new();
    for a in args.iter().skip(1) {
        match a.as_str() {
            "--refresh" if verb == Some("token") => refresh = true,
            s if s.starts_with('-') => {
                return Err(format!(
                    "oauth2 {}: unknown option {s}",
                    verb.unwrap_or_default()
                ));
            }
            _ => users.push(a),
        }
    }
    let user = |verb: &str| -> Result<String, String> {
        match users.as_slice() {
            [u] if !u.trim().is_empty() && !u.chars().any(char::is_control) => Ok(u.to_string()),
            [_] => Err(format!("oauth2 {verb}: bad user name")),
            [] => Err(format!("oauth2 {verb}: no user name given")),
            _ => Err(format!("oauth2 {verb}: too many arguments")),
        }
    };
    match verb {
        Some("login") => user("login").map(Cmd::Login),
        Some("token") => user("token").map(|user| Cmd::Token { user, refresh }),
        Some(other) => Err(format!("oauth2: unknown command: {other}")),
        None => Err("oauth2: no command given".into()),
    }
}

/// Runs `postern oauth2 ARGS` on the configuration in `dir`; returns the
/// exit status: 0, 1 (an admin must fix something), 64 (usage), or 75
/// (the endpoint is unreachable or busy: try again later).
pub fn main(dir: &Path, args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: fatal: {e}\n{USAGE}");
            return 64;
        }
    };
    let cfg = match queue::service::load_for_command("postern", dir, 1) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let user = match &cmd {
        Cmd::Login(u) | Cmd::Token { user: u, .. } => u.clone(),
    };
    let account = match Account::for_user(&cfg, &user) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let cache = TokenCache::new(&cfg);
    match cmd {
        Cmd::Login(_) => login(&cfg, &cache, &account),
        Cmd::Token { refresh, .. } => token(&cache, &account, refresh),
    }
}

fn fail(e: &OAuthError) -> i32 {
    eprintln!("postern: fatal: {e}");
    if e.is_transient() { EX_TEMPFAIL } else { 1 }
}

fn login(cfg: &conf::Config, cache: &TokenCache, account: &Account) -> i32 {
    if matches!(account.grant, Grant::RefreshToken(_)) {
        eprintln!(
            "postern oauth2: signing in {} with application {} at {}",
            account.user, account.client_id, account.token_endpoint
        );
        eprintln!(
            "postern oauth2: sign in as the mailbox {} (or an account with rights on it)",
            account.user
        );
    }
    let token = match oauth2::device_code_login(cache, account, &account.scope, |msg| {
        println!("{msg}");
    }) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    // device_code_login succeeds only for accounts with a refresh token file.
    let Grant::RefreshToken(file) = &account.grant else {
        return 1;
    };
    let p = file.display();
    match std::fs::metadata(file) {
        Ok(m) if m.uid() == 0 && m.gid() != 0 && m.mode() & 0o040 != 0 => println!(
            "postern oauth2: stored the refresh token in {p} (mode {:04o}, owner root, group of mail_owner {})",
            m.mode() & 0o7777,
            cfg.mail_owner
        ),
        Ok(m) => {
            println!(
                "postern oauth2: stored the refresh token in {p} (mode {:04o})",
                m.mode() & 0o7777
            );
            if nix::unistd::geteuid().is_root() {
                eprintln!(
                    "postern: warning: mail_owner {} cannot be resolved, so the delivery agents cannot read {p}; run chown root:<mail_owner's group> {p} and chmod 640 {p}",
                    cfg.mail_owner
                );
            }
        }
        Err(e) => eprintln!("postern: warning: {p}: {e}"),
    }
    print_token(account, &token, "fetched from the endpoint by the sign-in");
    0
}

fn token(cache: &TokenCache, account: &Account, refresh: bool) -> i32 {
    let got = if refresh {
        cache.refresh(account).map(|t| (t, Obtained::Endpoint))
    } else {
        cache.get(account, None)
    };
    let (token, from) = match got {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    let from = match from {
        Obtained::Endpoint => "fetched from the endpoint".to_string(),
        Obtained::CacheFile => format!("from the cache {}", cache.file(account).display()),
        Obtained::Memory => "from memory".to_string(),
    };
    print_settings(account);
    print_token(account, &token, &from);
    0
}

fn print_settings(a: &Account) {
    println!("account:     {}", a.user);
    match &a.table {
        Some(t) => println!("settings:    main.cf and smtp_oauth2_account_maps {t}"),
        None => println!("settings:    main.cf"),
    }
    println!("endpoint:    {}", a.token_endpoint);
    println!("client id:   {}", a.client_id);
    println!("scope:       {}", a.scope);
    println!("grant:       {}", a.describe_grant());
    if let ClientAuth::Certificate { cert_file, .. } = &a.client_auth
        && let Some(exp) = oauth2::certificate_expiry(a)
    {
        let left = claims::seconds_until(exp, SystemTime::now());
        println!(
            "certificate: expires {} (in {} days)",
            queue::time::rfc2822_date(exp),
            left / 86400
        );
        if left < 30 * 86400 {
            eprintln!(
                "postern oauth2: warning: the certificate {} expires in less than 30 days; make a new one and upload it to application {} before then",
                cert_file.display(),
                a.client_id
            );
        }
    }
}

/// Prints what `token` says about itself, and what would make Exchange
/// Online refuse it.
fn print_token(account: &Account, token: &Token, from: &str) {
    let now = SystemTime::now();
    println!("token:       {from}");
    match oauth2::summarize(token.access_token.expose(), now) {
        Some(s) => {
            let c = &s.claims;
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            println!("aud:         {}", dash(&c.aud));
            if c.scp.is_empty() {
                println!("roles:       {}", list(&c.roles));
            } else {
                println!("scp:         {}", list(&c.scp));
            }
            println!("upn:         {}", dash(&c.upn));
            if c.app_id.is_some() || c.tenant.is_some() {
                println!("app, tenant: {}, {}", dash(&c.app_id), dash(&c.tenant));
            }
            for p in c.problems(&account.user) {
                eprintln!("postern oauth2: warning: {p}");
            }
        }
        None => println!("claims:      none (the token is not a JWT)"),
    }
    let left = claims::seconds_until(token.expires_at, now);
    println!(
        "expires in:  {} ({})",
        claims::format_left(left),
        queue::time::rfc2822_date(token.expires_at)
    );
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_commands() {
        assert_eq!(
            parse(&args(&["login", "ceo@contoso.com"])),
            Ok(Cmd::Login("ceo@contoso.com".into()))
        );
        assert_eq!(
            parse(&args(&["token", "u"])),
            Ok(Cmd::Token {
                user: "u".into(),
                refresh: false
            })
        );
        assert_eq!(
            parse(&args(&["token", "--refresh", "u"])),
            Ok(Cmd::Token {
                user: "u".into(),
                refresh: true
            })
        );
        for bad in [
            &[][..],
            &["login"],
            &["login", "a", "b"],
            &["login", "--refresh", "a"],
            &["token"],
            &["token", "-x", "u"],
            &["token", " "],
            &["frob", "u"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_and_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), "mail_owner = nobody\n").unwrap();
        assert_eq!(main(dir.path(), &args(&["bogus"])), 64);
        // No endpoint, no credential: an admin must act.
        assert_eq!(main(dir.path(), &args(&["token", "u"])), 1);
        assert_eq!(main(dir.path(), &args(&["login", "u"])), 1);
    }

    /// A token endpoint on 127.0.0.1 that answers one request.
    fn one_shot_endpoint(body: &'static str) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 8192];
            let mut got = Vec::new();
            // Headers, then the (short) form body.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        format!("http://{addr}/tenant/oauth2/v2.0/token")
    }

    #[test]
    fn token_command_fetches_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let endpoint = one_shot_endpoint(
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJhbGciOiJub25lIn0.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSIsInJvbGVzIjpbIlNNVFAuU2VuZEFzQXBwIl19.c2ln"}"#,
        );
        std::fs::write(
            dir.path().join("main.cf"),
            format!(
                "mail_owner = nobody\ndata_directory = {d}/data\nsmtp_oauth2_token_endpoint = {endpoint}\nsmtp_oauth2_client_id = app\nsmtp_oauth2_client_secret_file = {d}/secret\n"
            ),
        )
        .unwrap();
        conf::passwd::write_secret_file(&dir.path().join("secret"), b"s\n", None).unwrap();
        assert_eq!(
            main(dir.path(), &args(&["token", "scanner@contoso.com"])),
            0
        );
        // The second run finds the token in the cache (the endpoint is gone).
        assert_eq!(
            main(dir.path(), &args(&["token", "scanner@contoso.com"])),
            0
        );
        // --refresh must ask the endpoint, which no longer answers: try later.
        assert_eq!(
            main(
                dir.path(),
                &args(&["token", "--refresh", "scanner@contoso.com"])
            ),
            EX_TEMPFAIL
        );
    }
}

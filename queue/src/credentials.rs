//! SMTP client credentials from `smtp_sasl_password_maps` (Postfix's
//! smtp_sasl_glue.c lookup order): by envelope sender (with
//! `smtp_sender_dependent_authentication`), then by the server's host name,
//! then by the next hop as written. The delivery agent uses them to log
//! in; the queue manager uses the same lookup to know which account (which
//! Microsoft 365 mailbox) a delivery will use, for per-account limits.
//!
//! A value is `user:password`, split at the first `:` (a password may
//! contain `:`, a user name may not). Passwords stay in [`Secret`]s and are
//! never logged.

use conf::tables::{AddrSearch, Maps};
use proto::sasl::Secret;

/// A user name and its password (or, for XOAUTH2, a placeholder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The SASL user name.
    pub user: String,
    /// The password.
    pub pass: Secret,
}

impl Credentials {
    /// Splits a table value at the first `:`.
    pub fn from_value(v: &str) -> Credentials {
        match v.split_once(':') {
            Some((u, p)) => Credentials {
                user: u.to_string(),
                pass: Secret::new(p),
            },
            None => Credentials {
                user: v.to_string(),
                pass: Secret::new(""),
            },
        }
    }
}

/// `smtp_sasl_password_maps`, opened once.
#[derive(Debug)]
pub struct PasswordMaps {
    maps: Result<Maps, String>,
}

impl PasswordMaps {
    /// Opens the tables; an error is kept and reported by every lookup.
    pub fn open(cfg: &conf::Config) -> PasswordMaps {
        let origin = cfg
            .resolver
            .raw("smtp_sasl_password_maps")
            .map(|(_, o)| o)
            .unwrap_or_default();
        let maps = Maps::open(&cfg.smtp_sasl_password_maps, &origin).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        });
        PasswordMaps { maps }
    }

    /// Tables already open.
    pub fn from_maps(maps: Maps) -> PasswordMaps {
        PasswordMaps { maps: Ok(maps) }
    }

    /// Why the tables could not be opened, if they could not.
    pub fn problem(&self) -> Option<&str> {
        self.maps.as_ref().err().map(String::as_str)
    }

    /// Looks up credentials: by `sender` first when `sender_dependent`,
    /// then by `host` (the server's name), then by each of `dests` (the
    /// next hop as written, then its canonical form).
    ///
    /// # Errors
    /// The tables could not be opened, or a lookup failed.
    pub fn lookup(
        &self,
        sender_dependent: bool,
        sender: &str,
        host: Option<&str>,
        dests: &[&str],
    ) -> Result<Option<Credentials>, String> {
        let maps = self.maps.as_ref().map_err(Clone::clone)?;
        if sender_dependent && !sender.is_empty() {
            let found = maps
                .find_address(sender, &AddrSearch::default())
                .map_err(|e| e.to_string())?;
            if let Some((v, _)) = found {
                return Ok(Some(Credentials::from_value(&v)));
            }
        }
        for key in host.into_iter().chain(dests.iter().copied()) {
            if let Some(v) = maps.find(key).map_err(|e| e.to_string())? {
                return Ok(Some(Credentials::from_value(&v)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_maps_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sasl_passwd");
        std::fs::write(
            &p,
            "scan@contoso.com      scanner@contoso.com:pw:with:colons\n\
             @fabrikam.com         fab@fabrikam.com:fabpw\n\
             mx1.example.com       hostuser:hostpw\n\
             [smtp.office365.com]:587  relay@contoso.com:relaypw\n",
        )
        .unwrap();
        let maps = Maps::open(
            &[format!("texthash:{}", p.display())],
            &conf::Origin::Default,
        )
        .unwrap();
        let m = PasswordMaps::from_maps(maps);
        let dest = ["[smtp.office365.com]:587"];
        // Sender first, only with smtp_sender_dependent_authentication.
        let c = m
            .lookup(true, "scan@contoso.com", Some("smtp.office365.com"), &dest)
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "scanner@contoso.com");
        assert_eq!(c.pass.expose(), "pw:with:colons");
        assert!(!format!("{c:?}").contains("pw:with"));
        let c = m
            .lookup(true, "anyone@fabrikam.com", None, &dest)
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "fab@fabrikam.com");
        let c = m
            .lookup(false, "scan@contoso.com", Some("smtp.office365.com"), &dest)
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "relay@contoso.com");
        // The host name before the next hop.
        let c = m
            .lookup(false, "", Some("mx1.example.com"), &dest)
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "hostuser");
        assert_eq!(
            m.lookup(false, "", Some("other"), &["other.example"])
                .unwrap(),
            None
        );
        assert_eq!(Credentials::from_value("justuser").pass.expose(), "");
    }
}

//! What qmgr needs to know of each delivery transport: its configuration
//! with the master.cf `-o` overrides applied (as the delivery agent sees
//! it), and, through the same `smtp_sasl_password_maps` lookup the agent
//! makes, which account (SASL user) a delivery will log in as.

use crate::accounts::Limits;
use conf::nexthop::Nexthop;
use conf::{Config, Origin};
use queue::credentials::PasswordMaps;
use queue::log;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// One transport's view.
#[derive(Debug)]
pub struct Transport {
    /// main.cf plus the service's `-o` overrides.
    pub cfg: Arc<Config>,
    passwords: Option<PasswordMaps>,
}

/// Transports by master.cf service name, built on first use.
#[derive(Debug)]
pub struct Transports {
    main: Arc<Config>,
    overrides: HashMap<String, Vec<(String, String, Origin)>>,
    built: HashMap<String, Arc<Transport>>,
}

impl Transports {
    /// Reads master.cf for the services' overrides.
    pub fn new(main: &Config) -> Transports {
        let path = Path::new(&main.config_directory).join("master.cf");
        let mut overrides = HashMap::new();
        if let Ok(mc) = conf::mastercf::MasterCf::load(&path) {
            for s in mc.services {
                if s.kind == conf::mastercf::ServiceType::Inet {
                    continue;
                }
                let o: Vec<(String, String, Origin)> = s
                    .overrides
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.clone(),
                            Origin::Override {
                                path: path.clone(),
                                line: s.line,
                                service: s.name.clone(),
                            },
                        )
                    })
                    .collect();
                overrides.insert(s.name.clone(), o);
            }
        }
        Transports {
            main: Arc::new(main.clone()),
            overrides,
            built: HashMap::new(),
        }
    }

    /// The transport `name`.
    pub fn get(&mut self, name: &str) -> Arc<Transport> {
        if let Some(t) = self.built.get(name) {
            return t.clone();
        }
        let cfg = match self.overrides.get(name) {
            Some(o) if !o.is_empty() => {
                let dir = Path::new(&self.main.config_directory);
                match conf::load_lenient(dir, o) {
                    Ok((c, _)) => Arc::new(c),
                    Err(e) => {
                        log::warning(&format!(
                            "transport {name}: cannot apply its master.cf overrides ({e}); using main.cf alone"
                        ));
                        self.main.clone()
                    }
                }
            }
            _ => self.main.clone(),
        };
        let passwords = cfg.smtp_sasl_auth_enable.then(|| {
            let p = PasswordMaps::open(&cfg);
            if let Some(problem) = p.problem() {
                log::warning(&format!(
                    "transport {name}: smtp_sasl_password_maps: {problem}; per-account limits cannot be applied"
                ));
            }
            p
        });
        let t = Arc::new(Transport { cfg, passwords });
        self.built.insert(name.to_string(), t.clone());
        t
    }
}

impl Transport {
    /// The SASL user a delivery from `sender` to `nexthop` will log in as,
    /// lower-cased; `None` without SASL or credentials. The lookup is the
    /// agent's: sender (with smtp_sender_dependent_authentication), then
    /// the next hop's host (bracketed next hops only: for MX next hops the
    /// server name is known only after the MX lookup), then the next hop
    /// as written and in its canonical form.
    pub fn account(&self, sender: &str, nexthop: &str) -> Option<String> {
        let p = self.passwords.as_ref()?;
        let written = nexthop.trim();
        let parsed = Nexthop::parse(written, 25).ok();
        let canonical = parsed.as_ref().map(|n| n.to_string());
        let mut dests = vec![written];
        if let Some(c) = canonical.as_deref()
            && !c.eq_ignore_ascii_case(written)
        {
            dests.push(c);
        }
        let host = parsed.as_ref().filter(|n| !n.mx).map(|n| n.host.as_str());
        p.lookup(
            self.cfg.smtp_sender_dependent_authentication,
            sender,
            host,
            &dests,
        )
        .ok()
        .flatten()
        .map(|c| c.user.to_ascii_lowercase())
    }

    /// The account limits of this transport.
    pub fn limits(&self) -> Limits {
        Limits::from_config(&self.cfg)
    }
}

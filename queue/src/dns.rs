//! The DNS resolver of the daemons (hickory): the system's configuration
//! (resolv.conf), or, for tests, only the server named by the environment
//! variable `POSTERN_DNS_SERVER=ip:port`. It is not a main.cf parameter and
//! production systems leave it unset.

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::SocketAddr;

/// Environment variable naming a DNS server (`ip:port`) to use instead of
/// the system's resolv.conf; for tests.
pub const DNS_SERVER_ENV: &str = "POSTERN_DNS_SERVER";

/// Reads [`DNS_SERVER_ENV`].
///
/// # Errors
/// The variable is set but is not `ip:port`.
pub fn server_from_env() -> Result<Option<SocketAddr>, String> {
    match std::env::var(DNS_SERVER_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{DNS_SERVER_ENV}={v}: expected ip:port, e.g. 127.0.0.1:5353")),
        _ => Ok(None),
    }
}

/// Builds a resolver: the system configuration, or only `server` (without
/// a cache, so a test's changed answers are seen at once). Must be called
/// inside a tokio runtime.
///
/// # Errors
/// The system configuration cannot be read, or the resolver cannot start.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let builder = match server {
        Some(sa) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = sa.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = sa.port();
            let ns = NameServerConfig::new(sa.ip(), true, vec![udp, tcp]);
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            let mut opts = ResolverOpts::default();
            opts.cache_size = 0;
            *b.options_mut() = opts;
            b
        }
        None => TokioResolver::builder_tokio().map_err(|e| {
            format!("cannot read the system DNS configuration (/etc/resolv.conf): {e}")
        })?,
    };
    builder
        .build()
        .map_err(|e| format!("cannot start the DNS resolver: {e}"))
}

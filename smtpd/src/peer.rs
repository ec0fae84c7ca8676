//! The client's name: a reverse lookup of its address, confirmed by a
//! forward lookup of that name (as Postfix does), else `unknown`. The
//! system resolver is used (so /etc/hosts works) on a blocking thread, with
//! a time limit so a dead DNS server never stalls a session. Answers are
//! kept for a minute: LAN devices connect for every message, and two
//! lookups per connection would cost more than the rest of the session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time allowed for the whole lookup.
const LIMIT: Duration = Duration::from_secs(5);

/// How long an answer (name or `unknown`) is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most addresses remembered.
const CACHE_MAX: usize = 10_000;

static CACHE: Mutex<Option<HashMap<IpAddr, (String, Instant)>>> = Mutex::new(None);

fn cached(addr: IpAddr) -> Option<String> {
    let guard = CACHE.lock().ok()?;
    let (name, at) = guard.as_ref()?.get(&addr)?;
    (at.elapsed() < CACHE_TTL).then(|| name.clone())
}

fn remember(addr: IpAddr, name: &str) {
    let Ok(mut guard) = CACHE.lock() else {
        return;
    };
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= CACHE_MAX {
        map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
    }
    map.insert(addr, (name.to_string(), Instant::now()));
}

/// The client as logged: `name[addr]`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Address.
    pub addr: IpAddr,
    /// Source port.
    pub port: u16,
    /// Verified host name or `unknown`.
    pub name: String,
}

impl Peer {
    /// `name[addr]`.
    pub fn namaddr(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }
}

/// Looks up the verified name of `addr`.
pub async fn lookup_name(addr: IpAddr) -> String {
    if let Some(n) = cached(addr) {
        return n;
    }
    let work = tokio::task::spawn_blocking(move || verified_name(addr));
    let name = match tokio::time::timeout(LIMIT, work).await {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => "unknown".to_string(),
        // A lookup that timed out is not remembered: DNS may be back soon.
        _ => return "unknown".to_string(),
    };
    remember(addr, &name);
    name
}

fn verified_name(addr: IpAddr) -> Option<String> {
    let sa: std::net::SocketAddr = (addr, 0).into();
    let name = reverse(&sa)?;
    // Forward-confirm: the name must resolve back to the address.
    let back = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0)).ok()?;
    let matches = back
        .map(|s| s.ip())
        .any(|ip| ip == addr || canonical(ip) == canonical(addr));
    matches.then(|| name.trim_end_matches('.').to_ascii_lowercase())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn reverse(sa: &std::net::SocketAddr) -> Option<String> {
    let mut host = [0 as libc::c_char; 1025];
    let (storage, len): (libc::sockaddr_storage, libc::socklen_t) = to_raw(sa);
    // SAFETY: storage holds a valid sockaddr of `len` bytes; host is a
    // writable buffer of its stated length; NI_NAMEREQD makes failure
    // explicit instead of returning the numeric address.
    let rc = unsafe {
        libc::getnameinfo(
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: getnameinfo NUL-terminated the buffer on success.
    let s = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    let name = s.to_string_lossy().into_owned();
    // A PTR record may hold anything: accept only host-name syntax.
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    ok.then_some(name)
}

fn to_raw(sa: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the family-specific part.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match sa {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_is_localhost() {
        let n = lookup_name("127.0.0.1".parse().unwrap()).await;
        assert!(n == "localhost" || n == "unknown", "{n}");
        // TEST-NET addresses have no PTR records.
        assert_eq!(lookup_name("192.0.2.123".parse().unwrap()).await, "unknown");
    }
}

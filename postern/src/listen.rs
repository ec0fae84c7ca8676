//! TCP listeners for inet services: `port`, `host:port` or `[ipv6]:port`
//! in master.cf; a bare port listens on every inet_interfaces address.

use anyhow::{Context, bail};
use conf::mastercf::Service;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

/// The addresses an inet service listens on.
///
/// # Errors
/// A malformed service name or interface address.
pub fn inet_addresses(cfg: &conf::Config, s: &Service) -> anyhow::Result<Vec<SocketAddr>> {
    let name = s.name.as_str();
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .with_context(|| format!("bad inet service name {name}"))?;
        (Some(h.to_string()), p)
    } else if let Some((h, p)) = name.rsplit_once(':') {
        (Some(h.to_string()), p)
    } else {
        (None, name)
    };
    let port = conf::nexthop::service_port(port)
        .with_context(|| format!("bad port in inet service name {name}"))?;
    let ips: Vec<IpAddr> = match host {
        Some(h) => vec![
            h.parse()
                .with_context(|| format!("service {name}: {h} is not an IP address"))?,
        ],
        None => interface_addresses(cfg)?,
    };
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// inet_interfaces as addresses, filtered by inet_protocols.
///
/// # Errors
/// An entry that is not an address, `all` or `loopback-only`.
pub fn interface_addresses(cfg: &conf::Config) -> anyhow::Result<Vec<IpAddr>> {
    let v4 = cfg.inet_protocols.iter().any(|p| p == "all" || p == "ipv4");
    let v6 = cfg.inet_protocols.iter().any(|p| p == "all" || p == "ipv6");
    let mut out = Vec::new();
    for i in &cfg.inet_interfaces {
        match i.as_str() {
            "all" => {
                if v4 {
                    out.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if v6 {
                    out.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
            }
            "loopback-only" => {
                if v4 {
                    out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
                }
                if v6 {
                    out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
                }
            }
            other => {
                let a = other.trim_start_matches('[').trim_end_matches(']');
                match a.parse::<IpAddr>() {
                    Ok(ip) => out.push(ip),
                    Err(_) => bail!(
                        "inet_interfaces: \"{other}\" is not an IP address (host names are not supported)"
                    ),
                }
            }
        }
    }
    Ok(out)
}

/// Binds a listening TCP socket (SO_REUSEADDR; IPv6 sockets are v6-only so
/// that `all` can bind both families).
///
/// # Errors
/// The address is in use or not available.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: valid fd, pointer to a live c_int of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    if addr.is_ipv6() {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
    }
    match addr {
        SocketAddr::V4(a) => {
            nix::sys::socket::bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(a))?
        }
        SocketAddr::V6(a) => {
            nix::sys::socket::bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn6::from(a))?
        }
    }
    // SAFETY: valid bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 1024) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

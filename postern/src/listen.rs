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
        let (h, p) = rest.split_once("]:").with_context(|| format!("bad inet service name {name}"))?;
        (Some(h.to_string()), p)
    } else if let Some((h, p)) = name.rsplit_once(':') {
        (Some(h.to_string()), p)
    } else {
        (None, name)
    };
    let port = conf::nexthop::service_port(port).with_context(|| format!("bad port in inet service name {name}"))?;
    let ips: Vec<IpAddr> = match host {
        Some(h) => vec![h.parse().with_context(|| format!("service {name}: {h} is not an IP address"))?],
        None => interface_addresses(cfg)?,
    };
    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
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
                    Err(_) => bail!("inet_interfaces: \"{other}\" is not an IP address (host names are not supported)"),
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
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt, Backlog};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

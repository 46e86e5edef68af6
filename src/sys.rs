//! The only module allowed `unsafe`: thin wrappers over the few calls libc exposes and socket2
//! does not (`SO_MAX_PACING_RATE`, `setns`, `IP_OPTIONS`, `getifaddrs`).
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// "No pacing limit", what the kernel reports for a socket nobody limited (`~0UL`).
pub(crate) const PACING_UNLIMITED: u64 = u64::MAX;

/// Reads `SO_MAX_PACING_RATE` (bytes/s) of `fd`.
pub(crate) fn max_pacing_rate(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime; `value` and `len`
    // are live, writable and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match len {
        // Older kernels answer with 32 bits; their "unlimited" is ~0U.
        4 => {
            let low = value as u32;
            if low == u32::MAX {
                PACING_UNLIMITED
            } else {
                u64::from(low)
            }
        }
        _ => value,
    })
}

/// Sets `SO_MAX_PACING_RATE` (bytes/s) of `fd`; [`PACING_UNLIMITED`] removes the limit.
pub(crate) fn set_max_pacing_rate(fd: BorrowedFd<'_>, rate: u64) -> io::Result<()> {
    // SAFETY: `fd` is valid for the borrow; the option value points at a live u64 of the
    // length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&rate as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // Kernels before 4.20 only take 32 bits.
    let narrow: u32 = rate.try_into().unwrap_or(u32::MAX);
    // SAFETY: as above, with a live u32.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&narrow as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME`).
pub(crate) fn enter_network_namespace(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is a valid descriptor for the call; setns only changes this thread's
    // namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or, with an empty slice, clears) the IPv4 options every datagram sent on `socket`
/// carries (`IP_OPTIONS`); the raw transport uses it for the Router Alert option (RFC 2113).
pub(crate) fn set_ip_options(socket: BorrowedFd<'_>, options: &[u8]) -> io::Result<()> {
    // IPv4 options are at most 40 bytes; the kernel rejects longer ones, we do it first.
    if options.len() > 40 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ip options longer than 40 bytes",
        ));
    }
    let len = libc::socklen_t::try_from(options.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `socket` is a valid open descriptor for the call's duration (BorrowedFd), and the
    // pointer/length pair describes the live `options` slice, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every IPv4 and IPv6 address configured on this host's interfaces (`getifaddrs`), loopback
/// included; the agent treats them as local (same-host delivery) and binds its sockets to them.
pub(crate) fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success it receives a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a non-null node of the list getifaddrs returned, alive until
        // freeifaddrs below.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose `sa_family` says
            // which larger struct it is; we only read the struct of that family.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                // Link-local addresses need a scope id to be used; the agent skips them.
                if !ip.is_unicast_link_local() {
                    addrs.push(IpAddr::V6(ip));
                }
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no
    // reference into the list outlives this call (addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_include_loopback() {
        let addrs = local_addresses().expect("getifaddrs");
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }

    #[test]
    fn ip_options_reject_oversized() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsFd::as_fd(&socket);
        assert!(set_ip_options(fd, &[1; 44]).is_err());
        // Router Alert (RFC 2113): type 148, length 4, value 0.
        set_ip_options(fd, &[148, 4, 0, 0]).expect("router alert accepted");
        set_ip_options(fd, &[]).expect("options cleared");
    }
}

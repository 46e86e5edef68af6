//! The only module allowed `unsafe`: thin wrappers over the few calls libc exposes and socket2
//! does not (`SO_MAX_PACING_RATE`, `SO_COOKIE`, `setns`, `IP_OPTIONS`, `IPV6_HOPOPTS`, `IP_RECVTTL`,
//! `recvmsg` with its control messages, `getifaddrs`, the `SIOCETHTOOL` link speed,
//! passing file descriptors over Unix sockets with `SCM_RIGHTS`, and `geteuid`).
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// The kernel's identity of the socket behind `fd` (`SO_COOKIE`, Linux 4.12+): the same u64
/// for every descriptor dup'd from it, never reused for another socket while the system runs.
pub(crate) fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime; `cookie` and `len`
    // are live, writable and `len` holds the size of `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "getsockopt SO_COOKIE answered with an unexpected length",
        ));
    }
    Ok(cookie)
}

/// This process's effective user id, as `SO_PEERCRED` reports a peer's.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
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

/// Sets (or, with an empty slice, clears) the IPv6 Hop-by-Hop Options header every datagram
/// sent on `socket` carries (`IPV6_HOPOPTS`, RFC 3542 §6.3; needs `CAP_NET_RAW` on Linux); the
/// raw transport uses it for the Router Alert option (RFC 2711). `header` is the whole
/// extension header: next-header byte (the kernel fills it in), length byte in 8-octet units
/// beyond the first 8, then the options padded to a multiple of 8 bytes.
pub(crate) fn set_ipv6_hop_by_hop_options(socket: BorrowedFd<'_>, header: &[u8]) -> io::Result<()> {
    let well_formed = header.is_empty()
        || (header.len().is_multiple_of(8)
            && header.len() <= 8 * 256
            && usize::from(header[1]) == header.len() / 8 - 1);
    if !well_formed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ipv6 hop-by-hop header must be a multiple of 8 bytes and match its length byte",
        ));
    }
    let len = libc::socklen_t::try_from(header.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // A null option with length 0 removes the sticky header.
    let value: *const libc::c_void = if header.is_empty() {
        std::ptr::null()
    } else {
        header.as_ptr().cast()
    };
    // SAFETY: `socket` is a valid open descriptor for the call (BorrowedFd); `value` is null
    // with length 0 or points at the live `header` slice of `len` bytes, which the kernel
    // only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPOPTS,
            value,
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to attach the IP TTL to every datagram received on the IPv4 `socket`
/// (`IP_RECVTTL`), read back by [`recv_with_hop_limit`]. socket2 has the IPv6 twin
/// (`set_recv_hoplimit_v6`) but not this one.
pub(crate) fn set_recv_ttl_v4(socket: BorrowedFd<'_>, enabled: bool) -> io::Result<()> {
    let value = libc::c_int::from(enabled);
    // SAFETY: `socket` is valid for the call; the option value points at a live c_int of the
    // length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram read by [`recv_with_hop_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReceivedDatagram {
    /// Bytes written to the buffer.
    pub(crate) len: usize,
    /// Who sent it (port 0 on raw sockets).
    pub(crate) source: SocketAddr,
    /// The IPv4 TTL / IPv6 hop limit it arrived with, when the socket asked for it
    /// (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`) and the kernel attached it.
    pub(crate) hop_limit: Option<u8>,
    /// The datagram was longer than the buffer and cut (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// Control-message space for a TTL and a hop limit with room to spare, aligned like
/// `cmsghdr` (CMSG_FIRSTHDR hands out pointers into it).
#[repr(C, align(8))]
struct ControlBuffer([u8; 128]);

/// Reads one datagram from the non-blocking `socket` without waiting (`recvmsg` with
/// `MSG_DONTWAIT`), with its source address and the TTL / hop limit from the control
/// messages. `WouldBlock` when nothing is queued.
pub(crate) fn recv_with_hop_limit(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<ReceivedDatagram> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data (on some targets with private padding fields, hence
    // zeroed rather than a literal); all-zero means no name, no buffers, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: `socket` is valid for the call; every pointer in `msg` refers to a live local
    // (`storage`, `iov` → `buf`, `control`) with the size given next to it, and nothing else
    // borrows them until the call returns.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    let len = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    let source = socket_addr_from(&storage).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "recvmsg returned a source address that is neither ipv4 nor ipv6",
        )
    })?;
    let mut hop_limit = None;
    // SAFETY: `msg` was filled by a successful recvmsg; its control pointer and (updated)
    // length describe `control`, still alive and unborrowed.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points at a complete,
        // aligned cmsghdr inside `control` (the macros check it against msg_controllen).
        let header = unsafe { &*cmsg };
        let carries_hops = (header.cmsg_level == libc::IPPROTO_IP
            && header.cmsg_type == libc::IP_TTL)
            || (header.cmsg_level == libc::IPPROTO_IPV6 && header.cmsg_type == libc::IPV6_HOPLIMIT);
        // SAFETY: CMSG_LEN only computes a length.
        let int_len = unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as libc::c_uint) };
        #[allow(clippy::unnecessary_cast)] // cmsg_len is size_t on glibc, socklen_t on musl
        let cmsg_len = header.cmsg_len as usize;
        if carries_hops && cmsg_len >= int_len as usize {
            // SAFETY: the message is at least CMSG_LEN(sizeof(int)) long, so an int of data
            // follows the header inside `control`; read_unaligned makes no alignment claim.
            let value =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
            hop_limit = u8::try_from(value).ok();
        }
        // SAFETY: `cmsg` is a valid header of `msg`'s control data (see above).
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(ReceivedDatagram {
        len: len.min(buf.len()),
        source,
        hop_limit,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// Most descriptors one `recv_with_fds` call takes; the local API passes one per message.
pub(crate) const MAX_FDS_PER_RECV: usize = 4;

/// Sends `bytes` on the non-blocking Unix stream `socket` with `fd` attached (`SCM_RIGHTS`),
/// without waiting: `WouldBlock` when the socket buffer is full. Returns how many bytes went;
/// the descriptor travels with the first of them, so the caller sends any rest plainly.
pub(crate) fn send_with_fd(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor must travel with at least one byte",
        ));
    }
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE only computes a length.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as libc::c_uint) };
    // SAFETY: msghdr is plain old data; all-zero means no name, no buffers, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes `control`, which is larger than CMSG_SPACE(sizeof(int)), so
    // CMSG_FIRSTHDR returns a non-null, aligned header inside it.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::other("no room for the control message"));
    }
    // SAFETY: `cmsg` points at a complete cmsghdr inside `control` (see above); its data
    // area holds one int (CMSG_SPACE(sizeof(int)) was reserved); write_unaligned makes no
    // alignment claim.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as libc::c_uint) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    // SAFETY: `socket` and `fd` are valid for the call; `msg` points at live locals (`iov` →
    // `bytes`, `control`) with their sizes; the kernel only reads them.
    let sent = unsafe {
        libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Reads what is queued on the non-blocking Unix stream `socket` into `buf` without
/// waiting (`WouldBlock` when nothing is); descriptors that came with the bytes are appended
/// to `fds`, close-on-exec. `Ok(0)` is the end of the stream. More descriptors than
/// [`MAX_FDS_PER_RECV`] in one message are closed by the kernel (`MSG_CTRUNC`) and reported
/// as `InvalidData` after the bytes were kept.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE only computes a length.
    let space = unsafe {
        libc::CMSG_SPACE((MAX_FDS_PER_RECV * std::mem::size_of::<libc::c_int>()) as libc::c_uint)
    };
    // SAFETY: msghdr is plain old data; all-zero means no name, no buffers, no control.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = (space as usize).min(control.0.len()) as _;
    // SAFETY: `socket` is valid for the call; every pointer in `msg` refers to a live local
    // (`iov` → `buf`, `control`) with the size given next to it.
    let received = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let len = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: `msg` was filled by a successful recvmsg; its control pointer and (updated)
    // length describe `control`, still alive and unborrowed.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points at a complete,
        // aligned cmsghdr inside `control`.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) only computes the header length.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            #[allow(clippy::unnecessary_cast)] // cmsg_len is size_t on glibc, socklen_t on musl
            let count = (header.cmsg_len as usize).saturating_sub(header_len)
                / std::mem::size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: the message holds `count` ints after its header, inside `control`;
                // read_unaligned makes no alignment claim.
                let raw = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>().add(i))
                };
                if raw >= 0 {
                    // SAFETY: SCM_RIGHTS installed `raw` in this process for us alone; nothing
                    // else owns it, so it is closed exactly once, by the OwnedFd.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        // SAFETY: `cmsg` is a valid header of `msg`'s control data (see above).
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors came with one message than accepted; the rest were closed",
        ));
    }
    Ok(len)
}

/// The IPv4 or IPv6 address in `storage`, by its family.
fn socket_addr_from(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: family AF_INET means the storage holds a sockaddr_in, which fits in
            // (and is no more aligned than) sockaddr_storage.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family AF_INET6 means the storage holds a sockaddr_in6, which fits in
            // (and is no more aligned than) sockaddr_storage.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One address of one interface, as `getifaddrs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceAddr {
    pub(crate) addr: IpAddr,
    /// The interface's name (`ifa_name`).
    pub(crate) interface: String,
    /// The interface is a loopback device (`IFF_LOOPBACK`).
    pub(crate) loopback: bool,
}

/// Every IPv4 and IPv6 address of this host's interfaces with the interface holding it
/// (`getifaddrs`, in the calling thread's network namespace), link-local ones included.
pub(crate) fn interface_addresses() -> io::Result<Vec<InterfaceAddr>> {
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
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose `sa_family` says
        // which larger struct it is; we only read the struct of that family.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let addr = if family == libc::AF_INET {
            // SAFETY: family AF_INET means the storage is a sockaddr_in.
            let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
            let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        } else {
            continue;
        };
        // SAFETY: `ifa_name` is non-null and points to the NUL-terminated interface name
        // of this node, alive until freeifaddrs below; it is copied out here.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        addrs.push(InterfaceAddr {
            addr,
            interface: name.to_string_lossy().into_owned(),
            loopback: entry.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no
    // reference into the list outlives this call (names and addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    Ok(addrs)
}

/// Every IPv4 and IPv6 address configured on this host's interfaces (`getifaddrs`), loopback
/// included; the agent treats them as local (same-host delivery) and binds its sockets to them.
pub(crate) fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut addrs: Vec<IpAddr> = interface_addresses()?
        .into_iter()
        .map(|a| a.addr)
        // Link-local IPv6 addresses need a scope id to be used; the agent skips them.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// `struct ethtool_cmd` of `<linux/ethtool.h>` (the `ETHTOOL_GSET` answer); libc lacks it.
#[repr(C)]
#[derive(Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

/// `ETHTOOL_GSET`: get the link settings (allowed without privileges).
const ETHTOOL_GSET: u32 = 0x0000_0001;
/// `SPEED_UNKNOWN` as the 32 bits `speed | speed_hi << 16` carry it.
const ETHTOOL_SPEED_UNKNOWN: u32 = u32::MAX;

/// The link speed of `interface` in Mbit/s as its driver reports it (`SIOCETHTOOL` with
/// `ETHTOOL_GSET`, what `ethtool IFACE` and `/sys/class/net/IFACE/speed` show). `None` when
/// the driver reports no speed: unknown (`-1`, e.g. a link that is down), no ethtool support
/// (loopback, many virtual devices), or no such interface.
///
/// The ioctl goes through a socket of the calling thread's network namespace, so an agent
/// that entered a namespace reads that namespace's devices; `/sys/class/net` would show the
/// devices of whichever namespace the sysfs mount belongs to.
pub(crate) fn link_speed_mbit(interface: &str) -> io::Result<Option<u64>> {
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Ok(None);
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut cmd = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..EthtoolCmd::default()
    };
    // SAFETY: ifreq is plain old data (a name array and a union of plain fields); all-zero
    // is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut cmd as *mut EthtoolCmd).cast();
    // SAFETY: the socket is open for the call; `request` is a live ifreq with a
    // NUL-terminated name (zeroed tail, length checked above) whose data pointer refers to
    // the live `cmd`, laid out as the kernel's ethtool_cmd, which the kernel fills in.
    let rc = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCETHTOOL as _,
            &mut request as *mut libc::ifreq,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENODEV | libc::ENOTTY) => Ok(None),
            _ => Err(err),
        };
    }
    let speed = u32::from(cmd.speed) | (u32::from(cmd.speed_hi) << 16);
    Ok(match speed {
        0 | ETHTOOL_SPEED_UNKNOWN => None,
        mbit => Some(u64::from(mbit)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses_name_the_loopback_device() {
        let addrs = interface_addresses().expect("getifaddrs");
        let lo = addrs
            .iter()
            .find(|a| a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("127.0.0.1 is configured");
        assert!(lo.loopback, "{lo:?}");
        assert!(!lo.interface.is_empty(), "{lo:?}");
        // Loopback has no ethtool link settings; a name that cannot exist has no speed either.
        assert_eq!(link_speed_mbit(&lo.interface).expect("ioctl"), None);
        assert_eq!(link_speed_mbit("qtoq-no-such").expect("ioctl"), None);
        assert_eq!(
            link_speed_mbit("much-too-long-a-name").expect("ioctl"),
            None
        );
    }

    #[test]
    fn local_addresses_include_loopback() {
        let addrs = local_addresses().expect("getifaddrs");
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }

    #[test]
    fn socket_cookie_follows_the_socket_not_the_descriptor() {
        let first = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let second = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dup = first.try_clone().expect("dup");
        let cookie = |s: &std::net::UdpSocket| {
            socket_cookie(std::os::fd::AsFd::as_fd(s)).expect("SO_COOKIE")
        };
        assert_eq!(cookie(&first), cookie(&dup));
        assert_ne!(cookie(&first), cookie(&second));
        let file = std::fs::File::open("/dev/null").expect("open");
        assert!(socket_cookie(std::os::fd::AsFd::as_fd(&file)).is_err());
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

    #[test]
    fn hop_by_hop_header_shape_is_checked_before_the_kernel() {
        let socket = std::net::UdpSocket::bind("[::1]:0").expect("bind");
        let fd = std::os::fd::AsFd::as_fd(&socket);
        for bad in [
            &[0u8, 0, 5, 2, 0, 1][..],
            &[0, 1, 5, 2, 0, 1, 1, 0],
            &[0; 12],
        ] {
            let e = set_ipv6_hop_by_hop_options(fd, bad).expect_err("malformed header");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    /// The TTL a datagram was sent with comes back from `recv_with_hop_limit` (IPv4 through
    /// IP_RECVTTL; loopback does not decrement it), with the payload and the sender.
    #[test]
    fn recv_reports_ttl_source_and_would_block() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsFd::as_fd(&receiver);
        let mut buf = [0u8; 16];
        let idle = recv_with_hop_limit(fd, &mut buf).expect_err("nothing queued");
        assert_eq!(idle.kind(), io::ErrorKind::WouldBlock);
        set_recv_ttl_v4(fd, true).expect("IP_RECVTTL");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender.set_ttl(29).expect("ttl");
        sender
            .send_to(b"hello", receiver.local_addr().unwrap())
            .expect("send");
        let got = loop {
            match recv_with_hop_limit(fd, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.expect("recv"),
            }
        };
        assert_eq!(got.hop_limit, Some(29));
        assert_eq!(got.source, sender.local_addr().unwrap());
        assert_eq!(&buf[..got.len], b"hello");
        assert!(!got.truncated);
        // Cut to a 2-byte buffer: flagged, never past the buffer.
        sender
            .send_to(b"hello", receiver.local_addr().unwrap())
            .expect("send");
        let mut small = [0u8; 2];
        let got = loop {
            match recv_with_hop_limit(fd, &mut small) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.expect("recv"),
            }
        };
        assert!(got.truncated);
        assert_eq!((got.len, &small), (2, b"he"));
    }

    /// A descriptor sent with bytes arrives with them, usable and distinct from the sender's.
    #[test]
    fn descriptors_travel_with_their_bytes() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        let (mut pipe_read, mut pipe_write) = std::io::pipe().expect("pipe");
        let mut fds = Vec::new();
        let mut buf = [0u8; 64];
        let idle = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect_err("nothing queued");
        assert_eq!(idle.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            send_with_fd(a.as_fd(), b"hello", pipe_write.as_fd()).expect("sent"),
            5
        );
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("received");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        assert_ne!(fds[0].as_raw_fd(), pipe_write.as_raw_fd());
        // The received descriptor is the pipe's write end: what goes in comes out.
        let mut passed = std::fs::File::from(fds.pop().expect("one fd"));
        passed.write_all(b"x").expect("write through the passed fd");
        drop(passed);
        pipe_write.write_all(b"y").expect("original still open");
        drop(pipe_write);
        let mut out = String::new();
        pipe_read.read_to_string(&mut out).expect("read");
        assert_eq!(out, "xy");
        assert!(send_with_fd(a.as_fd(), b"", b.as_fd()).is_err());
        drop(a);
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf, &mut fds).expect("eof"),
            0
        );
    }
}

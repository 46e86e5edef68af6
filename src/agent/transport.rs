//! How RSVP datagrams leave and reach the agent: UDP encapsulation (RFC 2205 Appendix C), raw
//! IP protocol 46 with the Router Alert option, or an in-memory network for tests.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::task::Poll;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::memory::{MemoryDatagram, MemoryNetwork};
use crate::engine::Transmit;

/// IP protocol number of RSVP.
pub const IPPROTO_RSVP: u8 = 46;
/// UDP port `Pu` of RFC 2205 Appendix C (`rsvp-encap-1`): where UDP-encapsulated RSVP is sent
/// and received for unicast sessions.
pub const RSVP_ENCAP_PORT: u16 = 1698;
/// UDP port `Pu'` of RFC 2205 Appendix C (`rsvp-encap-2`), used by raw-capable nodes for
/// multicast sessions (qtoq's sessions are unicast TCP, so it is only named here).
pub const RSVP_ENCAP_PORT_2: u16 = 1699;
/// IPv4 Router Alert option (RFC 2113): type 148, length 4, value 0 ("examine packet").
const ROUTER_ALERT_V4: [u8; 4] = [148, 4, 0, 0];
/// IPv6 Hop-by-Hop Options header holding the Router Alert option (RFC 2711): next header
/// (filled in by the kernel), header length 0 (8 bytes), option type 5, length 2, value 1
/// ("datagram contains an RSVP message"), then a PadN of no data bytes to reach 8 bytes.
const ROUTER_ALERT_V6_HOP_BY_HOP: [u8; 8] = [0, 0, 5, 2, 0, 1, 1, 0];
/// Largest RSVP message we accept (the common header's length is 16 bits).
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Which transport an agent uses for RSVP messages.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use qtoq::agent::Transport;
///
/// // Two agents on one host, each on its own loopback address with the standard port.
/// let a = qtoq::Agent::builder()
///     .transport(Transport::udp())
///     .local_addr("127.0.0.2".parse().unwrap())
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Transport {
    /// UDP encapsulation (RFC 2205 Appendix C): messages go to the peer's `port` and are
    /// received on `port` at each local address. Needs no privileges with a port ≥ 1024 (the
    /// standard port 1698 qualifies).
    Udp {
        /// The UDP port agents listen on and send to (default [`RSVP_ENCAP_PORT`]).
        port: u16,
    },
    /// Raw IP protocol 46, Path-type messages carrying the Router Alert option (IPv4 option,
    /// RFC 2113; IPv6 Hop-by-Hop option with value 1 "RSVP", RFC 2711); needs `CAP_NET_RAW`.
    /// The received TTL / hop limit reaches the engine on both families.
    Raw,
    /// An in-memory network shared with other agents of this process (tests).
    Memory(MemoryNetwork),
}

impl Transport {
    /// UDP encapsulation on the standard port 1698.
    pub fn udp() -> Self {
        Transport::Udp {
            port: RSVP_ENCAP_PORT,
        }
    }

    /// Raw IP when this process may open raw sockets (`CAP_NET_RAW`), UDP encapsulation on
    /// the standard port otherwise.
    pub fn raw_if_permitted() -> Self {
        match Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_RSVP))),
        ) {
            Ok(_) => Transport::Raw,
            Err(_) => Transport::udp(),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Udp { .. } => "udp",
            Transport::Raw => "raw",
            Transport::Memory(_) => "memory",
        }
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport::udp()
    }
}

/// One datagram received, its payload at `buf[offset..offset + len]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) source: IpAddr,
    pub(crate) destination: IpAddr,
    pub(crate) ttl: Option<u8>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// A socket bound to one local address, with the per-socket send options last applied (so
/// they are only changed when a datagram needs different ones).
pub(crate) struct BoundSocket {
    socket: UdpSocket,
    local: IpAddr,
    ttl: Option<u8>,
    router_alert: bool,
}

/// The live transport an agent drives.
pub(crate) enum Link {
    Udp {
        sockets: Vec<BoundSocket>,
        port: u16,
    },
    Raw {
        sockets: Vec<BoundSocket>,
    },
    Memory(super::memory::MemoryEndpoint),
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Udp { sockets, port } => f
                .debug_struct("Udp")
                .field("port", port)
                .field(
                    "locals",
                    &sockets.iter().map(|s| s.local).collect::<Vec<_>>(),
                )
                .finish(),
            Link::Raw { sockets } => f
                .debug_struct("Raw")
                .field(
                    "locals",
                    &sockets.iter().map(|s| s.local).collect::<Vec<_>>(),
                )
                .finish(),
            Link::Memory(ep) => f.debug_tuple("Memory").field(ep).finish(),
        }
    }
}

/// A link's sockets taken out of the Tokio runtime that drove them, for another runtime to
/// drive (see [`Link::detach`]).
pub(crate) struct DetachedLink {
    udp_port: Option<u16>,
    sockets: Vec<DetachedSocket>,
}

struct DetachedSocket {
    fd: OwnedFd,
    local: IpAddr,
    ttl: Option<u8>,
    router_alert: bool,
}

impl DetachedLink {
    /// Registers the sockets with the current Tokio runtime.
    pub(crate) fn attach(self) -> io::Result<Link> {
        let sockets = self
            .sockets
            .into_iter()
            .map(|s| {
                Ok(BoundSocket {
                    socket: UdpSocket::from_std(std::net::UdpSocket::from(s.fd))?,
                    local: s.local,
                    ttl: s.ttl,
                    router_alert: s.router_alert,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(match self.udp_port {
            Some(port) => Link::Udp { sockets, port },
            None => Link::Raw { sockets },
        })
    }
}

impl Link {
    /// Duplicates the link's sockets so that another runtime can drive them once this
    /// link (and the runtime it is registered with) is gone. The bound addresses, ports and
    /// per-socket options stay: peers see the same agent.
    ///
    /// # Errors
    ///
    /// When a descriptor cannot be duplicated, or for an in-memory link (nothing to move).
    pub(crate) fn detach(&self) -> io::Result<DetachedLink> {
        let (udp_port, sockets) = match self {
            Link::Udp { sockets, port } => (Some(*port), sockets),
            Link::Raw { sockets } => (None, sockets),
            Link::Memory(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "an in-memory link cannot move to another runtime",
                ))
            }
        };
        let sockets = sockets
            .iter()
            .map(|s| {
                Ok(DetachedSocket {
                    fd: s.socket.as_fd().try_clone_to_owned()?,
                    local: s.local,
                    ttl: s.ttl,
                    router_alert: s.router_alert,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(DetachedLink { udp_port, sockets })
    }

    /// Opens the transport on `locals`; must run inside a Tokio runtime. `lenient` (the
    /// default agent) skips addresses that cannot be bound and takes an ephemeral UDP port
    /// where the standard one is taken, as long as one address works.
    pub(crate) fn open(
        transport: &Transport,
        locals: &[IpAddr],
        lenient: bool,
    ) -> io::Result<Link> {
        if locals.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the agent has no local address to bind: give one with AgentBuilder::local_addr",
            ));
        }
        let open_each = |open: &dyn Fn(IpAddr) -> io::Result<BoundSocket>| {
            let mut sockets = Vec::new();
            let mut first_error = None;
            for ip in locals {
                match open(*ip) {
                    Ok(s) => sockets.push(s),
                    Err(e) if lenient => {
                        tracing::warn!(%ip, error = %e, "qtoq agent: address skipped");
                        first_error.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            match (sockets.is_empty(), first_error) {
                (true, Some(e)) => Err(e),
                _ => Ok(sockets),
            }
        };
        match transport {
            Transport::Udp { port } => {
                let port = *port;
                let sockets = open_each(&|ip| match udp_socket(SocketAddr::new(ip, port)) {
                    Err(e) if lenient && e.kind() == io::ErrorKind::AddrInUse => {
                        tracing::warn!(%ip, port, "qtoq agent: rsvp port taken, using an ephemeral port (peers cannot reach this agent unsolicited)");
                        udp_socket(SocketAddr::new(ip, 0))
                    }
                    other => other,
                })?;
                Ok(Link::Udp { sockets, port })
            }
            Transport::Raw => Ok(Link::Raw {
                sockets: open_each(&raw_socket)?,
            }),
            Transport::Memory(network) => Ok(Link::Memory(network.attach(locals)?)),
        }
    }

    /// The addresses the transport is bound to, with the UDP port where there is one.
    pub(crate) fn bound(&self) -> Vec<SocketAddr> {
        match self {
            Link::Udp { sockets, .. } | Link::Raw { sockets } => sockets
                .iter()
                .map(|s| s.socket.local_addr().unwrap_or(SocketAddr::new(s.local, 0)))
                .collect(),
            Link::Memory(_) => Vec::new(),
        }
    }

    /// Sends one datagram. Failures are returned for the caller to count and log; RSVP's
    /// refreshes make up for a lost message.
    pub(crate) async fn send(&mut self, t: &Transmit) -> io::Result<()> {
        match self {
            Link::Udp { sockets, port } => {
                let s = pick(sockets, t)?;
                if s.ttl != Some(t.ttl) {
                    set_ttl(&s.socket, s.local, t.ttl)?;
                    s.ttl = Some(t.ttl);
                }
                s.socket
                    .send_to(&t.payload, SocketAddr::new(t.destination, *port))
                    .await?;
                Ok(())
            }
            Link::Raw { sockets } => {
                let s = pick(sockets, t)?;
                if s.ttl != Some(t.ttl) {
                    set_ttl(&s.socket, s.local, t.ttl)?;
                    s.ttl = Some(t.ttl);
                }
                if s.router_alert != t.router_alert {
                    // Sticky per socket, so changed only when this datagram differs from the
                    // last one (Path vs Resv alternate rarely on one socket).
                    match (s.local.is_ipv4(), t.router_alert) {
                        (true, true) => {
                            crate::sys::set_ip_options(s.socket.as_fd(), &ROUTER_ALERT_V4)?
                        }
                        (true, false) => crate::sys::set_ip_options(s.socket.as_fd(), &[])?,
                        (false, true) => crate::sys::set_ipv6_hop_by_hop_options(
                            s.socket.as_fd(),
                            &ROUTER_ALERT_V6_HOP_BY_HOP,
                        )?,
                        (false, false) => {
                            crate::sys::set_ipv6_hop_by_hop_options(s.socket.as_fd(), &[])?
                        }
                    }
                    s.router_alert = t.router_alert;
                }
                // Raw sockets take no port (IPv6 raw sockets demand 0 or the protocol).
                s.socket
                    .send_to(&t.payload, SocketAddr::new(t.destination, 0))
                    .await?;
                Ok(())
            }
            Link::Memory(ep) => {
                let source = t.source.unwrap_or(t.destination);
                ep.send(MemoryDatagram {
                    source,
                    destination: t.destination,
                    ttl: t.ttl,
                    payload: t.payload.clone(),
                });
                Ok(())
            }
        }
    }

    /// Waits for the next datagram. Datagrams too short to be IP packets (raw) are skipped and
    /// counted in `malformed`. The received TTL / hop limit comes from the IPv4 header (raw
    /// IPv4) or from the `IP_TTL` / `IPV6_HOPLIMIT` control message (UDP, raw IPv6).
    ///
    /// Cancel safe: a datagram is only taken off a socket in the poll that returns it.
    pub(crate) async fn recv(
        &mut self,
        buf: &mut [u8],
        malformed: &mut u64,
    ) -> io::Result<Received> {
        match self {
            Link::Udp { sockets, .. } => {
                let (i, d) = recv_any(sockets, buf).await?;
                Ok(Received {
                    source: d.source.ip(),
                    destination: sockets[i].local,
                    ttl: d.hop_limit,
                    offset: 0,
                    len: d.len,
                })
            }
            Link::Raw { sockets } => loop {
                let (i, d) = recv_any(sockets, buf).await?;
                let (source, len) = (d.source, d.len);
                let local = sockets[i].local;
                if local.is_ipv6() {
                    // IPv6 raw sockets hand over the payload only; the hop limit comes as a
                    // control message.
                    return Ok(Received {
                        source: source.ip(),
                        destination: local,
                        ttl: d.hop_limit,
                        offset: 0,
                        len,
                    });
                }
                match parse_ipv4_header(&buf[..len]) {
                    Some((header_len, ttl, src, dst)) => {
                        return Ok(Received {
                            source: src.into(),
                            destination: dst.into(),
                            ttl: Some(ttl),
                            offset: header_len,
                            len: len - header_len,
                        })
                    }
                    None => {
                        *malformed += 1;
                        tracing::debug!(from = %source, len, "raw transport: bad ipv4 header, dropped");
                    }
                }
            },
            Link::Memory(ep) => {
                let Some(d) = ep.recv().await else {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "memory network endpoint closed",
                    ));
                };
                let len = d.payload.len().min(buf.len());
                buf[..len].copy_from_slice(&d.payload[..len]);
                Ok(Received {
                    source: d.source,
                    destination: d.destination,
                    ttl: Some(d.ttl),
                    offset: 0,
                    len,
                })
            }
        }
    }
}

/// The socket to send `t` from: the one bound to `t.source` if given, else the first of the
/// destination's address family.
fn pick<'a>(sockets: &'a mut [BoundSocket], t: &Transmit) -> io::Result<&'a mut BoundSocket> {
    let index = t
        .source
        .and_then(|src| sockets.iter().position(|s| s.local == src))
        .or_else(|| {
            sockets
                .iter()
                .position(|s| s.local.is_ipv4() == t.destination.is_ipv4())
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "no local address of the family of {}: add one with AgentBuilder::local_addr",
                    t.destination
                ),
            )
        })?;
    Ok(&mut sockets[index])
}

fn set_ttl(socket: &UdpSocket, local: IpAddr, ttl: u8) -> io::Result<()> {
    if local.is_ipv4() {
        socket.set_ttl(u32::from(ttl))
    } else {
        SockRef::from(socket).set_unicast_hops_v6(u32::from(ttl))
    }
}

/// The next datagram of any of `sockets`: the index of its socket and what `recvmsg` said.
async fn recv_any(
    sockets: &[BoundSocket],
    buf: &mut [u8],
) -> io::Result<(usize, crate::sys::ReceivedDatagram)> {
    // Start where the last datagram came from +1 would be fairer; sockets are few (one per
    // local address) and RSVP traffic is light, so plain order is enough.
    poll_fn(|cx| {
        for (i, s) in sockets.iter().enumerate() {
            // Tokio's readiness, then recvmsg ourselves (Tokio's recv_from does not return
            // control messages); a spurious wake-up clears readiness and polls again.
            loop {
                match s.socket.poll_recv_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                match s.socket.try_io(Interest::READABLE, || {
                    crate::sys::recv_with_hop_limit(s.socket.as_fd(), buf)
                }) {
                    Ok(d) => return Poll::Ready(Ok((i, d))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        Poll::Pending
    })
    .await
}

fn udp_socket(addr: SocketAddr) -> io::Result<BoundSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    receive_hop_limit(&socket, addr.ip())?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the rsvp udp socket to {addr}: {e} (another agent there? choose another local address or port)"),
        )
    })?;
    Ok(BoundSocket {
        socket: UdpSocket::from_std(socket.into())?,
        local: addr.ip(),
        ttl: None,
        router_alert: false,
    })
}

fn raw_socket(ip: IpAddr) -> io::Result<BoundSocket> {
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_RSVP))),
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open a raw ip protocol 46 socket: {e} (needs CAP_NET_RAW; use Transport::udp() otherwise)"),
        )
    })?;
    if ip.is_ipv6() {
        // No IPV6_V6ONLY here: Linux refuses it on raw sockets (they have their protocol
        // number from the start) and an IPv6 raw socket never sees IPv4 anyway.
        // IPv4 raw sockets read the TTL from the header they hand over; IPv6 ones strip it.
        receive_hop_limit(&socket, ip)?;
    }
    socket.set_nonblocking(true)?;
    // Binding a raw socket filters on the destination address: each agent sees its own.
    socket.bind(&addr.into())?;
    // A raw socket behaves like a datagram socket for recvfrom/sendto, so Tokio's UdpSocket
    // drives its readiness; the payload is the IP packet (IPv4) or the RSVP message (IPv6).
    Ok(BoundSocket {
        socket: UdpSocket::from_std(socket.into())?,
        local: ip,
        ttl: None,
        router_alert: false,
    })
}

/// Makes `socket` report the TTL / hop limit of each datagram it receives (RFC 2205 §3.1.1
/// compares it with the common header's Send_TTL to notice non-RSVP hops).
fn receive_hop_limit(socket: &Socket, local: IpAddr) -> io::Result<()> {
    if local.is_ipv4() {
        crate::sys::set_recv_ttl_v4(socket.as_fd(), true)
    } else {
        socket.set_recv_hoplimit_v6(true)
    }
}

/// `(header length, ttl, source, destination)` of an IPv4 packet whose header is complete.
fn parse_ipv4_header(packet: &[u8]) -> Option<(usize, u8, Ipv4Addr, Ipv4Addr)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let ttl = packet[8];
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((header_len, ttl, src, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a test needing `CAP_NET_RAW` may run (see the common test rule: skip with a
    /// reason, or fail when `QTOQ_REQUIRE_PRIVILEGED=1`).
    fn raw_permitted() -> bool {
        let ok = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_RSVP))),
        )
        .is_ok();
        if !ok {
            if std::env::var("QTOQ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("CAP_NET_RAW is required (QTOQ_REQUIRE_PRIVILEGED=1) but not available");
            }
            eprintln!("skipping: CAP_NET_RAW (raw ip protocol 46) not available");
        }
        ok
    }

    fn transmit(destination: IpAddr, ttl: u8, router_alert: bool, payload: &[u8]) -> Transmit {
        Transmit {
            destination,
            source: None,
            router_alert,
            ttl,
            payload: payload.to_vec(),
        }
    }

    /// Receives one datagram on `link`, failing after 5 s rather than hanging.
    async fn recv_one(link: &mut Link, buf: &mut [u8]) -> Received {
        let mut malformed = 0;
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            link.recv(buf, &mut malformed),
        )
        .await
        .expect("a datagram within 5 s")
        .expect("recv");
        assert_eq!(malformed, 0);
        r
    }

    /// UDP: the sending link's TTL / hop limit (what the engine asks for in `Transmit.ttl`)
    /// comes out of the receiving link as `Received.ttl`, the value the driver passes on as
    /// `Incoming.ttl`. Loopback does not decrement it; 37 and 200 are not anybody's default.
    async fn udp_ttl_round_trip(ip: IpAddr) {
        // The receiver on an ephemeral port; the sender targets that port (its own bind
        // falls back to an ephemeral port, as the lenient default agent does).
        let mut receiver = Link::open(&Transport::Udp { port: 0 }, &[ip], false).unwrap();
        let port = receiver.bound()[0].port();
        let mut sender = Link::open(&Transport::Udp { port }, &[ip], true).unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for ttl in [37, 200] {
            let payload = [ttl, 1, 2, 3];
            sender
                .send(&transmit(ip, ttl, false, &payload))
                .await
                .unwrap();
            let r = recv_one(&mut receiver, &mut buf).await;
            assert_eq!(r.ttl, Some(ttl), "{ip}");
            assert_eq!((r.source, r.destination), (ip, ip));
            assert_eq!(&buf[r.offset..r.offset + r.len], &payload);
        }
    }

    #[tokio::test]
    async fn udp_ipv4_reports_received_ttl() {
        udp_ttl_round_trip(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    }

    #[tokio::test]
    async fn udp_ipv6_reports_received_hop_limit() {
        udp_ttl_round_trip(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)).await;
    }

    /// Raw IPv6: datagrams with and without the Router Alert hop-by-hop header (set, then
    /// cleared again) both go out, arrive with the RSVP message alone (the extension header
    /// is the kernel's) and with the hop limit sent.
    #[tokio::test]
    async fn raw_ipv6_router_alert_and_hop_limit() {
        if !raw_permitted() {
            return;
        }
        let ip = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        // Both raw sockets are bound to ::1, so each sees every datagram: the receiver reads
        // what the sender sent.
        let mut sender = Link::open(&Transport::Raw, &[ip], false).unwrap();
        let mut receiver = Link::open(&Transport::Raw, &[ip], false).unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // A marker no other test sends, so datagrams of parallel raw tests on ::1 are skipped.
        let marker = std::process::id().to_be_bytes();
        for (ttl, alert) in [(37, true), (200, false), (41, true)] {
            let mut payload = marker.to_vec();
            payload.push(ttl);
            sender
                .send(&transmit(ip, ttl, alert, &payload))
                .await
                .unwrap();
            let r = loop {
                let r = recv_one(&mut receiver, &mut buf).await;
                if buf[r.offset..r.offset + r.len] == payload[..] {
                    break r;
                }
            };
            assert_eq!(r.ttl, Some(ttl), "router alert {alert}");
            assert_eq!(r.offset, 0);
        }
    }

    /// Raw IPv4 reads the TTL from the header it hands over (the path the new recvmsg
    /// receive must not disturb).
    #[tokio::test]
    async fn raw_ipv4_reports_received_ttl() {
        if !raw_permitted() {
            return;
        }
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut sender = Link::open(&Transport::Raw, &[ip], false).unwrap();
        let mut receiver = Link::open(&Transport::Raw, &[ip], false).unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut payload = std::process::id().to_be_bytes().to_vec();
        payload.push(0x5a);
        sender
            .send(&transmit(ip, 37, true, &payload))
            .await
            .unwrap();
        let r = loop {
            let r = recv_one(&mut receiver, &mut buf).await;
            if buf[r.offset..r.offset + r.len] == payload[..] {
                break r;
            }
        };
        assert_eq!(r.ttl, Some(37));
        assert_eq!(
            r.offset, 24,
            "20-byte header plus the 4-byte router alert option"
        );
    }

    #[test]
    fn ipv4_header_parse_checks_lengths() {
        assert!(parse_ipv4_header(&[]).is_none());
        assert!(parse_ipv4_header(&[0x45; 10]).is_none());
        assert!(
            parse_ipv4_header(&[0x65; 40]).is_none(),
            "version 6 is not ipv4"
        );
        assert!(parse_ipv4_header(&[0x44; 40]).is_none(), "ihl < 5");
        let mut packet = [0u8; 28];
        packet[0] = 0x46; // 24-byte header (one option word)
        packet[8] = 63;
        packet[12..16].copy_from_slice(&[127, 0, 0, 2]);
        packet[16..20].copy_from_slice(&[127, 0, 0, 3]);
        let (len, ttl, src, dst) = parse_ipv4_header(&packet).unwrap();
        assert_eq!((len, ttl), (24, 63));
        assert_eq!(src, Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(dst, Ipv4Addr::new(127, 0, 0, 3));
    }
}

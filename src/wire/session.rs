//! SESSION (class 1) and FILTER_SPEC / SENDER_TEMPLATE (classes 10 / 11), IPv4 and IPv6.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::primitive::{put_ip, BodyError, Reader};

/// SESSION flag `E_Police` (RFC 2205 §A.1): police at the edge.
pub const SESSION_FLAG_E_POLICE: u8 = 0x01;

/// SESSION object (class 1): the data flow's destination — C-Type 1 for IPv4, 2 for IPv6.
///
/// # Examples
///
/// ```
/// use qtoq::wire::Session;
/// let session = Session::new("192.0.2.7:443".parse().unwrap(), 6);
/// assert_eq!(session.socket_addr().port(), 443);
/// assert_eq!(session.c_type(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    /// Destination address of the data (unicast receiver or multicast group).
    pub destination: IpAddr,
    /// IP protocol of the data flow (6 for TCP).
    pub protocol: u8,
    /// Flags (`SESSION_FLAG_E_POLICE`).
    pub flags: u8,
    /// Destination port (0 = none).
    pub port: u16,
}

impl Session {
    /// A session for data sent to `destination` with IP protocol `protocol`, no flags.
    pub fn new(destination: SocketAddr, protocol: u8) -> Self {
        Session {
            destination: destination.ip(),
            protocol,
            flags: 0,
            port: destination.port(),
        }
    }

    /// Destination address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.destination, self.port)
    }

    /// C-Type on the wire: 1 (IPv4) or 2 (IPv6).
    pub fn c_type(&self) -> u8 {
        if self.destination.is_ipv4() {
            1
        } else {
            2
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        let (destination, tail) = match c_type {
            1 => {
                let Ok([a, b, c, d, tail @ ..]) = <[u8; 8]>::try_from(body) else {
                    return Err(BodyError::Size);
                };
                (IpAddr::V4([a, b, c, d].into()), tail)
            }
            2 => {
                let mut r = Reader::new(body);
                let (Some(address), Some(tail), true) =
                    (r.array::<16>(), r.array::<4>(), body.len() == 20)
                else {
                    return Err(BodyError::Size);
                };
                (IpAddr::V6(address.into()), tail)
            }
            _ => return Err(BodyError::CType),
        };
        let [protocol, flags, port_hi, port_lo] = tail;
        Ok(Session {
            destination,
            protocol,
            flags,
            port: u16::from_be_bytes([port_hi, port_lo]),
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        put_ip(out, self.destination);
        let [hi, lo] = self.port.to_be_bytes();
        out.put_slice(&[self.protocol, self.flags, hi, lo]);
    }
}

/// FILTER_SPEC (class 10) and SENDER_TEMPLATE (class 11): one data sender — C-Type 1 IPv4,
/// 2 IPv6, 3 IPv6 flow label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FilterSpec {
    /// C-Type 1: IPv4 source address and port.
    Ipv4 {
        /// Sender address.
        address: std::net::Ipv4Addr,
        /// Sender port (0 = none).
        port: u16,
    },
    /// C-Type 2: IPv6 source address and port.
    Ipv6 {
        /// Sender address.
        address: Ipv6Addr,
        /// Sender port (0 = none).
        port: u16,
    },
    /// C-Type 3: IPv6 source address and 20-bit flow label.
    Ipv6FlowLabel {
        /// Sender address.
        address: Ipv6Addr,
        /// Flow label (20 bits).
        flow_label: u32,
    },
}

/// SENDER_TEMPLATE has exactly the FILTER_SPEC formats (RFC 2205 §A.10).
pub type SenderTemplate = FilterSpec;

impl FilterSpec {
    /// A filter for the sender at `sender` (C-Type 1 or 2 by address family).
    pub fn new(sender: SocketAddr) -> Self {
        match sender {
            SocketAddr::V4(a) => FilterSpec::Ipv4 {
                address: *a.ip(),
                port: a.port(),
            },
            SocketAddr::V6(a) => FilterSpec::Ipv6 {
                address: *a.ip(),
                port: a.port(),
            },
        }
    }

    /// Sender address.
    pub fn address(&self) -> IpAddr {
        match *self {
            FilterSpec::Ipv4 { address, .. } => IpAddr::V4(address),
            FilterSpec::Ipv6 { address, .. } | FilterSpec::Ipv6FlowLabel { address, .. } => {
                IpAddr::V6(address)
            }
        }
    }

    /// Sender address and port (port 0 for the flow-label form).
    pub fn socket_addr(&self) -> SocketAddr {
        let port = match *self {
            FilterSpec::Ipv4 { port, .. } | FilterSpec::Ipv6 { port, .. } => port,
            FilterSpec::Ipv6FlowLabel { .. } => 0,
        };
        SocketAddr::new(self.address(), port)
    }

    /// C-Type on the wire.
    pub fn c_type(&self) -> u8 {
        match self {
            FilterSpec::Ipv4 { .. } => 1,
            FilterSpec::Ipv6 { .. } => 2,
            FilterSpec::Ipv6FlowLabel { .. } => 3,
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        let mut r = Reader::new(body);
        let filter = match (c_type, body.len()) {
            (1, 8) => {
                // Bytes 4-5 are reserved.
                let Ok([a, b, c, d, _, _, port_hi, port_lo]) = <[u8; 8]>::try_from(body) else {
                    return Err(BodyError::Size);
                };
                FilterSpec::Ipv4 {
                    address: [a, b, c, d].into(),
                    port: u16::from_be_bytes([port_hi, port_lo]),
                }
            }
            (2, 20) => {
                let address = r.ipv6().ok_or(BodyError::Size)?;
                r.u16().ok_or(BodyError::Size)?; // reserved
                FilterSpec::Ipv6 {
                    address,
                    port: r.u16().ok_or(BodyError::Size)?,
                }
            }
            (3, 20) => {
                let address = r.ipv6().ok_or(BodyError::Size)?;
                FilterSpec::Ipv6FlowLabel {
                    address,
                    flow_label: r.u32().ok_or(BodyError::Size)? & 0x000f_ffff,
                }
            }
            (1..=3, _) => return Err(BodyError::Size),
            _ => return Err(BodyError::CType),
        };
        Ok(filter)
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        match *self {
            FilterSpec::Ipv4 { address, port } => {
                let [a, b, c, d] = address.octets();
                let [hi, lo] = port.to_be_bytes();
                out.put_slice(&[a, b, c, d, 0, 0, hi, lo]);
            }
            FilterSpec::Ipv6 { address, port } => {
                out.put_slice(&address.octets());
                let [hi, lo] = port.to_be_bytes();
                out.put_slice(&[0, 0, hi, lo]);
            }
            FilterSpec::Ipv6FlowLabel {
                address,
                flow_label,
            } => {
                out.put_slice(&address.octets());
                out.put_u32(flow_label & 0x000f_ffff);
            }
        }
    }
}

impl From<SocketAddr> for FilterSpec {
    fn from(sender: SocketAddr) -> Self {
        FilterSpec::new(sender)
    }
}

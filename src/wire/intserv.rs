//! IntServ parameter values (RFC 2210, 2211, 2212, 2215) shared by every layer.
//!
//! The codec for the FLOWSPEC / SENDER_TSPEC / ADSPEC object bodies lives beside these values;
//! rates are IEEE-754 single-precision *bytes per second* and sizes are bytes, exactly as on
//! the wire.

/// Token-bucket traffic description (RFC 2210 §3.1, RFC 2215 parameter 127): `r`, `b`, `p`,
/// `m`, `M`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// Token bucket rate `r`, bytes per second.
    pub rate: f32,
    /// Token bucket size `b`, bytes.
    pub bucket: f32,
    /// Peak rate `p`, bytes per second (`f32::INFINITY` when unbounded).
    pub peak: f32,
    /// Minimum policed unit `m`, bytes.
    pub min_policed: u32,
    /// Maximum packet size `M`, bytes.
    pub max_packet: u32,
}

impl TokenBucket {
    /// A token bucket with the given rate and bucket size, no peak limit, `m` = 64 and
    /// `M` = 1500 (an Ethernet MTU).
    pub fn new(rate: f32, bucket: f32) -> Self {
        TokenBucket {
            rate,
            bucket,
            peak: f32::INFINITY,
            min_policed: 64,
            max_packet: 1500,
        }
    }
}

/// Guaranteed-service reservation parameters (RFC 2212 `Rspec`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuaranteedRspec {
    /// Reserved rate `R`, bytes per second (≥ the Tspec's `r`).
    pub rate: f32,
    /// Slack term `S`, microseconds.
    pub slack: u32,
}

/// A reservation request: the service and its parameters (the body of a FLOWSPEC object).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FlowSpec {
    /// Controlled-Load service (RFC 2211, service number 5).
    ControlledLoad(TokenBucket),
    /// Guaranteed service (RFC 2212, service number 2).
    Guaranteed {
        /// The traffic the reservation must carry.
        tspec: TokenBucket,
        /// The reserved rate and slack.
        rspec: GuaranteedRspec,
    },
}

impl FlowSpec {
    /// The traffic description part of the reservation.
    pub fn tspec(&self) -> &TokenBucket {
        match self {
            FlowSpec::ControlledLoad(tspec) => tspec,
            FlowSpec::Guaranteed { tspec, .. } => tspec,
        }
    }

    /// The rate the network must reserve, bytes per second: `r` for Controlled-Load, `R` for
    /// Guaranteed.
    pub fn reserved_rate(&self) -> f32 {
        match self {
            FlowSpec::ControlledLoad(tspec) => tspec.rate,
            FlowSpec::Guaranteed { rspec, .. } => rspec.rate,
        }
    }
}

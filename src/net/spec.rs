//! What a connection asks for: [`QosSpec`] and [`Signaling`].

use crate::wire::intserv::{FlowSpec, GuaranteedRspec, TokenBucket};

/// Whether a connection's reservation is signaled with RSVP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Signaling {
    /// RSVP signaling (the default): the server (data sender) sends PATH, the client (data
    /// receiver) answers with RESV, the rule is loaded when the RESV is admitted.
    #[default]
    Rsvp,
    /// The seed's "rule marked with no signaling": server side only; admission control and
    /// rule load happen on `accept`, no RSVP message is sent. Invalid on the client side.
    None,
}

/// The reservation a connection asks for: a service (Controlled-Load or Guaranteed) and its
/// token bucket, in bytes and bytes per second.
///
/// # Examples
///
/// ```
/// use qtoq::QosSpec;
///
/// // 1 MB/s with 64 KiB bursts, at most 2 MB/s peak, 1500-byte packets.
/// let spec = QosSpec::controlled_load(1_000_000, 65_536)
///     .peak(2_000_000)
///     .max_packet(1500);
/// assert_eq!(spec.rate(), 1_000_000);
///
/// // Guaranteed service with 500 µs slack.
/// let g = QosSpec::guaranteed(250_000, 16_384, 500);
/// assert_eq!(g.rate(), 250_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QosSpec {
    flowspec: FlowSpec,
}

impl QosSpec {
    /// Controlled-Load service (RFC 2211) at `rate_bytes_per_s` with a bucket of
    /// `bucket_bytes`; no peak limit, `m` = 64, `M` = 1500.
    pub fn controlled_load(rate_bytes_per_s: u64, bucket_bytes: u64) -> Self {
        QosSpec {
            flowspec: FlowSpec::ControlledLoad(TokenBucket::new(
                rate_bytes_per_s as f32,
                bucket_bytes as f32,
            )),
        }
    }

    /// Guaranteed service (RFC 2212): traffic `rate_bytes_per_s` / `bucket_bytes`, the same
    /// rate reserved, slack term `slack_us` microseconds.
    pub fn guaranteed(rate_bytes_per_s: u64, bucket_bytes: u64, slack_us: u32) -> Self {
        let tspec = TokenBucket::new(rate_bytes_per_s as f32, bucket_bytes as f32);
        QosSpec {
            flowspec: FlowSpec::Guaranteed {
                tspec,
                rspec: GuaranteedRspec {
                    rate: tspec.rate,
                    slack: slack_us,
                },
            },
        }
    }

    /// Wraps a flowspec built by hand.
    pub fn from_flowspec(flowspec: FlowSpec) -> Self {
        QosSpec { flowspec }
    }

    /// Sets the peak rate `p`, bytes per second.
    pub fn peak(mut self, peak_bytes_per_s: u64) -> Self {
        self.tspec_mut().peak = peak_bytes_per_s as f32;
        self
    }

    /// Sets the minimum policed unit `m`, bytes.
    pub fn min_policed(mut self, m_bytes: u32) -> Self {
        self.tspec_mut().min_policed = m_bytes;
        self
    }

    /// Sets the maximum packet size `M`, bytes.
    pub fn max_packet(mut self, max_bytes: u32) -> Self {
        self.tspec_mut().max_packet = max_bytes;
        self
    }

    /// The reserved rate, bytes per second (`r`, or `R` for Guaranteed service).
    pub fn rate(&self) -> u64 {
        self.flowspec.reserved_rate() as u64
    }

    /// The token bucket describing the traffic (the sender's Tspec).
    pub fn tspec(&self) -> TokenBucket {
        *self.flowspec.tspec()
    }

    /// The flowspec as signaled.
    pub fn flowspec(&self) -> FlowSpec {
        self.flowspec
    }

    fn tspec_mut(&mut self) -> &mut TokenBucket {
        match &mut self.flowspec {
            FlowSpec::ControlledLoad(tspec) => tspec,
            FlowSpec::Guaranteed { tspec, .. } => tspec,
        }
    }
}

impl Default for QosSpec {
    /// Controlled-Load at 125,000 B/s (1 Mbit/s) with a 16 KiB bucket.
    fn default() -> Self {
        QosSpec::controlled_load(125_000, 16_384)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_change_the_tspec_of_both_services() {
        let cl = QosSpec::controlled_load(1000, 2000)
            .peak(3000)
            .min_policed(100)
            .max_packet(1400);
        let t = cl.tspec();
        assert_eq!((t.rate, t.bucket, t.peak), (1000.0, 2000.0, 3000.0));
        assert_eq!((t.min_policed, t.max_packet), (100, 1400));
        let g = QosSpec::guaranteed(5000, 600, 77).max_packet(576);
        match g.flowspec() {
            FlowSpec::Guaranteed { tspec, rspec } => {
                assert_eq!(tspec.max_packet, 576);
                assert_eq!((rspec.rate, rspec.slack), (5000.0, 77));
            }
            other => panic!("not guaranteed: {other:?}"),
        }
        assert_eq!(g.rate(), 5000);
    }
}

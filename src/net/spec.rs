//! What a connection asks for: [`QosSpec`] and [`Signaling`].

use crate::error::InvalidSpec;
use crate::wire::intserv::{FlowSpec, GuaranteedRspec, TokenBucket};

/// Whether a connection's reservation is signaled with RSVP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Signaling {
    /// RSVP signaling (the default): the server (data sender) sends PATH, the client (data
    /// receiver) answers with RESV, the rule is loaded when the RESV is admitted.
    #[default]
    Rsvp,
    /// IBM i's "rule marked with no signaling": server side only; admission control and
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

    /// Checks that the spec can be a valid flowspec as RSVP carries it (32-bit floats):
    /// a positive, finite token rate `r` and bucket `b`; a peak `p` not below `r` (or
    /// unbounded); `M` above zero and `m` not above `M`; for Guaranteed service a finite
    /// reserved rate `R` not below `r`. `connect` and `bind` call it, so a spec that fails
    /// here is refused at the call with `InvalidInput`.
    ///
    /// # Errors
    ///
    /// [`InvalidSpec`], naming the field and what is wrong with it.
    ///
    /// # Examples
    ///
    /// ```
    /// use qtoq::QosSpec;
    ///
    /// assert!(QosSpec::controlled_load(1_000_000, 65_536).validate().is_ok());
    /// let zero = QosSpec::controlled_load(0, 65_536).validate().unwrap_err();
    /// assert_eq!(zero.field, "rate");
    /// let low_peak = QosSpec::controlled_load(1_000_000, 65_536).peak(500_000);
    /// assert_eq!(low_peak.validate().unwrap_err().field, "peak");
    /// ```
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let t = self.tspec();
        let invalid = |field, problem: String| Err(InvalidSpec { field, problem });
        if !(t.rate.is_finite() && t.rate > 0.0) {
            return invalid(
                "rate",
                format!(
                    "must be a positive, finite number of bytes/s (r = {})",
                    t.rate
                ),
            );
        }
        if !(t.bucket.is_finite() && t.bucket > 0.0) {
            return invalid(
                "bucket",
                format!(
                    "must be a positive, finite number of bytes (b = {})",
                    t.bucket
                ),
            );
        }
        if t.peak.is_nan() || t.peak < t.rate {
            return invalid(
                "peak",
                format!(
                    "must be at least the token rate (p = {} B/s, r = {} B/s); leave it unset for no peak limit",
                    t.peak, t.rate
                ),
            );
        }
        if t.max_packet == 0 {
            return invalid("max_packet", "M must be at least 1 byte".to_owned());
        }
        if t.min_policed > t.max_packet {
            return invalid(
                "min_policed",
                format!(
                    "m ({} bytes) must not exceed the maximum packet size M ({} bytes)",
                    t.min_policed, t.max_packet
                ),
            );
        }
        if let FlowSpec::Guaranteed { rspec, .. } = &self.flowspec {
            if !(rspec.rate.is_finite() && rspec.rate >= t.rate) {
                return invalid(
                    "reserved rate",
                    format!(
                        "R must be finite and at least the token rate (R = {} B/s, r = {} B/s, RFC 2212)",
                        rspec.rate, t.rate
                    ),
                );
            }
        }
        Ok(())
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

#[cfg(test)]
mod validation_tests {
    use super::*;
    use crate::wire::intserv::GuaranteedRspec;

    fn field(spec: QosSpec) -> &'static str {
        spec.validate().expect_err("invalid spec accepted").field
    }

    #[test]
    fn every_impossible_flowspec_is_refused_naming_its_field() {
        assert_eq!(field(QosSpec::controlled_load(0, 0)), "rate");
        assert_eq!(field(QosSpec::controlled_load(1000, 0)), "bucket");
        assert_eq!(field(QosSpec::controlled_load(1000, 100).peak(999)), "peak");
        assert_eq!(
            field(QosSpec::controlled_load(1000, 100).max_packet(0)),
            "max_packet"
        );
        assert_eq!(
            field(
                QosSpec::controlled_load(1000, 100)
                    .min_policed(1501)
                    .max_packet(1500)
            ),
            "min_policed"
        );
        let nan =
            QosSpec::from_flowspec(FlowSpec::ControlledLoad(TokenBucket::new(f32::NAN, 100.0)));
        assert_eq!(field(nan), "rate");
        let infinite_bucket = QosSpec::from_flowspec(FlowSpec::ControlledLoad(TokenBucket::new(
            1000.0,
            f32::INFINITY,
        )));
        assert_eq!(field(infinite_bucket), "bucket");
        let low_reserved = QosSpec::from_flowspec(FlowSpec::Guaranteed {
            tspec: TokenBucket::new(1000.0, 100.0),
            rspec: GuaranteedRspec {
                rate: 999.0,
                slack: 0,
            },
        });
        assert_eq!(field(low_reserved), "reserved rate");
    }

    #[test]
    fn ordinary_specs_pass() {
        for spec in [
            QosSpec::default(),
            QosSpec::controlled_load(1, 1),
            QosSpec::controlled_load(1000, 100).peak(1000),
            QosSpec::controlled_load(1000, 100).min_policed(1500),
            QosSpec::guaranteed(250_000, 16_384, 500),
            QosSpec::controlled_load(u64::MAX, u64::MAX),
        ] {
            assert_eq!(spec.validate(), Ok(()), "{spec:?}");
        }
    }
}

//! IntServ parameter values (RFC 2210, 2211, 2212, 2215) shared by every layer.
//!
//! The codec for the FLOWSPEC / SENDER_TSPEC / ADSPEC object bodies lives beside these values;
//! rates are IEEE-754 single-precision *bytes per second* and sizes are bytes, exactly as on
//! the wire.

/// Token-bucket traffic description (RFC 2210 §3.1, RFC 2215 parameter 127): `r`, `b`, `p`,
/// `m`, `M`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenBucket {
    /// Token bucket rate `r`, bytes per second.
    pub rate: f32,
    /// Token bucket size `b`, bytes.
    pub bucket: f32,
    /// Peak rate `p`, bytes per second (`f32::INFINITY` when unbounded).
    #[serde(with = "unbounded_as_none")]
    pub peak: f32,
    /// Minimum policed unit `m`, bytes.
    pub min_policed: u32,
    /// Maximum packet size `M`, bytes.
    pub max_packet: u32,
}

/// Serde for a rate where infinity means "no limit" (RFC 2210's positive infinity): `null`
/// in formats without infinity (JSON), so the value survives the trip.
mod unbounded_as_none {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(rate: &f32, serializer: S) -> Result<S::Ok, S::Error> {
        let limit = (*rate != f32::INFINITY).then_some(*rate);
        limit.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(deserializer)?.unwrap_or(f32::INFINITY))
    }
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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuaranteedRspec {
    /// Reserved rate `R`, bytes per second (≥ the Tspec's `r`).
    pub rate: f32,
    /// Slack term `S`, microseconds.
    pub slack: u32,
}

/// A reservation request: the service and its parameters (the body of a FLOWSPEC object).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

// ---------------------------------------------------------------------------------------------
// Wire codec of the IntServ object bodies (RFC 2210 §3): SENDER_TSPEC, FLOWSPEC, ADSPEC.
// ---------------------------------------------------------------------------------------------

use super::primitive::{patch_u16, sink_len, BodyError, Reader, Sink};

/// IntServ service number of the general parameters / default Tspec (RFC 2215).
pub const SERVICE_GENERAL: u8 = 1;
/// IntServ service number of Guaranteed service (RFC 2212).
pub const SERVICE_GUARANTEED: u8 = 2;
/// IntServ service number of Controlled-Load service (RFC 2211).
pub const SERVICE_CONTROLLED_LOAD: u8 = 5;

/// Parameter 127: token-bucket Tspec.
pub const PARAM_TOKEN_BUCKET: u8 = 127;
/// Parameter 130: Guaranteed-service Rspec.
pub const PARAM_GUARANTEED_RSPEC: u8 = 130;
/// Parameter 4: NUMBER_OF_IS_HOPS.
pub const PARAM_IS_HOPS: u8 = 4;
/// Parameter 6: AVAILABLE_PATH_BANDWIDTH.
pub const PARAM_PATH_BW: u8 = 6;
/// Parameter 8: MINIMUM_PATH_LATENCY.
pub const PARAM_MIN_LATENCY: u8 = 8;
/// Parameter 10: PATH_MTU.
pub const PARAM_PATH_MTU: u8 = 10;
/// Parameter 133: Guaranteed `Ctot`.
pub const PARAM_CTOT: u8 = 133;
/// Parameter 134: Guaranteed `Dtot`.
pub const PARAM_DTOT: u8 = 134;
/// Parameter 135: Guaranteed `Csum`.
pub const PARAM_CSUM: u8 = 135;
/// Parameter 136: Guaranteed `Dsum`.
pub const PARAM_DSUM: u8 = 136;

/// Break bit of a per-service header: some node on the path does not support the service.
const BREAK_BIT: u8 = 0x80;

fn tspec_err(reason: &'static str) -> BodyError {
    BodyError::IntServ(reason)
}

/// Reads the 4-byte IntServ message header (version 0, overall length in words) and checks it
/// against the body.
fn read_intserv_header(r: &mut Reader<'_>, body_len: usize) -> Result<(), BodyError> {
    let Some([version, _, words_hi, words_lo]) = r.array::<4>() else {
        return Err(tspec_err("shorter than the intserv header"));
    };
    let words = u16::from_be_bytes([words_hi, words_lo]);
    if version >> 4 != 0 {
        return Err(tspec_err("intserv version is not 0"));
    }
    if usize::from(words) * 4 + 4 != body_len {
        return Err(tspec_err(
            "intserv overall length disagrees with the object length",
        ));
    }
    Ok(())
}

/// Reads a parameter or service header: `(number, flags-or-break byte, length in words)`.
#[inline(always)]
fn read_sub_header(r: &mut Reader<'_>) -> Option<(u8, u8, usize)> {
    let [number, flags, words_hi, words_lo] = r.array::<4>()?;
    Some((
        number,
        flags,
        usize::from(u16::from_be_bytes([words_hi, words_lo])),
    ))
}

/// `value` is a usable rate or size: not NaN, not negative (−0 is zero), finite unless
/// `allow_infinite`.
#[inline(always)]
fn check_rate(value: f32, allow_infinite: bool) -> bool {
    // On the bit pattern, one compare: positive finite floats are 0..=0x7f7f_ffff, +∞ is
    // 0x7f80_0000, positive NaNs lie above it and every negative value has the sign bit set.
    let bits = value.to_bits();
    let limit = if allow_infinite {
        0x7f80_0000
    } else {
        0x7f7f_ffff
    };
    bits <= limit || bits == 0x8000_0000
}

impl TokenBucket {
    /// Reads the 5-word token-bucket value (after its parameter header) and checks it: rates
    /// and sizes non-negative and not NaN (peak may be infinite), `m <= M`.
    #[inline(always)]
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let Some(words) = r.array::<20>() else {
            return Err(tspec_err("token bucket truncated"));
        };
        let word =
            |i: usize| u32::from_be_bytes([words[i], words[i + 1], words[i + 2], words[i + 3]]);
        let (rate, bucket, peak) = (
            f32::from_bits(word(0)),
            f32::from_bits(word(4)),
            f32::from_bits(word(8)),
        );
        let (min_policed, max_packet) = (word(12), word(16));
        if !check_rate(rate, false) || !check_rate(bucket, false) || !check_rate(peak, true) {
            return Err(tspec_err(
                "token bucket rate, size or peak is negative or not a number",
            ));
        }
        if min_policed > max_packet {
            return Err(tspec_err(
                "minimum policed unit exceeds the maximum packet size",
            ));
        }
        Ok(TokenBucket {
            rate,
            bucket,
            peak,
            min_policed,
            max_packet,
        })
    }

    fn write<S: bytes::BufMut>(&self, out: &mut S) {
        // Assembled first and written at once: each write to a sink checks its room.
        let mut bytes = [0u8; 24];
        bytes[..4].copy_from_slice(&[PARAM_TOKEN_BUCKET, 0, 0, 5]);
        let words = [
            self.rate.to_bits(),
            self.bucket.to_bits(),
            self.peak.to_bits(),
            self.min_policed,
            self.max_packet,
        ];
        for (chunk, word) in bytes[4..].chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out.put_slice(&bytes);
    }

    /// Decodes a SENDER_TSPEC body (C-Type 2): header, service 1, parameter 127.
    #[inline(always)]
    pub(crate) fn decode_tspec(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 2 {
            return Err(BodyError::CType);
        }
        let mut r = Reader::new(body);
        read_intserv_header(&mut r, body.len())?;
        let Some((service, _, words)) = read_sub_header(&mut r) else {
            return Err(tspec_err("service header truncated"));
        };
        if service != SERVICE_GENERAL {
            return Err(tspec_err("sender tspec service number is not 1"));
        }
        if words != 6 || r.remaining() != 24 {
            return Err(tspec_err(
                "sender tspec must carry exactly the token bucket",
            ));
        }
        match read_sub_header(&mut r) {
            Some((PARAM_TOKEN_BUCKET, _, 5)) => TokenBucket::read(&mut r),
            _ => Err(tspec_err(
                "sender tspec parameter is not a token bucket (127)",
            )),
        }
    }

    /// Encodes a SENDER_TSPEC body (C-Type 2): 32 bytes.
    pub(crate) fn encode_tspec<S: bytes::BufMut>(&self, out: &mut S) {
        // Message header (version 0, 7 words) and service header (6 words), at once.
        out.put_slice(&[0, 0, 0, 7, SERVICE_GENERAL, 0, 0, 6]);
        self.write(out);
    }
}

impl FlowSpec {
    /// Decodes a FLOWSPEC body (C-Type 2): Controlled-Load (service 5) or Guaranteed (2).
    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 2 {
            return Err(BodyError::CType);
        }
        let mut r = Reader::new(body);
        read_intserv_header(&mut r, body.len())?;
        let Some((service, _, words)) = read_sub_header(&mut r) else {
            return Err(tspec_err("service header truncated"));
        };
        if words * 4 != r.remaining() {
            return Err(tspec_err(
                "service data length disagrees with the object length",
            ));
        }
        let tspec = match read_sub_header(&mut r) {
            Some((PARAM_TOKEN_BUCKET, _, 5)) => TokenBucket::read(&mut r)?,
            _ if service != SERVICE_CONTROLLED_LOAD && service != SERVICE_GUARANTEED => {
                return Err(BodyError::Service(service))
            }
            _ => {
                return Err(tspec_err(
                    "flowspec does not start with a token bucket (127)",
                ))
            }
        };
        match service {
            SERVICE_CONTROLLED_LOAD if r.is_empty() => Ok(FlowSpec::ControlledLoad(tspec)),
            SERVICE_CONTROLLED_LOAD => Err(tspec_err("controlled-load flowspec has extra data")),
            SERVICE_GUARANTEED => {
                let Some((PARAM_GUARANTEED_RSPEC, _, 2)) = read_sub_header(&mut r) else {
                    return Err(tspec_err("guaranteed flowspec lacks its rspec (130)"));
                };
                let (Some(rate), Some(slack)) = (r.f32(), r.u32()) else {
                    return Err(tspec_err("guaranteed rspec truncated"));
                };
                if !r.is_empty() {
                    return Err(tspec_err("guaranteed flowspec has extra data"));
                }
                if !check_rate(rate, false) {
                    return Err(tspec_err("guaranteed rate is negative or not a number"));
                }
                Ok(FlowSpec::Guaranteed {
                    tspec,
                    rspec: GuaranteedRspec { rate, slack },
                })
            }
            other => Err(BodyError::Service(other)),
        }
    }

    /// Encodes a FLOWSPEC body (C-Type 2).
    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        match self {
            FlowSpec::ControlledLoad(tspec) => {
                // Message header (version 0, 7 words) and service header (6 words).
                out.put_slice(&[0, 0, 0, 7, SERVICE_CONTROLLED_LOAD, 0, 0, 6]);
                tspec.write(out);
            }
            FlowSpec::Guaranteed { tspec, rspec } => {
                out.put_u32(10);
                out.put_u8(SERVICE_GUARANTEED);
                out.put_u8(0);
                out.put_u16(9);
                tspec.write(out);
                out.put_u8(PARAM_GUARANTEED_RSPEC);
                out.put_u8(0);
                out.put_u16(2);
                out.put_u32(rspec.rate.to_bits());
                out.put_u32(rspec.slack);
            }
        }
    }
}

/// An IntServ parameter this codec keeps opaque: an unknown number, non-zero flags, an odd
/// length, or a known one out of the canonical order. Re-encoded byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawParam {
    /// Parameter number.
    pub id: u8,
    /// Parameter flags.
    pub flags: u8,
    /// Value (a multiple of 4 bytes).
    pub value: Vec<u8>,
}

/// An ADSPEC fragment kept opaque: an unknown service, or a known one out of order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawFragment {
    /// Service number.
    pub service: u8,
    /// Break bit.
    pub break_bit: bool,
    /// The fragment's parameters, raw (a multiple of 4 bytes).
    pub data: Vec<u8>,
}

/// ADSPEC general-parameters fragment (service 1, RFC 2215 §3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdspecGeneral {
    /// Break bit: a node on the path does not support IntServ.
    pub break_bit: bool,
    /// Parameter 4, NUMBER_OF_IS_HOPS.
    pub is_hops: Option<u32>,
    /// Parameter 6, AVAILABLE_PATH_BANDWIDTH, bytes per second.
    pub path_bw: Option<f32>,
    /// Parameter 8, MINIMUM_PATH_LATENCY, microseconds (`u32::MAX` = indeterminate).
    pub min_latency: Option<u32>,
    /// Parameter 10, PATH_MTU, bytes.
    pub path_mtu: Option<u32>,
    /// Other parameters, in wire order after the typed ones.
    pub extra: Vec<RawParam>,
}

/// ADSPEC Guaranteed-service fragment (service 2, RFC 2212 §6). Service-specific overrides of
/// the general parameters are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuaranteedAdspec {
    /// Break bit: a node on the path does not support Guaranteed service.
    pub break_bit: bool,
    /// Parameter 133, `Ctot`, bytes.
    pub ctot: Option<u32>,
    /// Parameter 134, `Dtot`, microseconds.
    pub dtot: Option<u32>,
    /// Parameter 135, `Csum`, bytes.
    pub csum: Option<u32>,
    /// Parameter 136, `Dsum`, microseconds.
    pub dsum: Option<u32>,
    /// Other parameters, in wire order after the typed ones.
    pub extra: Vec<RawParam>,
}

/// ADSPEC Controlled-Load fragment (service 5, RFC 2211 §11): usually empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlledLoadAdspec {
    /// Break bit: a node on the path does not support Controlled-Load.
    pub break_bit: bool,
    /// Service-specific override parameters, raw.
    pub extra: Vec<RawParam>,
}

/// ADSPEC object body (class 13, C-Type 2, RFC 2210 §3.3) in its full, easy-to-build form:
/// the general fragment, then the per-service fragments. Convert it to and from the compact
/// [`Adspec`] an [`Object`](super::Object) carries with `From` / [`Adspec::to_parts`].
///
/// Parameters and fragments the codec does not type, or that arrive out of the canonical
/// order (general first, then Guaranteed, then Controlled-Load; parameters by increasing
/// number), land in the `extra` / `other` lists, so re-encoding reproduces the input byte for
/// byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdspecParts {
    /// Service 1 fragment (always present on the wire).
    pub general: AdspecGeneral,
    /// Service 2 fragment.
    pub guaranteed: Option<GuaranteedAdspec>,
    /// Service 5 fragment.
    pub controlled_load: Option<ControlledLoadAdspec>,
    /// Other fragments, in wire order after the typed ones.
    pub other: Vec<RawFragment>,
}

/// Slots of the typed parameters in [`Adspec`]'s value array: the general ones, then the
/// Guaranteed ones, each in canonical wire order.
const GENERAL_ORDER: [u8; 4] = [
    PARAM_IS_HOPS,
    PARAM_PATH_BW,
    PARAM_MIN_LATENCY,
    PARAM_PATH_MTU,
];
const GUARANTEED_ORDER: [u8; 4] = [PARAM_CTOT, PARAM_DTOT, PARAM_CSUM, PARAM_DSUM];
const GENERAL_SLOTS: usize = 0;
const GUARANTEED_SLOTS: usize = 4;
/// `present` bit of the Guaranteed fragment (bits 0–7 are the value slots).
const HAS_GUARANTEED: u16 = 1 << 8;
/// `present` bit of the Controlled-Load fragment.
const HAS_CONTROLLED_LOAD: u16 = 1 << 9;

/// ADSPEC object body (class 13, C-Type 2, RFC 2210 §3.3), compact.
///
/// The typed parameters live inline (eight 32-bit slots and a presence mask, 48 bytes in
/// all), so decoding the Adspec every Path carries allocates nothing; parameters and fragments
/// kept raw (unknown, flagged or out of canonical order; see [`AdspecParts`]) go to an owned
/// tail that is allocated only when there are some.
///
/// Read it with the accessors ([`path_bw`](Self::path_bw), [`general`](Self::general),
/// [`guaranteed`](Self::guaranteed), …) or expand it with [`to_parts`](Self::to_parts);
/// build one with [`host_default`](Self::host_default) or from an [`AdspecParts`].
///
/// # Examples
///
/// ```
/// use qtoq::wire::{Adspec, AdspecParts};
///
/// let adspec = Adspec::host_default(1500);
/// assert_eq!(adspec.path_mtu(), Some(1500));
/// let mut parts = adspec.to_parts();
/// parts.general.path_bw = Some(125_000.0);
/// assert_eq!(Adspec::from(parts).path_bw(), Some(125_000.0));
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Adspec {
    /// Typed parameter values: slots 0–3 general (IS hops, path bandwidth as `f32` bits,
    /// latency, MTU), 4–7 Guaranteed (`Ctot`, `Dtot`, `Csum`, `Dsum`). 0 when absent, so the
    /// derived equality is exact.
    values: [u32; 8],
    /// Bits 0–7: slot present; `HAS_GUARANTEED`, `HAS_CONTROLLED_LOAD`: fragment present.
    present: u16,
    general_break: bool,
    guaranteed_break: bool,
    controlled_load_break: bool,
    /// Raw content; `None` whenever every list would be empty.
    raw: Option<Box<AdspecRaw>>,
}

/// The raw (untyped) content of an [`Adspec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct AdspecRaw {
    general: Vec<RawParam>,
    guaranteed: Vec<RawParam>,
    controlled_load: Vec<RawParam>,
    other: Vec<RawFragment>,
}

impl AdspecRaw {
    fn is_empty(&self) -> bool {
        self.general.is_empty()
            && self.guaranteed.is_empty()
            && self.controlled_load.is_empty()
            && self.other.is_empty()
    }
}

impl std::fmt::Debug for Adspec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adspec")
            .field("general", &self.general())
            .field("guaranteed", &self.guaranteed())
            .field("controlled_load", &self.controlled_load())
            .field("other", &self.other())
            .finish()
    }
}

fn adspec_err(reason: &'static str) -> BodyError {
    BodyError::IntServ(reason)
}

/// Walks the parameters of one fragment: a parameter listed in `order` fills its slot (from
/// `base` in `values`) when it keeps the canonical order (increasing rank, nothing raw before
/// it, flags 0, one word); everything else is kept raw (in the list `extra` picks from the
/// tail), so re-encoding reproduces the wire order.
#[inline(always)]
fn read_params(
    data: &[u8],
    order: &[u8; 4],
    base: usize,
    adspec: &mut Adspec,
    extra: fn(&mut AdspecRaw) -> &mut Vec<RawParam>,
) -> Result<(), BodyError> {
    // Fast path for what hosts and routers send: every typed parameter once, in order.
    if let Ok(params) = <&[u8; 32]>::try_from(data) {
        let word =
            |i: usize| u32::from_be_bytes([params[i], params[i + 1], params[i + 2], params[i + 3]]);
        let header = |i: usize| u32::from(order[i]) << 24 | 1;
        if word(0) == header(0)
            && word(8) == header(1)
            && word(16) == header(2)
            && word(24) == header(3)
        {
            adspec.values[base..base + 4].copy_from_slice(&[word(4), word(12), word(20), word(28)]);
            adspec.present |= 0xf << base;
            return Ok(());
        }
    }
    read_params_slow(data, order, base, adspec, extra)
}

/// [`read_params`] for any layout.
#[inline(never)]
fn read_params_slow(
    data: &[u8],
    order: &[u8],
    base: usize,
    adspec: &mut Adspec,
    extra: fn(&mut AdspecRaw) -> &mut Vec<RawParam>,
) -> Result<(), BodyError> {
    let mut r = Reader::new(data);
    let mut last_rank = 0usize;
    let mut any_raw = false;
    while !r.is_empty() {
        let Some((id, flags, words)) = read_sub_header(&mut r) else {
            return Err(adspec_err("parameter header truncated"));
        };
        let Some(value) = r.take(words * 4) else {
            return Err(adspec_err("parameter runs past its fragment"));
        };
        let rank = param_rank(order, id).filter(|rank| *rank > last_rank);
        if let (Some(rank), false, 0, Ok(word)) = (rank, any_raw, flags, <[u8; 4]>::try_from(value))
        {
            let slot = base + rank - 1;
            adspec.values[slot] = u32::from_be_bytes(word);
            adspec.present |= 1 << slot;
            last_rank = rank;
            continue;
        }
        any_raw = true;
        extra(adspec.raw_mut()).push(RawParam {
            id,
            flags,
            value: value.to_vec(),
        });
    }
    Ok(())
}

fn param_rank(order: &[u8], id: u8) -> Option<usize> {
    order.iter().position(|p| *p == id).map(|i| i + 1)
}

impl Adspec {
    /// An Adspec as a sending host starts it (RFC 2210 §3.3.1 defaults): no hops yet, unknown
    /// bandwidth and latency left as "not set", the given MTU, and empty Guaranteed and
    /// Controlled-Load fragments.
    pub fn host_default(path_mtu: u32) -> Self {
        Adspec {
            values: [0, f32::INFINITY.to_bits(), 0, path_mtu, 0, 0, 0, 0],
            present: 0xff | HAS_GUARANTEED | HAS_CONTROLLED_LOAD,
            ..Adspec::default()
        }
    }

    fn slot(&self, slot: usize) -> Option<u32> {
        (self.present & (1 << slot) != 0).then(|| self.values[slot])
    }

    fn set_slot(&mut self, slot: usize, value: Option<u32>) {
        self.values[slot] = value.unwrap_or(0);
        if value.is_some() {
            self.present |= 1 << slot;
        } else {
            self.present &= !(1 << slot);
        }
    }

    fn raw_mut(&mut self) -> &mut AdspecRaw {
        self.raw.get_or_insert_with(Box::default)
    }

    /// Parameter 4, NUMBER_OF_IS_HOPS, of the general fragment.
    pub fn is_hops(&self) -> Option<u32> {
        self.slot(GENERAL_SLOTS)
    }

    /// Parameter 6, AVAILABLE_PATH_BANDWIDTH, bytes per second, of the general fragment.
    pub fn path_bw(&self) -> Option<f32> {
        self.slot(GENERAL_SLOTS + 1).map(f32::from_bits)
    }

    /// Parameter 8, MINIMUM_PATH_LATENCY, microseconds (`u32::MAX` = indeterminate), of the
    /// general fragment.
    pub fn min_latency(&self) -> Option<u32> {
        self.slot(GENERAL_SLOTS + 2)
    }

    /// Parameter 10, PATH_MTU, bytes, of the general fragment.
    pub fn path_mtu(&self) -> Option<u32> {
        self.slot(GENERAL_SLOTS + 3)
    }

    /// The general-parameters fragment (its `extra` list is cloned; empty lists do not
    /// allocate).
    pub fn general(&self) -> AdspecGeneral {
        AdspecGeneral {
            break_bit: self.general_break,
            is_hops: self.is_hops(),
            path_bw: self.path_bw(),
            min_latency: self.min_latency(),
            path_mtu: self.path_mtu(),
            extra: self
                .raw
                .as_ref()
                .map(|r| r.general.clone())
                .unwrap_or_default(),
        }
    }

    /// The Guaranteed fragment, if present (its `extra` list is cloned).
    pub fn guaranteed(&self) -> Option<GuaranteedAdspec> {
        (self.present & HAS_GUARANTEED != 0).then(|| GuaranteedAdspec {
            break_bit: self.guaranteed_break,
            ctot: self.slot(GUARANTEED_SLOTS),
            dtot: self.slot(GUARANTEED_SLOTS + 1),
            csum: self.slot(GUARANTEED_SLOTS + 2),
            dsum: self.slot(GUARANTEED_SLOTS + 3),
            extra: self
                .raw
                .as_ref()
                .map(|r| r.guaranteed.clone())
                .unwrap_or_default(),
        })
    }

    /// The Controlled-Load fragment, if present (its `extra` list is cloned).
    pub fn controlled_load(&self) -> Option<ControlledLoadAdspec> {
        (self.present & HAS_CONTROLLED_LOAD != 0).then(|| ControlledLoadAdspec {
            break_bit: self.controlled_load_break,
            extra: self
                .raw
                .as_ref()
                .map(|r| r.controlled_load.clone())
                .unwrap_or_default(),
        })
    }

    /// Fragments kept raw (unknown services, or typed ones out of order), in wire order.
    pub fn other(&self) -> &[RawFragment] {
        self.raw.as_ref().map_or(&[], |r| &r.other)
    }

    /// The full form of this Adspec.
    pub fn to_parts(&self) -> AdspecParts {
        AdspecParts {
            general: self.general(),
            guaranteed: self.guaranteed(),
            controlled_load: self.controlled_load(),
            other: self.other().to_vec(),
        }
    }

    /// Decodes an ADSPEC body (C-Type 2) in place: no allocation unless some content is kept
    /// raw.
    #[inline]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 2 {
            return Err(BodyError::CType);
        }
        let mut r = Reader::new(body);
        read_intserv_header(&mut r, body.len())?;
        let mut adspec = Adspec::default();
        let mut fragments = 0usize;
        // Rank of the last typed fragment: 1 general, 2 guaranteed, 3 controlled-load.
        let mut last_rank = 0usize;
        let mut any_other = false;
        while !r.is_empty() {
            let Some((service, break_byte, words)) = read_sub_header(&mut r) else {
                return Err(adspec_err("fragment header truncated"));
            };
            let Some(data) = r.take(words * 4) else {
                return Err(adspec_err("fragment runs past the adspec"));
            };
            let break_bit = break_byte & BREAK_BIT != 0;
            fragments += 1;
            if fragments == 1 && service != SERVICE_GENERAL {
                return Err(adspec_err(
                    "the general parameters fragment must come first",
                ));
            }
            let rank = match service {
                SERVICE_GENERAL => 1,
                SERVICE_GUARANTEED => 2,
                SERVICE_CONTROLLED_LOAD => 3,
                _ => usize::MAX,
            };
            if rank == usize::MAX || rank <= last_rank || any_other {
                any_other = true;
                adspec.raw_mut().other.push(RawFragment {
                    service,
                    break_bit,
                    data: data.to_vec(),
                });
                continue;
            }
            last_rank = rank;
            match service {
                SERVICE_GENERAL => {
                    adspec.general_break = break_bit;
                    read_params(data, &GENERAL_ORDER, GENERAL_SLOTS, &mut adspec, |r| {
                        &mut r.general
                    })?;
                    if adspec.path_bw().is_some_and(|bw| !check_rate(bw, true)) {
                        return Err(adspec_err("path bandwidth is negative or not a number"));
                    }
                }
                SERVICE_GUARANTEED => {
                    adspec.guaranteed_break = break_bit;
                    adspec.present |= HAS_GUARANTEED;
                    read_params(
                        data,
                        &GUARANTEED_ORDER,
                        GUARANTEED_SLOTS,
                        &mut adspec,
                        |r| &mut r.guaranteed,
                    )?;
                }
                _ => {
                    adspec.controlled_load_break = break_bit;
                    adspec.present |= HAS_CONTROLLED_LOAD;
                    if !data.is_empty() {
                        read_params_slow(data, &[], 0, &mut adspec, |r| &mut r.controlled_load)?;
                    }
                }
            }
        }
        if fragments == 0 {
            return Err(adspec_err("adspec lacks the general parameters fragment"));
        }
        Ok(adspec)
    }

    /// Checks that every raw value is a multiple of 4 bytes (what the wire can carry).
    pub(crate) fn aligned(&self) -> bool {
        let Some(raw) = &self.raw else {
            return true;
        };
        let params = |extra: &[RawParam]| extra.iter().all(|p| p.value.len() % 4 == 0);
        params(&raw.general)
            && params(&raw.guaranteed)
            && params(&raw.controlled_load)
            && raw.other.iter().all(|f| f.data.len() % 4 == 0)
    }

    /// Encodes an ADSPEC body (C-Type 2). Length fields are back-filled, so the body needs no
    /// precomputed size.
    pub(crate) fn encode_body<S: Sink>(&self, out: &mut S) {
        let start = sink_len(out);
        out.put_u32(0); // version 0, overall length back-filled
        let raw = self.raw.as_deref();
        let typed = |order: &[u8; 4], base: usize| {
            let mut typed = [(0u8, None); 4];
            for (i, id) in order.iter().enumerate() {
                typed[i] = (*id, self.slot(base + i));
            }
            typed
        };
        write_fragment(
            out,
            SERVICE_GENERAL,
            self.general_break,
            &typed(&GENERAL_ORDER, GENERAL_SLOTS),
            raw.map_or(&[], |r| &r.general),
        );
        if self.present & HAS_GUARANTEED != 0 {
            write_fragment(
                out,
                SERVICE_GUARANTEED,
                self.guaranteed_break,
                &typed(&GUARANTEED_ORDER, GUARANTEED_SLOTS),
                raw.map_or(&[], |r| &r.guaranteed),
            );
        }
        if self.present & HAS_CONTROLLED_LOAD != 0 {
            write_fragment(
                out,
                SERVICE_CONTROLLED_LOAD,
                self.controlled_load_break,
                &[],
                raw.map_or(&[], |r| &r.controlled_load),
            );
        }
        for frag in self.other() {
            out.put_u8(frag.service);
            out.put_u8(if frag.break_bit { BREAK_BIT } else { 0 });
            out.put_u16(words_u16(frag.data.len()));
            out.put_slice(&frag.data);
        }
        let words = (sink_len(out) - start - 4) / 4;
        patch_u16(out, start + 2, saturate_u16(words));
    }
}

impl From<AdspecParts> for Adspec {
    fn from(parts: AdspecParts) -> Self {
        let AdspecParts {
            general,
            guaranteed,
            controlled_load,
            other,
        } = parts;
        let mut adspec = Adspec {
            general_break: general.break_bit,
            ..Adspec::default()
        };
        let mut raw = AdspecRaw {
            general: general.extra,
            other,
            ..AdspecRaw::default()
        };
        adspec.set_slot(GENERAL_SLOTS, general.is_hops);
        adspec.set_slot(GENERAL_SLOTS + 1, general.path_bw.map(f32::to_bits));
        adspec.set_slot(GENERAL_SLOTS + 2, general.min_latency);
        adspec.set_slot(GENERAL_SLOTS + 3, general.path_mtu);
        if let Some(g) = guaranteed {
            adspec.present |= HAS_GUARANTEED;
            adspec.guaranteed_break = g.break_bit;
            adspec.set_slot(GUARANTEED_SLOTS, g.ctot);
            adspec.set_slot(GUARANTEED_SLOTS + 1, g.dtot);
            adspec.set_slot(GUARANTEED_SLOTS + 2, g.csum);
            adspec.set_slot(GUARANTEED_SLOTS + 3, g.dsum);
            raw.guaranteed = g.extra;
        }
        if let Some(c) = controlled_load {
            adspec.present |= HAS_CONTROLLED_LOAD;
            adspec.controlled_load_break = c.break_bit;
            raw.controlled_load = c.extra;
        }
        if !raw.is_empty() {
            adspec.raw = Some(Box::new(raw));
        }
        adspec
    }
}

impl From<&Adspec> for AdspecParts {
    fn from(adspec: &Adspec) -> Self {
        adspec.to_parts()
    }
}

impl From<Adspec> for AdspecParts {
    fn from(adspec: Adspec) -> Self {
        adspec.to_parts()
    }
}

fn words_u16(bytes: usize) -> u16 {
    saturate_u16(bytes / 4)
}

fn saturate_u16(value: usize) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

fn write_fragment<S: Sink>(
    out: &mut S,
    service: u8,
    break_bit: bool,
    typed: &[(u8, Option<u32>)],
    extra: &[RawParam],
) {
    let start = sink_len(out);
    out.put_u8(service);
    out.put_u8(if break_bit { BREAK_BIT } else { 0 });
    out.put_u16(0); // back-filled
    for (id, value) in typed {
        if let Some(value) = value {
            out.put_u8(*id);
            out.put_u8(0);
            out.put_u16(1);
            out.put_u32(*value);
        }
    }
    for param in extra {
        out.put_u8(param.id);
        out.put_u8(param.flags);
        out.put_u16(words_u16(param.value.len()));
        out.put_slice(&param.value);
    }
    let words = (sink_len(out) - start - 4) / 4;
    patch_u16(out, start + 2, saturate_u16(words));
}

#[cfg(test)]
mod tests {
    use super::check_rate;

    #[test]
    fn check_rate_agrees_with_float_comparisons() {
        let samples = [
            0.0,
            -0.0,
            1.5,
            -1.5,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_0001),
        ];
        for value in samples {
            for allow_infinite in [false, true] {
                let expected =
                    !value.is_nan() && value >= 0.0 && (allow_infinite || value.is_finite());
                assert_eq!(
                    check_rate(value, allow_infinite),
                    expected,
                    "{value:?} (bits {:#x}), infinite allowed: {allow_infinite}",
                    value.to_bits()
                );
            }
        }
    }
}

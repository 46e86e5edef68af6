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

// ---------------------------------------------------------------------------------------------
// Wire codec of the IntServ object bodies (RFC 2210 §3): SENDER_TSPEC, FLOWSPEC, ADSPEC.
// ---------------------------------------------------------------------------------------------

use super::codec::Reader;
use super::object::BodyError;

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
    let (Some(version), Some(_), Some(words)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(tspec_err("shorter than the intserv header"));
    };
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
fn read_sub_header(r: &mut Reader<'_>) -> Option<(u8, u8, usize)> {
    Some((r.u8()?, r.u8()?, usize::from(r.u16()?)))
}

fn check_rate(value: f32, allow_infinite: bool) -> bool {
    !value.is_nan() && value >= 0.0 && (allow_infinite || value.is_finite())
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
        out.put_u8(PARAM_TOKEN_BUCKET);
        out.put_u8(0);
        out.put_u16(5);
        out.put_u32(self.rate.to_bits());
        out.put_u32(self.bucket.to_bits());
        out.put_u32(self.peak.to_bits());
        out.put_u32(self.min_policed);
        out.put_u32(self.max_packet);
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
        out.put_u32(7);
        out.put_u8(SERVICE_GENERAL);
        out.put_u8(0);
        out.put_u16(6);
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
                out.put_u32(7);
                out.put_u8(SERVICE_CONTROLLED_LOAD);
                out.put_u8(0);
                out.put_u16(6);
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

/// ADSPEC object body (class 13, C-Type 2, RFC 2210 §3.3): the general fragment, then the
/// per-service fragments.
///
/// Decoding keeps everything: parameters and fragments it does not type, or that arrive out of
/// the canonical order (general first, then Guaranteed, then Controlled-Load; parameters by
/// increasing number), land in the `extra` / `other` lists, so re-encoding reproduces the
/// input byte for byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adspec {
    /// Service 1 fragment (always present on the wire).
    pub general: AdspecGeneral,
    /// Service 2 fragment.
    pub guaranteed: Option<GuaranteedAdspec>,
    /// Service 5 fragment.
    pub controlled_load: Option<ControlledLoadAdspec>,
    /// Other fragments, in wire order after the typed ones.
    pub other: Vec<RawFragment>,
}

fn adspec_err(reason: &'static str) -> BodyError {
    BodyError::IntServ(reason)
}

/// Walks the parameters of one fragment: a parameter listed in `order` fills its slot when it
/// keeps the canonical order (increasing rank, nothing raw before it, flags 0, one word);
/// everything else is kept raw in `extra`, so re-encoding reproduces the wire order.
fn read_params(
    data: &[u8],
    order: &[u8],
    slots: &mut [Option<u32>],
    extra: &mut Vec<RawParam>,
) -> Result<(), BodyError> {
    // Fast path for what hosts and routers send: every typed parameter once, in order.
    if data.len() == order.len() * 8 && slots.len() == order.len() {
        let canonical = data
            .chunks_exact(8)
            .zip(order)
            .all(|(param, id)| param[..4] == [*id, 0, 0, 1]);
        if canonical {
            for (slot, param) in slots.iter_mut().zip(data.chunks_exact(8)) {
                *slot = Some(u32::from_be_bytes([param[4], param[5], param[6], param[7]]));
            }
            return Ok(());
        }
    }
    let mut r = Reader::new(data);
    let mut last_rank = 0usize;
    while !r.is_empty() {
        let Some((id, flags, words)) = read_sub_header(&mut r) else {
            return Err(adspec_err("parameter header truncated"));
        };
        let Some(value) = r.take(words * 4) else {
            return Err(adspec_err("parameter runs past its fragment"));
        };
        let rank = param_rank(order, id).filter(|rank| *rank > last_rank);
        if let (Some(rank), true, Ok(word)) = (
            rank,
            extra.is_empty() && flags == 0,
            <[u8; 4]>::try_from(value),
        ) {
            if let Some(slot) = slots.get_mut(rank - 1) {
                *slot = Some(u32::from_be_bytes(word));
                last_rank = rank;
                continue;
            }
        }
        extra.push(RawParam {
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

const GENERAL_ORDER: [u8; 4] = [
    PARAM_IS_HOPS,
    PARAM_PATH_BW,
    PARAM_MIN_LATENCY,
    PARAM_PATH_MTU,
];
const GUARANTEED_ORDER: [u8; 4] = [PARAM_CTOT, PARAM_DTOT, PARAM_CSUM, PARAM_DSUM];

impl Adspec {
    /// An Adspec as a sending host starts it (RFC 2210 §3.3.1 defaults): no hops yet, unknown
    /// bandwidth and latency left as "not set", the given MTU, and empty Guaranteed and
    /// Controlled-Load fragments.
    pub fn host_default(path_mtu: u32) -> Self {
        Adspec {
            general: AdspecGeneral {
                break_bit: false,
                is_hops: Some(0),
                path_bw: Some(f32::INFINITY),
                min_latency: Some(0),
                path_mtu: Some(path_mtu),
                extra: Vec::new(),
            },
            guaranteed: Some(GuaranteedAdspec {
                break_bit: false,
                ctot: Some(0),
                dtot: Some(0),
                csum: Some(0),
                dsum: Some(0),
                extra: Vec::new(),
            }),
            controlled_load: Some(ControlledLoadAdspec::default()),
            other: Vec::new(),
        }
    }

    /// Decodes an ADSPEC body (C-Type 2), straight into its box.
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Box<Self>, BodyError> {
        if c_type != 2 {
            return Err(BodyError::CType);
        }
        let mut r = Reader::new(body);
        read_intserv_header(&mut r, body.len())?;
        let mut adspec = Box::<Adspec>::default();
        let mut fragments = 0usize;
        // Rank of the last typed fragment: 1 general, 2 guaranteed, 3 controlled-load.
        let mut last_rank = 0usize;
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
            if rank == usize::MAX || rank <= last_rank || !adspec.other.is_empty() {
                adspec.other.push(RawFragment {
                    service,
                    break_bit,
                    data: data.to_vec(),
                });
                continue;
            }
            last_rank = rank;
            match service {
                SERVICE_GENERAL => {
                    let g = &mut adspec.general;
                    g.break_bit = break_bit;
                    let mut slots = [None; 4];
                    read_params(data, &GENERAL_ORDER, &mut slots, &mut g.extra)?;
                    let [hops, bw, latency, mtu] = slots;
                    let bw = bw.map(f32::from_bits);
                    if bw.is_some_and(|bw| !check_rate(bw, true)) {
                        return Err(adspec_err("path bandwidth is negative or not a number"));
                    }
                    (g.is_hops, g.path_bw, g.min_latency, g.path_mtu) = (hops, bw, latency, mtu);
                }
                SERVICE_GUARANTEED => {
                    let mut frag = GuaranteedAdspec {
                        break_bit,
                        ..GuaranteedAdspec::default()
                    };
                    let mut slots = [None; 4];
                    read_params(data, &GUARANTEED_ORDER, &mut slots, &mut frag.extra)?;
                    [frag.ctot, frag.dtot, frag.csum, frag.dsum] = slots;
                    adspec.guaranteed = Some(frag);
                }
                _ => {
                    let mut frag = ControlledLoadAdspec {
                        break_bit,
                        extra: Vec::new(),
                    };
                    read_params(data, &[], &mut [], &mut frag.extra)?;
                    adspec.controlled_load = Some(frag);
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
        let params = |extra: &[RawParam]| extra.iter().all(|p| p.value.len() % 4 == 0);
        params(&self.general.extra)
            && self.guaranteed.as_ref().is_none_or(|g| params(&g.extra))
            && self
                .controlled_load
                .as_ref()
                .is_none_or(|c| params(&c.extra))
            && self.other.iter().all(|f| f.data.len() % 4 == 0)
    }

    /// Encodes an ADSPEC body (C-Type 2). Length fields are back-filled, so the body needs no
    /// precomputed size.
    pub(crate) fn encode_body<S: super::codec::Sink>(&self, out: &mut S) {
        let start = super::codec::sink_len(out);
        out.put_u32(0); // version 0, overall length back-filled
        let g = &self.general;
        let general = [
            (PARAM_IS_HOPS, g.is_hops),
            (PARAM_PATH_BW, g.path_bw.map(f32::to_bits)),
            (PARAM_MIN_LATENCY, g.min_latency),
            (PARAM_PATH_MTU, g.path_mtu),
        ];
        write_fragment(out, SERVICE_GENERAL, g.break_bit, &general, &g.extra);
        if let Some(q) = &self.guaranteed {
            let typed = [
                (PARAM_CTOT, q.ctot),
                (PARAM_DTOT, q.dtot),
                (PARAM_CSUM, q.csum),
                (PARAM_DSUM, q.dsum),
            ];
            write_fragment(out, SERVICE_GUARANTEED, q.break_bit, &typed, &q.extra);
        }
        if let Some(c) = &self.controlled_load {
            write_fragment(out, SERVICE_CONTROLLED_LOAD, c.break_bit, &[], &c.extra);
        }
        for frag in &self.other {
            out.put_u8(frag.service);
            out.put_u8(if frag.break_bit { BREAK_BIT } else { 0 });
            out.put_u16(words_u16(frag.data.len()));
            out.put_slice(&frag.data);
        }
        let words = (super::codec::sink_len(out) - start - 4) / 4;
        super::codec::patch_u16(out, start + 2, saturate_u16(words));
    }
}

fn words_u16(bytes: usize) -> u16 {
    saturate_u16(bytes / 4)
}

fn saturate_u16(value: usize) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

fn write_fragment<S: super::codec::Sink>(
    out: &mut S,
    service: u8,
    break_bit: bool,
    typed: &[(u8, Option<u32>)],
    extra: &[RawParam],
) {
    let start = super::codec::sink_len(out);
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
    let words = (super::codec::sink_len(out) - start - 4) / 4;
    super::codec::patch_u16(out, start + 2, saturate_u16(words));
}

//! Readable dumps of RSVP messages as they were on the wire: what the `decode` example and
//! `qosctl decode` print. Pure formatting, like the rest of the codec.
//!
//! # Examples
//!
//! ```
//! use qtoq::wire::dump;
//!
//! // Seven bytes: not even a whole common header.
//! let bytes = dump::parse_hex("10 06 00 00 40 00 00")?;
//! let report = dump::describe(&bytes).unwrap_err();
//! assert!(report.contains("an RSVP node drops this silently"), "{report}");
//! # Ok::<(), dump::HexError>(())
//! ```

use std::fmt;

use super::error::WireError;
use super::message::Message;

/// Why text is not a run of hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// An odd number of hex digits: the last byte is half there.
    #[error("odd number of hex digits ({digits})")]
    OddLength {
        /// How many digits there are.
        digits: usize,
    },
    /// Something that is not a hex digit.
    #[error("not a hex digit at digit {at}: {found:?}")]
    BadDigit {
        /// The 0-based position among the digits (separators not counted).
        at: usize,
        /// The two characters of the byte in question.
        found: String,
    },
}

/// Bytes written as hex: whitespace, `:` and `,` between digits are allowed, and a leading
/// `0x`.
///
/// # Errors
///
/// An odd number of digits, or a character that is not a hex digit.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let digits: Vec<char> = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != ',')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::OddLength {
            digits: digits.len(),
        });
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let found: String = pair.iter().collect();
            u8::from_str_radix(&found, 16).map_err(|_| HexError::BadDigit { at: i * 2, found })
        })
        .collect()
}

/// `bytes` without the IPv4 or IPv6 header in front of them, when there is one carrying
/// protocol 46 (RSVP); `bytes` as they are otherwise.
pub fn strip_ip_header(bytes: &[u8]) -> &[u8] {
    match bytes.first().map(|b| b >> 4) {
        Some(4) if bytes.len() >= 20 && bytes[9] == 46 => {
            let header = usize::from(bytes[0] & 0x0f) * 4;
            bytes.get(header..).unwrap_or(bytes)
        }
        Some(6) if bytes.len() >= 40 && bytes[6] == 46 => &bytes[40..],
        _ => bytes,
    }
}

/// Decodes the RSVP message in `bytes` (after an IP header of protocol 46, if any) and
/// describes it: `Ok` with its dump ([`Message::dump`]), or `Err` with the decode error,
/// where it is, and what an RSVP node does about it ([`WireError::explain`]). Both texts end
/// with a newline.
pub fn describe(bytes: &[u8]) -> Result<String, String> {
    let rsvp = strip_ip_header(bytes);
    match Message::decode(rsvp) {
        Ok(message) => Ok(message.dump(rsvp.len()).to_string()),
        Err(error) => Err(error.explain().to_string()),
    }
}

/// A message laid out one object per line ([`Message::dump`]).
#[derive(Debug, Clone, Copy)]
pub struct MessageDump<'a> {
    message: &'a Message,
    len: usize,
}

impl Message {
    /// This message, readable: its type, length (`len`, the bytes it took on the wire),
    /// flags and Send_TTL, then each object with its class and C-Type, the ERROR_SPEC by its
    /// RFC 2205 name, and a bundle's sub-messages indented below it. Every line ends with a
    /// newline.
    pub fn dump(&self, len: usize) -> MessageDump<'_> {
        MessageDump { message: self, len }
    }
}

impl fmt::Display for MessageDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_message(f, self.message, self.len, "")
    }
}

fn write_message(
    f: &mut fmt::Formatter<'_>,
    msg: &Message,
    len: usize,
    indent: &str,
) -> fmt::Result {
    writeln!(
        f,
        "{indent}{:?} message: {len} bytes, flags {:#x}, send TTL {}",
        msg.msg_type(),
        msg.flags,
        msg.send_ttl
    )?;
    for obj in &msg.objects {
        let body = format!("{obj:#?}").replace('\n', &format!("\n{indent}    "));
        writeln!(
            f,
            "{indent}  class {:>3} c-type {:>2}: {body}",
            obj.class_num(),
            obj.c_type()
        )?;
    }
    if let Some(spec) = msg.error_spec() {
        writeln!(f, "{indent}  error: {} (from {})", spec.error(), spec.node)?;
    }
    for sub in &msg.bundled {
        // A decoded sub-message always encodes; its length is what it took on the wire.
        let len = sub.encode().map_or(0, |bytes| bytes.len());
        write_message(f, sub, len, &format!("{indent}  | "))?;
    }
    Ok(())
}

/// A decode error with where it is and what it deserves ([`WireError::explain`]).
#[derive(Debug, Clone, Copy)]
pub struct WireErrorExplained<'a>(&'a WireError);

impl WireError {
    /// This error, readable: what is wrong, the byte offset and object at fault when known,
    /// and whether an RSVP node drops the message silently or answers with which
    /// ERROR_SPEC. Every line ends with a newline.
    pub fn explain(&self) -> WireErrorExplained<'_> {
        WireErrorExplained(self)
    }
}

impl fmt::Display for WireErrorExplained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        writeln!(f, "error: {error}")?;
        if let Some(offset) = error.offset() {
            writeln!(f, "  at byte offset {offset}")?;
        }
        if let Some((class_num, c_type)) = error.object() {
            writeln!(f, "  object class {class_num}, c-type {c_type}")?;
        }
        if error.discard_silently() {
            writeln!(f, "  an RSVP node drops this silently")
        } else {
            let answer = error.error_spec();
            writeln!(
                f,
                "  an RSVP node answers with ERROR_SPEC {answer} (value {:#06x})",
                answer.value
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_allows_separators_and_names_bad_digits() {
        assert_eq!(
            parse_hex("0x10:01, 0a ff"),
            Ok(vec![0x10, 0x01, 0x0a, 0xff])
        );
        assert_eq!(parse_hex("abc"), Err(HexError::OddLength { digits: 3 }));
        assert_eq!(
            parse_hex("10zz"),
            Err(HexError::BadDigit {
                at: 2,
                found: "zz".into()
            })
        );
    }

    #[test]
    fn an_ip_header_of_protocol_46_is_skipped() {
        let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 46];
        packet.resize(20, 0);
        packet.extend_from_slice(&[0x10, 1, 0, 0, 64, 0, 0, 8]);
        assert_eq!(strip_ip_header(&packet), &packet[20..]);
        // Not protocol 46: left alone.
        packet[9] = 17;
        assert_eq!(strip_ip_header(&packet), &packet[..]);
    }
}

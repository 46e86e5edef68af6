//! Decodes one RSVP message and pretty-prints it .
//!
//! ```text
//! cargo run --example decode -- 1001d0a4400000...     # hex (spaces, colons allowed)
//! cargo run --example decode -- --file message.bin    # raw bytes
//! echo 10 01 ... | cargo run --example decode          # hex on stdin
//! cargo run --example decode -- --sample path         # a built-in sample (path, resv)
//! ```
//!
//! An IPv4 or IPv6 header in front of the message (protocol 46) is skipped. Exits with status 1
//! and prints the error, its location and the ERROR_SPEC it deserves when the message is bad.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use qtoq::wire::intserv::{GuaranteedRspec, TokenBucket};
use qtoq::wire::*;

#[derive(Parser, Debug)]
#[command(about = "Decode and pretty-print one RSVP message")]
struct Args {
    /// The message as hex; read from stdin when absent.
    hex: Option<String>,
    /// Read raw bytes from this file instead.
    #[arg(long, conflicts_with = "hex")]
    file: Option<PathBuf>,
    /// Print a built-in sample message (`path` or `resv`) and its hex.
    #[arg(long, conflicts_with_all = ["hex", "file"])]
    sample: Option<String>,
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != ',')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|e| format!("bad hex at digit {i}: {e}"))
        })
        .collect()
}

/// Skips an IPv4/IPv6 header carrying protocol 46, if there is one.
fn strip_ip_header(bytes: &[u8]) -> &[u8] {
    match bytes.first().map(|b| b >> 4) {
        Some(4) if bytes.len() >= 20 && bytes[9] == 46 => {
            let header = usize::from(bytes[0] & 0x0f) * 4;
            bytes.get(header..).unwrap_or(bytes)
        }
        Some(6) if bytes.len() >= 40 && bytes[6] == 46 => &bytes[40..],
        _ => bytes,
    }
}

fn sample(name: &str) -> Option<Message> {
    let sock = |s: &str| s.parse::<SocketAddr>().ok();
    let (receiver, sender) = (sock("192.0.2.2:5001")?, sock("192.0.2.1:40000")?);
    let tspec = TokenBucket::new(125_000.0, 16_000.0);
    match name {
        "path" => Some(Message::path(
            Session::new(receiver, 6),
            RsvpHop::new(sender.ip(), 1),
            TimeValues::new(Duration::from_secs(30)),
            FilterSpec::new(sender),
            tspec,
            Some(Adspec::host_default(1500)),
        )),
        "resv" => Some(Message::resv(
            Session::new(receiver, 6),
            RsvpHop::new(receiver.ip(), 1),
            TimeValues::new(Duration::from_secs(30)),
            Style::FixedFilter,
            FlowSpec::Guaranteed {
                tspec,
                rspec: GuaranteedRspec {
                    rate: 250_000.0,
                    slack: 0,
                },
            },
            &[FilterSpec::new(sender)],
        )),
        _ => None,
    }
}

fn print_message(msg: &Message, bytes: usize, indent: &str) {
    println!(
        "{indent}{:?} message: {bytes} bytes, flags {:#x}, send TTL {}",
        msg.msg_type(),
        msg.flags,
        msg.send_ttl
    );
    for obj in &msg.objects {
        let body = format!("{obj:#?}").replace('\n', &format!("\n{indent}    "));
        println!(
            "{indent}  class {:>3} c-type {:>2}: {body}",
            obj.class_num(),
            obj.c_type()
        );
    }
    // The ERROR_SPEC's code and value by their RFC 2205 names.
    if let Some(spec) = msg.error_spec() {
        println!("{indent}  error: {} (from {})", spec.error(), spec.node);
    }
    for sub in &msg.bundled {
        // A decoded sub-message always encodes; its length is what it took on the wire.
        let len = sub.encode().map_or(0, |bytes| bytes.len());
        print_message(sub, len, &format!("{indent}  | "));
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let input = if let Some(name) = &args.sample {
        let Some(msg) = sample(name) else {
            eprintln!("unknown sample {name:?}: use `path` or `resv`");
            return ExitCode::FAILURE;
        };
        match msg.encode() {
            Ok(bytes) => {
                println!(
                    "hex: {}",
                    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                Ok(bytes)
            }
            Err(e) => Err(format!("cannot encode sample {name}: {e}")),
        }
    } else if let Some(path) = &args.file {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    } else if let Some(hex) = &args.hex {
        parse_hex(hex)
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))
            .and_then(|_| parse_hex(&text))
    };
    let bytes = match input {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rsvp = strip_ip_header(&bytes);
    match Message::decode(rsvp) {
        Ok(msg) => {
            print_message(&msg, rsvp.len(), "");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let answer = e.error_spec();
            eprintln!("error: {e}");
            if let Some(offset) = e.offset() {
                eprintln!("  at byte offset {offset}");
            }
            if let Some((class_num, c_type)) = e.object() {
                eprintln!("  object class {class_num}, c-type {c_type}");
            }
            if e.discard_silently() {
                eprintln!("  an RSVP node drops this silently");
            } else {
                eprintln!(
                    "  an RSVP node answers with ERROR_SPEC {answer} (value {:#06x})",
                    answer.value
                );
            }
            ExitCode::FAILURE
        }
    }
}

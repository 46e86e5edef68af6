//! Decodes one RSVP message and pretty-prints it (with [`qtoq::wire::dump`], as `qosctl
//! decode` does).
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
        dump::parse_hex(hex).map_err(|e| e.to_string())
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))
            .and_then(|_| dump::parse_hex(&text).map_err(|e| e.to_string()))
    };
    let bytes = match input {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The same dump as `qosctl decode`.
    match dump::describe(&bytes) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprint!("{text}");
            ExitCode::FAILURE
        }
    }
}

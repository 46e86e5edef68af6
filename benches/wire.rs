//! Codec speed: decode+validate and encode of a typical Path (with Adspec) and a Resv (FF,
//! Guaranteed), beside two baselines measured in the same run: copying the datagram into a
//! fresh `Vec` (one allocation and a copy: what a parse that keeps the datagram costs at least;
//! the codec's own decode of these messages allocates nothing) and the RFC 1071 checksum
//! alone (what verifying any message costs at least).
//!
//! `integrity_*`: RFC 2747 signing (INTEGRITY inserted into the encoded message, HMAC, checksum)
//! and verification (HMAC over the message with the digest and checksum fields zero, constant-
//! time compare) of the same messages with HMAC-MD5 and HMAC-SHA-256, to set beside `decode`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qtoq::integrity::{self, Algorithm, Key, KeyChain, KeyId, Secret};
use qtoq::wire::intserv::{GuaranteedRspec, TokenBucket};
use qtoq::wire::*;

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("address literal")
}

fn path() -> Message {
    Message::path(
        Session::new(sock("10.9.8.7:5001"), 6),
        RsvpHop::new(sock("10.1.2.3:0").ip(), 7),
        TimeValues::new(Duration::from_secs(30)),
        FilterSpec::new(sock("10.1.2.3:40000")),
        TokenBucket::new(125_000.0, 16_000.0),
        Some(Adspec::host_default(1500)),
    )
}

fn resv_ff() -> Message {
    Message::resv(
        Session::new(sock("10.9.8.7:5001"), 6),
        RsvpHop::new(sock("10.9.8.7:0").ip(), 7),
        TimeValues::new(Duration::from_secs(30)),
        Style::FixedFilter,
        FlowSpec::Guaranteed {
            tspec: TokenBucket::new(125_000.0, 16_000.0),
            rspec: GuaranteedRspec {
                rate: 250_000.0,
                slack: 1000,
            },
        },
        &[FilterSpec::new(sock("10.1.2.3:40000"))],
    )
}

/// Same one's-complement sum the codec uses (native-order 32-bit words, one swap at the end),
/// as the "checksum only" baseline.
fn checksum(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(4);
    let mut sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_ne_bytes(tail));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::from_be(sum as u16)
}

fn bench(c: &mut Criterion) {
    for (name, msg) in [("path_adspec", path()), ("resv_ff_guaranteed", resv_ff())] {
        let bytes = msg.encode().expect("encodable");
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode", |b| {
            b.iter(|| Message::decode(black_box(&bytes)).expect("valid"))
        });
        let mut out = Vec::with_capacity(512);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode_to_vec(&mut out).expect("encodable")
            })
        });
        group.bench_function("baseline_copy", |b| b.iter(|| black_box(&bytes).to_vec()));
        group.bench_function("baseline_checksum", |b| {
            b.iter(|| checksum(black_box(&bytes)))
        });
        group.finish();
    }
    let source = sock("10.1.2.3:0").ip();
    for (name, msg) in [("path_adspec", path()), ("resv_ff_guaranteed", resv_ff())] {
        let bytes = msg.encode().expect("encodable");
        for algorithm in [Algorithm::HmacMd5, Algorithm::HmacSha256] {
            let key = Key {
                peer: "10.0.0.0/8".parse().expect("prefix"),
                key_id: KeyId::new(1).expect("48 bits"),
                algorithm,
                secret: Secret::new(*b"a 16-byte secret").expect("non-empty"),
            };
            let chain = KeyChain::new(vec![key.clone()]).expect("one key");
            let mut group = c.benchmark_group(format!("integrity_{algorithm}/{name}"));
            group.throughput(Throughput::Elements(1));
            let mut out = Vec::with_capacity(512);
            group.bench_function("sign", |b| {
                b.iter(|| {
                    out.clear();
                    out.extend_from_slice(black_box(&bytes));
                    integrity::sign(&key, 7, 1, &mut out).expect("signable")
                })
            });
            let mut signed = bytes.clone();
            integrity::sign(&key, 7, 1, &mut signed).expect("signable");
            group.bench_function("verify", |b| {
                b.iter(|| integrity::verify(&chain, source, black_box(&signed)).expect("valid"))
            });
            group.bench_function("verify_then_decode", |b| {
                b.iter(|| {
                    integrity::verify(&chain, source, black_box(&signed)).expect("valid");
                    Message::decode(black_box(&signed)).expect("valid")
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

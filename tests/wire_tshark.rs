//! Wireshark agrees: every message type, encoded with rich content inside an IP header, is
//! dissected by `tshark` to the values we encoded, without malformed-packet or checksum
//! warnings.

mod wire_support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use qtoq::wire::*;
use serde_json::Value;
use wire_support::*;

const LINKTYPE_RAW: u32 = 101;

/// RFC 1071 checksum for the IPv4 header.
fn ip_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wraps an RSVP message in an IPv4 (protocol 46, optional Router Alert) or IPv6 header.
fn ip_packet(src: IpAddr, dst: IpAddr, ttl: u8, router_alert: bool, rsvp: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let options: &[u8] = if router_alert {
                &[0x94, 0x04, 0, 0]
            } else {
                &[]
            };
            let header_len = 20 + options.len();
            let total = u16::try_from(header_len + rsvp.len()).unwrap();
            let mut p = vec![0x40 | (header_len / 4) as u8, 0];
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34, 0x40, 0]); // id, DF
            p.extend_from_slice(&[ttl, 46, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(options);
            let sum = ip_checksum(&p);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(rsvp);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&u16::try_from(rsvp.len()).unwrap().to_be_bytes());
            p.extend_from_slice(&[46, ttl]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(rsvp);
            p
        }
        _ => panic!("mixed address families"),
    }
}

fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        let len = u32::try_from(p.len()).unwrap();
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

/// A file in the temp dir unique to this process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TempFile(
            std::env::temp_dir().join(format!("qtoq-wire-{tag}-{}-{n}.pcap", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tshark_available() -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("QTOQ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("tshark is required (QTOQ_REQUIRE_PRIVILEGED=1) but not installed");
        }
        eprintln!("skipping: tshark is not installed (apt-get install tshark)");
    }
    found
}

/// Addresses the packet travels between, as the engine would send it.
fn endpoints(msg: &Message) -> (IpAddr, IpAddr, bool) {
    let sender = ip("10.1.2.3");
    let receiver = ip("10.9.8.7");
    match msg.msg_type() {
        MsgType::Path | MsgType::PathTear
            if msg.session().is_some_and(|s| s.destination.is_ipv6()) =>
        {
            (ip("2001:db8::1"), ip("2001:db8::2"), false)
        }
        MsgType::Path | MsgType::PathTear | MsgType::ResvErr => (sender, receiver, true),
        _ => (receiver, sender, false),
    }
}

/// Flattens tshark's JSON tree into (field, value) pairs, in order.
fn flatten(value: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(v, k, out)),
        Value::Array(items) => items.iter().for_each(|v| flatten(v, key, out)),
        Value::String(s) => out.push((key.to_string(), s.clone())),
        other => out.push((key.to_string(), other.to_string())),
    }
}

/// Bytes as tshark prints them: `01:02:0a`.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The (tshark field, value) pairs the dissection of `msg` must contain.
fn expected_fields(msg: &Message, out: &mut Vec<(&'static str, String)>) {
    out.push(("rsvp.msg", msg.msg_type().number().to_string()));
    out.push(("rsvp.sending_ttl", msg.send_ttl.to_string()));
    out.push(("rsvp.flags", format!("0x{:02x}", msg.flags)));
    for obj in &msg.objects {
        match obj {
            Object::Session(s) => match s.destination {
                IpAddr::V4(a) => {
                    out.push(("rsvp.session.ip", a.to_string()));
                    out.push(("rsvp.session.proto", s.protocol.to_string()));
                    out.push(("rsvp.session.port", s.port.to_string()));
                }
                IpAddr::V6(a) => {
                    out.push(("rsvp.session.destination_address", a.to_string()));
                    out.push(("rsvp.session.protocol", s.protocol.to_string()));
                    out.push(("rsvp.session.destination_port", s.port.to_string()));
                }
            },
            Object::RsvpHop(h) => {
                let key = if h.address.is_ipv4() {
                    "rsvp.hop.neighbor_address_ipv4"
                } else {
                    "rsvp.neighbor_address_ipv6"
                };
                out.push((key, h.address.to_string()));
                out.push(("rsvp.hop.logical_interface", h.lih.to_string()));
            }
            Object::TimeValues(t) => {
                out.push(("rsvp.refresh_interval", t.refresh_period_ms.to_string()))
            }
            Object::Style(s) => {
                out.push(("rsvp.style.style", format!("0x{:06x}", s.option_vector())))
            }
            Object::ErrorSpec(e) => {
                out.push(("rsvp.error.error_node_ipv4", e.node.to_string()));
                out.push(("rsvp.error.error_code", e.code.0.to_string()));
                out.push(("rsvp.error_value", e.value.to_string()));
                out.push(("rsvp.error_flags", format!("0x{:02x}", e.flags)));
            }
            Object::FilterSpec(f) | Object::SenderTemplate(f) => match f.address() {
                IpAddr::V4(a) => {
                    out.push(("rsvp.sender.ip", a.to_string()));
                    out.push(("rsvp.sender.port", f.socket_addr().port().to_string()));
                }
                IpAddr::V6(a) => {
                    out.push(("rsvp.template_filter.source_address_ipv6", a.to_string()));
                    out.push((
                        "rsvp.template_filter.source_port",
                        f.socket_addr().port().to_string(),
                    ));
                }
            },
            Object::SenderTspec(t) => {
                out.push(("rsvp.tspec.token_bucket_rate", t.rate.to_string()));
                out.push(("rsvp.tspec.token_bucket_size", t.bucket.to_string()));
                out.push(("rsvp.tspec.peak_data_rate", t.peak.to_string()));
                out.push(("rsvp.minimum_policed_unit", t.min_policed.to_string()));
                out.push(("rsvp.maximum_packet_size", t.max_packet.to_string()));
            }
            Object::FlowSpec(f) => {
                let t = f.tspec();
                out.push(("rsvp.flowspec.token_bucket_rate", t.rate.to_string()));
                out.push(("rsvp.flowspec.token_bucket_size", t.bucket.to_string()));
                match f {
                    FlowSpec::Guaranteed { rspec, .. } => {
                        out.push(("rsvp.flowspec.service_header", "2".into()));
                        out.push(("rsvp.flowspec.rate", rspec.rate.to_string()));
                        out.push(("rsvp.flowspec.slack_term", rspec.slack.to_string()));
                    }
                    FlowSpec::ControlledLoad(_) => {
                        out.push(("rsvp.flowspec.service_header", "5".into()))
                    }
                }
            }
            Object::Adspec(a) => {
                if let Some(mtu) = a.path_mtu() {
                    out.push(("rsvp.adspec.uint", mtu.to_string()));
                }
                out.push(("rsvp.adspec.service_header", "1".into()));
                if a.guaranteed().is_some() {
                    out.push(("rsvp.adspec.service_header", "2".into()));
                }
                if a.controlled_load().is_some() {
                    out.push(("rsvp.adspec.service_header", "5".into()));
                }
            }
            Object::ResvConfirm(c) => {
                out.push(("rsvp.confirm.receiver_address_ipv4", c.receiver.to_string()))
            }
            Object::Scope(Scope::Ipv4(list)) => list
                .iter()
                .for_each(|a| out.push(("rsvp.scope.ipv4_address", a.to_string()))),
            Object::Integrity(i) => {
                out.push(("rsvp.integrity.key_identifier", hex(&i.key_id)));
                out.push(("rsvp.integrity.sequence_number", i.sequence.to_string()));
                out.push(("rsvp.integrity.hash", hex(&i.digest)));
            }
            Object::MessageId(m) => {
                out.push(("rsvp.message_id.epoch", m.epoch.to_string()));
                out.push(("rsvp.message_id.message_id", m.id.to_string()));
            }
            Object::MessageIdAck(m) | Object::MessageIdNack(m) => {
                out.push(("rsvp.message_id_ack.epoch", m.epoch.to_string()));
                out.push(("rsvp.message_id_ack.message_id", m.id.to_string()));
            }
            Object::MessageIdList(l) => {
                out.push(("rsvp.message_id_list.epoch", l.epoch.to_string()));
                if let MessageIdEntries::Ids(ids) = &l.entries {
                    ids.iter().for_each(|id| {
                        out.push(("rsvp.message_id_list.message_id", id.to_string()))
                    });
                }
            }
            Object::PolicyData(p) => out.push(("rsvp.policy.data", hex(&p.body))),
            Object::Unknown { body, .. } | Object::Null { body, .. } => {
                out.push(("rsvp.unknown.data", hex(body)))
            }
            // Wireshark 4.0 does not know the RFC 3097 CHALLENGE class: it shows the body raw.
            Object::Challenge(c) => {
                let mut body = vec![0, 0];
                body.extend_from_slice(&c.key_id);
                body.extend_from_slice(&c.cookie.to_be_bytes());
                out.push(("rsvp.unknown.data", hex(&body)))
            }
            other => panic!("no tshark expectation for {other:?}"),
        }
    }
    for sub in &msg.bundled {
        expected_fields(sub, out);
    }
}

#[test]
fn tshark_decodes_every_message_type_as_encoded() {
    if !tshark_available() {
        return;
    }
    let messages = all_messages();
    let mut packets = Vec::new();
    let mut encoded = Vec::new();
    for (_, msg) in &messages {
        let bytes = msg.encode().unwrap();
        let (src, dst, router_alert) = endpoints(msg);
        packets.push(ip_packet(src, dst, msg.send_ttl, router_alert, &bytes));
        encoded.push(bytes);
    }
    let file = TempFile::new("all");
    std::fs::write(&file.0, pcap(&packets)).unwrap();
    let output = Command::new("tshark")
        .args([
            "-n",
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "json",
            "--no-duplicate-keys",
            "-r",
        ])
        .arg(&file.0)
        .output()
        .expect("run tshark");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frames: Vec<Value> = serde_json::from_slice(&output.stdout).expect("tshark json");
    assert_eq!(frames.len(), messages.len());

    for (((name, msg), bytes), frame) in messages.iter().zip(&encoded).zip(&frames) {
        let layers = &frame["_source"]["layers"];
        let mut fields = Vec::new();
        flatten(layers, "", &mut fields);
        let has = |key: &str, value: &str| fields.iter().any(|(k, v)| k == key && v == value);
        let dump = || format!("{name}: tshark fields {fields:#?}");

        // RSVP itself, and no IP header or checksum trouble.
        assert!(layers.get("rsvp").is_some(), "{}", dump());
        if msg.session().is_none_or(|s| s.destination.is_ipv4()) {
            assert!(has("ip.checksum.status", "1"), "{}", dump());
        }
        let checksum = format!("0x{:02x}{:02x}", bytes[2], bytes[3]);
        assert!(has("rsvp.message_checksum", &checksum), "{}", dump());
        assert!(
            has("rsvp.message_length", &bytes.len().to_string()),
            "{}",
            dump()
        );

        // Key fields decode to what we encoded.
        let mut expected = Vec::new();
        expected_fields(msg, &mut expected);
        for (key, value) in &expected {
            assert!(
                has(key, value),
                "{name}: tshark lacks {key} = {value}\n{}",
                dump()
            );
        }

        // No malformed-packet or expert warnings, except Wireshark 4.0's "Unknown session type"
        // on the RFC 3097 messages it does not know (they carry no SESSION).
        let rfc3097 = matches!(
            msg.msg_type(),
            MsgType::IntegrityChallenge | MsgType::IntegrityResponse
        );
        for (key, value) in &fields {
            assert!(!key.starts_with("_ws.malformed"), "{}", dump());
            if key == "_ws.expert.message" {
                assert!(
                    rfc3097 && value == "Unknown session type",
                    "{name}: expert {value}\n{}",
                    dump()
                );
            }
        }
    }

    // Checksum status is only in the text view: every RSVP checksum (bundled ones too) is
    // "[correct]", none is anything else. Wireshark 4.0 does not verify the outer checksum
    // of a Bundle (it prints no status there); our own decode does.
    let text = Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(&file.0)
        .output()
        .expect("run tshark -V");
    let text = String::from_utf8_lossy(&text.stdout);
    let checksums: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("Message Checksum:"))
        .collect();
    let total: usize = messages.iter().map(|(_, m)| 1 + m.bundled.len()).sum();
    assert_eq!(checksums.len(), total, "{text}");
    let bundles = messages
        .iter()
        .filter(|(_, m)| m.msg_type() == MsgType::Bundle)
        .count();
    let correct = checksums
        .iter()
        .filter(|l| l.ends_with("[correct]"))
        .count();
    assert_eq!(correct, total - bundles, "{checksums:#?}");
    assert!(
        checksums.iter().all(|l| !l.contains("incorrect")),
        "{checksums:#?}"
    );
    assert!(!text.contains("Malformed"), "{text}");
}

#[test]
fn tshark_flags_a_corrupted_checksum_that_decode_rejects() {
    if !tshark_available() {
        return;
    }
    // The negative control: if our checksum were wrong, this is what the test would see.
    let mut bytes = wire_support::path().encode().unwrap();
    bytes[2] ^= 0x01;
    assert!(matches!(
        Message::decode(&bytes),
        Err(WireError::BadChecksum { .. })
    ));
    let packet = ip_packet(ip("10.1.2.3"), ip("10.9.8.7"), 64, true, &bytes);
    let file = TempFile::new("bad");
    std::fs::write(&file.0, pcap(&[packet])).unwrap();
    let text = Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(&file.0)
        .output()
        .expect("run tshark -V");
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Message Checksum:"))
        .expect("checksum line");
    assert!(line.contains("incorrect"), "{line}");
}

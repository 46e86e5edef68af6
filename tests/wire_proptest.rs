//! Property tests: arbitrary well-formed messages round-trip; arbitrary and mutated bytes never
//! panic, and whatever decodes re-encodes to something that decodes to the same value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use qtoq::wire::intserv::{GuaranteedRspec, TokenBucket};
use qtoq::wire::*;

fn addr(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .boxed()
    } else {
        any::<[u8; 4]>()
            .prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .boxed()
    }
}

fn rate() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        0.0f32..1e12,
        (0u32..100_000_000).prop_map(|n| n as f32)
    ]
}

fn token_bucket() -> impl Strategy<Value = TokenBucket> {
    (
        rate(),
        rate(),
        prop_oneof![rate(), Just(f32::INFINITY)],
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(rate, bucket, peak, a, b)| TokenBucket {
            rate,
            bucket,
            peak,
            min_policed: a.min(b),
            max_packet: a.max(b),
        })
}

fn flowspec() -> impl Strategy<Value = FlowSpec> {
    prop_oneof![
        token_bucket().prop_map(FlowSpec::ControlledLoad),
        (token_bucket(), rate(), any::<u32>()).prop_map(|(tspec, rate, slack)| {
            FlowSpec::Guaranteed {
                tspec,
                rspec: GuaranteedRspec { rate, slack },
            }
        })
    ]
}

fn filter(v6: bool) -> BoxedStrategy<FilterSpec> {
    if v6 {
        prop_oneof![
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, port)| FilterSpec::Ipv6 {
                address: a.into(),
                port
            }),
            (any::<[u8; 16]>(), 0u32..1 << 20).prop_map(|(a, flow_label)| {
                FilterSpec::Ipv6FlowLabel {
                    address: a.into(),
                    flow_label,
                }
            })
        ]
        .boxed()
    } else {
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, port)| FilterSpec::Ipv4 {
                address: a.into(),
                port,
            })
            .boxed()
    }
}

fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4))
}

/// Raw parameters whose numbers are not typed in the fragment (so decoding keeps them raw).
fn raw_params(known: &'static [u8]) -> impl Strategy<Value = Vec<RawParam>> {
    proptest::collection::vec(
        (
            any::<u8>().prop_filter("typed id", move |id| !known.contains(id)),
            any::<u8>(),
            words(2),
        )
            .prop_map(|(id, flags, value)| RawParam { id, flags, value }),
        0..3,
    )
}

fn adspec() -> BoxedStrategy<Adspec> {
    let general = (
        any::<bool>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(prop_oneof![rate(), Just(f32::INFINITY)]),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        raw_params(&[4, 6, 8, 10]),
    )
        .prop_map(
            |(break_bit, is_hops, path_bw, min_latency, path_mtu, extra)| AdspecGeneral {
                break_bit,
                is_hops,
                path_bw,
                min_latency,
                path_mtu,
                extra,
            },
        );
    let guaranteed = (
        any::<bool>(),
        proptest::array::uniform4(proptest::option::of(any::<u32>())),
        raw_params(&[133, 134, 135, 136]),
    )
        .prop_map(
            |(break_bit, [ctot, dtot, csum, dsum], extra)| GuaranteedAdspec {
                break_bit,
                ctot,
                dtot,
                csum,
                dsum,
                extra,
            },
        );
    let controlled_load = (any::<bool>(), raw_params(&[]))
        .prop_map(|(break_bit, extra)| ControlledLoadAdspec { break_bit, extra });
    let other = proptest::collection::vec(
        (
            any::<u8>().prop_filter("typed service", |s| ![1, 2, 5].contains(s)),
            any::<bool>(),
            words(3),
        )
            .prop_map(|(service, break_bit, data)| RawFragment {
                service,
                break_bit,
                data,
            }),
        0..2,
    );
    (
        general,
        proptest::option::of(guaranteed),
        proptest::option::of(controlled_load),
        other,
    )
        .prop_map(|(general, guaranteed, controlled_load, other)| {
            Adspec::from(AdspecParts {
                general,
                guaranteed,
                controlled_load,
                other,
            })
        })
        .boxed()
}

fn integrity() -> impl Strategy<Value = Integrity> {
    (
        any::<u8>(),
        any::<[u8; 6]>(),
        any::<u64>(),
        (1usize..=8).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4)),
    )
        .prop_map(|(flags, key_id, sequence, digest)| Integrity {
            flags,
            key_id,
            sequence,
            digest,
        })
}

fn message_id() -> impl Strategy<Value = MessageId> {
    (any::<u8>(), 0..=MAX_EPOCH, any::<u32>()).prop_map(|(flags, epoch, id)| MessageId {
        flags,
        epoch,
        id,
    })
}

/// Objects that may go anywhere: NULL and forwarded unknown ones.
fn free_object() -> impl Strategy<Value = Object> {
    prop_oneof![
        (any::<u8>(), words(2)).prop_map(|(c_type, body)| Object::Null { c_type, body }),
        (192u8..=255, any::<u8>(), words(3)).prop_map(|(class_num, c_type, body)| {
            Object::Unknown {
                class_num,
                c_type,
                body,
            }
        }),
    ]
}

prop_compose! {
    fn common(v6: bool)(
        session_addr in addr(v6),
        protocol in any::<u8>(),
        flags in any::<u8>(),
        port in any::<u16>(),
        hop_addr in addr(v6),
        lih in any::<u32>(),
        refresh in any::<u32>(),
    ) -> (Session, RsvpHop, TimeValues) {
        (
            Session { destination: session_addr, protocol, flags, port },
            RsvpHop { address: hop_addr, lih },
            TimeValues { refresh_period_ms: refresh },
        )
    }
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::WildcardFilter),
        Just(Style::FixedFilter),
        Just(Style::SharedExplicit)
    ]
}

fn error_spec(v6: bool) -> impl Strategy<Value = ErrorSpec> {
    (addr(v6), any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(node, flags, code, value)| {
        ErrorSpec {
            node,
            flags,
            code: ErrorCode(code),
            value,
        }
    })
}

/// A well-formed RFC 2205 message of any of the seven types.
fn rsvp_message(v6: bool) -> BoxedStrategy<Message> {
    (
        (
            0usize..7,
            common(v6),
            filter(v6),
            token_bucket(),
            proptest::option::of(adspec()),
            style(),
            flowspec(),
            proptest::collection::vec(filter(v6), 1..4),
        ),
        (
            error_spec(v6),
            addr(v6),
            proptest::option::of(integrity()),
            proptest::option::of(message_id()),
            proptest::collection::vec(free_object(), 0..3),
            any::<u8>(),
            0u8..16,
        ),
    )
        .prop_map(
            move |(
                (kind, (session, hop, time), sender, tspec, adspec, style, flowspec, filters),
                (error, confirm, integrity, message_id, free, ttl, flags),
            )| {
                let mut msg = match kind {
                    0 => Message::path(session, hop, time, sender, tspec, adspec),
                    1 => Message::resv(session, hop, time, style, flowspec, &filters),
                    2 => Message::path_err(session, error, Some((sender, tspec))),
                    3 => {
                        let one = if style == Style::FixedFilter {
                            &filters[..1]
                        } else {
                            &filters[..]
                        };
                        Message::resv_err(session, hop, error, style, Some(flowspec), one)
                    }
                    4 => Message::path_tear(session, hop, Some(sender)),
                    5 => Message::resv_tear(session, hop, style, &filters),
                    _ => Message::resv_conf(
                        session,
                        error,
                        ResvConfirm { receiver: confirm },
                        style,
                        flowspec,
                        &filters,
                    ),
                };
                msg.send_ttl = ttl;
                msg.flags = flags;
                if let Some(id) = message_id {
                    msg.objects.insert(0, Object::MessageId(id));
                }
                for (i, obj) in free.into_iter().enumerate() {
                    let at = (i * 3) % (msg.objects.len() + 1);
                    msg.objects.insert(at, obj);
                }
                if let Some(integrity) = integrity {
                    msg.objects.insert(0, Object::Integrity(integrity));
                }
                msg
            },
        )
        .boxed()
}

fn refresh_message() -> BoxedStrategy<Message> {
    let list = (any::<u8>(), 0..=MAX_EPOCH, 0usize..5, 1usize..4).prop_flat_map(
        |(flags, epoch, kind, n)| {
            let entries = match kind {
                0 => proptest::collection::vec(any::<u32>(), n)
                    .prop_map(MessageIdEntries::Ids)
                    .boxed(),
                1 => proptest::collection::vec((any::<u32>(), any::<[u8; 4]>()), n)
                    .prop_map(|v| {
                        MessageIdEntries::Ipv4Sources(
                            v.into_iter().map(|(i, a)| (i, a.into())).collect(),
                        )
                    })
                    .boxed(),
                2 => proptest::collection::vec((any::<u32>(), any::<[u8; 16]>()), n)
                    .prop_map(|v| {
                        MessageIdEntries::Ipv6Sources(
                            v.into_iter().map(|(i, a)| (i, a.into())).collect(),
                        )
                    })
                    .boxed(),
                3 => {
                    proptest::collection::vec((any::<u32>(), any::<[u8; 4]>(), any::<[u8; 4]>()), n)
                        .prop_map(|v| {
                            MessageIdEntries::Ipv4Multicast(
                                v.into_iter()
                                    .map(|(i, s, d)| (i, s.into(), d.into()))
                                    .collect(),
                            )
                        })
                        .boxed()
                }
                _ => proptest::collection::vec(
                    (any::<u32>(), any::<[u8; 16]>(), any::<[u8; 16]>()),
                    n,
                )
                .prop_map(|v| {
                    MessageIdEntries::Ipv6Multicast(
                        v.into_iter()
                            .map(|(i, s, d)| (i, s.into(), d.into()))
                            .collect(),
                    )
                })
                .boxed(),
            };
            entries.prop_map(move |entries| MessageIdList {
                flags,
                epoch,
                entries,
            })
        },
    );
    let challenge =
        (any::<[u8; 6]>(), any::<u64>()).prop_map(|(key_id, cookie)| Challenge { key_id, cookie });
    (
        0usize..4,
        proptest::collection::vec((any::<bool>(), message_id()), 1..4),
        proptest::option::of(message_id()),
        proptest::collection::vec(list, 1..3),
        challenge,
        integrity(),
    )
        .prop_map(|(kind, acks, id, lists, challenge, integrity)| {
            let ack_objects = acks.into_iter().map(|(ack, m)| {
                if ack {
                    Object::MessageIdAck(m)
                } else {
                    Object::MessageIdNack(m)
                }
            });
            match kind {
                0 => {
                    let mut m = Message::new(MsgType::Ack);
                    m.objects.extend(ack_objects);
                    m
                }
                1 => {
                    let mut m = Message::new(MsgType::Srefresh);
                    m.objects.extend(ack_objects);
                    m.objects.extend(id.map(Object::MessageId));
                    m.objects
                        .extend(lists.into_iter().map(Object::MessageIdList));
                    m
                }
                2 => Message::new(MsgType::IntegrityChallenge).with(Object::Challenge(challenge)),
                _ => Message::new(MsgType::IntegrityResponse)
                    .with(Object::Integrity(integrity))
                    .with(Object::Challenge(challenge)),
            }
        })
        .boxed()
}

fn any_message() -> BoxedStrategy<Message> {
    let plain = prop_oneof![rsvp_message(false), rsvp_message(true), refresh_message()].boxed();
    prop_oneof![
        4 => plain.clone(),
        1 => (proptest::collection::vec(plain, 1..3), proptest::option::of(integrity())).prop_map(
            |(inner, integrity)| {
                let inner = inner.into_iter().filter(|m| m.msg_type() != MsgType::Bundle).collect();
                let mut bundle = Message::bundle(inner);
                bundle.objects.extend(integrity.map(Object::Integrity));
                bundle
            }
        ),
    ]
    .boxed()
}

/// What decode accepts must survive its own round trip.
fn assert_idempotent(bytes: &[u8]) {
    if let Ok(msg) = Message::decode(bytes) {
        let again = msg.encode().unwrap();
        let back = Message::decode(&again).expect("re-encoded message decodes");
        assert_eq!(back, msg);
        assert_eq!(back.encode().unwrap(), again);
    }
}

proptest! {
    // 512 cases by default; PROPTEST_CASES raises it for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn well_formed_messages_round_trip(msg in any_message()) {
        let bytes = msg.encode().expect("encodable");
        let back = Message::decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(back.encode().unwrap(), bytes);
        prop_assert!(msg.validate().is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        assert_idempotent(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        msg_type in prop::sample::select(MsgType::ALL.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let len = body.len() / 4 * 4 + 8;
        let mut bytes = vec![0x10, msg_type.number(), 0, 0, 64, 0];
        bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        bytes.extend_from_slice(&body[..len - 8]);
        assert_idempotent(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in any_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        fix_header in any::<bool>(),
    ) {
        let mut bytes = msg.encode().unwrap();
        for (at, value, op) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = value,
                1 => bytes[i] ^= 1 << (value % 8),
                2 => bytes.truncate(i.max(1)),
                _ => bytes.insert(i, value),
            }
        }
        if fix_header && bytes.len() >= 8 {
            // Keep the header valid so the mutation reaches the objects.
            bytes[0] = 0x10;
            bytes[2] = 0;
            bytes[3] = 0;
            bytes.truncate(bytes.len() / 4 * 4);
            let len = u16::try_from(bytes.len()).unwrap();
            bytes[6..8].copy_from_slice(&len.to_be_bytes());
        }
        assert_idempotent(&bytes);
    }
}

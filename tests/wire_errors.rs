//! Every decode error is typed, located, mapped to its ERROR_SPEC, and historic parser bugs
//! (CVE-2005-1281, CVE-2017-13048) stay fixed.

mod wire_support;

use qtoq::wire::*;
use wire_support::*;

/// One object on the wire.
fn obj(class_num: u8, c_type: u8, body: &[u8]) -> Vec<u8> {
    let mut o = u16::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    o.extend_from_slice(&[class_num, c_type]);
    o.extend_from_slice(body);
    o
}

/// A message of raw objects, checksum 0 ("none sent").
fn raw(msg_type: u8, objects: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = objects.concat();
    let mut m = vec![0x10, msg_type, 0, 0, 64, 0];
    m.extend_from_slice(&u16::try_from(body.len() + 8).unwrap().to_be_bytes());
    m.extend_from_slice(&body);
    m
}

fn session_obj() -> Vec<u8> {
    obj(1, 1, &[10, 9, 8, 7, 6, 0, 0x13, 0x89])
}
fn hop_obj() -> Vec<u8> {
    obj(3, 1, &[10, 1, 2, 3, 0, 0, 0, 7])
}
fn time_obj() -> Vec<u8> {
    obj(5, 1, &30_000u32.to_be_bytes())
}
fn style_obj(vector: u8) -> Vec<u8> {
    obj(8, 1, &[0, 0, 0, vector])
}
fn filter_obj(last: u8) -> Vec<u8> {
    obj(10, 1, &[10, 1, 2, last, 0, 0, 0x9c, 0x40])
}
fn template_obj() -> Vec<u8> {
    obj(11, 1, &[10, 1, 2, 3, 0, 0, 0x9c, 0x40])
}
/// Body of an object encoded by our own encoder, taken from a message.
fn encoded_obj(o: Object) -> Vec<u8> {
    let m = Message::new(MsgType::Ack).with(o).encode().unwrap();
    m[8..].to_vec()
}
fn tspec_obj() -> Vec<u8> {
    encoded_obj(Object::SenderTspec(tspec()))
}
fn flowspec_obj() -> Vec<u8> {
    encoded_obj(Object::FlowSpec(guaranteed()))
}

fn path_objects() -> Vec<Vec<u8>> {
    vec![
        session_obj(),
        hop_obj(),
        time_obj(),
        template_obj(),
        tspec_obj(),
    ]
}

#[test]
fn header_errors_are_silent_discards() {
    let good = raw(1, &path_objects());
    assert!(Message::decode(&good).is_ok());

    let err = Message::decode(&good[..7]).unwrap_err();
    assert_eq!(err, WireError::TooShort { len: 7 });
    assert!(err.discard_silently());

    let mut v2 = good.clone();
    v2[0] = 0x20;
    assert_eq!(
        Message::decode(&v2).unwrap_err(),
        WireError::BadVersion { version: 2 }
    );

    let mut t = good.clone();
    t[1] = 9;
    assert_eq!(
        Message::decode(&t).unwrap_err(),
        WireError::UnknownMsgType { msg_type: 9 }
    );

    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 4]);
    let err = Message::decode(&padded).unwrap_err();
    assert!(
        matches!(err, WireError::BadMessageLength { declared, available } if declared + 4 == available)
    );
    assert!(err.discard_silently());
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 4)
    );
}

#[test]
fn checksum_is_verified_unless_zero_and_filled_on_encode() {
    let zero = raw(1, &path_objects());
    let msg = Message::decode(&zero).unwrap();
    let filled = msg.encode().unwrap();
    assert_ne!(&filled[2..4], &[0, 0]);
    assert_eq!(&filled[..2], &zero[..2]);
    assert_eq!(&filled[4..], &zero[4..]);
    assert_eq!(Message::decode(&filled).unwrap(), msg);

    let mut bad = filled.clone();
    bad[3] ^= 0xff;
    let err = Message::decode(&bad).unwrap_err();
    let WireError::BadChecksum { found, computed } = err else {
        panic!("{err:?}")
    };
    assert_eq!(found, u16::from_be_bytes([bad[2], bad[3]]));
    assert_eq!(computed, u16::from_be_bytes([filled[2], filled[3]]));
    assert!(err.discard_silently());

    // A corrupted body is caught too.
    let mut body = filled.clone();
    body[20] ^= 0x40;
    assert!(matches!(
        Message::decode(&body),
        Err(WireError::BadChecksum { .. })
    ));
}

#[test]
fn zero_and_short_object_lengths_never_loop() {
    // CVE-2005-1281: an object length of 0 (or < 4) made parsers spin forever.
    for length in [0u16, 1, 2, 3, 5, 6] {
        let mut objects = path_objects();
        let mut evil = length.to_be_bytes().to_vec();
        evil.extend_from_slice(&[1, 1]);
        objects.insert(1, evil);
        let bytes = raw(1, &objects);
        let err = Message::decode(&bytes).unwrap_err();
        assert!(
            matches!(err, WireError::BadObjectLength { offset: 20, length: l, class_num: 1, .. } if l == usize::from(length)),
            "{length}: {err:?}"
        );
        assert_eq!(
            err.error_spec(),
            RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 6)
        );
    }
}

#[test]
fn object_length_past_the_message_is_rejected_before_reading() {
    // CVE-2017-13048: the length was trusted before the bounds check.
    let mut objects = path_objects();
    let last = objects.last_mut().unwrap();
    last[0..2].copy_from_slice(&200u16.to_be_bytes());
    let bytes = raw(1, &objects);
    let err = Message::decode(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::BadObjectLength {
                length: 200,
                class_num: 12,
                ..
            }
        ),
        "{err:?}"
    );
    // A header cut short (2 bytes of a 4-byte object header): the message length can no
    // longer be a multiple of 4, which the header check catches first.
    let mut bytes = raw(1, &path_objects());
    bytes.extend_from_slice(&[0, 8]);
    let n = u16::try_from(bytes.len()).unwrap();
    bytes[6..8].copy_from_slice(&n.to_be_bytes());
    assert!(matches!(
        Message::decode(&bytes),
        Err(WireError::BadMessageLength { .. })
    ));
}

#[test]
fn unknown_class_rules_of_rfc2205_3_10() {
    // 0bbbbbbb: reject with code 13, value class<<8 | ctype, at the object's offset.
    let mut objects = path_objects();
    objects.insert(2, obj(42, 7, &[0; 4]));
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert_eq!(
        err,
        WireError::UnknownClass {
            offset: 32,
            class_num: 42,
            c_type: 7
        }
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::UNKNOWN_OBJECT_CLASS, (42 << 8) | 7)
    );
    assert_eq!(err.offset(), Some(32));
    assert_eq!(err.object(), Some((42, 7)));
    assert!(!err.discard_silently());

    // 10bbbbbb: dropped silently.
    let mut objects = path_objects();
    objects.insert(2, obj(0x85, 1, &[1, 2, 3, 4]));
    let msg = Message::decode(&raw(1, &objects)).unwrap();
    assert_eq!(msg.objects.len(), 5);
    assert_eq!(msg.encode().unwrap().len(), raw(1, &path_objects()).len());

    // 11bbbbbb: kept in place, re-encoded byte for byte.
    let mut objects = path_objects();
    objects.insert(2, obj(0xc5, 9, &[1, 2, 3, 4, 5, 6, 7, 8]));
    let bytes = raw(1, &objects);
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(
        msg.objects[2],
        Object::Unknown {
            class_num: 0xc5,
            c_type: 9,
            body: vec![1, 2, 3, 4, 5, 6, 7, 8]
        }
    );
    assert_eq!(&msg.encode().unwrap()[4..], &bytes[4..]);
}

#[test]
fn unknown_c_type_is_code_14() {
    let mut objects = path_objects();
    objects[2] = obj(5, 3, &[0; 4]);
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert_eq!(
        err,
        WireError::UnknownCType {
            offset: 32,
            class_num: 5,
            c_type: 3
        }
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::UNKNOWN_OBJECT_C_TYPE, (5 << 8) | 3)
    );
    // LSP_TUNNEL sessions (RFC 3209 C-Type 7) are not ours either.
    let mut objects = path_objects();
    objects[0] = obj(1, 7, &[0; 12]);
    assert_eq!(
        Message::decode(&raw(1, &objects))
            .unwrap_err()
            .error_spec()
            .code,
        ErrorCode::UNKNOWN_OBJECT_C_TYPE
    );
}

#[test]
fn wrong_body_sizes_are_malformed() {
    let cases = [
        (0, obj(1, 1, &[10, 9, 8, 7, 6, 0, 0x13, 0x89, 0, 0, 0, 0])), // IPv4 session, 12 bytes
        (0, obj(1, 2, &[0; 8])),                                      // IPv6 session, 8 bytes
        (1, obj(3, 1, &[0; 4])),                                      // hop without LIH
        (2, obj(5, 1, &[0; 8])),                                      // time values too long
        (3, obj(11, 3, &[0; 8])),                                     // flow-label template short
    ];
    for (at, bad) in cases {
        let mut objects = path_objects();
        objects[at] = bad;
        let err = Message::decode(&raw(1, &objects)).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err:?}");
        assert_eq!(
            err.error_spec(),
            RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 7)
        );
    }
}

#[test]
fn intserv_errors_map_to_traffic_control_codes() {
    // Tspec overall length disagreeing with the object length.
    let mut objects = path_objects();
    objects[4][7] = 6;
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::BadIntServ { class_num: 12, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 4)
    );

    // A negative token rate is a bad Tspec.
    let mut objects = path_objects();
    objects[4][16..20].copy_from_slice(&(-1.0f32).to_bits().to_be_bytes());
    assert_eq!(
        Message::decode(&raw(1, &objects)).unwrap_err().error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 4)
    );

    // m > M.
    let mut objects = path_objects();
    objects[4][28..32].copy_from_slice(&2000u32.to_be_bytes());
    assert_eq!(
        Message::decode(&raw(1, &objects)).unwrap_err().error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 4)
    );

    // A flowspec for service 3 is unsupported; a truncated Guaranteed one is bad.
    let resv = |flowspec: Vec<u8>| {
        raw(
            2,
            &[
                session_obj(),
                hop_obj(),
                time_obj(),
                style_obj(0x11),
                flowspec,
            ],
        )
    };
    assert!(Message::decode(&resv(flowspec_obj())).is_ok());
    let mut service3 = flowspec_obj();
    service3[8] = 3;
    let err = Message::decode(&resv(service3)).unwrap_err();
    assert!(
        matches!(err, WireError::UnsupportedService { service: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 2)
    );
    let mut no_rspec = flowspec_obj();
    no_rspec.truncate(no_rspec.len() - 12);
    no_rspec[1] -= 12;
    no_rspec[7] -= 3;
    no_rspec[11] -= 3;
    let err = Message::decode(&resv(no_rspec)).unwrap_err();
    assert!(
        matches!(err, WireError::BadIntServ { class_num: 9, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 3)
    );

    // Adspec whose first fragment is not the general one.
    let mut objects = path_objects();
    objects.push(obj(13, 2, &[0, 0, 0, 1, 2, 0, 0, 0]));
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::BadIntServ { class_num: 13, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 5)
    );

    // A parameter running past its fragment.
    let mut objects = path_objects();
    objects.push(obj(13, 2, &[0, 0, 0, 2, 1, 0, 0, 1, 4, 0, 0, 9]));
    assert_eq!(
        Message::decode(&raw(1, &objects)).unwrap_err().error_spec(),
        RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 5)
    );
}

#[test]
fn adspec_keeps_unknown_and_out_of_order_content_byte_exact() {
    let word = |a: u8, b: u8, c: u8, d: u8| [a, b, c, d];
    let body: Vec<u8> = [
        word(0, 0, 0, 12),   // version 0, 12 words
        word(1, 0x80, 0, 5), // general, break bit, 5 words
        word(10, 0, 0, 1),   // PATH_MTU first…
        word(0, 0, 5, 220),
        word(4, 0, 0, 1), // …then IS_HOPS: out of order, kept raw
        word(0, 0, 0, 3),
        word(99, 0, 0, 0), // unknown parameter, empty
        word(5, 0, 0, 2),  // Controlled-Load with an override
        word(10, 0, 0, 1),
        word(0, 0, 4, 0),
        word(2, 0x80, 0, 0), // Guaranteed after CL: kept raw
        word(77, 0, 0, 1),   // unknown service
        word(1, 2, 3, 4),
    ]
    .concat();
    let mut objects = path_objects();
    objects.push(obj(13, 2, &body));
    let bytes = raw(1, &objects);
    let msg = Message::decode(&bytes).unwrap();
    let adspec = msg.adspec().unwrap().to_parts();
    assert!(adspec.general.break_bit);
    assert_eq!(adspec.general.path_mtu, Some(1500));
    assert_eq!(adspec.general.is_hops, None);
    assert_eq!(adspec.general.extra.len(), 2);
    assert_eq!(
        adspec.general.extra[0],
        RawParam {
            id: 4,
            flags: 0,
            value: vec![0, 0, 0, 3]
        }
    );
    assert_eq!(adspec.controlled_load.as_ref().unwrap().extra.len(), 1);
    assert!(adspec.guaranteed.is_none());
    assert_eq!(adspec.other.len(), 2);
    assert_eq!(adspec.other[0].service, 2);
    assert!(adspec.other[0].break_bit);
    assert_eq!(
        adspec.other[1],
        RawFragment {
            service: 77,
            break_bit: false,
            data: vec![1, 2, 3, 4]
        }
    );
    assert_eq!(&msg.encode().unwrap()[4..], &bytes[4..]);
}

#[test]
fn required_objects_per_message_type() {
    for (drop, class_num) in [(0, 1), (1, 3), (2, 5)] {
        let mut objects = path_objects();
        objects.remove(drop);
        let err = Message::decode(&raw(1, &objects)).unwrap_err();
        assert_eq!(
            err,
            WireError::MissingObject {
                msg_type: MsgType::Path,
                class_num
            }
        );
    }
    // A template without its Tspec.
    let objects = vec![session_obj(), hop_obj(), time_obj(), template_obj()];
    assert_eq!(
        Message::decode(&raw(1, &objects)).unwrap_err(),
        WireError::MissingObject {
            msg_type: MsgType::Path,
            class_num: 12
        }
    );
    // A Resv needs its STYLE and a flowspec; a PathErr its ERROR_SPEC; an Ack an ACK.
    let err = Message::decode(&raw(2, &[session_obj(), hop_obj(), time_obj()])).unwrap_err();
    assert!(matches!(
        err,
        WireError::MissingObject {
            msg_type: MsgType::Resv,
            class_num: 8
        }
    ));
    let err = Message::decode(&raw(3, &[session_obj()])).unwrap_err();
    assert!(matches!(
        err,
        WireError::MissingObject {
            msg_type: MsgType::PathErr,
            class_num: 6
        }
    ));
    let err = Message::decode(&raw(13, &[])).unwrap_err();
    assert!(matches!(
        err,
        WireError::MissingObject {
            msg_type: MsgType::Ack,
            class_num: 24
        }
    ));
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 8)
    );
}

#[test]
fn order_duplicates_and_foreign_objects() {
    // INTEGRITY must come first.
    let integrity = encoded_obj(Object::Integrity(integrity()));
    let mut objects = path_objects();
    objects.insert(1, integrity.clone());
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::ObjectOrder {
                offset: 20,
                class_num: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let mut objects = path_objects();
    objects.insert(0, integrity);
    assert!(Message::decode(&raw(1, &objects)).is_ok());

    // SENDER_TSPEC before SENDER_TEMPLATE.
    let objects = vec![
        session_obj(),
        hop_obj(),
        time_obj(),
        tspec_obj(),
        template_obj(),
    ];
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::ObjectOrder { class_num: 12, .. }),
        "{err:?}"
    );

    // Two SESSIONs.
    let mut objects = path_objects();
    objects.push(session_obj());
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::DuplicateObject { class_num: 1, .. }),
        "{err:?}"
    );

    // A STYLE in a Path.
    let mut objects = path_objects();
    objects.push(style_obj(0x0a));
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::UnexpectedObject {
                msg_type: MsgType::Path,
                class_num: 8,
                ..
            }
        ),
        "{err:?}"
    );

    // A sender template ahead of its SESSION is checked once the SESSION arrives.
    let objects = vec![
        obj(11, 2, &[0; 20]),
        session_obj(),
        hop_obj(),
        time_obj(),
        tspec_obj(),
    ];
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert_eq!(
        err,
        WireError::AddressFamilyMismatch {
            offset: 8,
            class_num: 11,
            c_type: 2
        }
    );

    // An IPv6 sender in an IPv4 session.
    let mut objects = path_objects();
    objects[3] = obj(11, 2, &[0; 20]);
    let err = Message::decode(&raw(1, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::AddressFamilyMismatch { class_num: 11, .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_style_is_code_6() {
    let bytes = raw(
        2,
        &[
            session_obj(),
            hop_obj(),
            time_obj(),
            style_obj(0x09),
            flowspec_obj(),
        ],
    );
    let err = Message::decode(&bytes).unwrap_err();
    assert_eq!(
        err,
        WireError::UnknownStyle {
            offset: 40,
            option_vector: 0x09
        }
    );
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::UNKNOWN_RESERVATION_STYLE, 0)
    );
}

#[test]
fn flow_descriptor_lists_must_fit_the_style() {
    let resv = |style: u8, tail: Vec<Vec<u8>>| {
        let mut objects = vec![session_obj(), hop_obj(), time_obj(), style_obj(style)];
        objects.extend(tail);
        Message::decode(&raw(2, &objects))
    };
    let (fs, f1, f2) = (flowspec_obj(), filter_obj(3), filter_obj(4));
    // FF: pairs, a later flowspec may be omitted.
    assert!(resv(0x0a, vec![fs.clone(), f1.clone()]).is_ok());
    assert!(resv(0x0a, vec![fs.clone(), f1.clone(), fs.clone(), f2.clone()]).is_ok());
    assert!(resv(0x0a, vec![fs.clone(), f1.clone(), f2.clone()]).is_ok());
    for bad in [
        vec![fs.clone()],
        vec![f1.clone(), fs.clone()],
        vec![fs.clone(), fs.clone(), f1.clone()],
        vec![fs.clone(), f1.clone(), fs.clone()],
    ] {
        let err = resv(0x0a, bad).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::BadFlowDescriptor {
                    style: Style::FixedFilter,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // SE: one flowspec, then filters.
    assert!(resv(0x12, vec![fs.clone(), f1.clone(), f2.clone()]).is_ok());
    assert!(resv(0x12, vec![fs.clone()]).is_err());
    assert!(resv(0x12, vec![fs.clone(), f1.clone(), fs.clone(), f2.clone()]).is_err());
    // WF: one flowspec, no filters.
    assert!(resv(0x11, vec![fs.clone()]).is_ok());
    assert!(resv(0x11, vec![fs.clone(), f1.clone()]).is_err());
    assert!(resv(0x11, vec![fs.clone(), fs.clone()]).is_err());
    // Flow descriptors before the STYLE.
    let objects = vec![
        session_obj(),
        hop_obj(),
        time_obj(),
        fs.clone(),
        style_obj(0x11),
    ];
    let err = Message::decode(&raw(2, &objects)).unwrap_err();
    assert!(
        matches!(err, WireError::ObjectOrder { class_num: 9, .. }),
        "{err:?}"
    );

    // The accessor pairs each filter with its flowspec.
    let msg = resv(0x0a, vec![fs.clone(), f1.clone(), f2.clone()]).unwrap();
    let descriptors: Vec<_> = msg.flow_descriptors().collect();
    assert_eq!(descriptors.len(), 2);
    assert!(descriptors
        .iter()
        .all(|d| d.flowspec == Some(&guaranteed())));
    assert_eq!(
        descriptors[1].filter.unwrap().socket_addr(),
        sock("10.1.2.4:40000")
    );
    let wf = resv(0x11, vec![fs]).unwrap();
    let descriptors: Vec<_> = wf.flow_descriptors().collect();
    assert_eq!(
        descriptors,
        vec![FlowDescriptor {
            flowspec: Some(&guaranteed()),
            filter: None
        }]
    );
}

#[test]
fn bundles_hold_plain_messages_only() {
    let inner = path().encode().unwrap();
    let bundle = Message::bundle(vec![path(), resv_ff()]);
    let bytes = bundle.encode().unwrap();
    assert_eq!(Message::decode(&bytes).unwrap(), bundle);

    let nested = Message::bundle(vec![bundle.clone()]).encode().unwrap();
    let err = Message::decode(&nested).unwrap_err();
    assert_eq!(
        err,
        WireError::BadBundle {
            offset: 8,
            reason: "a bundle may not contain another bundle"
        }
    );

    // A sub-message error reports its offset inside the bundle.
    let mut broken = Message::bundle(vec![path(), path()]).encode().unwrap();
    broken[2..4].copy_from_slice(&[0, 0]);
    let second = 8 + inner.len();
    broken[second + 2..second + 4].copy_from_slice(&[0, 0]);
    broken[second + 8 + 2] = 42; // SESSION object's class → unknown class 42
    let err = Message::decode(&broken).unwrap_err();
    assert_eq!(err.offset(), Some(second + 8));
    assert_eq!(err.error_spec().code, ErrorCode::UNKNOWN_OBJECT_CLASS);

    let empty = raw(12, &[]);
    assert!(matches!(
        Message::decode(&empty),
        Err(WireError::BadBundle { .. })
    ));
}

#[test]
fn encode_refuses_what_the_wire_cannot_carry() {
    let odd = Message::new(MsgType::Path).with(Object::PolicyData(PolicyData {
        body: vec![1, 2, 3],
    }));
    let unaligned = EncodeError::Unaligned {
        class_num: 14,
        c_type: 1,
        length: 3,
    };
    assert_eq!(odd.encode(), Err(unaligned.clone()));
    let err = odd.validate().unwrap_err();
    assert_eq!(err, WireError::Encode(unaligned));
    assert_eq!(
        err.error_spec(),
        RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 16)
    );
    assert_eq!(err.object(), Some((14, 1)));
    let huge = Message::new(MsgType::Path)
        .with(Object::PolicyData(PolicyData {
            body: vec![0; 40_000],
        }))
        .with(Object::PolicyData(PolicyData {
            body: vec![0; 40_000],
        }));
    assert_eq!(
        huge.encode(),
        Err(EncodeError::MessageTooLong {
            length: 8 + 2 * (4 + 40_000)
        })
    );
    assert_eq!(
        huge.validate().unwrap_err().error_spec(),
        RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 15)
    );
    let mut out = bytes::BytesMut::from(&b"keep"[..]);
    assert!(huge.encode_into(&mut out).is_err());
    assert_eq!(&out[..], b"keep");
    let n = path().encode_into(&mut out).unwrap();
    assert_eq!(out.len(), 4 + n);
    assert_eq!(Message::decode(&out[4..]).unwrap(), path());
}

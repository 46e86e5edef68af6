//! Sample messages shared by the wire tests: every message type with rich content.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use qtoq::wire::intserv::{GuaranteedRspec, TokenBucket};
use qtoq::wire::*;

pub const SENDER: &str = "10.1.2.3:40000";
pub const RECEIVER: &str = "10.9.8.7:5001";

pub fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn session() -> Session {
    Session::new(sock(RECEIVER), 6)
}

pub fn tspec() -> TokenBucket {
    TokenBucket {
        rate: 125_000.0,
        bucket: 16_000.0,
        peak: f32::INFINITY,
        min_policed: 64,
        max_packet: 1500,
    }
}

pub fn guaranteed() -> FlowSpec {
    FlowSpec::Guaranteed {
        tspec: tspec(),
        rspec: GuaranteedRspec {
            rate: 250_000.0,
            slack: 1000,
        },
    }
}

pub fn controlled_load() -> FlowSpec {
    FlowSpec::ControlledLoad(tspec())
}

pub fn integrity() -> Integrity {
    Integrity {
        flags: INTEGRITY_FLAG_HANDSHAKE,
        key_id: [0, 0, 0, 0, 0x12, 0x34],
        sequence: 0x0102_0304_0506_0708,
        digest: (1..=16).collect(),
    }
}

/// A typical Path: SESSION, RSVP_HOP, TIME_VALUES, sender descriptor with Adspec.
pub fn path() -> Message {
    Message::path(
        session(),
        RsvpHop::new(ip("10.1.2.3"), 7),
        TimeValues::new(Duration::from_secs(30)),
        FilterSpec::new(sock(SENDER)),
        tspec(),
        Some(Adspec::host_default(1500)),
    )
}

/// A typical Resv: FF style, Guaranteed flowspec, confirmation asked.
pub fn resv_ff() -> Message {
    let mut msg = Message::resv(
        session(),
        RsvpHop::new(ip("10.9.8.7"), 7),
        TimeValues::new(Duration::from_secs(30)),
        Style::FixedFilter,
        guaranteed(),
        &[FilterSpec::new(sock(SENDER))],
    );
    msg.objects.insert(
        3,
        Object::ResvConfirm(ResvConfirm {
            receiver: ip("10.9.8.7"),
        }),
    );
    msg
}

/// Every message type, with rich content, as (name, message).
pub fn all_messages() -> Vec<(&'static str, Message)> {
    let hop_up = RsvpHop::new(ip("10.1.2.3"), 7);
    let hop_down = RsvpHop::new(ip("10.9.8.7"), 9);
    let filter = FilterSpec::new(sock(SENDER));
    let other = FilterSpec::new(sock("10.1.2.4:40001"));
    let mut path = path();
    path.objects.insert(0, Object::Integrity(integrity()));
    path.objects.insert(
        4,
        Object::PolicyData(PolicyData {
            body: vec![0, 8, 1, 1, 0xde, 0xad, 0xbe, 0xef],
        }),
    );
    path.objects.push(Object::Unknown {
        class_num: 200,
        c_type: 3,
        body: vec![1, 2, 3, 4],
    });
    let resv_se = Message::resv(
        session(),
        hop_down,
        TimeValues::new(Duration::from_secs(45)),
        Style::SharedExplicit,
        controlled_load(),
        &[filter, other],
    );
    let mut resv_wf = Message::resv(
        session(),
        hop_down,
        TimeValues::new(Duration::from_secs(30)),
        Style::WildcardFilter,
        controlled_load(),
        &[],
    );
    resv_wf.objects.insert(
        3,
        Object::Scope(Scope::Ipv4(vec![Ipv4Addr::new(10, 1, 2, 3)])),
    );
    let path_err = Message::path_err(
        session(),
        ErrorSpec::new(ip("10.9.8.7"), ErrorCode::NO_PATH_INFORMATION, 0),
        Some((filter, tspec())),
    );
    let resv_err = Message::resv_err(
        session(),
        hop_up,
        ErrorSpec {
            node: ip("10.1.2.3"),
            flags: ERROR_FLAG_IN_PLACE,
            code: ErrorCode::ADMISSION_CONTROL_FAILURE,
            value: 2,
        },
        Style::FixedFilter,
        Some(guaranteed()),
        &[filter],
    );
    let path_tear = Message::path_tear(session(), hop_up, Some(filter));
    let resv_tear = Message::resv_tear(session(), hop_down, Style::FixedFilter, &[filter]);
    let resv_conf = Message::resv_conf(
        session(),
        ErrorSpec::new(ip("10.1.2.3"), ErrorCode::CONFIRMATION, 0),
        ResvConfirm {
            receiver: ip("10.9.8.7"),
        },
        Style::FixedFilter,
        guaranteed(),
        &[filter],
    );
    let mut refreshing_path = Message::path(
        session(),
        hop_up,
        TimeValues::new(Duration::from_secs(30)),
        filter,
        tspec(),
        None,
    );
    refreshing_path.flags = FLAG_REFRESH_REDUCTION_CAPABLE;
    refreshing_path.objects.insert(
        0,
        Object::MessageId(MessageId {
            flags: MESSAGE_ID_FLAG_ACK_DESIRED,
            epoch: 0x00ab_cdef,
            id: 42,
        }),
    );
    let bundle = Message::bundle(vec![refreshing_path.clone(), path_tear.clone()]);
    let ack = Message::new(MsgType::Ack)
        .with(Object::MessageIdAck(MessageId {
            flags: 0,
            epoch: 0x00ab_cdef,
            id: 42,
        }))
        .with(Object::MessageIdNack(MessageId {
            flags: 0,
            epoch: 0x00ab_cdef,
            id: 43,
        }));
    let srefresh = Message::new(MsgType::Srefresh)
        .with(Object::MessageIdAck(MessageId {
            flags: 0,
            epoch: 7,
            id: 1,
        }))
        .with(Object::MessageIdList(MessageIdList {
            flags: 0,
            epoch: 0x00ab_cdef,
            entries: MessageIdEntries::Ids(vec![42, 44, 46]),
        }));
    let challenge = Challenge {
        key_id: [0, 0, 0, 0, 0x12, 0x34],
        cookie: 0xfeed_f00d_dead_beef,
    };
    let integrity_challenge =
        Message::new(MsgType::IntegrityChallenge).with(Object::Challenge(challenge));
    let integrity_response = Message::new(MsgType::IntegrityResponse)
        .with(Object::Integrity(integrity()))
        .with(Object::Challenge(challenge));
    let path6 = Message::path(
        Session::new(sock("[2001:db8::2]:5001"), 6),
        RsvpHop::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            1,
        ),
        TimeValues::new(Duration::from_secs(30)),
        FilterSpec::new(sock("[2001:db8::1]:40000")),
        tspec(),
        Some(Adspec::host_default(1500)),
    );
    vec![
        ("path", path),
        ("resv_ff", resv_ff()),
        ("resv_se", resv_se),
        ("resv_wf", resv_wf),
        ("path_err", path_err),
        ("resv_err", resv_err),
        ("path_tear", path_tear),
        ("resv_tear", resv_tear),
        ("resv_conf", resv_conf),
        ("bundle", bundle),
        ("ack", ack),
        ("srefresh", srefresh),
        ("integrity_challenge", integrity_challenge),
        ("integrity_response", integrity_response),
        ("path_ipv6", path6),
    ]
}

//! A spec that can never be a valid flowspec is refused at the call, with `InvalidInput`
//! naming the field, and nothing is created.

mod agent_util;

use std::io;
use std::net::SocketAddr;

use agent_util::*;
use qtoq::{QosError, QosListener, QosSpec, QosStream};

fn refused(result: io::Result<impl std::fmt::Debug>, field: &str) {
    let err = result.expect_err("invalid spec accepted");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let source = err.get_ref().and_then(|e| e.downcast_ref::<QosError>());
    assert!(
        matches!(source, Some(QosError::InvalidSpec(s)) if s.field == field),
        "{source:?}"
    );
    assert!(err.to_string().contains(field), "{err}");
}

#[tokio::test]
async fn impossible_specs_are_refused_at_connect_and_bind() {
    let agent = udp_agent();
    let ip = addr_of(&agent);
    // A real server, so only the spec can make the connect fail.
    let server = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let target = server.local_addr().unwrap();
    for (spec, field) in [
        (QosSpec::controlled_load(0, 0), "rate"),
        (QosSpec::controlled_load(1_000, 0), "bucket"),
        (QosSpec::controlled_load(1_000, 100).peak(10), "peak"),
        (
            QosSpec::controlled_load(1_000, 100)
                .min_policed(9_000)
                .max_packet(1_500),
            "min_policed",
        ),
    ] {
        refused(
            QosStream::builder()
                .agent(&agent)
                .spec(spec)
                .bind(SocketAddr::new(ip, 0))
                .connect(target)
                .await,
            field,
        );
        refused(
            QosListener::builder()
                .agent(&agent)
                .spec(spec)
                .bind(SocketAddr::new(ip, 0))
                .await,
            field,
        );
    }
    assert_eq!(agent.stats().await.unwrap().owned_sessions, 0);
}

//! The public API's shapes: the traits users rely on, re-exports at the crate root.

use futures::Stream;
use qtoq::{
    Agent, QosError, QosEvent, QosEvents, QosListener, QosListenerBuilder, QosSpec, QosStream,
    QosStreamBuilder, Reservation, Signaling,
};
use tokio::io::{AsyncRead, AsyncWrite};

fn stream_of_events<T: Stream<Item = QosEvent> + Unpin + Send + 'static>() {}
fn byte_stream<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static>() {}
fn shareable<T: Send + Sync + std::fmt::Debug + 'static>() {}
fn error_source<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn public_types_have_the_expected_traits() {
    stream_of_events::<QosEvents>();
    byte_stream::<QosStream>();
    shareable::<QosListener>();
    shareable::<Agent>();
    shareable::<QosListenerBuilder>();
    shareable::<QosStreamBuilder>();
    shareable::<Reservation>();
    error_source::<QosError>();
    // Clone is what makes an Agent a cheap handle.
    fn clone<T: Clone>() {}
    clone::<Agent>();
    assert_eq!(Signaling::default(), Signaling::Rsvp);
}

#[test]
fn spec_constructors_and_setters() {
    let spec = QosSpec::controlled_load(1_000_000, 65_536)
        .peak(2_000_000)
        .min_policed(128)
        .max_packet(9000);
    let t = spec.tspec();
    assert_eq!((t.rate, t.bucket, t.peak), (1e6, 65_536.0, 2e6));
    assert_eq!((t.min_policed, t.max_packet), (128, 9000));
    assert_eq!(spec.rate(), 1_000_000);
    let g = QosSpec::guaranteed(500_000, 8192, 250);
    assert_eq!(g.rate(), 500_000);
    assert_ne!(
        g.flowspec(),
        QosSpec::controlled_load(500_000, 8192).flowspec()
    );
}

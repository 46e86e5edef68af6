mod agent_util;
use agent_util::*;
use futures::StreamExt;
use qtoq::{Agent, QosEvent, QosListener, QosStream};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

async fn est(s: &QosStream) {
    let mut ev = s.events();
    while let Some(e) = ev.next().await {
        if matches!(e, QosEvent::Established { .. }) {
            return;
        }
    }
}

#[tokio::test]
async fn probe() {
    let a = udp_agent();
    let addrs: Vec<IpAddr> = (0..5).map(|_| unique_loopback()).collect();
    let b = addrs
        .iter()
        .fold(Agent::builder(), |b, ip| b.local_addr(*ip))
        .build()
        .unwrap();
    let listener = QosListener::builder()
        .agent(&a)
        .bind(SocketAddr::new(addr_of(&a), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let n: usize = std::env::var("SEQ").unwrap().parse().unwrap();
    for i in 0..n {
        let c = async {
            let s = QosStream::builder()
                .agent(&b)
                .bind(SocketAddr::new(addrs[i % 5], 0))
                .connect(addr)
                .await
                .unwrap();
            est(&s).await;
            s
        };
        let sv = async {
            let (s, _) = listener.accept().await.unwrap();
            est(&s).await;
            s
        };
        let (c, s) = tokio::join!(c, sv);
        c.close().await.unwrap();
        s.close().await.unwrap();
    }
    for _ in 0..3 {
        println!(
            "A {:?}\nB {:?}",
            a.stats().await.unwrap(),
            b.stats().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

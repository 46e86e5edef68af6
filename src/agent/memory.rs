//! An in-memory network for tests: agents attached to one [`MemoryNetwork`] exchange RSVP
//! datagrams through channels, with seeded fault injection (loss, delay, duplication).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// How many datagrams may wait in one endpoint's queue before more are dropped (as a full
/// socket buffer would).
const ENDPOINT_QUEUE: usize = 4096;

/// A datagram in flight on a [`MemoryNetwork`].
#[derive(Debug, Clone)]
pub(crate) struct MemoryDatagram {
    pub(crate) source: IpAddr,
    pub(crate) destination: IpAddr,
    pub(crate) ttl: u8,
    pub(crate) payload: Vec<u8>,
}

/// Counters of a [`MemoryNetwork`], for tests that check the faults really happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams the loss fault dropped.
    pub lost: u64,
    /// Extra copies the duplication fault made.
    pub duplicated: u64,
    /// Datagrams put in a receiver's queue.
    pub delivered: u64,
    /// Datagrams with no endpoint at their destination (or a full queue).
    pub undeliverable: u64,
}

struct Faults {
    loss: f64,
    duplicate: f64,
    delay_min: Duration,
    delay_max: Duration,
}

struct NetworkState {
    endpoints: HashMap<IpAddr, mpsc::Sender<MemoryDatagram>>,
    rng: SmallRng,
    faults: Faults,
    stats: MemoryStats,
}

/// A simulated network joining agents in one process (see `Transport::Memory`).
///
/// Clones share the network. Faults are drawn from an RNG seeded at creation, so a test run is
/// repeatable as far as the order of sends is.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use qtoq::agent::MemoryNetwork;
///
/// let lossy = MemoryNetwork::new(7)
///     .with_loss(0.2)
///     .with_duplication(0.05)
///     .with_delay(Duration::from_micros(50), Duration::from_millis(2));
/// assert_eq!(lossy.stats().sent, 0);
/// ```
#[derive(Clone)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryNetwork")
            .field("endpoints", &state.endpoints.len())
            .field("loss", &state.faults.loss)
            .field("duplicate", &state.faults.duplicate)
            .field("delay", &(state.faults.delay_min..state.faults.delay_max))
            .field("stats", &state.stats)
            .finish()
    }
}

impl MemoryNetwork {
    /// A perfect network (no loss, no delay, no duplication) whose later faults draw from an
    /// RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        MemoryNetwork {
            state: Arc::new(Mutex::new(NetworkState {
                endpoints: HashMap::new(),
                rng: SmallRng::seed_from_u64(seed),
                faults: Faults {
                    loss: 0.0,
                    duplicate: 0.0,
                    delay_min: Duration::ZERO,
                    delay_max: Duration::ZERO,
                },
                stats: MemoryStats::default(),
            })),
        }
    }

    /// Drops each datagram with probability `probability` (clamped to 0..=1).
    pub fn with_loss(self, probability: f64) -> Self {
        self.lock().faults.loss = clamp_probability(probability);
        self
    }

    /// Delivers an extra copy of each datagram with probability `probability`.
    pub fn with_duplication(self, probability: f64) -> Self {
        self.lock().faults.duplicate = clamp_probability(probability);
        self
    }

    /// Delays each datagram (each copy independently) by a uniform draw in `min..=max`, which
    /// also reorders them.
    pub fn with_delay(self, min: Duration, max: Duration) -> Self {
        {
            let mut state = self.lock();
            state.faults.delay_min = min.min(max);
            state.faults.delay_max = max.max(min);
        }
        self
    }

    /// What the network did so far.
    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetworkState> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches an endpoint answering for `addrs`; fails if one of them is taken.
    pub(crate) fn attach(&self, addrs: &[IpAddr]) -> std::io::Result<MemoryEndpoint> {
        let (tx, rx) = mpsc::channel(ENDPOINT_QUEUE);
        let mut state = self.lock();
        if let Some(taken) = addrs.iter().find(|a| state.endpoints.contains_key(a)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("memory network address {taken} is already attached to another agent"),
            ));
        }
        for addr in addrs {
            state.endpoints.insert(*addr, tx.clone());
        }
        Ok(MemoryEndpoint {
            network: self.clone(),
            addrs: addrs.to_vec(),
            rx,
        })
    }

    fn send(&self, datagram: MemoryDatagram) {
        let mut state = self.lock();
        state.stats.sent += 1;
        let loss = state.faults.loss;
        if loss > 0.0 && state.rng.random_bool(loss) {
            state.stats.lost += 1;
            tracing::trace!(to = %datagram.destination, "memory network: datagram lost");
            return;
        }
        let duplicate = state.faults.duplicate;
        let copies = if duplicate > 0.0 && state.rng.random_bool(duplicate) {
            state.stats.duplicated += 1;
            2
        } else {
            1
        };
        let Some(target) = state.endpoints.get(&datagram.destination).cloned() else {
            state.stats.undeliverable += 1;
            return;
        };
        for _ in 0..copies {
            let delay = {
                let Faults {
                    delay_min,
                    delay_max,
                    ..
                } = state.faults;
                if delay_max.is_zero() {
                    Duration::ZERO
                } else {
                    state.rng.random_range(delay_min..=delay_max)
                }
            };
            let datagram = datagram.clone();
            if delay.is_zero() {
                deliver(&mut state.stats, &target, datagram);
            } else {
                let network = self.clone();
                let target = target.clone();
                // Delayed datagrams ride on the sending agent's runtime, like packets on a wire.
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    deliver(&mut network.lock().stats, &target, datagram);
                });
            }
        }
    }

    fn detach(&self, addrs: &[IpAddr]) {
        let mut state = self.lock();
        for addr in addrs {
            state.endpoints.remove(addr);
        }
    }
}

fn deliver(stats: &mut MemoryStats, target: &mpsc::Sender<MemoryDatagram>, d: MemoryDatagram) {
    match target.try_send(d) {
        Ok(()) => stats.delivered += 1,
        Err(_) => stats.undeliverable += 1,
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// One agent's attachment to a [`MemoryNetwork`]; detaches on drop.
pub(crate) struct MemoryEndpoint {
    network: MemoryNetwork,
    addrs: Vec<IpAddr>,
    rx: mpsc::Receiver<MemoryDatagram>,
}

impl fmt::Debug for MemoryEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEndpoint")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl MemoryEndpoint {
    pub(crate) fn send(&self, datagram: MemoryDatagram) {
        self.network.send(datagram);
    }

    pub(crate) async fn recv(&mut self) -> Option<MemoryDatagram> {
        self.rx.recv().await
    }
}

impl Drop for MemoryEndpoint {
    fn drop(&mut self) {
        self.network.detach(&self.addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn datagram(to: IpAddr, n: u8) -> MemoryDatagram {
        MemoryDatagram {
            source: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            destination: to,
            ttl: 64,
            payload: vec![n],
        }
    }

    #[tokio::test]
    async fn loss_and_duplication_follow_the_seed() {
        let net = MemoryNetwork::new(42).with_loss(0.2).with_duplication(0.1);
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let a = net.attach(&[Ipv4Addr::new(10, 0, 0, 1).into()]).unwrap();
        let mut rx = net.attach(&[b]).unwrap();
        for n in 0..200u8 {
            a.send(datagram(b, n));
        }
        let stats = net.stats();
        assert_eq!(stats.sent, 200);
        assert!(stats.lost > 10 && stats.lost < 80, "{stats:?}");
        assert!(stats.duplicated > 0, "{stats:?}");
        assert_eq!(stats.delivered, 200 - stats.lost + stats.duplicated);
        let mut got = 0;
        while let Ok(d) = rx.rx.try_recv() {
            assert_eq!(d.destination, b);
            got += 1;
        }
        assert_eq!(got, stats.delivered);
        // The same seed gives the same losses.
        let again = MemoryNetwork::new(42).with_loss(0.2).with_duplication(0.1);
        let a2 = again.attach(&[Ipv4Addr::new(10, 0, 0, 1).into()]).unwrap();
        let _rx2 = again.attach(&[b]).unwrap();
        for n in 0..200u8 {
            a2.send(datagram(b, n));
        }
        assert_eq!(again.stats(), stats);
    }

    #[tokio::test]
    async fn delay_delivers_later_and_address_clash_is_refused() {
        let net =
            MemoryNetwork::new(1).with_delay(Duration::from_millis(5), Duration::from_millis(10));
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let mut rx = net.attach(&[b]).unwrap();
        assert_eq!(
            net.attach(&[b]).unwrap_err().kind(),
            std::io::ErrorKind::AddrInUse
        );
        net.send(datagram(b, 9));
        assert!(rx.rx.try_recv().is_err(), "delivered before its delay");
        let d = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("delayed datagram arrives")
            .expect("channel open");
        assert_eq!(d.payload, vec![9]);
        drop(rx);
        net.send(datagram(b, 10));
        assert_eq!(net.stats().undeliverable, 1);
    }
}

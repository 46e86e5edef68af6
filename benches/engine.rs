//! Engine scale bench: N sessions between a sender engine and a receiver engine, refreshed
//! through several refresh periods of virtual time.
//!
//! Reports, for N = 100k (criterion, per refresh message) and N = 1M (one measured run), each
//! with classic refreshes and with RFC 2961 refresh reduction (summary refreshes):
//! - bytes of engine state per session, counted exactly by a counting global allocator (the
//!   drop of each engine frees exactly its heap), message-id state included;
//! - CPU time per refresh interval R (sending engine + receiving engine, encode and decode
//!   included), and the share of one core that N sessions at R = 30 s need per engine;
//! - bytes on the wire per session per minute (both directions);
//! - as a baseline in the same run: the wire codec alone (decode + encode of the same Path).
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`
//! (`QTOQ_BENCH_SESSIONS=100000` skips the 1M run; `QTOQ_BENCH_ONLY=rr` or `=classic` runs
//! only that one-shot run, for a profiler; `QTOQ_BENCH_PERIODS=N` measures over N refresh
//! periods).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use qtoq::engine::{Engine, EngineConfig, Incoming, NeighborLimits, RuleAction, SessionKey, Style};
use qtoq::flow::AdmitAll;
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::Message;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only adds counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SENDER_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const R: Duration = Duration::from_secs(30);

fn receiver_of(i: u32) -> SocketAddr {
    let host = i / 60_000;
    let port = 1024 + (i % 60_000) as u16;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 1, (host >> 8) as u8, host as u8)),
        port,
    )
}

fn flowspec() -> FlowSpec {
    FlowSpec::ControlledLoad(TokenBucket::new(125_000.0, 10_000.0))
}

/// A sender engine and a receiver engine joined by a perfect, instant link.
struct Pair {
    now: Instant,
    sender: Engine,
    receiver: Engine,
    messages: u64,
    /// Bytes of the messages moved.
    bytes: u64,
}

impl Pair {
    fn new(refresh_reduction: bool) -> Self {
        let config = |seed| {
            let mut config = EngineConfig::default();
            config.refresh_reduction = refresh_reduction;
            config.refresh_period = R;
            config.rng_seed = seed;
            // A million sessions between two peers (one of them one address): far beyond
            // the per-neighbor defaults and the default state cap, on purpose.
            config.neighbor_limits = NeighborLimits::unlimited();
            config.max_state_bytes = usize::MAX;
            config
        };
        Pair {
            now: Instant::now(),
            sender: Engine::new(config(1), Box::new(AdmitAll)),
            receiver: Engine::new(config(2), Box::new(AdmitAll)),
            messages: 0,
            bytes: 0,
        }
    }

    /// Moves every pending message to the other engine until both are quiet.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some(t) = self.sender.poll_transmit() {
                moved = true;
                self.messages += 1;
                self.bytes += t.payload.len() as u64;
                self.receiver.handle_datagram(
                    now,
                    Incoming {
                        source: SENDER_ADDR,
                        destination: t.destination,
                        ttl: Some(t.ttl),
                        payload: &t.payload,
                    },
                );
                // Answers over a datagram's byte budget (a Resv is longer than the Path it
                // answers) are held back for a timeout due at once: run it, as a driver does.
                if self.receiver.poll_timeout().is_some_and(|t| t <= now) {
                    self.receiver.handle_timeout(now);
                }
            }
            while let Some(t) = self.receiver.poll_transmit() {
                moved = true;
                self.messages += 1;
                self.bytes += t.payload.len() as u64;
                let source = t.source.unwrap_or(t.destination);
                self.sender.handle_datagram(
                    now,
                    Incoming {
                        source,
                        destination: t.destination,
                        ttl: Some(t.ttl),
                        payload: &t.payload,
                    },
                );
                if self.sender.poll_timeout().is_some_and(|t| t <= now) {
                    self.sender.handle_timeout(now);
                }
            }
            while let Some(action) = self.sender.poll_action() {
                if let RuleAction::Install { rule, .. } = action {
                    self.sender.rule_outcome(now, rule.id, Ok(()));
                }
            }
            while self.sender.poll_event().is_some() {}
            while self.receiver.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }

    fn setup(&mut self, n: u32) {
        let now = self.now;
        for i in 0..n {
            let key = SessionKey {
                destination: receiver_of(i),
                protocol: 6,
            };
            let c = self.receiver.open_session(now, key).unwrap();
            self.receiver
                .reserve(now, c, Style::FixedFilter, flowspec(), true)
                .expect("reserve");
            let s = self.sender.open_session(now, key).unwrap();
            self.sender
                .add_sender(
                    now,
                    s,
                    SocketAddr::new(SENDER_ADDR, 8080),
                    TokenBucket::new(125_000.0, 10_000.0),
                )
                .expect("add_sender");
            if i % 1024 == 1023 {
                self.pump();
            }
        }
        self.pump();
    }

    /// Runs timers and delivers messages until virtual time `end`.
    fn run_until(&mut self, end: Instant) {
        loop {
            let next = match (self.sender.poll_timeout(), self.receiver.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            self.sender.handle_timeout(now);
            self.receiver.handle_timeout(now);
            self.pump();
        }
        self.now = self.now.max(end);
    }

    /// Runs until at least `messages` more messages were processed; returns how many were.
    fn run_messages(&mut self, messages: u64) -> u64 {
        let start = self.messages;
        while self.messages - start < messages {
            let before = self.messages;
            let end = self.now + Duration::from_millis(100);
            self.run_until(end);
            if self.messages == before && self.sender.poll_timeout().is_none() {
                break;
            }
        }
        self.messages - start
    }
}

/// Builds N sessions, measures CPU and bytes on the wire per refresh interval over `periods`
/// refresh periods and the exact heap bytes of each engine. Prints one line per measure.
fn one_shot(n: u32, periods: u32, refresh_reduction: bool) {
    let mode = if refresh_reduction {
        "refresh reduction"
    } else {
        "classic"
    };
    let base = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut pair = Pair::new(refresh_reduction);
    pair.setup(n);
    let setup = started.elapsed();
    assert_eq!(
        pair.sender.rule_count(),
        n as usize,
        "every session installed"
    );
    // Past the fast retransmissions and the first full refresh with a message id, into
    // steady refreshes.
    let warm = pair.now + R * 3;
    pair.run_until(warm);
    let (messages, bytes) = (pair.messages, pair.bytes);
    let cpu = Instant::now();
    let virtual_span = R * periods;
    let end = pair.now + virtual_span;
    pair.run_until(end);
    let cpu = cpu.elapsed();
    let refreshes = pair.messages - messages;
    let wire = pair.bytes - bytes;
    assert_eq!(pair.sender.stats().expired, 0);
    assert_eq!(pair.receiver.stats().expired, 0);
    let per_interval = cpu / periods;
    // Each engine's share: half of the work, per virtual second.
    let core_share = cpu.as_secs_f64() / virtual_span.as_secs_f64() / 2.0;
    let per_session_minute = wire as f64 / f64::from(n) / (virtual_span.as_secs_f64() / 60.0);
    let (ss, rs) = (pair.sender.stats(), pair.receiver.stats());
    if refresh_reduction {
        println!(
            "engine/{n} {mode}: ids summary-refreshed {} + {}, retransmissions {} + {}, NACKs {} + {}",
            ss.srefresh_ids_refreshed,
            rs.srefresh_ids_refreshed,
            ss.retransmissions,
            rs.retransmissions,
            ss.nacks_sent,
            rs.nacks_sent
        );
    }

    let sessions = pair.sender.session_count();
    let estimate_sender = pair.sender.state_bytes();
    let estimate_receiver = pair.receiver.state_bytes();
    let with_both = LIVE.load(Ordering::Relaxed);
    let Pair {
        sender, receiver, ..
    } = pair;
    drop(receiver);
    let with_sender = LIVE.load(Ordering::Relaxed);
    drop(sender);
    let after = LIVE.load(Ordering::Relaxed);
    let inline = std::mem::size_of::<Engine>() as isize;
    let receiver_bytes = with_both - with_sender + inline;
    let sender_bytes = with_sender - after + inline;
    println!(
        "engine/{n} {mode}: setup {setup:.2?}; {refreshes} messages over {virtual_span:?} virtual \
         in {cpu:.2?} = {per_interval:.2?} CPU per refresh interval (both engines); per engine \
         {:.2}% of one core for {n} sessions at R = 30 s",
        core_share * 100.0
    );
    println!(
        "engine/{n} {mode}: wire {per_session_minute:.1} B/session/minute (both directions, \
         {:.1} B/session per refresh interval)",
        wire as f64 / f64::from(n) / f64::from(periods)
    );
    println!(
        "engine/{n} {mode}: bytes/session sender {:.0} (estimate {:.0}), receiver {:.0} \
         (estimate {:.0}); {sessions} sessions; heap left after drop {}",
        sender_bytes as f64 / f64::from(n),
        estimate_sender as f64 / f64::from(n),
        receiver_bytes as f64 / f64::from(n),
        estimate_receiver as f64 / f64::from(n),
        after - base
    );
}

/// Refresh periods measured: classic refreshes repeat every period; with refresh reduction
/// the states' own timers look in only every 16 periods (and the rest is per-neighbor work),
/// so the measure spans two whole such cycles to include them.
fn periods(refresh_reduction: bool) -> u32 {
    if let Some(periods) = std::env::var("QTOQ_BENCH_PERIODS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        periods
    } else if refresh_reduction {
        32
    } else {
        10
    }
}

fn bench(c: &mut Criterion) {
    let n_large: u32 = std::env::var("QTOQ_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // QTOQ_BENCH_ONLY=classic or =rr: only that one-shot run at QTOQ_BENCH_SESSIONS (to
    // profile it alone).
    if let Ok(only) = std::env::var("QTOQ_BENCH_ONLY") {
        one_shot(n_large, periods(only == "rr"), only == "rr");
        return;
    }

    // Baseline: the codec alone on the same kind of message.
    let mut pair = Pair::new(true);
    pair.setup(1);
    let path = {
        let key = SessionKey {
            destination: receiver_of(0),
            protocol: 6,
        };
        let mut probe = Pair::new(false);
        let id = probe.sender.open_session(probe.now, key).unwrap();
        probe
            .sender
            .add_sender(
                probe.now,
                id,
                SocketAddr::new(SENDER_ADDR, 8080),
                TokenBucket::new(1.0, 1.0),
            )
            .unwrap();
        probe.sender.poll_transmit().unwrap().payload
    };
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.bench_function("baseline: wire decode+encode of a Path", |b| {
        b.iter(|| {
            let msg = Message::decode(black_box(&path)).unwrap();
            black_box(msg.encode())
        })
    });

    // 100k sessions in steady refresh: time per message (both engines' work). With refresh
    // reduction most messages are Srefreshes of hundreds of ids, so its time per message is
    // not comparable: the one-shot runs below give CPU per refresh interval.
    // QTOQ_BENCH_STEADY sets the session count (e.g. 1000: everything in cache).
    let n_steady: u32 = std::env::var("QTOQ_BENCH_STEADY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for refresh_reduction in [false, true] {
        let mut pair = Pair::new(refresh_reduction);
        pair.setup(n_steady);
        pair.run_until(pair.now + R * 3);
        let name = if refresh_reduction {
            "refresh message, 100k sessions, refresh reduction"
        } else {
            "refresh message, 100k sessions, classic"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let done = pair.run_messages(iters);
                let spent = start.elapsed();
                // Scale to exactly `iters` messages.
                spent.mul_f64(iters as f64 / done.max(1) as f64)
            })
        });
        drop(pair);
    }
    group.finish();

    for refresh_reduction in [false, true] {
        one_shot(100_000, periods(refresh_reduction), refresh_reduction);
    }
    if n_large > 100_000 {
        for refresh_reduction in [false, true] {
            one_shot(n_large, periods(refresh_reduction), refresh_reduction);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

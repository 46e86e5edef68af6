//! Heap allocations per decode, counted by a global allocator (this file is its own test
//! binary so the counting allocator sees nothing else): fixed-size objects and typical
//! messages allocate nothing; the documented exceptions (variable-size bodies, raw Adspec
//! content, more than `INLINE_OBJECTS` objects) do, so the counter is shown to count.

mod wire_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use qtoq::wire::*;
use wire_support::*;

/// Counts allocations (and reallocations) made by the current thread, so tests running in
/// parallel threads do not see each other's.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract `System` meets is met; the counter is a const-initialized
// thread-local `Cell`, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by decoding `bytes` (and dropping the result), with the message.
fn allocations_to_decode(bytes: &[u8]) -> (usize, Message) {
    let before = ALLOCATIONS.with(Cell::get);
    let decoded = Message::decode(bytes);
    let after = ALLOCATIONS.with(Cell::get);
    (after - before, decoded.expect("sample decodes"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address literal")
}

#[test]
fn typical_path_with_adspec_decodes_without_allocating() {
    let msg = path();
    assert!(msg.adspec().is_some());
    let bytes = msg.encode().unwrap();
    let (allocations, decoded) = allocations_to_decode(&bytes);
    assert_eq!(decoded, msg);
    assert_eq!(allocations, 0, "path with adspec");
}

#[test]
fn resv_ff_guaranteed_decodes_without_allocating() {
    let msg = resv_ff();
    assert!(matches!(
        msg.flowspec(),
        Some(intserv::FlowSpec::Guaranteed { .. })
    ));
    let bytes = msg.encode().unwrap();
    let (allocations, decoded) = allocations_to_decode(&bytes);
    assert_eq!(decoded, msg);
    assert_eq!(allocations, 0, "resv ff guaranteed");
}

#[test]
fn fixed_size_objects_never_allocate_up_to_the_inline_capacity() {
    // Every fixed-size object class, alone or together, up to INLINE_OBJECTS objects.
    let mut msg = path();
    msg.objects.insert(
        0,
        Object::MessageId(MessageId {
            flags: 0,
            epoch: 7,
            id: 1,
        }),
    );
    msg.objects.push(Object::MessageIdAck(MessageId {
        flags: 0,
        epoch: 7,
        id: 2,
    }));
    assert_eq!(msg.objects.len(), INLINE_OBJECTS);
    let (allocations, decoded) = allocations_to_decode(&msg.encode().unwrap());
    assert_eq!(decoded, msg);
    assert_eq!(allocations, 0);
}

#[test]
fn documented_exceptions_allocate_and_are_counted() {
    // A variable-size body (the INTEGRITY digest): one allocation for its bytes.
    let mut signed = resv_ff();
    signed.objects.insert(0, Object::Integrity(integrity()));
    let (allocations, _) = allocations_to_decode(&signed.encode().unwrap());
    assert_eq!(allocations, 1, "integrity digest");

    // More objects than fit inline: the list moves to the heap (growth included, a few).
    let filters: Vec<FilterSpec> = (0..8)
        .map(|i| FilterSpec::new(addr(&format!("10.1.2.3:{}", 40000 + i))))
        .collect();
    let big = Message::resv(
        session(),
        RsvpHop::new(ip("10.9.8.7"), 7),
        TimeValues::new(std::time::Duration::from_secs(30)),
        Style::SharedExplicit,
        guaranteed(),
        &filters,
    );
    assert!(big.objects.len() > INLINE_OBJECTS);
    let (allocations, decoded) = allocations_to_decode(&big.encode().unwrap());
    assert_eq!(decoded, big);
    assert!(
        (1..=2).contains(&allocations),
        "spilled list: {allocations}"
    );

    // Adspec content kept raw (an unknown general parameter): the raw tail, its list and
    // the value bytes.
    let mut parts = AdspecParts::from(Adspec::host_default(1500));
    parts.general.extra.push(RawParam {
        id: 99,
        flags: 0,
        value: vec![0, 0, 0, 1],
    });
    let raw_path = Message::path(
        session(),
        RsvpHop::new(ip("10.1.2.3"), 7),
        TimeValues::new(std::time::Duration::from_secs(30)),
        FilterSpec::new(sock(SENDER)),
        tspec(),
        Some(parts.into()),
    );
    let (allocations, decoded) = allocations_to_decode(&raw_path.encode().unwrap());
    assert_eq!(decoded, raw_path);
    assert_eq!(allocations, 3, "raw adspec parameter");
}

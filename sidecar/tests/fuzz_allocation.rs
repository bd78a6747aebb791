//! Unbounded allocation (issue #14, fuzzing): a parser that reads a length
//! from peer input — a PROXY v2 header length, a gRPC frame length, a RESP
//! bulk or array length, a JWT, a gRPC-Web base64 body — must refuse or
//! wait without allocating what the length claims. A counting allocator
//! records the largest single allocation made on the test's own thread
//! while the parser runs.
#![allow(clippy::unwrap_used)]
// A global allocator is an `unsafe impl`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sidecar::policy::rate_limit::redis;
use sidecar::translate::grpc_json::stream::FrameDecoder;

/// `System`, recording the largest allocation of each thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest single allocation `f` makes on this thread, and its result.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (usize, T) {
    LARGEST.with(|largest| largest.set(0));
    let out = f();
    (LARGEST.with(Cell::get), out)
}

const KIB: usize = 1024;

#[test]
fn a_grpc_frame_claiming_4_gib_waits_without_allocating_it() {
    let mut decoder = FrameDecoder::default();
    let (largest, next) = largest_allocation(|| {
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        decoder.next_message()
    });
    assert!(matches!(next, Ok(None)), "{next:?}");
    assert!(largest < 64 * KIB, "allocated {largest} bytes");
}

#[test]
fn a_resp_bulk_claiming_4_gib_is_refused_without_allocating_it() {
    for reply in [
        &b"$4294967296\r\nabc"[..],
        b"$9223372036854775807\r\n",
        b"*4294967296\r\n",
        b"*1000000\r\n:1\r\n",
    ] {
        let (largest, parsed) = largest_allocation(|| redis::parse(reply));
        assert!(parsed.is_err(), "{reply:?} gave {parsed:?}");
        assert!(largest < 64 * KIB, "{reply:?}: allocated {largest} bytes");
    }
}

#[test]
fn a_resp_bulk_at_its_limit_waits_without_allocating_it() {
    let (largest, parsed) = largest_allocation(|| redis::parse(b"$1048576\r\nabc"));
    assert!(matches!(parsed, Ok(None)), "{parsed:?}");
    assert!(largest < 64 * KIB, "allocated {largest} bytes");
}

#[test]
fn a_proxy_v2_header_claiming_64_kib_is_refused_at_the_limit() {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    header.extend_from_slice(&[7; 64]);
    let (largest, ()) = largest_allocation(|| sidecar::fuzzing::proxy_protocol(&header));
    assert!(largest < 64 * KIB, "allocated {largest} bytes");
    let taken = sidecar::fuzzing::proxy_protocol_read(&header);
    assert!(taken <= sidecar::fuzzing::PROXY_PROTOCOL_LIMIT);
}

#[test]
fn an_oversized_jwt_is_refused_without_decoding_it() {
    let token = format!("{}.{}.{}", "e".repeat(2 << 20), "e".repeat(2 << 20), "sig");
    // Warm the authenticator up first: it is built once, on first use.
    sidecar::fuzzing::jwt("x.y.z");
    let (largest, accepted) = largest_allocation(|| sidecar::fuzzing::jwt(&token));
    assert!(!accepted);
    // The bearer header value is copied once; nothing is decoded from it.
    assert!(
        largest < token.len() + 64 * KIB,
        "allocated {largest} bytes"
    );
    assert!(largest < 2 * token.len(), "allocated {largest} bytes");
}

#[test]
fn grpc_web_base64_allocates_no_more_than_its_input() {
    let text = vec![b'A'; 1 << 20];
    let (largest, decoded) =
        largest_allocation(|| sidecar::fuzzing::grpc_web_base64(&text, text.len()));
    assert_eq!(decoded.map(|d| d.len()), Some(3 << 18));
    assert!(largest <= text.len(), "allocated {largest} bytes");
}

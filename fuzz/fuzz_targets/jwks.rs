//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

#[path = "../split.rs"]
mod split_input;
use split_input::split;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (document, message) = split(data);
    sidecar::fuzzing::jwks(document, message);
});

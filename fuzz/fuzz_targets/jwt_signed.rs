//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

#[path = "../split.rs"]
mod split_input;
use split_input::split;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (header, claims) = split(data);
    let token = sidecar::fuzzing::sign_hs256(header, claims);
    sidecar::fuzzing::jwt(&token);
});

//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        sidecar::fuzzing::jwt(token);
    }
});

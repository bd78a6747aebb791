//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        sidecar::fuzzing::config(text);
    }
});

//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    sidecar::fuzzing::upstream_response(rest, first & 1 == 1);
});

//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = usize::from(data.first().copied().unwrap_or(1));
    sidecar::fuzzing::grpc_frames(data, split);
});

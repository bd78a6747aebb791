//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = usize::from(data.first().copied().unwrap_or(1));
    sidecar::fuzzing::grpc_web_base64(data, split);
    let payloads = [data.to_vec()];
    let text = sidecar::fuzzing::grpc_web_encode(&payloads);
    let back = sidecar::fuzzing::grpc_web_base64(&text, split);
    assert_eq!(back.as_deref(), Some(data));
});

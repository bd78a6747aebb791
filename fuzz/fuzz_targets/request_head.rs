//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

#[path = "../split.rs"]
mod split_input;
use split_input::split;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (method, rest) = split(data);
    let (target, rest) = split(rest);
    let mut headers = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() && headers.len() < 16 {
        let (name, after) = split(rest);
        let (value, after) = split(after);
        headers.push((name.to_vec(), value.to_vec()));
        rest = after;
    }
    sidecar::fuzzing::request_head(method, &String::from_utf8_lossy(target), &headers);
});

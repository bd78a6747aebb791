//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

#[path = "../split.rs"]
mod split_input;
use split_input::split;

#[path = "../transcoder.rs"]
mod library;
use library::transcoder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (method, rest) = split(data);
    let (path, rest) = split(rest);
    let (query, body) = split(rest);
    let query = (!query.is_empty()).then(|| String::from_utf8_lossy(query));
    transcoder().request(
        &String::from_utf8_lossy(method),
        &String::from_utf8_lossy(path),
        query.as_deref(),
        body,
    );
});

//! libFuzzer target: see `sidecar::fuzzing` for what it asserts.
#![no_main]

#[path = "../split.rs"]
mod split_input;
use split_input::split;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (template, path) = split(data);
    sidecar::fuzzing::path_template(
        &String::from_utf8_lossy(template),
        &String::from_utf8_lossy(path),
    );
});

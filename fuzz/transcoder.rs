//! The library API's transcoder (`tests/protos/library/v1/library.proto`),
//! compiled once per fuzzing process.

use std::sync::OnceLock;

use sidecar::fuzzing::Transcoder;

/// The transcoder of the library API's bindings.
pub fn transcoder() -> &'static Transcoder {
    static TRANSCODER: OnceLock<Transcoder> = OnceLock::new();
    TRANSCODER.get_or_init(|| {
        let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/protos");
        let pool = sidecar::translate::grpc_json::descriptors::compile(
            &["library/v1/library.proto".to_string()],
            &[protos.into()],
        )
        .expect("the library API compiles");
        Transcoder::new(&pool).expect("the library API has valid bindings")
    })
}

//! Compiles `protos/orders.proto` into the `orders.v1` messages and the tonic
//! client and server. Uses protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=protos");
    println!("cargo:rerun-if-changed=protos/orders.proto");
    // The google.api.http rules' definitions, the same files the proxy embeds.
    let google_api = "../sidecar/src/translate/grpc_json";
    println!("cargo:rerun-if-changed={google_api}/google/api");
    let fds = protox::compile(["protos/orders.proto"], ["protos", google_api])?;
    tonic_prost_build::configure()
        // demo-rest answers `GET /orders/{id}` with the order as JSON.
        .type_attribute(".orders.v1.Order", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}

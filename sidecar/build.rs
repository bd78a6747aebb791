//! Link options for the proxy's binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS");
    let env = std::env::var("CARGO_CFG_TARGET_ENV");
    if os.as_deref() == Ok("linux") && env.as_deref() == Ok("gnu") {
        // Relative relocations packed (DT_RELR, read by glibc since 2.36):
        // the loader reads ~7 KiB of them at start-up instead of ~530 KiB
        // of RELA entries, and the running proxy's RSS is ~2 MiB smaller
        // (measured, bench/README.md). A GNU ld that does not know the
        // option warns and ignores it.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

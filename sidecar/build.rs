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
    // The functions a running proxy runs, placed together at the front of
    // `.text` (written by bench/symbol-order): the kernel maps 64 KiB around
    // each page of code touched, so scattered hot functions map most of
    // the binary; together they map ~2 MiB of it (RSS 11.7 -> 6.3 MiB after
    // one request, bench/README.md). LLD's option, and LLD is rustc's
    // linker on x86_64 Linux; names no longer in the binary are skipped.
    if os.as_deref() == Ok("linux")
        && env.as_deref() == Ok("gnu")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
    {
        let order = concat!(env!("CARGO_MANIFEST_DIR"), "/symbol-order.txt");
        println!("cargo:rerun-if-changed={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

//! The README's first command: the demo mesh comes up and works end to end.

use std::process::Command;

use mesh_tests::bin;

#[test]
fn demo_mesh_passes_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports from a base, below the ephemeral range (32768+) that the
    // other tests' port-0 listeners draw from; varied so parallel runs rarely collide.
    let base = 20_000 + (std::process::id() % 1_100) * 10;
    let out = Command::new(bin("mesh-demo"))
        .args(["--check", "--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mesh-demo --check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stdout.contains("/orders/3"),
        "the check covers web → orders over gRPC: {stdout}"
    );
}

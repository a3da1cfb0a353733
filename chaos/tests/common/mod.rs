//! What the chaos crate's tests share.

use std::path::PathBuf;

/// The debug `mimorid` the suite's build produced (next to this test's directory).
pub fn mimorid() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("mimorid");
    assert!(
        binary.exists(),
        "{} is missing: build the workspace's binaries first (./scripts/test does)",
        binary.display()
    );
    binary
}

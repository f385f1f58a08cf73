//! External tools the tests drive (installed by `scripts/test-tools.sh`,
//! which `make test` runs first).
#![allow(dead_code)]

use std::path::PathBuf;

/// The directory holding the test tools.
pub fn tools_bin() -> PathBuf {
    match std::env::var_os("SHREDSTORE_TOOLS") {
        Some(dir) => PathBuf::from(dir).join("bin"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/shredstore/tools/bin"),
    }
}

/// The path of tool `name`; panics, naming the install script, if absent.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_bin().join(name);
    assert!(
        path.is_file(),
        "{} not found: run scripts/test-tools.sh (make test does)",
        path.display()
    );
    path
}

//! The test cluster of the JetStream tests: real `nats-server` processes
//! (`tests/tools/nats_cluster.rs`, shared with the integration tests).

use std::path::PathBuf;

#[path = "../../tests/tools/nats_cluster.rs"]
mod nats_cluster;
pub(crate) use nats_cluster::NatsCluster;

/// The nats-server binary `scripts/test-tools.sh` installs.
pub(crate) fn nats_server() -> PathBuf {
    let bin = match std::env::var_os("SHREDSTORE_TOOLS") {
        Some(dir) => PathBuf::from(dir).join("bin"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/shredstore/tools/bin"),
    }
    .join("nats-server");
    assert!(
        bin.is_file(),
        "{} not found: run scripts/test-tools.sh (make test does)",
        bin.display()
    );
    bin
}

/// The files among `files` that hold `needle`.
pub(crate) fn found_in(files: &[(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p.clone())
        .collect()
}

//! The test cluster of the JetStream tests: real `nats-server` processes
//! (`tests/tools/nats_cluster.rs`, shared with the integration tests).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::engine::jetstream::JetStreamEngine;

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

/// Cluster tests run side by side, except those that scan the nodes' files
/// for erased bytes: under the load of five other clusters on two cores a
/// follower lags and catches up from the leader's snapshot, and its Raft
/// log then keeps the erased records past every forced snapshot (README
/// "Raft WAL window"). Those take [`alone`], the others [`beside_others`].
static CLUSTER_TESTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a cluster test that may run beside other cluster tests.
pub(crate) fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    CLUSTER_TESTS.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a cluster test that must be the only one running.
pub(crate) fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    CLUSTER_TESTS.write().unwrap_or_else(|e| e.into_inner())
}

/// The files among `files` that hold `needle`.
pub(crate) fn found_in(files: &[(PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p.clone())
        .collect()
}

/// A Raft log is kept in blocks of 4 MiB and compacted by whole blocks
/// (its last block is kept whole, compacted or not): each round of
/// [`compact_until_gone`] has `fill` write `FILLER_CHUNKS` records of
/// `FILLER_CHUNK` bytes (5.3 MiB) so every replica's log moves past the
/// block holding the erased records.
pub(crate) const FILLER_CHUNK: usize = 60 * 1024;
pub(crate) const FILLER_CHUNKS: usize = 90;

/// Until none of `gone` is left in any node's files, at most five rounds
/// of: `fill`, wait until every replica has it (a replica that lagged
/// behind catches up by snapshot, and the filler then never enters its own
/// log), restart every node gracefully, one at a time (each snapshots its
/// streams and compacts their Raft logs).
pub(crate) fn compact_until_gone(
    cluster: &mut NatsCluster,
    js: &JetStreamEngine,
    gone: &[Vec<u8>],
    fill: &mut dyn FnMut(),
) {
    for round in 1..=5 {
        fill();
        wait_current(js);
        for i in 0..cluster.nodes.len() {
            cluster.graceful_restart(i);
            wait_current(js);
        }
        let files = cluster.store_files();
        let left: Vec<PathBuf> = gone.iter().flat_map(|r| found_in(&files, r)).collect();
        if left.is_empty() {
            return;
        }
        assert!(round < 5, "an erased record is still in {left:?}");
    }
}

/// Waits until every replica reports current five times in a row (a node
/// that just rejoined flaps between current and catching up for a while).
pub(crate) fn wait_current(js: &JetStreamEngine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_a_row = 0;
    while in_a_row < 5 {
        if js.replicas_current().unwrap_or(false) {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(Instant::now() < deadline, "replicas never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

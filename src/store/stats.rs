//! Counters of a store, for `Admin.Stats`, `/metrics` and the alerts.

use std::sync::atomic::Ordering;

use super::Inner;
use super::engine::Cf;
use crate::error::Result;

/// Counters of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Users with a live key record.
    pub users: u64,
    /// RocksDB's estimate of stored message records (includes erased ones not yet purged).
    pub messages_estimate: u64,
    /// Erasures not yet made physical by `purge`.
    pub pending_erasures: u64,
    /// Age in ms of the oldest erasure not yet made physical (0 if none).
    pub oldest_pending_erasure_ms: u64,
    /// Erasures pending for longer than the purge interval (the background
    /// purger should have made them physical by then; 0 without a purger).
    pub overdue_erasures: u64,
    /// Users with redactions not yet made physical by `purge`.
    pub pending_redactions: u64,
    /// Purges completed since open.
    pub purges_done: u64,
    /// Purges since open that could not confirm everything physical (they
    /// are retried).
    pub purges_incomplete: u64,
    /// Records dropped by the compaction filter since open (RocksDB ticker
    /// `rocksdb.compaction.key.drop.user`).
    pub filter_drops: u64,
    /// Bytes of all files in the data directory.
    pub bytes_on_disk: u64,
    /// RocksDB's latest sequence number; it grows with every write.
    pub rocksdb_sequence: u64,
    /// A write or sync failed: the store refuses writes until reopened.
    pub poisoned: bool,
    /// Decrypt and corruption errors returned since open (damaged or
    /// tampered records).
    pub integrity_failures: u64,
    /// Conversations with a live key record.
    pub conversations: u64,
    /// Conversation deletions not yet made physical by `purge`.
    pub pending_conversation_deletions: u64,
    /// The number of the newest change on the change feed (0 if none).
    pub last_change: u64,
    /// Generation of the root key the store runs under (the new key's
    /// during a rotation).
    pub root_key_generation: u32,
    /// A root-key rotation is in progress.
    pub rotation_in_progress: bool,
    /// Key records the rotation in progress has rewrapped.
    pub rotation_rewrapped: u64,
    /// Estimate of the key records it still has to rewrap: users and
    /// conversations with a key, less those rewrapped (0 without a
    /// rotation). It counts records created during the rotation, which
    /// need no rewrap, so it stays above 0 until the rotation ends.
    pub rotation_remaining_estimate: u64,
    /// Key records a rotation could not rewrap since open (damaged: they
    /// were unreadable under any key).
    pub rotation_skipped: u64,
    /// Erasure requests not yet done or cancelled (pending or waiting for
    /// a legal hold).
    pub erasure_requests_open: u64,
    /// Open erasure requests past their due date.
    pub erasure_requests_overdue: u64,
}

impl Inner {
    pub(super) fn stats(&self) -> Result<Stats> {
        let now = self.clock.now_ms();
        let interval_ms = self
            .purge_interval
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (pending_erasures, oldest, overdue) = {
            let pending = self.pending.lock();
            let oldest = pending.values().map(|p| p.erased_at_ms).min();
            let overdue = interval_ms.map_or(0, |i| {
                pending
                    .values()
                    .filter(|p| now.saturating_sub(p.erased_at_ms) > i)
                    .count() as u64
            });
            (pending.len() as u64, oldest, overdue)
        };
        let rotation = self.rotation_status();
        let (erasure_requests_open, erasure_requests_overdue) = self.ledger_counts(now);
        let users = self.users.count.load(Ordering::Relaxed);
        let conversations = self.convs.count.load(Ordering::Relaxed);
        Ok(Stats {
            users,
            messages_estimate: self.engine.estimate_keys(Cf::Messages)?,
            pending_erasures,
            oldest_pending_erasure_ms: oldest.map_or(0, |t| now.saturating_sub(t)),
            overdue_erasures: overdue,
            pending_redactions: self.pending_redactions.lock().len() as u64,
            purges_done: self.purges_done.load(Ordering::Relaxed),
            purges_incomplete: self.purges_incomplete.load(Ordering::Relaxed),
            filter_drops: self.engine.filter_drops(),
            bytes_on_disk: self.engine.bytes_on_disk()?,
            rocksdb_sequence: self.engine.write_position()?,
            poisoned: self.engine.is_poisoned(),
            integrity_failures: self.integrity_failures.load(Ordering::Relaxed),
            conversations,
            pending_conversation_deletions: self.pending_conv_deletions.lock().len() as u64,
            last_change: self.last_change(),
            root_key_generation: self.keys.generation,
            rotation_in_progress: rotation.is_some(),
            rotation_rewrapped: rotation.map_or(0, |r| r.rewrapped),
            rotation_remaining_estimate: rotation.map_or(0, |r| {
                users
                    .saturating_add(conversations)
                    .saturating_sub(r.rewrapped)
            }),
            rotation_skipped: self.rotation_skipped.load(Ordering::Relaxed),
            erasure_requests_open,
            erasure_requests_overdue,
        })
    }
}

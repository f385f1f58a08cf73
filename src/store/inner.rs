//! The state shared by a [`Store`](super::Store) and its background purger.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::changes::ChangeLog;
use super::conversations::Conversations;
use super::engine::Engine;
use super::filter_state::FilterState;
use super::options::Durability;
use super::users::Users;
use super::worker;
use crate::crypto::{self, HandleKey, KEY_LEN, SivCipher};
use crate::error::{Error, InvalidArgument, Result};
use crate::types::{Clock, Handle, UserId};

/// The argument limits a store enforces (from its [`Options`](super::Options)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreLimits {
    /// Largest payload.
    pub max_payload: usize,
    /// Most payloads in one batch.
    pub max_batch: usize,
    /// Most payload bytes in one batch.
    pub max_batch_bytes: usize,
    /// Largest read limit.
    pub max_read_limit: usize,
}

/// The keys a store derives from its root key and metadata.
pub(super) struct StoreKeys {
    pub(super) salt: [u8; KEY_LEN],
    pub(super) handle_key: HandleKey,
    /// Wraps user and conversation secrets and the handle key: the
    /// current root key's (see `rootkey.rs`).
    pub(super) wrap: SivCipher,
    /// The current root key's generation (the new one during a rotation).
    pub(super) generation: u32,
    /// While a rotation runs: the previous root key's ciphers.
    pub(super) previous: RwLock<Option<super::rootkey::Previous>>,
    /// Signs erasure receipts.
    pub(super) receipt_key: crypto::ReceiptKey,
    /// Receipt keys of retired root keys: receipts they signed still verify.
    pub(super) older_receipt_keys: RwLock<Vec<crypto::ReceiptKey>>,
    /// The current root key's check value (one-way), for journals and
    /// backup manifests.
    pub(super) root_check: [u8; 16],
    /// The store's id ([`crypto::store_id`]).
    pub(super) store_id: [u8; 16],
}

/// An erasure not yet made physical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    /// The highest erased epoch.
    pub(super) epoch: u32,
    /// When it was erased, ms since the Unix epoch.
    pub(super) erased_at_ms: u64,
}

pub(crate) struct Inner {
    pub(super) engine: Engine,
    pub(super) limits: StoreLimits,
    pub(super) durability: Durability,
    pub(super) erase_delete_range: bool,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) rng: Arc<dyn crypto::SecureRandom>,
    pub(super) keys: StoreKeys,
    /// Next audit-record counter (unique within the store).
    pub(super) audit_counter: AtomicU64,
    pub(super) users: Users,
    pub(super) convs: Conversations,
    /// The change feed's numbering.
    pub(super) changes: ChangeLog,
    /// What the compaction filter removes: pending erasures and the users'
    /// expiry policies.
    pub(super) filter: Arc<FilterState>,
    /// Erased handles whose erasure is not yet physical.
    pub(super) pending: Mutex<HashMap<Handle, Pending>>,
    /// Handles with redactions not yet physical, with a counter bumped by
    /// each redaction (a purge clears only what it saw).
    pub(super) pending_redactions: Mutex<HashMap<Handle, u64>>,
    /// Deleted conversations whose deletion is not yet physical.
    pub(super) pending_conv_deletions: Mutex<HashMap<Handle, Pending>>,
    /// Conversations with redactions not yet physical (counters as for
    /// `pending_redactions`).
    pub(super) pending_conv_redactions: Mutex<HashMap<Handle, u64>>,
    /// Source of those counters (starts at 1; 0 marks redactions found
    /// pending at open).
    pub(super) redaction_counter: AtomicU64,
    /// Handles whose erasure marker did not decode at open: their erased
    /// epoch is unknown, so they fail closed until erased again.
    pub(super) damaged_markers: Mutex<HashSet<Handle>>,
    /// Store-wide retention period, ms.
    pub(super) default_retention_ms: Option<u64>,
    /// Bumped by every erase after its write; open iterators check it.
    pub(super) erase_generation: AtomicU64,
    pub(super) purges_done: AtomicU64,
    /// Decrypt and corruption errors returned since open.
    pub(super) integrity_failures: AtomicU64,
    pub(super) purges_incomplete: AtomicU64,
    pub(super) purge_lock: Mutex<()>,
    pub(super) purge_interval: Option<Duration>,
    /// The `interrupt_purge` test hook.
    pub(super) interrupt_purge: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub(super) purger_signal: Arc<worker::Signal>,
    /// The root-key rotation in progress, if any (see `rootkey.rs`).
    pub(super) rotation: Mutex<Option<crate::codec::RotationRecord>>,
    /// A copy of `rotation`'s progress, for readers that must not wait
    /// for a batch (stats, metrics).
    pub(super) rotation_view: Mutex<Option<super::rootkey::RotationStatus>>,
    /// The rotation finished since open, with its final counts.
    pub(super) rotation_finished: Mutex<Option<super::rootkey::RotationStatus>>,
    /// Key records a rotation could not rewrap (damaged) since open.
    pub(super) rotation_skipped: AtomicU64,
    /// Held while a backup is taken (one at a time).
    pub(super) backup_lock: Mutex<()>,
    /// The open erasure requests (pending or waiting for a hold), by user;
    /// changed under the user's lock (see `ledger.rs`).
    pub(super) ledger:
        Mutex<HashMap<Handle, (super::ledger::RequestId, crate::codec::LedgerRecord)>>,
    /// Wakes the ledger runner and tells it to stop.
    pub(super) ledger_signal: Arc<worker::Signal>,
    /// How long after its receipt an erasure request is due, ms.
    pub(super) erasure_due_ms: u64,
}

/// How often an operation that lost a race with another front end reloads
/// and retries before it reports [`Error::Conflict`] (gRPC ABORTED).
pub(super) const CONFLICT_RETRIES: u32 = 16;

impl Inner {
    /// Passes `r` through, counting a decrypt or corruption error (an
    /// incident signal: damaged or tampered data).
    pub(super) fn counted<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::Decrypt | Error::Corrupt(_)) = &r {
            self.integrity_failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Runs `op`, and again after `reset` (up to [`CONFLICT_RETRIES`]
    /// times) while it fails with [`Error::Conflict`]: it lost a race with
    /// another front end of the same JetStream cluster, wrote nothing, and
    /// `reset` drops what it had cached of the records involved. RocksDB
    /// never reports a conflict (the store's locks serialize its writers).
    pub(super) fn retry_conflicts<T>(
        &self,
        mut reset: impl FnMut(),
        mut op: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut tries = 0;
        loop {
            match op() {
                Err(Error::Conflict) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                    reset();
                    // Back off a random while, longer each time, so the
                    // racers stop meeting (up to 64 ms).
                    let mut b = [0u8; 1];
                    let jitter = self.rng.fill(&mut b).map_or(0, |()| u64::from(b[0]));
                    let ceiling = 1u64 << tries.min(6);
                    std::thread::sleep(std::time::Duration::from_millis(jitter % (ceiling + 1)));
                }
                r => return r,
            }
        }
    }

    /// The handle of `user` in this store.
    pub(super) fn handle(&self, user: &UserId) -> Handle {
        self.keys.handle_key.handle(user)
    }

    /// Checks a read limit: 1..=max_read_limit.
    pub(super) fn check_limit(&self, limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(InvalidArgument::ZeroLimit.into());
        }
        if limit > self.limits.max_read_limit {
            return Err(InvalidArgument::LimitTooLarge {
                limit,
                max: self.limits.max_read_limit,
            }
            .into());
        }
        Ok(())
    }
}

//! What the compaction filter removes: envelopes of erased key epochs whose
//! erasure is not yet physical, and envelopes past their user's retention
//! horizon. RocksDB-free; `engine/filter.rs` plugs it into RocksDB.
//!
//! Each compaction gets an immutable [`Snapshot`]. The maps are split into
//! [`SHARDS`] copy-on-write shards, so taking a snapshot copies
//! `SHARDS` pointers and an update copies at most one shard (and only if a
//! running compaction still holds it): both stay small with a million
//! users. Only *pending* erasures are kept: once a purge has made an
//! erasure physical there is nothing left for the filter to remove, so an
//! erased user costs memory only until its purge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::codec::{ConvRecord, Envelope, EnvelopeHeader, MESSAGE_KEY_LEN, Retention, UserPolicy};
use crate::types::{Handle, HandleMap};

/// Shards per map.
pub const SHARDS: usize = 4096;

/// A map from handles to `V`, split into copy-on-write shards.
struct ShardedMap<V> {
    shards: RwLock<Vec<Arc<HandleMap<Handle, V>>>>,
}

fn shard_of(handle: &Handle) -> usize {
    // Handles are HMAC outputs: their first bytes are uniform.
    usize::from(u16::from_be_bytes([handle.0[0], handle.0[1]])) % SHARDS
}

impl<V: Clone> ShardedMap<V> {
    fn new() -> Self {
        ShardedMap {
            shards: RwLock::new(
                (0..SHARDS)
                    .map(|_| Arc::new(HandleMap::default()))
                    .collect(),
            ),
        }
    }

    fn update<R>(&self, handle: &Handle, f: impl FnOnce(&mut HandleMap<Handle, V>) -> R) -> R {
        let mut shards = self.shards.write();
        let i = shard_of(handle);
        // Copies the shard only if a snapshot still holds it.
        f(Arc::make_mut(&mut shards[i]))
    }

    #[cfg(test)]
    fn get(&self, handle: &Handle) -> Option<V> {
        self.shards.read()[shard_of(handle)].get(handle).cloned()
    }

    fn snapshot(&self) -> Vec<Arc<HandleMap<Handle, V>>> {
        self.shards.read().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.read().iter().map(|s| s.len()).sum()
    }
}

/// What one compaction filters by (opaque).
pub struct Snapshot {
    erased: Vec<Arc<HandleMap<Handle, u32>>>,
    policies: Vec<Arc<HandleMap<Handle, UserPolicy>>>,
}

/// The filter's decision on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Leave it.
    Keep,
    /// Drop it.
    Remove,
}

/// Pending erasures and retention policies per handle, plus a lazily
/// rebuilt immutable snapshot.
pub struct FilterState {
    /// Handles whose erasure is not yet physical: the highest erased epoch.
    erased: ShardedMap<u32>,
    /// Users whose expiry differs from the store default (own retention,
    /// a hold, or a raised floor).
    policies: ShardedMap<UserPolicy>,
    /// The store-wide retention period in ms.
    pub(crate) default_retention_ms: Option<u64>,
    /// Every user's policy is loaded (set at the end of `Store::open`).
    /// Until then retention removes nothing: an unknown user might be on
    /// hold or keep its messages forever.
    ready: AtomicBool,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl Default for FilterState {
    fn default() -> Self {
        FilterState::new(None)
    }
}

impl FilterState {
    /// An empty state (`default_retention_ms`: the store-wide period).
    pub fn new(default_retention_ms: Option<u64>) -> Self {
        FilterState {
            erased: ShardedMap::new(),
            policies: ShardedMap::new(),
            default_retention_ms,
            ready: AtomicBool::new(false),
            snapshot: Mutex::new(None),
        }
    }

    /// Runs `change` and invalidates the snapshot. The cached snapshot is
    /// dropped before too, so the change copies no shard unless a running
    /// compaction holds it; and after, so a snapshot built meanwhile from
    /// the old maps is never kept.
    fn changed<R>(&self, change: impl FnOnce() -> R) -> R {
        *self.snapshot.lock() = None;
        let r = change();
        *self.snapshot.lock() = None;
        r
    }

    /// Records a pending erasure of every epoch <= `epoch` of `handle`.
    pub fn insert_erased(&self, handle: Handle, epoch: u32) {
        self.changed(|| {
            self.erased.update(&handle, |m| {
                let e = m.entry(handle).or_insert(epoch);
                *e = (*e).max(epoch);
            });
        });
    }

    /// Forgets the erasure of `handle` once it is physical, unless a newer
    /// epoch was erased meanwhile.
    pub(crate) fn remove_erased(&self, handle: &Handle, epoch: u32) {
        self.changed(|| {
            self.erased.update(handle, |m| {
                if m.get(handle).is_some_and(|&e| e <= epoch) {
                    m.remove(handle);
                }
            });
        });
    }

    /// The highest pending erased epoch of `handle`.
    #[cfg(test)]
    pub(crate) fn erased_epoch(&self, handle: &Handle) -> Option<u32> {
        self.erased.get(handle)
    }

    /// Pending erasures held in memory.
    #[cfg(test)]
    pub(crate) fn erased_len(&self) -> usize {
        self.erased.len()
    }

    /// Sets the expiry policy of `handle` (`None`: the store default).
    pub(crate) fn set_policy(&self, handle: Handle, policy: Option<&UserPolicy>) {
        let policy = policy.filter(|p| affects_expiry(p)).map(|p| {
            let mut p = p.clone();
            // The filter needs when the hold ends, not why it exists.
            p.hold.iter_mut().for_each(|h| h.reason.clear());
            p
        });
        self.changed(|| {
            self.policies.update(&handle, |m| match policy {
                Some(p) => {
                    m.insert(handle, p);
                }
                None => {
                    m.remove(&handle);
                }
            });
        });
    }

    /// The handles (users and conversations) whose policy moves their
    /// expiry away from the store default.
    pub(crate) fn policy_handles(&self) -> Vec<Handle> {
        self.policies
            .snapshot()
            .iter()
            .flat_map(|shard| shard.keys().copied().collect::<Vec<_>>())
            .collect()
    }

    /// Lets retention act: every policy is loaded.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether retention may remove records.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The current immutable snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let mut snap = self.snapshot.lock();
        if let Some(s) = snap.as_ref() {
            return Arc::clone(s);
        }
        let s = Arc::new(Snapshot {
            erased: self.erased.snapshot(),
            policies: self.policies.snapshot(),
        });
        *snap = Some(Arc::clone(&s));
        s
    }
}

/// Whether a policy changes expiry compared with the store default.
pub(crate) fn affects_expiry(p: &UserPolicy) -> bool {
    p.retention != Retention::StoreDefault || p.hold.is_some() || p.expired_before_ms > 0
}

/// One compaction's view: a snapshot and the time the compaction started.
pub(crate) struct Judge {
    snapshot: Arc<Snapshot>,
    now_ms: u64,
    /// Retention may remove (all policies were loaded when it was created).
    retention: bool,
    default_ms: Option<u64>,
    default_horizon: u64,
}

impl Judge {
    /// The view of a compaction starting at `now_ms`.
    pub(crate) fn new(state: &FilterState, now_ms: u64) -> Judge {
        // `now_ms` is read before the snapshot: a policy published after
        // the snapshot was taken then meets an earlier (more lenient) horizon.
        let retention = state.is_ready();
        let snapshot = state.snapshot();
        let default_ms = state.default_retention_ms;
        Judge {
            snapshot,
            now_ms,
            retention,
            default_ms,
            default_horizon: default_ms.map_or(0, |p| now_ms.saturating_sub(p)),
        }
    }

    /// `Remove` only on a positive match whose envelope's CRC holds (a bit
    /// flip must surface as corruption, never as a silent delete); `Keep`
    /// whenever unsure.
    pub(crate) fn decide(&self, key: &[u8], value: &[u8]) -> Decision {
        if key.len() != MESSAGE_KEY_LEN {
            return Decision::Keep;
        }
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&key[..Handle::LEN]);
        let handle = Handle(h);
        let Ok(header) = EnvelopeHeader::parse(value) else {
            return Decision::Keep;
        };
        let shard = shard_of(&handle);
        let erased = self.snapshot.erased[shard]
            .get(&handle)
            .is_some_and(|&e| header.epoch <= e);
        let expired = !erased && self.retention && {
            let horizon = match self.snapshot.policies[shard].get(&handle) {
                Some(p) => p.horizon(self.now_ms, self.default_ms),
                None => self.default_horizon,
            };
            header.timestamp_ms < horizon
        };
        // Both decisions trust the header only if the CRC vouches for it.
        if (erased || expired) && Envelope::decode(value).is_ok() {
            Decision::Remove
        } else {
            Decision::Keep
        }
    }
}

impl Judge {
    /// The decision on a conversation slot: `Remove` only if its
    /// conversation's retention expired it and its CRC holds. (Erased
    /// authors' slots become tombstones by purge's own writes, and deleted
    /// conversations go by range deletion: nothing else is judged here.)
    pub(crate) fn decide_conv(&self, key: &[u8], value: &[u8]) -> Decision {
        if key.len() != MESSAGE_KEY_LEN || !self.retention {
            return Decision::Keep;
        }
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&key[..Handle::LEN]);
        let handle = Handle(h);
        let Ok(record) = ConvRecord::decode(value) else {
            return Decision::Keep;
        };
        let horizon = match self.snapshot.policies[shard_of(&handle)].get(&handle) {
            Some(p) => p.horizon(self.now_ms, self.default_ms),
            None => self.default_horizon,
        };
        if record.timestamp_ms() < horizon {
            Decision::Remove
        } else {
            Decision::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{EnvelopeKind, LegalHold, message_key};

    fn envelope_at(epoch: u32, ts: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Envelope::encode_with(
            &mut out,
            EnvelopeKind::Message,
            epoch,
            ts,
            &[0; 12],
            b"x",
            |_| Ok([0; 16]),
        )
        .unwrap();
        out
    }

    fn envelope(epoch: u32) -> Vec<u8> {
        envelope_at(epoch, 1)
    }

    fn removes(j: &Judge, h: &Handle, seq: u64, v: &[u8]) -> bool {
        j.decide(&message_key(h, seq), v) == Decision::Remove
    }

    #[test]
    fn conversation_slots_expire_by_their_conversations_policy() {
        let state = FilterState::new(Some(1_000));
        let (a, b) = (Handle([1; 16]), Handle([2; 16]));
        state.set_policy(
            b,
            Some(&UserPolicy {
                retention: Retention::Forever,
                ..UserPolicy::default()
            }),
        );
        let slot = |ts| {
            let mut out = Vec::new();
            crate::codec::encode_tombstone(
                &mut out,
                1,
                ts,
                crate::codec::StoredCause::AuthorErased,
            );
            out
        };
        // Not ready: nothing expires.
        let j = Judge::new(&state, 5_000);
        assert_eq!(j.decide_conv(&message_key(&a, 1), &slot(1)), Decision::Keep);
        state.set_ready();
        let j = Judge::new(&state, 5_000);
        assert_eq!(
            j.decide_conv(&message_key(&a, 1), &slot(3_999)),
            Decision::Remove
        );
        assert_eq!(
            j.decide_conv(&message_key(&a, 2), &slot(4_000)),
            Decision::Keep
        );
        assert_eq!(j.decide_conv(&message_key(&b, 1), &slot(1)), Decision::Keep);
        // A damaged record is kept (it surfaces as corruption).
        let mut bad = slot(1);
        bad[3] ^= 1;
        assert_eq!(j.decide_conv(&message_key(&a, 3), &bad), Decision::Keep);
    }

    #[test]
    fn removes_expired_messages_by_default_and_per_user_policy() {
        let state = FilterState::new(Some(1_000));
        state.set_ready();
        let (a, b, c) = (Handle([1; 16]), Handle([2; 16]), Handle([3; 16]));
        state.set_policy(
            b,
            Some(&UserPolicy {
                retention: Retention::Forever,
                ..UserPolicy::default()
            }),
        );
        state.set_policy(
            c,
            Some(&UserPolicy {
                retention: Retention::After { ms: 10 },
                expired_before_ms: 4_000,
                hold: Some(LegalHold {
                    reason: "r".into(),
                    since_ms: 1,
                    until_ms: None,
                }),
                ..UserPolicy::default()
            }),
        );
        let j = Judge::new(&state, 5_000);
        // Default 1 s at t = 5 s: before 4 s is expired.
        assert!(removes(&j, &a, 1, &envelope_at(1, 3_999)));
        assert!(!removes(&j, &a, 2, &envelope_at(1, 4_000)));
        // Forever.
        assert!(!removes(&j, &b, 1, &envelope_at(1, 1)));
        // On hold: only what had expired before the hold (the floor) goes.
        assert!(removes(&j, &c, 1, &envelope_at(1, 3_999)));
        assert!(!removes(&j, &c, 2, &envelope_at(1, 4_500)));
        // Back to the default: a fresh snapshot sees it.
        state.set_policy(b, None);
        let j = Judge::new(&state, 5_000);
        assert!(removes(&j, &b, 1, &envelope_at(1, 1)));
    }

    #[test]
    fn removes_only_erased_epochs_of_erased_handles_and_only_verified_ones() {
        let state = FilterState::default();
        let a = Handle([1; 16]);
        let b = Handle([2; 16]);
        state.insert_erased(a, 2);
        let j = Judge::new(&state, 1_000_000);
        assert!(removes(&j, &a, 1, &envelope(1)));
        assert!(removes(&j, &a, 1, &envelope(2)));
        assert!(!removes(&j, &a, 1, &envelope(3)));
        assert!(!removes(&j, &b, 1, &envelope(1)));
        // Unsure means keep.
        assert!(j.decide(b"short", &envelope(1)) == Decision::Keep);
        assert!(!removes(&j, &a, 1, b"garbage"));
        // A live record whose epoch was flipped into the erased range fails
        // its CRC: kept, so the read reports it instead of it vanishing.
        let mut flipped = envelope(3);
        flipped[4] = 2;
        assert!(!removes(&j, &a, 1, &flipped));
        // A purged erasure is forgotten: nothing of it is left to remove.
        state.remove_erased(&a, 2);
        let j = Judge::new(&state, 1_000_000);
        assert!(!removes(&j, &a, 1, &envelope(1)));
        assert_eq!(state.erased_len(), 0);
    }

    #[test]
    fn retention_removes_nothing_until_every_policy_is_loaded() {
        let state = FilterState::new(Some(1));
        let a = Handle([1; 16]);
        let b = Handle([2; 16]);
        state.insert_erased(a, 1);
        let early = Judge::new(&state, 1_000_000);
        // Erased epochs are known: removed. Expiry waits for `set_ready`.
        assert!(removes(&early, &a, 1, &envelope_at(1, 5)));
        assert!(!removes(&early, &b, 1, &envelope_at(1, 5)));
        state.set_ready();
        let late = Judge::new(&state, 1_000_000);
        assert!(removes(&late, &b, 1, &envelope_at(1, 5)));
        // A damaged record (CRC off) is never expired.
        let mut bad = envelope_at(1, 5);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(!removes(&late, &b, 1, &bad));
    }

    #[test]
    fn snapshots_are_immutable_and_updates_copy_one_shard() {
        let state = FilterState::default();
        let h = Handle([3; 16]);
        let before = state.snapshot();
        state.insert_erased(h, 1);
        assert!(before.erased[shard_of(&h)].is_empty());
        let after = state.snapshot();
        assert_eq!(after.erased[shard_of(&h)].get(&h), Some(&1));
        state.insert_erased(h, 0);
        assert_eq!(state.erased_epoch(&h), Some(1), "epochs never go down");
        // Shards the update did not touch are shared, not copied.
        let other = (shard_of(&h) + 1) % SHARDS;
        assert!(Arc::ptr_eq(&before.erased[other], &after.erased[other]));
        assert!(Arc::ptr_eq(
            &after.erased[other],
            &state.snapshot().erased[other]
        ));
    }
}

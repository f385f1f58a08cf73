//! The compaction filter on `messages`: drops envelopes whose (handle, epoch)
//! was erased, and envelopes older than their user's retention horizon.
//!
//! The factory hands each compaction an immutable snapshot of the erased
//! epochs and retention policies, and the time the compaction started; `erase`
//! and policy changes swap in a new one. The filter answers `Remove` only on a
//! positive match and `Keep` whenever it is unsure (unparseable key or value,
//! unknown handle, or a panic, which `catch_unwind` turns into `Keep` instead of
//! unwinding across the FFI boundary).

use std::collections::HashMap;
use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::codec::{Envelope, EnvelopeHeader, MESSAGE_KEY_LEN, UserPolicy};
use crate::types::{Clock, Handle};

/// What one compaction filters by.
#[derive(Default)]
pub(crate) struct Snapshot {
    erased: HashMap<Handle, u32>,
    policies: HashMap<Handle, UserPolicy>,
}

/// Erased epochs and retention policies per handle, plus a lazily rebuilt
/// immutable snapshot.
#[derive(Default)]
pub(crate) struct FilterState {
    erased: RwLock<HashMap<Handle, u32>>,
    /// Users whose expiry differs from the store default (own retention,
    /// a hold, or a raised floor).
    policies: RwLock<HashMap<Handle, UserPolicy>>,
    /// The store-wide retention period in ms.
    pub(crate) default_retention_ms: Option<u64>,
    /// Every user's policy is loaded (set at the end of `Store::open`).
    /// Until then retention removes nothing: an unknown user might be on
    /// hold or keep its messages forever.
    ready: AtomicBool,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl FilterState {
    pub(crate) fn new(default_retention_ms: Option<u64>) -> Self {
        FilterState {
            default_retention_ms,
            ..FilterState::default()
        }
    }

    /// Records that every epoch <= `epoch` of `handle` is erased.
    pub(crate) fn insert(&self, handle: Handle, epoch: u32) {
        {
            let mut map = self.erased.write();
            let e = map.entry(handle).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        // Invalidate; the next compaction rebuilds it. Keeps erase O(1).
        *self.snapshot.lock() = None;
    }

    /// Sets the expiry policy of `handle` (`None`: the store default).
    pub(crate) fn set_policy(&self, handle: Handle, policy: Option<&UserPolicy>) {
        {
            let mut map = self.policies.write();
            match policy {
                Some(p) if affects_expiry(p) => {
                    let mut p = p.clone();
                    p.hold.iter_mut().for_each(|h| h.reason.clear());
                    map.insert(handle, p);
                }
                _ => {
                    map.remove(&handle);
                }
            }
        }
        *self.snapshot.lock() = None;
    }

    /// Lets retention act: every policy is loaded.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `epoch` of `handle` is erased.
    pub(crate) fn covers(&self, handle: &Handle, epoch: u32) -> bool {
        self.erased.read().get(handle).is_some_and(|&e| e >= epoch)
    }

    /// The current immutable snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let mut snap = self.snapshot.lock();
        if let Some(s) = snap.as_ref() {
            return Arc::clone(s);
        }
        let s = Arc::new(Snapshot {
            erased: self.erased.read().clone(),
            policies: self.policies.read().clone(),
        });
        *snap = Some(Arc::clone(&s));
        s
    }
}

/// Whether a policy changes expiry compared with the store default.
pub(crate) fn affects_expiry(p: &UserPolicy) -> bool {
    p.retention != crate::codec::Retention::StoreDefault
        || p.hold.is_some()
        || p.expired_before_ms > 0
}

/// Builds one [`MessagesFilter`] per compaction.
pub(crate) struct MessagesFilterFactory {
    pub(crate) state: Arc<FilterState>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl CompactionFilterFactory for MessagesFilterFactory {
    type Filter = MessagesFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> Self::Filter {
        // The time before the snapshot: a policy published after the
        // snapshot was taken then meets an earlier (more lenient) horizon.
        let now_ms = self.clock.now_ms();
        let retention = self.state.ready.load(Ordering::Acquire);
        let snapshot = self.state.snapshot();
        let default_ms = self.state.default_retention_ms;
        MessagesFilter {
            snapshot,
            now_ms,
            retention,
            default_ms,
            default_horizon: default_ms.map_or(0, |p| now_ms.saturating_sub(p)),
        }
    }

    fn name(&self) -> &CStr {
        c"shredstore.messages.erased-epochs.factory"
    }
}

/// Filter for one compaction run, over a fixed snapshot and time.
pub(crate) struct MessagesFilter {
    snapshot: Arc<Snapshot>,
    now_ms: u64,
    /// Retention may remove (all policies were loaded when it was created).
    retention: bool,
    default_ms: Option<u64>,
    default_horizon: u64,
}

impl MessagesFilter {
    fn decide(&self, key: &[u8], value: &[u8]) -> CompactionDecision {
        if key.len() != MESSAGE_KEY_LEN {
            return CompactionDecision::Keep;
        }
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&key[..Handle::LEN]);
        let handle = Handle(h);
        let Ok(header) = EnvelopeHeader::parse(value) else {
            return CompactionDecision::Keep;
        };
        if self
            .snapshot
            .erased
            .get(&handle)
            .is_some_and(|&e| header.epoch <= e)
        {
            return CompactionDecision::Remove;
        }
        if !self.retention {
            return CompactionDecision::Keep;
        }
        let horizon = match self.snapshot.policies.get(&handle) {
            Some(p) => p.horizon(self.now_ms, self.default_ms),
            None => self.default_horizon,
        };
        // Expiry trusts the timestamp only if the CRC vouches for it: a
        // damaged record is kept (and reported as corrupt when read).
        if header.timestamp_ms < horizon && Envelope::decode(value).is_ok() {
            CompactionDecision::Remove
        } else {
            CompactionDecision::Keep
        }
    }
}

impl CompactionFilter for MessagesFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        catch_unwind(AssertUnwindSafe(|| self.decide(key, value)))
            .unwrap_or(CompactionDecision::Keep)
    }

    fn name(&self) -> &CStr {
        c"shredstore.messages.erased-epochs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Envelope, message_key};

    use crate::codec::{EnvelopeKind, LegalHold, Retention};
    use crate::types::Clock;

    struct At(u64);
    impl Clock for At {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

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

    fn context() -> CompactionFilterContext {
        CompactionFilterContext {
            is_full_compaction: true,
            is_manual_compaction: true,
        }
    }

    #[test]
    fn removes_expired_messages_by_default_and_per_user_policy() {
        let state = Arc::new(FilterState::new(Some(1_000)));
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
        let mut f = MessagesFilterFactory {
            state: Arc::clone(&state),
            clock: Arc::new(At(5_000)),
        };
        let mut filter = f.create(context());
        let remove = |d: CompactionDecision| matches!(d, CompactionDecision::Remove);
        // Default 1 s at t = 5 s: before 4 s is expired.
        assert!(remove(filter.filter(
            0,
            &message_key(&a, 1),
            &envelope_at(1, 3_999)
        )));
        assert!(!remove(filter.filter(
            0,
            &message_key(&a, 2),
            &envelope_at(1, 4_000)
        )));
        // Forever.
        assert!(!remove(filter.filter(
            0,
            &message_key(&b, 1),
            &envelope_at(1, 1)
        )));
        // On hold: only what had expired before the hold (the floor) goes.
        assert!(remove(filter.filter(
            0,
            &message_key(&c, 1),
            &envelope_at(1, 3_999)
        )));
        assert!(!remove(filter.filter(
            0,
            &message_key(&c, 2),
            &envelope_at(1, 4_500)
        )));
        // Back to the default: a fresh snapshot sees it.
        state.set_policy(b, None);
        let mut filter = f.create(context());
        assert!(remove(filter.filter(
            0,
            &message_key(&b, 1),
            &envelope_at(1, 1)
        )));
    }

    #[test]
    fn removes_only_erased_epochs_of_erased_handles() {
        let erased = Arc::new(FilterState::default());
        let a = Handle([1; 16]);
        let b = Handle([2; 16]);
        erased.insert(a, 2);
        let mut f = MessagesFilterFactory {
            state: Arc::clone(&erased),
            clock: Arc::new(At(1_000_000)),
        };
        let mut filter = f.create(context());
        let remove = |d: CompactionDecision| matches!(d, CompactionDecision::Remove);
        assert!(remove(filter.filter(0, &message_key(&a, 1), &envelope(1))));
        assert!(remove(filter.filter(0, &message_key(&a, 1), &envelope(2))));
        assert!(!remove(filter.filter(0, &message_key(&a, 1), &envelope(3))));
        assert!(!remove(filter.filter(0, &message_key(&b, 1), &envelope(1))));
        // Unsure means keep.
        assert!(!remove(filter.filter(0, b"short", &envelope(1))));
        assert!(!remove(filter.filter(0, &message_key(&a, 1), b"garbage")));
    }

    #[test]
    fn retention_removes_nothing_until_every_policy_is_loaded() {
        let state = Arc::new(FilterState::new(Some(1)));
        let a = Handle([1; 16]);
        state.insert(a, 1);
        let mut f = MessagesFilterFactory {
            state: Arc::clone(&state),
            clock: Arc::new(At(1_000_000)),
        };
        let remove = |d: CompactionDecision| matches!(d, CompactionDecision::Remove);
        let b = Handle([2; 16]);
        let mut early = f.create(context());
        // Erased epochs are known: removed. Expiry waits for `set_ready`.
        assert!(remove(early.filter(
            0,
            &message_key(&a, 1),
            &envelope_at(1, 5)
        )));
        assert!(!remove(early.filter(
            0,
            &message_key(&b, 1),
            &envelope_at(1, 5)
        )));
        state.set_ready();
        let mut late = f.create(context());
        assert!(remove(late.filter(
            0,
            &message_key(&b, 1),
            &envelope_at(1, 5)
        )));
        // A damaged record (CRC off) is never expired.
        let mut bad = envelope_at(1, 5);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(!remove(late.filter(0, &message_key(&b, 1), &bad)));
    }

    #[test]
    fn snapshot_is_immutable_and_refreshed_after_insert() {
        let erased = FilterState::default();
        let before = erased.snapshot();
        erased.insert(Handle([3; 16]), 1);
        assert!(before.erased.is_empty());
        assert_eq!(erased.snapshot().erased.get(&Handle([3; 16])), Some(&1));
        erased.insert(Handle([3; 16]), 0);
        assert_eq!(
            erased.snapshot().erased.get(&Handle([3; 16])),
            Some(&1),
            "epochs never go down"
        );
    }
}

//! The compaction filter on `messages`: drops envelopes whose (handle, epoch)
//! was erased.
//!
//! The factory hands each compaction an immutable snapshot of the erased
//! epochs; `erase` swaps in a new one. The filter answers `Remove` only on a
//! positive match and `Keep` whenever it is unsure (unparseable key or value,
//! unknown handle, or a panic, which `catch_unwind` turns into `Keep` instead of
//! unwinding across the FFI boundary).

use std::collections::HashMap;
use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::codec::{EnvelopeHeader, MESSAGE_KEY_LEN};
use crate::types::Handle;

/// Erased epochs per handle, plus a lazily rebuilt immutable snapshot.
#[derive(Default)]
pub(crate) struct ErasedEpochs {
    map: RwLock<HashMap<Handle, u32>>,
    snapshot: Mutex<Option<Arc<HashMap<Handle, u32>>>>,
}

impl ErasedEpochs {
    /// Records that every epoch <= `epoch` of `handle` is erased.
    pub(crate) fn insert(&self, handle: Handle, epoch: u32) {
        {
            let mut map = self.map.write();
            let e = map.entry(handle).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        // Invalidate; the next compaction rebuilds it. Keeps erase O(1).
        *self.snapshot.lock() = None;
    }

    /// Whether `epoch` of `handle` is erased.
    pub(crate) fn covers(&self, handle: &Handle, epoch: u32) -> bool {
        self.map.read().get(handle).is_some_and(|&e| e >= epoch)
    }

    /// The current immutable snapshot.
    pub(crate) fn snapshot(&self) -> Arc<HashMap<Handle, u32>> {
        let mut snap = self.snapshot.lock();
        if let Some(s) = snap.as_ref() {
            return Arc::clone(s);
        }
        let s = Arc::new(self.map.read().clone());
        *snap = Some(Arc::clone(&s));
        s
    }
}

/// Builds one [`MessagesFilter`] per compaction.
pub(crate) struct MessagesFilterFactory {
    pub(crate) erased: Arc<ErasedEpochs>,
}

impl CompactionFilterFactory for MessagesFilterFactory {
    type Filter = MessagesFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> Self::Filter {
        MessagesFilter {
            erased: self.erased.snapshot(),
        }
    }

    fn name(&self) -> &CStr {
        c"shredstore.messages.erased-epochs.factory"
    }
}

/// Filter for one compaction run, over a fixed snapshot.
pub(crate) struct MessagesFilter {
    erased: Arc<HashMap<Handle, u32>>,
}

impl MessagesFilter {
    fn decide(&self, key: &[u8], value: &[u8]) -> CompactionDecision {
        if key.len() != MESSAGE_KEY_LEN {
            return CompactionDecision::Keep;
        }
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&key[..Handle::LEN]);
        let Some(&erased_epoch) = self.erased.get(&Handle(h)) else {
            return CompactionDecision::Keep;
        };
        match EnvelopeHeader::parse(value) {
            Ok(header) if header.epoch <= erased_epoch => CompactionDecision::Remove,
            _ => CompactionDecision::Keep,
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

    fn envelope(epoch: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Envelope::encode_with(&mut out, epoch, 1, &[0; 12], b"x", |_| Ok([0; 16])).unwrap();
        out
    }

    #[test]
    fn removes_only_erased_epochs_of_erased_handles() {
        let erased = Arc::new(ErasedEpochs::default());
        let a = Handle([1; 16]);
        let b = Handle([2; 16]);
        erased.insert(a, 2);
        let mut f = MessagesFilterFactory {
            erased: Arc::clone(&erased),
        };
        let mut filter = f.create(CompactionFilterContext {
            is_full_compaction: true,
            is_manual_compaction: true,
        });
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
    fn snapshot_is_immutable_and_refreshed_after_insert() {
        let erased = ErasedEpochs::default();
        let before = erased.snapshot();
        erased.insert(Handle([3; 16]), 1);
        assert!(before.is_empty());
        assert_eq!(erased.snapshot().get(&Handle([3; 16])), Some(&1));
        erased.insert(Handle([3; 16]), 0);
        assert_eq!(
            erased.snapshot().get(&Handle([3; 16])),
            Some(&1),
            "epochs never go down"
        );
    }
}

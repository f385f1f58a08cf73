//! The RocksDB compaction filter on `messages`: a factory hands each
//! compaction a [`Judge`] (an immutable snapshot of pending erasures and
//! retention policies, and the time the compaction started). Its body runs
//! under `catch_unwind`: a panic across the FFI boundary would abort the
//! process, so a panic answers `Keep`.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use crate::store::filter_state::{Decision, FilterState, Judge};
use crate::types::Clock;

/// Builds one [`MessagesFilter`] per compaction.
pub(super) struct MessagesFilterFactory {
    pub(super) state: Arc<FilterState>,
    pub(super) clock: Arc<dyn Clock>,
}

impl CompactionFilterFactory for MessagesFilterFactory {
    type Filter = MessagesFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> Self::Filter {
        MessagesFilter(Judge::new(&self.state, self.clock.now_ms()))
    }

    fn name(&self) -> &CStr {
        c"shredstore.messages.erased-epochs.factory"
    }
}

/// Builds one [`ConvMessagesFilter`] per compaction of `conv_messages`.
pub(super) struct ConvMessagesFilterFactory {
    pub(super) state: Arc<FilterState>,
    pub(super) clock: Arc<dyn Clock>,
}

impl CompactionFilterFactory for ConvMessagesFilterFactory {
    type Filter = ConvMessagesFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> Self::Filter {
        ConvMessagesFilter(Judge::new(&self.state, self.clock.now_ms()))
    }

    fn name(&self) -> &CStr {
        c"shredstore.conv_messages.retention.factory"
    }
}

/// Filter for one compaction run of `conv_messages` (retention only).
pub(super) struct ConvMessagesFilter(Judge);

impl CompactionFilter for ConvMessagesFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        match catch_unwind(AssertUnwindSafe(|| self.0.decide_conv(key, value))) {
            Ok(Decision::Remove) => CompactionDecision::Remove,
            Ok(Decision::Keep) | Err(_) => CompactionDecision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        c"shredstore.conv_messages.retention"
    }
}

/// Filter for one compaction run.
pub(super) struct MessagesFilter(Judge);

impl CompactionFilter for MessagesFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> CompactionDecision {
        match catch_unwind(AssertUnwindSafe(|| self.0.decide(key, value))) {
            Ok(Decision::Remove) => CompactionDecision::Remove,
            Ok(Decision::Keep) | Err(_) => CompactionDecision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        c"shredstore.messages.erased-epochs"
    }
}

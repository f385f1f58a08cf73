//! The engine layer: the one place that knows RocksDB. The store's
//! operations call it through a narrow interface: column families by name
//! ([`Cf`]), point reads ([`Engine::get`]), atomic batches ([`Batch`],
//! [`Engine::write`]), range cursors ([`Cursor`]), flush and compaction, and
//! what the data directory's files hold ([`files`]). Nothing outside this
//! module names a RocksDB type, so a second engine (JetStream) can stand in
//! the same place.
//!
//! A failed write or WAL sync poisons the engine: later writes fail with
//! [`Error::Poisoned`] until the store is reopened.

pub(crate) mod files;
mod filter;
// Issue 15, part 1: the engine and its cluster tests. The store opens it in
// part 2 (`--engine jetstream`); until then only its tests call it.
#[cfg(feature = "jetstream")]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod jetstream;
#[cfg(test)]
mod real_files;
pub(crate) mod sst;
mod tuning;
pub(crate) mod wal;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::statistics::Ticker;
use rocksdb::{
    BottommostLevelCompaction, ColumnFamily, CompactOptions, DB, DBPinnableSlice, DBRawIterator,
    FlushOptions, ReadOptions, WriteBatch, WriteOptions,
};

pub use tuning::open_plain_baseline;
pub(crate) use tuning::{MAX_WRITE_BUFFERS, SMALL_CF_WRITE_BUFFER};

use super::filter_state::FilterState;
use super::layout;
use super::options::Options;
use crate::codec;
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// The column families of a store (see `docs/format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Cf {
    /// Format version, store salt, wrapped handle key.
    Meta,
    /// Key records by handle.
    Keys,
    /// Message envelopes by `handle || seq`.
    Messages,
    /// Erasure markers by handle.
    Erased,
    /// Idempotency index by `handle || keyed hash`.
    Dedup,
    /// Seq high-water marks by handle.
    SeqFloors,
    /// Audit trail by `time || counter`.
    Audit,
    /// Consent records by `handle || index`.
    Consent,
    /// Conversation key records by conversation handle.
    ConvKeys,
    /// Conversation slots by `conv handle || seq`.
    ConvMessages,
    /// Conversation deletion markers by conversation handle.
    ConvDeleted,
    /// The author index: `author handle || conv handle || seq` to the
    /// author's key epoch.
    Authors,
    /// The subjects index: `user handle || conv handle`.
    Subjects,
    /// The change feed by change number.
    Changes,
    /// Retention reported on the change feed, by handle.
    ExpiryMarks,
}

impl Cf {
    /// Every column family, in the order of [`layout::ALL_CFS`].
    pub(crate) const ALL: [Cf; 15] = [
        Cf::Meta,
        Cf::Keys,
        Cf::Messages,
        Cf::Erased,
        Cf::Dedup,
        Cf::SeqFloors,
        Cf::Audit,
        Cf::Consent,
        Cf::ConvKeys,
        Cf::ConvMessages,
        Cf::ConvDeleted,
        Cf::Authors,
        Cf::Subjects,
        Cf::Changes,
        Cf::ExpiryMarks,
    ];

    /// The column families whose keys start with a user's handle and hold
    /// that user's data (so an erasure must empty the user's range in each).
    /// `erased` is keyed by handle too, but holds the erasure marker, which
    /// outlives the data by design. The author index is keyed by the
    /// author's handle: an erased author's entries go at their purge.
    pub(crate) const USER_DATA: [Cf; 8] = [
        Cf::Messages,
        Cf::Keys,
        Cf::Dedup,
        Cf::SeqFloors,
        Cf::Consent,
        Cf::Authors,
        Cf::Subjects,
        Cf::ExpiryMarks,
    ];

    /// The column families whose keys start with a conversation's handle
    /// and hold its data (a deletion must empty its range in each).
    pub(crate) const CONVERSATION_DATA: [Cf; 4] =
        [Cf::ConvMessages, Cf::ConvKeys, Cf::Dedup, Cf::ExpiryMarks];

    /// The RocksDB name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Cf::Meta => layout::CF_META,
            Cf::Keys => layout::CF_KEYS,
            Cf::Messages => layout::CF_MESSAGES,
            Cf::Erased => layout::CF_ERASED,
            Cf::Dedup => layout::CF_DEDUP,
            Cf::SeqFloors => layout::CF_SEQ_FLOORS,
            Cf::Audit => layout::CF_AUDIT,
            Cf::Consent => layout::CF_CONSENT,
            Cf::ConvKeys => layout::CF_CONV_KEYS,
            Cf::ConvMessages => layout::CF_CONV_MESSAGES,
            Cf::ConvDeleted => layout::CF_CONV_DELETED,
            Cf::Authors => layout::CF_AUTHORS,
            Cf::Subjects => layout::CF_SUBJECTS,
            Cf::Changes => layout::CF_CHANGES,
            Cf::ExpiryMarks => layout::CF_EXPIRY_MARKS,
        }
    }

    /// The column family of a RocksDB name.
    pub(crate) fn from_name(name: &[u8]) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| cf.name().as_bytes() == name)
    }
}

/// A store's files opened read-only, without its keys (to count and
/// compare records of a backup: `shredstore backup inspect`).
pub(crate) struct ReadOnly {
    db: DB,
}

impl ReadOnly {
    /// Opens the store in `dir` read-only.
    pub(crate) fn open(dir: &Path) -> Result<ReadOnly> {
        let existing = DB::list_cf(&rocksdb::Options::default(), dir)?;
        if !existing.iter().any(|e| e == Cf::Meta.name()) {
            return Err(Error::Corrupt(Corruption::Meta));
        }
        let db = DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, &existing, false)?;
        Ok(ReadOnly { db })
    }

    /// The value under `key` (`None` also when the column family is absent:
    /// an older format).
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.db.cf_handle(cf.name()) {
            Some(h) => Ok(self.db.get_cf(h, key)?),
            None => Ok(None),
        }
    }

    /// Calls `f` with every key and value of `cf`, in key order.
    pub(crate) fn for_each(
        &self,
        cf: Cf,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(h) = self.db.cf_handle(cf.name()) else {
            return Ok(());
        };
        let mut it = self.db.raw_iterator_cf(h);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            f(k, v)?;
            it.next();
        }
        it.status()?;
        Ok(())
    }
}

/// An open RocksDB instance with the store's column families.
pub(crate) struct Engine {
    db: DB,
    db_opts: rocksdb::Options,
    dir: PathBuf,
    poisoned: AtomicBool,
    /// While set, WAL syncs fail (a test hook).
    fail_syncs: Option<Arc<AtomicBool>>,
    /// The files live in RocksDB's in-memory filesystem (a test hook): the
    /// data directory holds none of them.
    in_memory: bool,
    /// Write options of synced and of buffered writes, made once (RocksDB
    /// allocates each `WriteOptions`).
    write_synced: WriteOptions,
    write_buffered: WriteOptions,
}

/// A value read in place (no copy).
pub(crate) struct Pinned<'e>(DBPinnableSlice<'e>);

impl Deref for Pinned<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Which keys a [`Cursor`] visits.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// The whole column family.
    All,
    /// Keys starting with one handle.
    Handle(&'a Handle),
}

impl Engine {
    /// Opens (or creates) the RocksDB instance of a store, with the
    /// compaction filter reading `filter`.
    pub(crate) fn open(options: &Options, filter: &Arc<FilterState>) -> Result<Engine> {
        let (db, db_opts) = tuning::open_db(options, filter)?;
        Ok(Engine {
            db,
            db_opts,
            dir: options.data_dir.clone(),
            poisoned: AtomicBool::new(false),
            fail_syncs: options.hooks.fail_syncs.clone(),
            in_memory: options.hooks.memory_env.is_some(),
            write_synced: write_options(true),
            write_buffered: write_options(false),
        })
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(cf.name())
            .ok_or(Error::Corrupt(Corruption::Meta))
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value under `key`, if any.
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Pinned<'_>>> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.map(Pinned))
    }

    /// An empty batch.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            engine: self,
            wb: WriteBatch::default(),
        }
    }

    /// Fails with [`Error::Poisoned`] after a failed write or sync.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_poisoned() {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Whether a write or sync failed since open.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self, what: &str, e: &dyn std::fmt::Display) {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %e, "{what} failed; store poisoned until reopened");
    }

    /// Writes `batch` atomically (fsynced first if `sync`). A failure poisons
    /// the store.
    pub(crate) fn write(&self, batch: Batch<'_>, sync: bool) -> Result<()> {
        self.check_writable()?;
        let wo = if sync {
            &self.write_synced
        } else {
            &self.write_buffered
        };
        self.db.write_opt(batch.wb, wo).map_err(|e| {
            self.poison("write", &e);
            Error::Storage(e)
        })
    }

    /// Syncs the WAL to stable storage. A failure poisons the store.
    pub(crate) fn sync_wal(&self) -> Result<()> {
        self.check_writable()?;
        if self
            .fail_syncs
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            let e = std::io::Error::other("injected WAL sync failure");
            self.poison("WAL sync", &e);
            return Err(Error::Io(e));
        }
        // RocksDB's in-memory Env has no SyncWAL (nothing to sync there).
        self.db.flush_wal(!self.in_memory).map_err(|e| {
            self.poison("WAL sync", &e);
            Error::Storage(e)
        })
    }

    /// A cursor over `scope` of `cf`. It pins the files it reads while it
    /// lives: keep it short.
    pub(crate) fn cursor(&self, cf: Cf, scope: Scope<'_>) -> Result<Cursor<'_>> {
        let handle = self.cf(cf)?;
        let it = match scope {
            Scope::All => self.db.raw_iterator_cf(handle),
            Scope::Handle(h) => self.db.raw_iterator_cf_opt(handle, handle_read_options(h)),
        };
        Ok(Cursor(it))
    }

    /// Flushes every column family's memtable (so WAL files holding older
    /// writes become obsolete).
    pub(crate) fn flush_all(&self) -> Result<()> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        // Every column family: one left unflushed would pin the old WALs.
        let cfs = Cf::ALL
            .iter()
            .map(|cf| self.cf(*cf))
            .collect::<Result<Vec<_>>>()?;
        self.db.flush_cfs_opt(&cfs, &fo)?;
        // The default column family is unused but shares the WAL.
        self.db.flush_opt(&fo)?;
        Ok(())
    }

    /// Compacts `[start, end]` of `cf` (`None`: open-ended) down to the
    /// bottommost level, through the compaction filter, rewriting the
    /// bottommost files too. RocksDB reports no error here: a failed
    /// compaction shows in [`Engine::background_errors`].
    pub(crate) fn compact(&self, cf: Cf, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        let mut opts = CompactOptions::default();
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        opts.set_exclusive_manual_compaction(false);
        self.db
            .compact_range_cf_opt(self.cf(cf)?, start, end, &opts);
        Ok(())
    }

    /// Writes a consistent copy of the store into `dir` (which must not
    /// exist; on the same filesystem its SST files are hard links): a
    /// RocksDB checkpoint, taken after a flush of the memtables, while
    /// writes go on.
    pub(crate) fn checkpoint(&self, dir: &Path) -> Result<()> {
        if self.in_memory {
            return Err(Error::Backup(crate::error::BackupError::InMemory));
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// RocksDB's count of background errors (failed flushes, compactions).
    pub(crate) fn background_errors(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value("rocksdb.background-errors")?
            .unwrap_or(0))
    }

    /// The position of the last write in the engine's log (RocksDB's latest
    /// sequence number): every write acknowledged before this call is at or
    /// below it.
    pub(crate) fn write_position(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// RocksDB's estimate of the keys in `cf`.
    pub(crate) fn estimate_keys(&self, cf: Cf) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(cf)?, "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// Records the compaction filter removed since open.
    pub(crate) fn filter_drops(&self) -> u64 {
        self.db_opts.get_ticker_count(Ticker::CompactionKeyDropUser)
    }

    /// The SST files RocksDB currently uses, with their key ranges.
    pub(crate) fn live_files(&self) -> Result<Vec<files::LiveSst>> {
        Ok(self
            .db
            .live_files()?
            .into_iter()
            .filter_map(|f| {
                Some(files::LiveSst {
                    cf: Cf::from_name(f.column_family_name.as_bytes()),
                    number: files::file_number(f.name.trim_start_matches('/'), ".sst")?,
                    smallest: f.start_key.unwrap_or_default(),
                    largest: f.end_key.unwrap_or_default(),
                })
            })
            .collect())
    }
}

/// Write options that fsync the WAL first, or not.
fn write_options(sync: bool) -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    wo
}

/// Read options confined to one handle's key range.
fn handle_read_options(handle: &Handle) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_prefix_same_as_start(true);
    ro.set_iterate_lower_bound(handle.as_bytes().to_vec());
    match codec::handle_upper_bound(handle) {
        Some(ub) => ro.set_iterate_upper_bound(ub.to_vec()),
        None => ro.set_total_order_seek(true),
    }
    ro
}

/// Writes collected for one atomic [`Engine::write`].
pub(crate) struct Batch<'e> {
    engine: &'e Engine,
    wb: WriteBatch,
}

impl Batch<'_> {
    /// Sets `key` to `value`.
    pub(crate) fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
        self.wb.put_cf(self.engine.cf(cf)?, key, value);
        Ok(())
    }

    /// Deletes `key`.
    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        self.wb.delete_cf(self.engine.cf(cf)?, key);
        Ok(())
    }

    /// Deletes every key that starts with `handle` (keys are at most 40
    /// bytes long).
    pub(crate) fn delete_handle_range(&mut self, cf: Cf, handle: &Handle) -> Result<()> {
        const LAST: [u8; 40] = [0xff; 40];
        let family = self.engine.cf(cf)?;
        match codec::handle_upper_bound(handle) {
            Some(ub) => {
                self.wb
                    .delete_range_cf(family, handle.as_bytes().as_slice(), ub.as_slice())
            }
            // The all-0xff handle: the range ends at the largest possible
            // key, which delete_range excludes, so delete that one too.
            None => {
                self.wb
                    .delete_range_cf(family, handle.as_bytes().as_slice(), LAST.as_slice());
                self.wb.delete_cf(family, LAST);
            }
        }
        Ok(())
    }
}

impl Batch<'_> {
    /// Deletes the keys in `[start, end)`.
    pub(crate) fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        self.wb.delete_range_cf(self.engine.cf(cf)?, start, end);
        Ok(())
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}

/// A positioned cursor over one column family (RocksDB raw iterator).
pub(crate) struct Cursor<'e>(DBRawIterator<'e>);

impl Cursor<'_> {
    /// Moves to the first key `>= key`.
    pub(crate) fn seek(&mut self, key: &[u8]) {
        self.0.seek(key);
    }

    /// Moves to the last key `<= key`.
    pub(crate) fn seek_for_prev(&mut self, key: &[u8]) {
        self.0.seek_for_prev(key);
    }

    /// Moves to the first key.
    pub(crate) fn seek_to_first(&mut self) {
        self.0.seek_to_first();
    }

    /// Moves to the next key.
    pub(crate) fn next(&mut self) {
        self.0.next();
    }

    /// Moves to the previous key.
    pub(crate) fn prev(&mut self) {
        self.0.prev();
    }

    /// The current key and value, `None` past the end (or on error: see
    /// [`Cursor::status`]).
    pub(crate) fn item(&self) -> Option<(&[u8], &[u8])> {
        self.0.item()
    }

    /// The current key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }

    /// The current value.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        self.0.value()
    }

    /// The error that ended the iteration, if one did.
    pub(crate) fn status(&self) -> Result<()> {
        Ok(self.0.status()?)
    }
}

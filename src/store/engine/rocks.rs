//! The RocksDB engine: the store's column families in one local RocksDB
//! instance (the default engine).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::statistics::Ticker;
use rocksdb::{
    BottommostLevelCompaction, ColumnFamily, CompactOptions, DB, DBPinnableSlice, DBRawIterator,
    FlushOptions, ReadOptions, WriteBatch, WriteOptions,
};

use super::{Cf, Scope, files, tuning};
use crate::codec;
use crate::error::{Corruption, Error, Result};
use crate::store::filter_state::FilterState;
use crate::store::options::Options;
use crate::types::Handle;

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
pub(crate) struct Rocks {
    db: DB,
    db_opts: rocksdb::Options,
    pub(super) dir: PathBuf,
    poisoned: AtomicBool,
    /// While set, WAL syncs fail (a test hook).
    fail_syncs: Option<Arc<AtomicBool>>,
    /// The files live in RocksDB's in-memory filesystem (a test hook): the
    /// data directory holds none of them.
    pub(super) in_memory: bool,
    /// Write options of synced and of buffered writes, made once (RocksDB
    /// allocates each `WriteOptions`).
    write_synced: WriteOptions,
    write_buffered: WriteOptions,
}

impl Rocks {
    /// Opens (or creates) the RocksDB instance of a store, with the
    /// compaction filter reading `filter`.
    pub(crate) fn open(options: &Options, filter: &Arc<FilterState>) -> Result<Rocks> {
        let (db, db_opts) = tuning::open_db(options, filter)?;
        Ok(Rocks {
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
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<DBPinnableSlice<'_>>> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?)
    }

    /// An empty batch.
    pub(crate) fn batch(&self) -> RocksBatch<'_> {
        RocksBatch {
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
    pub(crate) fn write(&self, batch: RocksBatch<'_>, sync: bool) -> Result<()> {
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
    pub(crate) fn cursor(&self, cf: Cf, scope: Scope<'_>) -> Result<DBRawIterator<'_>> {
        let handle = self.cf(cf)?;
        let it = match scope {
            Scope::All => self.db.raw_iterator_cf(handle),
            Scope::Handle(h) => self.db.raw_iterator_cf_opt(handle, handle_read_options(h)),
        };
        Ok(it)
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
    /// compaction shows in [`Rocks::background_errors`].
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

/// Writes collected for one atomic [`Rocks::write`].
pub(crate) struct RocksBatch<'e> {
    engine: &'e Rocks,
    wb: WriteBatch,
}

impl RocksBatch<'_> {
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

impl RocksBatch<'_> {
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

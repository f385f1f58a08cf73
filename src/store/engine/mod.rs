//! The engine layer: the one place that knows where records live. The
//! store's operations call it through a narrow interface: column families
//! by name ([`Cf`]), point reads ([`Engine::get`]), atomic batches
//! ([`Batch`], [`Engine::write`]), ordered cursors ([`Cursor`]), flush and
//! compaction, and what the data directory's files hold ([`files`]).
//!
//! Two engines stand behind it: the embedded RocksDB ([`rocks`], the
//! default) and a NATS JetStream cluster ([`jetstream`], feature
//! `jetstream`). What only RocksDB has (compaction, files, checkpoints)
//! fails on JetStream with [`Error::Unsupported`] naming the engine, never
//! silently.
//!
//! A failed write or WAL sync poisons the RocksDB engine: later writes fail
//! with [`Error::Poisoned`] until the store is reopened.

pub(crate) mod files;
mod filter;
#[cfg(feature = "jetstream")]
pub(crate) mod jetstream;
#[cfg(test)]
mod real_files;
mod rocks;
pub(crate) mod sst;
mod tuning;
pub(crate) mod wal;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{DBPinnableSlice, DBRawIterator};

#[cfg(feature = "jetstream")]
use self::jetstream::{JetStreamEngine, JsBatch, JsCursor};
pub(crate) use self::rocks::ReadOnly;
use self::rocks::{Rocks, RocksBatch};
pub use tuning::open_plain_baseline;
pub(crate) use tuning::{MAX_WRITE_BUFFERS, SMALL_CF_WRITE_BUFFER};

use super::filter_state::FilterState;
use super::layout;
use super::options::Options;
#[cfg(feature = "jetstream")]
use crate::error::Error;
use crate::error::Result;
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

/// Which keys a [`Cursor`] visits.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// The whole column family.
    All,
    /// Keys starting with one handle.
    Handle(&'a Handle),
}

/// The store's records: in the embedded RocksDB, or in a JetStream cluster.
pub(crate) enum Engine {
    Rocks(Rocks),
    #[cfg(feature = "jetstream")]
    JetStream(JetStreamEngine),
}

/// A value read: in place (RocksDB) or copied (JetStream).
pub(crate) enum Pinned<'e> {
    Rocks(DBPinnableSlice<'e>),
    #[cfg(feature = "jetstream")]
    Owned(Vec<u8>),
}

impl Deref for Pinned<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pinned::Rocks(p) => p,
            #[cfg(feature = "jetstream")]
            Pinned::Owned(v) => v,
        }
    }
}

/// The engine names errors and the engine table use.
pub(crate) const ROCKSDB: &str = "rocksdb";
#[cfg(feature = "jetstream")]
pub(crate) const JETSTREAM: &str = "jetstream";

impl Engine {
    /// Opens the engine `options` name: the RocksDB instance in the data
    /// directory (with the compaction filter reading `filter`), or a
    /// connection to the JetStream cluster.
    pub(crate) fn open(options: &Options, filter: &Arc<FilterState>) -> Result<Engine> {
        #[cfg(feature = "jetstream")]
        if let Some(js) = &options.jetstream {
            // A store batch puts a user's records together with the audit
            // trail and the change feed, which live in partition 0: one
            // atomic batch cannot span partitions yet.
            if js.partitions != 1 {
                return Err(Error::EngineConfig(
                    "the store runs on one JetStream partition for now (--partitions 1)".into(),
                ));
            }
            return Ok(Engine::JetStream(JetStreamEngine::connect(js)?));
        }
        Ok(Engine::Rocks(Rocks::open(options, filter)?))
    }

    /// The engine's name (`rocksdb`, `jetstream`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Engine::Rocks(_) => ROCKSDB,
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => JETSTREAM,
        }
    }

    /// The RocksDB engine, or [`Error::Unsupported`] naming `operation`.
    #[cfg_attr(not(feature = "jetstream"), allow(unused_variables))]
    pub(crate) fn rocks(&self, operation: &'static str) -> Result<&Rocks> {
        match self {
            Engine::Rocks(r) => Ok(r),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Err(Error::Unsupported {
                engine: JETSTREAM,
                operation,
            }),
        }
    }

    /// The JetStream engine, if this is one.
    #[cfg(feature = "jetstream")]
    pub(crate) fn jetstream(&self) -> Option<&JetStreamEngine> {
        match self {
            Engine::JetStream(j) => Some(j),
            Engine::Rocks(_) => None,
        }
    }

    /// The data directory (`None` on JetStream: the front end keeps none).
    pub(crate) fn dir(&self) -> Option<&Path> {
        match self {
            Engine::Rocks(r) => Some(r.dir()),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => None,
        }
    }

    /// The value under `key`, if any.
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Pinned<'_>>> {
        match self {
            Engine::Rocks(r) => Ok(r.get(cf, key)?.map(Pinned::Rocks)),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => Ok(j.get(cf, key)?.map(Pinned::Owned)),
        }
    }

    /// Whether the record under `key` is as this front end last read it
    /// (always on RocksDB, which no other process writes; on JetStream
    /// another front end may have).
    #[cfg_attr(not(feature = "jetstream"), allow(unused_variables))]
    pub(crate) fn is_unchanged(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        match self {
            Engine::Rocks(_) => Ok(true),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => j.is_unchanged(cf, key),
        }
    }

    /// An empty batch.
    pub(crate) fn batch(&self) -> Batch<'_> {
        match self {
            Engine::Rocks(r) => Batch::Rocks(r.batch()),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => Batch::JetStream(j.batch(), j),
        }
    }

    /// Fails with [`Error::Poisoned`] after a failed write or sync.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match self {
            Engine::Rocks(r) => r.check_writable(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Ok(()),
        }
    }

    /// Whether a write or sync failed since open (never on JetStream: a
    /// failed request poisons nothing there).
    pub(crate) fn is_poisoned(&self) -> bool {
        match self {
            Engine::Rocks(r) => r.is_poisoned(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => false,
        }
    }

    /// Writes `batch` atomically (fsynced first if `sync`; JetStream
    /// acknowledges only what its servers stored and synced). A RocksDB
    /// failure poisons the store; on JetStream a lost race is
    /// [`Error::Conflict`] with nothing written.
    pub(crate) fn write(&self, batch: Batch<'_>, sync: bool) -> Result<()> {
        match (self, batch) {
            (Engine::Rocks(r), Batch::Rocks(b)) => r.write(b, sync),
            #[cfg(feature = "jetstream")]
            (Engine::JetStream(j), Batch::JetStream(b, _)) => j.write(b, sync),
            #[cfg(feature = "jetstream")]
            _ => Err(Error::EngineConfig("a batch of another engine".into())),
        }
    }

    /// Syncs the WAL to stable storage (nothing to do on JetStream: every
    /// acknowledged write is already synced). A failure poisons the store.
    pub(crate) fn sync_wal(&self) -> Result<()> {
        match self {
            Engine::Rocks(r) => r.sync_wal(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Ok(()),
        }
    }

    /// A cursor over `scope` of `cf`. Keep it short: on RocksDB it pins the
    /// files it reads; on JetStream it lists the keys when made.
    pub(crate) fn cursor(&self, cf: Cf, scope: Scope<'_>) -> Result<Cursor<'_>> {
        match self {
            Engine::Rocks(r) => Ok(Cursor::Rocks(r.cursor(cf, scope)?)),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => Ok(Cursor::JetStream(j.cursor(cf, scope)?)),
        }
    }

    /// Flushes every memtable (nothing to flush on JetStream).
    pub(crate) fn flush_all(&self) -> Result<()> {
        match self {
            Engine::Rocks(r) => r.flush_all(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Ok(()),
        }
    }

    /// Compacts `[start, end]` of `cf` through the compaction filter
    /// (RocksDB only).
    pub(crate) fn compact(&self, cf: Cf, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        self.rocks("a compaction")?.compact(cf, start, end)
    }

    /// Writes a consistent copy of the store into `dir` (RocksDB only).
    pub(crate) fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.rocks("a backup")?.checkpoint(dir)
    }

    /// RocksDB's count of background errors (none on JetStream).
    pub(crate) fn background_errors(&self) -> Result<u64> {
        match self {
            Engine::Rocks(r) => r.background_errors(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Ok(0),
        }
    }

    /// The position of the last write in the engine's log (RocksDB's latest
    /// sequence number; on JetStream the highest last sequence of the
    /// partition streams): every write acknowledged before this call is at
    /// or below it.
    pub(crate) fn write_position(&self) -> Result<u64> {
        match self {
            Engine::Rocks(r) => Ok(r.write_position()),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => j.write_position(),
        }
    }

    /// An estimate of the keys in `cf` (counted on JetStream).
    pub(crate) fn estimate_keys(&self, cf: Cf) -> Result<u64> {
        match self {
            Engine::Rocks(r) => r.estimate_keys(cf),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(j) => j.count_keys(cf),
        }
    }

    /// Records the compaction filter removed since open (none on JetStream).
    pub(crate) fn filter_drops(&self) -> u64 {
        match self {
            Engine::Rocks(r) => r.filter_drops(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => 0,
        }
    }

    /// Bytes of every file in the data directory (0 on JetStream: the
    /// front end keeps no files).
    pub(crate) fn bytes_on_disk(&self) -> Result<u64> {
        match self {
            Engine::Rocks(r) => r.bytes_on_disk(),
            #[cfg(feature = "jetstream")]
            Engine::JetStream(_) => Ok(0),
        }
    }

    /// The SST files RocksDB uses (RocksDB only).
    pub(crate) fn live_files(&self) -> Result<Vec<files::LiveSst>> {
        self.rocks("a file-level check")?.live_files()
    }

    /// Numbers of the SST files in the data directory (RocksDB only).
    pub(crate) fn sst_files_on_disk(&self) -> Result<Vec<u64>> {
        self.rocks("a file-level check")?.sst_files_on_disk()
    }

    /// Numbers of the WAL files in the data directory (RocksDB only).
    pub(crate) fn wal_numbers(&self) -> Result<Vec<u64>> {
        self.rocks("a file-level check")?.wal_numbers()
    }

    /// The WAL files with their first positions (RocksDB only).
    pub(crate) fn wal_files(&self) -> Result<Vec<files::WalFile>> {
        self.rocks("a file-level check")?.wal_files()
    }

    /// Reads every stored version of the records of `handles` in the SST
    /// files `numbers` (RocksDB only; see [`Rocks::scan_ssts`]).
    pub(crate) fn scan_ssts(
        &self,
        numbers: &[(u64, Option<Cf>)],
        handles: Option<&std::collections::HashSet<Handle>>,
        found: impl FnMut(&Handle, files::FileRecord<'_>),
    ) -> Result<files::ScanReport> {
        self.rocks("a file-level check")?
            .scan_ssts(numbers, handles, found)
    }
}

/// Writes collected for one atomic [`Engine::write`].
pub(crate) enum Batch<'e> {
    Rocks(RocksBatch<'e>),
    #[cfg(feature = "jetstream")]
    JetStream(JsBatch, &'e JetStreamEngine),
}

impl Batch<'_> {
    /// Sets `key` to `value`.
    pub(crate) fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Batch::Rocks(b) => b.put(cf, key, value),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, _) => b.put(cf, key, value),
        }
    }

    /// Deletes `key`.
    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        match self {
            Batch::Rocks(b) => b.delete(cf, key),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, _) => b.delete(cf, key),
        }
    }

    /// Makes the write conditional on `key` being as the engine last read
    /// it (JetStream: another front end may write it meanwhile; RocksDB:
    /// nothing to do, the store's locks serialize its writers).
    #[cfg_attr(not(feature = "jetstream"), allow(unused_variables))]
    pub(crate) fn expect(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        match self {
            Batch::Rocks(_) => Ok(()),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, _) => b.expect(cf, key),
        }
    }

    /// Deletes every key that starts with `handle` (on JetStream: every key
    /// listed under it now).
    pub(crate) fn delete_handle_range(&mut self, cf: Cf, handle: &Handle) -> Result<()> {
        match self {
            Batch::Rocks(b) => b.delete_handle_range(cf, handle),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, j) => {
                for key in j.list_keys(cf, Scope::Handle(handle))? {
                    b.delete(cf, &key)?;
                }
                Ok(())
            }
        }
    }

    /// Deletes the keys in `[start, end)` (on JetStream: the keys listed in
    /// it now, of the handle `start` begins with).
    pub(crate) fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        match self {
            Batch::Rocks(b) => b.delete_range(cf, start, end),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, j) => {
                let prefix = start.get(..Handle::LEN).and_then(|p| p.try_into().ok());
                let handle = Handle(prefix.ok_or_else(|| {
                    Error::JetStream("a ranged delete shorter than a handle".into())
                })?);
                for key in j.list_keys(cf, Scope::Handle(&handle))? {
                    if key.as_slice() >= start && key.as_slice() < end {
                        b.delete(cf, &key)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Batch::Rocks(b) => b.is_empty(),
            #[cfg(feature = "jetstream")]
            Batch::JetStream(b, _) => b.is_empty(),
        }
    }
}

/// A positioned cursor over one column family.
pub(crate) enum Cursor<'e> {
    Rocks(DBRawIterator<'e>),
    #[cfg(feature = "jetstream")]
    JetStream(JsCursor<'e>),
}

/// One method of [`Cursor`] on either engine.
macro_rules! on_cursor {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Cursor::Rocks($c) => $e,
            #[cfg(feature = "jetstream")]
            Cursor::JetStream($c) => $e,
        }
    };
}

impl Cursor<'_> {
    /// Moves to the first key `>= key`.
    pub(crate) fn seek(&mut self, key: &[u8]) {
        on_cursor!(self, c => c.seek(key))
    }

    /// Moves to the last key `<= key`.
    pub(crate) fn seek_for_prev(&mut self, key: &[u8]) {
        on_cursor!(self, c => c.seek_for_prev(key))
    }

    /// Moves to the first key.
    pub(crate) fn seek_to_first(&mut self) {
        on_cursor!(self, c => c.seek_to_first())
    }

    /// Moves to the next key.
    pub(crate) fn next(&mut self) {
        on_cursor!(self, c => c.next())
    }

    /// Moves to the previous key.
    pub(crate) fn prev(&mut self) {
        on_cursor!(self, c => c.prev())
    }

    /// The current key and value, `None` past the end (or on error: see
    /// [`Cursor::status`]).
    pub(crate) fn item(&self) -> Option<(&[u8], &[u8])> {
        on_cursor!(self, c => c.item())
    }

    /// The current key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        on_cursor!(self, c => c.key())
    }

    /// The current value.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        on_cursor!(self, c => c.value())
    }

    /// The error that ended the iteration, if one did.
    pub(crate) fn status(&self) -> Result<()> {
        match self {
            Cursor::Rocks(c) => Ok(c.status()?),
            #[cfg(feature = "jetstream")]
            Cursor::JetStream(c) => c.status(),
        }
    }
}

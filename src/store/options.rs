//! Options for [`Store::open`](crate::Store::open).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::{OsRandom, RootKey, SecureRandom};
use crate::error::{InvalidArgument, Result};
use crate::types::{Clock, SystemClock};

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append is fsynced before it is acknowledged (the default). An
    /// acknowledged append survives power loss.
    #[default]
    Sync,
    /// Appends are written to the WAL but not fsynced: they survive a process
    /// crash, not necessarily a power loss. Erasures are always synced. After
    /// a power loss, the seqs of lost unsynced appends may be handed out again.
    Buffered,
}

/// Settings of a store. The root key has no default: it must come from outside
/// the data directory.
///
/// ```no_run
/// # fn main() -> Result<(), shredstore::Error> {
/// use shredstore::{Durability, Options, RootKey, Store};
/// let store = Store::open(
///     Options::new("./data", RootKey::from_file("./root.key")?)
///         .durability(Durability::Buffered)
///         .max_payload(16 * 1024),
/// )?;
/// # Ok(()) }
/// ```
pub struct Options {
    pub(crate) data_dir: PathBuf,
    pub(crate) root_key: RootKey,
    pub(crate) previous_root_key: Option<RootKey>,
    /// A rotation that starts at this open goes to this generation (not
    /// the next one) if the root key's check value is this: a backup
    /// rekeyed to the live store's key takes its generation too.
    pub(crate) rotation_target: Option<(u32, [u8; 16])>,
    pub(crate) rotation_batch: usize,
    pub(crate) rotation_pause: Duration,
    pub(crate) durability: Durability,
    pub(crate) max_payload: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_read_limit: usize,
    pub(crate) key_cache_entries: usize,
    pub(crate) block_cache_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    pub(crate) purge_interval: Option<Duration>,
    pub(crate) erasure_due: Duration,
    pub(crate) ledger_interval: Option<Duration>,
    pub(crate) periodic_compaction: Duration,
    pub(crate) erase_delete_range: bool,
    pub(crate) retention: Option<Duration>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Arc<dyn SecureRandom>,
    pub(crate) hooks: TestHooks,
    /// Keep the records in this JetStream cluster instead of RocksDB.
    #[cfg(feature = "jetstream")]
    pub(crate) jetstream: Option<super::JetStreamOptions>,
}

/// Sabotage for tests that prove a check can fail: never set outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Open without the compaction filter: purges then cannot remove
    /// erased records (the file-level checks must notice).
    pub disable_erasure_filter: bool,
    /// While the flag is set, WAL syncs fail (and poison the store).
    pub fail_syncs: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Keep every file in this in-memory filesystem instead of the data
    /// directory (the model fuzzer: no disk, no fsync). Reopening with the
    /// same `MemoryEnv` finds the store again. The file-level erasure
    /// checks see no files there.
    pub memory_env: Option<MemoryEnv>,
    /// SST target file size of `messages` (RocksDB's default is 64 MiB):
    /// small files give a small store the many-file layout of a large one
    /// (the purge benchmark).
    pub target_file_size: Option<u64>,
    /// While the flag is set, a purge stops with an I/O error right after
    /// its conversation writes (tombstones), before anything is compacted
    /// or checked: an interrupted purge, which the next one must finish.
    pub interrupt_purge: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// RocksDB's in-memory filesystem, shared by the stores opened with it.
#[doc(hidden)]
#[derive(Clone)]
pub struct MemoryEnv(pub(crate) rocksdb::Env);

impl MemoryEnv {
    /// A new, empty in-memory filesystem.
    ///
    /// # Errors
    /// If RocksDB cannot create it.
    pub fn new() -> crate::Result<Self> {
        Ok(MemoryEnv(rocksdb::Env::mem_env()?))
    }
}

impl std::fmt::Debug for MemoryEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryEnv")
    }
}

/// The largest append batch on JetStream: each message of a batch is up to
/// three records (message, idempotency entry, change), and one atomic
/// JetStream batch holds at most 1000.
#[cfg(feature = "jetstream")]
pub const JETSTREAM_MAX_BATCH: usize = 250;

/// Default maximum payload size: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

impl Options {
    /// Options for a store in `data_dir`, sealed under `root_key`, with
    /// defaults for everything else.
    pub fn new(data_dir: impl AsRef<Path>, root_key: RootKey) -> Self {
        Options {
            data_dir: data_dir.as_ref().to_path_buf(),
            root_key,
            previous_root_key: None,
            rotation_target: None,
            rotation_batch: 256,
            rotation_pause: Duration::from_millis(5),
            durability: Durability::Sync,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_batch: 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_read_limit: 10_000,
            key_cache_entries: 65_536,
            block_cache_bytes: 64 * 1024 * 1024,
            write_buffer_bytes: 64 * 1024 * 1024,
            purge_interval: Some(Duration::from_secs(60)),
            erasure_due: Duration::from_secs(30 * 24 * 3600),
            ledger_interval: Some(Duration::from_secs(1)),
            periodic_compaction: Duration::from_secs(7 * 24 * 3600),
            erase_delete_range: false,
            retention: None,
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRandom),
            hooks: TestHooks::default(),
            #[cfg(feature = "jetstream")]
            jetstream: None,
        }
    }

    /// Durability of appends (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Largest payload accepted, in bytes (default 64 KiB).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Most payloads in one `append_batch` (default 1024).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Most payload bytes in one `append_batch` (default 16 MiB).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Largest `limit` accepted by `read` (default 10,000).
    pub fn max_read_limit(mut self, n: usize) -> Self {
        self.max_read_limit = n;
        self
    }

    /// Users whose derived ciphers are cached (default 65,536).
    pub fn key_cache_entries(mut self, n: usize) -> Self {
        self.key_cache_entries = n;
        self
    }

    /// RocksDB block cache size (default 64 MiB).
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Memtable size of the `messages` and `conv_messages` column families
    /// (default 64 MiB each).
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.write_buffer_bytes = bytes;
        self
    }

    /// How often, at most, the background purger makes pending erasures
    /// physical (default 60 s). `None` disables the background purger; call
    /// [`Store::purge`](crate::Store::purge) yourself.
    pub fn purge_interval(mut self, interval: Option<Duration>) -> Self {
        self.purge_interval = interval;
        self
    }

    /// How long after its receipt an erasure request is due (default 30
    /// days, the month of GDPR Art. 12(3)): its grace may not end later,
    /// and it counts as overdue once this has passed and it is not done.
    pub fn erasure_due(mut self, period: Duration) -> Self {
        self.erasure_due = period;
        self
    }

    /// How often the ledger runner looks for erasure requests whose grace
    /// has ended, and for parked ones whose hold is gone (default 1 s; a
    /// new request wakes it). `None` disables it; call
    /// [`Store::run_erasure_requests`](crate::Store::run_erasure_requests)
    /// yourself.
    pub fn ledger_interval(mut self, interval: Option<Duration>) -> Self {
        self.ledger_interval = interval;
        self
    }

    /// RocksDB `periodic_compaction_seconds` of `messages`: every SST file is
    /// rewritten (and filtered) at least this often (default 7 days).
    pub fn periodic_compaction(mut self, every: Duration) -> Self {
        self.periodic_compaction = every;
        self
    }

    /// The root key this store was sealed under before `root_key`: opening
    /// a store whose key records are wrapped under it starts (or resumes) a
    /// root-key rotation to `root_key`. The store serves at once; a
    /// background thread rewraps every key record under the new key, and
    /// once it is done the previous key opens nothing (see
    /// [`Store::rotation`](crate::Store::rotation)). Ignored, with a
    /// warning, by a store that needs only `root_key`.
    pub fn previous_root_key(mut self, key: RootKey) -> Self {
        self.previous_root_key = Some(key);
        self
    }

    /// Key records rewrapped per batch of a root-key rotation (default
    /// 256), and the pause between two batches (default 5 ms): a batch
    /// holds the locks of the users it rewraps for one unsynced write.
    pub fn rotation_pace(mut self, batch: usize, pause: Duration) -> Self {
        self.rotation_batch = batch;
        self.rotation_pause = pause;
        self
    }

    /// Also `delete_range` a user's messages inside the erase batch (default
    /// off: the compaction filter removes them, and reads skip them already).
    pub fn erase_delete_range(mut self, on: bool) -> Self {
        self.erase_delete_range = on;
        self
    }

    /// The store-wide retention period (default: none, keep until erased).
    /// Messages older than it are hidden from reads at once and dropped by
    /// the compaction filter at the next compaction of their file, which
    /// [`Options::periodic_compaction`] bounds. A user's own setting
    /// ([`Store::set_retention_as`](crate::Store::set_retention_as)) or a
    /// legal hold overrides it.
    pub fn retention(mut self, period: Option<Duration>) -> Self {
        self.retention = period;
        self
    }

    /// The clock that stamps messages and erasures (default: system time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The randomness source for secrets and nonces (default: the OS CSPRNG).
    pub fn rng(mut self, rng: Arc<dyn SecureRandom>) -> Self {
        self.rng = rng;
        self
    }

    /// Keep every record in a NATS JetStream cluster instead of the
    /// embedded RocksDB: the store becomes a stateless front end (the data
    /// directory is not used). Several front ends may serve one cluster.
    /// Batches are bounded by JetStream's atomic batch: `max_batch` is
    /// lowered to [`JETSTREAM_MAX_BATCH`] if it is above.
    #[cfg(feature = "jetstream")]
    pub fn jetstream(mut self, cluster: super::JetStreamOptions) -> Self {
        self.jetstream = Some(cluster);
        self.max_batch = self.max_batch.min(JETSTREAM_MAX_BATCH);
        self
    }

    /// Test-only sabotage ([`TestHooks`]).
    #[doc(hidden)]
    pub fn test_hooks(mut self, hooks: TestHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// What this configuration lets the store hold in memory at most, by
    /// design: the block cache (which also holds index and filter blocks),
    /// every column family's memtables, and the key cache. RocksDB's own
    /// bookkeeping, the allocator and in-flight requests come on top.
    pub fn memory_budget(&self) -> MemoryBudget {
        // `messages` and `conv_messages` have the large memtables.
        let messages = self
            .write_buffer_bytes
            .saturating_mul(super::engine::MAX_WRITE_BUFFERS)
            .saturating_mul(2);
        let small = super::engine::SMALL_CF_WRITE_BUFFER
            .saturating_mul(super::engine::MAX_WRITE_BUFFERS)
            .saturating_mul(super::layout::ALL_CFS.len() - 2);
        MemoryBudget {
            block_cache: self.block_cache_bytes,
            memtables: messages.saturating_add(small),
            // Users and conversations each have a cache of this many
            // entries; the pair cache has a fixed bound.
            key_cache: self
                .key_cache_entries
                .saturating_mul(
                    super::users::key_cache_entry_bytes()
                        + super::conversations::conversation_cache_entry_bytes(),
                )
                .saturating_add(
                    super::conversations::PAIR_CACHE_ENTRIES
                        * super::conversations::pair_cache_entry_bytes(),
                ),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let checks: [(bool, &'static str); 9] = [
            (
                (1..=65_536).contains(&self.rotation_batch),
                "rotation batch must be 1..=65536 records",
            ),
            (self.max_payload >= 1, "max_payload must be at least 1"),
            (
                self.max_payload <= 64 * 1024 * 1024,
                "max_payload must be at most 64 MiB",
            ),
            (self.max_batch >= 1, "max_batch must be at least 1"),
            (
                self.max_batch_bytes >= 1,
                "max_batch_bytes must be at least 1",
            ),
            (
                self.max_read_limit >= 1,
                "max_read_limit must be at least 1",
            ),
            (
                self.key_cache_entries >= 1,
                "key_cache_entries must be at least 1",
            ),
            (
                self.write_buffer_bytes >= 1024 * 1024,
                "write_buffer_bytes must be at least 1 MiB",
            ),
            (
                self.block_cache_bytes >= 1024 * 1024,
                "block_cache_bytes must be at least 1 MiB",
            ),
        ];
        for (ok, what) in checks {
            if !ok {
                return Err(InvalidArgument::Option(what).into());
            }
        }
        #[cfg(feature = "jetstream")]
        if self.jetstream.is_some() && self.max_batch > JETSTREAM_MAX_BATCH {
            return Err(InvalidArgument::Option(
                "max_batch must be at most 250 on the jetstream engine",
            )
            .into());
        }
        if self.retention.is_some_and(|d| d.as_millis() == 0) {
            return Err(InvalidArgument::Option("retention must be at least 1 ms").into());
        }
        if self.ledger_interval.is_some_and(|d| d.is_zero()) {
            return Err(InvalidArgument::Option("ledger_interval must be at least 1 ms").into());
        }
        if self.erasure_due.as_millis() == 0 {
            return Err(InvalidArgument::Option("erasure_due must be at least 1 ms").into());
        }
        if self.purge_interval.is_some_and(|d| d.is_zero()) {
            return Err(InvalidArgument::Option("purge_interval must be positive").into());
        }
        Ok(())
    }
}

/// The memory a store's configuration allows, from
/// [`Options::memory_budget`]. Sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// RocksDB block cache, index and filter blocks included.
    pub block_cache: usize,
    /// Memtables of all column families (active and immutable).
    pub memtables: usize,
    /// The cache of users' derived ciphers (entries x estimated entry size).
    pub key_cache: usize,
}

impl MemoryBudget {
    /// The sum of the parts.
    pub fn total(&self) -> usize {
        self.block_cache
            .saturating_add(self.memtables)
            .saturating_add(self.key_cache)
    }
}

impl std::fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        write!(
            f,
            "{:.1} MiB (block cache {:.1} + memtables {:.1} + key cache {:.1})",
            self.total() as f64 / MIB,
            self.block_cache as f64 / MIB,
            self.memtables as f64 / MIB,
            self.key_cache as f64 / MIB
        )
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data_dir", &self.data_dir)
            .field("durability", &self.durability)
            .field("max_payload", &self.max_payload)
            .field("max_batch", &self.max_batch)
            .field("max_read_limit", &self.max_read_limit)
            .field("purge_interval", &self.purge_interval)
            .finish_non_exhaustive()
    }
}

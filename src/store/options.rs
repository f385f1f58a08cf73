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
    pub(crate) durability: Durability,
    pub(crate) max_payload: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) max_read_limit: usize,
    pub(crate) key_cache_entries: usize,
    pub(crate) block_cache_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    pub(crate) purge_interval: Option<Duration>,
    pub(crate) periodic_compaction: Duration,
    pub(crate) erase_delete_range: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Arc<dyn SecureRandom>,
}

/// Default maximum payload size: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

impl Options {
    /// Options for a store in `data_dir`, sealed under `root_key`, with
    /// defaults for everything else.
    pub fn new(data_dir: impl AsRef<Path>, root_key: RootKey) -> Self {
        Options {
            data_dir: data_dir.as_ref().to_path_buf(),
            root_key,
            durability: Durability::Sync,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_batch: 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_read_limit: 10_000,
            key_cache_entries: 65_536,
            block_cache_bytes: 64 * 1024 * 1024,
            write_buffer_bytes: 64 * 1024 * 1024,
            purge_interval: Some(Duration::from_secs(60)),
            periodic_compaction: Duration::from_secs(7 * 24 * 3600),
            erase_delete_range: false,
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRandom),
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

    /// Memtable size of the `messages` column family (default 64 MiB).
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

    /// RocksDB `periodic_compaction_seconds` of `messages`: every SST file is
    /// rewritten (and filtered) at least this often (default 7 days).
    pub fn periodic_compaction(mut self, every: Duration) -> Self {
        self.periodic_compaction = every;
        self
    }

    /// Also `delete_range` a user's messages inside the erase batch (default
    /// off: the compaction filter removes them, and reads skip them already).
    pub fn erase_delete_range(mut self, on: bool) -> Self {
        self.erase_delete_range = on;
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

    pub(crate) fn validate(&self) -> Result<()> {
        let checks: [(bool, &'static str); 6] = [
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
        ];
        for (ok, what) in checks {
            if !ok {
                return Err(InvalidArgument::Option(what).into());
            }
        }
        if self.purge_interval.is_some_and(|d| d.is_zero()) {
            return Err(InvalidArgument::Option("purge_interval must be positive").into());
        }
        Ok(())
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

//! The store: RocksDB layout, append / read / erase, purge and the background
//! purger.

mod filter;
mod options;
mod purger;
mod rights;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};
use rocksdb::statistics::Ticker;
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily, ColumnFamilyDescriptor,
    CompactOptions, DB, DBCompressionType, DBRawIterator, FlushOptions, ReadOptions,
    SliceTransform, WriteBatch, WriteOptions,
};

pub use options::{DEFAULT_MAX_PAYLOAD, Durability, MemoryBudget, Options};

use crate::codec::{
    self, Envelope, EnvelopeHeader, EnvelopeKind, EraseMarker, FORMAT_VERSION, HANDLE_KEY_AAD,
    KeyRecord, KeyState, RedactionBody, UserPolicy, message_key,
};
use crate::codec::{AuditOp, AuditOutcome, AuditRecord, ErasureReceipt, PurgeStatus};
use crate::crypto::{self, DEDUP_KEY_LEN, HandleKey, KEY_LEN, MessageCipher, NONCE_LEN, Secret32};
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::{Handle, UserId};
use filter::{FilterState, MessagesFilterFactory};
pub use rights::{Access, ConsentEntry, Redacted, RightsState};

/// Column family names and `meta` keys (see `docs/format.md`).
pub mod layout {
    /// Store metadata: format version, store salt, wrapped handle key.
    pub const CF_META: &str = "meta";
    /// Key records, keyed by handle.
    pub const CF_KEYS: &str = "keys";
    /// Message envelopes, keyed by `handle || seq_be64`.
    pub const CF_MESSAGES: &str = "messages";
    /// Erasure markers, keyed by handle.
    pub const CF_ERASED: &str = "erased";
    /// Idempotency index: `handle || HMAC(handle_key, client_message_id)[..16]`
    /// to the message's seq and timestamp; and under the bare 16-byte handle,
    /// the user's seq high-water mark (so seqs are not reused when retention
    /// has removed every message of a user).
    pub const CF_DEDUP: &str = "dedup";
    /// Audit trail: `time_ms_be64 || counter_be64` to an audit record.
    /// Append-only; holds handles, never user ids; not erased with a user.
    pub const CF_AUDIT: &str = "audit";
    /// Consent history: `handle || index_be64` to a consent envelope sealed
    /// under the user's key.
    pub const CF_CONSENT: &str = "consent";
    /// Every column family shredstore creates (besides RocksDB's `default`).
    pub const ALL_CFS: [&str; 7] = [
        CF_META,
        CF_KEYS,
        CF_MESSAGES,
        CF_ERASED,
        CF_DEDUP,
        CF_AUDIT,
        CF_CONSENT,
    ];
    /// `meta` key of the format version (u32 BE).
    pub const META_FORMAT_VERSION: &[u8] = b"format_version";
    /// `meta` key of the 32-byte store salt.
    pub const META_STORE_SALT: &[u8] = b"store_salt";
    /// `meta` key of the wrapped handle key.
    pub const META_HANDLE_KEY: &[u8] = b"handle_key";
    /// `meta` key present while every user has a seq high-water mark (see
    /// [`CF_DEDUP`]); written when a store-wide retention period is in force.
    pub const META_SEQ_FLOORS: &[u8] = b"seq_floors";
}
use layout::{CF_AUDIT, CF_CONSENT, CF_DEDUP, CF_ERASED, CF_KEYS, CF_MESSAGES, CF_META};

/// The actor named in audit records of direct library calls.
pub const LIBRARY_ACTOR: &str = "library";

/// Number of lock stripes serialising per-user work.
const LOCK_STRIPES: usize = 1024;
/// Above this many pending erasures, purge compacts whole column families
/// instead of one range per user.
const PER_RANGE_PURGE_LIMIT: usize = 64;
/// How long `purge` waits for RocksDB to delete obsolete files.
const OBSOLETE_FILE_WAIT: Duration = Duration::from_secs(10);

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's sequence number (per user, strictly increasing, never reused).
    pub seq: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Longest client message id accepted by [`Store::append_idempotent`], in bytes.
pub const MAX_CLIENT_MESSAGE_ID_LEN: usize = 128;

/// Checks a client message id: 1..=[`MAX_CLIENT_MESSAGE_ID_LEN`] bytes.
///
/// # Errors
/// [`InvalidArgument::EmptyClientMessageId`] or
/// [`InvalidArgument::ClientMessageIdTooLong`].
pub fn validate_client_message_id(id: &[u8]) -> Result<()> {
    if id.is_empty() {
        return Err(InvalidArgument::EmptyClientMessageId.into());
    }
    if id.len() > MAX_CLIENT_MESSAGE_ID_LEN {
        return Err(InvalidArgument::ClientMessageIdTooLong {
            len: id.len(),
            max: MAX_CLIENT_MESSAGE_ID_LEN,
        }
        .into());
    }
    Ok(())
}

/// The outcome of [`Store::append_idempotent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentAppend {
    /// The message's seq and timestamp (the original ones for a duplicate).
    pub appended: Appended,
    /// True if the client message id matched an earlier append: nothing was stored.
    pub duplicate: bool,
}

/// The argument limits a store enforces (from its [`Options`]).
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

/// A decrypted, authenticated message, or the marker of a redacted one.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Sequence number.
    pub seq: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The plaintext payload (empty for a redaction marker).
    pub payload: Vec<u8>,
    /// Set if the message was redacted ([`Store::redact_as`]): the payload
    /// is gone, seq and timestamp remain.
    pub redaction: Option<Redaction>,
}

/// Why and when a message was redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// When, ms since the Unix epoch.
    pub redacted_at_ms: u64,
    /// The reason given.
    pub reason: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_len", &self.payload.len())
            .field("redacted", &self.redaction.is_some())
            .finish()
    }
}

/// What `erase` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// The user's handle (safe to log).
    pub handle: Handle,
    /// Messages written under the erased key epoch (0 if the user had no live key).
    pub messages_before: u64,
    /// The highest key epoch now erased.
    pub epoch: u32,
    /// When the erasure was committed, milliseconds since the Unix epoch.
    pub erased_at_ms: u64,
    /// The signed receipt of this erasure ([`Store::verify_receipt`]).
    pub receipt: ErasureReceipt,
}

/// What [`Store::export_as`] exported, and what else the store knows of the
/// user (but never the data of erased epochs, which no longer exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportManifest {
    /// The user's handle.
    pub handle: Handle,
    /// Messages exported.
    pub message_count: u64,
    /// Seq of the first and last exported message.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// The live key epoch, if the user has a key.
    pub key_epoch: Option<u32>,
    /// When the live key was created, ms since the Unix epoch.
    pub key_created_ms: Option<u64>,
    /// When the user was erased before, oldest first (the dates, not the
    /// data): from the audit trail, plus the latest erasure's marker.
    pub erasures_ms: Vec<u64>,
    /// New appends are refused (erased with `block_new`).
    pub appends_blocked: bool,
    /// Redaction markers among the exported messages.
    pub redacted_count: u64,
    /// Restriction, retention and legal-hold state.
    pub rights: RightsState,
    /// The consent history, oldest first.
    pub consents: Vec<rights::ConsentEntry>,
}

/// Where the next page of [`Store::audit_page`] starts (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor([u8; 16]);

/// What [`Store::verify_erasure`] found for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureCheck {
    /// The user's handle (safe to log and to show an auditor).
    pub handle: Handle,
    /// The erasure marker, if the user was ever erased.
    pub marker: Option<ErasureState>,
    /// A key record exists: the user has readable data (never erased, or
    /// wrote again after the erasure).
    pub live_key: bool,
    /// Message records under the handle from erased key epochs: ciphertext
    /// still on disk (unreadable, waiting for purge).
    pub erased_records: u64,
    /// Message records under the handle from the live epoch (written after
    /// the erasure, if any).
    pub live_records: u64,
    /// Idempotency-index entries under the handle.
    pub dedup_entries: u64,
    /// Consent records under the handle from erased key epochs.
    pub erased_consents: u64,
}

/// The erasure marker of a user, as [`ErasureCheck`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureState {
    /// Highest erased key epoch.
    pub epoch: u32,
    /// When the latest erasure was committed, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// A purge has made this erasure physical: it compacted the user's key
    /// ranges, found no erased record first in them, and saw the SST and
    /// WAL files that held them deleted.
    pub purged: bool,
}

impl ErasureCheck {
    /// The user was erased, the erasure was purged, and no record of an
    /// erased epoch, no idempotency entry from before it and no key record
    /// of it is left. (Records written after the erasure, under a new key,
    /// are the user's current data and do not count against it.)
    pub fn is_physically_erased(&self) -> bool {
        self.marker.is_some_and(|m| m.purged)
            && self.erased_records == 0
            && self.erased_consents == 0
    }

    /// The user was erased (unreadable at once) but purge has not yet run
    /// or not yet finished.
    pub fn is_pending(&self) -> bool {
        self.marker.is_some() && !self.is_physically_erased()
    }
}

/// Options of one erasure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseOptions {
    /// Refuse later appends for this user with [`Error::Blocked`]. Sticky: a
    /// later erase without it does not lift the block.
    pub block_new: bool,
}

impl EraseOptions {
    /// Erase and block new data for the user.
    pub fn block_new() -> Self {
        EraseOptions { block_new: true }
    }
}

/// What `purge` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Erasures made physical by this purge.
    pub erasures_purged: usize,
    /// Users whose redactions this purge made physical.
    pub redactions_purged: usize,
    /// Whether obsolete files were verifiably deleted. When `false` (an open
    /// snapshot or iterator pinned old files), the erasures stay pending and
    /// the next purge retries.
    pub complete: bool,
    /// Wall time spent.
    pub duration: Duration,
}

/// Counters of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Users with a live key record.
    pub users: u64,
    /// RocksDB's estimate of stored message records (includes erased ones not yet purged).
    pub messages_estimate: u64,
    /// Erasures not yet made physical by `purge`.
    pub pending_erasures: u64,
    /// Users with redactions not yet made physical by `purge`.
    pub pending_redactions: u64,
    /// Purges completed since open.
    pub purges_done: u64,
    /// Records dropped by the compaction filter since open (RocksDB ticker
    /// `rocksdb.compaction.key.drop.user`).
    pub filter_drops: u64,
    /// Bytes of all files in the data directory.
    pub bytes_on_disk: u64,
    /// RocksDB's latest sequence number; it grows with every write.
    pub rocksdb_sequence: u64,
}

/// Memtables per column family (RocksDB's default, set explicitly because
/// the memory budget counts on it).
pub(crate) const MAX_WRITE_BUFFERS: usize = 2;
/// Memtable size of the small column families (keys, markers, dedup, meta).
pub(crate) const SMALL_CF_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// Estimated heap bytes of one key-cache entry: the entry, its cipher (an
/// `Arc` allocation with two counters) and the LRU's node and table slot.
pub(crate) fn key_cache_entry_bytes() -> usize {
    std::mem::size_of::<CachedUser>()
        + std::mem::size_of::<MessageCipher>()
        + 2 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Handle>()
        + 64
}

/// Cached per-user state: the derived cipher, the next seq and the rights
/// policy.
#[derive(Clone)]
struct CachedUser {
    epoch: u32,
    cipher: Arc<MessageCipher>,
    /// First seq of this epoch: earlier seqs belong to erased epochs.
    first_seq: u64,
    next_seq: u64,
    policy: Arc<UserPolicy>,
}

/// A user's state as loaded under its lock.
enum UserState {
    Live(CachedUser),
    Absent {
        marker: Option<EraseMarker>,
        next_seq: u64,
    },
}

/// The newest message of a handle: its seq and epoch (`None` if its header
/// is unreadable).
#[derive(Clone, Copy)]
struct Last {
    seq: u64,
    epoch: Option<u32>,
}

impl Last {
    /// The epoch, failing closed on an unreadable header.
    fn epoch(&self) -> Result<u32> {
        self.epoch.ok_or(Error::Corrupt(Corruption::Encoding))
    }
}

pub(crate) struct Inner {
    db: DB,
    db_opts: rocksdb::Options,
    durability: Durability,
    max_payload: usize,
    max_batch: usize,
    max_batch_bytes: usize,
    max_read_limit: usize,
    erase_delete_range: bool,
    clock: Arc<dyn crate::types::Clock>,
    rng: Arc<dyn crypto::SecureRandom>,
    data_dir: std::path::PathBuf,
    salt: [u8; KEY_LEN],
    handle_key: HandleKey,
    wrap: MessageCipher,
    receipt_key: crypto::ReceiptKey,
    /// Next audit-record counter (unique within the store).
    audit_counter: AtomicU64,
    locks: Box<[Mutex<()>]>,
    cache: Mutex<LruCache<Handle, CachedUser>>,
    erased: Arc<FilterState>,
    /// Erased handles whose erasure is not yet physical, with the erased epoch.
    pending: Mutex<HashMap<Handle, u32>>,
    /// Handles with redactions not yet physical, with a counter bumped by
    /// each redaction (a purge clears only what it saw).
    pending_redactions: Mutex<HashMap<Handle, u64>>,
    /// Source of those counters (starts at 1; 0 marks redactions found
    /// pending at open).
    redaction_counter: AtomicU64,
    /// Store-wide retention period, ms.
    default_retention_ms: Option<u64>,
    /// Bumped by every erase after it updated `erased`; open iterators check it.
    erase_generation: AtomicU64,
    poisoned: AtomicBool,
    users: AtomicU64,
    purges_done: AtomicU64,
    purge_lock: Mutex<()>,
    purger_signal: purger::Signal,
}

/// An encrypted, append-only message store with per-user crypto-shredding.
///
/// `Store` is `Send + Sync`; share it with an `Arc`. All calls are synchronous.
pub struct Store {
    inner: Arc<Inner>,
    purger: Option<purger::Purger>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `options`' data directory.
    ///
    /// # Errors
    /// [`Error::WrongRootKey`] if the root key is not the one the store was
    /// created with, [`Error::UnsupportedFormat`], [`Error::Corrupt`],
    /// [`Error::InvalidArgument`] for bad options, or a storage/I/O error.
    pub fn open(options: Options) -> Result<Store> {
        options.validate()?;
        std::fs::create_dir_all(&options.data_dir)?;
        let default_retention_ms = options
            .retention
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let erased = Arc::new(FilterState::new(default_retention_ms));
        let (db, db_opts) = open_db(&options, &erased)?;
        let (salt, handle_key) = init_meta(&db, &options)?;
        let wrap = options.root_key.wrapping_cipher(&salt);
        let receipt_key = options.root_key.receipt_key(&salt);
        // Every audit record is a put, so each counter handed out is below
        // the RocksDB sequence at the end of its session: starting at the
        // current sequence never repeats one, without scanning the trail.
        let audit_counter = db.latest_sequence_number();
        let cache_size = NonZeroUsize::new(options.key_cache_entries).ok_or(
            InvalidArgument::Option("key_cache_entries must be at least 1"),
        )?;

        let inner = Arc::new(Inner {
            db,
            db_opts,
            durability: options.durability,
            max_payload: options.max_payload,
            max_batch: options.max_batch,
            max_batch_bytes: options.max_batch_bytes,
            max_read_limit: options.max_read_limit,
            erase_delete_range: options.erase_delete_range,
            clock: options.clock,
            rng: options.rng,
            data_dir: options.data_dir,
            salt,
            handle_key,
            wrap,
            receipt_key,
            audit_counter: AtomicU64::new(audit_counter),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache: Mutex::new(LruCache::new(cache_size)),
            erased,
            pending: Mutex::new(HashMap::new()),
            pending_redactions: Mutex::new(HashMap::new()),
            redaction_counter: AtomicU64::new(1),
            default_retention_ms,
            erase_generation: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            users: AtomicU64::new(0),
            purges_done: AtomicU64::new(0),
            purge_lock: Mutex::new(()),
            purger_signal: purger::Signal::default(),
        });
        inner.load_erased_and_count_users()?;
        inner.ensure_seq_floors()?;
        // Only now may compactions expire messages (see FilterState::ready).
        inner.erased.set_ready();
        let purger = options
            .purge_interval
            .map(|every| purger::Purger::spawn(Arc::clone(&inner), every))
            .transpose()?;
        tracing::info!(
            data_dir = %inner.data_dir.display(),
            users = inner.users.load(Ordering::Relaxed),
            pending_erasures = inner.pending.lock().len(),
            "store opened"
        );
        Ok(Store { inner, purger })
    }

    /// The argument limits this store enforces.
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_payload: self.inner.max_payload,
            max_batch: self.inner.max_batch,
            max_batch_bytes: self.inner.max_batch_bytes,
            max_read_limit: self.inner.max_read_limit,
        }
    }

    /// The handle (pseudonym) of a user id in this store. Handles are safe to
    /// log; they appear in RocksDB keys instead of user ids.
    pub fn handle(&self, user: &UserId) -> Handle {
        self.inner.handle_key.handle(user)
    }

    /// Appends one message for `user`.
    ///
    /// # Errors
    /// [`InvalidArgument::PayloadTooLarge`], [`Error::Blocked`],
    /// [`Error::Poisoned`], or a storage error (which poisons the store).
    pub fn append(&self, user: &UserId, payload: &[u8]) -> Result<Appended> {
        let (mut v, _) = self.inner.append_inner(user, &[payload], None)?;
        v.pop().ok_or(Error::Corrupt(Corruption::Encoding))
    }

    /// Appends one message unless `client_message_id` was already used for
    /// `user`, in which case it returns the original seq and stores nothing.
    /// Retries of a timed-out append are thus safe. The id is remembered until
    /// the user is erased; only a keyed hash of it is stored. If retention
    /// has removed the original, a retry still gets its seq (the payload can
    /// no longer be compared).
    ///
    /// # Errors
    /// As [`Store::append`], plus [`InvalidArgument::EmptyClientMessageId`],
    /// [`InvalidArgument::ClientMessageIdTooLong`], and
    /// [`Error::IdempotencyConflict`] if the id was used with another payload.
    pub fn append_idempotent(
        &self,
        user: &UserId,
        client_message_id: &[u8],
        payload: &[u8],
    ) -> Result<IdempotentAppend> {
        validate_client_message_id(client_message_id)?;
        self.inner
            .append_inner(user, &[payload], Some(client_message_id))
            .and_then(|(mut v, duplicate)| {
                let appended = v.pop().ok_or(Error::Corrupt(Corruption::Encoding))?;
                Ok(IdempotentAppend {
                    appended,
                    duplicate,
                })
            })
    }

    /// Appends several messages for `user` in one atomic write: all of them or
    /// none are stored. Seqs are consecutive.
    ///
    /// # Errors
    /// As [`Store::append`], plus [`InvalidArgument::EmptyBatch`],
    /// [`InvalidArgument::BatchTooLarge`] and [`InvalidArgument::BatchBytesTooLarge`].
    pub fn append_batch<P: AsRef<[u8]>>(
        &self,
        user: &UserId,
        payloads: &[P],
    ) -> Result<Vec<Appended>> {
        self.inner
            .append_inner(user, payloads, None)
            .map(|(v, _)| v)
    }

    /// Reads up to `limit` messages of `user` with seq >= `from_seq`, in seq
    /// order, each authenticated and decrypted. An unknown or erased user reads
    /// as empty.
    ///
    /// # Errors
    /// [`InvalidArgument::ZeroLimit`] / [`InvalidArgument::LimitTooLarge`],
    /// [`Error::Corrupt`] or [`Error::Decrypt`] for damaged records, or a
    /// storage error.
    pub fn read(&self, user: &UserId, from_seq: u64, limit: usize) -> Result<Vec<Message>> {
        self.read_with(user, from_seq, limit, Access::Subject)
    }

    /// Streams the messages of `user` with seq >= `from_seq`, in seq order.
    /// The iterator reads a consistent snapshot taken when it was created and
    /// stops after the first error it yields.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the user's key record is lost or damaged, or a
    /// storage error.
    pub fn read_iter(&self, user: &UserId, from_seq: u64) -> Result<MessageIter<'_>> {
        self.inner.read_iter(user, from_seq, Access::Subject)
    }

    /// [`Store::read`] with an explicit access level: [`Access::Override`]
    /// reads a user whose reads are restricted (`block_reads`, for legal
    /// claims). The caller records the override in the audit trail
    /// ([`AuditOp::RestrictedRead`]); the gRPC server does so for its admin
    /// role.
    ///
    /// # Errors
    /// As [`Store::read`], plus [`Error::Restricted`] for a restricted user
    /// read with [`Access::Subject`].
    pub fn read_with(
        &self,
        user: &UserId,
        from_seq: u64,
        limit: usize,
        access: Access,
    ) -> Result<Vec<Message>> {
        self.inner.check_limit(limit)?;
        self.inner
            .read_iter(user, from_seq, access)?
            .take(limit)
            .collect()
    }

    /// Exports everything the store holds about `user` (GDPR Art. 15 and 20):
    /// every readable message, in seq order, handed to `sink`, then a
    /// manifest describing them. `actor` is named in the export's audit
    /// record (written when the export completes; a refused or failed export
    /// is recorded as such).
    ///
    /// # Errors
    /// A damaged record, a storage error, or the first error `sink` returns
    /// (the export stops there).
    pub fn export_as(
        &self,
        user: &UserId,
        actor: &str,
        sink: impl FnMut(Message) -> Result<()>,
    ) -> Result<ExportManifest> {
        self.export_with(user, actor, Access::Subject, sink)
    }

    /// [`Store::export_as`] with an explicit access level
    /// ([`Access::Override`] exports a user whose reads are restricted).
    ///
    /// # Errors
    /// As [`Store::export_as`], plus [`Error::Restricted`].
    pub fn export_with(
        &self,
        user: &UserId,
        actor: &str,
        access: Access,
        mut sink: impl FnMut(Message) -> Result<()>,
    ) -> Result<ExportManifest> {
        let handle = self.handle(user);
        let result = (|| {
            let policy = self
                .inner
                .key_record(&handle)?
                .map(|r| (r.epoch, r.created_ms, r.state.policy()));
            let mut manifest = ExportManifest {
                handle,
                message_count: 0,
                first_seq: None,
                last_seq: None,
                key_epoch: policy.as_ref().map(|p| p.0),
                key_created_ms: policy.as_ref().map(|p| p.1),
                erasures_ms: Vec::new(),
                appends_blocked: false,
                redacted_count: 0,
                rights: self
                    .inner
                    .rights_state(&policy.map(|p| p.2).unwrap_or_default()),
                consents: Vec::new(),
            };
            for m in self.inner.read_iter(user, 0, access)? {
                let m = m?;
                manifest.first_seq.get_or_insert(m.seq);
                manifest.last_seq = Some(m.seq);
                manifest.message_count += 1;
                manifest.redacted_count += u64::from(m.redaction.is_some());
                sink(m)?;
            }
            manifest.consents = self.inner.consent_history(&handle, access)?;
            if let Some(marker) = self.inner.get_marker(&handle)? {
                manifest.appends_blocked = marker.block_new;
                manifest.erasures_ms = self.inner.erasure_dates(&handle, marker.erased_at_ms)?;
            }
            Ok(manifest)
        })();
        self.record_audit(
            actor,
            AuditOp::Export,
            Some(handle),
            rights::outcome_of(&result),
        )?;
        result
    }

    /// Erases `user` (crypto-shredding): one synced, atomic write deletes the
    /// user's key record and records an erasure marker; cached key material is
    /// evicted and zeroized. When it returns, no read returns any message the
    /// user had. Cost does not depend on the user's message count. Physical
    /// removal follows at the next [`Store::purge`].
    ///
    /// Erasing an unknown or already erased user succeeds (`messages_before` 0).
    ///
    /// # Errors
    /// [`Error::Poisoned`] or a storage error.
    pub fn erase(&self, user: &UserId) -> Result<Erased> {
        self.inner
            .erase(user, EraseOptions::default(), LIBRARY_ACTOR)
    }

    /// [`Store::erase`] with options.
    ///
    /// # Errors
    /// As [`Store::erase`].
    pub fn erase_with(&self, user: &UserId, options: EraseOptions) -> Result<Erased> {
        self.inner.erase(user, options, LIBRARY_ACTOR)
    }

    /// [`Store::erase_with`] on behalf of `actor` (a token or service name,
    /// at most 64 bytes kept), who is named in the audit record written in
    /// the same atomic batch as the erasure.
    ///
    /// # Errors
    /// As [`Store::erase`].
    pub fn erase_as(&self, user: &UserId, options: EraseOptions, actor: &str) -> Result<Erased> {
        self.inner.erase(user, options, actor)
    }

    /// Makes pending erasures physical: flushes every column family (so WAL
    /// files holding old key records become obsolete), force-compacts the
    /// erased users' key ranges through the compaction filter, and waits until
    /// RocksDB has deleted the obsolete files.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or a storage error.
    pub fn purge(&self) -> Result<PurgeReport> {
        self.inner.purge(LIBRARY_ACTOR)
    }

    /// [`Store::purge`] on behalf of `actor`, named in its audit record.
    ///
    /// # Errors
    /// As [`Store::purge`].
    pub fn purge_as(&self, actor: &str) -> Result<PurgeReport> {
        self.inner.purge(actor)
    }

    /// Appends an audit record (for operations recorded by the caller, such
    /// as a refused request). Erase and purge record themselves.
    ///
    /// # Errors
    /// A poisoned store or a failed write.
    pub fn record_audit(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        self.inner.record_audit(actor, op, handle, outcome)
    }

    /// The audit records with `from_ms <= time_ms < to_ms`, oldest first, at
    /// most `limit` (1..=max_read_limit).
    ///
    /// # Errors
    /// A bad limit, a storage error or a damaged record.
    pub fn audit_log(&self, from_ms: u64, to_ms: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        Ok(self.audit_page(from_ms, to_ms, None, limit)?.0)
    }

    /// One page of [`Store::audit_log`]: records after `after` (a cursor
    /// from the previous page), and the cursor of the next page, `None` once
    /// the range is exhausted.
    ///
    /// # Errors
    /// A bad limit, a storage error or a damaged record.
    pub fn audit_page(
        &self,
        from_ms: u64,
        to_ms: u64,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<AuditCursor>)> {
        self.inner.check_limit(limit)?;
        let cf = self.inner.cf(CF_AUDIT)?;
        let mut it = self.inner.db.raw_iterator_cf(cf);
        match &after {
            Some(c) => {
                it.seek(c.0);
                if it.key() == Some(&c.0[..]) {
                    it.next();
                }
            }
            None => it.seek(codec::audit_key(from_ms, 0)),
        }
        let mut out = Vec::new();
        let mut last = None;
        while let Some((k, v)) = it.item() {
            let (t, _) = codec::parse_audit_key(k)?;
            if t >= to_ms || out.len() >= limit {
                break;
            }
            out.push(AuditRecord::decode(v)?);
            last = k.try_into().ok().map(AuditCursor);
            it.next();
        }
        it.status()?;
        let next = if out.len() >= limit { last } else { None };
        Ok((out, next))
    }

    /// Whether `receipt` was issued by this store (same root key and store)
    /// and is unchanged. Constant-time.
    pub fn verify_receipt(&self, receipt: &ErasureReceipt) -> bool {
        self.inner
            .receipt_key
            .verify(&receipt.signed_bytes(), &receipt.mac)
    }

    /// The current purge status of the latest erasure of `handle`, or `None`
    /// if it was never erased.
    ///
    /// # Errors
    /// A storage error or a damaged marker.
    pub fn purge_status(&self, handle: &Handle) -> Result<Option<PurgeStatus>> {
        Ok(self.inner.get_marker(handle)?.map(|m| {
            if m.purged {
                PurgeStatus::Purged
            } else {
                PurgeStatus::Pending
            }
        }))
    }

    /// Flushes all memtables to SST files.
    ///
    /// # Errors
    /// A storage error.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_all()
    }

    /// Compacts every column family completely (bottommost level included).
    /// A maintenance operation; `purge` is the targeted form.
    ///
    /// # Errors
    /// A storage error.
    pub fn compact(&self) -> Result<()> {
        self.inner.flush_all()?;
        let opts = force_compact_options();
        for name in layout::ALL_CFS {
            let cf = self.inner.cf(name)?;
            self.inner
                .db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    /// Counters of the store.
    ///
    /// # Errors
    /// A storage or I/O error.
    pub fn stats(&self) -> Result<Stats> {
        self.inner.stats()
    }

    /// Checks what is left on disk of `user`: scans the `messages`, `keys`
    /// and `dedup` column families for every record keyed by the user's
    /// handle (raw, bypassing the epoch checks reads apply) and reads the
    /// erasure marker. For operators who must show that an erasure became
    /// physical; see [`ErasureCheck::is_physically_erased`].
    ///
    /// # Errors
    /// A storage error, or a damaged marker.
    pub fn verify_erasure(&self, user: &UserId) -> Result<ErasureCheck> {
        self.inner.verify_erasure(user)
    }

    /// Syncs the WAL to stable storage: makes every `Durability::Buffered`
    /// append so far durable.
    ///
    /// # Errors
    /// A storage error.
    pub fn sync(&self) -> Result<()> {
        self.inner.db.flush_wal(true)?;
        Ok(())
    }

    /// Syncs the WAL and closes the store, stopping the background purger.
    ///
    /// # Errors
    /// A storage error from the final WAL sync.
    pub fn close(mut self) -> Result<()> {
        if let Some(p) = self.purger.take() {
            p.stop();
        }
        if !self.inner.poisoned.load(Ordering::Acquire) {
            self.inner.db.flush_wal(true)?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(p) = self.purger.take() {
            p.stop();
        }
    }
}

/// Streaming reader returned by [`Store::read_iter`].
///
/// If the user is erased while the iterator is open, it stops: it never yields
/// a message after the erase returned.
pub struct MessageIter<'a> {
    inner: &'a Inner,
    raw: Option<DBRawIterator<'a>>,
    handle: Handle,
    state: Option<CachedUser>,
    erase_generation: u64,
    /// Messages appended before this time are expired (hidden).
    horizon: u64,
    done: bool,
}

impl Iterator for MessageIter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl MessageIter<'_> {
    fn step(&mut self) -> Option<Result<Message>> {
        let state = self.state.as_ref()?;
        let generation = self.inner.erase_generation.load(Ordering::Acquire);
        if generation != self.erase_generation {
            // Some user was erased since we last looked; if it was ours, stop.
            self.erase_generation = generation;
            if self.inner.erased.covers(&self.handle, state.epoch) {
                return None;
            }
        }
        let raw = self.raw.as_mut()?;
        loop {
            if !raw.valid() {
                return raw.status().err().map(|e| Err(Error::Storage(e)));
            }
            let (key, value) = raw.item()?;
            let result = match Envelope::decode(value) {
                // Expired by retention: hidden now, dropped at compaction.
                // Only a record whose CRC holds is trusted to be expired.
                Ok(env) if env.timestamp_ms < self.horizon => {
                    raw.next();
                    continue;
                }
                Ok(env) => open_envelope(&self.handle, state, key, &env),
                Err(e) => Err(e),
            };
            raw.next();
            return Some(result);
        }
    }
}

/// Decodes, authenticates and decrypts one stored message.
fn open_message(handle: &Handle, state: &CachedUser, key: &[u8], value: &[u8]) -> Result<Message> {
    open_envelope(handle, state, key, &Envelope::decode(value)?)
}

/// Authenticates and decrypts an envelope stored under `key` (`handle ||
/// u64`) of the user's live epoch; returns that u64 and the plaintext.
fn open_sealed(
    handle: &Handle,
    state: &CachedUser,
    key: &[u8],
    env: &Envelope<'_>,
) -> Result<(u64, Vec<u8>)> {
    let (h, seq) = codec::parse_message_key(key)?;
    if h != *handle {
        return Err(Error::Corrupt(Corruption::Key));
    }
    // Reads start at the epoch's first seq; every earlier epoch's seqs are
    // lower. Another epoch here is damage, never a reason to skip silently.
    if env.epoch != state.epoch {
        return Err(Error::Corrupt(Corruption::EpochMismatch));
    }
    let aad = Envelope::aad_of(env.kind, handle, seq, env.epoch, env.timestamp_ms);
    Ok((seq, state.cipher.open(&env.nonce, &aad, env.sealed)?))
}

/// [`open_message`] of an already decoded envelope.
fn open_envelope(
    handle: &Handle,
    state: &CachedUser,
    key: &[u8],
    env: &Envelope<'_>,
) -> Result<Message> {
    let (seq, opened) = open_sealed(handle, state, key, env)?;
    match env.kind {
        EnvelopeKind::Message => Ok(Message {
            seq,
            timestamp_ms: env.timestamp_ms,
            payload: opened,
            redaction: None,
        }),
        EnvelopeKind::Redaction => {
            let body = RedactionBody::from_bytes(&opened)?;
            Ok(Message {
                seq,
                timestamp_ms: env.timestamp_ms,
                payload: Vec::new(),
                redaction: Some(Redaction {
                    redacted_at_ms: body.redacted_at_ms,
                    reason: body.reason,
                }),
            })
        }
        EnvelopeKind::Consent => Err(Error::Corrupt(Corruption::Encoding)),
    }
}

/// Deletes every key that starts with `handle` (keys are at most 32 bytes).
fn delete_handle_range(batch: &mut WriteBatch, cf: &ColumnFamily, handle: &Handle) {
    const LAST: [u8; 32] = [0xff; 32];
    match codec::handle_upper_bound(handle) {
        Some(ub) => batch.delete_range_cf(cf, handle.as_bytes().as_slice(), ub.as_slice()),
        // The all-0xff handle: the range ends at the largest possible key,
        // which delete_range excludes, so delete that one too.
        None => {
            batch.delete_range_cf(cf, handle.as_bytes().as_slice(), LAST.as_slice());
            batch.delete_cf(cf, LAST);
        }
    }
}

fn force_compact_options() -> CompactOptions {
    let mut opts = CompactOptions::default();
    opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    opts.set_exclusive_manual_compaction(false);
    opts
}

/// The RocksDB tuning of a store: DB-wide options, the options of the small
/// column families, and those of `messages` (without its compaction filter).
fn rocksdb_options(options: &Options) -> (rocksdb::Options, rocksdb::Options, rocksdb::Options) {
    let cache = Cache::new_lru_cache(options.block_cache_bytes);

    let mut db_opts = rocksdb::Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_paranoid_checks(true);
    // Erasure depends on obsolete WAL files being deleted, not archived or recycled.
    db_opts.set_wal_ttl_seconds(0);
    db_opts.set_wal_size_limit_mb(0);
    db_opts.set_recycle_log_file_num(0);
    // Bound WAL growth so a rarely written column family cannot pin old WALs.
    db_opts.set_max_total_wal_size(256 * 1024 * 1024);
    db_opts.set_keep_log_file_num(4);
    db_opts.set_max_background_jobs(4);
    db_opts.enable_statistics();
    db_opts.set_compression_type(DBCompressionType::None);

    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);

    // Index and filter blocks live in the block cache, so the cache bounds them
    // (otherwise they grow with the data, outside any budget).
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut small = rocksdb::Options::default();
    small.set_compression_type(DBCompressionType::None);
    small.set_block_based_table_factory(&table);
    small.set_write_buffer_size(SMALL_CF_WRITE_BUFFER);
    small.set_max_write_buffer_number(MAX_WRITE_BUFFERS as i32);

    let mut msg_table = BlockBasedOptions::default();
    msg_table.set_block_cache(&cache);
    msg_table.set_bloom_filter(10.0, false);
    msg_table.set_whole_key_filtering(false);
    msg_table.set_cache_index_and_filter_blocks(true);
    msg_table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut messages = rocksdb::Options::default();
    // Ciphertext does not compress.
    messages.set_compression_type(DBCompressionType::None);
    messages.set_block_based_table_factory(&msg_table);
    messages.set_prefix_extractor(SliceTransform::create_fixed_prefix(Handle::LEN));
    messages.set_write_buffer_size(options.write_buffer_bytes);
    messages.set_max_write_buffer_number(MAX_WRITE_BUFFERS as i32);
    messages.set_periodic_compaction_seconds(options.periodic_compaction.as_secs().max(1));
    (db_opts, small, messages)
}

fn open_db(options: &Options, erased: &Arc<FilterState>) -> Result<(DB, rocksdb::Options)> {
    let (db_opts, small, mut messages) = rocksdb_options(options);
    messages.set_compaction_filter_factory(MessagesFilterFactory {
        state: Arc::clone(erased),
        clock: Arc::clone(&options.clock),
    });

    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_META, small.clone()),
        ColumnFamilyDescriptor::new(CF_KEYS, small.clone()),
        ColumnFamilyDescriptor::new(CF_MESSAGES, messages),
        ColumnFamilyDescriptor::new(CF_ERASED, small.clone()),
        ColumnFamilyDescriptor::new(CF_DEDUP, small.clone()),
        ColumnFamilyDescriptor::new(CF_AUDIT, small.clone()),
        ColumnFamilyDescriptor::new(CF_CONSENT, small),
    ];
    let db = DB::open_cf_descriptors(&db_opts, &options.data_dir, cfs)?;
    Ok((db, db_opts))
}

/// Opens a plain RocksDB in `options`' data dir with a single `messages`
/// column family tuned exactly like a store's (same DB options, block cache,
/// bloom filter, prefix extractor, write buffer; no compaction filter, no
/// encryption). It is the baseline the benchmarks compare the store against;
/// it is not a store and holds no keys.
#[doc(hidden)]
pub fn open_plain_baseline(options: &Options) -> Result<DB> {
    let (db_opts, _small, messages) = rocksdb_options(options);
    let cfs = vec![ColumnFamilyDescriptor::new(CF_MESSAGES, messages)];
    Ok(DB::open_cf_descriptors(&db_opts, &options.data_dir, cfs)?)
}

/// Reads or creates the store's metadata; checks format version and root key.
fn init_meta(db: &DB, options: &Options) -> Result<([u8; KEY_LEN], HandleKey)> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    let version = db.get_cf(meta, layout::META_FORMAT_VERSION)?;
    let Some(version) = version else {
        // A fresh store: nothing else may exist yet.
        let keys = db
            .cf_handle(CF_KEYS)
            .ok_or(Error::Corrupt(Corruption::Meta))?;
        let mut it = db.raw_iterator_cf(keys);
        it.seek_to_first();
        if it.valid() || db.get_cf(meta, layout::META_STORE_SALT)?.is_some() {
            return Err(Error::Corrupt(Corruption::Meta));
        }
        let salt_secret = Secret32::random(options.rng.as_ref())?;
        let salt = *salt_secret.expose();
        let handle_secret = Secret32::random(options.rng.as_ref())?;
        let wrap = options.root_key.wrapping_cipher(&salt);
        let wrapped =
            crypto::wrap_secret(&wrap, options.rng.as_ref(), HANDLE_KEY_AAD, &handle_secret)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, layout::META_STORE_SALT, salt);
        batch.put_cf(meta, layout::META_HANDLE_KEY, wrapped);
        batch.put_cf(
            meta,
            layout::META_FORMAT_VERSION,
            FORMAT_VERSION.to_be_bytes(),
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo)?;
        return Ok((salt, HandleKey::new(handle_secret)));
    };
    let version: [u8; 4] = version
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt(Corruption::Meta))?;
    let version = u32::from_be_bytes(version);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let salt: [u8; KEY_LEN] = db
        .get_cf(meta, layout::META_STORE_SALT)?
        .and_then(|s| s.as_slice().try_into().ok())
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    let wrapped = db
        .get_cf(meta, layout::META_HANDLE_KEY)?
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    if wrapped.len() != crypto::WRAPPED_LEN {
        return Err(Error::Corrupt(Corruption::Meta));
    }
    let wrap = options.root_key.wrapping_cipher(&salt);
    let handle_secret =
        crypto::unwrap_secret(&wrap, HANDLE_KEY_AAD, &wrapped).map_err(|_| Error::WrongRootKey)?;
    Ok((salt, HandleKey::new(handle_secret)))
}

impl Inner {
    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or(Error::Corrupt(Corruption::Meta))
    }

    fn lock(&self, handle: &Handle) -> MutexGuard<'_, ()> {
        let idx = usize::from(u16::from_be_bytes([handle.0[0], handle.0[1]])) % self.locks.len();
        self.locks[idx].lock()
    }

    fn check_limit(&self, limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(InvalidArgument::ZeroLimit.into());
        }
        if limit > self.max_read_limit {
            return Err(InvalidArgument::LimitTooLarge {
                limit,
                max: self.max_read_limit,
            }
            .into());
        }
        Ok(())
    }

    fn key_record(&self, handle: &Handle) -> Result<Option<KeyRecord>> {
        self.db
            .get_pinned_cf(self.cf(CF_KEYS)?, handle.as_bytes())?
            .map(|b| KeyRecord::decode(&b))
            .transpose()
    }

    /// Dates of the successful erasures of `handle` on the audit trail (a
    /// scan of the trail), with `latest` (the marker's) included.
    fn erasure_dates(&self, handle: &Handle, latest: u64) -> Result<Vec<u64>> {
        let mut dates = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_AUDIT)?);
        it.seek_to_first();
        while let Some(v) = it.value() {
            let r = AuditRecord::decode(v)?;
            if r.op == AuditOp::Erase && r.outcome == AuditOutcome::Ok && r.handle == Some(handle.0)
            {
                dates.push(r.time_ms);
            }
            it.next();
        }
        it.status()?;
        if !dates.contains(&latest) {
            dates.push(latest);
        }
        dates.sort_unstable();
        Ok(dates)
    }

    /// Adds an audit record, stamped now, to `batch`.
    fn put_audit(
        &self,
        batch: &mut WriteBatch,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        self.put_audit_at(batch, now, actor, op, handle, outcome)
    }

    /// Adds an audit record stamped `time_ms` to `batch`.
    fn put_audit_at(
        &self,
        batch: &mut WriteBatch,
        time_ms: u64,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        let mut end = actor.len().min(codec::MAX_ACTOR_LEN);
        while !actor.is_char_boundary(end) {
            end -= 1;
        }
        let record = AuditRecord {
            time_ms,
            actor: actor[..end].to_owned(),
            op,
            handle: handle.map(|h| h.0),
            outcome,
        };
        let counter = self.audit_counter.fetch_add(1, Ordering::Relaxed);
        let mut value = Vec::new();
        record.encode(&mut value);
        batch.put_cf(
            self.cf(CF_AUDIT)?,
            codec::audit_key(record.time_ms, counter),
            value,
        );
        Ok(())
    }

    /// Writes one audit record, stamped now, on its own (synced).
    fn record_audit(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_audit(&mut batch, actor, op, handle, outcome)?;
        self.write(batch, true)
    }

    /// Passes `r` through, recording it as `refused` if it is a refusal
    /// (best effort: the refusal itself is the answer the caller gets,
    /// whatever happens to its record).
    fn audit_refusal<T>(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Handle,
        r: Result<T>,
    ) -> Result<T> {
        if let Err(e) = &r
            && rights::is_refusal(e)
            && let Err(w) = self.record_audit(actor, op, Some(handle), AuditOutcome::Refused)
        {
            tracing::warn!(error = %w, op = op.name(), "could not record a refusal");
        }
        r
    }

    /// Signs `r` (its `mac` is overwritten).
    fn receipt(&self, mut r: ErasureReceipt) -> ErasureReceipt {
        r.mac = self.receipt_key.sign(&r.signed_bytes());
        r
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Writes a batch; a failure poisons the store.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.check_writable()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(|e| {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(error = %e, "write failed; store poisoned until reopened");
            Error::Storage(e)
        })
    }

    fn load_erased_and_count_users(&self) -> Result<()> {
        let erased_cf = self.cf(CF_ERASED)?;
        let mut it = self.db.raw_iterator_cf(erased_cf);
        it.seek_to_first();
        let mut pending = self.pending.lock();
        while let Some((k, v)) = it.item() {
            let h: [u8; Handle::LEN] = k.try_into().map_err(|_| Error::Corrupt(Corruption::Key))?;
            let m = EraseMarker::decode(v)?;
            self.erased.insert(Handle(h), m.epoch);
            if !m.purged {
                pending.insert(Handle(h), m.epoch);
            }
            it.next();
        }
        it.status()?;
        drop(pending);

        let keys_cf = self.cf(CF_KEYS)?;
        let mut it = self.db.raw_iterator_cf(keys_cf);
        it.seek_to_first();
        let mut users = 0u64;
        let mut redactions = self.pending_redactions.lock();
        while let Some((k, v)) = it.item() {
            users += 1;
            // Policies feed the compaction filter and the purger. A damaged
            // record is reported when the user is used (it fails closed there).
            if let Ok(h) = <[u8; Handle::LEN]>::try_from(k) {
                match KeyRecord::decode(v) {
                    Ok(rec) => {
                        if let KeyState::Governed(policy) = &rec.state {
                            self.erased.set_policy(Handle(h), Some(policy));
                            if policy.purge_pending {
                                redactions.insert(Handle(h), 0);
                            }
                        }
                    }
                    // Unsure of its policy (it may be on hold): retention
                    // keeps everything of this user.
                    Err(_) => self.erased.set_policy(
                        Handle(h),
                        Some(&UserPolicy {
                            retention: codec::Retention::Forever,
                            ..UserPolicy::default()
                        }),
                    ),
                }
            }
            it.next();
        }
        drop(redactions);
        it.status()?;
        self.users.store(users, Ordering::Relaxed);
        Ok(())
    }

    /// Read options confined to one handle's message range.
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

    /// The newest stored message of `handle`, whatever its epoch.
    fn last_message(&self, handle: &Handle) -> Result<Option<Last>> {
        self.last_in(CF_MESSAGES, handle)
    }

    /// The newest record of `handle` in a `handle || u64` keyed column
    /// family (`messages` or `consent`).
    fn last_in(&self, cf_name: &str, handle: &Handle) -> Result<Option<Last>> {
        let cf = self.cf(cf_name)?;
        let mut it = self
            .db
            .raw_iterator_cf_opt(cf, Self::handle_read_options(handle));
        it.seek_for_prev(message_key(handle, u64::MAX));
        if !it.valid() {
            it.status()?;
            return Ok(None);
        }
        let (key, value) = it.item().ok_or(Error::Corrupt(Corruption::Key))?;
        let (h, seq) = codec::parse_message_key(key)?;
        if h != *handle {
            return Ok(None);
        }
        Ok(Some(Last {
            seq,
            epoch: EnvelopeHeader::parse(value).ok().map(|h| h.epoch),
        }))
    }

    /// Loads a user's state. Caller holds the user's lock.
    fn load(&self, handle: &Handle) -> Result<UserState> {
        if let Some(c) = self.cache.lock().get(handle) {
            return Ok(UserState::Live(c.clone()));
        }
        let last = self.last_message(handle)?;
        let after_last = last
            .map_or(1, |l| l.seq.saturating_add(1))
            .max(self.seq_floor(handle)?);
        let keys = self.cf(CF_KEYS)?;
        if let Some(bytes) = self.db.get_pinned_cf(keys, handle.as_bytes())? {
            let rec = KeyRecord::decode(&bytes)?;
            if let Some(l) = last
                && l.epoch()? > rec.epoch
            {
                return Err(Error::Corrupt(Corruption::EpochMismatch));
            }
            let secret = crypto::unwrap_secret(
                &self.wrap,
                &KeyRecord::wrap_aad(handle, rec.epoch),
                &rec.wrapped_secret,
            )?;
            let cipher = crypto::message_cipher(&secret, &self.salt, handle, rec.epoch);
            let state = CachedUser {
                epoch: rec.epoch,
                cipher: Arc::new(cipher),
                first_seq: rec.first_seq,
                next_seq: rec.first_seq.max(after_last),
                policy: Arc::new(rec.state.policy()),
            };
            self.cache.lock().put(*handle, state.clone());
            return Ok(UserState::Live(state));
        }
        let marker = self.get_marker(handle)?;
        // Messages or consent records without a key record or a covering
        // erasure: a lost key.
        let covered = marker.as_ref().map_or(0, |m| m.epoch);
        for l in [last, self.last_in(CF_CONSENT, handle)?]
            .into_iter()
            .flatten()
        {
            if l.epoch()? > covered {
                return Err(Error::Corrupt(Corruption::MissingKeyRecord));
            }
        }
        let next_seq = marker
            .as_ref()
            .map_or(1, |m| m.next_seq)
            .max(after_last)
            .max(1);
        Ok(UserState::Absent { marker, next_seq })
    }

    /// The user's seq high-water mark (1 if none is stored).
    fn seq_floor(&self, handle: &Handle) -> Result<u64> {
        let Some(v) = self
            .db
            .get_pinned_cf(self.cf(CF_DEDUP)?, handle.as_bytes())?
        else {
            return Ok(1);
        };
        let b: [u8; 8] = v
            .as_ref()
            .try_into()
            .map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        Ok(u64::from_be_bytes(b))
    }

    /// Whether retention may remove messages of a user with `policy`: then
    /// appends also store the seq high-water mark, since the last message
    /// (which otherwise tells the next seq) may be dropped by compaction.
    fn retention_may_apply(&self, policy: &UserPolicy) -> bool {
        policy.expired_before_ms > 0 || policy.period(self.default_retention_ms).is_some()
    }

    /// With a store-wide retention period, every user needs a seq high-water
    /// mark; users appended while there was none get one now (once: a `meta`
    /// flag remembers it, and is cleared when the store opens without one).
    fn ensure_seq_floors(&self) -> Result<()> {
        let meta = self.cf(CF_META)?;
        let flagged = self
            .db
            .get_pinned_cf(meta, layout::META_SEQ_FLOORS)?
            .is_some();
        let mut batch = WriteBatch::default();
        match (self.default_retention_ms.is_some(), flagged) {
            (false, true) => batch.delete_cf(meta, layout::META_SEQ_FLOORS),
            (true, false) => {
                let mut it = self.db.raw_iterator_cf(self.cf(CF_KEYS)?);
                it.seek_to_first();
                while let Some(k) = it.key() {
                    let h = Handle(k.try_into().map_err(|_| Error::Corrupt(Corruption::Key))?);
                    let next = self
                        .last_message(&h)?
                        .map_or(1, |l| l.seq.saturating_add(1));
                    if next > self.seq_floor(&h)? {
                        batch.put_cf(self.cf(CF_DEDUP)?, h.as_bytes(), next.to_be_bytes());
                    }
                    it.next();
                }
                it.status()?;
                batch.put_cf(meta, layout::META_SEQ_FLOORS, [1u8]);
            }
            _ => return Ok(()),
        }
        self.write(batch, true)
    }

    fn get_marker(&self, handle: &Handle) -> Result<Option<EraseMarker>> {
        let cf = self.cf(CF_ERASED)?;
        self.db
            .get_pinned_cf(cf, handle.as_bytes())?
            .map(|b| EraseMarker::decode(&b))
            .transpose()
    }

    fn validate_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<()> {
        if payloads.is_empty() {
            return Err(InvalidArgument::EmptyBatch.into());
        }
        if payloads.len() > self.max_batch {
            return Err(InvalidArgument::BatchTooLarge {
                len: payloads.len(),
                max: self.max_batch,
            }
            .into());
        }
        let mut total = 0usize;
        for p in payloads {
            let len = p.as_ref().len();
            if len > self.max_payload {
                return Err(InvalidArgument::PayloadTooLarge {
                    len,
                    max: self.max_payload,
                }
                .into());
            }
            total = total.saturating_add(len);
        }
        if total > self.max_batch_bytes {
            return Err(InvalidArgument::BatchBytesTooLarge {
                len: total,
                max: self.max_batch_bytes,
            }
            .into());
        }
        Ok(())
    }

    /// Appends `payloads`; with a client message id (single payload only),
    /// returns the earlier append instead if the id was seen. The bool says
    /// whether it was a duplicate.
    fn append_inner<P: AsRef<[u8]>>(
        &self,
        user: &UserId,
        payloads: &[P],
        client_message_id: Option<&[u8]>,
    ) -> Result<(Vec<Appended>, bool)> {
        self.validate_batch(payloads)?;
        self.check_writable()?;
        let handle = self.handle_key.handle(user);
        let _guard = self.lock(&handle);
        let dedup_key = client_message_id.map(|id| self.handle_key.dedup_key(&handle, id));
        if let (Some(key), [payload]) = (&dedup_key, payloads)
            && let Some(earlier) = self.find_duplicate(&handle, key, payload.as_ref())?
        {
            return Ok((vec![earlier], true));
        }

        let (mut state, new_record) = match self.load(&handle)? {
            UserState::Live(s) => {
                if s.policy.restriction.block_appends {
                    return Err(Error::Restricted {
                        mode: "block_appends",
                    });
                }
                (s, None)
            }
            UserState::Absent { marker, next_seq } => {
                let (s, rec) = self.new_user(&handle, marker.as_ref(), next_seq)?;
                let mut encoded = Vec::new();
                rec.encode(&mut encoded);
                (s, Some(encoded))
            }
        };

        let n = u64::try_from(payloads.len()).map_err(|_| Error::SeqExhausted)?;
        let first = state.next_seq;
        let end = first
            .checked_add(n)
            .filter(|&e| e < u64::MAX)
            .ok_or(Error::SeqExhausted)?;
        let now = self.clock.now_ms();
        let messages = self.cf(CF_MESSAGES)?;
        let mut batch = WriteBatch::default();
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(payloads.len());
        for (seq, p) in (first..end).zip(payloads) {
            let mut nonce = [0u8; NONCE_LEN];
            self.rng.fill(&mut nonce)?;
            let aad = Envelope::aad(&handle, seq, state.epoch, now);
            buf.clear();
            Envelope::encode_with(
                &mut buf,
                EnvelopeKind::Message,
                state.epoch,
                now,
                &nonce,
                p.as_ref(),
                |pt| state.cipher.seal_in_place(&nonce, &aad, pt),
            )?;
            batch.put_cf(messages, message_key(&handle, seq), &buf);
            out.push(Appended {
                seq,
                timestamp_ms: now,
            });
        }
        // First append of a user (epoch): key record and messages in one batch,
        // so ciphertext is never durable without its key.
        if let Some(rec) = &new_record {
            batch.put_cf(self.cf(CF_KEYS)?, handle.as_bytes(), rec);
        }
        if self.retention_may_apply(&state.policy) {
            batch.put_cf(self.cf(CF_DEDUP)?, handle.as_bytes(), end.to_be_bytes());
        }
        if let Some(key) = &dedup_key {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&first.to_be_bytes());
            v[8..].copy_from_slice(&now.to_be_bytes());
            batch.put_cf(self.cf(CF_DEDUP)?, key, v);
        }
        self.write(batch, self.durability == Durability::Sync)?;
        if new_record.is_some() {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
        state.next_seq = end;
        self.cache.lock().put(handle, state);
        Ok((out, false))
    }

    /// Looks up a client message id. Caller holds the user's lock.
    fn find_duplicate(
        &self,
        handle: &Handle,
        key: &[u8; DEDUP_KEY_LEN],
        payload: &[u8],
    ) -> Result<Option<Appended>> {
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_DEDUP)?, key)? else {
            return Ok(None);
        };
        let v: [u8; 16] = v
            .as_ref()
            .try_into()
            .map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        let (mut seq, mut ts) = ([0u8; 8], [0u8; 8]);
        seq.copy_from_slice(&v[..8]);
        ts.copy_from_slice(&v[8..]);
        let (seq, timestamp_ms) = (u64::from_be_bytes(seq), u64::from_be_bytes(ts));
        // Erase deletes a user's dedup entries in the same batch as the key
        // record, so an entry always has a live user and message.
        let UserState::Live(state) = self.load(handle)? else {
            return Err(Error::Corrupt(Corruption::MissingKeyRecord));
        };
        let key = message_key(handle, seq);
        let Some(stored) = self.db.get_pinned_cf(self.cf(CF_MESSAGES)?, key)? else {
            // Retention dropped the original (a user retention ever applied
            // to has a seq high-water mark): the retry is still a duplicate
            // of it, though its payload can no longer be compared. Anything
            // else is a lost message.
            let retained = self.retention_may_apply(&state.policy)
                || self
                    .db
                    .get_pinned_cf(self.cf(CF_DEDUP)?, handle.as_bytes())?
                    .is_some();
            return if retained {
                Ok(Some(Appended { seq, timestamp_ms }))
            } else {
                Err(Error::Corrupt(Corruption::MissingKeyRecord))
            };
        };
        let original = open_message(handle, &state, &key, &stored)?;
        // A redacted message's retry is still the same message: report it,
        // never store it again.
        if original.redaction.is_none() && original.payload != payload {
            return Err(Error::IdempotencyConflict);
        }
        Ok(Some(Appended { seq, timestamp_ms }))
    }

    /// A fresh user secret for `epoch`: the cache entry and the encoded key record.
    fn new_user_state(
        &self,
        handle: &Handle,
        epoch: u32,
        first_seq: u64,
    ) -> Result<(CachedUser, KeyRecord)> {
        let secret = Secret32::random(self.rng.as_ref())?;
        let wrapped = crypto::wrap_secret(
            &self.wrap,
            self.rng.as_ref(),
            &KeyRecord::wrap_aad(handle, epoch),
            &secret,
        )?;
        let rec = KeyRecord {
            epoch,
            wrapped_secret: wrapped,
            created_ms: self.clock.now_ms(),
            first_seq,
            state: KeyState::Active,
        };
        let cipher = crypto::message_cipher(&secret, &self.salt, handle, epoch);
        Ok((
            CachedUser {
                epoch,
                cipher: Arc::new(cipher),
                first_seq,
                next_seq: first_seq,
                policy: Arc::new(UserPolicy::default()),
            },
            rec,
        ))
    }

    fn read_iter(&self, user: &UserId, from_seq: u64, access: Access) -> Result<MessageIter<'_>> {
        let handle = self.handle_key.handle(user);
        // Load the state and create the iterator under the user's lock, so a
        // read that starts after an erase returned can never see the old key.
        let _guard = self.lock(&handle);
        let state = match self.load(&handle)? {
            UserState::Live(s) => s,
            UserState::Absent { .. } => {
                return Ok(MessageIter {
                    inner: self,
                    raw: None,
                    handle,
                    state: None,
                    erase_generation: 0,
                    horizon: 0,
                    done: true,
                });
            }
        };
        if state.policy.restriction.block_reads && access == Access::Subject {
            return Err(Error::Restricted {
                mode: "block_reads",
            });
        }
        let horizon = state
            .policy
            .horizon(self.clock.now_ms(), self.default_retention_ms);
        let erase_generation = self.erase_generation.load(Ordering::Acquire);
        let cf = self.cf(CF_MESSAGES)?;
        let mut raw = self
            .db
            .raw_iterator_cf_opt(cf, Self::handle_read_options(&handle));
        // Seqs before this epoch's first belong to erased epochs: skip them.
        raw.seek(message_key(&handle, from_seq.max(state.first_seq)));
        Ok(MessageIter {
            inner: self,
            raw: Some(raw),
            handle,
            state: Some(state),
            erase_generation,
            horizon,
            done: false,
        })
    }

    fn erase(&self, user: &UserId, options: EraseOptions, actor: &str) -> Result<Erased> {
        self.check_writable()?;
        let handle = self.handle_key.handle(user);
        let _guard = self.lock(&handle);
        let now = self.clock.now_ms();

        let keys = self.cf(CF_KEYS)?;
        let messages = self.cf(CF_MESSAGES)?;
        // Erase must work on a damaged user too: an unreadable marker is
        // rewritten, an unreadable key record or header triggers a scan.
        let old_marker = match self.get_marker(&handle) {
            Err(e @ Error::Corrupt(_)) => {
                tracing::warn!(%handle, error = %e, "unreadable erasure marker; rewriting it");
                None
            }
            other => other?,
        };
        let record = self.db.get_pinned_cf(keys, handle.as_bytes())?;
        let had_record = record.is_some();
        let decoded = record.as_ref().and_then(|b| KeyRecord::decode(b).ok());
        drop(record);
        if decoded
            .as_ref()
            .is_some_and(|r| r.state.policy().active_hold(now).is_some())
        {
            tracing::info!(%handle, "erase refused: legal hold");
            return self.audit_refusal(actor, AuditOp::Erase, handle, Err(Error::LegalHold));
        }
        let known = decoded.map(|r| (r.epoch, r.first_seq));
        let last = self.last_message(&handle)?;
        let after_last = last.map_or(1, |l| l.seq.saturating_add(1));
        let marker_epoch = old_marker.as_ref().map_or(0, |m| m.epoch);

        // Normally the key record names the only epoch with live messages. If
        // the record is unreadable, or the newest message's epoch is unreadable
        // or newer, find the highest stored epoch (a scan, on this path only).
        let damaged = match (known, last) {
            (_, Some(Last { epoch: None, .. })) => true,
            (Some((k, _)), Some(Last { epoch: Some(e), .. })) => e > k,
            (None, Some(Last { epoch: Some(e), .. })) => had_record || e > marker_epoch,
            (_, None) => false,
        };
        let mut epoch = known.map_or(0, |(e, _)| e).max(marker_epoch);
        if damaged {
            epoch = epoch.max(self.max_epoch(&handle)?);
        }
        let first_seq = known.map_or(after_last, |(_, f)| f);
        let next_seq = after_last
            .max(first_seq)
            .max(old_marker.as_ref().map_or(1, |m| m.next_seq))
            .max(self.seq_floor(&handle)?);
        let messages_before = if known.is_some() {
            next_seq.saturating_sub(first_seq)
        } else {
            0
        };
        // Consent records without a readable key record: their range must
        // be purged too.
        if let Some(c) = self.last_in(CF_CONSENT, &handle)? {
            epoch = epoch.max(c.epoch.unwrap_or(1)).max(1);
        }
        // Epoch 0 means nothing was ever stored: there is nothing to purge.
        let nothing_stored = epoch == 0;
        let marker = EraseMarker {
            epoch,
            erased_at_ms: now,
            next_seq,
            block_new: options.block_new || old_marker.as_ref().is_some_and(|m| m.block_new),
            purged: nothing_stored,
        };
        let mut encoded = Vec::new();
        marker.encode(&mut encoded);

        let mut batch = WriteBatch::default();
        batch.delete_cf(keys, handle.as_bytes());
        batch.put_cf(self.cf(CF_ERASED)?, handle.as_bytes(), &encoded);
        // Forget the user's client message ids (keyed hashes, but still theirs).
        delete_handle_range(&mut batch, self.cf(CF_DEDUP)?, &handle);
        // The consent history is sealed under the destroyed key: drop it too.
        delete_handle_range(&mut batch, self.cf(CF_CONSENT)?, &handle);
        if self.erase_delete_range {
            delete_handle_range(&mut batch, messages, &handle);
        }
        // The audit record commits with the erasure, or neither does.
        self.put_audit(
            &mut batch,
            actor,
            AuditOp::Erase,
            Some(handle),
            AuditOutcome::Ok,
        )?;
        self.write(batch, true)?;

        // The evicted cipher's key schedule is zeroized when its last Arc drops.
        drop(self.cache.lock().pop(&handle));
        // The policy went with the key record; the erasure's purge covers
        // any pending redaction.
        self.erased.set_policy(handle, None);
        self.pending_redactions.lock().remove(&handle);
        if had_record {
            self.users.fetch_sub(1, Ordering::Relaxed);
        }
        if !nothing_stored {
            self.erased.insert(handle, epoch);
            // Open iterators check this after `erased` has the new epoch.
            self.erase_generation.fetch_add(1, Ordering::Release);
            self.pending.lock().insert(handle, epoch);
            self.purger_signal.notify();
        }
        tracing::info!(%handle, epoch, messages_before, "user erased");
        let receipt = self.receipt(ErasureReceipt {
            handle,
            epoch,
            erased_at_ms: now,
            messages_erased: messages_before,
            purge_status: if nothing_stored {
                PurgeStatus::Purged
            } else {
                PurgeStatus::Pending
            },
            mac: [0; 32],
        });
        Ok(Erased {
            handle,
            messages_before,
            epoch,
            erased_at_ms: now,
            receipt,
        })
    }

    /// Highest epoch among all stored messages of `handle` (full scan).
    fn max_epoch(&self, handle: &Handle) -> Result<u32> {
        let cf = self.cf(CF_MESSAGES)?;
        let mut it = self
            .db
            .raw_iterator_cf_opt(cf, Self::handle_read_options(handle));
        it.seek(message_key(handle, 0));
        let mut max = 0;
        while let Some(v) = it.value() {
            if let Ok(h) = EnvelopeHeader::parse(v) {
                max = max.max(h.epoch);
            }
            it.next();
        }
        it.status()?;
        Ok(max)
    }

    fn verify_erasure(&self, user: &UserId) -> Result<ErasureCheck> {
        let handle = self.handle_key.handle(user);
        let marker = self.get_marker(&handle)?;
        let erased_epoch = marker.as_ref().map_or(0, |m| m.epoch);
        let live_key = self
            .db
            .get_pinned_cf(self.cf(CF_KEYS)?, handle.as_bytes())?
            .is_some();
        let (mut erased_records, mut live_records) = (0u64, 0u64);
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_MESSAGES)?, Self::handle_read_options(&handle));
        it.seek(message_key(&handle, 0));
        while let Some((k, v)) = it.item() {
            if !k.starts_with(handle.as_bytes()) {
                break;
            }
            // An unreadable header counts as erased data: it must not hide.
            match EnvelopeHeader::parse(v) {
                Ok(h) if h.epoch > erased_epoch => live_records += 1,
                _ => erased_records += 1,
            }
            it.next();
        }
        it.status()?;
        let mut erased_consents = 0u64;
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_CONSENT)?, Self::handle_read_options(&handle));
        it.seek(handle.as_bytes());
        while let Some((k, v)) = it.item() {
            if !k.starts_with(handle.as_bytes()) {
                break;
            }
            if EnvelopeHeader::parse(v).map_or(true, |h| h.epoch <= erased_epoch) {
                erased_consents += 1;
            }
            it.next();
        }
        it.status()?;
        let mut dedup_entries = 0u64;
        let mut it = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_DEDUP)?, Self::handle_read_options(&handle));
        it.seek(handle.as_bytes());
        while let Some(k) = it.key() {
            if !k.starts_with(handle.as_bytes()) {
                break;
            }
            dedup_entries += 1;
            it.next();
        }
        it.status()?;
        Ok(ErasureCheck {
            handle,
            marker: marker.map(|m| ErasureState {
                epoch: m.epoch,
                erased_at_ms: m.erased_at_ms,
                purged: m.purged,
            }),
            live_key,
            erased_records,
            live_records,
            dedup_entries,
            erased_consents,
        })
    }

    fn flush_all(&self) -> Result<()> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        // Every column family: one left unflushed would pin the old WALs.
        let cfs = layout::ALL_CFS
            .iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>>>()?;
        self.db.flush_cfs_opt(&cfs, &fo)?;
        // The default column family is unused but shares the WAL.
        self.db.flush_opt(&fo)?;
        Ok(())
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.lock().is_empty() || !self.pending_redactions.lock().is_empty()
    }

    fn purge(&self, actor: &str) -> Result<PurgeReport> {
        let report = self.purge_inner();
        let outcome = match &report {
            Ok(r) if r.complete => AuditOutcome::Ok,
            _ => AuditOutcome::Failed,
        };
        // Purges with nothing to do are not worth a record.
        if report.as_ref().map_or(true, |r| {
            r.erasures_purged > 0 || r.redactions_purged > 0 || !r.complete
        }) && !self.poisoned.load(Ordering::Acquire)
        {
            self.record_audit(actor, AuditOp::Purge, None, outcome)?;
        }
        report
    }

    fn purge_inner(&self) -> Result<PurgeReport> {
        let _purging = self.purge_lock.lock();
        self.check_writable()?;
        let started = Instant::now();
        let batch: Vec<(Handle, u32)> = self.pending.lock().iter().map(|(h, e)| (*h, *e)).collect();
        let redactions: Vec<(Handle, u64)> = self
            .pending_redactions
            .lock()
            .iter()
            .map(|(h, g)| (*h, *g))
            .collect();
        let mut ranges: Vec<Handle> = batch.iter().map(|(h, _)| *h).collect();
        ranges.extend(redactions.iter().map(|(h, _)| *h));
        ranges.sort_unstable();
        ranges.dedup();
        let errors_before = self.background_errors()?;
        let wals_before = file_numbers(&self.data_dir, ".log")?;
        self.flush_all()?;

        let opts = force_compact_options();
        for name in [CF_MESSAGES, CF_KEYS, CF_DEDUP, CF_CONSENT] {
            let cf = self.cf(name)?;
            if ranges.len() > PER_RANGE_PURGE_LIMIT {
                self.db
                    .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
                continue;
            }
            for handle in &ranges {
                let start = handle.as_bytes().to_vec();
                let end = codec::handle_upper_bound(handle).map(|b| b.to_vec());
                self.db.compact_range_cf_opt(cf, Some(start), end, &opts);
            }
        }
        // compact_range reports no errors: a failed compaction shows up as a
        // background error, and would leave erased envelopes first in range.
        let compacted = self.background_errors()? == errors_before && self.ranges_clean(&batch)?;
        let complete = compacted && self.wait_obsolete_files_deleted(&wals_before)?;
        let (mut purged, mut redactions_purged) = (0, 0);
        if complete {
            purged = self.mark_purged(&batch)?;
            redactions_purged = self.mark_redactions_purged(&redactions)?;
            self.purges_done.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::warn!(
                compacted,
                "purge incomplete: compaction failed or obsolete files are pinned; will retry"
            );
        }
        let report = PurgeReport {
            erasures_purged: purged,
            redactions_purged,
            complete,
            duration: started.elapsed(),
        };
        tracing::info!(
            erasures_purged = report.erasures_purged,
            redactions_purged,
            complete,
            duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            "purge finished"
        );
        Ok(report)
    }

    fn background_errors(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value("rocksdb.background-errors")?
            .unwrap_or(0))
    }

    /// Whether every purged handle's range is free of erased envelopes. Erased
    /// epochs hold lower seqs than any later epoch, so checking the first
    /// envelope of each range suffices.
    fn ranges_clean(&self, batch: &[(Handle, u32)]) -> Result<bool> {
        let cf = self.cf(CF_MESSAGES)?;
        for (handle, epoch) in batch {
            let mut it = self
                .db
                .raw_iterator_cf_opt(cf, Self::handle_read_options(handle));
            it.seek(message_key(handle, 0));
            if let Some(v) = it.value()
                && EnvelopeHeader::parse(v).is_ok_and(|h| h.epoch <= *epoch)
            {
                return Ok(false);
            }
            it.status()?;
        }
        Ok(true)
    }

    /// Waits until RocksDB has deleted the SST files that were obsolete when
    /// compaction finished, and every WAL older than the current one that
    /// existed before the flush. Returns `false` on timeout (something, such as
    /// an open iterator or snapshot, pins them); files created afterwards by
    /// concurrent work are not waited for.
    fn wait_obsolete_files_deleted(&self, wals_before: &[u64]) -> Result<bool> {
        let live_ssts = || -> Result<HashSet<u64>> {
            Ok(self
                .db
                .live_files()?
                .iter()
                .filter_map(|f| file_number(f.name.trim_start_matches('/'), ".sst"))
                .collect())
        };
        let live = live_ssts()?;
        let mut leftover_ssts: Vec<u64> = file_numbers(&self.data_dir, ".sst")?
            .into_iter()
            .filter(|n| !live.contains(n))
            .collect();
        let current_wal = file_numbers(&self.data_dir, ".log")?.into_iter().max();
        let mut old_wals: Vec<u64> = wals_before
            .iter()
            .copied()
            .filter(|w| current_wal.is_some_and(|c| *w < c))
            .collect();
        let deadline = Instant::now() + OBSOLETE_FILE_WAIT;
        loop {
            let live = live_ssts()?;
            let ssts: HashSet<u64> = file_numbers(&self.data_dir, ".sst")?.into_iter().collect();
            leftover_ssts.retain(|n| ssts.contains(n) && !live.contains(n));
            let wals: HashSet<u64> = file_numbers(&self.data_dir, ".log")?.into_iter().collect();
            old_wals.retain(|w| wals.contains(w));
            if leftover_ssts.is_empty() && old_wals.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Marks the markers of `batch` purged (unless the user was erased again
    /// meanwhile) and removes them from the pending set.
    fn mark_purged(&self, batch: &[(Handle, u32)]) -> Result<usize> {
        let mut done = 0;
        for (handle, epoch) in batch {
            let _guard = self.lock(handle);
            let Some(mut marker) = self.get_marker(handle)? else {
                continue;
            };
            if marker.epoch != *epoch || marker.purged {
                continue;
            }
            marker.purged = true;
            let mut encoded = Vec::new();
            marker.encode(&mut encoded);
            let mut wb = WriteBatch::default();
            wb.put_cf(self.cf(CF_ERASED)?, handle.as_bytes(), &encoded);
            // Not synced: if the flag is lost in a crash, the erasure is purged again.
            self.write(wb, false)?;
            let mut pending = self.pending.lock();
            if pending.get(handle) == Some(epoch) {
                pending.remove(handle);
            }
            done += 1;
        }
        Ok(done)
    }

    fn stats(&self) -> Result<Stats> {
        let messages_estimate = self
            .db
            .property_int_value_cf(self.cf(CF_MESSAGES)?, "rocksdb.estimate-num-keys")?
            .unwrap_or(0);
        Ok(Stats {
            users: self.users.load(Ordering::Relaxed),
            messages_estimate,
            pending_erasures: self.pending.lock().len() as u64,
            pending_redactions: self.pending_redactions.lock().len() as u64,
            purges_done: self.purges_done.load(Ordering::Relaxed),
            filter_drops: self.db_opts.get_ticker_count(Ticker::CompactionKeyDropUser),
            bytes_on_disk: dir_size(&self.data_dir)?,
            rocksdb_sequence: self.db.latest_sequence_number(),
        })
    }
}

/// The number of a RocksDB file such as `000123.sst`, compared numerically
/// (names past 999999 are wider, so text order would be wrong).
fn file_number(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

/// Numbers of the files in `dir` ending in `suffix`.
fn file_numbers(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|n| file_number(n, suffix)) {
            out.push(n);
        }
    }
    Ok(out)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // RocksDB deletes obsolete files at any time: one listed a moment ago
        // may be gone.
        let meta = match entry.metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

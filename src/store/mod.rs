//! The store: the [`Store`] facade over rooms that each hold one family of
//! operations — `append`, `read`, `erase`, `purge` (and the background
//! `purger`), `verify`, `export`, `audit`, `rights`, `redact`, `consent`,
//! `stats` — with the users table (`users`: stripe locks, key cache, key
//! creation, the next-seq formula), sealing (`sealing`), recovery at open
//! (`open`), what the compaction filter removes (`filter_state`), and the
//! one layer that knows RocksDB (`engine`).

mod append;
mod audit;
mod backup;
mod changes;
mod consent;
mod conv_append;
mod conv_delete;
mod conv_purge;
mod conv_read;
mod conv_rights;
mod conversation;
mod conversations;
mod engine;
mod erase;
mod export;
mod filter_state;
mod inner;
mod ledger;
mod open;
mod options;
mod purge;
#[cfg(feature = "jetstream")]
mod purge_js;
mod purger;
mod read;
mod redact;
mod rights;
mod rootkey;
mod sealing;
mod stats;
#[cfg(all(test, feature = "jetstream"))]
mod test_cluster;
#[cfg(all(test, feature = "jetstream"))]
mod tests_jetstream;
mod users;
mod verify;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use append::{
    Appended, IdempotentAppend, MAX_CLIENT_MESSAGE_ID_LEN, validate_client_message_id,
};
pub use audit::AuditCursor;
pub(crate) use backup::inspect_dir;
pub use backup::{JournalReplay, RESTORE_ACTOR};
pub use changes::{ChangeCursor, ChangeEntry};
pub use consent::ConsentEntry;
pub use conv_rights::MAX_SUBJECTS;
pub use conversation::{
    Conversation, ConversationDeleted, ConversationItem, ConversationMessage, Tombstone,
    TombstoneCause,
};
#[cfg(feature = "jetstream")]
pub use engine::jetstream::JetStreamOptions;
pub use engine::open_plain_baseline;
pub use erase::{EraseOptions, Erased};
pub use export::{AuthoredMessage, ExportCursor, ExportItem, ExportManifest};
pub use inner::StoreLimits;
pub use ledger::{ErasureRequest, ErasureRequestState, ErasureRequested, LEDGER_ACTOR, RequestId};
pub use options::{DEFAULT_MAX_PAYLOAD, Durability, MemoryBudget, MemoryEnv, Options, TestHooks};
pub use purge::PurgeReport;
pub use read::{Message, MessageIter, Redaction};
pub use redact::Redacted;
pub use rights::{Access, RightsState};
pub use rootkey::{ROTATION_ACTOR, RotationStatus};
pub use stats::Stats;
pub use verify::{ErasureCheck, ErasureState};

use crate::codec::{AuditOp, AuditOutcome, AuditRecord, ErasureReceipt, PurgeStatus};
use crate::error::{Corruption, Error, Result};
use crate::types::{Handle, UserId};
use engine::Cf;
#[cfg(feature = "internals")]
pub use filter_state::{FilterState, SHARDS as FILTER_SHARDS};
use inner::{Inner, Pending};

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
    /// Idempotency index: `handle || HMAC(handle_key, label || handle ||
    /// client_message_id)[..16]` to the message's seq and timestamp.
    pub const CF_DEDUP: &str = "dedup";
    /// Seq high-water marks: handle to the next seq (u64 BE), kept for
    /// users whose newest messages retention may remove, so seqs are not
    /// reused.
    pub const CF_SEQ_FLOORS: &str = "seq_floors";
    /// Audit trail: `time_ms_be64 || counter_be64` to an audit record.
    /// Append-only; holds handles, never user ids; not erased with a user.
    pub const CF_AUDIT: &str = "audit";
    /// Consent history: `handle || index_be64` to a consent envelope sealed
    /// under the user's key.
    pub const CF_CONSENT: &str = "consent";
    /// Conversation key records, keyed by conversation handle.
    pub const CF_CONV_KEYS: &str = "conv_keys";
    /// Conversation slots (messages, redaction markers, tombstones), keyed
    /// by `conv handle || seq_be64`.
    pub const CF_CONV_MESSAGES: &str = "conv_messages";
    /// Conversation deletion markers, keyed by conversation handle.
    pub const CF_CONV_DELETED: &str = "conv_deleted";
    /// The author index: `author handle || conv handle || seq_be64` to the
    /// author's key epoch (u32 BE).
    pub const CF_AUTHORS: &str = "authors";
    /// The subjects index: `user handle || conv handle` (empty values).
    pub const CF_SUBJECTS: &str = "subjects";
    /// The change feed: change number (u64 BE) to a change record (what an
    /// erasure, deletion, redaction or expiry took away, by handle and seq).
    pub const CF_CHANGES: &str = "changes";
    /// Expiry reported on the change feed: user or conversation handle to
    /// the seq (u64 BE) below which every message was reported expired.
    pub const CF_EXPIRY_MARKS: &str = "expiry_marks";
    /// Every column family shredstore creates (besides RocksDB's `default`).
    pub const ALL_CFS: [&str; 15] = [
        CF_META,
        CF_KEYS,
        CF_MESSAGES,
        CF_ERASED,
        CF_DEDUP,
        CF_SEQ_FLOORS,
        CF_AUDIT,
        CF_CONSENT,
        CF_CONV_KEYS,
        CF_CONV_MESSAGES,
        CF_CONV_DELETED,
        CF_AUTHORS,
        CF_SUBJECTS,
        CF_CHANGES,
        CF_EXPIRY_MARKS,
    ];
    /// The column families of a format-2 store (before conversations); it
    /// is upgraded in place by adding the others.
    pub const FORMAT_2_CFS: [&str; 8] = [
        CF_META,
        CF_KEYS,
        CF_MESSAGES,
        CF_ERASED,
        CF_DEDUP,
        CF_SEQ_FLOORS,
        CF_AUDIT,
        CF_CONSENT,
    ];
    /// `meta` key of the format version (u32 BE).
    pub const META_FORMAT_VERSION: &[u8] = b"format_version";
    /// `meta` key of the 32-byte store salt.
    pub const META_STORE_SALT: &[u8] = b"store_salt";
    /// `meta` key of the wrapped handle key.
    pub const META_HANDLE_KEY: &[u8] = b"handle_key";
    /// `meta` key of the root-key generation that wraps `handle_key` (u32
    /// BE; absent: 1).
    pub const META_ROOT_KEY_GENERATION: &[u8] = b"root_key_generation";
    /// `meta` key of the root-key rotation in progress, if any.
    pub const META_ROTATION: &[u8] = b"rotation";
    /// `meta` key of the retired root keys (absent: none).
    pub const META_ROOT_KEYS: &[u8] = b"root_keys";
    /// `meta` key present while every user has a seq high-water mark (see
    /// [`CF_SEQ_FLOORS`]); written when a store-wide retention period is in
    /// force.
    pub const META_SEQ_FLOORS: &[u8] = b"seq_floors";
}

/// The actor named in audit records of direct library calls.
pub const LIBRARY_ACTOR: &str = "library";

/// An encrypted, append-only message store with per-user crypto-shredding.
///
/// `Store` is `Send + Sync`; share it with an `Arc`. All calls are synchronous.
pub struct Store {
    inner: Arc<Inner>,
    /// The background threads, stopped in this order: the ledger's runner
    /// (its erasures need the store), the rotation, the purger.
    workers: Vec<worker::Worker>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.inner.engine.name())
            .field("data_dir", &self.inner.engine.dir())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `options`' data directory.
    ///
    /// # Errors
    /// [`Error::WrongRootKey`] if the root key is not the one the store was
    /// created with, [`Error::UnsupportedFormat`] for a store of another
    /// format version (left unchanged), [`Error::Corrupt`],
    /// [`Error::InvalidArgument`] for bad options, or a storage/I/O error.
    pub fn open(options: Options) -> Result<Store> {
        let purge_interval = options.purge_interval;
        let (rotation_batch, rotation_pause) = (options.rotation_batch, options.rotation_pause);
        let ledger_interval = options.ledger_interval;
        let inner = Inner::open(options)?;
        let mut workers = Vec::new();
        if let Some(every) = ledger_interval {
            workers.push(ledger::spawn(Arc::clone(&inner), every)?);
        }
        if inner.rotation_status().is_some() {
            workers.push(rootkey::spawn(
                Arc::clone(&inner),
                rotation_batch,
                rotation_pause,
            )?);
        }
        if let Some(every) = purge_interval {
            workers.push(purger::spawn(Arc::clone(&inner), every)?);
        }
        tracing::info!(
            engine = inner.engine.name(),
            data_dir = %inner.engine.dir().map(|d| d.display().to_string()).unwrap_or_default(),
            users = inner.users.count.load(Ordering::Relaxed),
            pending_erasures = inner.pending.lock().len(),
            root_key_generation = inner.keys.generation,
            "store opened"
        );
        Ok(Store { inner, workers })
    }

    /// The generation of the root key this store runs under: 1 until a
    /// rotation, then one more for each (the new key's during a rotation).
    pub fn root_key_generation(&self) -> u32 {
        self.inner.keys.generation
    }

    /// The root-key rotation in progress, if any. It started when the
    /// store was opened with a new root key and its previous one
    /// ([`Options::previous_root_key`]), and runs in the background.
    pub fn rotation(&self) -> Option<RotationStatus> {
        self.inner.rotation_status()
    }

    /// Runs the root-key rotation in progress to its end in the calling
    /// thread (the background thread may run batches too; they take turns).
    /// When it returns, the previous root key opens nothing. Does nothing
    /// without a rotation.
    ///
    /// # Errors
    /// A storage error (the rotation stays resumable), or a damaged
    /// `meta` record.
    pub fn finish_rotation(&self) -> Result<()> {
        while !self.inner.rotation_step(4096)? {}
        Ok(())
    }

    /// The root-key rotation this store finished since it was opened (by
    /// the background thread or [`Store::finish_rotation`]), with its final
    /// counts; `None` if none finished.
    pub fn finished_rotation(&self) -> Option<RotationStatus> {
        self.inner.finished_rotation()
    }

    /// The argument limits this store enforces.
    pub fn limits(&self) -> StoreLimits {
        self.inner.limits
    }

    /// When an acknowledged write is durable ([`Options::durability`]).
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The handle (pseudonym) of a user id in this store. Handles are safe to
    /// log; they appear in RocksDB keys instead of user ids.
    pub fn handle(&self, user: &UserId) -> Handle {
        self.inner.handle(user)
    }

    /// Appends one message for `user`.
    ///
    /// # Errors
    /// [`InvalidArgument::PayloadTooLarge`](crate::InvalidArgument::PayloadTooLarge),
    /// [`Error::Blocked`], [`Error::Restricted`], [`Error::Poisoned`], or a
    /// storage error (which poisons the store).
    pub fn append(&self, user: &UserId, payload: &[u8]) -> Result<Appended> {
        let (mut v, _) = self
            .inner
            .counted(self.inner.append(user, &[payload], None))?;
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
    /// As [`Store::append`], plus invalid client message ids and
    /// [`Error::IdempotencyConflict`] if the id was used with another payload.
    pub fn append_idempotent(
        &self,
        user: &UserId,
        client_message_id: &[u8],
        payload: &[u8],
    ) -> Result<IdempotentAppend> {
        validate_client_message_id(client_message_id)?;
        let (mut v, duplicate) =
            self.inner
                .counted(self.inner.append(user, &[payload], Some(client_message_id)))?;
        let appended = v.pop().ok_or(Error::Corrupt(Corruption::Encoding))?;
        Ok(IdempotentAppend {
            appended,
            duplicate,
        })
    }

    /// Appends several messages for `user` in one atomic write: all of them or
    /// none are stored. Seqs are consecutive.
    ///
    /// # Errors
    /// As [`Store::append`], plus an empty batch, or one over `max_batch`
    /// payloads or `max_batch_bytes`.
    pub fn append_batch<P: AsRef<[u8]>>(
        &self,
        user: &UserId,
        payloads: &[P],
    ) -> Result<Vec<Appended>> {
        self.inner
            .counted(self.inner.append(user, payloads, None))
            .map(|(v, _)| v)
    }

    /// Reads up to `limit` messages of `user` with seq >= `from_seq`, in seq
    /// order, each authenticated and decrypted. An unknown or erased user reads
    /// as empty.
    ///
    /// # Errors
    /// A zero or too large limit, [`Error::Corrupt`] or [`Error::Decrypt`]
    /// for damaged records, [`Error::Restricted`], or a storage error.
    pub fn read(&self, user: &UserId, from_seq: u64, limit: usize) -> Result<Vec<Message>> {
        self.read_with(user, from_seq, limit, Access::Subject)
    }

    /// Streams the messages of `user` with seq >= `from_seq`, in seq order
    /// (see [`MessageIter`]: pages of 64, no file pinned between them, stops
    /// at an erase).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the user's key record is lost or damaged,
    /// [`Error::Restricted`], or a storage error.
    pub fn read_iter(&self, user: &UserId, from_seq: u64) -> Result<MessageIter<'_>> {
        self.inner.counted(
            self.inner
                .read_iter(user, from_seq, Access::Subject, read::ITER_PAGE),
        )
    }

    /// [`Store::read`] with an explicit access level: [`Access::Override`]
    /// reads a user whose reads are restricted (`block_reads`, for legal
    /// claims). The caller records the override in the audit trail
    /// ([`AuditOp::RestrictedRead`]); the gRPC server does so for its admin
    /// role.
    ///
    /// # Errors
    /// As [`Store::read`].
    pub fn read_with(
        &self,
        user: &UserId,
        from_seq: u64,
        limit: usize,
        access: Access,
    ) -> Result<Vec<Message>> {
        self.inner.check_limit(limit)?;
        self.inner
            .counted(
                self.inner
                    .read_iter(user, from_seq, access, limit.min(read::MAX_PAGE)),
            )?
            .take(limit)
            .collect()
    }

    /// Exports everything the store holds about `user` (GDPR Art. 15 and 20):
    /// every readable message of their own log, in seq order, then every
    /// message they wrote in a conversation (under their current key, with
    /// the conversation's id), each handed to `sink`, then a manifest
    /// describing them. `actor` is named in the export's audit record
    /// (written when the export completes; a refused or failed export is
    /// recorded as such).
    ///
    /// # Errors
    /// A damaged record, a storage error, or the first error `sink` returns
    /// (the export stops there).
    pub fn export_as(
        &self,
        user: &UserId,
        actor: &str,
        sink: impl FnMut(ExportItem) -> Result<()>,
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
        mut sink: impl FnMut(ExportItem) -> Result<()>,
    ) -> Result<ExportManifest> {
        let mut cursor = self.export_begin(user, access);
        let result = (|| {
            while !cursor.is_done() {
                for m in self.export_page(&mut cursor, read::ITER_PAGE)? {
                    sink(ExportItem::Message(m))?;
                }
            }
            while !cursor.is_authored_done() {
                for m in self.export_authored_page(&mut cursor, read::ITER_PAGE)? {
                    sink(ExportItem::Authored(m))?;
                }
            }
            Ok(())
        })();
        self.export_end(cursor, actor, result)
    }

    /// Starts an export to be read page by page ([`Store::export_page`]),
    /// for callers that hand pages to a slow consumer: the cursor holds no
    /// storage resource between pages. End it with [`Store::export_end`].
    pub fn export_begin(&self, user: &UserId, access: Access) -> ExportCursor {
        ExportCursor::new(user, access)
    }

    /// The next page of at most `limit` messages of an export (empty once
    /// [`ExportCursor::is_done`]). Each page sees the store as it is when it
    /// is read.
    ///
    /// # Errors
    /// [`Error::Restricted`], a damaged record or a storage error.
    pub fn export_page(&self, cursor: &mut ExportCursor, limit: usize) -> Result<Vec<Message>> {
        self.inner.counted(self.inner.export_page(cursor, limit))
    }

    /// The next page of at most `limit` messages the user wrote in
    /// conversations, each with its conversation's id, once the own log is
    /// done ([`ExportCursor::is_done`]); empty once
    /// [`ExportCursor::is_authored_done`].
    ///
    /// # Errors
    /// A damaged record or a storage error.
    pub fn export_authored_page(
        &self,
        cursor: &mut ExportCursor,
        limit: usize,
    ) -> Result<Vec<AuthoredMessage>> {
        self.inner
            .counted(self.inner.export_authored_page(cursor, limit))
    }

    /// Ends an export. `result` is how the caller's page loop ended (`Ok`,
    /// or the error that stopped it: a page that failed, a consumer that
    /// went away). Returns the manifest of what was exported, and writes
    /// the export's audit record naming `actor` (`ok`, `refused` or
    /// `failed`).
    ///
    /// # Errors
    /// `result`'s error, or one building the manifest.
    pub fn export_end(
        &self,
        cursor: ExportCursor,
        actor: &str,
        result: Result<()>,
    ) -> Result<ExportManifest> {
        self.inner
            .counted(self.inner.export_end(cursor, actor, result))
    }

    /// Erases `user` (crypto-shredding): one synced, atomic write deletes the
    /// user's key record and records an erasure marker; cached key material is
    /// evicted and zeroized. When it returns, no read returns any message the
    /// user had. Cost does not depend on the user's message count. Physical
    /// removal follows at the next [`Store::purge`].
    ///
    /// Erasing an unknown or already erased user succeeds (`messages_erased` 0).
    /// An open erasure request of the user ([`Store::request_erasure_as`])
    /// is done with it, in the same write; if that request deletes the
    /// user's subject conversations, so does this erasure.
    ///
    /// # Errors
    /// [`Error::LegalHold`] (also for a subject conversation on hold that
    /// the erasure deletes), [`Error::Poisoned`] or a storage error.
    pub fn erase(&self, user: &UserId) -> Result<Erased> {
        self.erase_as(user, EraseOptions::default(), LIBRARY_ACTOR)
    }

    /// [`Store::erase`] with options.
    ///
    /// # Errors
    /// As [`Store::erase`].
    pub fn erase_with(&self, user: &UserId, options: EraseOptions) -> Result<Erased> {
        self.erase_as(user, options, LIBRARY_ACTOR)
    }

    /// [`Store::erase_with`] on behalf of `actor` (a token or service name,
    /// at most 64 bytes kept), who is named in the audit record written in
    /// the same atomic batch as the erasure.
    ///
    /// # Errors
    /// As [`Store::erase`].
    pub fn erase_as(&self, user: &UserId, options: EraseOptions, actor: &str) -> Result<Erased> {
        self.inner.counted(self.inner.erase(user, options, actor))
    }

    /// Makes pending erasures and redactions physical: flushes every column
    /// family (so WAL files holding old key records become obsolete),
    /// compacts the key ranges of the pending users through the compaction
    /// filter, reads the files now holding those ranges to confirm nothing
    /// erased is left, and waits until the files that held them are deleted.
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

    /// Appends an audit record for an operation the caller carried out or
    /// refused (a read with the override, a refused request, a read of the
    /// trail). The store records its own operations; a caller cannot record
    /// one of them as done.
    ///
    /// # Errors
    /// [`InvalidArgument::ReservedAuditOp`](crate::InvalidArgument::ReservedAuditOp)
    /// for a successful erase, purge, export or rights change; a poisoned
    /// store or a failed write.
    pub fn record_audit(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        self.inner.record_caller_audit(actor, op, handle, outcome)
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
        self.inner.audit_page(from_ms, to_ms, after, limit)
    }

    /// Whether `receipt` was issued by this store (same root key and store)
    /// and is unchanged. Constant-time.
    pub fn verify_receipt(&self, receipt: &ErasureReceipt) -> bool {
        self.inner.verify_receipt(receipt)
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

    /// The current purge status of the latest deletion of the conversation
    /// with `handle`, or `None` if it was never deleted.
    ///
    /// # Errors
    /// A storage error or a damaged marker.
    pub fn conversation_purge_status(&self, handle: &Handle) -> Result<Option<PurgeStatus>> {
        Ok(self.inner.conv_marker(handle)?.map(|m| {
            if m.purged {
                PurgeStatus::Purged
            } else {
                PurgeStatus::Pending
            }
        }))
    }

    /// Tells a JetStream store that every replica which was offline or
    /// behind during a purge has been rebuilt (README "Scale-out"): the
    /// erasures purged then are reported physical at the next purge.
    /// Audited (operation `purge`). Returns how many erasures it released.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on RocksDB; [`Error::JetStream`] while a
    /// replica is still not current.
    #[cfg(feature = "jetstream")]
    pub fn confirm_replicas_rebuilt(&self, actor: &str) -> Result<usize> {
        let released = self.inner.confirm_replicas_rebuilt()?;
        self.inner
            .record_audit(actor, AuditOp::Purge, None, AuditOutcome::Ok)?;
        Ok(released)
    }

    /// Flushes all memtables to SST files.
    ///
    /// # Errors
    /// A storage error.
    pub fn flush(&self) -> Result<()> {
        self.inner.engine.flush_all()
    }

    /// Compacts every column family completely (bottommost level included).
    /// A maintenance operation; `purge` is the targeted form.
    ///
    /// # Errors
    /// A storage error.
    pub fn compact(&self) -> Result<()> {
        self.inner.engine.flush_all()?;
        for cf in Cf::ALL {
            self.inner.engine.compact(cf, None, None)?;
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

    /// Checks what is left on disk of `user`, reading the files themselves
    /// (see [`ErasureCheck`]): every stored version of the user's records in
    /// the SST files whose key range meets the user's and in every SST file
    /// RocksDB does not use, and the WAL files older than the erasure. For
    /// operators who must show that an erasure became physical.
    ///
    /// # Errors
    /// A storage or I/O error, or a damaged marker.
    pub fn verify_erasure(&self, user: &UserId) -> Result<ErasureCheck> {
        self.inner.counted(self.inner.verify_erasure(user))
    }

    /// Syncs the WAL to stable storage: makes every `Durability::Buffered`
    /// append so far durable. A failure poisons the store.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or a storage error.
    pub fn sync(&self) -> Result<()> {
        self.inner.engine.sync_wal()
    }

    /// Syncs the WAL and closes the store, stopping the background purger.
    ///
    /// # Errors
    /// A storage error from the final WAL sync, or [`Error::Poisoned`]: a
    /// store poisoned by an earlier failure cannot promise its buffered
    /// writes are durable.
    pub fn close(mut self) -> Result<()> {
        self.stop_workers();
        self.inner.engine.sync_wal()
    }

    fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.stop();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

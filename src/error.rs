//! Typed errors. Messages never contain user ids, payloads or key material.

use std::fmt;

/// Everything that can go wrong in shredstore.
///
/// Marked `#[non_exhaustive]`: match the variants you care about and keep a
/// catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed an argument that is out of range; nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),

    /// The root key does not open this store's wrapped handle key: it is not the
    /// root key the store was created with.
    #[error("the root key does not match this store")]
    WrongRootKey,

    /// The root key was retired by a finished root-key rotation: the store
    /// opens only with its current root key now.
    #[error(
        "this root key (generation {retired}) was retired by a root-key rotation; \
         open the store with its current root key (generation {current})"
    )]
    RetiredRootKey {
        /// The generation of the key given.
        retired: u32,
        /// The store's current root-key generation.
        current: u32,
    },

    /// The root keys given cannot open the store in its rotation state: a
    /// rotation in progress needs the new key as the root key and the old
    /// one as the previous root key; a new one cannot start before it ends.
    #[error("root-key rotation: {0}")]
    RootKeyRotation(&'static str),

    /// A record failed authentication (AEAD tag mismatch). Deliberately opaque:
    /// a wrong key, a moved record and tampering all look the same.
    #[error("decryption failed")]
    Decrypt,

    /// A stored record is damaged or inconsistent (checksum mismatch, bad
    /// encoding, a missing key record). The store fails closed.
    #[error("corrupt store: {0}")]
    Corrupt(Corruption),

    /// The data directory was written by an unsupported format version.
    #[error("unsupported on-disk format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// The version found in the store.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },

    /// A previous write or sync failed; the store refuses further writes until
    /// it is reopened.
    #[error("the store is poisoned by an earlier failed write; reopen it")]
    Poisoned,

    /// The user was erased with `block_new`; new messages for it are refused.
    #[error("the user was erased and new data for it is blocked")]
    Blocked,

    /// Processing of the user's data is restricted (GDPR Art. 18): appends
    /// are refused (`block_appends`) or reads need the privileged path
    /// (`block_reads`).
    #[error("processing of this user's data is restricted ({mode})")]
    Restricted {
        /// `block_appends` or `block_reads`.
        mode: &'static str,
    },

    /// The user is under a legal hold: erase, redact and retention expiry
    /// are refused until it is lifted.
    #[error("the user is under a legal hold; lift it first")]
    LegalHold,

    /// No readable message has this seq (never written, erased or expired).
    #[error("no such message")]
    NoSuchMessage,

    /// No erasure request has this id.
    #[error("no such erasure request")]
    NoSuchRequest,

    /// The erasure request can no longer be cancelled: its grace period is
    /// over, or it is done or cancelled.
    #[error("the erasure request is past its grace period, done or cancelled")]
    RequestClosed,

    /// A client message id was reused for the same user with a different payload.
    #[error("client message id already used with a different payload")]
    IdempotencyConflict,

    /// The user's sequence numbers are exhausted (more than 2^64 - 2 messages).
    #[error("sequence numbers exhausted for this user")]
    SeqExhausted,

    /// The root key material is malformed (wrong length or encoding).
    #[error("invalid root key: {0}")]
    InvalidRootKey(&'static str),

    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed")]
    Random,

    /// RocksDB reported an error.
    #[error("storage engine error")]
    Storage(#[source] rocksdb::Error),

    /// A concurrent write (another front end of the same JetStream cluster)
    /// changed a record this write depended on; nothing was written. Read
    /// again and retry.
    #[error("a concurrent write changed a record this write depends on; nothing was written")]
    Conflict,

    /// The JetStream cluster refused or failed a request (the message is
    /// JetStream's, without subjects, keys or payloads). A write that failed
    /// this way may or may not have been applied.
    #[error("JetStream: {0}")]
    JetStream(String),

    /// The engine's settings do not fit the cluster or the store found
    /// there (a partition count other than the store's, a stream configured
    /// otherwise, a credentials file that does not load, a bad URL).
    #[error("engine configuration: {0}")]
    EngineConfig(String),

    /// The store runs on an engine that cannot keep this operation's
    /// guarantee (file-level checks, compaction and checkpoints are
    /// RocksDB's; see README's engine table).
    #[error("{operation} is not available on the {engine} engine")]
    Unsupported {
        /// The engine (`jetstream`).
        engine: &'static str,
        /// What was asked for.
        operation: &'static str,
    },

    /// A filesystem operation outside RocksDB failed.
    #[error("I/O error")]
    Io(#[from] std::io::Error),

    /// A backup, journal or restore cannot go on (see [`BackupError`]).
    #[error("backup: {0}")]
    Backup(#[from] BackupError),
}

/// Why a backup, an erasure journal or a restore was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file is not a shredstore backup.
    #[error("not a shredstore backup file")]
    NotABackup,
    /// The file is neither an erasure journal nor a backup.
    #[error("not a shredstore erasure journal or backup file")]
    NotAJournal,
    /// The backup file is damaged or incomplete.
    #[error("the backup file is damaged or incomplete: {0}")]
    Damaged(&'static str),
    /// The journal belongs to another store.
    #[error("the erasure journal is of another store")]
    OtherStore,
    /// No journal newer than the backup was given: erasures made since the
    /// backup was taken would come back.
    #[error(
        "no erasure journal newer than the backup (its journal is of {backup_ms} ms since the \
         Unix epoch, the newest given of {journal_ms}): users and conversations erased since \
         would come back. Give a newer journal (a newer backup, `shredstore journal`, or the \
         running server's address), or accept this with --accept-stale-journal"
    )]
    StaleJournal {
        /// The time of the backup's own journal.
        backup_ms: u64,
        /// The time of the newest journal given (the backup's own if none).
        journal_ms: u64,
    },
    /// The directory to restore into exists and is not empty.
    #[error("the target directory exists and is not empty")]
    TargetNotEmpty,
    /// A root-key rotation is in progress: back up once it finished.
    #[error("a root-key rotation is in progress; take the backup once it finished")]
    RotationInProgress,
    /// Another backup of this store is being taken.
    #[error("another backup of this store is being taken")]
    Busy,
    /// The store lives in memory (a test hook): it has no files to copy.
    #[error("the store has no files to back up (in-memory test store)")]
    InMemory,
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e)
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which argument was invalid, with the limit it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArgument {
    /// A user id must be at least one byte long.
    #[error("user id is empty")]
    EmptyUserId,
    /// A user id is longer than the maximum.
    #[error("user id is {len} bytes, the maximum is {max}")]
    UserIdTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A conversation id must be at least one byte long.
    #[error("conversation id is empty")]
    EmptyConversationId,
    /// A conversation id is longer than the maximum.
    #[error("conversation id is {len} bytes, the maximum is {max}")]
    ConversationIdTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A conversation declares more subjects than the maximum.
    #[error("{len} subjects, the maximum is {max}")]
    TooManySubjects {
        /// How many were given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A payload is larger than the configured maximum.
    #[error("payload is {len} bytes, the maximum is {max}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A batch must hold at least one payload.
    #[error("batch is empty")]
    EmptyBatch,
    /// A batch holds more payloads than the configured maximum.
    #[error("batch holds {len} payloads, the maximum is {max}")]
    BatchTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A batch's payloads add up to more than the configured maximum.
    #[error("batch holds {len} payload bytes, the maximum is {max}")]
    BatchBytesTooLarge {
        /// Its total payload size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A client message id must be at least one byte long.
    #[error("client message id is empty")]
    EmptyClientMessageId,
    /// A client message id is longer than the maximum.
    #[error("client message id is {len} bytes, the maximum is {max}")]
    ClientMessageIdTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A read limit must be at least 1.
    #[error("read limit is 0")]
    ZeroLimit,
    /// A read limit is larger than the configured maximum.
    #[error("read limit {limit} exceeds the maximum {max}")]
    LimitTooLarge {
        /// The requested limit.
        limit: usize,
        /// The maximum.
        max: usize,
    },
    /// A reason or purpose is longer than the maximum.
    #[error("{what} is {len} bytes, the maximum is {max}")]
    TextTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A restriction needs at least one mode.
    #[error("no restriction mode given")]
    NoRestrictionMode,
    /// A consent purpose must not be empty.
    #[error("consent purpose is empty")]
    EmptyPurpose,
    /// A retention period must be at least 1 ms.
    #[error("retention period is 0")]
    ZeroRetention,
    /// A legal hold's end lies in the past.
    #[error("legal hold end time is not in the future")]
    HoldEndsInPast,

    /// An erasure request's grace period ends after its due date.
    #[error("grace period of {grace_ms} ms ends after the due date ({due_ms} ms after receipt)")]
    GraceTooLong {
        /// The grace period asked for.
        grace_ms: u64,
        /// The store's due period.
        due_ms: u64,
    },

    /// An erasure request id that is not 16 bytes (32 hex digits).
    #[error("erasure request id is not 32 hex digits")]
    RequestId,
    /// [`Store::record_audit`](crate::Store::record_audit) was asked to record
    /// one of the store's own operations as done (only the store does).
    #[error("the {op} operation records itself; a caller may record only its refusal or failure")]
    ReservedAuditOp {
        /// The operation's name.
        op: &'static str,
    },
    /// A change-feed cursor is malformed, or ahead of the feed (it comes
    /// from another store, or from before a restore).
    #[error("change cursor {0}")]
    ChangeCursor(&'static str),
    /// An option given to [`Store::open`](crate::Store::open) is out of range.
    #[error("invalid option: {0}")]
    Option(&'static str),
}

/// What kind of corruption was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// A record's CRC32 does not match its contents (disk corruption).
    Checksum,
    /// A record could not be decoded (truncated, unknown version or tag).
    Encoding,
    /// A user has messages but neither a key record nor an erasure marker: the
    /// key was lost. This is never treated as an erasure.
    MissingKeyRecord,
    /// A message's epoch does not match its position: it is newer than the
    /// user's key record, or older than the key's first seq allows.
    EpochMismatch,
    /// Store metadata is missing or malformed.
    Meta,
    /// A stored key does not have the expected layout.
    Key,
    /// A key record names a root-key generation this store does not hold
    /// a key for.
    RootKeyGeneration,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Corruption::Checksum => "checksum mismatch",
            Corruption::Encoding => "undecodable record",
            Corruption::MissingKeyRecord => {
                "messages exist without a key record or erasure marker (lost key)"
            }
            Corruption::EpochMismatch => "message epoch does not match its key record",
            Corruption::Meta => "store metadata missing or malformed",
            Corruption::Key => "malformed storage key",
            Corruption::RootKeyGeneration => "a key record is wrapped under an unknown root key",
        })
    }
}

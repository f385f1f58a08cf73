//! # shredstore
//!
//! An encrypted, append-only message store for chat services, built so that a
//! person's right to erasure (GDPR Art. 17) is cheap, immediate and provable.
//!
//! Each user's messages are sealed with AES-256-GCM-SIV under a per-user key
//! derived with HKDF from a random per-user secret, which is stored only wrapped
//! under the root key. [`Store::erase`] destroys that secret (crypto-shredding):
//! the user's data is unreadable at once, and [`Store::purge`] then removes the
//! ciphertext from disk through a RocksDB compaction filter.
//!
//! ```
//! # fn main() -> Result<(), shredstore::Error> {
//! use shredstore::{Options, RootKey, Store, UserId};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(Options::new(dir.path(), RootKey::generate()?))?;
//! let alice = UserId::new("alice@example.com")?;
//!
//! let a = store.append(&alice, b"hello")?;
//! assert_eq!(store.read(&alice, a.seq, 10)?[0].payload, b"hello");
//!
//! store.erase(&alice)?;                      // unreadable from here on
//! assert!(store.read(&alice, 0, 10)?.is_empty());
//! store.purge()?;                            // and gone from disk
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The library must not panic on bad input or bad data: no unwrap/expect/panic
// outside tests (each exception is an `#[expect]` with its reason).
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod backup;
mod codec;
mod crypto;
mod error;
#[cfg(feature = "server")]
pub mod load;
#[cfg(feature = "server")]
pub mod server;
mod store;
mod types;

pub use codec::{
    AuditOp, AuditOutcome, AuditRecord, Change, Consent, ErasureReceipt, LegalBasis, LegalHold,
    MAX_REASON_LEN, PurgeStatus, ReceiptSubject, Restriction, Retention,
};
pub use crypto::{OsRandom, RootKey, SecureRandom};
pub use error::{BackupError, Corruption, Error, InvalidArgument, Result};
#[cfg(feature = "jetstream")]
pub use store::JetStreamOptions;
pub use store::{
    Access, Appended, AuditCursor, AuthoredMessage, ChangeCursor, ChangeEntry, ConsentEntry,
    Conversation, ConversationDeleted, ConversationItem, ConversationMessage, DEFAULT_MAX_PAYLOAD,
    Durability, EraseOptions, Erased, ErasureCheck, ErasureRequest, ErasureRequestState,
    ErasureRequested, ErasureState, ExportCursor, ExportItem, ExportManifest, IdempotentAppend,
    LEDGER_ACTOR, LIBRARY_ACTOR, MAX_CLIENT_MESSAGE_ID_LEN, MAX_SUBJECTS, MemoryBudget, MemoryEnv,
    Message, MessageIter, Options, PurgeReport, ROTATION_ACTOR, Redacted, Redaction, RequestId,
    RightsState, RotationStatus, Stats, Store, StoreLimits, TestHooks, Tombstone, TombstoneCause,
    layout, open_plain_baseline, validate_client_message_id,
};
pub use types::{
    Clock, ConversationId, Handle, MAX_CONVERSATION_ID_LEN, MAX_USER_ID_LEN, SystemClock, UserId,
};

/// Encoding and crypto internals, for the project's own fuzzers and
/// benchmarks (feature `internals`, off by default). Not an API: nothing
/// here is stable.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::codec::*;
    pub use crate::crypto::*;
    pub use crate::store::{FILTER_SHARDS, FilterState};
}

/// The README's examples run as doc tests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

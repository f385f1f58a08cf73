//! The conversation facade: [`Store::conversation`] and the operations of
//! one conversation, with the types they return. The work is done in
//! `conv_append`, `conv_read` and `conv_delete`.

use std::fmt;

use super::append::{Appended, IdempotentAppend, validate_client_message_id};
use super::redact::Redacted;
use super::rights::check_text;
use super::{LIBRARY_ACTOR, Store, read};
use crate::codec::{AuditOp, ErasureReceipt};
use crate::error::{Corruption, Error, Result};
use crate::types::{ConversationId, Handle, UserId};

/// One slot of a conversation as a read returns it.
#[derive(Clone, PartialEq, Eq)]
pub enum ConversationItem {
    /// A readable message.
    Message(ConversationMessage),
    /// A message that can no longer be read, in its place (replies and
    /// threads keep their anchor).
    Tombstone(Tombstone),
}

impl ConversationItem {
    /// The slot's seq.
    pub fn seq(&self) -> u64 {
        match self {
            ConversationItem::Message(m) => m.seq,
            ConversationItem::Tombstone(t) => t.seq,
        }
    }

    /// The message's append time, ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        match self {
            ConversationItem::Message(m) => m.timestamp_ms,
            ConversationItem::Tombstone(t) => t.timestamp_ms,
        }
    }
}

impl fmt::Debug for ConversationItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversationItem::Message(m) => m.fmt(f),
            ConversationItem::Tombstone(t) => t.fmt(f),
        }
    }
}

/// A readable conversation message.
#[derive(Clone, PartialEq, Eq)]
pub struct ConversationMessage {
    /// Its seq (per conversation, strictly increasing, never reused).
    pub seq: u64,
    /// Append time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Who wrote it.
    pub author: UserId,
    /// What they wrote.
    pub payload: Vec<u8>,
}

impl fmt::Debug for ConversationMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConversationMessage")
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("author", &self.author)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A slot whose message can no longer be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The slot's seq.
    pub seq: u64,
    /// The message's append time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Why.
    pub cause: TombstoneCause,
}

/// Why a slot is a tombstone.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TombstoneCause {
    /// The author was erased: what they wrote is shredded.
    AuthorErased,
    /// The message was redacted ("deleted for everyone").
    Redacted {
        /// The caller's reason.
        reason: String,
        /// When, ms since the Unix epoch.
        redacted_at_ms: u64,
    },
}

impl fmt::Debug for TombstoneCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TombstoneCause::AuthorErased => f.write_str("AuthorErased"),
            TombstoneCause::Redacted {
                reason,
                redacted_at_ms,
            } => f
                .debug_struct("Redacted")
                .field("reason_len", &reason.len())
                .field("redacted_at_ms", redacted_at_ms)
                .finish(),
        }
    }
}

/// What [`Conversation::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationDeleted {
    /// The conversation's handle (safe to log).
    pub handle: Handle,
    /// The key epoch now deleted.
    pub epoch: u32,
    /// Slots written under it (0 if it had no key).
    pub messages_deleted: u64,
    /// When the deletion was committed, ms since the Unix epoch.
    pub deleted_at_ms: u64,
    /// The signed receipt ([`Store::verify_receipt`]).
    pub receipt: ErasureReceipt,
}

/// One conversation of a store ([`Store::conversation`]). Cheap to make;
/// holds no lock and no key.
pub struct Conversation<'s> {
    store: &'s Store,
    id: ConversationId,
    handle: Handle,
}

impl fmt::Debug for Conversation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A conversation (a room, channel or direct chat) of this store. Each
    /// message is sealed under a key derived from its author's user secret
    /// and the conversation's secret: erasing the author
    /// ([`Store::erase`]) or deleting the conversation
    /// ([`Conversation::delete`]) shreds it in O(1).
    pub fn conversation(&self, id: &ConversationId) -> Conversation<'_> {
        Conversation {
            store: self,
            id: id.clone(),
            handle: self.inner.conversation_handle(id),
        }
    }
}

impl Conversation<'_> {
    pub(super) fn inner(&self) -> &super::Inner {
        &self.store.inner
    }

    pub(super) fn id(&self) -> &ConversationId {
        &self.id
    }

    /// The conversation's handle (its pseudonym on disk; safe to log).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Appends one message by `author`.
    ///
    /// # Errors
    /// [`InvalidArgument::PayloadTooLarge`](crate::InvalidArgument::PayloadTooLarge),
    /// [`Error::Blocked`] (the author was erased with `block_new`),
    /// [`Error::Restricted`] (the author's appends are restricted),
    /// [`Error::Poisoned`], or a storage error.
    pub fn append(&self, author: &UserId, payload: &[u8]) -> Result<Appended> {
        let inner = &self.store.inner;
        let (mut v, _) =
            inner.counted(inner.conv_append(&self.id, &self.handle, author, &[payload], None))?;
        v.pop().ok_or(Error::Corrupt(Corruption::Encoding))
    }

    /// Appends several messages by `author` in one atomic write, with
    /// consecutive seqs: all of them or none are stored.
    ///
    /// # Errors
    /// As [`Conversation::append`], plus an empty or oversize batch.
    pub fn append_batch<P: AsRef<[u8]>>(
        &self,
        author: &UserId,
        payloads: &[P],
    ) -> Result<Vec<Appended>> {
        let inner = &self.store.inner;
        inner
            .counted(inner.conv_append(&self.id, &self.handle, author, payloads, None))
            .map(|(v, _)| v)
    }

    /// Appends one message unless `client_message_id` was already used in
    /// this conversation, in which case it returns the original seq and
    /// stores nothing. The id is remembered until the conversation is
    /// deleted; only a keyed hash of it is stored.
    ///
    /// # Errors
    /// As [`Conversation::append`], plus invalid client message ids and
    /// [`Error::IdempotencyConflict`] if the id was used with another
    /// author or payload.
    pub fn append_idempotent(
        &self,
        author: &UserId,
        client_message_id: &[u8],
        payload: &[u8],
    ) -> Result<IdempotentAppend> {
        validate_client_message_id(client_message_id)?;
        let inner = &self.store.inner;
        let (mut v, duplicate) = inner.counted(inner.conv_append(
            &self.id,
            &self.handle,
            author,
            &[payload],
            Some(client_message_id),
        ))?;
        let appended = v.pop().ok_or(Error::Corrupt(Corruption::Encoding))?;
        Ok(IdempotentAppend {
            appended,
            duplicate,
        })
    }

    /// Reads up to `limit` slots with seq >= `from_seq`, oldest first: each
    /// a message or, where the author was erased or the message redacted,
    /// a tombstone. A deleted or unknown conversation reads as empty.
    ///
    /// # Errors
    /// A zero or too large limit, a damaged record, or a storage error.
    pub fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ConversationItem>> {
        let inner = &self.store.inner;
        inner.check_limit(limit)?;
        inner.counted(inner.conv_read(&self.handle, from_seq, limit, false))
    }

    /// Reads up to `limit` slots with seq < `before_seq`, newest first
    /// (scrollback; `u64::MAX` starts at the newest).
    ///
    /// # Errors
    /// As [`Conversation::read`].
    pub fn read_back(&self, before_seq: u64, limit: usize) -> Result<Vec<ConversationItem>> {
        let inner = &self.store.inner;
        inner.check_limit(limit)?;
        let Some(from) = before_seq.checked_sub(1) else {
            return Ok(Vec::new());
        };
        inner.counted(inner.conv_read(&self.handle, from, limit, true))
    }

    /// Redacts slot `seq` ("delete for everyone"): replaces it by a marker
    /// that keeps seq and time and holds `reason` (sealed under the
    /// conversation's key); reads return a tombstone with the reason. The
    /// old ciphertext goes at the next purge.
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`], [`Error::LegalHold`],
    /// [`InvalidArgument::TextTooLong`](crate::InvalidArgument::TextTooLong),
    /// a damaged record or a storage error.
    pub fn redact(&self, seq: u64, reason: &str) -> Result<Redacted> {
        self.redact_as(seq, reason, LIBRARY_ACTOR)
    }

    /// [`Conversation::redact`] on behalf of `actor`, named in its audit
    /// record.
    ///
    /// # Errors
    /// As [`Conversation::redact`].
    pub fn redact_as(&self, seq: u64, reason: &str, actor: &str) -> Result<Redacted> {
        let inner = &self.store.inner;
        let r = check_text("redaction reason", reason).and_then(|()| {
            inner.counted(inner.conv_redact(&self.handle, seq, reason, actor, None))
        });
        inner.audit_refusal(actor, AuditOp::ConversationRedact, self.handle, r)
    }

    /// Deletes the conversation (crypto-shredding): one synced, atomic
    /// write deletes its key record and records a deletion marker. When it
    /// returns, the conversation reads as empty; its ciphertext and index
    /// entries go at the next purge. Deleting an unknown or deleted
    /// conversation succeeds (`messages_deleted` 0). Seqs continue after
    /// the deleted ones if it is used again.
    ///
    /// # Errors
    /// [`Error::LegalHold`], [`Error::Poisoned`] or a storage error.
    pub fn delete(&self) -> Result<ConversationDeleted> {
        self.delete_as(LIBRARY_ACTOR)
    }

    /// [`Conversation::delete`] on behalf of `actor`, named in the audit
    /// record written in the same atomic batch.
    ///
    /// # Errors
    /// As [`Conversation::delete`].
    pub fn delete_as(&self, actor: &str) -> Result<ConversationDeleted> {
        let inner = &self.store.inner;
        inner.counted(inner.conv_delete(&self.handle, actor))
    }
}

/// Largest page a conversation read fetches at once.
pub(super) const MAX_PAGE: usize = read::MAX_PAGE;

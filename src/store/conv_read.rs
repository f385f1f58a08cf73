//! Reading a conversation forward or backward: slots fetched with a cursor
//! that lives for one page, then each opened under its author's key, or
//! returned as a tombstone where the author was erased or the message
//! redacted (computed from the author's erasure before purge, stored
//! after it: a slot reads the same either way).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::Inner;
use super::conversation::{
    ConversationItem, ConversationMessage, MAX_PAGE, Tombstone, TombstoneCause,
};
use super::conversations::{CachedConv, ConvState};
use super::engine::{Cf, Scope};
use super::users::{CachedUser, UserState};
use crate::codec::{
    ConvKind, ConvRecord, ConvSealed, ConvSlot, RedactionBody, decode_message_body, message_key,
    parse_message_key,
};
use crate::error::{Corruption, Error, Result};
use crate::types::{Handle, UserId};

/// What a read knows of one author.
pub(super) enum AuthorView {
    /// The author has a key of this state.
    Live(CachedUser),
    /// No key; epochs up to this one were erased (0: none ever was).
    Gone(u32),
}

impl Inner {
    /// Up to `limit` slots from `from` (inclusive), forward or backward.
    pub(super) fn conv_read(
        &self,
        handle: &Handle,
        from: u64,
        limit: usize,
        backward: bool,
    ) -> Result<Vec<ConversationItem>> {
        // The state is loaded under the conversation's lock: a read that
        // starts after a deletion returned sees no key.
        let guard = self.convs.lock(handle);
        let conv = match self.load_conv(handle)? {
            ConvState::Live(c) => c,
            ConvState::Absent { .. } => return Ok(Vec::new()),
        };
        drop(guard);
        self.conv_page(handle, &conv, from, limit, backward)
    }

    /// [`Inner::conv_read`] of a loaded conversation.
    pub(super) fn conv_page(
        &self,
        handle: &Handle,
        conv: &CachedConv,
        from: u64,
        limit: usize,
        backward: bool,
    ) -> Result<Vec<ConversationItem>> {
        let mut out = Vec::with_capacity(limit.min(MAX_PAGE));
        let mut authors: HashMap<Handle, AuthorView> = HashMap::new();
        // Expired by retention: hidden now, dropped at compaction.
        let horizon = conv
            .policy
            .horizon(self.clock.now_ms(), self.default_retention_ms);
        // Seqs below the epoch's first belong to deleted epochs.
        let mut next = if backward {
            if from < conv.first_seq {
                return Ok(out);
            }
            from
        } else {
            from.max(conv.first_seq)
        };
        loop {
            let want = (limit - out.len()).min(MAX_PAGE);
            let raw = self.fetch_slots(handle, next, want, backward, conv.first_seq)?;
            let exhausted = raw.len() < want;
            let last = raw.last().map(|(s, _)| *s);
            for (seq, value) in raw {
                if let Some(item) =
                    self.open_slot(handle, conv, seq, &value, horizon, &mut authors)?
                {
                    out.push(item);
                }
            }
            let step = match (last, backward) {
                (Some(l), false) => l.checked_add(1),
                (Some(l), true) => l.checked_sub(1).filter(|&s| s >= conv.first_seq),
                (None, _) => None,
            };
            match step {
                Some(s) if !exhausted && out.len() < limit => next = s,
                _ => return Ok(out),
            }
        }
    }

    /// Up to `want` raw slots from `from`, with a cursor dropped before
    /// returning.
    fn fetch_slots(
        &self,
        handle: &Handle,
        from: u64,
        want: usize,
        backward: bool,
        first_seq: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut it = self
            .engine
            .cursor(Cf::ConvMessages, Scope::Handle(handle))?;
        let mut raw = Vec::with_capacity(want);
        if backward {
            it.seek_for_prev(&message_key(handle, from));
        } else {
            it.seek(&message_key(handle, from));
        }
        while raw.len() < want {
            let Some((key, value)) = it.item() else {
                break;
            };
            let (h, seq) = parse_message_key(key)?;
            if h != *handle || seq < first_seq {
                break;
            }
            raw.push((seq, value.to_vec()));
            if backward {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status()?;
        Ok(raw)
    }

    /// What a read knows of `author` now: from the key cache, or loaded
    /// under the author's lock.
    pub(super) fn author_view(&self, author: &Handle) -> Result<AuthorView> {
        if let Some(s) = self.users.cached(author) {
            return Ok(AuthorView::Live(s));
        }
        let _guard = self.users.lock(author);
        Ok(match self.load(author)? {
            UserState::Live(s) => AuthorView::Live(s),
            UserState::Absent { marker, .. } => AuthorView::Gone(marker.map_or(0, |m| m.epoch)),
        })
    }

    /// Opens one slot; `None` if it expired (its timestamp is below
    /// `horizon`).
    fn open_slot(
        &self,
        handle: &Handle,
        conv: &CachedConv,
        seq: u64,
        value: &[u8],
        horizon: u64,
        authors: &mut HashMap<Handle, AuthorView>,
    ) -> Result<Option<ConversationItem>> {
        let record = ConvRecord::decode(value)?;
        if record.timestamp_ms() < horizon {
            return Ok(None);
        }
        self.open_record(handle, conv, seq, record, authors)
            .map(Some)
    }

    fn open_record(
        &self,
        handle: &Handle,
        conv: &CachedConv,
        seq: u64,
        record: ConvRecord<'_>,
        authors: &mut HashMap<Handle, AuthorView>,
    ) -> Result<ConversationItem> {
        let sealed = match record {
            ConvRecord::Tombstone {
                conv_epoch,
                timestamp_ms,
                ..
            } => {
                if conv_epoch != conv.epoch {
                    return Err(Error::Corrupt(Corruption::EpochMismatch));
                }
                return Ok(ConversationItem::Tombstone(Tombstone {
                    seq,
                    timestamp_ms,
                    cause: TombstoneCause::AuthorErased,
                }));
            }
            ConvRecord::Sealed(s) => s,
        };
        if sealed.conv_epoch != conv.epoch {
            return Err(Error::Corrupt(Corruption::EpochMismatch));
        }
        let slot = slot_of(handle, seq, &sealed);
        if sealed.kind == ConvKind::Redaction {
            let opened =
                conv.cipher
                    .open(&sealed.nonce, &slot.aad(ConvKind::Redaction), sealed.sealed)?;
            let body = RedactionBody::from_bytes(&opened)?;
            return Ok(ConversationItem::Tombstone(Tombstone {
                seq,
                timestamp_ms: sealed.timestamp_ms,
                cause: TombstoneCause::Redacted {
                    reason: body.reason,
                    redacted_at_ms: body.redacted_at_ms,
                },
            }));
        }
        let view = match authors.entry(sealed.author) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.author_view(&sealed.author)?),
        };
        let erased = || {
            Ok(ConversationItem::Tombstone(Tombstone {
                seq,
                timestamp_ms: sealed.timestamp_ms,
                cause: TombstoneCause::AuthorErased,
            }))
        };
        let author = match &*view {
            AuthorView::Live(a) if a.epoch == sealed.author_epoch => a,
            // Erased, and back with a fresh key.
            AuthorView::Live(a) if a.epoch > sealed.author_epoch => return erased(),
            AuthorView::Live(_) => return Err(Error::Corrupt(Corruption::EpochMismatch)),
            AuthorView::Gone(e) if *e >= sealed.author_epoch => return erased(),
            // A message of an author with no key and no covering erasure:
            // a lost key, never to be mistaken for an erasure.
            AuthorView::Gone(_) => return Err(Error::Corrupt(Corruption::MissingKeyRecord)),
        };
        let cipher = self.pair_cipher(handle, conv, &sealed.author, author);
        let opened = cipher.open(&sealed.nonce, &slot.aad(ConvKind::Message), sealed.sealed)?;
        let (author_id, payload) = decode_message_body(&opened)?;
        Ok(ConversationItem::Message(ConversationMessage {
            seq,
            timestamp_ms: sealed.timestamp_ms,
            author: UserId::new(author_id).map_err(|_| Error::Corrupt(Corruption::Encoding))?,
            payload: payload.to_vec(),
        }))
    }
}

/// The slot a sealed record claims to be.
pub(super) fn slot_of(handle: &Handle, seq: u64, sealed: &ConvSealed<'_>) -> ConvSlot {
    ConvSlot {
        conv: *handle,
        seq,
        conv_epoch: sealed.conv_epoch,
        timestamp_ms: sealed.timestamp_ms,
        author: sealed.author,
        author_epoch: sealed.author_epoch,
    }
}

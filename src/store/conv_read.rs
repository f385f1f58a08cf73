//! Reading a conversation forward or backward: slots fetched with a cursor
//! that lives for one page, then each opened under its author's key, or
//! returned as a tombstone where the author was erased or the message
//! redacted (computed from the author's erasure before purge, stored
//! after it: a slot reads the same either way).

use std::collections::hash_map::Entry;
use std::sync::Arc;

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
use crate::crypto::SivCipher;
use crate::error::{Corruption, Error, Result};
use crate::types::{Handle, HandleMap, UserId};

/// What a read knows of one author.
pub(super) enum AuthorView {
    /// The author has a key of this state.
    Live(CachedUser),
    /// No key; epochs up to this one were erased (0: none ever was).
    Gone(u32),
}

/// One author as a page of reads knows it: the view, and the pair cipher
/// once one slot needed it (so later slots of the page take no lock).
struct Author {
    view: AuthorView,
    cipher: Option<Arc<SivCipher>>,
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
        // A cached conversation is read without its lock (appends hold it
        // across their synced write): a deletion evicts the key before it
        // returns, so a read that starts after that misses the cache and
        // loads under the lock, finding no key.
        let conv = match self.fresh_cached_conv(handle)? {
            Some(c) => c,
            None => {
                let _guard = self.convs.lock(handle);
                match self.load_conv(handle)? {
                    ConvState::Live(c) => c,
                    ConvState::Absent { .. } => return Ok(Vec::new()),
                }
            }
        };
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
        let mut authors: HandleMap<Handle, Author> = HandleMap::default();
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
        let page = Page {
            handle,
            conv,
            backward,
            horizon,
        };
        loop {
            let want = (limit - out.len()).min(MAX_PAGE);
            let (fetched, last) = self.open_slots(&page, next, want, &mut authors, &mut out)?;
            let exhausted = fetched < want;
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

    /// Opens up to `want` slots from `from` into `out`, straight from a
    /// cursor that is dropped before returning; returns how many slots it
    /// visited and the last one's seq.
    fn open_slots(
        &self,
        page: &Page<'_>,
        from: u64,
        want: usize,
        authors: &mut HandleMap<Handle, Author>,
        out: &mut Vec<ConversationItem>,
    ) -> Result<(usize, Option<u64>)> {
        let handle = page.handle;
        let mut it = self
            .engine
            .cursor(Cf::ConvMessages, Scope::Handle(handle))?;
        if page.backward {
            it.seek_for_prev(&message_key(handle, from));
        } else {
            it.seek(&message_key(handle, from));
        }
        let mut fetched = 0;
        let mut last = None;
        while fetched < want {
            let Some((key, value)) = it.item() else {
                break;
            };
            let (h, seq) = parse_message_key(key)?;
            if h != *handle || seq < page.conv.first_seq {
                break;
            }
            fetched += 1;
            last = Some(seq);
            if let Some(item) = self.open_slot(page, seq, value, authors)? {
                out.push(item);
            }
            if page.backward {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status()?;
        Ok((fetched, last))
    }

    /// What a read knows of `author` now: from the key cache, or loaded
    /// under the author's lock.
    pub(super) fn author_view(&self, author: &Handle) -> Result<AuthorView> {
        if let Some(s) = self.fresh_cached_user(author)? {
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
        page: &Page<'_>,
        seq: u64,
        value: &[u8],
        authors: &mut HandleMap<Handle, Author>,
    ) -> Result<Option<ConversationItem>> {
        let record = ConvRecord::decode(value)?;
        if record.timestamp_ms() < page.horizon {
            return Ok(None);
        }
        self.open_record(page.handle, page.conv, seq, record, authors)
            .map(Some)
    }

    fn open_record(
        &self,
        handle: &Handle,
        conv: &CachedConv,
        seq: u64,
        record: ConvRecord<'_>,
        authors: &mut HandleMap<Handle, Author>,
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
        let entry = match authors.entry(sealed.author) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Author {
                view: self.author_view(&sealed.author)?,
                cipher: None,
            }),
        };
        let erased = || {
            Ok(ConversationItem::Tombstone(Tombstone {
                seq,
                timestamp_ms: sealed.timestamp_ms,
                cause: TombstoneCause::AuthorErased,
            }))
        };
        let author = match &entry.view {
            AuthorView::Live(a) if a.epoch == sealed.author_epoch => a,
            // Erased, and back with a fresh key.
            AuthorView::Live(a) if a.epoch > sealed.author_epoch => return erased(),
            AuthorView::Live(_) => return Err(Error::Corrupt(Corruption::EpochMismatch)),
            AuthorView::Gone(e) if *e >= sealed.author_epoch => return erased(),
            // A message of an author with no key and no covering erasure:
            // a lost key, never to be mistaken for an erasure.
            AuthorView::Gone(_) => return Err(Error::Corrupt(Corruption::MissingKeyRecord)),
        };
        let cipher = match &entry.cipher {
            Some(c) => Arc::clone(c),
            None => {
                let c = self.pair_cipher(handle, conv, &sealed.author, author);
                entry.cipher = Some(Arc::clone(&c));
                c
            }
        };
        let mut opened = cipher.open(&sealed.nonce, &slot.aad(ConvKind::Message), sealed.sealed)?;
        let (author_id, payload) = decode_message_body(&opened)?;
        let author = UserId::new(author_id).map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        // The payload is the tail of the opened body: keep that buffer.
        let payload_start = opened.len() - payload.len();
        opened.drain(..payload_start);
        Ok(ConversationItem::Message(ConversationMessage {
            seq,
            timestamp_ms: sealed.timestamp_ms,
            author,
            payload: opened,
        }))
    }
}

/// What every slot of one read shares.
struct Page<'a> {
    handle: &'a Handle,
    conv: &'a CachedConv,
    backward: bool,
    /// Slots older than this expired.
    horizon: u64,
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

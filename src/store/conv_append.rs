//! Appending to a conversation: the conversation's lock, then the
//! author's; seq assignment; sealing under the (author, conversation) key;
//! the slot, its author-index entry and any new key record (the
//! conversation's, the author's) in one batch; idempotent retries.

use std::sync::atomic::Ordering;

use super::Inner;
use super::append::Appended;
use super::conversations::ConvState;
use super::engine::Cf;
use super::options::Durability;
use super::users::UserState;
use crate::codec::{ConvHeader, ConvKind, ConvSlot, author_key, encode_message_body, message_key};
use crate::crypto::{DEDUP_KEY_LEN, NONCE_LEN};
use crate::error::{Corruption, Error, Result};
use crate::types::{ConversationId, Handle, UserId};

impl Inner {
    /// Appends `payloads` by `author`; with a client message id (single
    /// payload only), returns the earlier append instead if the id was
    /// seen in this conversation. The bool says whether it was a duplicate.
    pub(super) fn conv_append<P: AsRef<[u8]>>(
        &self,
        id: &ConversationId,
        handle: &Handle,
        author: &UserId,
        payloads: &[P],
        client_message_id: Option<&[u8]>,
    ) -> Result<(Vec<Appended>, bool)> {
        self.validate_batch(payloads)?;
        self.engine.check_writable()?;
        let author_handle = self.handle(author);
        let _conv_guard = self.convs.lock(handle);
        // Lost a race with another front end (JetStream): nothing was
        // written; reload the conversation and the author, and retry.
        self.retry_conflicts(
            || {
                self.convs.forget(handle);
                self.users.forget(&author_handle);
                self.convs.forget_author(&author_handle);
            },
            || {
                self.conv_append_locked(
                    id,
                    handle,
                    author,
                    &author_handle,
                    payloads,
                    client_message_id,
                )
            },
        )
    }

    /// [`Inner::conv_append`] under the conversation's lock.
    fn conv_append_locked<P: AsRef<[u8]>>(
        &self,
        id: &ConversationId,
        handle: &Handle,
        author: &UserId,
        author_handle: &Handle,
        payloads: &[P],
        client_message_id: Option<&[u8]>,
    ) -> Result<(Vec<Appended>, bool)> {
        let author_handle = *author_handle;
        let dedup_key = client_message_id.map(|m| self.keys.handle_key.dedup_key(handle, m));
        if let (Some(key), [payload]) = (&dedup_key, payloads)
            && let Some(earlier) =
                self.find_conv_duplicate(handle, key, author, payload.as_ref())?
        {
            return Ok((vec![earlier], true));
        }
        let (mut conv, new_conv) = match self.load_conv_for_write(handle)? {
            ConvState::Live(c) => (c, None),
            ConvState::Absent { marker, next_seq } => {
                let (c, rec) = self.create_conv_key(handle, id, marker.as_ref(), next_seq)?;
                (c, Some(rec))
            }
        };
        // Lock order: conversation, then user.
        let _author_guard = self.users.lock(&author_handle);
        let (author_state, new_author) = match self.load_for_write(&author_handle)? {
            UserState::Live(s) => {
                if s.policy().restriction.block_appends {
                    return Err(Error::Restricted {
                        mode: "block_appends",
                    });
                }
                (s, None)
            }
            UserState::Absent { marker, next_seq } => {
                let (s, rec) = self.create_key(&author_handle, marker.as_ref(), next_seq)?;
                (s, Some(rec))
            }
        };
        let cipher = self.pair_cipher(handle, &conv, &author_handle, &author_state);

        let n = u64::try_from(payloads.len()).map_err(|_| Error::SeqExhausted)?;
        let first = conv.next_seq;
        let end = first
            .checked_add(n)
            .filter(|&e| e < u64::MAX)
            .ok_or(Error::SeqExhausted)?;
        let now = self.clock.now_ms();
        let mut batch = self.engine.batch();
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        let mut out = Vec::with_capacity(payloads.len());
        let author_epoch = author_state.epoch.to_be_bytes();
        for (seq, p) in (first..end).zip(payloads) {
            let slot = ConvSlot {
                conv: *handle,
                seq,
                conv_epoch: conv.epoch,
                timestamp_ms: now,
                author: author_handle,
                author_epoch: author_state.epoch,
            };
            let mut nonce = [0u8; NONCE_LEN];
            self.rng.fill(&mut nonce)?;
            body.clear();
            encode_message_body(&mut body, author.as_bytes(), p.as_ref());
            buf.clear();
            let aad = slot.aad(ConvKind::Message);
            slot.encode_sealed(&mut buf, ConvKind::Message, &nonce, &body, |pt| {
                cipher.seal_in_place(&nonce, &aad, pt)
            })?;
            batch.put(Cf::ConvMessages, &message_key(handle, seq), &buf)?;
            batch.put(
                Cf::Authors,
                &author_key(&author_handle, handle, seq),
                &author_epoch,
            )?;
            out.push(Appended {
                seq,
                timestamp_ms: now,
            });
        }
        // First use of a conversation or a user (epoch): the key records
        // go in the same batch, so ciphertext is never durable without them.
        // Otherwise both key records must still be the ones sealed under
        // (on JetStream: not erased or deleted through another front end).
        match &new_conv {
            Some(rec) => self.put_conv_key_record(&mut batch, handle, rec)?,
            None => batch.expect(Cf::ConvKeys, handle.as_bytes())?,
        }
        match &new_author {
            Some(rec) => self.put_key_record(&mut batch, &author_handle, rec)?,
            None => batch.expect(Cf::Keys, author_handle.as_bytes())?,
        }
        if let Some(key) = &dedup_key {
            self.put_dedup(&mut batch, key, first, now)?;
        }
        // Retention may remove the newest slot, which tells the next seq.
        if self.retention_may_apply(&conv.policy) {
            self.put_seq_floor(&mut batch, handle, end)?;
        }
        self.engine
            .write(batch, self.durability == Durability::Sync)?;
        if new_author.is_some() {
            self.users.count.fetch_add(1, Ordering::Relaxed);
            self.users.remember(author_handle, author_state);
        }
        if new_conv.is_some() {
            self.convs.count.fetch_add(1, Ordering::Relaxed);
        }
        conv.next_seq = end;
        self.convs.remember(*handle, conv);
        Ok((out, false))
    }

    /// Looks up a client message id of a conversation. Caller holds the
    /// conversation's lock.
    fn find_conv_duplicate(
        &self,
        handle: &Handle,
        key: &[u8; DEDUP_KEY_LEN],
        author: &UserId,
        payload: &[u8],
    ) -> Result<Option<Appended>> {
        let Some(earlier) = self.get_dedup(key)? else {
            return Ok(None);
        };
        let seq = earlier.seq;
        // The slot as a read sees it: a message is compared, a tombstone
        // (author erased, redacted) is still the same message, never
        // stored again.
        let ConvState::Live(conv) = self.load_conv(handle)? else {
            return Err(Error::Corrupt(Corruption::MissingKeyRecord));
        };
        // Another author's message under this id is a conflict, even when
        // it can no longer be read (its author erased).
        if let Some(v) = self
            .engine
            .get(Cf::ConvMessages, &message_key(handle, seq))?
            && let Ok(ConvHeader {
                author: Some((a, _)),
                ..
            }) = ConvHeader::parse(&v)
            && a != self.handle(author)
        {
            return Err(Error::IdempotencyConflict);
        }
        let items = self.conv_page(handle, &conv, seq, 1, false)?;
        match items.first() {
            Some(super::ConversationItem::Message(m)) if m.seq == seq => {
                if m.author != *author || m.payload != payload {
                    return Err(Error::IdempotencyConflict);
                }
                Ok(Some(earlier))
            }
            Some(super::ConversationItem::Tombstone(t)) if t.seq == seq => Ok(Some(earlier)),
            // Retention removed (or hides) the original: the retry is still
            // a duplicate of it. Otherwise an entry always has its slot
            // (deletion removes the entries with the key record).
            _ if self.retention_may_apply(&conv.policy)
                || self.engine.get(Cf::SeqFloors, handle.as_bytes())?.is_some() =>
            {
                Ok(Some(earlier))
            }
            _ => Err(Error::Corrupt(Corruption::MissingKeyRecord)),
        }
    }
}

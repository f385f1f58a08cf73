//! Appending: validation, seq assignment under the user's lock, sealing,
//! the first append's key record in the same batch, idempotent retries.

use std::sync::atomic::Ordering;

use super::Inner;
use super::engine::Cf;
use super::options::Durability;
use super::sealing::{open_message, seal};
use super::users::UserState;
use crate::codec::{Envelope, EnvelopeKind, message_key};
use crate::crypto::DEDUP_KEY_LEN;
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::{Handle, UserId};

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's sequence number (per user, strictly increasing, never reused).
    pub seq: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// The outcome of [`Store::append_idempotent`](crate::Store::append_idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentAppend {
    /// The message's seq and timestamp (the original ones for a duplicate).
    pub appended: Appended,
    /// True if the client message id matched an earlier append: nothing was stored.
    pub duplicate: bool,
}

/// Longest client message id accepted by
/// [`Store::append_idempotent`](crate::Store::append_idempotent), in bytes.
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

impl Inner {
    pub(super) fn validate_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<()> {
        let limits = &self.limits;
        if payloads.is_empty() {
            return Err(InvalidArgument::EmptyBatch.into());
        }
        if payloads.len() > limits.max_batch {
            return Err(InvalidArgument::BatchTooLarge {
                len: payloads.len(),
                max: limits.max_batch,
            }
            .into());
        }
        let mut total = 0usize;
        for p in payloads {
            let len = p.as_ref().len();
            if len > limits.max_payload {
                return Err(InvalidArgument::PayloadTooLarge {
                    len,
                    max: limits.max_payload,
                }
                .into());
            }
            total = total.saturating_add(len);
        }
        if total > limits.max_batch_bytes {
            return Err(InvalidArgument::BatchBytesTooLarge {
                len: total,
                max: limits.max_batch_bytes,
            }
            .into());
        }
        Ok(())
    }

    /// Appends `payloads`; with a client message id (single payload only),
    /// returns the earlier append instead if the id was seen. The bool says
    /// whether it was a duplicate.
    pub(super) fn append<P: AsRef<[u8]>>(
        &self,
        user: &UserId,
        payloads: &[P],
        client_message_id: Option<&[u8]>,
    ) -> Result<(Vec<Appended>, bool)> {
        self.validate_batch(payloads)?;
        self.engine.check_writable()?;
        let handle = self.handle(user);
        let _guard = self.users.lock(&handle);
        // Another front end of a JetStream cluster may have appended (or
        // erased) meanwhile: then nothing was written; reload and retry.
        self.retry_conflicts(
            || self.users.forget(&handle),
            || self.append_locked(&handle, payloads, client_message_id),
        )
    }

    /// [`Inner::append`] under the user's lock.
    fn append_locked<P: AsRef<[u8]>>(
        &self,
        handle: &Handle,
        payloads: &[P],
        client_message_id: Option<&[u8]>,
    ) -> Result<(Vec<Appended>, bool)> {
        let handle = *handle;
        let dedup_key = client_message_id.map(|id| self.keys.handle_key.dedup_key(&handle, id));
        if let (Some(key), [payload]) = (&dedup_key, payloads)
            && let Some(earlier) = self.find_duplicate(&handle, key, payload.as_ref())?
        {
            return Ok((vec![earlier], true));
        }

        let (mut state, new_record) = match self.load_for_write(&handle)? {
            UserState::Live(s) => {
                if s.policy().restriction.block_appends {
                    return Err(Error::Restricted {
                        mode: "block_appends",
                    });
                }
                (s, None)
            }
            UserState::Absent { marker, next_seq } => {
                let (s, rec) = self.create_key(&handle, marker.as_ref(), next_seq)?;
                (s, Some(rec))
            }
        };

        let n = u64::try_from(payloads.len()).map_err(|_| Error::SeqExhausted)?;
        let first = state.next_seq;
        let end = first
            .checked_add(n)
            .filter(|&e| e < u64::MAX)
            .ok_or(Error::SeqExhausted)?;
        let now = self.clock.now_ms();
        let mut batch = self.engine.batch();
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(payloads.len());
        for (seq, p) in (first..end).zip(payloads) {
            buf.clear();
            seal(
                &mut buf,
                self.rng.as_ref(),
                &state,
                EnvelopeKind::Message,
                &handle,
                seq,
                now,
                p.as_ref(),
            )?;
            batch.put(Cf::Messages, &message_key(&handle, seq), &buf)?;
            out.push(Appended {
                seq,
                timestamp_ms: now,
            });
        }
        // First append of a user (epoch): key record and messages in one batch,
        // so ciphertext is never durable without its key. Otherwise the key
        // record must still be the one the messages were sealed under (on
        // JetStream: not erased through another front end since).
        match &new_record {
            Some(rec) => self.put_key_record(&mut batch, &handle, rec)?,
            None => batch.expect(Cf::Keys, handle.as_bytes())?,
        }
        if self.retention_may_apply(state.policy()) {
            self.put_seq_floor(&mut batch, &handle, end)?;
        }
        if let Some(key) = &dedup_key {
            self.put_dedup(&mut batch, key, first, now)?;
        }
        self.engine
            .write(batch, self.durability == Durability::Sync)?;
        if new_record.is_some() {
            self.users.count.fetch_add(1, Ordering::Relaxed);
        }
        state.next_seq = end;
        self.users.remember(handle, state);
        Ok((out, false))
    }

    /// Stores an idempotency entry: the first seq and the time of the
    /// append it names (the one layout of a `dedup` value).
    pub(super) fn put_dedup(
        &self,
        batch: &mut super::engine::Batch<'_>,
        key: &[u8; DEDUP_KEY_LEN],
        seq: u64,
        timestamp_ms: u64,
    ) -> Result<()> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&seq.to_be_bytes());
        v[8..].copy_from_slice(&timestamp_ms.to_be_bytes());
        batch.put(Cf::Dedup, key, &v)
    }

    /// The append an idempotency entry names, if there is one.
    pub(super) fn get_dedup(&self, key: &[u8; DEDUP_KEY_LEN]) -> Result<Option<Appended>> {
        let Some(v) = self.engine.get(Cf::Dedup, key)? else {
            return Ok(None);
        };
        let v: [u8; 16] = (*v)
            .try_into()
            .map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        let (mut seq, mut ts) = ([0u8; 8], [0u8; 8]);
        seq.copy_from_slice(&v[..8]);
        ts.copy_from_slice(&v[8..]);
        Ok(Some(Appended {
            seq: u64::from_be_bytes(seq),
            timestamp_ms: u64::from_be_bytes(ts),
        }))
    }

    /// Looks up a client message id. Caller holds the user's lock.
    fn find_duplicate(
        &self,
        handle: &Handle,
        key: &[u8; DEDUP_KEY_LEN],
        payload: &[u8],
    ) -> Result<Option<Appended>> {
        let Some(Appended { seq, timestamp_ms }) = self.get_dedup(key)? else {
            return Ok(None);
        };
        // Erase deletes a user's dedup entries in the same batch as the key
        // record, so an entry always has a live user and message.
        let UserState::Live(state) = self.load(handle)? else {
            return Err(Error::Corrupt(Corruption::MissingKeyRecord));
        };
        let key = message_key(handle, seq);
        let Some(stored) = self.engine.get(Cf::Messages, &key)? else {
            // Retention dropped the original (a user retention ever applied
            // to has a seq high-water mark): the retry is still a duplicate
            // of it, though its payload can no longer be compared. Anything
            // else is a lost message.
            let retained = self.retention_may_apply(state.policy())
                || self.engine.get(Cf::SeqFloors, handle.as_bytes())?.is_some();
            return if retained {
                Ok(Some(Appended { seq, timestamp_ms }))
            } else {
                Err(Error::Corrupt(Corruption::MissingKeyRecord))
            };
        };
        let original = open_message(handle, &state, &key, &Envelope::decode(&stored)?)?;
        // A redacted message's retry is still the same message: report it,
        // never store it again.
        if original.redaction.is_none() && original.payload != payload {
            return Err(Error::IdempotencyConflict);
        }
        Ok(Some(Appended { seq, timestamp_ms }))
    }
}

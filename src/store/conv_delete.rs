//! Deleting a conversation (crypto-shredding: one synced batch deletes its
//! key record and writes its deletion marker with the audit record) and
//! redacting one of its messages ("delete for everyone").

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::conversation::ConversationDeleted;
use super::conversations::ConvState;
use super::engine::Cf;
use super::erase::Replay;
use super::redact::Redacted;
use super::{Inner, Pending};
use crate::codec::{
    AuditOp, AuditOutcome, Change, ConvKind, ConvRecord, ConvSlot, EraseMarker, ErasureReceipt,
    PurgeStatus, ReceiptSubject, RedactionBody, author_key, message_key, subject_key,
};
use crate::crypto::NONCE_LEN;
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// A deletion written into a batch, to be finished once the batch is
/// written ([`Inner::finish_conv_delete`]).
pub(super) struct ConvDeletion {
    handle: Handle,
    was_live: bool,
    purged: bool,
    next_seq: u64,
    pub(super) deleted: ConversationDeleted,
}

impl ConvDeletion {
    /// The deletion as the change feed reports it.
    pub(super) fn change(&self) -> Change {
        Change::ConversationDeleted {
            conversation: self.handle.0,
            epoch: self.deleted.epoch,
            next_seq: self.next_seq,
        }
    }
}

impl Inner {
    pub(super) fn conv_delete(&self, handle: &Handle, actor: &str) -> Result<ConversationDeleted> {
        self.engine.check_writable()?;
        let _guard = self.convs.lock(handle);
        self.conv_delete_locked(handle, actor, None)
    }

    /// [`Inner::conv_delete`] with the conversation's lock held.
    pub(super) fn conv_delete_locked(
        &self,
        handle: &Handle,
        actor: &str,
        replay: Option<Replay>,
    ) -> Result<ConversationDeleted> {
        let now = self.clock.now_ms();
        let mut batch = self.engine.batch();
        let deletion = match self.conv_delete_into(&mut batch, handle, actor, now, replay) {
            Err(Error::LegalHold) => {
                tracing::info!(conversation = %handle, "delete refused: legal hold");
                return self.audit_refusal(
                    actor,
                    AuditOp::ConversationDelete,
                    *handle,
                    Err(Error::LegalHold),
                );
            }
            other => other?,
        };
        let changes = [deletion.change()];
        let number = self.write_with_changes(batch, now, &changes, true)?;
        let deleted = self.finish_conv_delete(deletion);
        // Readers learn of it once it is forgotten in memory too.
        self.publish_changes(number);
        Ok(deleted)
    }

    /// Writes the deletion of a conversation into `batch`: its key record
    /// deleted, its marker, its idempotency entries and seq high-water mark
    /// deleted, the audit record. Caller holds the conversation's lock.
    ///
    /// A `replay` (restore) is not refused by a hold and records at least
    /// its epoch and next seq.
    ///
    /// # Errors
    /// [`Error::LegalHold`] under an active hold (nothing is added), a
    /// damaged record or a storage error.
    pub(super) fn conv_delete_into(
        &self,
        batch: &mut super::engine::Batch<'_>,
        handle: &Handle,
        actor: &str,
        now: u64,
        replay: Option<Replay>,
    ) -> Result<ConvDeletion> {
        let (live, old_marker, next) = match self.load_conv(handle)? {
            ConvState::Live(c) => {
                if replay.is_none() && c.policy.active_hold(now).is_some() {
                    return Err(Error::LegalHold);
                }
                // An unreadable earlier marker is rewritten, as erase does.
                let marker = match self.conv_marker(handle) {
                    Err(e @ Error::Corrupt(_)) => {
                        tracing::warn!(conversation = %handle, error = %e,
                            "unreadable deletion marker; rewriting it");
                        None
                    }
                    other => other?,
                };
                let next = c.next_seq;
                (Some(c), marker, next)
            }
            ConvState::Absent { marker, next_seq } => (None, marker, next_seq),
        };
        let epoch = live
            .as_ref()
            .map_or(0, |c| c.epoch)
            .max(old_marker.as_ref().map_or(0, |m| m.epoch))
            .max(replay.map_or(0, |r| r.epoch));
        let next = next.max(replay.map_or(0, |r| r.next_seq));
        let messages_deleted = live
            .as_ref()
            .map_or(0, |c| next.saturating_sub(c.first_seq));
        // Nothing new since the last (or no) deletion: nothing to purge.
        let purged = live.is_none() && old_marker.as_ref().is_none_or(|m| m.purged);
        let marker = EraseMarker {
            epoch,
            erased_at_ms: replay.map_or(now, |r| r.erased_at_ms),
            next_seq: next,
            block_new: false,
            purged,
            log_position: match &old_marker {
                Some(m) if purged => m.log_position,
                _ if epoch == 0 => 0,
                _ => self.engine.write_position()?,
            },
        };
        let mut encoded = Vec::new();
        marker.encode(&mut encoded);
        batch.delete(Cf::ConvKeys, handle.as_bytes())?;
        batch.put(Cf::ConvDeleted, handle.as_bytes(), &encoded)?;
        // The client message ids go with the key; the slots and the author
        // index entries stay (unreadable) until purge, which needs them to
        // find the authors' index ranges.
        batch.delete_handle_range(Cf::Dedup, handle)?;
        // The marker keeps the next seq.
        batch.delete(Cf::SeqFloors, handle.as_bytes())?;
        batch.delete(Cf::ExpiryMarks, handle.as_bytes())?;
        // Its subjects' index entries.
        if live.is_some()
            && let Some(rec) = self.conv_key_record(handle)?
        {
            for s in &rec.subjects {
                batch.delete(Cf::Subjects, &subject_key(&Handle(*s), handle))?;
            }
        }
        self.put_audit_at(
            batch,
            now,
            actor,
            AuditOp::ConversationDelete,
            Some(*handle),
            AuditOutcome::Ok,
        )?;
        let receipt = self.receipt(ErasureReceipt {
            subject: ReceiptSubject::Conversation,
            handle: *handle,
            epoch,
            erased_at_ms: now,
            messages_erased: messages_deleted,
            purge_status: if purged {
                PurgeStatus::Purged
            } else {
                PurgeStatus::Pending
            },
            mac: [0; 32],
        });
        Ok(ConvDeletion {
            handle: *handle,
            was_live: live.is_some(),
            purged,
            next_seq: next,
            deleted: ConversationDeleted {
                handle: *handle,
                epoch,
                messages_deleted,
                deleted_at_ms: now,
                receipt,
            },
        })
    }

    /// Updates the in-memory state after a deletion's batch was written.
    /// Caller still holds the conversation's lock.
    pub(super) fn finish_conv_delete(&self, d: ConvDeletion) -> ConversationDeleted {
        let handle = d.handle;
        self.convs.forget(&handle);
        // The policy went with the key record: a later epoch of this
        // conversation starts with the default one.
        self.filter.set_policy(handle, None);
        self.pending_conv_redactions.lock().remove(&handle);
        if d.was_live {
            self.convs.count.fetch_sub(1, Ordering::Relaxed);
        }
        if !d.purged {
            self.pending_conv_deletions.lock().insert(
                handle,
                Pending {
                    epoch: d.deleted.epoch,
                    erased_at_ms: d.deleted.deleted_at_ms,
                },
            );
            self.purger_signal.notify();
        }
        tracing::info!(
            conversation = %handle,
            epoch = d.deleted.epoch,
            messages_deleted = d.deleted.messages_deleted,
            "conversation deleted"
        );
        d.deleted
    }

    /// Redacts slot `seq`. `replayed_at` (a restore replaying a journal)
    /// is when it was redacted where it happened: a hold does not refuse it.
    pub(super) fn conv_redact(
        &self,
        handle: &Handle,
        seq: u64,
        reason: &str,
        actor: &str,
        replayed_at: Option<u64>,
    ) -> Result<Redacted> {
        self.engine.check_writable()?;
        let _guard = self.convs.lock(handle);
        let now = self.clock.now_ms();
        let ConvState::Live(conv) = self.load_conv(handle)? else {
            return Err(Error::NoSuchMessage);
        };
        if replayed_at.is_none() && conv.policy.active_hold(now).is_some() {
            return Err(Error::LegalHold);
        }
        if seq < conv.first_seq {
            return Err(Error::NoSuchMessage);
        }
        let key = message_key(handle, seq);
        let stored = self
            .engine
            .get(Cf::ConvMessages, &key)?
            .ok_or(Error::NoSuchMessage)?;
        let record = ConvRecord::decode(&stored)?;
        if record.timestamp_ms() < conv.policy.horizon(now, self.default_retention_ms) {
            // Expired by retention: hidden already, dropped at compaction.
            return Err(Error::NoSuchMessage);
        }
        let (timestamp_ms, author) = match record {
            ConvRecord::Sealed(s) if s.conv_epoch != conv.epoch => {
                return Err(Error::Corrupt(Corruption::EpochMismatch));
            }
            ConvRecord::Tombstone { conv_epoch, .. } if conv_epoch != conv.epoch => {
                return Err(Error::Corrupt(Corruption::EpochMismatch));
            }
            ConvRecord::Sealed(s) if s.kind == ConvKind::Redaction => {
                drop(stored);
                let items = self.conv_page(handle, &conv, seq, 1, false)?;
                let redacted_at_ms = match items.first() {
                    Some(super::ConversationItem::Tombstone(super::Tombstone {
                        cause: super::TombstoneCause::Redacted { redacted_at_ms, .. },
                        ..
                    })) => *redacted_at_ms,
                    _ => return Err(Error::Corrupt(Corruption::Encoding)),
                };
                // Nothing changes, but the request is still a rights operation.
                self.record_audit(
                    actor,
                    AuditOp::ConversationRedact,
                    Some(*handle),
                    AuditOutcome::Ok,
                )?;
                return Ok(Redacted {
                    seq,
                    timestamp_ms: items.first().map_or(0, |i| i.timestamp_ms()),
                    redacted_at_ms,
                    already_redacted: true,
                });
            }
            ConvRecord::Sealed(s) => (s.timestamp_ms, Some(s.author)),
            ConvRecord::Tombstone { timestamp_ms, .. } => (timestamp_ms, None),
        };
        drop(stored);
        let body = RedactionBody {
            redacted_at_ms: replayed_at.unwrap_or(now),
            reason: reason.to_owned(),
        }
        .to_bytes();
        let slot = ConvSlot {
            conv: *handle,
            seq,
            conv_epoch: conv.epoch,
            timestamp_ms,
            author: Handle([0; Handle::LEN]),
            author_epoch: 0,
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        let aad = slot.aad(ConvKind::Redaction);
        let mut marker = Vec::new();
        slot.encode_sealed(&mut marker, ConvKind::Redaction, &nonce, &body, |pt| {
            conv.cipher.seal_in_place(&nonce, &aad, pt)
        })?;
        let mut batch = self.engine.batch();
        batch.put(Cf::ConvMessages, &key, &marker)?;
        // The slot no longer names its author.
        if let Some(a) = author {
            batch.delete(Cf::Authors, &author_key(&a, handle, seq))?;
        }
        let mut policy = (*conv.policy).clone();
        let flag = !policy.purge_pending;
        if flag {
            let mut rec = self
                .conv_key_record(handle)?
                .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
            policy.purge_pending = true;
            rec.policy = policy.clone();
            self.put_conv_key_record(&mut batch, handle, &rec)?;
        }
        self.put_audit_at(
            &mut batch,
            now,
            actor,
            AuditOp::ConversationRedact,
            Some(*handle),
            AuditOutcome::Ok,
        )?;
        let change = Change::ConversationMessageRedacted {
            conversation: handle.0,
            seq,
        };
        let number = self.write_with_changes(batch, now, &[change], true)?;
        if flag {
            let mut c = conv.clone();
            c.policy = Arc::new(policy);
            self.convs.remember(*handle, c);
        }
        self.publish_changes(number);
        let generation = self.redaction_counter.fetch_add(1, Ordering::Relaxed);
        self.pending_conv_redactions
            .lock()
            .insert(*handle, generation);
        self.purger_signal.notify();
        tracing::info!(conversation = %handle, seq, "conversation message redacted");
        Ok(Redacted {
            seq,
            timestamp_ms,
            redacted_at_ms: now,
            already_redacted: false,
        })
    }
}

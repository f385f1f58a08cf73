//! Erasure (crypto-shredding): one synced batch deletes the key record and
//! writes the erasure marker with the audit record; cached key material is
//! evicted. O(1) in the user's message count, except the repair path for a
//! damaged user.

use std::sync::atomic::Ordering;

use super::engine::{Cf, Scope};
use super::users::{Last, next_seq};
use super::{Inner, Pending};
use crate::codec::{
    AuditOp, AuditOutcome, Change, EnvelopeHeader, EraseMarker, ErasureReceipt, KeyRecord,
    PurgeStatus, ReceiptSubject, message_key,
};
use crate::error::{Error, Result};
use crate::types::{Handle, UserId};

/// What `erase` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    /// The user's handle (safe to log).
    pub handle: Handle,
    /// Messages written under the erased key epoch (0 if the user had no live key).
    pub messages_erased: u64,
    /// The highest key epoch now erased.
    pub epoch: u32,
    /// When the erasure was committed, milliseconds since the Unix epoch.
    pub erased_at_ms: u64,
    /// The signed receipt of this erasure ([`Store::verify_receipt`](crate::Store::verify_receipt)).
    pub receipt: ErasureReceipt,
    /// The conversations deleted with the user (those it was a declared
    /// subject of, with [`EraseOptions::with_subject_conversations`]), each
    /// with its receipt.
    pub conversations_deleted: Vec<crate::ConversationDeleted>,
}

/// Options of one erasure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseOptions {
    /// Refuse later appends for this user with [`Error::Blocked`]. Sticky: a
    /// later erase without it does not lift the block.
    pub block_new: bool,
    /// Also delete the conversations the user is a declared subject of
    /// ([`Conversation::set_subjects_as`](crate::Conversation::set_subjects_as)),
    /// in the same atomic write. Without it, the user's messages there
    /// become tombstones and the conversations stay (the user is removed
    /// from their subjects).
    pub delete_subject_conversations: bool,
    /// Set when a restore replays an erasure from a journal.
    pub(super) replay: Option<Replay>,
}

/// An erasure (or a conversation's deletion) replayed from an erasure
/// journal at restore: what the store it came from recorded. A replay is
/// not refused by a legal hold (the erasure was allowed where it
/// happened), and never records less than the journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replay {
    /// The journal's erased epoch.
    pub(super) epoch: u32,
    /// The journal's next seq.
    pub(super) next_seq: u64,
    /// When it was erased.
    pub(super) erased_at_ms: u64,
}

impl EraseOptions {
    /// Erase and block new data for the user.
    pub fn block_new() -> Self {
        EraseOptions {
            block_new: true,
            ..EraseOptions::default()
        }
    }

    /// These options, also deleting the conversations the user is a
    /// declared subject of.
    pub fn with_subject_conversations(mut self) -> Self {
        self.delete_subject_conversations = true;
        self
    }
}

impl Inner {
    pub(super) fn erase(
        &self,
        user: &UserId,
        options: EraseOptions,
        actor: &str,
    ) -> Result<Erased> {
        self.engine.check_writable()?;
        let handle = self.handle(user);
        // The marker is written with a compare-and-set on JetStream: an
        // erase, append or change through another front end meanwhile
        // fails it whole; read everything again and retry.
        let erased = self.retry_conflicts(
            || {
                self.users.forget(&handle);
                self.resync_after_conflict();
            },
            || {
                self.with_erase_locks(&handle, |convs| {
                    self.erase_locked(&handle, options, actor, convs)
                })
            },
        )?;
        #[cfg(feature = "jetstream")]
        self.note_erasure_replicas(&handle, erased.epoch)?;
        Ok(erased)
    }

    /// Runs `f` with the locks an erasure of `handle` takes, given the
    /// user's subject conversations. Lock order: the subject
    /// conversations' stripes, then the user's. Their list is read again
    /// under the locks; a change meanwhile (a concurrent SetSubjects)
    /// starts over.
    pub(super) fn with_erase_locks<T>(
        &self,
        handle: &Handle,
        f: impl FnOnce(&[Handle]) -> Result<T>,
    ) -> Result<T> {
        loop {
            let convs = self.subject_conversations(handle)?;
            let conv_guards = self.convs.lock_many(&convs);
            let guard = self.users.lock(handle);
            if self.subject_conversations(handle)? != convs {
                drop(guard);
                drop(conv_guards);
                continue;
            }
            return f(&convs);
        }
    }

    /// [`Inner::erase`] with the user's lock and its subject conversations'
    /// held.
    pub(super) fn erase_locked(
        &self,
        user_handle: &Handle,
        options: EraseOptions,
        actor: &str,
        subject_convs: &[Handle],
    ) -> Result<Erased> {
        let handle = *user_handle;
        let now = self.clock.now_ms();

        // Erase must work on a damaged user too: an unreadable marker is
        // rewritten, an unreadable key record or header triggers a scan.
        let old_marker = match self.get_marker(&handle) {
            Err(e @ Error::Corrupt(_)) => {
                tracing::warn!(%handle, error = %e, "unreadable erasure marker; rewriting it");
                None
            }
            other => other?,
        };
        let record = self.engine.get(Cf::Keys, handle.as_bytes())?;
        let had_record = record.is_some();
        let decoded = record.as_ref().and_then(|b| KeyRecord::decode(b).ok());
        drop(record);
        if options.replay.is_none()
            && decoded
                .as_ref()
                .is_some_and(|r| r.state.policy().active_hold(now).is_some())
        {
            tracing::info!(%handle, "erase refused: legal hold");
            return self.audit_refusal(actor, AuditOp::Erase, handle, Err(Error::LegalHold));
        }
        let known = decoded.map(|r| (r.epoch, r.first_seq));
        let last = self.last_in(Cf::Messages, &handle)?;
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
        // A key record, even an unreadable one, holds a wrapped secret that
        // purge must remove: something is stored (key epochs start at 1).
        if had_record {
            epoch = epoch.max(1);
        }
        if let Some(r) = options.replay {
            epoch = epoch.max(r.epoch);
        }
        // Consent records without a readable key record: their range must
        // be purged too.
        if let Some(c) = self.last_in(Cf::Consent, &handle)? {
            epoch = epoch.max(c.epoch.unwrap_or(1)).max(1);
        }
        let floor = self.seq_floor(&handle)?;
        let next = next_seq(
            last.as_ref(),
            floor,
            old_marker.as_ref(),
            known.map(|(_, f)| f),
        )
        .max(options.replay.map_or(0, |r| r.next_seq));
        let messages_erased = known.map_or(0, |(_, first)| next.saturating_sub(first));
        // Epoch 0: nothing was ever stored. The same epoch as an erasure
        // already purged, with no key record since: nothing new to purge.
        let nothing_stored = epoch == 0;
        let already_purged = !had_record
            && old_marker
                .as_ref()
                .is_some_and(|m| m.purged && m.epoch == epoch);
        let purged = nothing_stored || already_purged;
        let erased_at_ms = options.replay.map_or(now, |r| r.erased_at_ms);
        let marker = EraseMarker {
            epoch,
            erased_at_ms,
            next_seq: next,
            block_new: options.block_new || old_marker.as_ref().is_some_and(|m| m.block_new),
            purged,
            // Every earlier write of this user is at or below this position
            // (they ran under its lock): WAL files starting at or below it
            // may hold them until purge. Nothing new since a purged
            // erasure: its position still tells.
            log_position: match &old_marker {
                _ if nothing_stored => 0,
                Some(m) if already_purged => m.log_position,
                _ => self.engine.write_position()?,
            },
        };
        let mut encoded = Vec::new();
        marker.encode(&mut encoded);

        let mut batch = self.engine.batch();
        batch.delete(Cf::Keys, handle.as_bytes())?;
        batch.put(Cf::Erased, handle.as_bytes(), &encoded)?;
        // Forget the user's client message ids (keyed hashes, but still
        // theirs) and high-water mark (the marker keeps the next seq).
        batch.delete_handle_range(Cf::Dedup, &handle)?;
        batch.delete_handle_range(Cf::SeqFloors, &handle)?;
        // What the change feed reported of its expiry goes with it.
        batch.delete(Cf::ExpiryMarks, handle.as_bytes())?;
        // The consent history is sealed under the destroyed key: drop it too.
        batch.delete_handle_range(Cf::Consent, &handle)?;
        if self.erase_delete_range {
            batch.delete_handle_range(Cf::Messages, &handle)?;
        }
        // The conversations it is a subject of: deleted with it, or it
        // leaves their subjects; its index entries go either way.
        // An open erasure request that deletes them makes any erasure of
        // the user do so (the subjects index goes with this erasure, so the
        // request could not do it later). Not a replay: a journal lists the
        // deletions the live store made.
        let delete_subjects = options.delete_subject_conversations
            || (options.replay.is_none() && self.request_deletes_subjects(&handle));
        let mut deletions = Vec::new();
        for conv in subject_convs {
            if delete_subjects {
                match self.conv_delete_into(&mut batch, conv, actor, now, None) {
                    Err(Error::LegalHold) => {
                        tracing::info!(%handle, conversation = %conv,
                            "erase refused: a subject conversation is on legal hold");
                        return self.audit_refusal(
                            actor,
                            AuditOp::Erase,
                            handle,
                            Err(Error::LegalHold),
                        );
                    }
                    other => deletions.push(other?),
                }
            } else if let Some(mut rec) = self.conv_key_record(conv)? {
                rec.subjects.retain(|h| h != handle.as_bytes());
                self.put_conv_key_record(&mut batch, conv, &rec)?;
            }
        }
        batch.delete_handle_range(Cf::Subjects, &handle)?;
        // The audit record commits with the erasure, or neither does.
        self.put_audit_at(
            &mut batch,
            now,
            actor,
            AuditOp::Erase,
            Some(handle),
            AuditOutcome::Ok,
        )?;
        // The change feed names the erasure and each deletion in the same batch.
        let mut changes = vec![Change::UserErased {
            user: handle.0,
            epoch,
            next_seq: next,
        }];
        changes.extend(deletions.iter().map(|d| d.change()));
        let receipt = self.receipt(ErasureReceipt {
            subject: ReceiptSubject::User,
            handle,
            epoch,
            erased_at_ms: now,
            messages_erased,
            purge_status: if purged {
                PurgeStatus::Purged
            } else {
                PurgeStatus::Pending
            },
            mac: [0; 32],
        });
        // An open erasure request of the user is done with this erasure,
        // in its batch: it runs at most once, whoever erased.
        let request = self.put_request_done(&mut batch, &handle, &receipt, delete_subjects)?;
        let number = self.write_with_changes(batch, now, &changes, true)?;
        if let Some(id) = request {
            self.request_done(&handle, id);
        }
        let conversations_deleted: Vec<crate::ConversationDeleted> = deletions
            .into_iter()
            .map(|d| self.finish_conv_delete(d))
            .collect();

        self.users.forget(&handle);
        // Every conversation cipher derived from the destroyed secret goes too.
        self.convs.forget_author(&handle);
        self.damaged_markers.lock().remove(&handle);
        // The policy went with the key record; the erasure's purge covers
        // any pending redaction.
        self.filter.set_policy(handle, None);
        self.pending_redactions.lock().remove(&handle);
        if had_record {
            self.users.count.fetch_sub(1, Ordering::Relaxed);
        }
        if !purged {
            self.filter.insert_erased(handle, epoch);
            self.pending.lock().insert(
                handle,
                Pending {
                    epoch,
                    erased_at_ms,
                },
            );
            self.purger_signal.notify();
        }
        // Open iterators check the marker when this changes.
        self.erase_generation.fetch_add(1, Ordering::Release);
        // Readers of the feed learn of it once no cache can serve the user.
        self.publish_changes(number);
        tracing::info!(%handle, epoch, messages_erased, "user erased");
        Ok(Erased {
            handle,
            messages_erased,
            epoch,
            erased_at_ms: now,
            receipt,
            conversations_deleted,
        })
    }

    /// Highest epoch among all stored messages of `handle` (full scan).
    fn max_epoch(&self, handle: &Handle) -> Result<u32> {
        let mut it = self.engine.cursor(Cf::Messages, Scope::Handle(handle))?;
        it.seek(&message_key(handle, 0));
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
}

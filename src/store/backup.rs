//! Backups that honour erasure, the store's side: the erasure journal
//! (what the store erased, from its erasure and deletion markers and the
//! change feed's redactions: handles, epochs and times, no ids), replaying
//! a journal into an older copy of the store (restore), and the consistent
//! copy a backup streams (a RocksDB checkpoint taken once every erasure
//! committed before it is physical). The backup file and restore are in
//! [`crate::backup`].

use std::path::Path;

use super::engine::{Cf, Scope};
use super::erase::Replay;
use super::{EraseOptions, Inner, Store};
use crate::codec::{
    self, AuditOp, AuditOutcome, Change, ChangeRecord, EraseMarker, Journal, JournalErasure,
    JournalRedaction, KeyRecord,
};
use crate::error::{BackupError, Error, Result};
use crate::types::Handle;

/// The actor of what a restore replays from a journal (audit records).
pub const RESTORE_ACTOR: &str = "restore";

/// What [`Store::apply_journal`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalReplay {
    /// Erasures replayed (users erased, or their markers raised).
    pub users_erased: u64,
    /// Conversations deleted (or their markers raised).
    pub conversations_deleted: u64,
    /// Messages redacted (of users' logs and of conversations).
    pub redactions: u64,
    /// Erasure requests brought up to the journal's state (received,
    /// cancelled or done since this copy).
    pub requests: u64,
}

/// A checkpoint written by [`Store::checkpoint`].
pub(crate) struct CheckpointInfo {
    /// The journal read just after the checkpoint (it holds every erasure
    /// the checkpoint holds, and maybe a few newer).
    pub(crate) journal: Journal,
    /// Erasures and redactions not yet physical when it was taken.
    pub(crate) pending: u64,
}

impl Store {
    /// The erasure journal now: every erased user and deleted conversation
    /// (handle, highest erased epoch, time, next seq) and every redaction
    /// (handle, seq, time), with the store's id and root-key generation. It
    /// holds no id and no key material. A restore applies it to an older
    /// copy of the store, so that nothing erased comes back.
    ///
    /// # Errors
    /// A damaged marker or change record, or a storage error.
    pub fn erasure_journal(&self) -> Result<Journal> {
        self.inner.journal()
    }

    /// This store's id (a one-way value of its salt), as journals and
    /// backups name it.
    pub fn store_id(&self) -> [u8; 16] {
        self.inner.keys.store_id
    }

    /// Replays `journal` (of this store, usually taken after this copy):
    /// erases every user it lists whose key record here is of an erased
    /// epoch (holds do not refuse it), deletes every conversation likewise,
    /// redacts every message it lists that is still here, and raises
    /// erasure markers to the journal's epochs and next seqs. Each step is
    /// audited with the actor [`RESTORE_ACTOR`]. Idempotent. The erasures
    /// become physical at the next purge.
    ///
    /// # Errors
    /// [`BackupError::OtherStore`] for another store's journal (nothing is
    /// changed), a damaged record, or a storage error.
    pub fn apply_journal(&self, journal: &Journal) -> Result<JournalReplay> {
        self.inner.apply_journal(journal)
    }

    /// Held while one backup is taken: another one is refused
    /// ([`BackupError::Busy`]).
    pub(crate) fn backup_guard(&self) -> Result<parking_lot::MutexGuard<'_, ()>> {
        self.inner
            .backup_lock
            .try_lock()
            .ok_or(Error::Backup(BackupError::Busy))
    }

    /// Writes a consistent copy of the store into `dir` (must not exist)
    /// for a backup: pending erasures are purged first, and the copy is
    /// taken with no purge running, so that when nothing is pending after
    /// it, no erased user's key record survives in its files. Retried up to
    /// three times if an erasure lands meanwhile. Audited as `backup`.
    pub(crate) fn checkpoint(&self, dir: &Path, actor: &str) -> Result<CheckpointInfo> {
        let inner = &self.inner;
        if inner.rotation.lock().is_some() {
            return Err(BackupError::RotationInProgress.into());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            if inner.has_pending() {
                let report = inner.purge(actor)?;
                if !report.complete {
                    tracing::warn!("backup: the purge before the copy was incomplete");
                }
            }
            let purging = inner.purge_lock.lock();
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            inner.engine.checkpoint(dir)?;
            let journal = inner.journal()?;
            let pending = inner.pending_count();
            drop(purging);
            if pending == 0 || attempt == 3 {
                if pending > 0 {
                    tracing::warn!(
                        pending,
                        "backup taken with erasures not yet physical: their key records may \
                         survive in its files until it is restored (restore purges them)"
                    );
                }
                inner.record_audit(actor, AuditOp::Backup, None, AuditOutcome::Ok)?;
                return Ok(CheckpointInfo { journal, pending });
            }
        }
    }

    /// The data directory (backups are RocksDB's: see [`Engine::rocks`]).
    pub(crate) fn data_dir(&self) -> Result<&Path> {
        Ok(self.inner.engine.rocks("a backup")?.dir())
    }

    /// Records that this store was restored (audit operation `restore`,
    /// actor [`RESTORE_ACTOR`]).
    pub(crate) fn record_restore(&self) -> Result<()> {
        let mut batch = self.inner.engine.batch();
        self.inner.put_audit(
            &mut batch,
            RESTORE_ACTOR,
            AuditOp::Restore,
            None,
            AuditOutcome::Ok,
        )?;
        self.inner.engine.write(batch, true)
    }
}

/// What the files of a store directory hold, read without its keys
/// (`shredstore backup inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DirContents {
    /// Users with a key record.
    pub(crate) users: u64,
    /// Conversations with a key record.
    pub(crate) conversations: u64,
    /// Stored envelopes of users' logs (messages and redaction markers).
    pub(crate) messages: u64,
    /// Stored conversation records.
    pub(crate) conversation_messages: u64,
    /// `meta/root_key_generation`.
    pub(crate) root_key_generation: u32,
    /// A root-key rotation was in progress.
    pub(crate) rotation: bool,
    /// Users the journal names as erased whose key record here is of an
    /// erased epoch (or undecodable): their wrapped secrets survive here.
    pub(crate) erased_users_with_keys: Vec<Handle>,
    /// Conversations likewise.
    pub(crate) deleted_conversations_with_keys: Vec<Handle>,
}

/// Reads the store in `dir` read-only and compares its key records with
/// `journal`'s erasures.
/// Counting the stored messages reads every one of them: only `inspect`
/// asks for it (`count_messages`), a backup's manifest needs key records.
pub(crate) fn inspect_dir(
    dir: &Path,
    journal: &Journal,
    count_messages: bool,
) -> Result<DirContents> {
    let db = super::engine::ReadOnly::open(dir)?;
    let mut c = DirContents {
        root_key_generation: db
            .get(Cf::Meta, super::layout::META_ROOT_KEY_GENERATION)?
            .map(|v| {
                <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::Corrupt(crate::Corruption::Meta))
            })
            .transpose()?
            .unwrap_or(1),
        rotation: db.get(Cf::Meta, super::layout::META_ROTATION)?.is_some(),
        ..DirContents::default()
    };
    let count = |cf| {
        let mut n = 0u64;
        db.for_each(cf, |_, _| {
            n += 1;
            Ok(())
        })
        .map(|()| n)
    };
    if count_messages {
        c.messages = count(Cf::Messages)?;
        c.conversation_messages = count(Cf::ConvMessages)?;
    }
    let users = by_handle(&journal.users);
    db.for_each(Cf::Keys, |k, v| {
        c.users += 1;
        let h = codec::parse_handle_key(k)?;
        if let Some(e) = users.get(&h.0) {
            let epoch = KeyRecord::decode(v).map(|r| r.epoch).unwrap_or(0);
            if epoch <= e.epoch {
                c.erased_users_with_keys.push(h);
            }
        }
        Ok(())
    })?;
    let convs = by_handle(&journal.conversations);
    db.for_each(Cf::ConvKeys, |k, v| {
        c.conversations += 1;
        let h = codec::parse_handle_key(k)?;
        if let Some(e) = convs.get(&h.0) {
            let epoch = codec::ConvKeyRecord::decode(v)
                .map(|r| r.epoch)
                .unwrap_or(0);
            if epoch <= e.epoch {
                c.deleted_conversations_with_keys.push(h);
            }
        }
        Ok(())
    })?;
    Ok(c)
}

fn by_handle(v: &[JournalErasure]) -> std::collections::HashMap<[u8; 16], &JournalErasure> {
    v.iter().map(|e| (e.handle, e)).collect()
}

impl Inner {
    /// Erasures, deletions and redactions not yet physical.
    fn pending_count(&self) -> u64 {
        let n = self.pending.lock().len()
            + self.pending_redactions.lock().len()
            + self.pending_conv_deletions.lock().len()
            + self.pending_conv_redactions.lock().len();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// The erasure journal now (see [`Store::erasure_journal`]).
    pub(super) fn journal(&self) -> Result<Journal> {
        // Read before the markers: every erasure committed before this
        // time is in the journal.
        let taken_ms = self.clock.now_ms();
        let users = self.journal_markers(Cf::Erased)?;
        let conversations = self.journal_markers(Cf::ConvDeleted)?;
        let mut redactions = Vec::new();
        let mut conversation_redactions = Vec::new();
        let mut it = self.engine.cursor(Cf::Changes, Scope::All)?;
        it.seek_to_first();
        while let Some(v) = it.value() {
            let rec = ChangeRecord::decode(v)?;
            match rec.change {
                Change::MessageRedacted { user, seq } => redactions.push(JournalRedaction {
                    handle: user,
                    seq,
                    redacted_at_ms: rec.time_ms,
                }),
                Change::ConversationMessageRedacted { conversation, seq } => {
                    conversation_redactions.push(JournalRedaction {
                        handle: conversation,
                        seq,
                        redacted_at_ms: rec.time_ms,
                    });
                }
                _ => {}
            }
            it.next();
        }
        it.status()?;
        drop(it);
        for v in [&mut redactions, &mut conversation_redactions] {
            v.sort();
            v.dedup_by(|a, b| a.handle == b.handle && a.seq == b.seq);
        }
        Ok(Journal {
            store_id: self.keys.store_id,
            taken_ms,
            root_key_generation: self.keys.generation,
            root_key_check: self.keys.root_check,
            users,
            conversations,
            redactions,
            conversation_redactions,
            requests: self.journal_requests()?,
        })
    }

    /// The journal's entries of one marker column family, in handle order.
    /// A marker that does not decode fails the journal: a journal that
    /// left out an erasure would bring its user back.
    fn journal_markers(&self, cf: Cf) -> Result<Vec<JournalErasure>> {
        let mut it = self.engine.cursor(cf, Scope::All)?;
        it.seek_to_first();
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let h = codec::parse_handle_key(k)?;
            let m = EraseMarker::decode(v)?;
            out.push(JournalErasure {
                handle: h.0,
                epoch: m.epoch,
                erased_at_ms: m.erased_at_ms,
                next_seq: m.next_seq,
                block_new: m.block_new && cf == Cf::Erased,
            });
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn apply_journal(&self, journal: &Journal) -> Result<JournalReplay> {
        if journal.store_id != self.keys.store_id {
            return Err(BackupError::OtherStore.into());
        }
        self.engine.check_writable()?;
        // Requests first: one done since closes here with the live
        // receipt, before its erasure is replayed.
        let requests = self.replay_requests(&journal.requests, RESTORE_ACTOR)?;
        let mut report = JournalReplay {
            requests,
            ..JournalReplay::default()
        };
        for e in &journal.users {
            if self.replay_erasure(e)? {
                report.users_erased += 1;
            }
        }
        for e in &journal.conversations {
            if self.replay_deletion(e)? {
                report.conversations_deleted += 1;
            }
        }
        for r in &journal.redactions {
            let h = Handle(r.handle);
            match self.redact(&h, r.seq, "", RESTORE_ACTOR, Some(r.redacted_at_ms)) {
                Ok(done) if !done.already_redacted => report.redactions += 1,
                Ok(_) | Err(Error::NoSuchMessage) => {}
                Err(e) => return Err(e),
            }
        }
        for r in &journal.conversation_redactions {
            let h = Handle(r.handle);
            match self.conv_redact(&h, r.seq, "", RESTORE_ACTOR, Some(r.redacted_at_ms)) {
                Ok(done) if !done.already_redacted => report.redactions += 1,
                Ok(_) | Err(Error::NoSuchMessage) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            users_erased = report.users_erased,
            conversations_deleted = report.conversations_deleted,
            redactions = report.redactions,
            requests = report.requests,
            "erasure journal applied"
        );
        Ok(report)
    }

    /// Whether the marker here already says all that `e` says.
    fn covers(marker: Option<&EraseMarker>, e: &JournalErasure) -> bool {
        marker.is_some_and(|m| {
            m.epoch >= e.epoch && m.next_seq >= e.next_seq && (m.block_new || !e.block_new)
        })
    }

    /// Replays one user's erasure; whether anything changed.
    fn replay_erasure(&self, e: &JournalErasure) -> Result<bool> {
        let handle = Handle(e.handle);
        self.with_erase_locks(&handle, |convs| {
            let key = self.engine.get(Cf::Keys, handle.as_bytes())?;
            // An undecodable key record is erased too (its epoch unknown).
            let key_epoch = key
                .as_ref()
                .map(|b| KeyRecord::decode(b).map(|r| r.epoch).ok());
            drop(key);
            let marker = self.get_marker(&handle).ok().flatten();
            match key_epoch {
                // A later life of the user than the journal's erasure (a
                // journal older than this copy): nothing of it to take.
                Some(Some(k)) if k > e.epoch => return Ok(false),
                None if Self::covers(marker.as_ref(), e) => return Ok(false),
                _ => {}
            }
            let options = EraseOptions {
                block_new: e.block_new,
                delete_subject_conversations: false,
                replay: Some(Replay {
                    epoch: e.epoch,
                    next_seq: e.next_seq,
                    erased_at_ms: e.erased_at_ms,
                }),
            };
            self.erase_locked(&handle, options, RESTORE_ACTOR, convs)?;
            Ok(true)
        })
    }

    /// Replays one conversation's deletion; whether anything changed.
    fn replay_deletion(&self, e: &JournalErasure) -> Result<bool> {
        let handle = Handle(e.handle);
        let _guard = self.convs.lock(&handle);
        let key_epoch = self.conv_key_record(&handle).map(|r| r.map(|r| r.epoch));
        let marker = self.conv_marker(&handle).ok().flatten();
        match key_epoch {
            Ok(Some(k)) if k > e.epoch => return Ok(false),
            Ok(None) if Self::covers(marker.as_ref(), e) => return Ok(false),
            _ => {}
        }
        self.conv_delete_locked(
            &handle,
            RESTORE_ACTOR,
            Some(Replay {
                epoch: e.epoch,
                next_seq: e.next_seq,
                erased_at_ms: e.erased_at_ms,
            }),
        )?;
        Ok(true)
    }
}

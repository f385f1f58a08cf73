//! Proof of physical erasure, read from the files: every stored version of
//! a user's records in the SST files (live ones whose key range meets the
//! user's, and every SST in the data directory RocksDB does not use, such as
//! one copied back in), and the WAL files that may still hold writes from
//! before the erasure. An iterator would show neither overwritten nor
//! deleted versions, so it cannot tell.

use std::collections::HashSet;

use super::Inner;
use super::engine::{Cf, Scope};
use super::purge::overlapping;
use crate::codec::{ConvHeader, EnvelopeHeader, message_key};
use crate::error::Result;
use crate::types::{Handle, UserId};

/// What [`Store::verify_erasure`](crate::Store::verify_erasure) found of one
/// user in the data directory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasureCheck {
    /// The user's handle (safe to log and to show an auditor).
    pub handle: Handle,
    /// The erasure marker, if the user was ever erased.
    pub marker: Option<ErasureState>,
    /// A key record exists: the user has readable data (never erased, or
    /// wrote again after the erasure).
    pub live_key: bool,
    /// Message versions of erased key epochs stored in the files
    /// (overwritten and deleted versions included): ciphertext still on
    /// disk, unreadable, waiting for purge.
    pub erased_records: u64,
    /// Messages a read returns, under the live key (written after the
    /// erasure, if any).
    pub live_records: u64,
    /// Consent record versions of erased key epochs stored in the files.
    pub erased_consents: u64,
    /// Key record versions of erased epochs stored in the files (each holds
    /// a wrapped user secret).
    pub erased_key_records: u64,
    /// Idempotency entries and seq high-water marks stored in the files that
    /// are not the current ones (from before the erasure), and author-index
    /// entries of erased epochs.
    pub stale_index_entries: u64,
    /// Conversation records stored in the files (any conversation, every
    /// version) that still name the user as author under an erased key
    /// epoch: their ciphertext, unreadable, and the author handle, waiting
    /// for purge to turn them into tombstones.
    pub erased_conversation_records: u64,
    /// Current idempotency entries (written after the erasure, if any).
    pub dedup_entries: u64,
    /// WAL files that may still hold writes from before the erasure.
    pub old_wal_files: u64,
    /// Files that could not be parsed (they might hold anything).
    pub unreadable_files: u64,
    /// SST files read.
    pub files_checked: u64,
}

/// The erasure marker of a user, as [`ErasureCheck`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureState {
    /// Highest erased key epoch.
    pub epoch: u32,
    /// When the latest erasure was committed, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// A purge has confirmed this erasure physical (it found no erased
    /// version in the files holding the user's ranges and saw the files
    /// that held them before deleted).
    pub purged: bool,
}

impl ErasureCheck {
    /// The user was erased and the files hold nothing of the erased key
    /// epochs: no message, consent or key record version of them, no stale
    /// index entry, no conversation record naming them as author, no WAL file from before the erasure, and no file that
    /// could not be read. (Records written after the erasure, under a new
    /// key, are the user's current data and do not count against it.)
    pub fn is_physically_erased(&self) -> bool {
        self.marker.is_some()
            && self.erased_records == 0
            && self.erased_consents == 0
            && self.erased_key_records == 0
            && self.stale_index_entries == 0
            && self.erased_conversation_records == 0
            && self.old_wal_files == 0
            && self.unreadable_files == 0
    }

    /// The user was erased (unreadable at once) but its data is not yet
    /// physically gone.
    pub fn is_pending(&self) -> bool {
        self.marker.is_some() && !self.is_physically_erased()
    }
}

impl Inner {
    pub(super) fn verify_erasure(&self, user: &UserId) -> Result<ErasureCheck> {
        // The check reads the data directory's files; a JetStream store's
        // are on the servers (its purge confirms there: `purge_js.rs`).
        self.engine.rocks("a file-level check")?;
        let handle = self.handle(user);
        let marker = self.get_marker(&handle)?;
        let mut check = ErasureCheck {
            handle,
            marker: marker.as_ref().map(|m| ErasureState {
                epoch: m.epoch,
                erased_at_ms: m.erased_at_ms,
                purged: m.purged,
            }),
            live_key: self.engine.get(Cf::Keys, handle.as_bytes())?.is_some(),
            erased_records: 0,
            live_records: 0,
            erased_consents: 0,
            erased_key_records: 0,
            stale_index_entries: 0,
            erased_conversation_records: 0,
            dedup_entries: 0,
            old_wal_files: 0,
            unreadable_files: 0,
            files_checked: 0,
        };
        let erased_epoch = marker.as_ref().map_or(0, |m| m.epoch);
        self.count_visible(&handle, erased_epoch, &mut check)?;
        let Some(marker) = marker else {
            return Ok(check);
        };

        // Live files meeting the user's ranges, every conversation record
        // file (what the user wrote may be in any conversation, and after a
        // purge no index names them), then every SST on disk that RocksDB
        // does not use (its column family from its own properties).
        let live = self.engine.live_files()?;
        let mut files: Vec<(u64, Option<Cf>)> = overlapping(&live, &[handle])
            .iter()
            .map(|f| (f.number, f.cf))
            .collect();
        files.extend(
            live.iter()
                .filter(|f| f.cf == Some(Cf::ConvMessages))
                .map(|f| (f.number, f.cf)),
        );
        files.sort_unstable_by_key(|f| f.0);
        files.dedup_by_key(|f| f.0);
        let live_numbers: HashSet<u64> = live.iter().map(|f| f.number).collect();
        files.extend(
            self.engine
                .sst_files_on_disk()?
                .into_iter()
                .filter(|n| !live_numbers.contains(n))
                .map(|n| (n, None)),
        );
        let mut failed = None;
        let report = self.engine.scan_ssts(&files, None, |prefix, rec| {
            if rec.cf == Some(Cf::ConvMessages) {
                let authored = rec
                    .value
                    .and_then(|v| ConvHeader::parse(v).ok())
                    .and_then(|h| h.author)
                    .is_some_and(|(a, e)| a == handle && e <= marker.epoch);
                check.erased_conversation_records += u64::from(authored);
                return;
            }
            if *prefix != handle {
                return;
            }
            match self.is_erased_version(marker.epoch, rec) {
                Ok(false) => {}
                Ok(true) => match rec.cf {
                    Some(Cf::Messages) | None => check.erased_records += 1,
                    Some(Cf::Consent) => check.erased_consents += 1,
                    Some(Cf::Keys) => check.erased_key_records += 1,
                    Some(_) => check.stale_index_entries += 1,
                },
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        check.files_checked = report.files_read;
        check.unreadable_files = report.unreadable;
        if marker.log_position > 0 {
            check.old_wal_files = self
                .engine
                .wal_files()?
                .iter()
                .filter(|w| w.first_position.is_some_and(|p| p <= marker.log_position))
                .count() as u64;
        }
        Ok(check)
    }

    /// Counts what a read sees: live-epoch messages and current
    /// idempotency entries.
    fn count_visible(
        &self,
        handle: &Handle,
        erased_epoch: u32,
        check: &mut ErasureCheck,
    ) -> Result<()> {
        let mut it = self.engine.cursor(Cf::Messages, Scope::Handle(handle))?;
        it.seek(&message_key(handle, 0));
        while let Some(v) = it.value() {
            if EnvelopeHeader::parse(v).is_ok_and(|h| h.epoch > erased_epoch) {
                check.live_records += 1;
            }
            it.next();
        }
        it.status()?;
        let mut it = self.engine.cursor(Cf::Dedup, Scope::Handle(handle))?;
        it.seek(handle.as_bytes());
        while it.key().is_some_and(|k| k.starts_with(handle.as_bytes())) {
            check.dedup_entries += 1;
            it.next();
        }
        it.status()
    }
}

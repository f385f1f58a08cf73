//! Purge: makes pending erasures and redactions physical. It flushes every
//! column family (so the WAL files holding old writes become obsolete),
//! compacts only the key ranges the pending users' records live in, then
//! reads the files that now hold those ranges to confirm no erased version
//! is left, and waits for the files that held them before to be deleted.
//! Its cost grows with the files the pending users' ranges touch, not with
//! the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Inner;
use super::conv_purge::overlapping_in;
use super::engine::Cf;
use super::engine::files::{FileRecord, LiveSst};
use crate::codec::{AuditOp, AuditOutcome, EnvelopeHeader, KeyRecord};
use crate::error::Result;
use crate::types::Handle;

/// How long `purge` waits for RocksDB to delete the files that held the
/// purged ranges.
const OBSOLETE_FILE_WAIT: Duration = Duration::from_secs(10);

/// What `purge` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Erasures made physical by this purge.
    pub erasures_purged: usize,
    /// Users and conversations whose redactions this purge made physical.
    pub redactions_purged: usize,
    /// Conversation deletions made physical by this purge.
    pub conversations_purged: usize,
    /// Whether every pending erasure and redaction was verifiably made
    /// physical: the files now holding their ranges hold no erased version,
    /// and the SST and WAL files that held them before were deleted. When
    /// `false`, what could not be confirmed stays pending and the next purge
    /// retries.
    pub complete: bool,
    /// Wall time spent.
    pub duration: Duration,
}

/// Adds to `held` the files of `files` that meet one of the `targets`
/// (column families and sorted handles).
fn held_files(files: &[LiveSst], targets: &[(&[Cf], &Vec<Handle>)], held: &mut Vec<u64>) {
    for (cfs, handles) in targets {
        held.extend(overlapping_in(files, cfs, handles).iter().map(|f| f.number));
    }
}

/// The handle prefixes of the keys in `[smallest, largest]`: a handle's
/// records lie in that file's range iff `lo <= handle <= hi`.
fn prefix_range(f: &LiveSst) -> (&[u8], &[u8]) {
    let cut = |k: &[u8]| -> usize { k.len().min(Handle::LEN) };
    (
        &f.smallest[..cut(&f.smallest)],
        &f.largest[..cut(&f.largest)],
    )
}

/// The handles of `sorted` whose records may lie in file `f`.
pub(super) fn handles_in<'a>(f: &LiveSst, sorted: &'a [Handle]) -> &'a [Handle] {
    let (lo, hi) = prefix_range(f);
    let start = sorted.partition_point(|h| h.as_bytes().as_slice() < lo);
    let end = sorted.partition_point(|h| h.as_bytes().as_slice() <= hi);
    &sorted[start..end.max(start)]
}

/// Files of the user-data column families whose key range meets the
/// records of one of `sorted`.
pub(super) fn overlapping<'f>(files: &'f [LiveSst], sorted: &[Handle]) -> Vec<&'f LiveSst> {
    overlapping_in(files, &Cf::USER_DATA, sorted)
}

/// The ranges to compact in one column family: the files meeting the
/// pending handles are grouped where their key ranges overlap, and each
/// group compacts the span from its first to its last pending handle. A
/// file is thus rewritten once, however many pending users it holds.
pub(super) fn compaction_spans(files: &[&LiveSst], sorted: &[Handle]) -> Vec<(Handle, Handle)> {
    let mut ranges: Vec<(&[u8], &[u8], &[Handle])> = files
        .iter()
        .map(|f| {
            let (lo, hi) = (f.smallest.as_slice(), f.largest.as_slice());
            (lo, hi, handles_in(f, sorted))
        })
        .collect();
    ranges.sort_by(|a, b| a.0.cmp(b.0));
    let mut spans: Vec<(&[u8], Handle, Handle)> = Vec::new();
    for (lo, hi, hs) in ranges {
        let (Some(first), Some(last)) = (hs.first(), hs.last()) else {
            continue;
        };
        match spans.last_mut() {
            // Overlapping key ranges, or a pending user in both: one span.
            Some((end, _, span_last)) if lo <= *end || *first <= *span_last => {
                if hi > *end {
                    *end = hi;
                }
                *span_last = (*span_last).max(*last);
            }
            _ => spans.push((hi, *first, *last)),
        }
    }
    spans.into_iter().map(|(_, a, b)| (a, b)).collect()
}

impl Inner {
    pub(super) fn has_pending(&self) -> bool {
        #[cfg(feature = "jetstream")]
        if let Err(e) = self.refresh_pending() {
            tracing::warn!(error = %e, "reading the pending erasures failed");
        }
        !self.pending.lock().is_empty()
            || !self.pending_redactions.lock().is_empty()
            || !self.pending_conv_deletions.lock().is_empty()
            || !self.pending_conv_redactions.lock().is_empty()
    }

    pub(super) fn purge(&self, actor: &str) -> Result<PurgeReport> {
        let report = self.purge_inner();
        let outcome = match &report {
            Ok(r) if r.complete => AuditOutcome::Ok,
            _ => AuditOutcome::Failed,
        };
        if !report.as_ref().is_ok_and(|r| r.complete) {
            self.purges_incomplete.fetch_add(1, Ordering::Relaxed);
        }
        // Purges with nothing to do are not worth a record.
        if report.as_ref().map_or(true, |r| {
            r.erasures_purged > 0
                || r.redactions_purged > 0
                || r.conversations_purged > 0
                || !r.complete
        }) && !self.engine.is_poisoned()
        {
            self.record_audit(actor, AuditOp::Purge, None, outcome)?;
        }
        report
    }

    fn purge_inner(&self) -> Result<PurgeReport> {
        let _purging = self.purge_lock.lock();
        self.engine.check_writable()?;
        let started = Instant::now();
        #[cfg(feature = "jetstream")]
        self.refresh_pending()?;
        let erasures: Vec<(Handle, u32)> = self
            .pending
            .lock()
            .iter()
            .map(|(h, p)| (*h, p.epoch))
            .collect();
        let redactions: Vec<(Handle, u64)> = self
            .pending_redactions
            .lock()
            .iter()
            .map(|(h, g)| (*h, *g))
            .collect();
        let nothing_for_conversations = self.pending_conv_deletions.lock().is_empty()
            && self.pending_conv_redactions.lock().is_empty();
        if erasures.is_empty() && redactions.is_empty() && nothing_for_conversations {
            self.purges_done.fetch_add(1, Ordering::Relaxed);
            return Ok(PurgeReport {
                erasures_purged: 0,
                redactions_purged: 0,
                conversations_purged: 0,
                complete: true,
                duration: started.elapsed(),
            });
        }
        #[cfg(feature = "jetstream")]
        if let Some(js) = self.engine.jetstream() {
            return self.purge_jetstream(js, &erasures, &redactions, started);
        }
        let mut sorted: Vec<Handle> = erasures.iter().map(|(h, _)| *h).collect();
        sorted.extend(redactions.iter().map(|(h, _)| *h));
        sorted.sort_unstable();
        sorted.dedup();

        let errors_before = self.engine.background_errors()?;
        let wals_before = self.engine.wal_numbers()?;
        // Conversation writes first (tombstones over erased authors' slots,
        // deleted conversations' author-index ranges): the flush below
        // takes them along.
        let work = self.prepare_conv_purge(&erasures)?;
        if self
            .interrupt_purge
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            tracing::warn!("TEST HOOK: purge interrupted after its conversation writes");
            return Err(crate::Error::Io(std::io::Error::other(
                "injected purge interruption",
            )));
        }
        let conv_phase1 = work.phase1_convs();
        let deleted_convs = work.deleted_convs();
        let deletion_authors: Vec<Handle> = work.deletion_authors.iter().copied().collect();
        // Every file that holds a purged range before a compaction must be
        // gone before the purge is confirmed: those listed before the first
        // flush, and those each flush creates (a compaction of this purge
        // makes them obsolete too).
        let targets = [
            (&Cf::USER_DATA[..], &sorted),
            (&Cf::CONVERSATION_DATA[..], &conv_phase1),
            (&Cf::CONVERSATION_DATA[..], &deleted_convs),
            (&[Cf::Authors][..], &deletion_authors),
        ];
        let mut held_before = Vec::new();
        held_files(&self.engine.live_files()?, &targets, &mut held_before);
        self.engine.flush_all()?;
        let flushed = self.engine.live_files()?;
        held_files(&flushed, &targets, &mut held_before);
        let mut compactions = self.compact_ranges(&flushed, &Cf::USER_DATA, &sorted)?;
        compactions += self.compact_ranges(&flushed, &[Cf::ConvMessages], &conv_phase1)?;
        compactions += self.compact_ranges(&flushed, &[Cf::Authors], &deletion_authors)?;
        let (dirty_convs, dirty_deletions) = self.conv_remnants_phase1(&work)?;
        // Phase 2: erased authors' index entries once every conversation
        // they name is clean, and the slots of deleted conversations whose
        // authors' index is clean.
        let clean_authors: Vec<(Handle, u32)> = work
            .authors_erased
            .iter()
            .copied()
            .filter(|(a, _)| {
                !work
                    .touched
                    .iter()
                    .any(|(c, v)| dirty_convs.contains(c) && v.iter().any(|(x, _)| x == a))
            })
            .collect();
        let phase2: Vec<(Handle, u32, u64)> = work
            .deletions
            .iter()
            .copied()
            .filter(|(h, _, _)| !dirty_deletions.contains(h))
            .collect();
        let mut dirty_phase2 = HashSet::new();
        if !phase2.is_empty() || !clean_authors.is_empty() {
            for (author, epoch) in &clean_authors {
                self.delete_author_entries(author, *epoch)?;
            }
            self.delete_conv_slots(&phase2)?;
            self.engine.flush_all()?;
            let flushed = self.engine.live_files()?;
            held_files(&flushed, &targets, &mut held_before);
            let authors: Vec<Handle> = {
                let mut v: Vec<Handle> = clean_authors.iter().map(|(a, _)| *a).collect();
                v.sort_unstable();
                v
            };
            compactions += self.compact_ranges(&flushed, &[Cf::Authors], &authors)?;
            compactions += self.compact_ranges(&flushed, &Cf::CONVERSATION_DATA, &deleted_convs)?;
            dirty_phase2 = self.conv_remnants_phase2(&phase2)?;
        }
        held_before.sort_unstable();
        held_before.dedup();
        // A failed compaction shows up as a background error.
        let compacted = self.engine.background_errors()? == errors_before;
        let mut dirty = self.remnants(&erasures, &redactions, &sorted)?;
        // An erased author is purged only once every conversation that held
        // their messages is clean.
        for (conv, authors) in &work.touched {
            if dirty_convs.contains(conv) {
                dirty.extend(authors.iter().map(|(a, _)| *a));
            }
        }
        let deleted = self.wait_deleted(&held_before, &wals_before)?;
        let (mut purged, mut redactions_purged, mut conversations_purged) = (0, 0, 0);
        let clean_deletions: Vec<(Handle, u32)> = phase2
            .iter()
            .filter(|(h, _, _)| !dirty_phase2.contains(h))
            .map(|(h, e, _)| (*h, *e))
            .collect();
        if compacted && deleted {
            let clean = |h: &Handle| !dirty.contains(h);
            let e: Vec<_> = erasures.iter().copied().filter(|(h, _)| clean(h)).collect();
            let r: Vec<_> = redactions
                .iter()
                .copied()
                .filter(|(h, _)| clean(h))
                .collect();
            purged = self.mark_purged(&e)?;
            redactions_purged = self.mark_redactions_purged(&r)?;
            let cr: Vec<_> = work
                .redactions
                .iter()
                .copied()
                .filter(|(h, _)| !dirty_convs.contains(h))
                .collect();
            redactions_purged += self.mark_conv_redactions_purged(&cr)?;
            conversations_purged = self.mark_conv_deletions_purged(&clean_deletions)?;
        }
        let complete = compacted
            && deleted
            && work.unreadable_markers == 0
            && dirty.is_empty()
            && dirty_convs.is_empty()
            && dirty_deletions.is_empty()
            && dirty_phase2.is_empty();
        if complete {
            self.purges_done.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::warn!(
                compacted,
                files_deleted = deleted,
                users_unconfirmed = dirty.len(),
                conversations_unconfirmed =
                    dirty_convs.len() + dirty_deletions.len() + dirty_phase2.len(),
                "purge incomplete: a compaction failed, erased versions remain in files, \
                 or obsolete files are pinned; will retry"
            );
        }
        let report = PurgeReport {
            erasures_purged: purged,
            redactions_purged,
            conversations_purged,
            complete,
            duration: started.elapsed(),
        };
        tracing::info!(
            erasures_purged = report.erasures_purged,
            redactions_purged,
            conversations_purged,
            compactions,
            complete,
            duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            "purge finished"
        );
        Ok(report)
    }

    /// The pending users of whom the live files meeting their ranges still
    /// hold an erased version: for an erasure, a message or consent record
    /// of an erased epoch, a key record of one, or an idempotency entry or
    /// high-water mark that is not the current one; for a redaction, a
    /// message version that is not the current one. A file that does not
    /// parse leaves every user unconfirmed.
    fn remnants(
        &self,
        erasures: &[(Handle, u32)],
        redactions: &[(Handle, u64)],
        sorted: &[Handle],
    ) -> Result<HashSet<Handle>> {
        let erased: HashMap<Handle, u32> = erasures.iter().copied().collect();
        let redacted: HashSet<Handle> = redactions.iter().map(|(h, _)| *h).collect();
        let files: Vec<(u64, Option<Cf>)> = overlapping(&self.engine.live_files()?, sorted)
            .iter()
            .map(|f| (f.number, f.cf))
            .collect();
        let wanted: HashSet<Handle> = sorted.iter().copied().collect();
        let mut dirty = HashSet::new();
        let mut failed = None;
        let report = self.engine.scan_ssts(&files, Some(&wanted), |h, rec| {
            let verdict = match erased.get(h) {
                Some(&epoch) => self.is_erased_version(epoch, rec),
                None => Ok(false),
            }
            .and_then(|stale| {
                let old_version = redacted.contains(h)
                    && rec.cf == Some(Cf::Messages)
                    && rec.value.is_some()
                    && !self.is_current(rec)?;
                Ok(stale || old_version)
            });
            match verdict {
                Ok(true) => {
                    dirty.insert(*h);
                }
                Ok(false) => {}
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if report.unreadable > 0 {
            return Ok(wanted);
        }
        Ok(dirty)
    }

    /// Whether a stored version belongs to a user's data erased up to
    /// `epoch`. Deletion markers hold nothing.
    pub(super) fn is_erased_version(&self, epoch: u32, rec: FileRecord<'_>) -> Result<bool> {
        let Some(value) = rec.value else {
            return Ok(false);
        };
        Ok(match rec.cf {
            // An unreadable header may be anything: it counts as erased.
            Some(Cf::Messages | Cf::Consent) => {
                EnvelopeHeader::parse(value).map_or(true, |h| h.epoch <= epoch)
            }
            Some(Cf::Keys) => KeyRecord::decode(value).map_or(true, |r| r.epoch <= epoch),
            Some(Cf::Authors) => {
                <[u8; 4]>::try_from(value).map_or(true, |e| u32::from_be_bytes(e) <= epoch)
            }
            // No epoch: only the current version may remain.
            Some(Cf::Dedup | Cf::SeqFloors | Cf::Subjects | Cf::ExpiryMarks) => {
                !self.is_current(rec)?
            }
            // Not keyed by a user's handle.
            Some(
                Cf::Meta
                | Cf::Erased
                | Cf::Audit
                | Cf::Changes
                | Cf::ConvKeys
                | Cf::ConvMessages
                | Cf::ConvDeleted,
            ) => false,
            // A file of no known column family: anything under the handle.
            None => true,
        })
    }

    /// Whether `rec` is the version a read sees now.
    pub(super) fn is_current(&self, rec: FileRecord<'_>) -> Result<bool> {
        let (Some(cf), Some(value)) = (rec.cf, rec.value) else {
            return Ok(false);
        };
        Ok(self.engine.get(cf, rec.key)?.is_some_and(|v| &*v == value))
    }

    /// Waits until the SST files `held` that are no longer live, and every
    /// WAL of `wals_before`, are deleted. Returns `false` on timeout
    /// (something, such as an open iterator or snapshot, pins them).
    fn wait_deleted(&self, held: &[u64], wals_before: &[u64]) -> Result<bool> {
        let live: HashSet<u64> = self.engine.live_files()?.iter().map(|f| f.number).collect();
        let mut ssts: Vec<u64> = held.iter().copied().filter(|n| !live.contains(n)).collect();
        let current_wal = self.engine.wal_numbers()?.into_iter().max();
        let mut wals: Vec<u64> = wals_before
            .iter()
            .copied()
            .filter(|w| current_wal.is_some_and(|c| *w < c))
            .collect();
        let deadline = Instant::now() + OBSOLETE_FILE_WAIT;
        loop {
            let on_disk: HashSet<u64> = self.engine.sst_files_on_disk()?.into_iter().collect();
            ssts.retain(|n| on_disk.contains(n));
            let logs: HashSet<u64> = self.engine.wal_numbers()?.into_iter().collect();
            wals.retain(|w| logs.contains(w));
            if ssts.is_empty() && wals.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    sst_files = ssts.len(),
                    wal_files = wals.len(),
                    "files that held purged ranges are still on disk"
                );
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sets the `purged` flag of the marker of `handle` in `cf` (`erased`
    /// or `conv_deleted`) if it still names `epoch`; false if it does not
    /// (erased or deleted again meanwhile, or already purged). Caller holds
    /// the handle's lock.
    pub(super) fn set_marker_purged(&self, cf: Cf, handle: &Handle, epoch: u32) -> Result<bool> {
        // Another front end may change the marker between the read and the
        // write (its own purge, a new erase): read again, decide again.
        self.retry_conflicts(
            || (),
            || {
                let Some(bytes) = self.engine.get(cf, handle.as_bytes())? else {
                    return Ok(false);
                };
                let mut marker = crate::codec::EraseMarker::decode(&bytes)?;
                drop(bytes);
                if marker.epoch != epoch || marker.purged {
                    return Ok(false);
                }
                marker.purged = true;
                let mut encoded = Vec::new();
                marker.encode(&mut encoded);
                let mut wb = self.engine.batch();
                wb.put(cf, handle.as_bytes(), &encoded)?;
                // Not synced: if the flag is lost in a crash, it is purged again.
                self.engine.write(wb, false)?;
                Ok(true)
            },
        )
    }

    /// Marks the markers of `done` purged (unless the user was erased again
    /// meanwhile), removes them from the pending set and from the filter.
    pub(super) fn mark_purged(&self, done: &[(Handle, u32)]) -> Result<usize> {
        let mut n = 0;
        for (handle, epoch) in done {
            let _guard = self.users.lock(handle);
            if !self.set_marker_purged(Cf::Erased, handle, *epoch)? {
                continue;
            }
            let mut pending = self.pending.lock();
            if pending.get(handle).is_some_and(|p| p.epoch == *epoch) {
                pending.remove(handle);
            }
            drop(pending);
            self.filter.remove_erased(handle, *epoch);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lo: &[u8], hi: &[u8]) -> LiveSst {
        LiveSst {
            cf: Some(Cf::Messages),
            number: 1,
            smallest: lo.to_vec(),
            largest: hi.to_vec(),
        }
    }

    fn key(h: u8, seq: u64) -> Vec<u8> {
        let mut k = vec![h; 16];
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    #[test]
    fn spans_cover_each_file_once() {
        let handles: Vec<Handle> = [2u8, 3, 7, 9].map(|b| Handle([b; 16])).to_vec();
        let a = file(&key(1, 1), &key(3, 9)); // holds 2 and 3
        let b = file(&key(3, 10), &key(5, 1)); // overlaps a: same span
        let c = file(&key(6, 1), &key(8, 1)); // holds 7
        let d = file(&key(10, 1), &key(12, 1)); // none
        let all = [a, b, c, d];
        let over = overlapping(&all, &handles);
        assert_eq!(over.len(), 3);
        let spans = compaction_spans(&over, &handles);
        assert_eq!(
            spans,
            vec![
                (Handle([2; 16]), Handle([3; 16])),
                (Handle([7; 16]), Handle([7; 16]))
            ]
        );
        // A file whose range ends inside a handle's range still meets it.
        assert_eq!(handles_in(&file(&key(1, 1), &key(2, 0)), &handles).len(), 1);
        assert!(handles_in(&file(&key(4, 1), &key(6, 9)), &handles).is_empty());
    }
}

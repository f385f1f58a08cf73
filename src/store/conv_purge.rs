//! The conversation part of a purge.
//!
//! - An erased author: purge walks the author's index entries of erased
//!   epochs and, under each conversation's lock, puts a tombstone (seq,
//!   time, cause; no ciphertext, no author handle) over every slot that
//!   still holds the author's message, and deletes the entries. Idempotent:
//!   a retry finds what is left. The compaction of those conversations'
//!   ranges then drops the superseded ciphertext.
//! - A deleted conversation, in two phases so that a retry never loses
//!   track: first the authors' index ranges of the conversation are
//!   deleted (the authors are read from its slots, which stay until then),
//!   compacted and checked; only then are its slots range-deleted and
//!   compacted.
//! - A redaction: the conversation's range is compacted, so the version
//!   the marker superseded goes.
//!
//! The cost grows with the conversations and index entries touched, never
//! with the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::engine::files::LiveSst;
use super::engine::{Cf, Scope};
use super::{Inner, Pending};
use crate::codec::{
    ConvHeader, ConvKeyRecord, ConvKind, StoredCause, author_key, encode_tombstone,
    handle_upper_bound, message_key, parse_author_key, parse_message_key,
};
use crate::error::Result;
use crate::types::Handle;

/// Index entries handled per batch.
const BATCH: usize = 1024;

/// What a purge does for conversations, and what it found.
#[derive(Default)]
pub(super) struct ConvWork {
    /// Erased authors (handle, erased epoch) whose slots were tombstoned.
    pub(super) authors_erased: Vec<(Handle, u32)>,
    /// Per touched conversation, the erased authors whose slots it held.
    pub(super) touched: BTreeMap<Handle, Vec<(Handle, u32)>>,
    /// Deleted conversations: handle, deleted epoch, first seq not deleted.
    pub(super) deletions: Vec<(Handle, u32, u64)>,
    /// Authors whose index ranges of deleted conversations were cleared.
    pub(super) deletion_authors: BTreeSet<Handle>,
    /// Conversations with pending redactions, with their counters.
    pub(super) redactions: Vec<(Handle, u64)>,
    /// Pending deletions whose marker did not decode.
    pub(super) unreadable_markers: usize,
}

impl ConvWork {
    /// Conversations whose ranges phase 1 compacts: touched by an erased
    /// author, or redacted.
    pub(super) fn phase1_convs(&self) -> Vec<Handle> {
        let mut v: Vec<Handle> = self.touched.keys().copied().collect();
        v.extend(self.redactions.iter().map(|(h, _)| *h));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Deleted conversations, sorted.
    pub(super) fn deleted_convs(&self) -> Vec<Handle> {
        let mut v: Vec<Handle> = self.deletions.iter().map(|(h, _, _)| *h).collect();
        v.sort_unstable();
        v
    }
}

/// Files of `cfs` whose key range meets the records of one of `sorted`.
pub(super) fn overlapping_in<'f>(
    files: &'f [LiveSst],
    cfs: &[Cf],
    sorted: &[Handle],
) -> Vec<&'f LiveSst> {
    files
        .iter()
        .filter(|f| f.cf.is_none_or(|cf| cfs.contains(&cf)))
        .filter(|f| !super::purge::handles_in(f, sorted).is_empty())
        .collect()
}

impl Inner {
    /// Collects the conversation work of a purge and does its writes:
    /// tombstones for erased authors, and the deleted conversations'
    /// author-index ranges.
    pub(super) fn prepare_conv_purge(&self, erasures: &[(Handle, u32)]) -> Result<ConvWork> {
        let mut work = ConvWork {
            redactions: self
                .pending_conv_redactions
                .lock()
                .iter()
                .map(|(h, g)| (*h, *g))
                .collect(),
            ..ConvWork::default()
        };
        for &(author, epoch) in erasures {
            self.tombstone_author(&author, epoch, &mut work)?;
            work.authors_erased.push((author, epoch));
        }
        let deletions: Vec<(Handle, Pending)> = self
            .pending_conv_deletions
            .lock()
            .iter()
            .map(|(h, p)| (*h, *p))
            .collect();
        for (conv, pending) in deletions {
            let marker = match self.conv_marker(&conv) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // Left pending (the purge is then incomplete) rather than
                // failing every other erasure's purge.
                Err(e) => {
                    tracing::error!(conversation = %conv, error = %e,
                        "undecodable deletion marker; delete the conversation again to repair it");
                    work.unreadable_markers += 1;
                    continue;
                }
            };
            let authors = self.slot_authors(&conv, marker.next_seq)?;
            let mut batch = self.engine.batch();
            for a in &authors {
                batch.delete_range(
                    Cf::Authors,
                    &author_key(a, &conv, 0),
                    &author_key(a, &conv, marker.next_seq),
                )?;
            }
            if !batch.is_empty() {
                self.engine.write(batch, false)?;
            }
            work.deletion_authors.extend(authors);
            work.deletions.push((conv, pending.epoch, marker.next_seq));
        }
        Ok(work)
    }

    /// The authors of the slots of `conv` below `end`.
    fn slot_authors(&self, conv: &Handle, end: u64) -> Result<BTreeSet<Handle>> {
        let mut authors = BTreeSet::new();
        let mut it = self.engine.cursor(Cf::ConvMessages, Scope::Handle(conv))?;
        it.seek(&message_key(conv, 0));
        while let Some((k, v)) = it.item() {
            let Ok((h, seq)) = parse_message_key(k) else {
                it.next();
                continue;
            };
            if h != *conv || seq >= end {
                break;
            }
            if let Ok(ConvHeader {
                author: Some((a, _)),
                ..
            }) = ConvHeader::parse(v)
            {
                authors.insert(a);
            }
            it.next();
        }
        it.status()?;
        Ok(authors)
    }

    /// Walks `author`'s index entries of epochs <= `epoch`, a page of at
    /// most [`BATCH`] entries at a time (grouped by conversation), with a
    /// cursor dropped before `f` runs: `f` may write.
    fn author_pages(
        &self,
        author: &Handle,
        epoch: u32,
        mut f: impl FnMut(&BTreeMap<Handle, Vec<u64>>) -> Result<()>,
    ) -> Result<()> {
        let mut from: Option<Vec<u8>> = None;
        loop {
            let mut page: BTreeMap<Handle, Vec<u64>> = BTreeMap::new();
            let mut seen = 0usize;
            let mut last = None;
            {
                let mut it = self.engine.cursor(Cf::Authors, Scope::Handle(author))?;
                match &from {
                    // Past the previous page's last key (which `f` may
                    // have deleted).
                    Some(k) => {
                        it.seek(k);
                        if it.key() == Some(k.as_slice()) {
                            it.next();
                        }
                    }
                    None => it.seek(author.as_bytes()),
                }
                while seen < BATCH {
                    let Some((k, v)) = it.item() else {
                        break;
                    };
                    let Ok((a, conv, seq)) = parse_author_key(k) else {
                        // Not an index key: skipped (it holds no slot).
                        tracing::warn!(author = %author, "malformed author-index key skipped");
                        it.next();
                        continue;
                    };
                    if a != *author {
                        break;
                    }
                    seen += 1;
                    // An unreadable epoch counts as erased.
                    let e = <[u8; 4]>::try_from(v).map_or(0, u32::from_be_bytes);
                    if e <= epoch {
                        page.entry(conv).or_default().push(seq);
                    }
                    last = Some(k.to_vec());
                    it.next();
                }
                it.status()?;
            }
            f(&page)?;
            match last {
                Some(k) if seen == BATCH => from = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// Puts tombstones over the slots of `author`'s erased epochs (<=
    /// `epoch`), keeping their index entries: a purge interrupted before
    /// the conversations are checked finds them again. The entries go only
    /// once every conversation they name is clean
    /// ([`Inner::delete_author_entries`]).
    fn tombstone_author(&self, author: &Handle, epoch: u32, work: &mut ConvWork) -> Result<()> {
        self.author_pages(author, epoch, |page| {
            for (conv, seqs) in page {
                self.tombstone_slots(author, epoch, conv, seqs)?;
                work.touched
                    .entry(*conv)
                    .or_default()
                    .push((*author, epoch));
            }
            Ok(())
        })
    }

    /// Deletes `author`'s index entries of epochs <= `epoch` (their
    /// conversations are clean).
    pub(super) fn delete_author_entries(&self, author: &Handle, epoch: u32) -> Result<()> {
        self.author_pages(author, epoch, |page| {
            let mut batch = self.engine.batch();
            for (conv, seqs) in page {
                for &seq in seqs {
                    batch.delete(Cf::Authors, &author_key(author, conv, seq))?;
                }
            }
            // Not synced: a crash loses nothing the next purge cannot redo.
            self.engine.write(batch, false)
        })
    }

    fn tombstone_slots(
        &self,
        author: &Handle,
        epoch: u32,
        conv: &Handle,
        seqs: &[u64],
    ) -> Result<()> {
        let _guard = self.convs.lock(conv);
        let mut batch = self.engine.batch();
        let mut tomb = Vec::new();
        for &seq in seqs {
            let key = message_key(conv, seq);
            if let Some(v) = self.engine.get(Cf::ConvMessages, &key)?
                && let Ok(h) = ConvHeader::parse(&v)
                && h.kind == ConvKind::Message
                && h.author.is_some_and(|(a, e)| a == *author && e <= epoch)
            {
                tomb.clear();
                encode_tombstone(
                    &mut tomb,
                    h.conv_epoch,
                    h.timestamp_ms,
                    StoredCause::AuthorErased,
                );
                batch.put(Cf::ConvMessages, &key, &tomb)?;
            }
        }
        // Not synced: a crash loses nothing the next purge cannot redo.
        self.engine.write(batch, false)
    }

    /// Phase 2 of the deletions whose authors' ranges are clean: deletes
    /// their slots.
    pub(super) fn delete_conv_slots(&self, deletions: &[(Handle, u32, u64)]) -> Result<()> {
        let mut batch = self.engine.batch();
        for (conv, _, end) in deletions {
            batch.delete_range(
                Cf::ConvMessages,
                &message_key(conv, 0),
                &message_key(conv, *end),
            )?;
        }
        if !batch.is_empty() {
            self.engine.write(batch, false)?;
        }
        Ok(())
    }

    /// Compacts the ranges of `sorted` in `cfs`, as found in `files`.
    pub(super) fn compact_ranges(
        &self,
        files: &[LiveSst],
        cfs: &[Cf],
        sorted: &[Handle],
    ) -> Result<usize> {
        let mut n = 0;
        for &cf in cfs {
            let in_cf: Vec<&LiveSst> = overlapping_in(files, &[cf], sorted)
                .into_iter()
                .filter(|f| f.cf == Some(cf))
                .collect();
            for (first, last) in super::purge::compaction_spans(&in_cf, sorted) {
                let end = handle_upper_bound(&last);
                self.engine.compact(
                    cf,
                    Some(first.as_bytes().as_slice()),
                    end.as_ref().map(|e| e.as_slice()),
                )?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Phase 1's check: conversations that still hold an erased author's
    /// message version or a version a redaction superseded, and the
    /// deleted conversations whose authors' index still holds entries.
    /// Returns (dirty conversations, dirty deletions).
    pub(super) fn conv_remnants_phase1(
        &self,
        work: &ConvWork,
    ) -> Result<(HashSet<Handle>, HashSet<Handle>)> {
        let convs = work.phase1_convs();
        let redacted: HashSet<Handle> = work.redactions.iter().map(|(h, _)| *h).collect();
        let files: Vec<(u64, Option<Cf>)> =
            overlapping_in(&self.engine.live_files()?, &[Cf::ConvMessages], &convs)
                .iter()
                .map(|f| (f.number, f.cf))
                .collect();
        let wanted: HashSet<Handle> = convs.iter().copied().collect();
        let mut dirty = HashSet::new();
        let mut failed = None;
        let report = self.engine.scan_ssts(&files, Some(&wanted), |conv, rec| {
            let (Some(Cf::ConvMessages), Some(value)) = (rec.cf, rec.value) else {
                return;
            };
            let erased_author = ConvHeader::parse(value).map_or(true, |h| {
                h.author.is_some_and(|(a, e)| {
                    work.touched
                        .get(conv)
                        .is_some_and(|v| v.iter().any(|(x, ep)| *x == a && e <= *ep))
                })
            });
            let superseded = redacted.contains(conv)
                && match self.is_current(rec) {
                    Ok(current) => !current,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                };
            if erased_author || superseded {
                dirty.insert(*conv);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if report.unreadable > 0 {
            dirty.extend(wanted);
        }
        // The deleted conversations' entries in their authors' index.
        let authors: Vec<Handle> = work.deletion_authors.iter().copied().collect();
        let deleted: HashMap<Handle, u64> = work
            .deletions
            .iter()
            .map(|(h, _, end)| (*h, *end))
            .collect();
        let files: Vec<(u64, Option<Cf>)> =
            overlapping_in(&self.engine.live_files()?, &[Cf::Authors], &authors)
                .iter()
                .map(|f| (f.number, f.cf))
                .collect();
        let wanted: HashSet<Handle> = authors.iter().copied().collect();
        let mut dirty_deletions = HashSet::new();
        let report = self.engine.scan_ssts(&files, Some(&wanted), |_, rec| {
            if rec.cf != Some(Cf::Authors) || rec.value.is_none() {
                return;
            }
            match parse_author_key(rec.key) {
                Ok((_, conv, seq)) => {
                    if deleted.get(&conv).is_some_and(|end| seq < *end) {
                        dirty_deletions.insert(conv);
                    }
                }
                Err(_) => dirty_deletions.extend(deleted.keys().copied()),
            }
        })?;
        if report.unreadable > 0 {
            dirty_deletions.extend(deleted.keys().copied());
        }
        Ok((dirty, dirty_deletions))
    }

    /// Phase 2's check: deleted conversations of which a slot of a deleted
    /// epoch, a key record of one or a stale idempotency entry or expiry
    /// mark remains.
    pub(super) fn conv_remnants_phase2(
        &self,
        deletions: &[(Handle, u32, u64)],
    ) -> Result<HashSet<Handle>> {
        let sorted: Vec<Handle> = {
            let mut v: Vec<Handle> = deletions.iter().map(|(h, _, _)| *h).collect();
            v.sort_unstable();
            v
        };
        let deleted: HashMap<Handle, (u32, u64)> = deletions
            .iter()
            .map(|(h, e, end)| (*h, (*e, *end)))
            .collect();
        let files: Vec<(u64, Option<Cf>)> =
            overlapping_in(&self.engine.live_files()?, &Cf::CONVERSATION_DATA, &sorted)
                .iter()
                .map(|f| (f.number, f.cf))
                .collect();
        let wanted: HashSet<Handle> = sorted.iter().copied().collect();
        let mut dirty = HashSet::new();
        let mut failed = None;
        let report = self.engine.scan_ssts(&files, Some(&wanted), |conv, rec| {
            let Some(&(epoch, end)) = deleted.get(conv) else {
                return;
            };
            let Some(value) = rec.value else {
                return;
            };
            let stale = match rec.cf {
                Some(Cf::ConvMessages) => match parse_message_key(rec.key) {
                    Ok((_, seq)) => {
                        seq < end
                            || ConvHeader::parse(value).map_or(true, |h| h.conv_epoch <= epoch)
                    }
                    Err(_) => true,
                },
                Some(Cf::ConvKeys) => {
                    ConvKeyRecord::decode(value).map_or(true, |r| r.epoch <= epoch)
                }
                Some(Cf::Dedup | Cf::ExpiryMarks) => match self.is_current(rec) {
                    Ok(current) => !current,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
                Some(_) => false,
                None => true,
            };
            if stale {
                dirty.insert(*conv);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if report.unreadable > 0 {
            dirty.extend(wanted);
        }
        Ok(dirty)
    }

    /// Marks the deletion markers of `done` purged (unless the
    /// conversation was deleted again meanwhile) and drops them from the
    /// pending set.
    pub(super) fn mark_conv_deletions_purged(&self, done: &[(Handle, u32)]) -> Result<usize> {
        let mut n = 0;
        for (conv, epoch) in done {
            let _guard = self.convs.lock(conv);
            if !self.set_marker_purged(Cf::ConvDeleted, conv, *epoch)? {
                continue;
            }
            let mut pending = self.pending_conv_deletions.lock();
            if pending.get(conv).is_some_and(|p| p.epoch == *epoch) {
                pending.remove(conv);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Clears the pending-redaction flag of conversations whose redactions
    /// a purge made physical, unless they redacted again meanwhile.
    pub(super) fn mark_conv_redactions_purged(&self, seen: &[(Handle, u64)]) -> Result<usize> {
        let mut done = 0;
        for (conv, generation) in seen {
            let _guard = self.convs.lock(conv);
            if self.pending_conv_redactions.lock().get(conv) != Some(generation) {
                continue;
            }
            if let Some(mut rec) = self.conv_key_record(conv)?
                && rec.policy.purge_pending
            {
                rec.policy.purge_pending = false;
                let mut wb = self.engine.batch();
                self.put_conv_key_record(&mut wb, conv, &rec)?;
                self.engine.write(wb, false)?;
                // The cached state reloads with the new policy.
                self.convs.forget(conv);
            }
            self.pending_conv_redactions.lock().remove(conv);
            done += 1;
        }
        Ok(done)
    }
}

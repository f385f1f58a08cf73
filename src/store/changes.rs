//! The change feed: what erasures, conversation deletions, redactions and
//! retention took away, by handle and seq, numbered in commit order so a
//! consumer (a search index, a cache, a push service) can drop its copies
//! and resume where it stopped.
//!
//! A change is written in the same batch as the operation it reports, so
//! either both are durable or neither is. Numbers are handed out under one
//! mutex held across the batch's write: a reader that has seen number `n`
//! never later finds a smaller one appear (no gaps behind a cursor). Only
//! erasures, deletions, redactions and the expiry sweep take it; appends
//! never do.
//!
//! Expiry happens continuously (a read hides what is past its horizon), so
//! it is reported by a sweep ([`Inner::report_expiries`], run by the
//! purger every purge interval): for each user and conversation whose
//! retention can expire anything, the seq below which everything is gone,
//! once it moves. What was reported is kept per handle (`expiry_marks`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::engine::{Batch, Cf, Scope};
use super::{Inner, Store};
use crate::codec::{
    self, Change, ChangeRecord, ConvRecord, EnvelopeHeader, MESSAGE_KEY_LEN, UserPolicy,
    change_key, message_key, parse_change_key,
};
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::Handle;

/// Where a reader of the change feed stands: after the change it names
/// (opaque; [`ChangeCursor::to_bytes`] is what gRPC clients hold). The
/// default cursor is before the first change. Besides the change's number
/// it holds the checksum of that change's record, so a cursor from another
/// store, or from before a restore of an older copy, is refused instead of
/// silently skipping changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ChangeCursor {
    number: u64,
    tag: u32,
}

impl ChangeCursor {
    /// Length of [`ChangeCursor::to_bytes`] (an empty cursor is the start).
    pub const LEN: usize = 12;

    /// The cursor's bytes: empty at the start, else the change number (u64
    /// BE) and the checksum of its record (u32 BE).
    pub fn to_bytes(self) -> Vec<u8> {
        if self.number == 0 {
            return Vec::new();
        }
        let mut b = self.number.to_be_bytes().to_vec();
        b.extend_from_slice(&self.tag.to_be_bytes());
        b
    }

    /// Parses [`ChangeCursor::to_bytes`].
    ///
    /// # Errors
    /// [`InvalidArgument::ChangeCursor`] for bytes of another length or
    /// change number 0.
    pub fn from_bytes(bytes: &[u8]) -> Result<ChangeCursor> {
        if bytes.is_empty() {
            return Ok(ChangeCursor::default());
        }
        let (Ok(n), Ok(t)) = (
            <[u8; 8]>::try_from(bytes.get(..8).unwrap_or_default()),
            <[u8; 4]>::try_from(bytes.get(8..).unwrap_or_default()),
        ) else {
            return Err(InvalidArgument::ChangeCursor("must be empty or 12 bytes").into());
        };
        let number = u64::from_be_bytes(n);
        if number == 0 {
            return Err(InvalidArgument::ChangeCursor("names change 0").into());
        }
        Ok(ChangeCursor {
            number,
            tag: u32::from_be_bytes(t),
        })
    }

    /// The number of the last change before it (0 at the start).
    pub fn number(self) -> u64 {
        self.number
    }
}

/// The checksum that ties a cursor to its record (the record's own CRC).
fn tag_of(value: &[u8]) -> u32 {
    value
        .len()
        .checked_sub(4)
        .and_then(|i| <[u8; 4]>::try_from(&value[i..]).ok())
        .map_or(0, u32::from_be_bytes)
}

/// One change of the feed ([`Store::changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeEntry {
    /// The change's number: 1, 2, 3… in commit order, never reused.
    pub number: u64,
    /// The cursor just after this change (resume from it).
    pub cursor: ChangeCursor,
    /// When it was committed, ms since the Unix epoch.
    pub time_ms: u64,
    /// What changed.
    pub change: Change,
}

/// The feed's numbering and its waiters.
pub(super) struct ChangeLog {
    /// The next change number to hand out (numbers start at 1); held
    /// across the write of the batch that uses it.
    next: Mutex<u64>,
    /// Readers see changes up to this number: durable (synced), and their
    /// operation's in-memory effects done.
    published: Mutex<u64>,
    cv: Condvar,
    /// Where an interrupted expiry sweep goes on: (conversations phase,
    /// last handle done).
    sweep_from: Mutex<Option<(bool, Handle)>>,
}

impl ChangeLog {
    pub(super) fn new(next: u64) -> ChangeLog {
        ChangeLog {
            next: Mutex::new(next.max(1)),
            published: Mutex::new(next.max(1) - 1),
            cv: Condvar::new(),
            sweep_from: Mutex::new(None),
        }
    }
}

/// Most records one sweep reads per handle (the rest waits for the next).
const SWEEP_SCAN_LIMIT: usize = 10_000;

impl Store {
    /// Up to `limit` changes after `after` (the start by default), oldest
    /// first: the change feed. Each entry's `cursor` resumes after it.
    ///
    /// # Errors
    /// [`InvalidArgument::Limit`] for a limit of 0 or above the read limit,
    /// [`InvalidArgument::ChangeCursor`] for a cursor ahead of the feed (from
    /// another store), a damaged record, or a storage error.
    pub fn changes(&self, after: ChangeCursor, limit: usize) -> Result<Vec<ChangeEntry>> {
        self.inner.changes_page(after, limit)
    }

    /// The cursor after the newest change (where a new consumer that wants
    /// only what comes next starts).
    ///
    /// # Errors
    /// A damaged record or a storage error.
    pub fn changes_end(&self) -> Result<ChangeCursor> {
        self.inner.changes_end()
    }

    /// Waits until a change after `after` is committed, at most `timeout`.
    /// Returns whether there is one.
    pub fn wait_for_changes(&self, after: ChangeCursor, timeout: Duration) -> bool {
        self.inner.wait_for_changes(after, timeout)
    }

    /// Reports on the change feed what retention expired since the last
    /// report (the background purger does this every purge interval).
    /// Returns the number of changes written.
    ///
    /// # Errors
    /// A damaged record or a storage error.
    pub fn report_expiries(&self) -> Result<usize> {
        self.inner.report_expiries(&|| false)
    }
}

impl Inner {
    /// Reads the numbering back at open.
    pub(super) fn recover_change_log(&self) -> Result<()> {
        let mut it = self.engine.cursor(Cf::Changes, Scope::All)?;
        it.seek_for_prev(&change_key(u64::MAX));
        let last = match it.key() {
            Some(k) => parse_change_key(k)?,
            None => 0,
        };
        it.status()?;
        let next = last.checked_add(1).ok_or(Error::Corrupt(Corruption::Key))?;
        *self.changes.next.lock() = next;
        *self.changes.published.lock() = last;
        Ok(())
    }

    /// After a lost race with another front end (JetStream): the change
    /// numbers it may have used meanwhile are skipped, so the retry does
    /// not collide with them again.
    pub(super) fn resync_after_conflict(&self) {
        let tail = (|| -> Result<u64> {
            let mut it = self.engine.cursor(Cf::Changes, Scope::All)?;
            it.seek_for_prev(&change_key(u64::MAX));
            let last = it.key().map(parse_change_key).transpose()?.unwrap_or(0);
            it.status()?;
            Ok(last)
        })();
        match tail {
            Ok(last) => {
                let mut next = self.changes.next.lock();
                *next = (*next).max(last.saturating_add(1));
            }
            Err(e) => tracing::warn!(error = %e, "re-reading the change feed's end failed"),
        }
    }

    /// Writes `batch` with `changes` appended to the feed (stamped
    /// `time_ms`), numbered in commit order. Returns the last number used
    /// (0 if none): the caller publishes it ([`Inner::publish_changes`])
    /// once its in-memory effects are done, and only if the write was
    /// synced (else after a WAL sync), so no reader sees a change that a
    /// power loss could take back, and hence no number is handed out twice.
    #[must_use = "publish the changes"]
    pub(super) fn write_with_changes(
        &self,
        mut batch: Batch<'_>,
        time_ms: u64,
        changes: &[Change],
        sync: bool,
    ) -> Result<u64> {
        if changes.is_empty() {
            self.engine.write(batch, sync)?;
            return Ok(0);
        }
        let mut next = self.changes.next.lock();
        let mut value = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            value.clear();
            ChangeRecord {
                time_ms,
                change: *change,
            }
            .encode(&mut value);
            batch.put(Cf::Changes, &change_key(*next + i as u64), &value)?;
        }
        if let Err(e) = self.engine.write(batch, sync) {
            drop(next);
            if matches!(e, Error::Conflict) {
                // Another front end may have taken these numbers: skip
                // past them for the retry.
                self.resync_after_conflict();
            }
            return Err(e);
        }
        *next += changes.len() as u64;
        Ok(*next - 1)
    }

    /// Lets readers see every change up to `number` (written and synced).
    pub(super) fn publish_changes(&self, number: u64) {
        if number == 0 {
            return;
        }
        let mut published = self.changes.published.lock();
        if number > *published {
            *published = number;
            self.changes.cv.notify_all();
        }
    }

    /// The newest change readers may see.
    pub(super) fn last_change(&self) -> u64 {
        *self.changes.published.lock()
    }

    pub(super) fn changes_end(&self) -> Result<ChangeCursor> {
        let number = self.last_change();
        if number == 0 {
            return Ok(ChangeCursor::default());
        }
        let value = self
            .engine
            .get(Cf::Changes, &change_key(number))?
            .ok_or(Error::Corrupt(Corruption::Key))?;
        Ok(ChangeCursor {
            number,
            tag: tag_of(&value),
        })
    }

    pub(super) fn wait_for_changes(&self, after: ChangeCursor, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut published = self.changes.published.lock();
        while *published <= after.number {
            match deadline {
                Some(d) => {
                    if self.changes.cv.wait_until(&mut published, d).timed_out() {
                        return *published > after.number;
                    }
                }
                None => self.changes.cv.wait(&mut published),
            }
        }
        true
    }

    pub(super) fn changes_page(
        &self,
        after: ChangeCursor,
        limit: usize,
    ) -> Result<Vec<ChangeEntry>> {
        self.check_limit(limit)?;
        let last = self.last_change();
        if after.number > last {
            return Err(InvalidArgument::ChangeCursor("is ahead of this store's feed").into());
        }
        if after.number > 0 {
            let matches = self
                .engine
                .get(Cf::Changes, &change_key(after.number))?
                .is_some_and(|v| tag_of(&v) == after.tag);
            if !matches {
                return Err(InvalidArgument::ChangeCursor(
                    "does not match this store's feed (another store, or a restored copy)",
                )
                .into());
            }
        }
        let mut it = self.engine.cursor(Cf::Changes, Scope::All)?;
        it.seek(&change_key(after.number.saturating_add(1)));
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let number = parse_change_key(k)?;
            // Only what was committed when the page began: a batch being
            // written now may already be visible, its successor not yet.
            if number > last || out.len() >= limit {
                break;
            }
            let r = ChangeRecord::decode(v)?;
            out.push(ChangeEntry {
                number,
                cursor: ChangeCursor {
                    number,
                    tag: tag_of(v),
                },
                time_ms: r.time_ms,
                change: r.change,
            });
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The expiry sweep (see the module doc). Between handles it asks
    /// `interrupt` whether to stop (the purger: on close, or when an
    /// erasure waits for purge); the next sweep goes on after the last
    /// handle done. A damaged record stops its own handle only (logged by
    /// handle, counted as an integrity failure).
    pub(super) fn report_expiries(&self, interrupt: &dyn Fn() -> bool) -> Result<usize> {
        if !self.filter.is_ready() {
            return Ok(0);
        }
        let (users, convs) = self.expiry_candidates()?;
        let from = self.changes.sweep_from.lock().take();
        let mut written = 0;
        let mut last_number = 0;
        let mut interrupted = false;
        'sweep: for (conversation, handles) in [(false, &users), (true, &convs)] {
            for h in handles {
                if let Some((phase, done)) = from
                    && ((!conversation && phase) || (conversation == phase && *h <= done))
                {
                    continue;
                }
                if interrupt() {
                    *self.changes.sweep_from.lock() = Some((conversation, *h));
                    interrupted = true;
                    break 'sweep;
                }
                match self.report_expiry(h, conversation) {
                    Ok(0) => {}
                    Ok(n) => {
                        written += 1;
                        last_number = n;
                    }
                    Err(e @ Error::Corrupt(_)) => {
                        self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(handle = %h, error = %e,
                            "damaged record: expiry of this handle not reported");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // The sweep's writes are not synced one by one: one WAL sync, then
        // they become visible.
        if last_number > 0 {
            self.engine.sync_wal()?;
            self.publish_changes(last_number);
        }
        if written > 0 {
            tracing::info!(
                changes = written,
                interrupted,
                "expiries reported on the change feed"
            );
        }
        Ok(written)
    }

    /// The users and conversations whose retention may expire something:
    /// all of them under a store-wide period, else those with a policy of
    /// their own.
    fn expiry_candidates(&self) -> Result<(Vec<Handle>, Vec<Handle>)> {
        let handles = |cf| -> Result<Vec<Handle>> {
            let mut it = self.engine.cursor(cf, Scope::All)?;
            it.seek_to_first();
            let mut out = Vec::new();
            while let Some(k) = it.key() {
                out.push(codec::parse_handle_key(k)?);
                it.next();
            }
            it.status()?;
            Ok(out)
        };
        if self.default_retention_ms.is_some() {
            return Ok((handles(Cf::Keys)?, handles(Cf::ConvKeys)?));
        }
        let (mut users, mut convs) = (Vec::new(), Vec::new());
        let mut handles = self.filter.policy_handles();
        handles.sort_unstable();
        for h in handles {
            if self.engine.get(Cf::Keys, h.as_bytes())?.is_some() {
                users.push(h);
            } else if self.engine.get(Cf::ConvKeys, h.as_bytes())?.is_some() {
                convs.push(h);
            }
        }
        Ok((users, convs))
    }

    /// Reports how far `handle`'s messages expired, if that moved (returns
    /// the change's number, unpublished; 0 if nothing moved); under its
    /// lock, so it never races an erasure or deletion of it.
    fn report_expiry(&self, handle: &Handle, conversation: bool) -> Result<u64> {
        let now = self.clock.now_ms();
        // The records, not the caches: a sweep over every user must not
        // unwrap their keys or push the hot ones out of the key cache.
        let (_user_guard, _conv_guard);
        let (first_seq, policy): (u64, UserPolicy) = if conversation {
            _conv_guard = self.convs.lock(handle);
            match self.conv_key_record(handle)? {
                Some(r) => (r.first_seq, r.policy),
                None => return Ok(0),
            }
        } else {
            _user_guard = self.users.lock(handle);
            match self.key_record(handle)? {
                Some(r) => (r.first_seq, r.state.policy()),
                None => return Ok(0),
            }
        };
        let horizon = policy.horizon(now, self.default_retention_ms);
        if horizon == 0 {
            return Ok(0);
        }
        let mark = self.expiry_mark(handle)?;
        let start = mark.max(first_seq);
        let cf = if conversation {
            Cf::ConvMessages
        } else {
            Cf::Messages
        };
        let mut it = self.engine.cursor(cf, Scope::Handle(handle))?;
        it.seek(&message_key(handle, start));
        // Every seq in [first_seq, next seq) was written and keeps its slot
        // until retention removes it: a missing one has expired. While
        // retention may apply, the seq high-water mark is the next seq, so
        // past the last record everything below it is gone.
        let mut before = self.seq_floor(handle)?;
        let mut scanned = 0;
        while let Some((k, v)) = it.item() {
            if k.len() != MESSAGE_KEY_LEN {
                return Err(Error::Corrupt(Corruption::Key));
            }
            let seq = codec::parse_message_key(k)?.1;
            let timestamp_ms = if conversation {
                ConvRecord::decode(v).map(|r| r.timestamp_ms())
            } else {
                EnvelopeHeader::parse(v).map(|h| h.timestamp_ms)
            };
            // A damaged record: report up to it, never past it.
            let Ok(timestamp_ms) = timestamp_ms else {
                before = seq;
                self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%handle, seq, "damaged record: expiry reported up to it");
                break;
            };
            if timestamp_ms >= horizon {
                before = seq;
                break;
            }
            before = before.max(seq.saturating_add(1));
            scanned += 1;
            if scanned >= SWEEP_SCAN_LIMIT {
                before = seq.saturating_add(1);
                break;
            }
            it.next();
        }
        it.status()?;
        drop(it);
        if before <= start {
            return Ok(0);
        }
        let change = if conversation {
            Change::ConversationMessagesExpired {
                conversation: handle.0,
                before_seq: before,
            }
        } else {
            Change::MessagesExpired {
                user: handle.0,
                before_seq: before,
            }
        };
        let mut batch = self.engine.batch();
        batch.put(Cf::ExpiryMarks, handle.as_bytes(), &before.to_be_bytes())?;
        // Not synced one by one (the sweep syncs once, then publishes): a
        // change lost in a crash goes with its mark, was never seen, and
        // the next sweep reports it again.
        self.write_with_changes(batch, now, &[change], false)
    }

    fn expiry_mark(&self, handle: &Handle) -> Result<u64> {
        Ok(self.get_u64(Cf::ExpiryMarks, handle)?.unwrap_or(0))
    }
}

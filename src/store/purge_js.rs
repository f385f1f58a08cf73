//! Purge on the JetStream engine. There is no compaction filter: the purge
//! walks every stored version under each pending user's handle, current
//! and replaced alike, and removes the erased ones with JetStream's secure
//! delete (`STREAM.MSG.DELETE` without `no_erase`: the bytes are
//! overwritten on every replica that applies it). Never purge-by-subject,
//! which leaves the bytes in the block files. A run deletes at most
//! [`PURGE_BUDGET`] messages; the rest waits for the next run.
//!
//! A run deletes only while every replica of every partition is online and
//! current (waiting up to a few seconds for a follower a few entries
//! behind), and reports an erasure purged only if they all are again after
//! its deletes. A replica that
//! missed them keeps the bytes (measured: catching up later does not
//! remove them from its Raft log) until it is rebuilt, so an erasure purged
//! while one was not is recorded as unconfirmed (meta record
//! `jetstream_unconfirmed`) and stays pending until the operator has
//! rebuilt that replica and says so ([`Inner::confirm_replicas_rebuilt`];
//! README "Scale-out").
//! Not yet purged here, so left pending: the conversation slots of an
//! erased author, deleted conversations and conversation redactions.

use std::collections::HashMap;
use std::time::Instant;

use super::Inner;
use super::engine::files::FileRecord;
use super::engine::jetstream::JetStreamEngine;
use super::engine::{Cf, Scope};
use super::inner::Pending;
use super::purge::PurgeReport;
use crate::codec::{self, EraseMarker};
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// The meta record listing the erasures purged while a replica was not
/// current: `handle || epoch (u32 BE)` each (docs/format.md).
pub(super) const META_UNCONFIRMED: &[u8] = b"jetstream_unconfirmed";

/// How long a purge or an erase waits for every replica to be current
/// before it counts one as offline or behind.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Secure deletes of one purge run at most (each is one request to the
/// stream's leader, replicated to the others).
pub(super) const PURGE_BUDGET: u64 = 10_000;

impl Inner {
    /// [`Inner::purge`]'s work on JetStream.
    pub(super) fn purge_jetstream(
        &self,
        js: &JetStreamEngine,
        erasures: &[(Handle, u32)],
        redactions: &[(Handle, u64)],
        started: Instant,
    ) -> Result<PurgeReport> {
        // With a replica offline or behind, deleting would leave it the
        // bytes: wait for it, else delete nothing this run.
        if !js.replicas_settle(SETTLE)? {
            tracing::warn!(
                "purge skipped on JetStream: a replica is offline or behind; will retry"
            );
            return Ok(PurgeReport {
                erasures_purged: 0,
                redactions_purged: 0,
                conversations_purged: 0,
                complete: false,
                duration: started.elapsed(),
            });
        }
        let mut budget = PURGE_BUDGET;
        let mut clean = Vec::new();
        let mut unfinished = 0usize;
        let mut deleted = 0u64;
        // The erasures this run deleted something of.
        let mut touched = Vec::new();
        for (handle, epoch) in erasures {
            let mut finished = true;
            let deleted_before = deleted;
            for cf in Cf::USER_DATA {
                // The author index says where an erased author's
                // conversation slots are: it stays until those are purged.
                if cf == Cf::Authors {
                    continue;
                }
                let (n, done) = js.secure_delete_where(cf, handle, budget, |key, value| {
                    self.is_erased_version(
                        *epoch,
                        FileRecord {
                            cf: Some(cf),
                            key,
                            value,
                        },
                    )
                })?;
                budget -= n;
                deleted += n;
                finished &= done;
            }
            if deleted > deleted_before {
                touched.push((*handle, *epoch));
            }
            let authored = !js.list_keys(Cf::Authors, Scope::Handle(handle))?.is_empty();
            if finished && !authored {
                clean.push((*handle, *epoch));
            } else {
                unfinished += 1;
            }
        }
        // Redactions replace a message's value; the write removed the old
        // one right after its commit, the sweep removes what a crash left.
        let swept = if redactions.is_empty() {
            0
        } else {
            js.sweep()?
        };
        let conversations_waiting = !self.pending_conv_deletions.lock().is_empty()
            || !self.pending_conv_redactions.lock().is_empty();
        // Every replica must have applied the deletes (it follows the log
        // while it is online and current).
        let replicas = js.replicas_settle(SETTLE)?;
        let (mut erasures_purged, mut redactions_purged) = (0, 0);
        let unconfirmed = if replicas || touched.is_empty() {
            self.unconfirmed_erasures()?
        } else {
            // The replica that missed these deletes keeps the bytes.
            self.update_unconfirmed(|list| {
                for (h, e) in &touched {
                    add_unconfirmed(list, *h, *e);
                }
            })?
        };
        if replicas {
            let confirmed: Vec<(Handle, u32)> = clean
                .iter()
                .copied()
                .filter(|(h, e)| !unconfirmed.iter().any(|(u, ue)| u == h && ue >= e))
                .collect();
            unfinished += clean.len() - confirmed.len();
            erasures_purged = self.mark_purged(&confirmed)?;
            redactions_purged = self.mark_redactions_purged(redactions)?;
        }
        let complete = replicas && unfinished == 0 && !conversations_waiting;
        if complete {
            self.purges_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            tracing::warn!(
                replicas_current = replicas,
                users_unfinished = unfinished,
                conversations_waiting,
                "purge incomplete on JetStream: a replica is or was offline or behind (it \
                 keeps what it missed until rebuilt and confirmed), the run's delete budget \
                 ran out, or the data is of conversations, which this engine does not purge \
                 yet; will retry"
            );
        }
        let report = PurgeReport {
            erasures_purged,
            redactions_purged,
            conversations_purged: 0,
            complete,
            duration: started.elapsed(),
        };
        tracing::info!(
            erasures_purged,
            redactions_purged,
            unconfirmed = unconfirmed.len(),
            deleted,
            swept,
            complete,
            duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            "purge finished (jetstream)"
        );
        Ok(report)
    }

    /// On JetStream, the pending erasures are those whose marker in the
    /// cluster is not purged: another front end may have erased (or
    /// purged) since this one loaded them. Nothing to do on RocksDB.
    pub(super) fn refresh_pending(&self) -> Result<()> {
        if self.engine.jetstream().is_none() {
            return Ok(());
        }
        let mut fresh = HashMap::new();
        let mut it = self.engine.cursor(Cf::Erased, Scope::All)?;
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            // An undecodable marker was reported when it was loaded (or
            // will be, by the front end that loads it): not purgeable.
            if let (Ok(h), Ok(m)) = (codec::parse_handle_key(k), EraseMarker::decode(v))
                && !m.purged
            {
                fresh.insert(
                    h,
                    Pending {
                        epoch: m.epoch,
                        erased_at_ms: m.erased_at_ms,
                    },
                );
            }
            it.next();
        }
        it.status()?;
        *self.pending.lock() = fresh;
        Ok(())
    }

    /// The erasures purged while a replica was not current.
    pub(super) fn unconfirmed_erasures(&self) -> Result<Vec<(Handle, u32)>> {
        let Some(v) = self.engine.get(Cf::Meta, META_UNCONFIRMED)? else {
            return Ok(Vec::new());
        };
        let entry = Handle::LEN + 4;
        if v.len() % entry != 0 {
            return Err(Error::Corrupt(Corruption::Meta));
        }
        Ok(v.chunks_exact(entry)
            .map(|c| {
                let mut h = [0u8; Handle::LEN];
                h.copy_from_slice(&c[..Handle::LEN]);
                let mut e = [0u8; 4];
                e.copy_from_slice(&c[Handle::LEN..]);
                (Handle(h), u32::from_be_bytes(e))
            })
            .collect())
    }

    /// After an erasure on JetStream: if a replica is offline or behind,
    /// it keeps what it holds of the user (its own log included) until it
    /// is rebuilt, so the erasure joins the unconfirmed ones.
    pub(super) fn note_erasure_replicas(&self, handle: &Handle, epoch: u32) -> Result<()> {
        let Some(js) = self.engine.jetstream() else {
            return Ok(());
        };
        if js.replicas_settle(SETTLE)? {
            return Ok(());
        }
        let _purging = self.purge_lock.lock();
        self.update_unconfirmed(|list| add_unconfirmed(list, *handle, epoch))
            .map(drop)
    }

    /// Applies `change` to the unconfirmed erasures and stores the result
    /// (read again and applied again when another front end changed them
    /// meanwhile). Returns the list stored.
    fn update_unconfirmed(
        &self,
        mut change: impl FnMut(&mut Vec<(Handle, u32)>),
    ) -> Result<Vec<(Handle, u32)>> {
        self.retry_conflicts(
            || (),
            || {
                let mut list = self.unconfirmed_erasures()?;
                change(&mut list);
                self.put_unconfirmed(&list)?;
                Ok(list)
            },
        )
    }

    fn put_unconfirmed(&self, list: &[(Handle, u32)]) -> Result<()> {
        let mut b = self.engine.batch();
        if list.is_empty() {
            b.delete(Cf::Meta, META_UNCONFIRMED)?;
        } else {
            let mut v = Vec::with_capacity(list.len() * (Handle::LEN + 4));
            for (h, e) in list {
                v.extend_from_slice(h.as_bytes());
                v.extend_from_slice(&e.to_be_bytes());
            }
            b.put(Cf::Meta, META_UNCONFIRMED, &v)?;
        }
        self.engine.write(b, true)
    }

    /// The operator rebuilt every replica that was offline or behind during
    /// a purge (README "Scale-out": its store directory removed, the node
    /// restarted, the streams copied to it afresh): the erasures purged
    /// then may be reported physical at the next purge. Refused while a
    /// replica is still not current. Returns how many it released.
    pub(super) fn confirm_replicas_rebuilt(&self) -> Result<usize> {
        let js = self.engine.jetstream().ok_or(Error::Unsupported {
            engine: super::engine::ROCKSDB,
            operation: "confirming a JetStream replica rebuild",
        })?;
        let _purging = self.purge_lock.lock();
        // What the operator confirms: the erasures listed when every
        // replica was seen current (one added since, by another front end,
        // stays).
        let confirmed = self.unconfirmed_erasures()?;
        if !js.replicas_current()? {
            return Err(Error::JetStream(
                "a replica is still offline or behind: rebuild it first".into(),
            ));
        }
        self.update_unconfirmed(|list| list.retain(|e| !confirmed.contains(e)))?;
        let released = confirmed.len();
        Ok(released)
    }
}

/// Adds the erasure `(handle, epoch)` to `list` (a later epoch of the same
/// user replaces an earlier one).
fn add_unconfirmed(list: &mut Vec<(Handle, u32)>, handle: Handle, epoch: u32) {
    match list.iter_mut().find(|(h, _)| *h == handle) {
        Some((_, e)) => *e = (*e).max(epoch),
        None => list.push((handle, epoch)),
    }
}

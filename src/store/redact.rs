//! Redaction (Art. 16, a chat's "delete for everyone"): a message is
//! overwritten by a marker envelope that keeps its seq and time and seals
//! the reason under the user's key; the next purge removes the old version
//! from the files.

use std::sync::atomic::Ordering;

use super::engine::Cf;
use super::rights::check_text;
use super::sealing::{open_message, seal};
use super::{Inner, Store};
use crate::codec::{self, AuditOp, AuditOutcome, Envelope, EnvelopeKind, KeyState, RedactionBody};
use crate::error::{Corruption, Error, Result};
use crate::types::{Handle, UserId};

/// What [`Store::redact_as`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redacted {
    /// The redacted message's seq.
    pub seq: u64,
    /// Its original append time (kept by the marker).
    pub timestamp_ms: u64,
    /// When it was redacted (the first time, if it already was).
    pub redacted_at_ms: u64,
    /// It had been redacted before; nothing changed.
    pub already_redacted: bool,
}

impl Store {
    /// Redacts message `seq` of `user` (Art. 16 rectification, a chat's
    /// "delete message"): replaces it by a marker that keeps seq and append
    /// time and holds `reason` (sealed under the user's key). Reads and
    /// exports return the marker. The old ciphertext is removed physically
    /// by the next purge. Redacting a marker again changes nothing.
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`] (never written, erased or expired),
    /// [`Error::LegalHold`], [`InvalidArgument::TextTooLong`], a damaged
    /// record, or a storage error.
    pub fn redact_as(
        &self,
        user: &UserId,
        seq: u64,
        reason: &str,
        actor: &str,
    ) -> Result<Redacted> {
        let handle = self.handle(user);
        let r = check_text("redaction reason", reason).and_then(|()| {
            self.inner
                .counted(self.inner.redact(&handle, seq, reason, actor, None))
        });
        self.inner.audit_refusal(actor, AuditOp::Redact, handle, r)
    }
}

impl Inner {
    /// Redacts message `seq` of `handle`. `replayed_at` (a restore
    /// replaying a journal) is when it was redacted where it happened: a
    /// hold does not refuse it.
    pub(super) fn redact(
        &self,
        handle: &Handle,
        seq: u64,
        reason: &str,
        actor: &str,
        replayed_at: Option<u64>,
    ) -> Result<Redacted> {
        self.engine.check_writable()?;
        let _guard = self.users.lock(handle);
        let now = self.clock.now_ms();
        let Some(user) = self.live_record(handle, false)? else {
            return Err(Error::NoSuchMessage);
        };
        let state = &user.state;
        if replayed_at.is_none() && state.policy().active_hold(now).is_some() {
            return Err(Error::LegalHold);
        }
        if seq < state.first_seq {
            return Err(Error::NoSuchMessage);
        }
        let key = codec::message_key(handle, seq);
        let stored = self
            .engine
            .get(Cf::Messages, &key)?
            .ok_or(Error::NoSuchMessage)?;
        let env = Envelope::decode(&stored)?;
        if env.epoch != state.epoch {
            return Err(Error::Corrupt(Corruption::EpochMismatch));
        }
        if env.timestamp_ms < state.policy().horizon(now, self.default_retention_ms) {
            return Err(Error::NoSuchMessage);
        }
        if env.kind == EnvelopeKind::Redaction {
            let m = open_message(handle, state, &key, &env)?;
            drop(stored);
            // Nothing changes, but the request is still a rights operation.
            self.record_audit(actor, AuditOp::Redact, Some(*handle), AuditOutcome::Ok)?;
            return Ok(Redacted {
                seq,
                timestamp_ms: m.timestamp_ms,
                redacted_at_ms: m.redaction.map_or(now, |r| r.redacted_at_ms),
                already_redacted: true,
            });
        }
        let timestamp_ms = env.timestamp_ms;
        drop(stored);
        let body = RedactionBody {
            redacted_at_ms: replayed_at.unwrap_or(now),
            reason: reason.to_owned(),
        }
        .to_bytes();
        let mut marker = Vec::new();
        seal(
            &mut marker,
            self.rng.as_ref(),
            state,
            EnvelopeKind::Redaction,
            handle,
            seq,
            timestamp_ms,
            &body,
        )?;
        let mut batch = self.engine.batch();
        batch.put(Cf::Messages, &key, &marker)?;
        let mut policy = user.rec.state.policy();
        policy.purge_pending = true;
        let change = codec::Change::MessageRedacted {
            user: handle.0,
            seq,
        };
        self.commit_policy(
            handle,
            user,
            policy,
            batch,
            (actor, AuditOp::Redact),
            Some(change),
        )?;
        // A store-wide counter: a purge that saw an older value (also one
        // from before an erasure of this user) never clears this redaction.
        let generation = self.redaction_counter.fetch_add(1, Ordering::Relaxed);
        self.pending_redactions.lock().insert(*handle, generation);
        self.purger_signal.notify();
        tracing::info!(%handle, seq, "message redacted");
        Ok(Redacted {
            seq,
            timestamp_ms,
            redacted_at_ms: now,
            already_redacted: false,
        })
    }

    /// Clears the pending-redaction flag of users whose redactions a purge
    /// made physical, unless they redacted again meanwhile.
    pub(super) fn mark_redactions_purged(&self, seen: &[(Handle, u64)]) -> Result<usize> {
        let mut done = 0;
        for (handle, generation) in seen {
            let _guard = self.users.lock(handle);
            if self.pending_redactions.lock().get(handle) != Some(generation) {
                continue;
            }
            if let Some(mut rec) = self.key_record(handle)? {
                let mut policy = rec.state.policy();
                if policy.purge_pending {
                    policy.purge_pending = false;
                    rec.state = KeyState::of(policy.clone());
                    let mut wb = self.engine.batch();
                    self.put_key_record(&mut wb, handle, &rec)?;
                    // Not synced: if the flag is lost in a crash, the range is purged again.
                    match self.engine.write(wb, false) {
                        Ok(()) => self.users.set_cached_policy(handle, policy),
                        // Another front end changed the key record since
                        // the read (maybe a new redaction, which this run's
                        // sweep did not see): the flag stays for the next
                        // purge.
                        Err(Error::Conflict) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            self.pending_redactions.lock().remove(handle);
            done += 1;
        }
        Ok(done)
    }
}

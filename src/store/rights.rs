//! Data-subject rights beyond erasure: restriction (Art. 18), redaction
//! (Art. 16), retention (Art. 5(1)(e)), consent records and legal holds.
//!
//! A user's rights policy lives in its key record ([`KeyState::Governed`]),
//! so it survives restarts and goes with the key when the user is erased.
//! Every change writes its audit record in the same atomic batch; refusals
//! (a legal hold, a restriction, a blocked user) are recorded as `refused`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use super::{CF_CONSENT, CF_DEDUP, CF_KEYS, CF_MESSAGES, CachedUser, Inner, Store, UserState};
use crate::codec::{
    self, AuditOp, AuditOutcome, Consent, Envelope, EnvelopeKind, EraseMarker, KeyRecord, KeyState,
    LegalHold, MAX_REASON_LEN, RedactionBody, Restriction, Retention, UserPolicy,
};
use crate::crypto::NONCE_LEN;
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::{Handle, UserId};

/// Who is reading: the normal path, or the privileged one that may read a
/// user whose reads are restricted (`block_reads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Normal processing: refused for a user with `block_reads`.
    #[default]
    Subject,
    /// Privileged access for legal claims (Art. 18(2)); the caller audits it.
    Override,
}

/// A user's restriction, retention and legal-hold state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RightsState {
    /// Restriction of processing.
    pub restriction: Restriction,
    /// The user's own retention setting.
    pub retention: Retention,
    /// The retention period in force (user setting or store default; `None`
    /// keeps messages until erased). A legal hold suspends it.
    pub effective_retention_ms: Option<u64>,
    /// The legal hold in force, if any.
    pub legal_hold: Option<LegalHold>,
    /// Messages appended before this time are expired and hidden.
    pub expired_before_ms: u64,
}

/// One entry of a user's consent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEntry {
    /// Position in the history (1, 2, ...).
    pub index: u64,
    /// When the store recorded it, ms since the Unix epoch.
    pub recorded_at_ms: u64,
    /// What was recorded.
    pub consent: Consent,
}

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

/// A user with a key, loaded under its lock for a policy change.
struct LiveUser {
    state: CachedUser,
    rec: KeyRecord,
    /// The key was just created and is not stored yet.
    is_new: bool,
}

fn check_text(what: &'static str, text: &str) -> Result<()> {
    if text.len() > MAX_REASON_LEN {
        return Err(InvalidArgument::TextTooLong {
            what,
            len: text.len(),
            max: MAX_REASON_LEN,
        }
        .into());
    }
    Ok(())
}

/// Whether an error is a refusal (recorded as such in the audit trail)
/// rather than a failure.
pub(super) fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::LegalHold
            | Error::Restricted { .. }
            | Error::Blocked
            | Error::NoSuchMessage
            | Error::InvalidArgument(_)
    )
}

/// How a finished operation goes on the audit trail.
pub(super) fn outcome_of<T>(r: &Result<T>) -> AuditOutcome {
    match r {
        Ok(_) => AuditOutcome::Ok,
        Err(e) if is_refusal(e) => AuditOutcome::Refused,
        Err(_) => AuditOutcome::Failed,
    }
}

impl Store {
    /// Restricts processing of `user`'s data (GDPR Art. 18), adding the modes
    /// set in `modes` to any already in force: `block_appends` refuses new
    /// messages ([`Error::Restricted`]), `block_reads` refuses reads and
    /// exports except with [`Access::Override`]. Lasts until
    /// [`Store::unrestrict_as`] (or erasure), across restarts. A user
    /// without data gets a key record to hold the state.
    ///
    /// # Errors
    /// [`InvalidArgument::NoRestrictionMode`] if `modes` sets nothing,
    /// [`Error::Blocked`] for a user erased with `block_new`, or a storage
    /// error.
    pub fn restrict_as(
        &self,
        user: &UserId,
        modes: Restriction,
        actor: &str,
    ) -> Result<RightsState> {
        self.inner
            .update_policy(user, actor, AuditOp::Restrict, true, |p, _| {
                if !modes.any() {
                    return Err(InvalidArgument::NoRestrictionMode.into());
                }
                p.restriction.block_appends |= modes.block_appends;
                p.restriction.block_reads |= modes.block_reads;
                Ok(())
            })
    }

    /// Lifts the restriction modes set in `modes` (both, if `modes` sets
    /// none).
    ///
    /// # Errors
    /// A storage error.
    pub fn unrestrict_as(
        &self,
        user: &UserId,
        modes: Restriction,
        actor: &str,
    ) -> Result<RightsState> {
        let modes = if modes.any() {
            modes
        } else {
            Restriction {
                block_appends: true,
                block_reads: true,
            }
        };
        self.inner
            .update_policy(user, actor, AuditOp::Unrestrict, false, |p, _| {
                p.restriction.block_appends &= !modes.block_appends;
                p.restriction.block_reads &= !modes.block_reads;
                Ok(())
            })
    }

    /// Sets how long `user`'s messages are kept: the store default, forever,
    /// or a period after their append time. Messages past it are hidden
    /// from reads at once and dropped by the compaction filter. Expiry never
    /// goes backwards: what had expired under the old setting stays expired.
    ///
    /// # Errors
    /// [`InvalidArgument::ZeroRetention`], [`Error::Blocked`], or a storage
    /// error.
    pub fn set_retention_as(
        &self,
        user: &UserId,
        retention: Retention,
        actor: &str,
    ) -> Result<RightsState> {
        let create = retention != Retention::StoreDefault;
        let default = self.inner.default_retention_ms;
        self.inner
            .update_policy(user, actor, AuditOp::SetRetention, create, |p, now| {
                if retention == (Retention::After { ms: 0 }) {
                    return Err(InvalidArgument::ZeroRetention.into());
                }
                p.expired_before_ms = p.horizon(now, default);
                p.retention = retention;
                Ok(())
            })
    }

    /// Places a legal hold on `user` (or replaces the reason and end of the
    /// one in force): erase, redact and retention expiry are refused with
    /// [`Error::LegalHold`] until [`Store::lift_legal_hold_as`] or `until_ms`.
    /// Messages that had already expired stay expired.
    ///
    /// # Errors
    /// [`InvalidArgument::TextTooLong`] for a reason over 256 bytes,
    /// [`InvalidArgument::HoldEndsInPast`], [`Error::Blocked`], or a storage
    /// error.
    pub fn set_legal_hold_as(
        &self,
        user: &UserId,
        reason: &str,
        until_ms: Option<u64>,
        actor: &str,
    ) -> Result<RightsState> {
        let default = self.inner.default_retention_ms;
        self.inner
            .update_policy(user, actor, AuditOp::SetLegalHold, true, |p, now| {
                check_text("legal hold reason", reason)?;
                if until_ms.is_some_and(|u| u <= now) {
                    return Err(InvalidArgument::HoldEndsInPast.into());
                }
                let since_ms = match p.active_hold(now) {
                    Some(h) => h.since_ms,
                    None => {
                        // Freeze expiry where it stands now.
                        p.expired_before_ms = p.horizon(now, default);
                        now
                    }
                };
                p.hold = Some(LegalHold {
                    reason: reason.to_owned(),
                    since_ms,
                    until_ms,
                });
                Ok(())
            })
    }

    /// Lifts `user`'s legal hold; retention resumes.
    ///
    /// # Errors
    /// A storage error.
    pub fn lift_legal_hold_as(&self, user: &UserId, actor: &str) -> Result<RightsState> {
        self.inner
            .update_policy(user, actor, AuditOp::LiftLegalHold, false, |p, _| {
                p.hold = None;
                Ok(())
            })
    }

    /// `user`'s restriction, retention and legal-hold state.
    ///
    /// # Errors
    /// A storage error or a damaged key record.
    pub fn rights_state(&self, user: &UserId) -> Result<RightsState> {
        let handle = self.handle(user);
        let policy = self
            .inner
            .key_record(&handle)?
            .map(|r| r.state.policy())
            .unwrap_or_default();
        Ok(self.inner.rights_state(&policy))
    }

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
        let r = check_text("redaction reason", reason)
            .and_then(|()| self.inner.redact(&handle, seq, reason, actor));
        self.inner.audit_refusal(actor, AuditOp::Redact, handle, r)
    }

    /// Appends `consent` to `user`'s consent history, sealed under the
    /// user's key (so erasure shreds it with the messages). Allowed while
    /// appends are restricted: a withdrawal must always be recordable.
    ///
    /// # Errors
    /// [`InvalidArgument::EmptyPurpose`], [`InvalidArgument::TextTooLong`],
    /// [`Error::Blocked`], or a storage error.
    pub fn record_consent_as(
        &self,
        user: &UserId,
        consent: &Consent,
        actor: &str,
    ) -> Result<ConsentEntry> {
        let handle = self.handle(user);
        let r = (|| {
            if consent.purpose.is_empty() {
                return Err(InvalidArgument::EmptyPurpose.into());
            }
            check_text("consent purpose", &consent.purpose)?;
            self.inner.record_consent(&handle, consent, actor)
        })();
        self.inner
            .audit_refusal(actor, AuditOp::RecordConsent, handle, r)
    }

    /// `user`'s consent history, oldest first.
    ///
    /// # Errors
    /// [`Error::Restricted`] for a user with `block_reads` read with
    /// [`Access::Subject`], a damaged record, or a storage error.
    pub fn consent_history(&self, user: &UserId, access: Access) -> Result<Vec<ConsentEntry>> {
        let handle = self.handle(user);
        self.inner.consent_history(&handle, access)
    }
}

impl Inner {
    pub(super) fn rights_state(&self, policy: &UserPolicy) -> RightsState {
        let now = self.clock.now_ms();
        let hold = policy.active_hold(now).cloned();
        let effective_retention_ms = if hold.is_some() {
            None
        } else {
            policy.period(self.default_retention_ms)
        };
        RightsState {
            restriction: policy.restriction,
            retention: policy.retention,
            effective_retention_ms,
            legal_hold: hold,
            expired_before_ms: policy.horizon(now, self.default_retention_ms),
        }
    }

    /// A fresh key for a user without one: refused if erased with
    /// `block_new`; the epoch follows the erased one.
    pub(super) fn new_user(
        &self,
        handle: &Handle,
        marker: Option<&EraseMarker>,
        next_seq: u64,
    ) -> Result<(CachedUser, KeyRecord)> {
        if marker.is_some_and(|m| m.block_new) {
            return Err(Error::Blocked);
        }
        let epoch = match marker {
            Some(m) => m.epoch.checked_add(1).ok_or(Error::SeqExhausted)?,
            None => 1,
        };
        self.new_user_state(handle, epoch, next_seq)
    }

    /// The user's cached state and key record, creating both (unsaved) if
    /// `create` and the user has none. Caller holds the user's lock.
    fn live_record(&self, handle: &Handle, create: bool) -> Result<Option<LiveUser>> {
        match self.load(handle)? {
            UserState::Live(state) => {
                let rec = self
                    .key_record(handle)?
                    .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
                Ok(Some(LiveUser {
                    state,
                    rec,
                    is_new: false,
                }))
            }
            UserState::Absent { .. } if !create => Ok(None),
            UserState::Absent { marker, next_seq } => {
                let (state, rec) = self.new_user(handle, marker.as_ref(), next_seq)?;
                Ok(Some(LiveUser {
                    state,
                    rec,
                    is_new: true,
                }))
            }
        }
    }

    /// Stores a changed key record with its audit record in one synced
    /// batch (plus `extra`), then updates the cache, the user count and the
    /// compaction filter. Caller holds the user's lock.
    fn commit_policy(
        &self,
        handle: &Handle,
        user: LiveUser,
        policy: UserPolicy,
        mut batch: WriteBatch,
        (actor, op): (&str, AuditOp),
    ) -> Result<()> {
        let LiveUser {
            mut state,
            mut rec,
            is_new,
        } = user;
        // A compaction that snapshots the filter state between the write and
        // the publication below must not expire what the new policy keeps
        // (a hold, a longer period): until the write is done, expiry of this
        // user is frozen at the lower of the two floors.
        let old_floor = rec.state.policy().expired_before_ms;
        self.erased.set_policy(
            *handle,
            Some(&UserPolicy {
                expired_before_ms: old_floor.min(policy.expired_before_ms),
                hold: Some(LegalHold {
                    reason: String::new(),
                    since_ms: 0,
                    until_ms: None,
                }),
                ..UserPolicy::default()
            }),
        );
        rec.state = KeyState::of(policy.clone());
        let mut encoded = Vec::new();
        rec.encode(&mut encoded);
        batch.put_cf(self.cf(CF_KEYS)?, handle.as_bytes(), encoded);
        // Retention may now remove the newest message: keep the seq high-water.
        if self.retention_may_apply(&policy) {
            batch.put_cf(
                self.cf(CF_DEDUP)?,
                handle.as_bytes(),
                state.next_seq.to_be_bytes(),
            );
        }
        self.put_audit(&mut batch, actor, op, Some(*handle), AuditOutcome::Ok)?;
        self.write(batch, true)?;
        if is_new {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
        self.erased.set_policy(*handle, Some(&policy));
        state.policy = Arc::new(policy);
        self.cache.lock().put(*handle, state);
        Ok(())
    }

    /// Applies `change` to the user's policy under its lock and commits it
    /// with its audit record; a refusal is audited as `refused`. Without
    /// `create`, a user without a key record is left alone (nothing to
    /// change).
    fn update_policy(
        &self,
        user: &UserId,
        actor: &str,
        op: AuditOp,
        create: bool,
        change: impl FnOnce(&mut UserPolicy, u64) -> Result<()>,
    ) -> Result<RightsState> {
        let handle = self.handle_key.handle(user);
        let r = (|| {
            self.check_writable()?;
            let _guard = self.lock(&handle);
            let now = self.clock.now_ms();
            let Some(user) = self.live_record(&handle, create)? else {
                let mut policy = UserPolicy::default();
                change(&mut policy, now)?;
                self.record_audit(actor, op, Some(handle), AuditOutcome::Ok)?;
                return Ok(self.rights_state(&UserPolicy::default()));
            };
            let mut policy = user.rec.state.policy();
            change(&mut policy, now)?;
            let view = self.rights_state(&policy);
            self.commit_policy(&handle, user, policy, WriteBatch::default(), (actor, op))?;
            Ok(view)
        })();
        self.audit_refusal(actor, op, handle, r)
    }

    fn redact(&self, handle: &Handle, seq: u64, reason: &str, actor: &str) -> Result<Redacted> {
        self.check_writable()?;
        let _guard = self.lock(handle);
        let now = self.clock.now_ms();
        let Some(user) = self.live_record(handle, false)? else {
            return Err(Error::NoSuchMessage);
        };
        let state = &user.state;
        if state.policy.active_hold(now).is_some() {
            return Err(Error::LegalHold);
        }
        if seq < state.first_seq {
            return Err(Error::NoSuchMessage);
        }
        let key = codec::message_key(handle, seq);
        let messages = self.cf(CF_MESSAGES)?;
        let stored = self
            .db
            .get_pinned_cf(messages, key)?
            .ok_or(Error::NoSuchMessage)?;
        let env = Envelope::decode(&stored)?;
        if env.epoch != state.epoch {
            return Err(Error::Corrupt(Corruption::EpochMismatch));
        }
        if env.timestamp_ms < state.policy.horizon(now, self.default_retention_ms) {
            return Err(Error::NoSuchMessage);
        }
        if env.kind == EnvelopeKind::Redaction {
            let m = super::open_envelope(handle, state, &key, &env)?;
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
            redacted_at_ms: now,
            reason: reason.to_owned(),
        }
        .to_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        let aad = Envelope::aad_of(
            EnvelopeKind::Redaction,
            handle,
            seq,
            state.epoch,
            timestamp_ms,
        );
        let mut marker = Vec::new();
        Envelope::encode_with(
            &mut marker,
            EnvelopeKind::Redaction,
            state.epoch,
            timestamp_ms,
            &nonce,
            &body,
            |pt| state.cipher.seal_in_place(&nonce, &aad, pt),
        )?;
        let mut batch = WriteBatch::default();
        batch.put_cf(messages, key, marker);
        let mut policy = user.rec.state.policy();
        policy.purge_pending = true;
        self.commit_policy(handle, user, policy, batch, (actor, AuditOp::Redact))?;
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

    fn record_consent(
        &self,
        handle: &Handle,
        consent: &Consent,
        actor: &str,
    ) -> Result<ConsentEntry> {
        self.check_writable()?;
        let _guard = self.lock(handle);
        let now = self.clock.now_ms();
        let LiveUser { state, rec, is_new } = self
            .live_record(handle, true)?
            .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
        let cf = self.cf(CF_CONSENT)?;
        let mut it = self
            .db
            .raw_iterator_cf_opt(cf, Self::handle_read_options(handle));
        it.seek_for_prev(codec::consent_key(handle, u64::MAX));
        let index = match it.key() {
            Some(k) => codec::parse_message_key(k)?
                .1
                .checked_add(1)
                .ok_or(Error::SeqExhausted)?,
            None => 1,
        };
        it.status()?;
        drop(it);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        let aad = Envelope::aad_of(EnvelopeKind::Consent, handle, index, state.epoch, now);
        let mut value = Vec::new();
        Envelope::encode_with(
            &mut value,
            EnvelopeKind::Consent,
            state.epoch,
            now,
            &nonce,
            &consent.to_bytes(),
            |pt| state.cipher.seal_in_place(&nonce, &aad, pt),
        )?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, codec::consent_key(handle, index), value);
        if is_new {
            let mut encoded = Vec::new();
            rec.encode(&mut encoded);
            batch.put_cf(self.cf(CF_KEYS)?, handle.as_bytes(), encoded);
        }
        self.put_audit(
            &mut batch,
            actor,
            AuditOp::RecordConsent,
            Some(*handle),
            AuditOutcome::Ok,
        )?;
        self.write(batch, true)?;
        if is_new {
            self.users.fetch_add(1, Ordering::Relaxed);
            self.cache.lock().put(*handle, state);
        }
        Ok(ConsentEntry {
            index,
            recorded_at_ms: now,
            consent: consent.clone(),
        })
    }

    pub(super) fn consent_history(
        &self,
        handle: &Handle,
        access: Access,
    ) -> Result<Vec<ConsentEntry>> {
        let (state, it) = {
            let _guard = self.lock(handle);
            let UserState::Live(state) = self.load(handle)? else {
                return Ok(Vec::new());
            };
            if state.policy.restriction.block_reads && access == Access::Subject {
                return Err(Error::Restricted {
                    mode: "block_reads",
                });
            }
            let mut it = self
                .db
                .raw_iterator_cf_opt(self.cf(CF_CONSENT)?, Self::handle_read_options(handle));
            it.seek(codec::consent_key(handle, 0));
            (state, it)
        };
        let mut it = it;
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let env = Envelope::decode(v)?;
            if env.kind != EnvelopeKind::Consent {
                return Err(Error::Corrupt(Corruption::Encoding));
            }
            let (index, opened) = super::open_sealed(handle, &state, k, &env)?;
            out.push(ConsentEntry {
                index,
                recorded_at_ms: env.timestamp_ms,
                consent: Consent::from_bytes(&opened)?,
            });
            it.next();
        }
        it.status()?;
        // Erased meanwhile: nothing of it is returned after the erase.
        if self.erased.covers(handle, state.epoch) {
            return Ok(Vec::new());
        }
        Ok(out)
    }

    /// Clears the pending-redaction flag of users whose redactions a purge
    /// made physical, unless they redacted again meanwhile.
    pub(super) fn mark_redactions_purged(&self, seen: &[(Handle, u64)]) -> Result<usize> {
        let mut done = 0;
        for (handle, generation) in seen {
            let _guard = self.lock(handle);
            if self.pending_redactions.lock().get(handle) != Some(generation) {
                continue;
            }
            if let Some(mut rec) = self.key_record(handle)? {
                let mut policy = rec.state.policy();
                if policy.purge_pending {
                    policy.purge_pending = false;
                    rec.state = KeyState::of(policy.clone());
                    let mut encoded = Vec::new();
                    rec.encode(&mut encoded);
                    let mut wb = WriteBatch::default();
                    wb.put_cf(self.cf(CF_KEYS)?, handle.as_bytes(), encoded);
                    // Not synced: if the flag is lost in a crash, the range is purged again.
                    self.write(wb, false)?;
                    if let Some(c) = self.cache.lock().get_mut(handle) {
                        c.policy = Arc::new(policy);
                    }
                }
            }
            self.pending_redactions.lock().remove(handle);
            done += 1;
        }
        Ok(done)
    }
}

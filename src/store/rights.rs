//! Data-subject rights beyond erasure: restriction (Art. 18), retention
//! (Art. 5(1)(e)) and legal holds; redaction and consent records have
//! rooms of their own (`redact.rs`, `consent.rs`).
//!
//! A user's rights policy lives in its key record ([`KeyState::Governed`]),
//! so it survives restarts and goes with the key when the user is erased.
//! Every change writes its audit record in the same atomic batch; refusals
//! (a legal hold, a restriction, a blocked user) are recorded as `refused`.

use std::sync::atomic::Ordering;

use super::engine::Batch;
use super::users::{CachedUser, UserState};
use super::{Inner, Store};
use crate::codec::{
    AuditOp, AuditOutcome, KeyRecord, KeyState, LegalHold, MAX_REASON_LEN, Restriction, Retention,
    UserPolicy,
};
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

/// A user with a key, loaded under its lock for a policy change.
pub(super) struct LiveUser {
    pub(super) state: CachedUser,
    pub(super) rec: KeyRecord,
    /// The key was just created and is not stored yet.
    pub(super) is_new: bool,
}

pub(super) fn check_text(what: &'static str, text: &str) -> Result<()> {
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
        self.inner.update_policy_with(
            user,
            actor,
            AuditOp::Restrict,
            true,
            |p, _| {
                if !modes.any() {
                    return Err(InvalidArgument::NoRestrictionMode.into());
                }
                p.restriction.block_appends |= modes.block_appends;
                p.restriction.block_reads |= modes.block_reads;
                Ok(())
            },
            modes,
        )
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

    /// The user's cached state and key record, creating both (unsaved) if
    /// `create` and the user has none. Caller holds the user's lock.
    pub(super) fn live_record(&self, handle: &Handle, create: bool) -> Result<Option<LiveUser>> {
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
                let (state, rec) = self.create_key(handle, marker.as_ref(), next_seq)?;
                Ok(Some(LiveUser {
                    state,
                    rec,
                    is_new: true,
                }))
            }
        }
    }

    /// Stores a changed key record with its audit record (and `change`, on
    /// the change feed) in one synced batch (plus `extra`), then updates the cache, the user count and the
    /// compaction filter. Caller holds the user's lock.
    pub(super) fn commit_policy(
        &self,
        handle: &Handle,
        user: LiveUser,
        policy: UserPolicy,
        mut batch: Batch<'_>,
        (actor, op): (&str, AuditOp),
        change: Option<crate::codec::Change>,
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
        self.filter.set_policy(
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
        self.put_key_record(&mut batch, handle, &rec)?;
        // Retention may now remove the newest message: keep the seq high-water.
        if self.retention_may_apply(&policy) {
            self.put_seq_floor(&mut batch, handle, state.next_seq)?;
        }
        let now = self.clock.now_ms();
        self.put_audit_at(&mut batch, now, actor, op, Some(*handle), AuditOutcome::Ok)?;
        let number = self.write_with_changes(batch, now, change.as_slice(), true)?;
        if is_new {
            self.users.count.fetch_add(1, Ordering::Relaxed);
        }
        self.filter.set_policy(*handle, Some(&policy));
        state.set_policy(policy);
        self.users.remember(*handle, state);
        self.publish_changes(number);
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
        self.update_policy_with(user, actor, op, create, change, Restriction::default())
    }

    /// [`Inner::update_policy`]; `restricts`: the restriction modes asked
    /// for (by `restrict_as`), which an open erasure request no longer
    /// counts as its own, so that cancelling it does not lift them.
    fn update_policy_with(
        &self,
        user: &UserId,
        actor: &str,
        op: AuditOp,
        create: bool,
        change: impl FnOnce(&mut UserPolicy, u64) -> Result<()>,
        restricts: Restriction,
    ) -> Result<RightsState> {
        let handle = self.handle(user);
        let r = (|| {
            self.engine.check_writable()?;
            let _guard = self.users.lock(&handle);
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
            let mut batch = self.engine.batch();
            let request = self.narrow_request(&mut batch, &handle, restricts)?;
            self.commit_policy(&handle, user, policy, batch, (actor, op), None)?;
            if let Some(request) = request {
                self.ledger.lock().insert(handle, request);
            }
            Ok(view)
        })();
        self.audit_refusal(actor, op, handle, r)
    }
}

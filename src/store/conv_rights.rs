//! A conversation's retention and legal hold. Its policy lives in its key
//! record, so it survives restarts and goes with the key when the
//! conversation is deleted. Every change writes its audit record in the same
//! atomic batch; refusals are recorded as `refused`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::conversation::Conversation;
use super::conversations::ConvState;
use super::engine::Cf;
use super::rights::{RightsState, check_text};
use crate::codec::{AuditOp, LegalHold, Retention, UserPolicy, subject_key};
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::{ConversationId, Handle};

impl Conversation<'_> {
    /// Sets how long the conversation's messages are kept: the store
    /// default, forever, or a period after their append time. Expired
    /// messages are hidden from reads at once and dropped by the compaction
    /// filter; what had expired stays expired. A conversation without a key
    /// gets one to hold the setting.
    ///
    /// # Errors
    /// [`InvalidArgument::ZeroRetention`] or a storage error.
    pub fn set_retention_as(&self, retention: Retention, actor: &str) -> Result<RightsState> {
        let default = self.inner().default_retention_ms;
        let create = retention != Retention::StoreDefault;
        self.update_policy(
            AuditOp::ConversationSetRetention,
            actor,
            create,
            |p, now| {
                if retention == (Retention::After { ms: 0 }) {
                    return Err(InvalidArgument::ZeroRetention.into());
                }
                p.expired_before_ms = p.horizon(now, default);
                p.retention = retention;
                Ok(())
            },
        )
    }

    /// Places a legal hold on the conversation (or replaces the reason and
    /// end of the one in force): deletion, redaction and retention expiry
    /// are refused ([`Error::LegalHold`]) until it is lifted or `until_ms`.
    ///
    /// # Errors
    /// [`InvalidArgument::TextTooLong`], [`InvalidArgument::HoldEndsInPast`]
    /// or a storage error.
    pub fn set_legal_hold_as(
        &self,
        reason: &str,
        until_ms: Option<u64>,
        actor: &str,
    ) -> Result<RightsState> {
        let default = self.inner().default_retention_ms;
        self.update_policy(AuditOp::ConversationSetLegalHold, actor, true, |p, now| {
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

    /// Lifts the conversation's legal hold; retention resumes.
    ///
    /// # Errors
    /// A storage error.
    pub fn lift_legal_hold_as(&self, actor: &str) -> Result<RightsState> {
        self.update_policy(AuditOp::ConversationLiftLegalHold, actor, false, |p, _| {
            p.hold = None;
            Ok(())
        })
    }

    /// Declares the conversation's data subjects (replacing earlier ones):
    /// the users whose erasure may delete it, such as the two people of a
    /// direct chat or the customer of a support chat. `Store::erase_with`
    /// with [`EraseOptions::with_subject_conversations`] deletes it with
    /// any of them. Returns how many are declared.
    ///
    /// [`EraseOptions::with_subject_conversations`]: crate::EraseOptions::with_subject_conversations
    ///
    /// # Errors
    /// [`InvalidArgument::TooManySubjects`] (more than [`MAX_SUBJECTS`]) or
    /// a storage error.
    pub fn set_subjects_as(&self, subjects: &[crate::UserId], actor: &str) -> Result<usize> {
        let inner = self.inner();
        let handle = self.handle();
        let r = (|| {
            if subjects.len() > MAX_SUBJECTS {
                return Err(InvalidArgument::TooManySubjects {
                    len: subjects.len(),
                    max: MAX_SUBJECTS,
                }
                .into());
            }
            let mut handles: Vec<[u8; Handle::LEN]> = subjects
                .iter()
                .map(|u| *inner.handle(u).as_bytes())
                .collect();
            handles.sort_unstable();
            handles.dedup();
            inner.counted(inner.set_conv_subjects(self.id(), &handle, handles, actor))
        })();
        inner.audit_refusal(actor, AuditOp::ConversationSetSubjects, handle, r)
    }

    /// The conversation's retention and legal-hold state (the restriction
    /// fields are always off).
    ///
    /// # Errors
    /// A storage error or a damaged key record.
    pub fn rights_state(&self) -> Result<RightsState> {
        let inner = self.inner();
        let policy = inner
            .conv_key_record(&self.handle())?
            .map(|r| r.policy)
            .unwrap_or_default();
        Ok(inner.rights_state(&policy))
    }

    fn update_policy(
        &self,
        op: AuditOp,
        actor: &str,
        create: bool,
        change: impl FnOnce(&mut UserPolicy, u64) -> Result<()>,
    ) -> Result<RightsState> {
        let (inner, handle) = (self.inner(), self.handle());
        let r =
            inner.counted(inner.update_conv_policy(self.id(), &handle, op, actor, create, change));
        inner.audit_refusal(actor, op, handle, r)
    }
}

/// Most subjects a conversation may declare.
pub const MAX_SUBJECTS: usize = 64;

impl Inner {
    fn set_conv_subjects(
        &self,
        id: &ConversationId,
        handle: &Handle,
        subjects: Vec<[u8; Handle::LEN]>,
        actor: &str,
    ) -> Result<usize> {
        self.engine.check_writable()?;
        let _guard = self.convs.lock(handle);
        let (conv, mut rec, is_new) = match self.load_conv(handle)? {
            ConvState::Live(c) => {
                let rec = self
                    .conv_key_record(handle)?
                    .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
                (c, rec, false)
            }
            ConvState::Absent { .. } if subjects.is_empty() => return Ok(0),
            ConvState::Absent { marker, next_seq } => {
                let (c, r) = self.create_conv_key(handle, id, marker.as_ref(), next_seq)?;
                (c, r, true)
            }
        };
        let mut batch = self.engine.batch();
        for old in rec.subjects.iter().filter(|h| !subjects.contains(h)) {
            batch.delete(Cf::Subjects, &subject_key(&Handle(*old), handle))?;
        }
        for new in subjects.iter().filter(|h| !rec.subjects.contains(h)) {
            batch.put(Cf::Subjects, &subject_key(&Handle(*new), handle), &[])?;
        }
        let n = subjects.len();
        rec.subjects = subjects;
        self.put_conv_key_record(&mut batch, handle, &rec)?;
        self.put_audit(
            &mut batch,
            actor,
            AuditOp::ConversationSetSubjects,
            Some(*handle),
            crate::codec::AuditOutcome::Ok,
        )?;
        self.engine.write(batch, true)?;
        if is_new {
            self.convs.count.fetch_add(1, Ordering::Relaxed);
            self.convs.remember(*handle, conv);
        }
        tracing::info!(conversation = %handle, subjects = n, "conversation subjects set");
        Ok(n)
    }

    /// Applies `change` to a conversation's policy under its lock and
    /// commits it with its audit record. Without `create`, a conversation
    /// without a key is left alone.
    fn update_conv_policy(
        &self,
        id: &ConversationId,
        handle: &Handle,
        op: AuditOp,
        actor: &str,
        create: bool,
        change: impl FnOnce(&mut UserPolicy, u64) -> Result<()>,
    ) -> Result<RightsState> {
        self.engine.check_writable()?;
        let _guard = self.convs.lock(handle);
        let now = self.clock.now_ms();
        let (mut conv, mut rec, is_new) = match self.load_conv(handle)? {
            ConvState::Live(c) => {
                let rec = self
                    .conv_key_record(handle)?
                    .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
                (c, rec, false)
            }
            ConvState::Absent { .. } if !create => {
                let mut p = UserPolicy::default();
                change(&mut p, now)?;
                return Ok(self.rights_state(&UserPolicy::default()));
            }
            ConvState::Absent { marker, next_seq } => {
                let (c, r) = self.create_conv_key(handle, id, marker.as_ref(), next_seq)?;
                (c, r, true)
            }
        };
        let old = rec.policy.clone();
        let mut policy = old.clone();
        change(&mut policy, now)?;
        // As for users: while the write is in flight, a compaction must not
        // expire what the new policy keeps, so expiry is frozen at the
        // lower of the two floors until the new policy is published.
        self.filter.set_policy(
            *handle,
            Some(&UserPolicy {
                expired_before_ms: old.expired_before_ms.min(policy.expired_before_ms),
                hold: Some(LegalHold {
                    reason: String::new(),
                    since_ms: 0,
                    until_ms: None,
                }),
                ..UserPolicy::default()
            }),
        );
        rec.policy = policy.clone();
        let mut batch = self.engine.batch();
        self.put_conv_key_record(&mut batch, handle, &rec)?;
        if self.retention_may_apply(&policy) {
            self.put_seq_floor(&mut batch, handle, conv.next_seq)?;
        }
        self.put_audit(
            &mut batch,
            actor,
            op,
            Some(*handle),
            crate::codec::AuditOutcome::Ok,
        )?;
        let written = self.engine.write(batch, true);
        // Published whatever the outcome: on failure the stored one.
        self.filter
            .set_policy(*handle, Some(if written.is_ok() { &policy } else { &old }));
        written?;
        if is_new {
            self.convs.count.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(conversation = %handle, op = op.name(), "conversation policy changed");
        let state = self.rights_state(&policy);
        conv.policy = Arc::new(policy);
        self.convs.remember(*handle, conv);
        Ok(state)
    }
}

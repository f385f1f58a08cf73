//! Consent records: `{purpose, basis, granted, given_at}` appended to the
//! `consent` column family, sealed under the user's key (so erasure shreds
//! them with the messages).

use std::sync::atomic::Ordering;

use super::engine::{Cf, Scope};
use super::rights::{Access, LiveUser, check_text};
use super::sealing::{open_sealed, seal};
use super::users::{CachedUser, UserState};
use super::{Inner, Store};
use crate::codec::{self, AuditOp, AuditOutcome, Consent, Envelope, EnvelopeKind};
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::{Handle, UserId};

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

impl Store {
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
            self.inner
                .counted(self.inner.record_consent(&handle, consent, actor))
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
        self.inner
            .counted(self.inner.consent_history(&handle, access))
    }
}

impl Inner {
    pub(super) fn record_consent(
        &self,
        handle: &Handle,
        consent: &Consent,
        actor: &str,
    ) -> Result<ConsentEntry> {
        self.engine.check_writable()?;
        let _guard = self.users.lock(handle);
        let now = self.clock.now_ms();
        let LiveUser { state, rec, is_new } = self
            .live_record(handle, true)?
            .ok_or(Error::Corrupt(Corruption::MissingKeyRecord))?;
        let index = match self.last_in(Cf::Consent, handle)? {
            Some(last) => last.seq.checked_add(1).ok_or(Error::SeqExhausted)?,
            None => 1,
        };
        let mut value = Vec::new();
        seal(
            &mut value,
            self.rng.as_ref(),
            &state,
            EnvelopeKind::Consent,
            handle,
            index,
            now,
            &consent.to_bytes(),
        )?;
        let mut batch = self.engine.batch();
        batch.put(Cf::Consent, &codec::consent_key(handle, index), &value)?;
        if is_new {
            self.put_key_record(&mut batch, handle, &rec)?;
        }
        self.put_audit(
            &mut batch,
            actor,
            AuditOp::RecordConsent,
            Some(*handle),
            AuditOutcome::Ok,
        )?;
        self.engine.write(batch, true)?;
        if is_new {
            self.users.count.fetch_add(1, Ordering::Relaxed);
            self.users.remember(*handle, state);
        }
        Ok(ConsentEntry {
            index,
            recorded_at_ms: now,
            consent: consent.clone(),
        })
    }

    /// The consent history of `handle`, read under its lock (so an erase
    /// either happened before, and it is empty, or after).
    pub(super) fn consent_history(
        &self,
        handle: &Handle,
        access: Access,
    ) -> Result<Vec<ConsentEntry>> {
        let _guard = self.users.lock(handle);
        match self.load(handle)? {
            UserState::Live(state) => self.consents_of(handle, &state, access),
            UserState::Absent { .. } => Ok(Vec::new()),
        }
    }

    /// The consent records of a loaded user. Caller holds the user's lock.
    pub(super) fn consents_of(
        &self,
        handle: &Handle,
        state: &CachedUser,
        access: Access,
    ) -> Result<Vec<ConsentEntry>> {
        if state.policy().restriction.block_reads && access == Access::Subject {
            return Err(Error::Restricted {
                mode: "block_reads",
            });
        }
        let mut it = self.engine.cursor(Cf::Consent, Scope::Handle(handle))?;
        it.seek(&codec::consent_key(handle, 0));
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let env = Envelope::decode(v)?;
            if env.kind != EnvelopeKind::Consent {
                return Err(Error::Corrupt(Corruption::Encoding));
            }
            let (index, opened) = open_sealed(handle, state, k, &env)?;
            out.push(ConsentEntry {
                index,
                recorded_at_ms: env.timestamp_ms,
                consent: Consent::from_bytes(&opened)?,
            });
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

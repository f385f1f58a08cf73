//! The audit trail (records of processing, GDPR Art. 30) and signed
//! erasure receipts. Rights operations write their record in their own
//! batch; callers record what the store cannot see (refusals at the server,
//! reads of the trail, overrides) through [`Inner::record_caller_audit`],
//! which refuses to forge the store's own successful operations.

use std::sync::atomic::Ordering;

use super::Inner;
use super::engine::{Batch, Cf, Scope};
use crate::codec::{self, AuditOp, AuditOutcome, AuditRecord, ErasureReceipt};
use crate::error::{Error, InvalidArgument, Result};
use crate::types::Handle;

/// Where the next page of [`Store::audit_page`](crate::Store::audit_page)
/// starts (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor([u8; 16]);

/// Whether an error is a refusal (recorded as such in the audit trail)
/// rather than a failure.
pub(super) fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::LegalHold
            | Error::Restricted { .. }
            | Error::Blocked
            | Error::NoSuchMessage
            | Error::NoSuchRequest
            | Error::RequestClosed
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

/// Operations only the store itself records as done: a caller may record
/// their refusal or failure, never their success (the dates of erasures in
/// exports come from these records).
fn store_recorded(op: AuditOp) -> bool {
    matches!(
        op,
        AuditOp::Erase
            | AuditOp::Purge
            | AuditOp::Export
            | AuditOp::Restrict
            | AuditOp::Unrestrict
            | AuditOp::Redact
            | AuditOp::SetRetention
            | AuditOp::RecordConsent
            | AuditOp::SetLegalHold
            | AuditOp::LiftLegalHold
            | AuditOp::ConversationDelete
            | AuditOp::ConversationRedact
            | AuditOp::ConversationSetRetention
            | AuditOp::ConversationSetLegalHold
            | AuditOp::ConversationLiftLegalHold
            | AuditOp::ConversationSetSubjects
            | AuditOp::RootKeyRotationStarted
            | AuditOp::RootKeyRotationFinished
            | AuditOp::Backup
            | AuditOp::Restore
            | AuditOp::ErasureRequested
            | AuditOp::ErasureRequestCancelled
            | AuditOp::ErasureRequestWaitingForHold
    )
}

impl Inner {
    /// Adds an audit record, stamped now, to `batch`.
    pub(super) fn put_audit(
        &self,
        batch: &mut Batch<'_>,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        self.put_audit_at(batch, self.clock.now_ms(), actor, op, handle, outcome)
    }

    /// Adds an audit record stamped `time_ms` to `batch` (an erasure's
    /// record carries the erasure's own time).
    pub(super) fn put_audit_at(
        &self,
        batch: &mut Batch<'_>,
        time_ms: u64,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        let mut end = actor.len().min(codec::MAX_ACTOR_LEN);
        while !actor.is_char_boundary(end) {
            end -= 1;
        }
        let record = AuditRecord {
            time_ms,
            actor: actor[..end].to_owned(),
            op,
            handle: handle.map(|h| h.0),
            outcome,
        };
        let counter = self.audit_counter.fetch_add(1, Ordering::Relaxed);
        let mut value = Vec::new();
        record.encode(&mut value);
        batch.put(
            Cf::Audit,
            &codec::audit_key(record.time_ms, counter),
            &value,
        )
    }

    /// Writes one audit record, stamped now, on its own (synced).
    pub(super) fn record_audit(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        // Another front end (JetStream) may have taken the same key: the
        // retry takes the next counter.
        self.retry_conflicts(
            || {},
            || {
                let mut batch = self.engine.batch();
                self.put_audit(&mut batch, actor, op, handle, outcome)?;
                self.engine.write(batch, true)
            },
        )
    }

    /// [`Inner::record_audit`] for a caller: the store's own operations
    /// cannot be recorded as done by anyone but the store.
    pub(super) fn record_caller_audit(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Option<Handle>,
        outcome: AuditOutcome,
    ) -> Result<()> {
        if outcome == AuditOutcome::Ok && store_recorded(op) {
            return Err(InvalidArgument::ReservedAuditOp { op: op.name() }.into());
        }
        self.record_audit(actor, op, handle, outcome)
    }

    /// Passes `r` through, recording it as `refused` if it is a refusal
    /// (best effort: the refusal itself is the answer the caller gets,
    /// whatever happens to its record).
    pub(super) fn audit_refusal<T>(
        &self,
        actor: &str,
        op: AuditOp,
        handle: Handle,
        r: Result<T>,
    ) -> Result<T> {
        if let Err(e) = &r
            && is_refusal(e)
            && let Err(w) = self.record_audit(actor, op, Some(handle), AuditOutcome::Refused)
        {
            tracing::warn!(error = %w, op = op.name(), "could not record a refusal");
        }
        r
    }

    /// One page of the trail: records with `from_ms <= time < to_ms` after
    /// `after`, and the cursor of the next page.
    pub(super) fn audit_page(
        &self,
        from_ms: u64,
        to_ms: u64,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<AuditCursor>)> {
        self.check_limit(limit)?;
        let mut it = self.engine.cursor(Cf::Audit, Scope::All)?;
        match &after {
            Some(c) => {
                it.seek(&c.0);
                if it.key() == Some(&c.0[..]) {
                    it.next();
                }
            }
            None => it.seek(&codec::audit_key(from_ms, 0)),
        }
        let mut out = Vec::new();
        let mut last = None;
        while let Some((k, v)) = it.item() {
            let (t, _) = codec::parse_audit_key(k)?;
            if t >= to_ms || out.len() >= limit {
                break;
            }
            out.push(AuditRecord::decode(v)?);
            last = k.try_into().ok().map(AuditCursor);
            it.next();
        }
        it.status()?;
        let next = if out.len() >= limit { last } else { None };
        Ok((out, next))
    }

    /// Dates of the successful erasures of `handle` on the audit trail (a
    /// scan of the trail), with `latest` (the marker's) included.
    pub(super) fn erasure_dates(&self, handle: &Handle, latest: u64) -> Result<Vec<u64>> {
        let mut dates = Vec::new();
        let mut it = self.engine.cursor(Cf::Audit, Scope::All)?;
        it.seek_to_first();
        while let Some(v) = it.value() {
            let r = AuditRecord::decode(v)?;
            if r.op == AuditOp::Erase && r.outcome == AuditOutcome::Ok && r.handle == Some(handle.0)
            {
                dates.push(r.time_ms);
            }
            it.next();
        }
        it.status()?;
        if !dates.contains(&latest) {
            dates.push(latest);
        }
        dates.sort_unstable();
        Ok(dates)
    }

    /// Signs `r` (its `mac` is overwritten).
    pub(super) fn receipt(&self, mut r: ErasureReceipt) -> ErasureReceipt {
        r.mac = self.keys.receipt_key.sign(&r.signed_bytes());
        r
    }

    /// Whether `receipt` was issued by this store and is unchanged.
    pub(super) fn verify_receipt(&self, receipt: &ErasureReceipt) -> bool {
        self.keys
            .verify_receipt(&receipt.signed_bytes(), &receipt.mac)
    }
}

//! Audit records (records of processing, GDPR Art. 30) and erasure
//! receipts.

use serde::{Deserialize, Serialize};

use super::{corrupt_encoding, decode_record, encode_record};
use crate::error::Result;
use crate::types::Handle;

/// A rights operation recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditOp {
    /// A user's erasure.
    Erase,
    /// A purge (makes pending erasures physical).
    Purge,
    /// Reading the store's counters.
    Stats,
    /// Reading the audit trail itself.
    Audit,
    /// Checking an erasure receipt.
    VerifyReceipt,
    /// Exporting a user's data (access, portability).
    Export,
    /// Restricting processing of a user's data (Art. 18).
    Restrict,
    /// Lifting a restriction.
    Unrestrict,
    /// Redacting one message (Art. 16, "delete message").
    Redact,
    /// Setting a user's retention period.
    SetRetention,
    /// Recording a consent or legal basis.
    RecordConsent,
    /// Placing (or changing) a legal hold.
    SetLegalHold,
    /// Lifting a legal hold.
    LiftLegalHold,
    /// Reading (or exporting) a user whose reads are restricted, with the
    /// admin override.
    RestrictedRead,
    /// Reading a user's rights state.
    GetRights,
    /// Deleting a conversation (the handle is the conversation's).
    ConversationDelete,
    /// Redacting one conversation message (the handle is the
    /// conversation's).
    ConversationRedact,
    /// Setting a conversation's retention period.
    ConversationSetRetention,
    /// Placing (or changing) a legal hold on a conversation.
    ConversationSetLegalHold,
    /// Lifting a conversation's legal hold.
    ConversationLiftLegalHold,
    /// Declaring a conversation's subjects.
    ConversationSetSubjects,
    /// Reading the change feed.
    Changes,
    /// A root-key rotation started (the store was opened with a new root
    /// key and its previous one).
    RootKeyRotationStarted,
    /// A root-key rotation finished: every key record is wrapped under the
    /// new key, and the old one is retired.
    RootKeyRotationFinished,
    /// A backup was taken (`Admin.Backup`).
    Backup,
    /// The erasure journal was read (`Admin.ErasureJournal`).
    ErasureJournal,
    /// The store was restored from a backup, with the journals given
    /// applied (actor `restore`).
    Restore,
    /// An erasure request was received (`Admin.RequestErasure`): the user
    /// is restricted until it runs or is cancelled.
    ErasureRequested,
    /// An erasure request was cancelled within its grace period.
    ErasureRequestCancelled,
    /// An erasure request came due while a legal hold blocks it: it waits
    /// (recorded once) and runs when the hold lifts or ends.
    ErasureRequestWaitingForHold,
    /// The erasure requests were listed (`Admin.ErasureRequests`).
    ErasureRequests,
}

impl AuditOp {
    /// Lower-case name, as shown in logs and over gRPC.
    pub fn name(self) -> &'static str {
        match self {
            AuditOp::Erase => "erase",
            AuditOp::Purge => "purge",
            AuditOp::Stats => "stats",
            AuditOp::Audit => "audit",
            AuditOp::VerifyReceipt => "verify_receipt",
            AuditOp::Export => "export",
            AuditOp::Restrict => "restrict",
            AuditOp::Unrestrict => "unrestrict",
            AuditOp::Redact => "redact",
            AuditOp::SetRetention => "set_retention",
            AuditOp::RecordConsent => "record_consent",
            AuditOp::SetLegalHold => "set_legal_hold",
            AuditOp::LiftLegalHold => "lift_legal_hold",
            AuditOp::RestrictedRead => "restricted_read",
            AuditOp::GetRights => "get_rights",
            AuditOp::ConversationDelete => "conversation_delete",
            AuditOp::ConversationRedact => "conversation_redact",
            AuditOp::ConversationSetRetention => "conversation_set_retention",
            AuditOp::ConversationSetLegalHold => "conversation_set_legal_hold",
            AuditOp::ConversationLiftLegalHold => "conversation_lift_legal_hold",
            AuditOp::ConversationSetSubjects => "conversation_set_subjects",
            AuditOp::Changes => "changes",
            AuditOp::RootKeyRotationStarted => "root_key_rotation_started",
            AuditOp::RootKeyRotationFinished => "root_key_rotation_finished",
            AuditOp::Backup => "backup",
            AuditOp::ErasureJournal => "erasure_journal",
            AuditOp::Restore => "restore",
            AuditOp::ErasureRequested => "erasure_requested",
            AuditOp::ErasureRequestCancelled => "erasure_request_cancelled",
            AuditOp::ErasureRequestWaitingForHold => "erasure_request_waiting_for_hold",
            AuditOp::ErasureRequests => "erasure_requests",
        }
    }
}

/// How a recorded operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// Done.
    Ok,
    /// Refused before running: no permission, bad argument, blocked.
    Refused,
    /// Ran and failed (storage error...).
    Failed,
}

impl AuditOutcome {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// One audit record, stored in the `audit` column family under
/// `time_ms_be64 || counter_be64`. It holds the actor's name (a token name,
/// never a token), the operation, the user's handle (never a raw user id) and
/// the outcome: nothing personal, and it is never erased with the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// Who: the token name, `library` for direct library calls, `purger`
    /// for the background purger.
    pub actor: String,
    /// What.
    pub op: AuditOp,
    /// Whose data, as a handle, if the operation concerns one user.
    pub handle: Option<[u8; Handle::LEN]>,
    /// How it ended.
    pub outcome: AuditOutcome,
}

/// Longest actor name kept in an audit record (longer ones are cut).
pub const MAX_ACTOR_LEN: usize = 64;

impl AuditRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates an audit record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`] or [`Corruption::Encoding`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: AuditRecord = decode_record(bytes)?;
        if r.actor.len() > MAX_ACTOR_LEN {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }
}

/// Whether an erasure is physical yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStatus {
    /// Unreadable; the ciphertext awaits purge.
    Pending,
    /// A purge made it physical.
    Purged,
}

/// What an erasure receipt is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiptSubject {
    /// A user's erasure (the handle is the user's).
    #[default]
    User,
    /// A conversation's deletion (the handle is the conversation's).
    Conversation,
}

/// Proof that the store erased a user or deleted a conversation: signed
/// with HMAC-SHA256 under a receipt key derived from the root key, so only
/// the store's operator can issue or check one, and no field can be changed
/// without detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureReceipt {
    /// Whose: a user or a conversation.
    pub subject: ReceiptSubject,
    /// The erased user's (or deleted conversation's) handle.
    pub handle: Handle,
    /// The highest key epoch erased.
    pub epoch: u32,
    /// When the erasure was committed, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// Messages written under the erased epoch.
    pub messages_erased: u64,
    /// Purge status when the receipt was issued.
    pub purge_status: PurgeStatus,
    /// HMAC-SHA256 over [`ErasureReceipt::signed_bytes`].
    pub mac: [u8; 32],
}

/// Length of [`ErasureReceipt::signed_bytes`] for a user's receipt.
pub const RECEIPT_SIGNED_LEN: usize = 22 + Handle::LEN + 4 + 8 + 8 + 1;

impl ErasureReceipt {
    /// What the MAC covers: a label, then `handle || epoch_be32 ||
    /// erased_at_be64 || messages_be64 || status` (status 0 = pending, 1 =
    /// purged). The label is `"shredstore/v1/receipt\0"` for a user (the
    /// receipts of format 2 still verify) and
    /// `"shredstore/v3/receipt/conversation\0"` for a conversation.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let label: &[u8] = match self.subject {
            ReceiptSubject::User => b"shredstore/v1/receipt\0",
            ReceiptSubject::Conversation => b"shredstore/v3/receipt/conversation\0",
        };
        let mut b = Vec::with_capacity(label.len() + RECEIPT_SIGNED_LEN);
        b.extend_from_slice(label);
        for part in [
            &self.handle.as_bytes()[..],
            &self.epoch.to_be_bytes(),
            &self.erased_at_ms.to_be_bytes(),
            &self.messages_erased.to_be_bytes(),
            &[u8::from(self.purge_status == PurgeStatus::Purged)],
        ] {
            b.extend_from_slice(part);
        }
        b
    }
}

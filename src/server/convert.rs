//! Conversions between the store's types and the protobuf messages.

use super::proto;

/// A message as Export carries it.
pub(super) fn message_to_proto(m: crate::Message) -> proto::Message {
    let (seq, timestamp_ms, payload, redaction) = message_fields(m);
    proto::Message {
        seq,
        timestamp_ms,
        payload,
        redaction,
    }
}

/// A message as Read streams it (the same fields as `proto::Message`).
pub(super) fn read_response(m: crate::Message) -> proto::ReadResponse {
    let (seq, timestamp_ms, payload, redaction) = message_fields(m);
    proto::ReadResponse {
        seq,
        timestamp_ms,
        payload,
        redaction,
    }
}

fn message_fields(m: crate::Message) -> (u64, u64, Vec<u8>, Option<proto::Redaction>) {
    let redaction = m.redaction.map(|r| proto::Redaction {
        redacted_at_ms: r.redacted_at_ms,
        reason: r.reason,
    });
    (m.seq, m.timestamp_ms, m.payload, redaction)
}

/// The admin rights calls each return the user's state in a response of
/// their own.
macro_rules! rights_responses {
    ($($response:ident),+) => {
        $(impl From<proto::RightsState> for proto::$response {
            fn from(rights: proto::RightsState) -> Self {
                Self { rights: Some(rights) }
            }
        })+
    };
}

rights_responses!(
    RestrictResponse,
    UnrestrictResponse,
    SetRetentionResponse,
    SetLegalHoldResponse,
    LiftLegalHoldResponse,
    GetRightsResponse,
    ConversationsSetRetentionResponse,
    ConversationsSetLegalHoldResponse,
    ConversationsLiftLegalHoldResponse
);

pub(super) fn purge_status_to_proto(p: crate::PurgeStatus) -> proto::PurgeStatus {
    match p {
        crate::PurgeStatus::Pending => proto::PurgeStatus::Pending,
        crate::PurgeStatus::Purged => proto::PurgeStatus::Purged,
    }
}

pub(super) fn receipt_to_proto(r: &crate::ErasureReceipt) -> proto::ErasureReceipt {
    proto::ErasureReceipt {
        handle: r.handle.as_bytes().to_vec(),
        epoch: r.epoch,
        erased_at_ms: r.erased_at_ms,
        messages_erased: r.messages_erased,
        purge_status: purge_status_to_proto(r.purge_status) as i32,
        mac: r.mac.to_vec(),
        subject: match r.subject {
            crate::ReceiptSubject::User => proto::ReceiptSubject::User,
            crate::ReceiptSubject::Conversation => proto::ReceiptSubject::Conversation,
        } as i32,
    }
}

/// A change of the feed on the wire.
pub(super) fn change_to_proto(e: &crate::ChangeEntry) -> proto::Change {
    use crate::Change as C;
    use proto::ChangeKind as K;
    let (kind, handle, epoch, seq, before_seq) = match e.change {
        C::UserErased {
            user,
            epoch,
            next_seq,
        } => (K::UserErased, user, epoch, 0, next_seq),
        C::ConversationDeleted {
            conversation,
            epoch,
            next_seq,
        } => (K::ConversationDeleted, conversation, epoch, 0, next_seq),
        C::MessageRedacted { user, seq } => (K::MessageRedacted, user, 0, seq, 0),
        C::ConversationMessageRedacted { conversation, seq } => {
            (K::ConversationMessageRedacted, conversation, 0, seq, 0)
        }
        C::MessagesExpired { user, before_seq } => (K::MessagesExpired, user, 0, 0, before_seq),
        C::ConversationMessagesExpired {
            conversation,
            before_seq,
        } => (
            K::ConversationMessagesExpired,
            conversation,
            0,
            0,
            before_seq,
        ),
    };
    proto::Change {
        cursor: e.cursor.to_bytes(),
        number: e.number,
        timestamp_ms: e.time_ms,
        kind: kind as i32,
        handle: handle.to_vec(),
        epoch,
        seq,
        before_seq,
    }
}

pub(super) fn audit_to_proto(r: &crate::AuditRecord) -> proto::AuditResponse {
    proto::AuditResponse {
        time_ms: r.time_ms,
        actor: r.actor.clone(),
        operation: r.op.name().to_owned(),
        handle: r.handle.map(|h| h.to_vec()).unwrap_or_default(),
        outcome: r.outcome.name().to_owned(),
    }
}

pub(super) fn legal_basis_to_proto(b: crate::LegalBasis) -> proto::LegalBasis {
    match b {
        crate::LegalBasis::Consent => proto::LegalBasis::Consent,
        crate::LegalBasis::Contract => proto::LegalBasis::Contract,
        crate::LegalBasis::LegalObligation => proto::LegalBasis::LegalObligation,
        crate::LegalBasis::VitalInterests => proto::LegalBasis::VitalInterests,
        crate::LegalBasis::PublicTask => proto::LegalBasis::PublicTask,
        crate::LegalBasis::LegitimateInterests => proto::LegalBasis::LegitimateInterests,
    }
}

pub(super) fn rights_to_proto(r: &crate::RightsState) -> proto::RightsState {
    let (retention, retention_ms) = match r.retention {
        crate::Retention::StoreDefault => (proto::RetentionMode::StoreDefault, 0),
        crate::Retention::Forever => (proto::RetentionMode::Forever, 0),
        crate::Retention::After { ms } => (proto::RetentionMode::After, ms),
    };
    let hold = r.legal_hold.as_ref();
    proto::RightsState {
        block_appends: r.restriction.block_appends,
        block_reads: r.restriction.block_reads,
        retention: retention as i32,
        retention_ms,
        effective_retention_ms: r.effective_retention_ms.unwrap_or(0),
        legal_hold: hold.is_some(),
        legal_hold_reason: hold.map(|h| h.reason.clone()).unwrap_or_default(),
        legal_hold_since_ms: hold.map_or(0, |h| h.since_ms),
        legal_hold_until_ms: hold.and_then(|h| h.until_ms).unwrap_or(0),
        expired_before_ms: r.expired_before_ms,
    }
}

pub(super) fn consent_to_proto(e: &crate::ConsentEntry) -> proto::ConsentRecord {
    proto::ConsentRecord {
        index: e.index,
        recorded_at_ms: e.recorded_at_ms,
        purpose: e.consent.purpose.clone(),
        basis: legal_basis_to_proto(e.consent.basis) as i32,
        granted: e.consent.granted,
        given_at_ms: e.consent.given_at_ms,
    }
}

pub(super) fn manifest_to_proto(m: &crate::ExportManifest) -> proto::ExportManifest {
    proto::ExportManifest {
        handle: m.handle.to_string(),
        message_count: m.message_count,
        first_seq: m.first_seq.unwrap_or(0),
        last_seq: m.last_seq.unwrap_or(0),
        key_epoch: m.key_epoch.unwrap_or(0),
        key_created_ms: m.key_created_ms.unwrap_or(0),
        erased_at_ms: m.erasures_ms.clone(),
        appends_blocked: m.appends_blocked,
        redacted_count: m.redacted_count,
        rights: Some(rights_to_proto(&m.rights)),
        consents: m.consents.iter().map(consent_to_proto).collect(),
        conversation_message_count: m.conversation_message_count,
    }
}

/// A message the user wrote in a conversation, as Export carries it.
pub(super) fn authored_to_proto(m: crate::AuthoredMessage) -> proto::ConversationExportMessage {
    proto::ConversationExportMessage {
        conversation_id: m.conversation.as_bytes().to_vec(),
        seq: m.seq,
        timestamp_ms: m.timestamp_ms,
        payload: m.payload,
    }
}

pub(super) fn conversation_item_to_proto(item: crate::ConversationItem) -> proto::ConversationItem {
    use proto::conversation_item::Body;
    match item {
        crate::ConversationItem::Message(m) => proto::ConversationItem {
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
            body: Some(Body::Message(proto::ConversationMessage {
                author_id: m.author.as_bytes().to_vec(),
                payload: m.payload,
            })),
        },
        crate::ConversationItem::Tombstone(t) => {
            let (cause, reason, redacted_at_ms) = match t.cause {
                crate::TombstoneCause::AuthorErased => {
                    (proto::TombstoneCause::AuthorErased, String::new(), 0)
                }
                crate::TombstoneCause::Redacted {
                    reason,
                    redacted_at_ms,
                } => (proto::TombstoneCause::Redacted, reason, redacted_at_ms),
            };
            proto::ConversationItem {
                seq: t.seq,
                timestamp_ms: t.timestamp_ms,
                body: Some(Body::Tombstone(proto::Tombstone {
                    cause: cause as i32,
                    reason,
                    redacted_at_ms,
                })),
            }
        }
    }
}

pub(super) fn erasure_request_state_to_proto(
    s: crate::ErasureRequestState,
) -> proto::ErasureRequestState {
    match s {
        crate::ErasureRequestState::Pending => proto::ErasureRequestState::Pending,
        crate::ErasureRequestState::WaitingForHold => proto::ErasureRequestState::WaitingForHold,
        crate::ErasureRequestState::Done => proto::ErasureRequestState::Done,
        crate::ErasureRequestState::Cancelled => proto::ErasureRequestState::Cancelled,
    }
}

pub(super) fn erasure_request_to_proto(r: &crate::ErasureRequest) -> proto::ErasureRequest {
    proto::ErasureRequest {
        request_id: r.id.to_string(),
        handle: r.handle.to_string(),
        received_ms: r.received_ms,
        due_ms: r.due_ms,
        grace_until_ms: r.grace_until_ms,
        delete_subject_conversations: r.delete_subject_conversations,
        state: erasure_request_state_to_proto(r.state).into(),
        state_since_ms: r.state_since_ms,
        receipt: r.receipt.as_ref().map(receipt_to_proto),
        overdue: r.overdue,
    }
}

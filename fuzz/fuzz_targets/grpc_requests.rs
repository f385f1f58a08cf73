//! Arbitrary protobuf bytes as every request message of `shredstore.v1`
//! (Append/AppendStream, Read, Erase, Export, Redact, RecordConsent,
//! VerifyReceipt, Audit, Purge, Stats, Restrict/Unrestrict, SetRetention,
//! SetLegalHold, LiftLegalHold/GetRights, and Conversations'
//! Append/AppendStream, Read, Redact and Delete),
//! decoded with prost and passed through the server's request validation
//! (`shredstore::server::validate`): nothing panics, every request yields a
//! validated value or an `INVALID_ARGUMENT` status, the outcome is exactly
//! what the documented limits predict, and error messages name the field and
//! the limit, never the value.
//!
//! Input: `max_payload[2 BE] max_read_limit[2 BE] protobuf...`. The protobuf
//! bytes are decoded as each request type in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shredstore::MAX_REASON_LEN;
use shredstore::server::proto::set_retention_request::Policy;
use shredstore::server::proto::{
    AppendRequest, AuditRequest, ConversationAppendRequest, ConversationReadRequest,
    ConversationRedactRequest, ConversationRequest, ConversationsSetSubjectsRequest,
    ReceiptSubject, EraseRequest, ErasureReceipt, ExportRequest, GetRightsRequest,
    LegalBasis, LiftLegalHoldRequest, PurgeRequest, PurgeStatus, ReadRequest, RecordConsentRequest,
    RedactRequest, RestrictRequest, SetLegalHoldRequest, SetRetentionRequest, StatsRequest,
    UnrestrictRequest, VerifyReceiptRequest,
};
use shredstore::server::validate::{
    RequestLimits, validate_append, validate_conversation, validate_conversation_append,
    validate_conversation_read, validate_conversation_redact, validate_conversation_set_subjects, validate_audit, validate_erase, validate_export,
    validate_get_rights, validate_lift_legal_hold, validate_read, validate_receipt,
    validate_record_consent, validate_redact, validate_restrict, validate_set_legal_hold,
    validate_set_retention, validate_unrestrict,
};
use shredstore::{
    MAX_CLIENT_MESSAGE_ID_LEN, MAX_CONVERSATION_ID_LEN, MAX_USER_ID_LEN, Retention,
};
use tonic::{Code, Status};

/// Every error message, with its digits removed (they are lengths and limits).
const TEMPLATES: &[&str] = &[
    "payload is  bytes, the maximum is ",
    "client message id is empty",
    "client message id is  bytes, the maximum is ",
    "user_id: user id is empty",
    "user_id: user id is  bytes, the maximum is ",
    "limit must be ..=",
    "receipt must be set",
    "receipt.handle must be  bytes",
    "receipt.mac must be  bytes",
    "receipt.purge_status must be PENDING or PURGED",
    "receipt.subject must be USER or CONVERSATION",
    "conversation_id: conversation id is empty",
    "conversation_id: conversation id is  bytes, the maximum is ",
    "author_id: user id is empty",
    "author_id: user id is  bytes, the maximum is ",
    "subject_ids:  subjects, the maximum is ",
    "subject_ids: user id is empty",
    "subject_ids: user id is  bytes, the maximum is ",
    "from_ms must be below to_ms",
    "seq must be at least ",
    "reason is  bytes, the maximum is ",
    "purpose is empty",
    "purpose is  bytes, the maximum is ",
    "basis must be a LegalBasis other than LEGAL_BASIS_UNSPECIFIED",
    "given_at_ms must be set (ms since the Unix epoch)",
    "block_appends or block_reads must be set",
    "policy must be set: store_default, forever or after_ms",
    "store_default must be true",
    "forever must be true",
    "after_ms must be at least ",
];

/// The status is INVALID_ARGUMENT, its message one of the templates (so it
/// carries lengths and limits only, never a value), starting with `field`.
fn check_status(s: &Status, field: &str) {
    assert!(s.code() == Code::InvalidArgument, "unexpected code: {s:?}");
    let msg = s.message();
    let shape: String = msg.chars().filter(|c| !c.is_ascii_digit()).collect();
    assert!(
        TEMPLATES.contains(&shape.as_str()),
        "unexpected error message shape: {msg:?}"
    );
    assert!(msg.starts_with(field), "{msg:?} does not name {field}");
}

fn user_id_ok(id: &[u8]) -> bool {
    (1..=MAX_USER_ID_LEN).contains(&id.len())
}

/// Decodes `T`; a decoded message re-encodes to bytes that decode to it again.
fn decode<T: Message + Default + PartialEq>(bytes: &[u8]) -> Option<T> {
    let m = T::decode(bytes).ok()?;
    let again = T::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert!(again == m, "protobuf re-encoding changed the message");
    Some(m)
}

fn append(bytes: &[u8], limits: &RequestLimits) {
    let Some(r) = decode::<AppendRequest>(bytes) else {
        return;
    };
    let payload_ok = r.payload.len() <= limits.max_payload;
    let id_ok = r
        .client_message_id
        .as_ref()
        .is_none_or(|id| (1..=MAX_CLIENT_MESSAGE_ID_LEN).contains(&id.len()));
    let user_ok = user_id_ok(&r.user_id);
    let (user, payload, id) = (
        r.user_id.clone(),
        r.payload.clone(),
        r.client_message_id.clone(),
    );
    match validate_append(r, limits) {
        Ok(a) => {
            assert!(payload_ok && id_ok && user_ok, "accepted a bad append");
            assert_eq!(a.user.as_bytes(), user.as_slice());
            assert_eq!(a.payload, payload);
            assert_eq!(a.client_message_id, id);
        }
        Err(s) => {
            // Checked in this order: payload, client_message_id, user_id.
            let field = if !payload_ok {
                "payload"
            } else if !id_ok {
                "client message id"
            } else {
                assert!(!user_ok, "rejected a good append: {s:?}");
                "user_id"
            };
            check_status(&s, field);
        }
    }
}

fn read(bytes: &[u8], limits: &RequestLimits) {
    let Some(r) = decode::<ReadRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
    let limit_ok = (1..=limits.max_read_limit).contains(&limit);
    let (user, from_seq) = (r.user_id.clone(), r.from_seq);
    match validate_read(r, limits) {
        Ok(a) => {
            assert!(user_ok && limit_ok, "accepted a bad read");
            assert_eq!(a.user.as_bytes(), user.as_slice());
            assert_eq!((a.from_seq, a.limit), (from_seq, limit));
        }
        Err(s) => {
            let field = if !user_ok {
                "user_id"
            } else {
                assert!(!limit_ok, "rejected a good read: {s:?}");
                "limit"
            };
            check_status(&s, field);
        }
    }
}

fn erase(bytes: &[u8]) {
    let Some(r) = decode::<EraseRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let (user, block_new, subjects) = (r.user_id.clone(), r.block_new, r.delete_subject_conversations);
    match validate_erase(r) {
        Ok(a) => {
            assert!(user_ok, "accepted a bad erase");
            assert_eq!(a.user.as_bytes(), user.as_slice());
            assert_eq!(a.block_new, block_new);
            assert_eq!(a.options().block_new, block_new);
            assert_eq!(a.options().delete_subject_conversations, subjects);
        }
        Err(s) => {
            assert!(!user_ok, "rejected a good erase: {s:?}");
            check_status(&s, "user_id");
        }
    }
}

fn export(bytes: &[u8]) {
    let Some(r) = decode::<ExportRequest>(bytes) else {
        return;
    };
    let user = r.user_id.clone();
    match validate_export(r) {
        Ok(u) => {
            assert!(user_id_ok(&user), "accepted a bad export");
            assert_eq!(u.as_bytes(), user.as_slice());
        }
        Err(s) => {
            assert!(!user_id_ok(&user), "rejected a good export: {s:?}");
            check_status(&s, "user_id");
        }
    }
}

fn verify_receipt(bytes: &[u8]) {
    // As a request: a receipt nested in field 7, or none.
    if let Some(req) = decode::<VerifyReceiptRequest>(bytes)
        && req.receipt.is_none()
    {
        let s = validate_receipt(&req).expect_err("accepted a request without a receipt");
        check_status(&s, "receipt");
    }
    // As the receipt itself (the request built around it).
    let Some(r) = decode::<ErasureReceipt>(bytes) else {
        return;
    };
    let req = VerifyReceiptRequest {
        receipt: Some(r.clone()),
    };
    let handle_ok = r.handle.len() == 16;
    let mac_ok = r.mac.len() == 32;
    let status = PurgeStatus::try_from(r.purge_status).ok();
    let status_ok = matches!(status, Some(PurgeStatus::Pending | PurgeStatus::Purged));
    let subject = ReceiptSubject::try_from(r.subject).ok();
    let subject_ok = subject.is_some();
    match validate_receipt(&req) {
        Ok(v) => {
            assert!(
                handle_ok && mac_ok && status_ok && subject_ok,
                "accepted a bad receipt"
            );
            assert_eq!(
                v.subject == shredstore::ReceiptSubject::Conversation,
                subject == Some(ReceiptSubject::Conversation)
            );
            assert_eq!(v.handle.as_bytes().as_slice(), r.handle.as_slice());
            assert_eq!(v.mac.as_slice(), r.mac.as_slice());
            assert_eq!(
                (v.epoch, v.erased_at_ms, v.messages_erased),
                (r.epoch, r.erased_at_ms, r.messages_erased)
            );
            let purged = matches!(v.purge_status, shredstore::PurgeStatus::Purged);
            assert_eq!(purged, status == Some(PurgeStatus::Purged));
        }
        Err(s) => {
            // Checked in this order: handle, mac, purge_status, subject.
            let field = if !handle_ok {
                "receipt.handle"
            } else if !mac_ok {
                "receipt.mac"
            } else if !status_ok {
                "receipt.purge_status"
            } else {
                assert!(!subject_ok, "rejected a good receipt: {s:?}");
                "receipt.subject"
            };
            check_status(&s, field);
        }
    }
}

fn audit(bytes: &[u8]) {
    let Some(r) = decode::<AuditRequest>(bytes) else {
        return;
    };
    let to_ms = if r.to_ms == 0 { u64::MAX } else { r.to_ms };
    match validate_audit(&r) {
        Ok(range) => assert_eq!(range, (r.from_ms, to_ms)),
        Err(s) => {
            assert!(r.from_ms >= to_ms, "rejected a good audit range: {s:?}");
            check_status(&s, "from_ms");
        }
    }
}

fn reason_ok(text: &str) -> bool {
    text.len() <= MAX_REASON_LEN
}

fn redact(bytes: &[u8]) {
    let Some(r) = decode::<RedactRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let seq_ok = r.seq >= 1;
    let text_ok = reason_ok(&r.reason);
    match validate_redact(r.clone()) {
        Ok(a) => {
            assert!(user_ok && seq_ok && text_ok, "accepted a bad redact");
            assert_eq!(a.user.as_bytes(), r.user_id.as_slice());
            assert_eq!((a.seq, a.reason.as_str()), (r.seq, r.reason.as_str()));
        }
        Err(s) => {
            // Checked in this order: user_id, seq, reason.
            let field = if !user_ok {
                "user_id"
            } else if !seq_ok {
                "seq"
            } else {
                assert!(!text_ok, "rejected a good redact: {s:?}");
                "reason"
            };
            check_status(&s, field);
        }
    }
}

fn record_consent(bytes: &[u8]) {
    let Some(r) = decode::<RecordConsentRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let purpose_ok = !r.purpose.is_empty() && reason_ok(&r.purpose);
    let basis_ok = LegalBasis::try_from(r.basis).is_ok_and(|b| b != LegalBasis::Unspecified);
    let time_ok = r.given_at_ms != 0;
    match validate_record_consent(r.clone()) {
        Ok(a) => {
            assert!(
                user_ok && purpose_ok && basis_ok && time_ok,
                "accepted a bad consent"
            );
            assert_eq!(a.user.as_bytes(), r.user_id.as_slice());
            assert_eq!(a.consent.purpose, r.purpose);
            assert_eq!(
                (a.consent.granted, a.consent.given_at_ms),
                (r.granted, r.given_at_ms)
            );
            // The basis maps one to one, by name.
            let name = LegalBasis::try_from(r.basis).unwrap().as_str_name();
            assert_eq!(
                name.strip_prefix("LEGAL_BASIS_")
                    .map(str::to_ascii_lowercase),
                Some(a.consent.basis.name().to_owned())
            );
        }
        Err(s) => {
            // Checked in this order: user_id, purpose, basis, given_at_ms.
            let field = if !user_ok {
                "user_id"
            } else if !purpose_ok {
                "purpose"
            } else if !basis_ok {
                "basis"
            } else {
                assert!(!time_ok, "rejected a good consent: {s:?}");
                "given_at_ms"
            };
            check_status(&s, field);
        }
    }
}

fn restrict(bytes: &[u8]) {
    let Some(r) = decode::<RestrictRequest>(bytes) else {
        return;
    };
    // Unrestrict's request has the same fields and numbers.
    let u = decode::<UnrestrictRequest>(bytes).expect("the same wire as RestrictRequest");
    assert_eq!(
        (&u.user_id, u.block_appends, u.block_reads),
        (&r.user_id, r.block_appends, r.block_reads)
    );
    let user_ok = user_id_ok(&r.user_id);
    let any = r.block_appends || r.block_reads;
    for lifting in [false, true] {
        let got = if lifting {
            validate_unrestrict(u.clone())
        } else {
            validate_restrict(r.clone())
        };
        match got {
            Ok(a) => {
                assert!(user_ok && (any || lifting), "accepted a bad restrict");
                assert_eq!(a.user.as_bytes(), r.user_id.as_slice());
                assert_eq!(
                    (a.modes.block_appends, a.modes.block_reads),
                    (r.block_appends, r.block_reads)
                );
            }
            Err(s) => {
                let field = if !user_ok {
                    "user_id"
                } else {
                    assert!(!any && !lifting, "rejected a good restrict: {s:?}");
                    "block_appends"
                };
                check_status(&s, field);
            }
        }
    }
}

fn set_retention(bytes: &[u8]) {
    let Some(r) = decode::<SetRetentionRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let want = match r.policy {
        None => Err("policy"),
        Some(Policy::StoreDefault(true)) => Ok(Retention::StoreDefault),
        Some(Policy::StoreDefault(false)) => Err("store_default"),
        Some(Policy::Forever(true)) => Ok(Retention::Forever),
        Some(Policy::Forever(false)) => Err("forever"),
        Some(Policy::AfterMs(0)) => Err("after_ms"),
        Some(Policy::AfterMs(ms)) => Ok(Retention::After { ms }),
    };
    match validate_set_retention(r.clone()) {
        Ok(a) => {
            assert!(user_ok, "accepted a bad user_id");
            assert_eq!(a.user.as_bytes(), r.user_id.as_slice());
            assert_eq!(Ok(a.retention), want);
        }
        Err(s) => {
            // Checked in this order: user_id, policy.
            let field = if !user_ok {
                "user_id"
            } else {
                want.expect_err("rejected a good retention")
            };
            check_status(&s, field);
        }
    }
}

fn set_legal_hold(bytes: &[u8]) {
    let Some(r) = decode::<SetLegalHoldRequest>(bytes) else {
        return;
    };
    let user_ok = user_id_ok(&r.user_id);
    let text_ok = reason_ok(&r.reason);
    match validate_set_legal_hold(r.clone()) {
        Ok(a) => {
            assert!(user_ok && text_ok, "accepted a bad legal hold");
            assert_eq!(a.user.as_bytes(), r.user_id.as_slice());
            assert_eq!(a.reason, r.reason);
            assert_eq!(a.until_ms, (r.until_ms != 0).then_some(r.until_ms));
        }
        Err(s) => {
            let field = if !user_ok {
                "user_id"
            } else {
                assert!(!text_ok, "rejected a good legal hold: {s:?}");
                "reason"
            };
            check_status(&s, field);
        }
    }
}

fn user_request(bytes: &[u8]) {
    let Some(r) = decode::<GetRightsRequest>(bytes) else {
        return;
    };
    let user = r.user_id.clone();
    // LiftLegalHold's request has the same field.
    let lift = decode::<LiftLegalHoldRequest>(bytes).expect("the same wire as GetRightsRequest");
    assert_eq!(lift.user_id, user);
    let lifted = validate_lift_legal_hold(lift).map(|u| u.as_bytes().to_vec());
    let got = validate_get_rights(r);
    assert_eq!(
        lifted.as_ref().ok(),
        got.as_ref().ok().map(|u| u.as_bytes().to_vec()).as_ref()
    );
    match got {
        Ok(u) => {
            assert!(user_id_ok(&user), "accepted a bad user request");
            assert_eq!(u.as_bytes(), user.as_slice());
        }
        Err(s) => {
            assert!(!user_id_ok(&user), "rejected a good user request: {s:?}");
            check_status(&s, "user_id");
        }
    }
}

fn conversation_id_ok(id: &[u8]) -> bool {
    (1..=MAX_CONVERSATION_ID_LEN).contains(&id.len())
}

fn conversation_append(bytes: &[u8], limits: &RequestLimits) {
    let Some(r) = decode::<ConversationAppendRequest>(bytes) else {
        return;
    };
    let payload_ok = r.payload.len() <= limits.max_payload;
    let id_len = r.client_message_id.len();
    let id_ok = id_len <= MAX_CLIENT_MESSAGE_ID_LEN;
    let conv_ok = conversation_id_ok(&r.conversation_id);
    let author_ok = user_id_ok(&r.author_id);
    let want = r.clone();
    match validate_conversation_append(r, limits) {
        Ok(a) => {
            assert!(
                payload_ok && id_ok && conv_ok && author_ok,
                "accepted a bad conversation append"
            );
            assert_eq!(a.conversation.as_bytes(), want.conversation_id.as_slice());
            assert_eq!(a.author.as_bytes(), want.author_id.as_slice());
            assert_eq!(a.payload, want.payload);
            // An empty id is no id.
            assert_eq!(
                a.client_message_id,
                (id_len > 0).then_some(want.client_message_id)
            );
        }
        Err(s) => {
            // Checked in this order: payload, client_message_id,
            // conversation_id, author_id.
            let field = if !payload_ok {
                "payload"
            } else if !id_ok {
                "client message id"
            } else if !conv_ok {
                "conversation_id"
            } else {
                assert!(!author_ok, "rejected a good conversation append: {s:?}");
                "author_id"
            };
            check_status(&s, field);
        }
    }
}

fn conversation_read(bytes: &[u8], limits: &RequestLimits) {
    let Some(r) = decode::<ConversationReadRequest>(bytes) else {
        return;
    };
    let conv_ok = conversation_id_ok(&r.conversation_id);
    let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
    let limit_ok = (1..=limits.max_read_limit).contains(&limit);
    let want = r.clone();
    match validate_conversation_read(r, limits) {
        Ok(a) => {
            assert!(conv_ok && limit_ok, "accepted a bad conversation read");
            assert_eq!(a.conversation.as_bytes(), want.conversation_id.as_slice());
            assert_eq!(
                (a.from_seq, a.limit, a.backward),
                (want.from_seq, limit, want.backward)
            );
        }
        Err(s) => {
            let field = if !conv_ok {
                "conversation_id"
            } else {
                assert!(!limit_ok, "rejected a good conversation read: {s:?}");
                "limit"
            };
            check_status(&s, field);
        }
    }
}

fn conversation_redact(bytes: &[u8]) {
    let Some(r) = decode::<ConversationRedactRequest>(bytes) else {
        return;
    };
    let conv_ok = conversation_id_ok(&r.conversation_id);
    let seq_ok = r.seq >= 1;
    let text_ok = reason_ok(&r.reason);
    match validate_conversation_redact(r.clone()) {
        Ok(a) => {
            assert!(conv_ok && seq_ok && text_ok, "accepted a bad redaction");
            assert_eq!(a.conversation.as_bytes(), r.conversation_id.as_slice());
            assert_eq!((a.seq, a.reason.as_str()), (r.seq, r.reason.as_str()));
        }
        Err(s) => {
            // Checked in this order: conversation_id, seq, reason.
            let field = if !conv_ok {
                "conversation_id"
            } else if !seq_ok {
                "seq"
            } else {
                assert!(!text_ok, "rejected a good redaction: {s:?}");
                "reason"
            };
            check_status(&s, field);
        }
    }
}

fn conversation_request(bytes: &[u8]) {
    let Some(r) = decode::<ConversationRequest>(bytes) else {
        return;
    };
    let id = r.conversation_id.clone();
    match validate_conversation(r) {
        Ok(c) => {
            assert!(conversation_id_ok(&id), "accepted a bad conversation id");
            assert_eq!(c.as_bytes(), id.as_slice());
        }
        Err(s) => {
            assert!(!conversation_id_ok(&id), "rejected a good conversation id: {s:?}");
            check_status(&s, "conversation_id");
        }
    }
}

fn conversation_set_subjects(bytes: &[u8]) {
    let Some(r) = decode::<ConversationsSetSubjectsRequest>(bytes) else {
        return;
    };
    let conv_ok = conversation_id_ok(&r.conversation_id);
    let count_ok = r.subject_ids.len() <= shredstore::MAX_SUBJECTS;
    let ids_ok = r.subject_ids.iter().all(|id| user_id_ok(id));
    match validate_conversation_set_subjects(r.clone()) {
        Ok((c, subjects)) => {
            assert!(conv_ok && count_ok && ids_ok, "accepted bad subjects");
            assert_eq!(c.as_bytes(), r.conversation_id.as_slice());
            let got: Vec<&[u8]> = subjects.iter().map(|u| u.as_bytes()).collect();
            let want: Vec<&[u8]> = r.subject_ids.iter().map(Vec::as_slice).collect();
            assert_eq!(got, want);
        }
        Err(s) => {
            let field = if !conv_ok {
                "conversation_id"
            } else {
                assert!(!(count_ok && ids_ok), "rejected good subjects: {s:?}");
                "subject_ids"
            };
            check_status(&s, field);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let limits = RequestLimits {
        max_payload: usize::from(u16::from_be_bytes([data[0], data[1]])),
        max_read_limit: usize::from(u16::from_be_bytes([data[2], data[3]])),
    };
    let bytes = &data[4..];
    append(bytes, &limits);
    read(bytes, &limits);
    erase(bytes);
    export(bytes);
    verify_receipt(bytes);
    audit(bytes);
    redact(bytes);
    record_consent(bytes);
    restrict(bytes);
    set_retention(bytes);
    set_legal_hold(bytes);
    user_request(bytes);
    conversation_append(bytes, &limits);
    conversation_read(bytes, &limits);
    conversation_redact(bytes);
    conversation_request(bytes);
    conversation_set_subjects(bytes);
    // Purge and Stats carry no fields: decoding (unknown fields skipped) is
    // all there is before the store.
    let _ = decode::<PurgeRequest>(bytes);
    let _ = decode::<StatsRequest>(bytes);
});

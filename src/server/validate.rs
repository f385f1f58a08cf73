//! Request validation: every check the services make on a request before it
//! reaches the store, as plain functions. The services call them, and so does
//! the `grpc_requests` fuzz target (`fuzz/`), which feeds them arbitrary
//! protobuf. Errors are `INVALID_ARGUMENT` statuses that name the field and
//! the limit, never the value.

use tonic::Status;

use super::proto::{
    self, AppendRequest, AuditRequest, ConversationAppendRequest, ConversationReadRequest,
    ConversationRedactRequest, ConversationRequest, EraseRequest, GetRightsRequest,
    LiftLegalHoldRequest, ReadRequest, RecordConsentRequest, RedactRequest, RestrictRequest,
    SetLegalHoldRequest, SetRetentionRequest, UnrestrictRequest, VerifyReceiptRequest,
    set_retention_request::Policy,
};
use super::status;
use crate::codec::MAX_REASON_LEN;
use crate::{
    Consent, ConversationId, EraseOptions, LegalBasis, Restriction, Retention, StoreLimits, UserId,
};

/// The limits request validation enforces (a store's [`StoreLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest payload, in bytes.
    pub max_payload: usize,
    /// Largest `Read` limit.
    pub max_read_limit: usize,
}

impl From<StoreLimits> for RequestLimits {
    fn from(l: StoreLimits) -> Self {
        RequestLimits {
            max_payload: l.max_payload,
            max_read_limit: l.max_read_limit,
        }
    }
}

/// Validates a request's `user_id` field.
///
/// # Errors
/// `INVALID_ARGUMENT` for an empty or over-long id.
pub fn user_id(bytes: Vec<u8>) -> Result<UserId, Status> {
    UserId::new(bytes).map_err(|e| match e {
        crate::Error::InvalidArgument(a) => Status::invalid_argument(format!("user_id: {a}")),
        other => status(other),
    })
}

/// A validated `AppendRequest` (also each request of `AppendStream`).
/// `Debug` shows lengths only: payloads and client message ids never reach
/// a log.
pub struct AppendArgs {
    /// The user.
    pub user: UserId,
    /// The payload, at most `max_payload` bytes.
    pub payload: Vec<u8>,
    /// The idempotency key, 1..=[`crate::MAX_CLIENT_MESSAGE_ID_LEN`] bytes if present.
    pub client_message_id: Option<String>,
}

impl std::fmt::Debug for AppendArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendArgs")
            .field("user", &self.user)
            .field("payload_len", &self.payload.len())
            .field(
                "client_message_id_len",
                &self.client_message_id.as_ref().map(String::len),
            )
            .finish()
    }
}

/// Validates an `AppendRequest`: payload size, then `client_message_id`, then
/// `user_id`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_append(r: AppendRequest, limits: &RequestLimits) -> Result<AppendArgs, Status> {
    let max_payload = limits.max_payload;
    if r.payload.len() > max_payload {
        return Err(Status::invalid_argument(format!(
            "payload is {} bytes, the maximum is {max_payload}",
            r.payload.len()
        )));
    }
    if let Some(id) = &r.client_message_id {
        crate::validate_client_message_id(id.as_bytes()).map_err(status)?;
    }
    Ok(AppendArgs {
        user: user_id(r.user_id)?,
        payload: r.payload,
        client_message_id: r.client_message_id,
    })
}

/// A validated `ReadRequest`.
#[derive(Debug)]
pub struct ReadArgs {
    /// The user.
    pub user: UserId,
    /// First seq wanted.
    pub from_seq: u64,
    /// Most messages to return, 1..=`max_read_limit`.
    pub limit: usize,
}

/// Validates a `ReadRequest`: `user_id`, then `limit`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_read(r: ReadRequest, limits: &RequestLimits) -> Result<ReadArgs, Status> {
    let user = user_id(r.user_id)?;
    let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
    let max = limits.max_read_limit;
    if limit == 0 || limit > max {
        return Err(Status::invalid_argument(format!("limit must be 1..={max}")));
    }
    Ok(ReadArgs {
        user,
        from_seq: r.from_seq,
        limit,
    })
}

/// A validated `EraseRequest`.
#[derive(Debug)]
pub struct EraseArgs {
    /// The user.
    pub user: UserId,
    /// Also refuse the user's later appends.
    pub block_new: bool,
    /// Also delete the conversations the user is a declared subject of.
    pub delete_subject_conversations: bool,
}

impl EraseArgs {
    /// The store options of this erasure.
    pub fn options(&self) -> EraseOptions {
        let o = if self.block_new {
            EraseOptions::block_new()
        } else {
            EraseOptions::default()
        };
        if self.delete_subject_conversations {
            o.with_subject_conversations()
        } else {
            o
        }
    }
}

/// Validates an `EraseRequest`.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad `user_id`.
pub fn validate_erase(r: EraseRequest) -> Result<EraseArgs, Status> {
    Ok(EraseArgs {
        user: user_id(r.user_id)?,
        block_new: r.block_new,
        delete_subject_conversations: r.delete_subject_conversations,
    })
}

/// Validates an Export request: returns the user.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad user id.
pub fn validate_export(r: crate::server::proto::ExportRequest) -> Result<UserId, Status> {
    user_id(r.user_id)
}

/// Validates the receipt of a `VerifyReceipt` call: present, its field
/// sizes and purge status (whether its MAC verifies is the store's
/// business). A request of a client older than 0.3.0 (the receipt's fields
/// at the top level) reads as one without a receipt.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_receipt(r: &VerifyReceiptRequest) -> Result<crate::ErasureReceipt, Status> {
    let p = r
        .receipt
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("receipt must be set"))?;
    let handle: [u8; crate::Handle::LEN] = p
        .handle
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("receipt.handle must be 16 bytes"))?;
    let mac: [u8; 32] = p
        .mac
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("receipt.mac must be 32 bytes"))?;
    let purge_status = match proto::PurgeStatus::try_from(p.purge_status) {
        Ok(proto::PurgeStatus::Pending) => crate::PurgeStatus::Pending,
        Ok(proto::PurgeStatus::Purged) => crate::PurgeStatus::Purged,
        _ => {
            return Err(Status::invalid_argument(
                "receipt.purge_status must be PENDING or PURGED",
            ));
        }
    };
    let subject = match proto::ReceiptSubject::try_from(p.subject) {
        Ok(proto::ReceiptSubject::Unspecified | proto::ReceiptSubject::User) => {
            crate::ReceiptSubject::User
        }
        Ok(proto::ReceiptSubject::Conversation) => crate::ReceiptSubject::Conversation,
        Err(_) => {
            return Err(Status::invalid_argument(
                "receipt.subject must be USER or CONVERSATION",
            ));
        }
    };
    Ok(crate::ErasureReceipt {
        subject,
        handle: crate::Handle::from_bytes(handle),
        epoch: p.epoch,
        erased_at_ms: p.erased_at_ms,
        messages_erased: p.messages_erased,
        purge_status,
        mac,
    })
}

/// Validates an `AuditRequest`: returns `(from_ms, to_ms)`, a `to_ms` of 0
/// meaning no upper bound (`u64::MAX`).
///
/// # Errors
/// `INVALID_ARGUMENT` unless `from_ms` is below `to_ms`.
pub fn validate_audit(r: &AuditRequest) -> Result<(u64, u64), Status> {
    let to_ms = if r.to_ms == 0 { u64::MAX } else { r.to_ms };
    if r.from_ms >= to_ms {
        return Err(Status::invalid_argument("from_ms must be below to_ms"));
    }
    Ok((r.from_ms, to_ms))
}

/// Checks a free-text field (a reason or purpose): at most
/// [`MAX_REASON_LEN`] bytes, and not empty unless `may_be_empty`.
fn text_field(field: &str, text: &str, may_be_empty: bool) -> Result<(), Status> {
    if !may_be_empty && text.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is empty")));
    }
    if text.len() > MAX_REASON_LEN {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes, the maximum is {MAX_REASON_LEN}",
            text.len()
        )));
    }
    Ok(())
}

/// A validated `RedactRequest`. `Debug` shows the reason's length only.
pub struct RedactArgs {
    /// The user.
    pub user: UserId,
    /// The message to redact, at least 1.
    pub seq: u64,
    /// Why, at most [`MAX_REASON_LEN`] bytes (may be empty).
    pub reason: String,
}

impl std::fmt::Debug for RedactArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactArgs")
            .field("user", &self.user)
            .field("seq", &self.seq)
            .field("reason_len", &self.reason.len())
            .finish()
    }
}

/// Validates a `RedactRequest`: `user_id`, then `seq`, then `reason`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_redact(r: RedactRequest) -> Result<RedactArgs, Status> {
    let user = user_id(r.user_id)?;
    if r.seq == 0 {
        return Err(Status::invalid_argument("seq must be at least 1"));
    }
    text_field("reason", &r.reason, true)?;
    Ok(RedactArgs {
        user,
        seq: r.seq,
        reason: r.reason,
    })
}

/// The store's legal basis of a protobuf `LegalBasis` value; `None` for
/// `LEGAL_BASIS_UNSPECIFIED` and unknown values.
pub fn legal_basis(value: i32) -> Option<LegalBasis> {
    match proto::LegalBasis::try_from(value).ok()? {
        proto::LegalBasis::Unspecified => None,
        proto::LegalBasis::Consent => Some(LegalBasis::Consent),
        proto::LegalBasis::Contract => Some(LegalBasis::Contract),
        proto::LegalBasis::LegalObligation => Some(LegalBasis::LegalObligation),
        proto::LegalBasis::VitalInterests => Some(LegalBasis::VitalInterests),
        proto::LegalBasis::PublicTask => Some(LegalBasis::PublicTask),
        proto::LegalBasis::LegitimateInterests => Some(LegalBasis::LegitimateInterests),
    }
}

/// A validated `RecordConsentRequest`.
#[derive(Debug)]
pub struct ConsentArgs {
    /// The user.
    pub user: UserId,
    /// What to record.
    pub consent: Consent,
}

/// Validates a `RecordConsentRequest`: `user_id`, `purpose` (1..=256 bytes),
/// `basis` (not unspecified or unknown), then `given_at_ms` (not 0).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_record_consent(r: RecordConsentRequest) -> Result<ConsentArgs, Status> {
    let user = user_id(r.user_id)?;
    text_field("purpose", &r.purpose, false)?;
    let basis = legal_basis(r.basis).ok_or_else(|| {
        Status::invalid_argument("basis must be a LegalBasis other than LEGAL_BASIS_UNSPECIFIED")
    })?;
    if r.given_at_ms == 0 {
        return Err(Status::invalid_argument(
            "given_at_ms must be set (ms since the Unix epoch)",
        ));
    }
    Ok(ConsentArgs {
        user,
        consent: Consent {
            purpose: r.purpose,
            basis,
            granted: r.granted,
            given_at_ms: r.given_at_ms,
        },
    })
}

/// A validated `RestrictRequest`.
#[derive(Debug)]
pub struct RestrictArgs {
    /// The user.
    pub user: UserId,
    /// The modes to add (Restrict) or lift (Unrestrict; none = both).
    pub modes: Restriction,
}

fn restrict_args(
    user: Vec<u8>,
    block_appends: bool,
    block_reads: bool,
) -> Result<RestrictArgs, Status> {
    Ok(RestrictArgs {
        user: user_id(user)?,
        modes: Restriction {
            block_appends,
            block_reads,
        },
    })
}

/// Validates the `RestrictRequest` of `Restrict`: `user_id`, then at least
/// one mode.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_restrict(r: RestrictRequest) -> Result<RestrictArgs, Status> {
    let a = restrict_args(r.user_id, r.block_appends, r.block_reads)?;
    if !a.modes.any() {
        return Err(Status::invalid_argument(
            "block_appends or block_reads must be set",
        ));
    }
    Ok(a)
}

/// Validates an `UnrestrictRequest` (no mode set lifts both).
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad `user_id`.
pub fn validate_unrestrict(r: UnrestrictRequest) -> Result<RestrictArgs, Status> {
    restrict_args(r.user_id, r.block_appends, r.block_reads)
}

/// A validated `SetRetentionRequest`.
#[derive(Debug)]
pub struct RetentionArgs {
    /// The user.
    pub user: UserId,
    /// The new setting.
    pub retention: Retention,
}

/// Validates a `SetRetentionRequest`: `user_id`, then the `policy` oneof
/// (present; `store_default` and `forever` true, `after_ms` at least 1).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_set_retention(r: SetRetentionRequest) -> Result<RetentionArgs, Status> {
    let user = user_id(r.user_id)?;
    Ok(RetentionArgs {
        user,
        retention: retention_policy(r.policy)?,
    })
}

/// The retention a request's `policy` oneof asks for.
fn retention_policy(policy: Option<Policy>) -> Result<Retention, Status> {
    Ok(match policy {
        None => {
            return Err(Status::invalid_argument(
                "policy must be set: store_default, forever or after_ms",
            ));
        }
        Some(Policy::StoreDefault(true)) => Retention::StoreDefault,
        Some(Policy::Forever(true)) => Retention::Forever,
        Some(Policy::StoreDefault(false)) => {
            return Err(Status::invalid_argument("store_default must be true"));
        }
        Some(Policy::Forever(false)) => {
            return Err(Status::invalid_argument("forever must be true"));
        }
        Some(Policy::AfterMs(0)) => {
            return Err(Status::invalid_argument("after_ms must be at least 1"));
        }
        Some(Policy::AfterMs(ms)) => Retention::After { ms },
    })
}

/// A validated `SetLegalHoldRequest`. `Debug` shows the reason's length only.
pub struct LegalHoldArgs {
    /// The user.
    pub user: UserId,
    /// Why, at most [`MAX_REASON_LEN`] bytes (may be empty).
    pub reason: String,
    /// When the hold ends by itself (`None`: until lifted).
    pub until_ms: Option<u64>,
}

impl std::fmt::Debug for LegalHoldArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegalHoldArgs")
            .field("user", &self.user)
            .field("reason_len", &self.reason.len())
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

/// Validates a `SetLegalHoldRequest`: `user_id`, then `reason`. Whether
/// `until_ms` lies in the future is the store's check (its clock).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_set_legal_hold(r: SetLegalHoldRequest) -> Result<LegalHoldArgs, Status> {
    let user = user_id(r.user_id)?;
    text_field("reason", &r.reason, true)?;
    Ok(LegalHoldArgs {
        user,
        reason: r.reason,
        until_ms: (r.until_ms != 0).then_some(r.until_ms),
    })
}

/// Validates a `LiftLegalHoldRequest`: returns the user.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad `user_id`.
pub fn validate_lift_legal_hold(r: LiftLegalHoldRequest) -> Result<UserId, Status> {
    user_id(r.user_id)
}

/// Validates a `GetRightsRequest`: returns the user.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad `user_id`.
pub fn validate_get_rights(r: GetRightsRequest) -> Result<UserId, Status> {
    user_id(r.user_id)
}

/// Validates a request's `conversation_id` field.
///
/// # Errors
/// `INVALID_ARGUMENT` for an empty or over-long id.
pub fn conversation_id(bytes: Vec<u8>) -> Result<ConversationId, Status> {
    ConversationId::new(bytes).map_err(|e| match e {
        crate::Error::InvalidArgument(a) => {
            Status::invalid_argument(format!("conversation_id: {a}"))
        }
        other => status(other),
    })
}

/// Validates a request's `author_id` field.
///
/// # Errors
/// `INVALID_ARGUMENT` for an empty or over-long id.
pub fn author_id(bytes: Vec<u8>) -> Result<UserId, Status> {
    UserId::new(bytes).map_err(|e| match e {
        crate::Error::InvalidArgument(a) => Status::invalid_argument(format!("author_id: {a}")),
        other => status(other),
    })
}

/// A validated `ConversationAppendRequest` (also each request of
/// `Conversations.AppendStream`). `Debug` shows lengths only.
pub struct ConversationAppendArgs {
    /// The conversation.
    pub conversation: ConversationId,
    /// The author.
    pub author: UserId,
    /// The payload, at most `max_payload` bytes.
    pub payload: Vec<u8>,
    /// The idempotency key, if given (an empty string is none).
    pub client_message_id: Option<String>,
}

impl std::fmt::Debug for ConversationAppendArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationAppendArgs")
            .field("conversation", &self.conversation)
            .field("author", &self.author)
            .field("payload_len", &self.payload.len())
            .field(
                "client_message_id_len",
                &self.client_message_id.as_ref().map(String::len),
            )
            .finish()
    }
}

/// Validates a `ConversationAppendRequest`: payload size, then
/// `client_message_id`, then `conversation_id`, then `author_id`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_append(
    r: ConversationAppendRequest,
    limits: &RequestLimits,
) -> Result<ConversationAppendArgs, Status> {
    let max_payload = limits.max_payload;
    if r.payload.len() > max_payload {
        return Err(Status::invalid_argument(format!(
            "payload is {} bytes, the maximum is {max_payload}",
            r.payload.len()
        )));
    }
    let client_message_id = (!r.client_message_id.is_empty()).then_some(r.client_message_id);
    if let Some(id) = &client_message_id {
        crate::validate_client_message_id(id.as_bytes()).map_err(status)?;
    }
    Ok(ConversationAppendArgs {
        conversation: conversation_id(r.conversation_id)?,
        author: author_id(r.author_id)?,
        payload: r.payload,
        client_message_id,
    })
}

/// A validated `ConversationReadRequest`.
#[derive(Debug)]
pub struct ConversationReadArgs {
    /// The conversation.
    pub conversation: ConversationId,
    /// First seq wanted (inclusive; with `backward`, 0 is the newest).
    pub from_seq: u64,
    /// Most items, 1..=`max_read_limit`.
    pub limit: usize,
    /// Newest first.
    pub backward: bool,
}

/// Validates a `ConversationReadRequest`: `conversation_id`, then `limit`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_read(
    r: ConversationReadRequest,
    limits: &RequestLimits,
) -> Result<ConversationReadArgs, Status> {
    let conversation = conversation_id(r.conversation_id)?;
    let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
    let max = limits.max_read_limit;
    if limit == 0 || limit > max {
        return Err(Status::invalid_argument(format!("limit must be 1..={max}")));
    }
    Ok(ConversationReadArgs {
        conversation,
        from_seq: r.from_seq,
        limit,
        backward: r.backward,
    })
}

/// A validated `ConversationRedactRequest`.
pub struct ConversationRedactArgs {
    /// The conversation.
    pub conversation: ConversationId,
    /// The slot.
    pub seq: u64,
    /// Why (at most 256 bytes).
    pub reason: String,
}

impl std::fmt::Debug for ConversationRedactArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationRedactArgs")
            .field("conversation", &self.conversation)
            .field("seq", &self.seq)
            .field("reason_len", &self.reason.len())
            .finish()
    }
}

/// Validates a `ConversationRedactRequest`: `conversation_id`, `seq` (not
/// 0), then `reason`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_redact(
    r: ConversationRedactRequest,
) -> Result<ConversationRedactArgs, Status> {
    let conversation = conversation_id(r.conversation_id)?;
    if r.seq == 0 {
        return Err(Status::invalid_argument("seq must be at least 1"));
    }
    if r.reason.len() > MAX_REASON_LEN {
        return Err(Status::invalid_argument(format!(
            "reason is {} bytes, the maximum is {MAX_REASON_LEN}",
            r.reason.len()
        )));
    }
    Ok(ConversationRedactArgs {
        conversation,
        seq: r.seq,
        reason: r.reason,
    })
}

/// Validates a `ConversationRequest`.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad `conversation_id`.
pub fn validate_conversation(r: ConversationRequest) -> Result<ConversationId, Status> {
    conversation_id(r.conversation_id)
}

/// Validates a `ConversationsSetRetentionRequest`: `conversation_id`, then
/// the policy (as `SetRetention`'s).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_set_retention(
    r: proto::ConversationsSetRetentionRequest,
) -> Result<(ConversationId, Retention), Status> {
    use proto::conversations_set_retention_request::Policy as C;
    let conversation = conversation_id(r.conversation_id)?;
    let policy = r.policy.map(|p| match p {
        C::StoreDefault(b) => Policy::StoreDefault(b),
        C::Forever(b) => Policy::Forever(b),
        C::AfterMs(ms) => Policy::AfterMs(ms),
    });
    Ok((conversation, retention_policy(policy)?))
}

/// Validates a `ConversationsSetLegalHoldRequest`: `conversation_id`, then
/// `reason`; `until_ms` 0 is none.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_set_legal_hold(
    r: proto::ConversationsSetLegalHoldRequest,
) -> Result<(ConversationId, String, Option<u64>), Status> {
    let conversation = conversation_id(r.conversation_id)?;
    text_field("reason", &r.reason, true)?;
    Ok((
        conversation,
        r.reason,
        (r.until_ms != 0).then_some(r.until_ms),
    ))
}

/// Validates a `ConversationsSetSubjectsRequest`: `conversation_id`, the
/// number of `subject_ids`, then each (as a user id).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_conversation_set_subjects(
    r: proto::ConversationsSetSubjectsRequest,
) -> Result<(ConversationId, Vec<UserId>), Status> {
    let conversation = conversation_id(r.conversation_id)?;
    let max = crate::MAX_SUBJECTS;
    if r.subject_ids.len() > max {
        return Err(Status::invalid_argument(format!(
            "subject_ids: {} subjects, the maximum is {max}",
            r.subject_ids.len()
        )));
    }
    let subjects = r
        .subject_ids
        .into_iter()
        .map(|id| {
            UserId::new(id).map_err(|e| match e {
                crate::Error::InvalidArgument(a) => {
                    Status::invalid_argument(format!("subject_ids: {a}"))
                }
                other => status(other),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((conversation, subjects))
}

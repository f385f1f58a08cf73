//! Request validation: every check the services make on a request before it
//! reaches the store, as plain functions. The services call them, and so does
//! the `grpc_requests` fuzz target (`fuzz/`), which feeds them arbitrary
//! protobuf. Errors are `INVALID_ARGUMENT` statuses that name the field and
//! the limit, never the value.

use tonic::Status;

use super::proto::{self, AppendRequest, AuditRequest, EraseRequest, ReadRequest};
use super::status;
use crate::{EraseOptions, StoreLimits, UserId};

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
#[derive(Debug)]
pub struct AppendArgs {
    /// The user.
    pub user: UserId,
    /// The payload, at most `max_payload` bytes.
    pub payload: Vec<u8>,
    /// The idempotency key, 1..=[`crate::MAX_CLIENT_MESSAGE_ID_LEN`] bytes if present.
    pub client_message_id: Option<String>,
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
}

impl EraseArgs {
    /// The store options of this erasure.
    pub fn options(&self) -> EraseOptions {
        if self.block_new {
            EraseOptions::block_new()
        } else {
            EraseOptions::default()
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
    })
}

/// Validates an Export request: returns the user.
///
/// # Errors
/// `INVALID_ARGUMENT` for a bad user id.
pub fn validate_export(r: crate::server::proto::ExportRequest) -> Result<UserId, Status> {
    user_id(r.user_id)
}

/// Validates the receipt of a `VerifyReceipt` call: its field sizes and
/// purge status (whether its MAC verifies is the store's business).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first bad field.
pub fn validate_receipt(p: &proto::ErasureReceipt) -> Result<crate::ErasureReceipt, Status> {
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
    Ok(crate::ErasureReceipt {
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

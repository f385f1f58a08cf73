//! The erasure ledger (`meta/erasure_request/<id>`): erasure requests with
//! their due date, grace period and state. Handles, times and request ids
//! only: the erasure runs by handle, so no user id is kept.

use serde::{Deserialize, Serialize};

use super::{Restriction, corrupt_encoding, decode_record, encode_record};
use crate::error::Result;

/// Length of an erasure request id: the received time (ms, u64 BE) and 8
/// random bytes, so ids sort by receipt.
pub const REQUEST_ID_LEN: usize = 16;

/// Prefix of the ledger's `meta` keys; the request id follows.
pub const LEDGER_PREFIX: &[u8] = b"erasure_request/";

/// What a finished request's erasure recorded: the fields of its signed
/// receipt (the handle and subject are the request's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerReceipt {
    /// The highest erased key epoch.
    pub epoch: u32,
    /// When the erasure was committed, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// Messages written under the erased epoch.
    pub messages_erased: u64,
    /// The purge status the receipt was issued with.
    pub purged: bool,
    /// The receipt's HMAC-SHA256.
    pub mac: [u8; 32],
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerState {
    /// Received: within its grace period (cancellable), or past it and
    /// about to run.
    Pending,
    /// Past its grace, but a legal hold on the user (or on a subject
    /// conversation it deletes) keeps the erasure from running; it runs
    /// when the hold lifts or ends.
    WaitingForHold {
        /// Since when, ms since the Unix epoch.
        since_ms: u64,
    },
    /// The user was erased (by the ledger, or by a direct erasure); the
    /// record is written in the erasure's own batch.
    Done(LedgerReceipt),
    /// Cancelled within the grace period.
    Cancelled {
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
}

impl LedgerState {
    /// How far along it is: pending, waiting for a hold, closed (done or
    /// cancelled). A request only moves forward.
    pub fn progress(self) -> u8 {
        match self {
            LedgerState::Pending => 0,
            LedgerState::WaitingForHold { .. } => 1,
            LedgerState::Done(_) | LedgerState::Cancelled { .. } => 2,
        }
    }

    /// Whether the request still has to run (pending or waiting for a
    /// hold).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            LedgerState::Pending | LedgerState::WaitingForHold { .. }
        )
    }
}

/// One erasure request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// The user's handle.
    pub handle: [u8; 16],
    /// When the request was received, ms since the Unix epoch.
    pub received_ms: u64,
    /// When the answer is due (Art. 12(3)): received plus the store's due
    /// period (one month by default).
    pub due_ms: u64,
    /// The end of the grace period: the erasure runs at or after it.
    pub grace_until_ms: u64,
    /// Delete the conversations the user is a declared subject of too.
    pub delete_subject_conversations: bool,
    /// The restriction modes the request added (a cancellation lifts
    /// these only, not those in force before).
    pub added_restriction: Restriction,
    /// Where it stands.
    pub state: LedgerState,
}

impl LedgerRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates a ledger record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::Corruption::Encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: LedgerRecord = decode_record(bytes)?;
        if !r.is_valid() {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }

    /// Whether its times are in order: received, grace end, due date.
    pub fn is_valid(&self) -> bool {
        self.received_ms <= self.grace_until_ms && self.grace_until_ms <= self.due_ms
    }
}

/// The `meta` key of request `id`.
pub fn ledger_key(id: &[u8; REQUEST_ID_LEN]) -> Vec<u8> {
    let mut k = Vec::with_capacity(LEDGER_PREFIX.len() + REQUEST_ID_LEN);
    k.extend_from_slice(LEDGER_PREFIX);
    k.extend_from_slice(id);
    k
}

/// The request id of a ledger `meta` key, if it is one.
pub fn ledger_id(key: &[u8]) -> Option<[u8; REQUEST_ID_LEN]> {
    key.strip_prefix(LEDGER_PREFIX)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let r = LedgerRecord {
            handle: [7; 16],
            received_ms: 10,
            due_ms: 1000,
            grace_until_ms: 20,
            delete_subject_conversations: true,
            added_restriction: Restriction {
                block_appends: true,
                block_reads: false,
            },
            state: LedgerState::Done(LedgerReceipt {
                epoch: 2,
                erased_at_ms: 30,
                messages_erased: 5,
                purged: false,
                mac: [9; 32],
            }),
        };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(LedgerRecord::decode(&b).unwrap(), r);
        let mut bad = b.clone();
        bad[3] ^= 1;
        assert!(LedgerRecord::decode(&bad).is_err());
        let mut early = r;
        early.due_ms = 15;
        let mut b = Vec::new();
        early.encode(&mut b);
        assert!(LedgerRecord::decode(&b).is_err());
        let id = [3u8; REQUEST_ID_LEN];
        assert_eq!(ledger_id(&ledger_key(&id)), Some(id));
        assert_eq!(ledger_id(b"erasure_request/short"), None);
        assert_eq!(ledger_id(b"rotation"), None);
    }
}

//! Root-key lifecycle records in `meta`: a rotation in progress
//! (`meta/rotation`) and the retired root keys (`meta/root_keys`).

use serde::{Deserialize, Serialize};

use super::{corrupt_encoding, decode_record, encode_record};
use crate::crypto::WRAPPED_LEN;
use crate::error::Result;

/// Length of a root key's check value.
pub const ROOT_KEY_CHECK_LEN: usize = 16;

/// Which records a rotation is rewrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RotationPhase {
    /// User key records (`keys`), in handle order.
    Users,
    /// Conversation key records (`conv_keys`), in handle order.
    Conversations,
    /// A last pass over both that rewraps anything still under the old
    /// key, then the switch of `meta`.
    Check,
}

/// `meta/rotation`: a root-key rotation in progress. Written when a store
/// is opened with a new root key and its previous one, updated in the
/// batch of every rewrap batch, deleted in the batch that finishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    /// Generation of the root key being retired.
    pub from_gen: u32,
    /// Generation of the new root key: `from_gen + 1`, or a later one
    /// when a backup is rekeyed to the live store's key (`backup rekey`).
    pub to_gen: u32,
    /// When the rotation started, ms since the Unix epoch.
    pub started_ms: u64,
    /// The handle key wrapped under the new root key (60 bytes).
    pub new_handle_key: Vec<u8>,
    /// The retiring root key's check value (so a later open can name it).
    pub from_check: [u8; ROOT_KEY_CHECK_LEN],
    /// The pass being run.
    pub phase: RotationPhase,
    /// The last key of the phase's column family already handled (empty:
    /// the phase has not started).
    pub cursor: Vec<u8>,
    /// Records rewrapped so far.
    pub rewrapped: u64,
}

impl RotationRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates a rotation record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::Corruption::Encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: RotationRecord = decode_record(bytes)?;
        if r.from_gen == 0
            || r.to_gen <= r.from_gen
            || r.new_handle_key.len() != WRAPPED_LEN
            || (r.phase == RotationPhase::Check && !r.cursor.is_empty())
        {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }
}

/// A root key retired by a finished rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredRootKey {
    /// Its generation.
    pub generation: u32,
    /// Its check value: tells an open with this key apart from an open
    /// with an unknown one, without keeping anything it could unwrap.
    pub check: [u8; ROOT_KEY_CHECK_LEN],
    /// When its rotation finished, ms since the Unix epoch.
    pub retired_ms: u64,
    /// Its erasure-receipt key, wrapped under the current root key, so
    /// receipts issued before the rotation still verify.
    pub wrapped_receipt_key: Vec<u8>,
}

/// `meta/root_keys`: every retired root key, oldest first. Its receipt
/// keys are wrapped under the generation that wraps `meta/handle_key`, and
/// rewrapped in the batch that finishes each rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKeyHistory {
    /// The retired keys, by ascending generation.
    pub retired: Vec<RetiredRootKey>,
}

impl RootKeyHistory {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates the history.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::Corruption::Encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: RootKeyHistory = decode_record(bytes)?;
        if r.retired
            .iter()
            .any(|k| k.wrapped_receipt_key.len() != WRAPPED_LEN)
            || !r.retired.is_sorted_by(|a, b| a.generation < b.generation)
        {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }

    /// AAD of a retired key's wrapped receipt key.
    pub(crate) fn receipt_key_aad(generation: u32) -> Vec<u8> {
        let mut a = Vec::with_capacity(RECEIPT_KEY_AAD.len() + 4);
        a.extend_from_slice(RECEIPT_KEY_AAD);
        a.extend_from_slice(&generation.to_be_bytes());
        a
    }
}

const RECEIPT_KEY_AAD: &[u8] = b"shredstore/v4/retired-receipt-key";

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RotationRecord {
        RotationRecord {
            from_gen: 1,
            to_gen: 2,
            started_ms: 5,
            new_handle_key: vec![3; WRAPPED_LEN],
            from_check: [9; ROOT_KEY_CHECK_LEN],
            phase: RotationPhase::Users,
            cursor: vec![1; 16],
            rewrapped: 7,
        }
    }

    #[test]
    fn rotation_records_round_trip_and_reject_inconsistent_ones() {
        let r = sample();
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(RotationRecord::decode(&b).unwrap(), r);
        for bad in [
            RotationRecord {
                to_gen: 1,
                ..sample()
            },
            RotationRecord {
                from_gen: 0,
                to_gen: 1,
                ..sample()
            },
            RotationRecord {
                new_handle_key: vec![1; 59],
                ..sample()
            },
            RotationRecord {
                phase: RotationPhase::Check,
                ..sample()
            },
        ] {
            let mut b = Vec::new();
            bad.encode(&mut b);
            assert!(RotationRecord::decode(&b).is_err(), "{bad:?}");
        }
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(RotationRecord::decode(&b).is_err());
    }

    #[test]
    fn histories_round_trip_and_must_be_sorted() {
        let key = |generation| RetiredRootKey {
            generation,
            check: [generation as u8; ROOT_KEY_CHECK_LEN],
            retired_ms: 1,
            wrapped_receipt_key: vec![0; WRAPPED_LEN],
        };
        let h = RootKeyHistory {
            retired: vec![key(1), key(2)],
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(RootKeyHistory::decode(&b).unwrap(), h);
        let unsorted = RootKeyHistory {
            retired: vec![key(2), key(1)],
        };
        let mut b = Vec::new();
        unsorted.encode(&mut b);
        assert!(RootKeyHistory::decode(&b).is_err());
    }
}

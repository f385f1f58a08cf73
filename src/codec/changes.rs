//! The change feed's records: what an erasure, a conversation's deletion,
//! a redaction or retention took away, by handle and seq (never an id), so
//! the copies outside the store (search indexes, caches, push services) can
//! be dropped too. Keyed by the change's number (u64 BE), assigned in
//! commit order.

use serde::{Deserialize, Serialize};

use super::{corrupt_encoding, decode_record, encode_record};
use crate::error::Result;
use crate::types::Handle;

/// Length of a change key: the change number, u64 BE.
pub const CHANGE_KEY_LEN: usize = 8;

/// The key of change number `n`.
pub fn change_key(n: u64) -> [u8; CHANGE_KEY_LEN] {
    n.to_be_bytes()
}

/// The change number of a change key.
///
/// # Errors
/// [`Corruption::Key`](crate::error::Corruption::Key) for a key of another
/// length.
pub fn parse_change_key(key: &[u8]) -> Result<u64> {
    let k: [u8; CHANGE_KEY_LEN] = key
        .try_into()
        .map_err(|_| crate::error::Error::Corrupt(crate::error::Corruption::Key))?;
    Ok(u64::from_be_bytes(k))
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    /// A user was erased: every message of their log with a seq below
    /// `next_seq`, and everything they wrote in conversations, is gone
    /// (their conversation slots read as tombstones).
    UserErased {
        /// The user's handle.
        user: [u8; Handle::LEN],
        /// The highest erased key epoch.
        epoch: u32,
        /// The user's next seq at the erasure.
        next_seq: u64,
    },
    /// A conversation was deleted: every slot below `next_seq` is gone.
    ConversationDeleted {
        /// The conversation's handle.
        conversation: [u8; Handle::LEN],
        /// The deleted key epoch.
        epoch: u32,
        /// The conversation's next seq at the deletion.
        next_seq: u64,
    },
    /// One message of a user's log was redacted.
    MessageRedacted {
        /// The user's handle.
        user: [u8; Handle::LEN],
        /// The message's seq.
        seq: u64,
    },
    /// One conversation message was redacted (it reads as a tombstone).
    ConversationMessageRedacted {
        /// The conversation's handle.
        conversation: [u8; Handle::LEN],
        /// The slot's seq.
        seq: u64,
    },
    /// Retention expired every message of a user's log below `before_seq`.
    MessagesExpired {
        /// The user's handle.
        user: [u8; Handle::LEN],
        /// Every seq below it is gone.
        before_seq: u64,
    },
    /// Retention expired every slot of a conversation below `before_seq`.
    ConversationMessagesExpired {
        /// The conversation's handle.
        conversation: [u8; Handle::LEN],
        /// Every seq below it is gone.
        before_seq: u64,
    },
}

/// One change as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// When it was committed, ms since the Unix epoch.
    pub time_ms: u64,
    /// What changed.
    pub change: Change,
}

impl ChangeRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates a change record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::error::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::error::Corruption::Encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: ChangeRecord = decode_record(bytes)?;
        let valid = match r.change {
            Change::UserErased { .. } | Change::ConversationDeleted { .. } => true,
            Change::MessageRedacted { seq, .. }
            | Change::ConversationMessageRedacted { seq, .. } => seq > 0,
            Change::MessagesExpired { before_seq, .. }
            | Change::ConversationMessagesExpired { before_seq, .. } => before_seq > 0,
        };
        if !valid {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let changes = [
            Change::UserErased {
                user: [1; 16],
                epoch: 2,
                next_seq: 10,
            },
            Change::ConversationDeleted {
                conversation: [2; 16],
                epoch: 1,
                next_seq: 3,
            },
            Change::MessageRedacted {
                user: [3; 16],
                seq: 4,
            },
            Change::ConversationMessageRedacted {
                conversation: [4; 16],
                seq: 5,
            },
            Change::MessagesExpired {
                user: [5; 16],
                before_seq: 6,
            },
            Change::ConversationMessagesExpired {
                conversation: [6; 16],
                before_seq: 7,
            },
        ];
        for change in changes {
            let r = ChangeRecord {
                time_ms: 1_700_000_000_000,
                change,
            };
            let mut b = Vec::new();
            r.encode(&mut b);
            assert_eq!(ChangeRecord::decode(&b).unwrap(), r);
            for i in 0..b.len() {
                let mut d = b.clone();
                d[i] ^= 0x40;
                assert!(ChangeRecord::decode(&d).is_err(), "flip at {i} accepted");
            }
            assert!(ChangeRecord::decode(&b[..b.len() - 1]).is_err());
        }
        let bad = ChangeRecord {
            time_ms: 1,
            change: Change::MessageRedacted {
                user: [0; 16],
                seq: 0,
            },
        };
        let mut b = Vec::new();
        bad.encode(&mut b);
        assert!(ChangeRecord::decode(&b).is_err());
        assert_eq!(parse_change_key(&change_key(42)).unwrap(), 42);
        assert!(parse_change_key(&[0; 7]).is_err());
    }
}

//! What a backup carries besides the store's files: the erasure journal
//! (what the store has erased, by handle, epoch and time, never an id) and
//! the backup's manifest. Both are postcard records behind an 8-byte magic,
//! so a file given as a journal or a backup is recognised before it is
//! decoded (`docs/format.md`, "Backups").

use serde::{Deserialize, Serialize};

use super::ledger::{LedgerRecord, REQUEST_ID_LEN};
use super::rootkeys::ROOT_KEY_CHECK_LEN;
use super::{corrupt_encoding, decode_record, encode_record};
use crate::error::Result;
use crate::types::Handle;

/// The first bytes of an erasure-journal file.
pub const JOURNAL_MAGIC: &[u8; 8] = b"SHREDJNL";

/// The first bytes of a backup manifest (the first entry of a backup file).
pub const MANIFEST_MAGIC: &[u8; 8] = b"SHREDBAK";

/// Length of a store id.
pub const STORE_ID_LEN: usize = 16;

/// An erased user or a deleted conversation, as the journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalErasure {
    /// The user's or conversation's handle.
    pub handle: [u8; Handle::LEN],
    /// The highest erased key epoch (0: nothing was ever stored, the
    /// marker only keeps seqs and `block_new`).
    pub epoch: u32,
    /// When it was (last) erased, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// Its next seq at the erasure.
    pub next_seq: u64,
    /// New data for the user is refused (never set for a conversation).
    pub block_new: bool,
}

/// A redacted message (of a user's log or of a conversation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JournalRedaction {
    /// The user's or conversation's handle.
    pub handle: [u8; Handle::LEN],
    /// The message's seq (≥ 1).
    pub seq: u64,
    /// When it was redacted, ms since the Unix epoch.
    pub redacted_at_ms: u64,
}

/// An erasure request of the ledger (its id and record: a handle, times
/// and flags, never an id), so that a restore knows the requests cancelled,
/// done or received since the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRequest {
    /// The request id.
    pub id: [u8; REQUEST_ID_LEN],
    /// The request as the store holds it.
    pub record: LedgerRecord,
}

/// The erasure journal of a store at one moment: everything an older copy
/// of the store (a backup) must lose before it may serve again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The store it belongs to (a one-way value of its salt).
    pub store_id: [u8; STORE_ID_LEN],
    /// When it was read, ms since the Unix epoch: it holds every erasure
    /// committed before then.
    pub taken_ms: u64,
    /// The store's root-key generation then.
    pub root_key_generation: u32,
    /// The check value of the store's root key then (one-way).
    pub root_key_check: [u8; ROOT_KEY_CHECK_LEN],
    /// Erased users, by ascending handle.
    pub users: Vec<JournalErasure>,
    /// Deleted conversations, by ascending handle.
    pub conversations: Vec<JournalErasure>,
    /// Redacted messages of users' logs, by handle and seq.
    pub redactions: Vec<JournalRedaction>,
    /// Redacted conversation messages, by handle and seq.
    pub conversation_redactions: Vec<JournalRedaction>,
    /// The erasure ledger's requests, by ascending id.
    pub requests: Vec<JournalRequest>,
}

impl Journal {
    /// The journal file: the magic, then the record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(JOURNAL_MAGIC);
        encode_record(self, out);
    }

    /// Decodes and validates a journal file.
    ///
    /// # Errors
    /// [`Corruption::Encoding`](crate::Corruption::Encoding) for another
    /// kind of file or an invalid journal, [`Corruption::Checksum`](crate::Corruption::Checksum)
    /// for a damaged one.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body = bytes
            .strip_prefix(JOURNAL_MAGIC)
            .ok_or_else(corrupt_encoding)?;
        let j: Journal = decode_record(body)?;
        let sorted = |v: &[JournalErasure]| v.is_sorted_by(|a, b| a.handle < b.handle);
        let redactions_ok = |v: &[JournalRedaction]| {
            v.is_sorted_by(|a, b| (a.handle, a.seq) < (b.handle, b.seq))
                && v.iter().all(|r| r.seq >= 1)
        };
        if !sorted(&j.users)
            || !sorted(&j.conversations)
            || j.conversations.iter().any(|c| c.block_new)
            || !redactions_ok(&j.redactions)
            || !redactions_ok(&j.conversation_redactions)
            || !j.requests.is_sorted_by(|a, b| a.id < b.id)
            || !j.requests.iter().all(|r| r.record.is_valid())
            || j.root_key_generation == 0
        {
            return Err(corrupt_encoding());
        }
        Ok(j)
    }

    /// Whether `bytes` start like a journal file.
    pub fn is_journal(bytes: &[u8]) -> bool {
        bytes.starts_with(JOURNAL_MAGIC)
    }

    /// This journal and `other` (of the same store) as one: every erasure
    /// of either at its highest epoch, every redaction of either, and the
    /// newer one's time and root key.
    #[must_use]
    pub fn merged(mut self, other: &Journal) -> Journal {
        fn union(a: &mut Vec<JournalErasure>, b: &[JournalErasure]) {
            a.extend_from_slice(b);
            a.sort_by(|x, y| x.handle.cmp(&y.handle).then(y.epoch.cmp(&x.epoch)));
            a.dedup_by(|later, first| {
                if later.handle != first.handle {
                    return false;
                }
                first.next_seq = first.next_seq.max(later.next_seq);
                first.erased_at_ms = first.erased_at_ms.max(later.erased_at_ms);
                first.block_new |= later.block_new;
                true
            });
        }
        fn union_redactions(a: &mut Vec<JournalRedaction>, b: &[JournalRedaction]) {
            a.extend_from_slice(b);
            a.sort();
            a.dedup_by(|later, first| later.handle == first.handle && later.seq == first.seq);
        }
        union(&mut self.users, &other.users);
        union(&mut self.conversations, &other.conversations);
        union_redactions(&mut self.redactions, &other.redactions);
        union_redactions(
            &mut self.conversation_redactions,
            &other.conversation_redactions,
        );
        // A request in both: the one further along (the newer journal's on
        // a tie).
        let other_newer = other.taken_ms > self.taken_ms;
        for r in &other.requests {
            match self.requests.binary_search_by(|x| x.id.cmp(&r.id)) {
                Ok(i) => {
                    let mine = self.requests[i];
                    if r.record.state.progress() > mine.record.state.progress()
                        || (r.record.state.progress() == mine.record.state.progress()
                            && other_newer)
                    {
                        self.requests[i] = *r;
                    }
                }
                Err(i) => self.requests.insert(i, *r),
            }
        }
        if other.taken_ms > self.taken_ms {
            self.taken_ms = other.taken_ms;
            self.root_key_generation = other.root_key_generation;
            self.root_key_check = other.root_key_check;
        }
        self
    }
}

/// One file of a backup's store directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Its name in the store directory (no path separators).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// The first entry of a backup file: what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// The store it is a copy of.
    pub store_id: [u8; STORE_ID_LEN],
    /// The store's on-disk format version.
    pub format_version: u32,
    /// When the copy was taken, ms since the Unix epoch (kept by a rekey).
    pub created_ms: u64,
    /// The time of the newest journal applied to it: its own at backup
    /// time, or the one a rekey applied.
    pub journal_ms: u64,
    /// When it was rekeyed, if it was.
    pub rekeyed_ms: Option<u64>,
    /// The root-key generation that wraps its key records.
    pub root_key_generation: u32,
    /// That root key's check value (one-way).
    pub root_key_check: [u8; ROOT_KEY_CHECK_LEN],
    /// Users with a key record.
    pub users: u64,
    /// Conversations with a key record.
    pub conversations: u64,
    /// Erasures not yet physical when it was taken (0: none of the
    /// erased users' key records survive in its files).
    pub pending_erasures: u64,
    /// The files, in the order they follow.
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    /// The magic, then the record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MANIFEST_MAGIC);
        encode_record(self, out);
    }

    /// Decodes and validates a manifest.
    ///
    /// # Errors
    /// [`Corruption::Encoding`](crate::Corruption::Encoding) or
    /// [`Corruption::Checksum`](crate::Corruption::Checksum).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body = bytes
            .strip_prefix(MANIFEST_MAGIC)
            .ok_or_else(corrupt_encoding)?;
        let m: BackupManifest = decode_record(body)?;
        let safe_name = |n: &str| {
            !n.is_empty()
                && n != "."
                && n != ".."
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
        };
        if m.root_key_generation == 0 || !m.files.iter().all(|f| safe_name(&f.name)) {
            return Err(corrupt_encoding());
        }
        Ok(m)
    }
}

/// The last entry of a backup file: the CRC32 of each store file, in the
/// manifest's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupChecksums {
    /// One per file of the manifest.
    pub files: Vec<u32>,
}

impl BackupChecksums {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes the checksums.
    ///
    /// # Errors
    /// [`Corruption::Encoding`](crate::Corruption::Encoding) or
    /// [`Corruption::Checksum`](crate::Corruption::Checksum).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_record(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LedgerState;

    fn erasure(h: u8, epoch: u32, at: u64) -> JournalErasure {
        JournalErasure {
            handle: [h; 16],
            epoch,
            erased_at_ms: at,
            next_seq: u64::from(epoch) * 10,
            block_new: false,
        }
    }

    fn journal(taken_ms: u64, users: Vec<JournalErasure>) -> Journal {
        Journal {
            store_id: [7; 16],
            taken_ms,
            root_key_generation: 1,
            root_key_check: [1; 16],
            users,
            conversations: vec![erasure(9, 1, 5)],
            redactions: vec![JournalRedaction {
                handle: [3; 16],
                seq: 4,
                redacted_at_ms: 6,
            }],
            conversation_redactions: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn request(id: u8, state: LedgerState) -> JournalRequest {
        JournalRequest {
            id: [id; REQUEST_ID_LEN],
            record: LedgerRecord {
                handle: [id; 16],
                received_ms: 10,
                due_ms: 100,
                grace_until_ms: 20,
                delete_subject_conversations: false,
                added_restriction: crate::codec::Restriction::default(),
                state,
            },
        }
    }

    #[test]
    fn merge_keeps_each_request_at_its_furthest_state() {
        let mut old = journal(100, Vec::new());
        old.requests = vec![
            request(1, LedgerState::Cancelled { at_ms: 15 }),
            request(2, LedgerState::Pending),
        ];
        let mut new = journal(200, Vec::new());
        new.requests = vec![
            request(1, LedgerState::Pending),
            request(2, LedgerState::WaitingForHold { since_ms: 30 }),
            request(3, LedgerState::Pending),
        ];
        let m = old.clone().merged(&new);
        assert_eq!(
            m.requests,
            vec![
                request(1, LedgerState::Cancelled { at_ms: 15 }),
                request(2, LedgerState::WaitingForHold { since_ms: 30 }),
                request(3, LedgerState::Pending),
            ]
        );
        assert_eq!(new.merged(&old).requests, m.requests);
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        assert_eq!(Journal::decode(&bytes).unwrap(), m);
        let mut bad = m.clone();
        bad.requests.swap(0, 1);
        let mut bytes = Vec::new();
        bad.encode(&mut bytes);
        assert!(Journal::decode(&bytes).is_err(), "unsorted ids");
        let mut bad = m;
        bad.requests[0].record.grace_until_ms = 1_000;
        let mut bytes = Vec::new();
        bad.encode(&mut bytes);
        assert!(Journal::decode(&bytes).is_err(), "grace past the due date");
    }

    #[test]
    fn journal_round_trips_and_rejects_damage() {
        let j = journal(100, vec![erasure(1, 1, 10), erasure(2, 3, 20)]);
        let mut bytes = Vec::new();
        j.encode(&mut bytes);
        assert!(Journal::is_journal(&bytes));
        assert_eq!(Journal::decode(&bytes).unwrap(), j);
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(Journal::decode(&flipped).is_err());
        assert!(Journal::decode(&bytes[8..]).is_err(), "no magic");
        // Unsorted handles are not a journal this build writes.
        let mut bad = Vec::new();
        journal(1, vec![erasure(2, 1, 1), erasure(1, 1, 1)]).encode(&mut bad);
        assert!(Journal::decode(&bad).is_err());
    }

    #[test]
    fn merge_keeps_the_highest_epoch_and_the_newer_time() {
        let old = journal(100, vec![erasure(1, 1, 10), erasure(2, 1, 20)]);
        let mut new = journal(200, vec![erasure(2, 2, 30), erasure(4, 1, 40)]);
        new.root_key_generation = 2;
        let m = old.clone().merged(&new);
        assert_eq!(m.taken_ms, 200);
        assert_eq!(m.root_key_generation, 2);
        let got: Vec<(u8, u32, u64)> = m
            .users
            .iter()
            .map(|e| (e.handle[0], e.epoch, e.next_seq))
            .collect();
        assert_eq!(got, vec![(1, 1, 10), (2, 2, 20), (4, 1, 10)]);
        assert_eq!(m.redactions.len(), 1);
        assert_eq!(m.conversations.len(), 1);
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        assert_eq!(Journal::decode(&bytes).unwrap(), m);
        // Merging is symmetric in what it keeps.
        assert_eq!(new.merged(&old).users, m.users);
    }

    #[test]
    fn manifest_refuses_file_names_that_leave_the_directory() {
        let mut m = BackupManifest {
            store_id: [1; 16],
            format_version: 4,
            created_ms: 1,
            journal_ms: 1,
            rekeyed_ms: None,
            root_key_generation: 1,
            root_key_check: [2; 16],
            users: 3,
            conversations: 0,
            pending_erasures: 0,
            files: vec![BackupFile {
                name: "000012.sst".into(),
                len: 10,
            }],
        };
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        assert_eq!(BackupManifest::decode(&bytes).unwrap(), m);
        for bad in ["../etc", "a/b", "..", ""] {
            m.files[0].name = bad.into();
            let mut bytes = Vec::new();
            m.encode(&mut bytes);
            assert!(BackupManifest::decode(&bytes).is_err(), "{bad:?}");
        }
    }
}

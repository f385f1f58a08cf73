//! Records encoded with postcard, `[version u8][postcard body][crc32 BE]`:
//! key records and erasure markers.

use serde::{Deserialize, Serialize};

use super::policy::UserPolicy;
use super::{
    corrupt_encoding, decode_record, decode_wrapped_record, encode_record, encode_wrapped_record,
};
use crate::crypto::WRAPPED_LEN;
use crate::error::Result;
use crate::types::Handle;

/// Lifecycle state of a user's key. Records written before rights
/// management existed hold `Active`; variants are only ever appended, so
/// every older record still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyState {
    /// Normal operation, no rights policy.
    Active,
    /// Normal operation under a rights policy (restriction, retention
    /// override, legal hold, pending redactions).
    Governed(UserPolicy),
}

impl KeyState {
    /// The state holding `policy` (`Active` for the default policy, so
    /// records of users without one stay as small as before).
    pub fn of(policy: UserPolicy) -> Self {
        if policy == UserPolicy::default() {
            KeyState::Active
        } else {
            KeyState::Governed(policy)
        }
    }

    /// The policy (the default one for `Active`).
    pub fn policy(&self) -> UserPolicy {
        match self {
            KeyState::Active => UserPolicy::default(),
            KeyState::Governed(p) => p.clone(),
        }
    }
}

/// A user's key record, stored in the `keys` column family under its handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key epoch; bumped each time the user's secret is replaced.
    pub epoch: u32,
    /// The user secret wrapped under the root key: nonce, ciphertext, tag.
    pub wrapped_secret: Vec<u8>,
    /// Creation time of this epoch, ms since the Unix epoch.
    pub created_ms: u64,
    /// First seq assigned under this epoch.
    pub first_seq: u64,
    /// Key state.
    pub state: KeyState,
    /// Generation of the root key that wraps `wrapped_secret` (1 for a
    /// store never rotated). Not part of the postcard body: version-2
    /// records carry it after the body (see `docs/format.md`).
    #[serde(skip)]
    pub root_gen: u32,
}

impl KeyRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_wrapped_record(self, self.root_gen, out);
    }

    /// Decodes and validates a key record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`] or [`Corruption::Encoding`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, root_gen): (KeyRecord, u32) = decode_wrapped_record(bytes)?;
        r.root_gen = root_gen;
        if r.wrapped_secret.len() != WRAPPED_LEN {
            return Err(corrupt_encoding());
        }
        if let KeyState::Governed(p) = &r.state
            && (!p.is_valid() || *p == UserPolicy::default())
        {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }

    /// AAD binding a wrapped user secret to its handle and epoch.
    pub(crate) fn wrap_aad(handle: &Handle, epoch: u32) -> Vec<u8> {
        let mut a = Vec::with_capacity(WRAP_AAD_PREFIX.len() + Handle::LEN + 4);
        a.extend_from_slice(WRAP_AAD_PREFIX);
        a.extend_from_slice(handle.as_bytes());
        a.extend_from_slice(&epoch.to_be_bytes());
        a
    }
}

const WRAP_AAD_PREFIX: &[u8] = b"shredstore/v1/user-secret";

/// AAD of the wrapped handle key in `meta`.
pub(crate) const HANDLE_KEY_AAD: &[u8] = b"shredstore/v1/handle-key";

/// The erasure marker of a user, stored in the `erased` column family under
/// its handle. It drives the compaction filter and keeps seqs from being reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseMarker {
    /// Highest epoch erased; messages with epoch <= this are garbage.
    pub epoch: u32,
    /// When the last erasure happened, ms since the Unix epoch.
    pub erased_at_ms: u64,
    /// The next seq the user may be given (seqs are never reused).
    pub next_seq: u64,
    /// Refuse new appends for this user.
    pub block_new: bool,
    /// `purge()` has made this erasure physical.
    pub purged: bool,
    /// The engine's log position (RocksDB sequence number) just before the
    /// erasure: every earlier write of the user is at or below it, so a WAL
    /// file whose first write is at or below it may still hold some (0:
    /// nothing was stored).
    pub log_position: u64,
}

impl EraseMarker {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates a marker.
    ///
    /// # Errors
    /// [`Corruption::Checksum`] or [`Corruption::Encoding`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode_record(bytes)
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::push_crc;
    use crate::codec::*;
    use crate::crypto::WRAPPED_LEN;
    use crate::error::{Corruption, Error};
    use crate::types::Handle;

    #[test]
    fn governed_key_records_round_trip_and_active_ones_are_unchanged() {
        let mut r = sample_record();
        let mut active = Vec::new();
        r.encode(&mut active);
        r.state = KeyState::of(UserPolicy {
            restriction: Restriction {
                block_appends: true,
                block_reads: false,
            },
            retention: Retention::After { ms: 5000 },
            expired_before_ms: 7,
            hold: Some(LegalHold {
                reason: "case 12".into(),
                since_ms: 9,
                until_ms: Some(99),
            }),
            purge_pending: true,
        });
        let mut governed = Vec::new();
        r.encode(&mut governed);
        assert_eq!(KeyRecord::decode(&governed).unwrap(), r);
        // An `Active` record is the pre-policy encoding: only the variant index.
        assert!(governed.len() > active.len());
        assert_eq!(KeyState::of(UserPolicy::default()), KeyState::Active);
        // A Governed record holding the default policy is not canonical.
        let mut r2 = sample_record();
        r2.state = KeyState::Governed(UserPolicy::default());
        let mut bad = Vec::new();
        r2.encode(&mut bad);
        assert!(KeyRecord::decode(&bad).is_err());
    }

    fn sample_record() -> KeyRecord {
        KeyRecord {
            epoch: 3,
            wrapped_secret: vec![7; WRAPPED_LEN],
            created_ms: 1_700_000_000_000,
            first_seq: 42,
            state: KeyState::Active,
            root_gen: 1,
        }
    }

    #[test]
    fn key_record_round_trip_and_rejections() {
        let r = sample_record();
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert_eq!(KeyRecord::decode(&buf).unwrap(), r);

        let mut flipped = buf.clone();
        flipped[3] ^= 1;
        assert!(matches!(
            KeyRecord::decode(&flipped),
            Err(Error::Corrupt(Corruption::Checksum))
        ));
        // Trailing bytes inside a valid checksum are rejected.
        let mut trailing = buf[..buf.len() - 4].to_vec();
        trailing.push(0);
        push_crc(&mut trailing, 0);
        assert!(matches!(
            KeyRecord::decode(&trailing),
            Err(Error::Corrupt(Corruption::Encoding))
        ));
        assert!(KeyRecord::decode(&[]).is_err());
    }

    #[test]
    fn non_canonical_records_are_rejected() {
        let m = EraseMarker {
            epoch: 0,
            erased_at_ms: 5,
            next_seq: 99,
            block_new: true,
            purged: false,
            log_position: 77,
        };
        let mut canonical = Vec::new();
        m.encode(&mut canonical);
        assert_eq!(EraseMarker::decode(&canonical).unwrap(), m);
        // The same marker with epoch 0 as the overlong varint `80 00`.
        let mut overlong = vec![RECORD_VERSION, 0x80, 0x00];
        overlong.extend_from_slice(&canonical[2..canonical.len() - 4]);
        push_crc(&mut overlong, 0);
        assert!(matches!(
            EraseMarker::decode(&overlong),
            Err(Error::Corrupt(Corruption::Encoding))
        ));
    }

    #[test]
    fn marker_round_trip() {
        let m = EraseMarker {
            epoch: 2,
            erased_at_ms: 5,
            next_seq: 99,
            block_new: true,
            purged: false,
            log_position: 77,
        };
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(EraseMarker::decode(&buf).unwrap(), m);
    }

    #[test]
    fn envelope_round_trip_and_crc() {
        let mut out = Vec::new();
        Envelope::encode_with(
            &mut out,
            EnvelopeKind::Message,
            9,
            1234,
            &[1; 12],
            b"hello",
            |buf| {
                buf.iter_mut().for_each(|b| *b ^= 0x55);
                Ok([2; 16])
            },
        )
        .unwrap();
        let e = Envelope::decode(&out).unwrap();
        assert_eq!((e.epoch, e.timestamp_ms, e.nonce), (9, 1234, [1; 12]));
        assert_eq!(e.sealed.len(), 5 + 16);
        let mut again = Vec::new();
        e.encode(&mut again);
        assert_eq!(again, out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x80;
            assert!(Envelope::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn upper_bound_carries() {
        let h = Handle([0xff; 16]);
        assert_eq!(handle_upper_bound(&h), None);
        let mut b = [0u8; 16];
        b[15] = 0xff;
        let mut want = [0u8; 16];
        want[14] = 1;
        assert_eq!(handle_upper_bound(&Handle(b)), Some(want));
    }
}

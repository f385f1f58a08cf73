//! Byte layouts of everything shredstore stores: storage keys, the message
//! envelope, key records and erasure markers. `docs/format.md` documents each
//! byte; change both together.
//!
//! Values use `encode(&self, out)` / `decode(bytes)`; decoders reject trailing
//! bytes, unknown versions, checksum mismatches and non-canonical encodings,
//! so whatever decodes re-encodes to the same bytes (the `fuzz/` targets
//! check it).

use serde::{Deserialize, Serialize};

use crate::crypto::{NONCE_LEN, TAG_LEN, WRAPPED_LEN};
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Version byte at the start of every envelope and record.
pub const RECORD_VERSION: u8 = 1;

/// A CRC32 (IEEE, `crc32fast`) over a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc32(pub u32);

impl Crc32 {
    /// Computes the checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Crc32(crc32fast::hash(bytes))
    }

    /// Checks `bytes` against the checksum.
    ///
    /// # Errors
    /// [`Corruption::Checksum`] on mismatch.
    pub fn check(self, bytes: &[u8]) -> Result<()> {
        if Self::of(bytes) == self {
            Ok(())
        } else {
            Err(Error::Corrupt(Corruption::Checksum))
        }
    }
}

fn corrupt_encoding() -> Error {
    Error::Corrupt(Corruption::Encoding)
}

/// Splits `[body][crc32 BE]` and verifies the checksum.
fn split_checked(bytes: &[u8]) -> Result<&[u8]> {
    let split = bytes.len().checked_sub(4).ok_or_else(corrupt_encoding)?;
    let (body, crc) = bytes.split_at(split);
    let crc: [u8; 4] = crc.try_into().map_err(|_| corrupt_encoding())?;
    Crc32(u32::from_be_bytes(crc)).check(body)?;
    Ok(body)
}

fn push_crc(out: &mut Vec<u8>, start: usize) {
    let crc = Crc32::of(&out[start..]);
    out.extend_from_slice(&crc.0.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Storage keys

/// Key of a message: `handle (16) || seq (u64 BE)`.
pub fn message_key(handle: &Handle, seq: u64) -> [u8; MESSAGE_KEY_LEN] {
    let mut k = [0u8; MESSAGE_KEY_LEN];
    k[..Handle::LEN].copy_from_slice(handle.as_bytes());
    k[Handle::LEN..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Length of a message key.
pub const MESSAGE_KEY_LEN: usize = Handle::LEN + 8;

/// Splits a message key into handle and seq.
///
/// # Errors
/// [`Corruption::Key`] if the key has the wrong length.
pub fn parse_message_key(key: &[u8]) -> Result<(Handle, u64)> {
    if key.len() != MESSAGE_KEY_LEN {
        return Err(Error::Corrupt(Corruption::Key));
    }
    let (h, s) = key.split_at(Handle::LEN);
    let h: [u8; Handle::LEN] = h.try_into().map_err(|_| Error::Corrupt(Corruption::Key))?;
    let s: [u8; 8] = s.try_into().map_err(|_| Error::Corrupt(Corruption::Key))?;
    Ok((Handle(h), u64::from_be_bytes(s)))
}

/// The smallest key greater than every message key of `handle` (exclusive
/// upper bound of its range). `None` for the all-`0xff` handle, whose range
/// extends to the end of the keyspace.
pub fn handle_upper_bound(handle: &Handle) -> Option<[u8; Handle::LEN]> {
    let mut b = *handle.as_bytes();
    for i in (0..b.len()).rev() {
        if b[i] == 0xff {
            b[i] = 0;
        } else {
            b[i] += 1;
            return Some(b);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Envelope

/// Fixed header length of an envelope: version, epoch, timestamp, nonce.
pub const ENVELOPE_HEADER_LEN: usize = 1 + 4 + 8 + NONCE_LEN;
/// Shortest valid envelope: header, an empty payload's tag, CRC.
pub const ENVELOPE_MIN_LEN: usize = ENVELOPE_HEADER_LEN + TAG_LEN + 4;

/// What an envelope holds; its first byte. Each kind is also the first
/// byte of its AAD, so one kind never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EnvelopeKind {
    /// A message (format 1).
    Message = 1,
    /// A redaction marker in place of a message: the sealed body is a
    /// [`RedactionBody`].
    Redaction = 2,
    /// A consent record in the `consent` column family: the sealed body is a
    /// [`Consent`].
    Consent = 3,
}

impl EnvelopeKind {
    /// The kind of a first byte, if known.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(EnvelopeKind::Message),
            2 => Some(EnvelopeKind::Redaction),
            3 => Some(EnvelopeKind::Consent),
            _ => None,
        }
    }
}

/// A decoded (still encrypted) envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What it holds.
    pub kind: EnvelopeKind,
    /// Key epoch the message was sealed under.
    pub epoch: u32,
    /// Append time, milliseconds since the Unix epoch (plaintext).
    pub timestamp_ms: u64,
    /// The random 96-bit nonce.
    pub nonce: [u8; NONCE_LEN],
    /// AES-256-GCM-SIV ciphertext followed by the 16-byte tag.
    pub sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Decodes an envelope, verifying the version and CRC. The ciphertext is
    /// not authenticated here; see [`Envelope::aad`].
    ///
    /// # Errors
    /// [`Corruption::Checksum`] or [`Corruption::Encoding`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < ENVELOPE_MIN_LEN {
            return Err(corrupt_encoding());
        }
        let body = split_checked(bytes)?;
        let h = EnvelopeHeader::parse(body)?;
        Ok(Envelope {
            kind: h.kind,
            epoch: h.epoch,
            timestamp_ms: h.timestamp_ms,
            nonce: h.nonce,
            sealed: &body[ENVELOPE_HEADER_LEN..],
        })
    }

    /// Appends the encoding of an envelope whose payload is sealed by `seal`.
    /// `seal` gets the plaintext buffer and returns the tag.
    pub(crate) fn encode_with(
        out: &mut Vec<u8>,
        kind: EnvelopeKind,
        epoch: u32,
        timestamp_ms: u64,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
        seal: impl FnOnce(&mut [u8]) -> Result<[u8; TAG_LEN]>,
    ) -> Result<()> {
        let start = out.len();
        out.reserve(ENVELOPE_MIN_LEN + plaintext.len());
        out.push(kind as u8);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&timestamp_ms.to_be_bytes());
        out.extend_from_slice(nonce);
        let ct_start = out.len();
        out.extend_from_slice(plaintext);
        let tag = seal(&mut out[ct_start..])?;
        out.extend_from_slice(&tag);
        push_crc(out, start);
        Ok(())
    }

    /// Re-encodes the envelope (used by the fuzz targets' round-trip check).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind as u8);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.sealed);
        push_crc(out, start);
    }

    /// Additional authenticated data of a message:
    /// `kind (1) || handle || seq_be64 || epoch_be32 || timestamp_be64`.
    pub fn aad(handle: &Handle, seq: u64, epoch: u32, timestamp_ms: u64) -> [u8; AAD_LEN] {
        Self::aad_of(EnvelopeKind::Message, handle, seq, epoch, timestamp_ms)
    }

    /// AAD of an envelope of any kind: `kind || handle || seq_be64 ||
    /// epoch_be32 || timestamp_be64` (for consent records, seq is the
    /// record's index).
    pub fn aad_of(
        kind: EnvelopeKind,
        handle: &Handle,
        seq: u64,
        epoch: u32,
        timestamp_ms: u64,
    ) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        a[0] = kind as u8;
        a[1..17].copy_from_slice(handle.as_bytes());
        a[17..25].copy_from_slice(&seq.to_be_bytes());
        a[25..29].copy_from_slice(&epoch.to_be_bytes());
        a[29..37].copy_from_slice(&timestamp_ms.to_be_bytes());
        a
    }
}

/// Length of a message's AAD.
pub const AAD_LEN: usize = 1 + Handle::LEN + 8 + 4 + 8;

/// The plaintext header of an envelope, readable without the CRC check (the
/// compaction filter reads only the epoch).
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeHeader {
    /// What the envelope holds.
    pub kind: EnvelopeKind,
    /// Key epoch.
    pub epoch: u32,
    /// Append time in ms.
    pub timestamp_ms: u64,
    /// Nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl EnvelopeHeader {
    /// Parses the fixed header.
    ///
    /// # Errors
    /// [`Corruption::Encoding`] if too short or of an unknown kind.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < ENVELOPE_HEADER_LEN {
            return Err(corrupt_encoding());
        }
        let kind = EnvelopeKind::from_byte(bytes[0]).ok_or_else(corrupt_encoding)?;
        let epoch = u32::from_be_bytes(bytes[1..5].try_into().map_err(|_| corrupt_encoding())?);
        let timestamp_ms =
            u64::from_be_bytes(bytes[5..13].try_into().map_err(|_| corrupt_encoding())?);
        let nonce: [u8; NONCE_LEN] = bytes[13..25].try_into().map_err(|_| corrupt_encoding())?;
        Ok(EnvelopeHeader {
            kind,
            epoch,
            timestamp_ms,
            nonce,
        })
    }
}

// ---------------------------------------------------------------------------
// Records encoded with postcard: [version u8][postcard body][crc32 BE]

fn encode_record<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(RECORD_VERSION);
    // postcard only fails on writer errors or unsupported types; a Vec writer
    // and these plain structs cannot fail.
    if let Ok(body) = postcard::to_allocvec(value) {
        out.extend_from_slice(&body);
    }
    push_crc(out, start);
}

fn decode_record<'de, T: Serialize + Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    let body = split_checked(bytes)?;
    let (&version, body) = body.split_first().ok_or_else(corrupt_encoding)?;
    if version != RECORD_VERSION {
        return Err(corrupt_encoding());
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| corrupt_encoding())?;
    if !rest.is_empty() {
        return Err(corrupt_encoding());
    }
    // postcard accepts overlong varints (`80 00` for 0); only the canonical
    // encoding, the one `encode` writes, is a record.
    if postcard::to_allocvec(&value).map_err(|_| corrupt_encoding())? != body {
        return Err(corrupt_encoding());
    }
    Ok(value)
}

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
}

impl KeyRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(self, out);
    }

    /// Decodes and validates a key record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`] or [`Corruption::Encoding`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r: KeyRecord = decode_record(bytes)?;
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
    use super::*;

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

// ---------------------------------------------------------------------------
// Audit trail (records of processing, GDPR Art. 30)

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

/// Key of an audit record: time, then a counter that orders records of the
/// same millisecond and never repeats within a store.
pub fn audit_key(time_ms: u64, counter: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&time_ms.to_be_bytes());
    k[8..].copy_from_slice(&counter.to_be_bytes());
    k
}

/// Splits an audit key into (time_ms, counter).
///
/// # Errors
/// [`Corruption::Key`] if it is not 16 bytes.
pub fn parse_audit_key(key: &[u8]) -> Result<(u64, u64)> {
    let k: [u8; 16] = key
        .try_into()
        .map_err(|_| Error::Corrupt(Corruption::Key))?;
    let mut t = [0u8; 8];
    let mut c = [0u8; 8];
    t.copy_from_slice(&k[..8]);
    c.copy_from_slice(&k[8..]);
    Ok((u64::from_be_bytes(t), u64::from_be_bytes(c)))
}

// ---------------------------------------------------------------------------
// Erasure receipts

/// Whether an erasure is physical yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStatus {
    /// Unreadable; the ciphertext awaits purge.
    Pending,
    /// A purge made it physical.
    Purged,
}

/// Proof that the store erased a user: signed with HMAC-SHA256 under a
/// receipt key derived from the root key, so only the store's operator can
/// issue or check one, and no field can be changed without detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureReceipt {
    /// The erased user's handle.
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

/// Length of [`ErasureReceipt::signed_bytes`].
pub const RECEIPT_SIGNED_LEN: usize = 22 + Handle::LEN + 4 + 8 + 8 + 1;

impl ErasureReceipt {
    /// What the MAC covers: `"shredstore/v1/receipt\0" || handle ||
    /// epoch_be32 || erased_at_be64 || messages_be64 || status` (status 0 =
    /// pending, 1 = purged).
    pub fn signed_bytes(&self) -> [u8; RECEIPT_SIGNED_LEN] {
        let mut b = [0u8; RECEIPT_SIGNED_LEN];
        b[..22].copy_from_slice(b"shredstore/v1/receipt\0");
        let mut at = 22;
        for part in [
            &self.handle.as_bytes()[..],
            &self.epoch.to_be_bytes(),
            &self.erased_at_ms.to_be_bytes(),
            &self.messages_erased.to_be_bytes(),
            &[u8::from(self.purge_status == PurgeStatus::Purged)],
        ] {
            b[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        b
    }
}

// ---------------------------------------------------------------------------
// Rights policy, redaction markers and consent records

/// Longest legal-hold reason, redaction reason or consent purpose, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// Restriction of processing (GDPR Art. 18). Both off is "not restricted".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// New messages (and consent-free appends) for the user are refused.
    pub block_appends: bool,
    /// Reads and exports need the privileged (admin) path.
    pub block_reads: bool,
}

impl Restriction {
    /// Whether any mode is on.
    pub fn any(self) -> bool {
        self.block_appends || self.block_reads
    }
}

/// How long a user's messages are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retention {
    /// The store's default (`Options::retention`).
    #[default]
    StoreDefault,
    /// Kept until erased or redacted, whatever the store default.
    Forever,
    /// Expire `ms` milliseconds after their append time.
    After {
        /// The period, at least 1.
        ms: u64,
    },
}

/// A legal hold: erase, redact and retention expiry are refused while it is
/// active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    /// The operator's reason (a case number; not meant for personal data).
    pub reason: String,
    /// When it was placed, ms since the Unix epoch.
    pub since_ms: u64,
    /// When it ends by itself, if it does.
    pub until_ms: Option<u64>,
}

impl LegalHold {
    /// Whether the hold is in force at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// The rights policy of one user, kept in its key record (so it goes with
/// the key at erasure and survives restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPolicy {
    /// Restriction of processing.
    pub restriction: Restriction,
    /// Retention override.
    pub retention: Retention,
    /// Messages appended before this time are expired whatever the policy
    /// becomes: raised to the current horizon whenever retention or a hold
    /// changes, so expiry never goes backwards (what a compaction may already
    /// have dropped stays hidden).
    pub expired_before_ms: u64,
    /// The legal hold, if any.
    pub hold: Option<LegalHold>,
    /// Redactions await a purge to become physical.
    pub purge_pending: bool,
}

impl UserPolicy {
    /// Field limits a decoded policy must meet.
    fn is_valid(&self) -> bool {
        self.hold
            .as_ref()
            .is_none_or(|h| h.reason.len() <= MAX_REASON_LEN)
            && self.retention != Retention::After { ms: 0 }
    }

    /// The legal hold if it is in force at `now_ms`.
    pub fn active_hold(&self, now_ms: u64) -> Option<&LegalHold> {
        self.hold.as_ref().filter(|h| h.active_at(now_ms))
    }

    /// The retention period in ms that applies given the store's default
    /// (`None`: kept until erased), legal holds aside.
    pub fn period(&self, default: Option<u64>) -> Option<u64> {
        match self.retention {
            Retention::StoreDefault => default,
            Retention::Forever => None,
            Retention::After { ms } => Some(ms),
        }
    }

    /// Messages appended before the returned time are expired at `now_ms`,
    /// given the store's default retention.
    pub fn horizon(&self, now_ms: u64, default: Option<u64>) -> u64 {
        if self.active_hold(now_ms).is_some() {
            return self.expired_before_ms;
        }
        let by_period = self.period(default).map_or(0, |p| now_ms.saturating_sub(p));
        self.expired_before_ms.max(by_period)
    }
}

/// The sealed body of a redaction marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionBody {
    /// When the message was redacted, ms since the Unix epoch.
    pub redacted_at_ms: u64,
    /// Why (free text from the caller, at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

impl RedactionBody {
    /// postcard encoding (sealed under the user's key).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes an opened body.
    ///
    /// # Errors
    /// [`Corruption::Encoding`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let b: RedactionBody = from_exact_bytes(bytes)?;
        if b.reason.len() > MAX_REASON_LEN {
            return Err(corrupt_encoding());
        }
        Ok(b)
    }
}

/// Legal basis of processing (GDPR Art. 6(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegalBasis {
    /// (a) consent.
    Consent,
    /// (b) performance of a contract.
    Contract,
    /// (c) a legal obligation.
    LegalObligation,
    /// (d) vital interests.
    VitalInterests,
    /// (e) a task in the public interest.
    PublicTask,
    /// (f) legitimate interests.
    LegitimateInterests,
}

impl LegalBasis {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegitimateInterests => "legitimate_interests",
        }
    }
}

/// One entry of a user's consent history: the purpose, its legal basis,
/// whether consent was granted or withdrawn, and when (as the caller states
/// it). Sealed under the user's key, so erasure shreds it with the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// What the data is processed for, e.g. `"marketing-email"` (1..=256 bytes).
    pub purpose: String,
    /// The legal basis.
    pub basis: LegalBasis,
    /// Granted (`true`) or withdrawn (`false`).
    pub granted: bool,
    /// When the person gave or withdrew it, ms since the Unix epoch.
    pub given_at_ms: u64,
}

impl Consent {
    /// postcard encoding (sealed under the user's key).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes an opened consent record.
    ///
    /// # Errors
    /// [`Corruption::Encoding`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let c: Consent = from_exact_bytes(bytes)?;
        if c.purpose.is_empty() || c.purpose.len() > MAX_REASON_LEN {
            return Err(corrupt_encoding());
        }
        Ok(c)
    }
}

/// Decodes postcard bytes that must be exactly one canonical value.
fn from_exact_bytes<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| corrupt_encoding())?;
    if !rest.is_empty() || postcard::to_allocvec(&value).map_err(|_| corrupt_encoding())? != bytes {
        return Err(corrupt_encoding());
    }
    Ok(value)
}

/// Key of a consent record: `handle (16) || index (u64 BE)`, the same
/// layout as a message key.
pub fn consent_key(handle: &Handle, index: u64) -> [u8; MESSAGE_KEY_LEN] {
    message_key(handle, index)
}

//! Conversation records: the slot of a conversation message (a sealed
//! message, a redaction marker, or an erased author's tombstone), the
//! conversation's key record, and the author index's keys.

use serde::{Deserialize, Serialize};

use super::policy::{Restriction, UserPolicy};
use super::{
    corrupt_encoding, decode_wrapped_record, encode_wrapped_record, push_crc, split_checked,
};
use crate::crypto::{NONCE_LEN, TAG_LEN, WRAPPED_LEN};
use crate::error::Result;
use crate::types::{Handle, MAX_USER_ID_LEN};

/// What a conversation slot holds; its first byte (and the first byte of
/// its AAD). The values continue [`EnvelopeKind`](super::EnvelopeKind)'s,
/// so no conversation record opens as a per-user one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConvKind {
    /// A message sealed under its author's and the conversation's secrets.
    Message = 4,
    /// A redaction marker ("deleted for everyone"): reason and time sealed
    /// under the conversation's key; no author.
    Redaction = 5,
    /// What purge leaves of an erased author's message: seq, time and cause
    /// in plaintext, no ciphertext, no author handle.
    Tombstone = 6,
}

impl ConvKind {
    /// The kind of a first byte, if known.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            4 => Some(ConvKind::Message),
            5 => Some(ConvKind::Redaction),
            6 => Some(ConvKind::Tombstone),
            _ => None,
        }
    }
}

/// Why a stored tombstone replaced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StoredCause {
    /// The author was erased.
    AuthorErased = 1,
}

/// Fixed header of a sealed conversation record: kind, conversation epoch,
/// timestamp, author handle, author epoch, nonce.
pub const CONV_HEADER_LEN: usize = 1 + 4 + 8 + Handle::LEN + 4 + NONCE_LEN;
/// Length of a stored tombstone: kind, conversation epoch, timestamp,
/// cause, CRC.
pub const CONV_TOMBSTONE_LEN: usize = 1 + 4 + 8 + 1 + 4;
/// Length of a conversation record's AAD.
pub const CONV_AAD_LEN: usize = 1 + Handle::LEN + 8 + 4 + 8 + Handle::LEN + 4;

/// The plaintext header of a conversation record, readable without the
/// CRC check (purge and the file checks read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvHeader {
    /// What the record holds.
    pub kind: ConvKind,
    /// The conversation's key epoch.
    pub conv_epoch: u32,
    /// Append time of the message, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The author's handle and key epoch (messages only).
    pub author: Option<(Handle, u32)>,
}

impl ConvHeader {
    /// Parses the header of any conversation record.
    ///
    /// # Errors
    /// [`Corruption::Encoding`](crate::Corruption::Encoding) if too short or
    /// of an unknown kind.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let kind = bytes
            .first()
            .and_then(|b| ConvKind::from_byte(*b))
            .ok_or_else(corrupt_encoding)?;
        let min = if kind == ConvKind::Tombstone {
            CONV_TOMBSTONE_LEN - 4
        } else {
            CONV_HEADER_LEN
        };
        if bytes.len() < min {
            return Err(corrupt_encoding());
        }
        let conv_epoch =
            u32::from_be_bytes(bytes[1..5].try_into().map_err(|_| corrupt_encoding())?);
        let timestamp_ms =
            u64::from_be_bytes(bytes[5..13].try_into().map_err(|_| corrupt_encoding())?);
        let author = if kind == ConvKind::Message {
            let h: [u8; Handle::LEN] = bytes[13..29].try_into().map_err(|_| corrupt_encoding())?;
            let e = u32::from_be_bytes(bytes[29..33].try_into().map_err(|_| corrupt_encoding())?);
            Some((Handle(h), e))
        } else {
            None
        };
        Ok(ConvHeader {
            kind,
            conv_epoch,
            timestamp_ms,
            author,
        })
    }
}

/// A decoded conversation record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvRecord<'a> {
    /// A message or redaction marker, still sealed.
    Sealed(ConvSealed<'a>),
    /// A stored tombstone.
    Tombstone {
        /// The conversation's key epoch.
        conv_epoch: u32,
        /// The message's append time.
        timestamp_ms: u64,
        /// Why.
        cause: StoredCause,
    },
}

/// A sealed conversation record (message or redaction marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvSealed<'a> {
    /// [`ConvKind::Message`] or [`ConvKind::Redaction`].
    pub kind: ConvKind,
    /// The conversation's key epoch.
    pub conv_epoch: u32,
    /// The message's append time.
    pub timestamp_ms: u64,
    /// Author handle and key epoch; all zero for a redaction marker.
    pub author: Handle,
    /// The author's key epoch (0 for a redaction marker).
    pub author_epoch: u32,
    /// The random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    pub sealed: &'a [u8],
}

impl<'a> ConvRecord<'a> {
    /// Decodes a record, verifying the CRC and the layout of its kind.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::Corruption::Encoding).
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let body = split_checked(bytes)?;
        let h = ConvHeader::parse(body)?;
        match h.kind {
            ConvKind::Tombstone => {
                if body.len() != CONV_TOMBSTONE_LEN - 4
                    || body[13] != StoredCause::AuthorErased as u8
                {
                    return Err(corrupt_encoding());
                }
                Ok(ConvRecord::Tombstone {
                    conv_epoch: h.conv_epoch,
                    timestamp_ms: h.timestamp_ms,
                    cause: StoredCause::AuthorErased,
                })
            }
            kind => {
                if body.len() < CONV_HEADER_LEN + TAG_LEN {
                    return Err(corrupt_encoding());
                }
                let author: [u8; Handle::LEN] =
                    body[13..29].try_into().map_err(|_| corrupt_encoding())?;
                let author_epoch =
                    u32::from_be_bytes(body[29..33].try_into().map_err(|_| corrupt_encoding())?);
                // A redaction marker names no author.
                if kind == ConvKind::Redaction && (author != [0; Handle::LEN] || author_epoch != 0)
                {
                    return Err(corrupt_encoding());
                }
                if kind == ConvKind::Message && author_epoch == 0 {
                    return Err(corrupt_encoding());
                }
                let nonce: [u8; NONCE_LEN] = body[33..CONV_HEADER_LEN]
                    .try_into()
                    .map_err(|_| corrupt_encoding())?;
                Ok(ConvRecord::Sealed(ConvSealed {
                    kind,
                    conv_epoch: h.conv_epoch,
                    timestamp_ms: h.timestamp_ms,
                    author: Handle(author),
                    author_epoch,
                    nonce,
                    sealed: &body[CONV_HEADER_LEN..],
                }))
            }
        }
    }

    /// The message's append time (kept by markers and tombstones).
    pub fn timestamp_ms(&self) -> u64 {
        match self {
            ConvRecord::Sealed(s) => s.timestamp_ms,
            ConvRecord::Tombstone { timestamp_ms, .. } => *timestamp_ms,
        }
    }

    /// Re-encodes the record (the fuzz targets' round-trip check).
    #[cfg(any(test, feature = "internals"))]
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ConvRecord::Tombstone {
                conv_epoch,
                timestamp_ms,
                cause,
            } => encode_tombstone(out, *conv_epoch, *timestamp_ms, *cause),
            ConvRecord::Sealed(s) => {
                let start = out.len();
                push_sealed_header(
                    out,
                    s.kind,
                    s.conv_epoch,
                    s.timestamp_ms,
                    &s.author,
                    s.author_epoch,
                    &s.nonce,
                );
                out.extend_from_slice(s.sealed);
                push_crc(out, start);
            }
        }
    }
}

fn push_sealed_header(
    out: &mut Vec<u8>,
    kind: ConvKind,
    conv_epoch: u32,
    timestamp_ms: u64,
    author: &Handle,
    author_epoch: u32,
    nonce: &[u8; NONCE_LEN],
) {
    out.push(kind as u8);
    out.extend_from_slice(&conv_epoch.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(author.as_bytes());
    out.extend_from_slice(&author_epoch.to_be_bytes());
    out.extend_from_slice(nonce);
}

/// Where a sealed conversation record sits and who wrote it: everything its
/// AAD binds besides the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSlot {
    /// The conversation's handle.
    pub conv: Handle,
    /// The slot's seq.
    pub seq: u64,
    /// The conversation's key epoch.
    pub conv_epoch: u32,
    /// The message's append time.
    pub timestamp_ms: u64,
    /// The author's handle (all zero for a redaction marker).
    pub author: Handle,
    /// The author's key epoch (0 for a redaction marker).
    pub author_epoch: u32,
}

impl ConvSlot {
    /// AAD: `kind || conv handle || seq_be64 || conv_epoch_be32 ||
    /// timestamp_be64 || author handle || author_epoch_be32`.
    pub fn aad(&self, kind: ConvKind) -> [u8; CONV_AAD_LEN] {
        let mut a = [0u8; CONV_AAD_LEN];
        a[0] = kind as u8;
        a[1..17].copy_from_slice(self.conv.as_bytes());
        a[17..25].copy_from_slice(&self.seq.to_be_bytes());
        a[25..29].copy_from_slice(&self.conv_epoch.to_be_bytes());
        a[29..37].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        a[37..53].copy_from_slice(self.author.as_bytes());
        a[53..57].copy_from_slice(&self.author_epoch.to_be_bytes());
        a
    }

    /// Appends a sealed record of `kind` for this slot; `seal` encrypts
    /// the plaintext buffer in place and returns the tag.
    pub(crate) fn encode_sealed(
        &self,
        out: &mut Vec<u8>,
        kind: ConvKind,
        nonce: &[u8; NONCE_LEN],
        plaintext: &[u8],
        seal: impl FnOnce(&mut [u8]) -> Result<[u8; TAG_LEN]>,
    ) -> Result<()> {
        let start = out.len();
        out.reserve(CONV_HEADER_LEN + plaintext.len() + TAG_LEN + 4);
        push_sealed_header(
            out,
            kind,
            self.conv_epoch,
            self.timestamp_ms,
            &self.author,
            self.author_epoch,
            nonce,
        );
        let ct = out.len();
        out.extend_from_slice(plaintext);
        let tag = seal(&mut out[ct..])?;
        out.extend_from_slice(&tag);
        push_crc(out, start);
        Ok(())
    }
}

/// Appends a stored tombstone.
pub fn encode_tombstone(out: &mut Vec<u8>, conv_epoch: u32, timestamp_ms: u64, cause: StoredCause) {
    let start = out.len();
    out.push(ConvKind::Tombstone as u8);
    out.extend_from_slice(&conv_epoch.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.push(cause as u8);
    push_crc(out, start);
}

/// The sealed plaintext of a conversation message: `author_id_len_be16 ||
/// author id || payload`, so the author's id goes with their key.
pub fn encode_message_body(out: &mut Vec<u8>, author: &[u8], payload: &[u8]) {
    out.reserve(2 + author.len() + payload.len());
    // User ids are at most 256 bytes.
    out.extend_from_slice(
        &u16::try_from(author.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(author);
    out.extend_from_slice(payload);
}

/// Splits an opened message body into author id and payload.
///
/// # Errors
/// [`Corruption::Encoding`](crate::Corruption::Encoding).
pub fn decode_message_body(body: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = body.split_at_checked(2).ok_or_else(corrupt_encoding)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 || len > MAX_USER_ID_LEN {
        return Err(corrupt_encoding());
    }
    rest.split_at_checked(len).ok_or_else(corrupt_encoding)
}

/// A conversation's key record, stored in `conv_keys` under its handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvKeyRecord {
    /// Key epoch; bumped each time the conversation is deleted and used again.
    pub epoch: u32,
    /// The conversation secret wrapped under the root key.
    pub wrapped_secret: Vec<u8>,
    /// The conversation id sealed under the conversation's key (nonce,
    /// ciphertext, tag), so an export can name it.
    pub sealed_id: Vec<u8>,
    /// Creation time of this epoch, ms since the Unix epoch.
    pub created_ms: u64,
    /// First seq of this epoch.
    pub first_seq: u64,
    /// Its rights policy: retention, legal hold, the expiry floor and
    /// pending redactions (a user's policy; its restriction is unused and
    /// always off).
    pub policy: UserPolicy,
    /// Handles of the users whose erasure may delete it, sorted.
    pub subjects: Vec<[u8; Handle::LEN]>,
    /// Generation of the root key that wraps `wrapped_secret`, as in a
    /// user's [`KeyRecord`](super::KeyRecord).
    #[serde(skip)]
    pub root_gen: u32,
}

impl ConvKeyRecord {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_wrapped_record(self, self.root_gen, out);
    }

    /// Decodes and validates a conversation key record.
    ///
    /// # Errors
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) or
    /// [`Corruption::Encoding`](crate::Corruption::Encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, root_gen): (ConvKeyRecord, u32) = decode_wrapped_record(bytes)?;
        r.root_gen = root_gen;
        let id_len = r.sealed_id.len().checked_sub(NONCE_LEN + TAG_LEN);
        if r.wrapped_secret.len() != WRAPPED_LEN
            || r.epoch == 0
            || !id_len.is_some_and(|n| (1..=MAX_USER_ID_LEN).contains(&n))
            || !r.subjects.is_sorted_by(|a, b| a < b)
            || !r.policy.is_valid()
            || r.policy.restriction != Restriction::default()
        {
            return Err(corrupt_encoding());
        }
        Ok(r)
    }

    /// AAD binding a wrapped conversation secret to its handle and epoch.
    pub(crate) fn wrap_aad(handle: &Handle, epoch: u32) -> Vec<u8> {
        let mut a = Vec::with_capacity(CONV_WRAP_AAD.len() + Handle::LEN + 4);
        a.extend_from_slice(CONV_WRAP_AAD);
        a.extend_from_slice(handle.as_bytes());
        a.extend_from_slice(&epoch.to_be_bytes());
        a
    }

    /// AAD of the sealed conversation id.
    pub(crate) fn id_aad(handle: &Handle, epoch: u32) -> Vec<u8> {
        let mut a = Vec::with_capacity(CONV_ID_AAD.len() + Handle::LEN + 4);
        a.extend_from_slice(CONV_ID_AAD);
        a.extend_from_slice(handle.as_bytes());
        a.extend_from_slice(&epoch.to_be_bytes());
        a
    }
}

const CONV_WRAP_AAD: &[u8] = b"shredstore/v3/conversation-secret";
const CONV_ID_AAD: &[u8] = b"shredstore/v3/conversation-id";

/// Length of an author-index key.
pub const AUTHOR_KEY_LEN: usize = 2 * Handle::LEN + 8;

/// Key of an author-index entry: `author handle || conv handle ||
/// seq_be64`; its value is the author's key epoch (u32 BE).
pub fn author_key(author: &Handle, conv: &Handle, seq: u64) -> [u8; AUTHOR_KEY_LEN] {
    let mut k = [0u8; AUTHOR_KEY_LEN];
    k[..16].copy_from_slice(author.as_bytes());
    k[16..32].copy_from_slice(conv.as_bytes());
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Splits an author-index key into author, conversation and seq.
///
/// # Errors
/// [`Corruption::Key`](crate::Corruption::Key) for a wrong length.
pub fn parse_author_key(key: &[u8]) -> Result<(Handle, Handle, u64)> {
    let k: &[u8; AUTHOR_KEY_LEN] = key
        .try_into()
        .map_err(|_| crate::Error::Corrupt(crate::Corruption::Key))?;
    let mut a = [0u8; 16];
    let mut c = [0u8; 16];
    let mut s = [0u8; 8];
    a.copy_from_slice(&k[..16]);
    c.copy_from_slice(&k[16..32]);
    s.copy_from_slice(&k[32..]);
    Ok((Handle(a), Handle(c), u64::from_be_bytes(s)))
}

/// Length of a subjects-index key.
pub const SUBJECT_KEY_LEN: usize = 2 * Handle::LEN;

/// Key of a subjects-index entry: `user handle || conv handle` (empty
/// value): the user is a declared subject of the conversation.
pub fn subject_key(user: &Handle, conv: &Handle) -> [u8; SUBJECT_KEY_LEN] {
    let mut k = [0u8; SUBJECT_KEY_LEN];
    k[..16].copy_from_slice(user.as_bytes());
    k[16..].copy_from_slice(conv.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> ConvSlot {
        ConvSlot {
            conv: Handle([3; 16]),
            seq: 7,
            conv_epoch: 2,
            timestamp_ms: 1234,
            author: Handle([9; 16]),
            author_epoch: 1,
        }
    }

    #[test]
    fn sealed_records_round_trip_and_reject_every_flip() {
        let mut out = Vec::new();
        slot()
            .encode_sealed(&mut out, ConvKind::Message, &[5; 12], b"hi", |b| {
                b.iter_mut().for_each(|x| *x ^= 0x55);
                Ok([1; 16])
            })
            .unwrap();
        let rec = ConvRecord::decode(&out).unwrap();
        let ConvRecord::Sealed(s) = &rec else {
            panic!("not sealed")
        };
        assert_eq!(
            (s.author, s.author_epoch, s.conv_epoch),
            (Handle([9; 16]), 1, 2)
        );
        let mut again = Vec::new();
        rec.encode(&mut again);
        assert_eq!(again, out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x04;
            assert!(ConvRecord::decode(&bad).is_err(), "flip at {i} accepted");
        }
        let h = ConvHeader::parse(&out).unwrap();
        assert_eq!(h.author, Some((Handle([9; 16]), 1)));
    }

    #[test]
    fn tombstones_hold_no_author() {
        let mut out = Vec::new();
        encode_tombstone(&mut out, 2, 99, StoredCause::AuthorErased);
        assert_eq!(out.len(), CONV_TOMBSTONE_LEN);
        let rec = ConvRecord::decode(&out).unwrap();
        assert_eq!(
            rec,
            ConvRecord::Tombstone {
                conv_epoch: 2,
                timestamp_ms: 99,
                cause: StoredCause::AuthorErased
            }
        );
        assert_eq!(ConvHeader::parse(&out).unwrap().author, None);
        let mut bad = out.clone();
        bad[13] = 9;
        let n = bad.len();
        bad.truncate(n - 4);
        push_crc(&mut bad, 0);
        assert!(ConvRecord::decode(&bad).is_err());
    }

    #[test]
    fn message_bodies_split_at_the_author() {
        let mut b = Vec::new();
        encode_message_body(&mut b, b"alice", b"hello");
        assert_eq!(
            decode_message_body(&b).unwrap(),
            (&b"alice"[..], &b"hello"[..])
        );
        assert!(decode_message_body(&[0, 0, 1]).is_err());
        assert!(decode_message_body(&[0, 9, 1]).is_err());
    }

    #[test]
    fn author_keys_round_trip() {
        let k = author_key(&Handle([1; 16]), &Handle([2; 16]), 77);
        assert_eq!(
            parse_author_key(&k).unwrap(),
            (Handle([1; 16]), Handle([2; 16]), 77)
        );
        assert!(parse_author_key(&k[1..]).is_err());
    }
}

//! The envelope of a sealed record: kind, epoch, timestamp and nonce in
//! plaintext, then ciphertext and tag, then a CRC over all of it.

use super::{corrupt_encoding, push_crc, split_checked};
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::error::Result;
use crate::types::Handle;

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
    #[cfg(any(test, feature = "internals"))]
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind as u8);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.sealed);
        push_crc(out, start);
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

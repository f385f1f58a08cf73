//! Byte layouts of everything shredstore stores: storage keys, the message
//! envelope, key records and erasure markers. `docs/format.md` documents each
//! byte; change both together.
//!
//! Values use `encode(&self, out)` / `decode(bytes)`; decoders reject trailing
//! bytes, unknown versions, checksum mismatches and non-canonical encodings,
//! so whatever decodes re-encodes to the same bytes (the `fuzz/` targets
//! check it).

mod audit;
mod backup;
mod changes;
mod conversation;
mod envelope;
mod keys;
mod ledger;
mod policy;
mod records;
mod rootkeys;

use serde::{Deserialize, Serialize};

pub use audit::*;
pub use backup::*;
pub use changes::*;
pub use conversation::*;
pub use envelope::*;
pub use keys::*;
pub use ledger::*;
pub use policy::*;
pub use records::*;
pub use rootkeys::*;

use crate::error::{Corruption, Error, Result};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 4;

/// Version byte at the start of every envelope and record.
pub const RECORD_VERSION: u8 = 1;

/// Version byte of a key record (user or conversation) wrapped under a root
/// key of generation 2 or later: the version-1 body followed by the
/// generation (a postcard varint). Generation 1 is always written as
/// version 1, so a store never rotated holds the bytes it always did.
pub const RECORD_VERSION_ROOT_GEN: u8 = 2;

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
    decode_body(body)
}

/// Encodes a key record wrapped under root-key generation `root_gen`:
/// version 1 for generation 1, else version 2 with the generation after
/// the body.
fn encode_wrapped_record<T: Serialize>(value: &T, root_gen: u32, out: &mut Vec<u8>) {
    if root_gen <= 1 {
        return encode_record(value, out);
    }
    let start = out.len();
    out.push(RECORD_VERSION_ROOT_GEN);
    if let Ok(body) = postcard::to_allocvec(&(value, root_gen)) {
        out.extend_from_slice(&body);
    }
    push_crc(out, start);
}

/// Decodes what [`encode_wrapped_record`] wrote: the value and the
/// generation of the root key that wraps its secret. A version-2 record
/// naming generation 0 or 1 is not canonical.
fn decode_wrapped_record<'de, T: Serialize + Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, u32)> {
    let body = split_checked(bytes)?;
    let (&version, body) = body.split_first().ok_or_else(corrupt_encoding)?;
    match version {
        RECORD_VERSION => Ok((decode_body(body)?, 1)),
        RECORD_VERSION_ROOT_GEN => {
            let (value, root_gen): (T, u32) = decode_body(body)?;
            if root_gen < 2 {
                return Err(corrupt_encoding());
            }
            Ok((value, root_gen))
        }
        _ => Err(corrupt_encoding()),
    }
}

/// Decodes a record body that must be exactly one canonical value.
fn decode_body<'de, T: Serialize + Deserialize<'de>>(body: &'de [u8]) -> Result<T> {
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

/// Decodes postcard bytes that must be exactly one canonical value.
fn from_exact_bytes<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| corrupt_encoding())?;
    if !rest.is_empty() || postcard::to_allocvec(&value).map_err(|_| corrupt_encoding())? != bytes {
        return Err(corrupt_encoding());
    }
    Ok(value)
}

//! Storage keys: hand-laid big-endian, so they sort by handle, then seq
//! (or time).

use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// Key of a message: `handle (16) || seq (u64 BE)`.
pub fn message_key(handle: &Handle, seq: u64) -> [u8; MESSAGE_KEY_LEN] {
    let mut k = [0u8; MESSAGE_KEY_LEN];
    k[..Handle::LEN].copy_from_slice(handle.as_bytes());
    k[Handle::LEN..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Length of a message key.
pub const MESSAGE_KEY_LEN: usize = Handle::LEN + 8;

/// The handle a key of the handle-keyed column families (`keys`,
/// `erased`, `conv_keys`, ...) names.
///
/// # Errors
/// [`Corruption::Key`] if the key is not 16 bytes.
pub fn parse_handle_key(key: &[u8]) -> Result<Handle> {
    let h: [u8; Handle::LEN] = key
        .try_into()
        .map_err(|_| Error::Corrupt(Corruption::Key))?;
    Ok(Handle(h))
}

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

/// Key of a consent record: `handle (16) || index (u64 BE)`, the same
/// layout as a message key.
pub fn consent_key(handle: &Handle, index: u64) -> [u8; MESSAGE_KEY_LEN] {
    message_key(handle, index)
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

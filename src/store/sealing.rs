//! Sealing and opening envelopes under a user's key: the one sealing path
//! for messages, redaction markers and consent records.

use super::read::{Message, Redaction};
use super::users::CachedUser;
use crate::codec::{self, Envelope, EnvelopeKind, RedactionBody};
use crate::crypto::{NONCE_LEN, SecureRandom};
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// Appends to `out` an envelope of `kind` sealing `plaintext` under the
/// user's live key, for position `seq` (a message's seq, a consent
/// record's index) and `timestamp_ms`. A fresh random nonce each time.
#[allow(clippy::too_many_arguments, reason = "every field of the AAD")]
pub(super) fn seal(
    out: &mut Vec<u8>,
    rng: &dyn SecureRandom,
    state: &CachedUser,
    kind: EnvelopeKind,
    handle: &Handle,
    seq: u64,
    timestamp_ms: u64,
    plaintext: &[u8],
) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)?;
    let aad = Envelope::aad_of(kind, handle, seq, state.epoch, timestamp_ms);
    Envelope::encode_with(
        out,
        kind,
        state.epoch,
        timestamp_ms,
        &nonce,
        plaintext,
        |pt| state.keys.cipher.seal_in_place(&nonce, &aad, pt),
    )
}

/// Authenticates and decrypts an envelope stored under `key` (`handle ||
/// u64`) of the user's live epoch; returns that u64 and the plaintext.
pub(super) fn open_sealed(
    handle: &Handle,
    state: &CachedUser,
    key: &[u8],
    env: &Envelope<'_>,
) -> Result<(u64, Vec<u8>)> {
    let (h, seq) = codec::parse_message_key(key)?;
    if h != *handle {
        return Err(Error::Corrupt(Corruption::Key));
    }
    // Reads start at the epoch's first seq; every earlier epoch's seqs are
    // lower. Another epoch here is damage, never a reason to skip silently.
    if env.epoch != state.epoch {
        return Err(Error::Corrupt(Corruption::EpochMismatch));
    }
    let aad = Envelope::aad_of(env.kind, handle, seq, env.epoch, env.timestamp_ms);
    Ok((seq, state.keys.cipher.open(&env.nonce, &aad, env.sealed)?))
}

/// Opens a message envelope (or a redaction marker) stored under `key`.
pub(super) fn open_message(
    handle: &Handle,
    state: &CachedUser,
    key: &[u8],
    env: &Envelope<'_>,
) -> Result<Message> {
    let (seq, opened) = open_sealed(handle, state, key, env)?;
    match env.kind {
        EnvelopeKind::Message => Ok(Message {
            seq,
            timestamp_ms: env.timestamp_ms,
            payload: opened,
            redaction: None,
        }),
        EnvelopeKind::Redaction => {
            let body = RedactionBody::from_bytes(&opened)?;
            Ok(Message {
                seq,
                timestamp_ms: env.timestamp_ms,
                payload: Vec::new(),
                redaction: Some(Redaction {
                    redacted_at_ms: body.redacted_at_ms,
                    reason: body.reason,
                }),
            })
        }
        EnvelopeKind::Consent => Err(Error::Corrupt(Corruption::Encoding)),
    }
}

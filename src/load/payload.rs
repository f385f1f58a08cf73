//! Self-verifying payloads: every message the load generator writes says
//! whose it is, so a read can tell a good message from a damaged one, a
//! foreign one, or another user's.
//!
//! Layout: `[magic "SLG1"][crc32 LE][filler]`, where the CRC-32 covers the
//! user id's length (u32 LE), the user id and the filler. Putting the user id
//! into the checksum catches a message served to the wrong user.

use rand::Rng;

/// The first four bytes of every payload the load generator writes.
pub const PAYLOAD_MAGIC: [u8; 4] = *b"SLG1";

/// Bytes before the filler: magic and checksum. The smallest `--payload-size`.
pub const PAYLOAD_HEADER_LEN: usize = 8;

/// Why a payload failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Shorter than the header or without the magic: not written by the load
    /// generator (or damaged in its first bytes).
    #[error("not a load-generator payload")]
    Foreign,
    /// The checksum does not match the user id and contents: damaged, or
    /// another user's message.
    #[error("checksum mismatch")]
    Checksum,
}

fn checksum(user_id: &[u8], filler: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len = u32::try_from(user_id.len()).unwrap_or(u32::MAX);
    h.update(&len.to_le_bytes());
    h.update(user_id);
    h.update(filler);
    h.finalize()
}

/// A `size`-byte payload for `user_id` with random filler, or `None` if
/// `size` is smaller than [`PAYLOAD_HEADER_LEN`].
pub fn build_payload<R: Rng + ?Sized>(user_id: &[u8], size: usize, rng: &mut R) -> Option<Vec<u8>> {
    let filler_len = size.checked_sub(PAYLOAD_HEADER_LEN)?;
    let mut payload = vec![0u8; size];
    let (header, filler) = payload.split_at_mut(PAYLOAD_HEADER_LEN);
    rng.fill_bytes(filler);
    debug_assert_eq!(filler.len(), filler_len);
    let crc = checksum(user_id, filler);
    header[..4].copy_from_slice(&PAYLOAD_MAGIC);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    Some(payload)
}

/// Checks that `payload` was written by the load generator for `user_id` and
/// is intact.
///
/// # Errors
/// [`VerifyError::Foreign`] for a payload without the header,
/// [`VerifyError::Checksum`] for a damaged or misdirected one.
pub fn verify_payload(user_id: &[u8], payload: &[u8]) -> Result<(), VerifyError> {
    if payload.len() < PAYLOAD_HEADER_LEN {
        return Err(VerifyError::Foreign);
    }
    let (header, filler) = payload.split_at(PAYLOAD_HEADER_LEN);
    if header[..4] != PAYLOAD_MAGIC {
        return Err(VerifyError::Foreign);
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&header[4..]);
    if u32::from_le_bytes(stored) == checksum(user_id, filler) {
        Ok(())
    } else {
        Err(VerifyError::Checksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn good_payloads_verify_and_damage_is_caught() {
        let mut rng = SmallRng::seed_from_u64(7);
        let p = build_payload(b"load-user-1", 200, &mut rng).unwrap();
        assert_eq!(p.len(), 200);
        assert_eq!(&p[..4], b"SLG1");
        assert_eq!(verify_payload(b"load-user-1", &p), Ok(()));
        for i in 0..p.len() {
            let mut bad = p.clone();
            bad[i] ^= 0x01;
            let e = verify_payload(b"load-user-1", &bad).unwrap_err();
            if i < 4 {
                assert_eq!(e, VerifyError::Foreign, "byte {i}");
            } else {
                assert_eq!(e, VerifyError::Checksum, "byte {i}");
            }
        }
        assert_eq!(
            verify_payload(b"load-user-2", &p),
            Err(VerifyError::Checksum),
            "another user's message"
        );
        assert_eq!(
            verify_payload(b"load-user-1", &p[..199]),
            Err(VerifyError::Checksum),
            "truncated"
        );
    }

    #[test]
    fn sizes_and_foreign_payloads() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(build_payload(b"u", PAYLOAD_HEADER_LEN - 1, &mut rng).is_none());
        let p = build_payload(b"u", PAYLOAD_HEADER_LEN, &mut rng).unwrap();
        assert_eq!(verify_payload(b"u", &p), Ok(()));
        assert_eq!(
            verify_payload(b"u", b"hello world"),
            Err(VerifyError::Foreign)
        );
        assert_eq!(verify_payload(b"u", b"SLG1"), Err(VerifyError::Foreign));
        assert_eq!(verify_payload(b"u", b""), Err(VerifyError::Foreign));
        let a = build_payload(b"u", 64, &mut rng).unwrap();
        let b = build_payload(b"u", 64, &mut rng).unwrap();
        assert_ne!(a, b, "random filler");
    }
}

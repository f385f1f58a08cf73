//! RustCrypto's AES-256-GCM-SIV (`aes-gcm-siv` 0.11), the reference
//! implementation the store's AWS-LC cipher is checked against: the unit
//! tests and the fuzz targets seal with one and open with the other, and
//! the RFC 8452 vectors run through both. Not used to store anything.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use zeroize::Zeroize;

use super::{NONCE_LEN, Secret32, TAG_LEN};
use crate::error::{Error, Result};

/// AES-256-GCM-SIV with a fixed key, by RustCrypto (key schedule zeroized
/// on drop).
pub struct ReferenceSivCipher(Aes256GcmSiv);

impl ReferenceSivCipher {
    /// Builds the cipher for a 32-byte key.
    pub fn new(key: &Secret32) -> Self {
        ReferenceSivCipher(Aes256GcmSiv::new(key.expose().into()))
    }

    /// Encrypts `plaintext`; returns `ciphertext || tag`.
    ///
    /// # Errors
    /// Only if the input exceeds AES-GCM-SIV's length limits.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = plaintext.to_vec();
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut out)
            .map_err(|_| Error::Decrypt)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts `ciphertext || tag`.
    ///
    /// # Errors
    /// [`Error::Decrypt`] for any failure.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let split = sealed.len().checked_sub(TAG_LEN).ok_or(Error::Decrypt)?;
        let (ct, tag) = sealed.split_at(split);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Decrypt)?;
        let mut buf = ct.to_vec();
        match self.0.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut buf,
            &Tag::from(tag),
        ) {
            Ok(()) => Ok(buf),
            Err(_) => {
                buf.zeroize();
                Err(Error::Decrypt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{OsRandom, SecureRandom, SivCipher};
    use super::*;

    /// Seal with one implementation, open with the other, over every length
    /// from 0 to 300 bytes (both sides of each 16-byte block boundary) and
    /// random keys, nonces and AADs; the ciphertexts are identical and a
    /// flipped bit is refused by both.
    #[test]
    fn aws_lc_and_rustcrypto_agree_both_ways() {
        for len in 0..=300usize {
            let mut key = [0u8; 32];
            OsRandom.fill(&mut key).unwrap();
            let mut nonce = [0u8; NONCE_LEN];
            OsRandom.fill(&mut nonce).unwrap();
            let mut pt = vec![0u8; len];
            getrandom::fill(&mut pt).unwrap();
            let aad = pt[..len % 41].to_vec();
            let ours = SivCipher::new(&Secret32::from_bytes(key));
            let theirs = ReferenceSivCipher::new(&Secret32::from_bytes(key));
            let a = ours.seal(&nonce, &aad, &pt).unwrap();
            let b = theirs.seal(&nonce, &aad, &pt).unwrap();
            assert_eq!(a, b, "len {len}");
            assert_eq!(theirs.open(&nonce, &aad, &a).unwrap(), pt, "len {len}");
            assert_eq!(ours.open(&nonce, &aad, &b).unwrap(), pt, "len {len}");
            let mut bad = a.clone();
            bad[len / 2] ^= 0x40;
            assert!(ours.open(&nonce, &aad, &bad).is_err(), "len {len}");
            assert!(theirs.open(&nonce, &aad, &bad).is_err(), "len {len}");
        }
    }
}

//! Key types and primitives: the root key, per-user secrets, HKDF, the
//! AES-256-GCM-SIV wrapper and the handle HMAC.
//!
//! Every secret lives in a fixed-size array that is zeroized on drop, prints as
//! `REDACTED` and is not `Clone`.

use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::types::{ConversationId, Handle, UserId};

/// Length of every symmetric key and secret, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM-SIV nonce, in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM-SIV tag, in bytes.
pub const TAG_LEN: usize = 16;

/// HKDF `info` prefix of message keys.
const INFO_MESSAGE: &[u8] = b"shredstore/v1/message";
/// HKDF `info` prefix of conversation message keys (author and conversation
/// secrets together).
const INFO_CONVERSATION_MESSAGE: &[u8] = b"shredstore/v3/conversation/message";
/// HKDF `info` prefix of a conversation's own key (its sealed id and
/// redaction markers).
const INFO_CONVERSATION: &[u8] = b"shredstore/v3/conversation";
/// HKDF `info` of the key-wrapping key derived from the root key.
const INFO_WRAP: &[u8] = b"shredstore/v1/wrap";
/// HKDF `info` of the erasure-receipt MAC key derived from the root key.
const INFO_RECEIPT: &[u8] = b"shredstore/v1/receipt";
/// HKDF info of a root key's check value (names a retired key at open).
const INFO_ROOT_KEY_CHECK: &[u8] = b"shredstore/v4/root-key-check";

/// 32 secret bytes, zeroized on drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; KEY_LEN]);

impl Secret32 {
    /// Wraps bytes; the caller should zeroize its own copy.
    #[cfg(any(test, feature = "internals"))]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Secret32(bytes)
    }

    /// Fresh random bytes from `rng`.
    pub fn random(rng: &dyn SecureRandom) -> Result<Self> {
        let mut s = Secret32([0; KEY_LEN]);
        rng.fill(&mut s.0)?;
        Ok(s)
    }

    /// The secret bytes. Keep the borrow short.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(REDACTED)")
    }
}

/// The store's root key: supplied from outside the data directory and never
/// written into it. It wraps the handle key and every user secret.
#[derive(Debug)]
pub struct RootKey(Secret32);

impl RootKey {
    /// Uses 32 bytes as the root key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        RootKey(Secret32(bytes))
    }

    /// Uses a slice as the root key.
    ///
    /// # Errors
    /// [`Error::InvalidRootKey`] unless the slice is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::InvalidRootKey("a root key is exactly 32 bytes"))?;
        Ok(Self::from_bytes(arr))
    }

    /// Parses 64 hexadecimal characters (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`Error::InvalidRootKey`] for anything else.
    pub fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim().as_bytes();
        if text.len() != KEY_LEN * 2 {
            return Err(Error::InvalidRootKey(
                "a hex root key is exactly 64 hex digits",
            ));
        }
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => return Err(Error::InvalidRootKey("root key has a non-hex character")),
            }
        }
        Ok(Self::from_bytes(*out))
    }

    /// A second handle on the same key (for a restore that opens a store
    /// twice).
    pub(crate) fn duplicate(&self) -> RootKey {
        RootKey::from_bytes(*self.0.expose())
    }

    /// Reads a root key file: either exactly 32 raw bytes, or 64 hex digits
    /// (optionally followed by a newline).
    ///
    /// # Errors
    /// [`Error::Io`] if the file can't be read, [`Error::InvalidRootKey`] if
    /// its contents are neither form.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path)?);
        if bytes.len() == KEY_LEN {
            return Self::from_slice(&bytes);
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::InvalidRootKey("root key file is neither 32 bytes nor hex"))?;
        Self::from_hex(text)
    }

    /// A fresh random root key from the OS CSPRNG (for development and tests;
    /// production keys come from outside).
    ///
    /// # Errors
    /// [`Error::Random`] if the OS generator fails.
    pub fn generate() -> Result<Self> {
        Ok(RootKey(Secret32::random(&OsRandom)?))
    }

    /// The key as 64 lowercase hex digits, for writing a key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(KEY_LEN * 2));
        for b in self.0.expose() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The erasure-receipt key: `HKDF-SHA256(root, store salt,
    /// "shredstore/v1/receipt")`.
    pub(crate) fn receipt_key(&self, store_salt: &[u8; KEY_LEN]) -> ReceiptKey {
        ReceiptKey(hkdf_sha256(self.0.expose(), store_salt, &[INFO_RECEIPT]))
    }

    /// The check value that names this key once it is retired:
    /// `HKDF-SHA256(root, store salt, "shredstore/v4/root-key-check")[..16]`.
    /// One-way: it unwraps nothing.
    pub(crate) fn check_value(&self, store_salt: &[u8; KEY_LEN]) -> [u8; 16] {
        let k = hkdf_sha256(self.0.expose(), store_salt, &[INFO_ROOT_KEY_CHECK]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&k.expose()[..16]);
        out
    }

    /// The key-wrapping cipher: `HKDF-SHA256(root, store salt, "shredstore/v1/wrap")`.
    pub(crate) fn wrapping_cipher(&self, store_salt: &[u8; KEY_LEN]) -> SivCipher {
        let key = hkdf_sha256(self.0.expose(), store_salt, &[INFO_WRAP]);
        SivCipher::new(&key)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A source of cryptographically secure random bytes, injectable for tests and
/// fuzzing. The default is [`OsRandom`].
pub trait SecureRandom: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    ///
    /// # Errors
    /// [`Error::Random`] if no randomness is available.
    fn fill(&self, dest: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG (`getrandom`).
///
/// Requests of up to [`OsRandom::BUFFERED_MAX`] bytes (nonces) are served from
/// a per-thread buffer of [`OsRandom::BUFFER_LEN`] bytes read from the kernel
/// in one `getrandom` call, so an append does not pay a system call per
/// nonce (it was 12% of an append's CPU time, see BENCHMARKS.md). Every byte
/// still comes straight from the OS CSPRNG, is handed out once, and is zeroed
/// in the buffer as it is handed out. Larger requests (secrets) bypass the
/// buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl OsRandom {
    /// Size of the per-thread buffer.
    pub const BUFFER_LEN: usize = 1024;
    /// Largest request served from the buffer.
    pub const BUFFERED_MAX: usize = 16;
}

struct RandomBuffer {
    bytes: [u8; OsRandom::BUFFER_LEN],
    /// Bytes before `pos` were handed out (and zeroed).
    pos: usize,
}

impl Drop for RandomBuffer {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static RANDOM_BUFFER: std::cell::RefCell<RandomBuffer> = const {
        std::cell::RefCell::new(RandomBuffer {
            bytes: [0; OsRandom::BUFFER_LEN],
            pos: OsRandom::BUFFER_LEN,
        })
    };
}

impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        if dest.len() > Self::BUFFERED_MAX {
            return getrandom::fill(dest).map_err(|_| Error::Random);
        }
        RANDOM_BUFFER.with(|cell| {
            let mut buf = cell.try_borrow_mut().map_err(|_| Error::Random)?;
            if buf.pos + dest.len() > Self::BUFFER_LEN {
                getrandom::fill(&mut buf.bytes).map_err(|_| Error::Random)?;
                buf.pos = 0;
            }
            let start = buf.pos;
            let end = start + dest.len();
            dest.copy_from_slice(&buf.bytes[start..end]);
            buf.bytes[start..end].zeroize();
            buf.pos = end;
            Ok(())
        })
    }
}

/// A store's id: `SHA-256("shredstore/v4/store-id\0" ‖ store salt)[0..16]`,
/// one-way, so a journal or backup names its store without its salt.
pub(crate) fn store_id(store_salt: &[u8; KEY_LEN]) -> [u8; 16] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(b"shredstore/v4/store-id\0");
    h.update(store_salt);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output; `info` is the concatenation of
/// `info_parts`.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info_parts: &[&[u8]]) -> Secret32 {
    let mut out = Secret32([0; KEY_LEN]);
    hkdf_sha256_into(ikm, salt, info_parts, &mut out.0);
    out
}

/// HKDF-SHA256 (RFC 5869) into a caller-sized buffer of at most 8160 bytes.
///
/// # Panics
/// If `okm` is longer than 255 * 32 bytes (an HKDF limit; callers use fixed sizes).
pub fn hkdf_sha256_into(ikm: &[u8], salt: &[u8], info_parts: &[&[u8]], okm: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    #[expect(
        clippy::expect_used,
        reason = "output lengths are compile-time constants far below the HKDF limit"
    )]
    hk.expand_multi_info(info_parts, okm)
        .expect("HKDF output length within 255 * HashLen");
}

/// AES-256-GCM-SIV (RFC 8452) with a fixed key: seals messages under a
/// message key, and user secrets under the wrapping key. AWS-LC's
/// implementation (`aws-lc-rs`); RustCrypto's `aes-gcm-siv` is the
/// reference it is tested against ([`reference`]). The key schedule lives
/// in AWS-LC's heap (an `EVP_AEAD_CTX` of [`SivCipher::HEAP_BYTES`]) and is
/// zeroized when it is freed (AWS-LC's `OPENSSL_free` cleanses every
/// allocation).
pub struct SivCipher(LessSafeKey);

impl SivCipher {
    /// Bytes of AWS-LC heap one cipher holds: its `EVP_AEAD_CTX` (584 bytes
    /// on x86_64 Linux) and the allocator's header. Counted in the key
    /// caches' memory estimates.
    pub const HEAP_BYTES: usize = 600;

    /// Builds the cipher for a 32-byte key.
    pub fn new(key: &Secret32) -> Self {
        #[expect(
            clippy::expect_used,
            reason = "AES-256-GCM-SIV accepts every 32-byte key; AWS-LC fails only without memory"
        )]
        let key = UnboundKey::new(&AES_256_GCM_SIV, key.expose()).expect("AES-256-GCM-SIV key");
        SivCipher(LessSafeKey::new(key))
    }

    /// Encrypts `buf` in place and returns the 16-byte tag.
    ///
    /// # Errors
    /// Only if the input exceeds AES-GCM-SIV's length limits (2^36 bytes).
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Decrypt)?;
        tag.as_ref().try_into().map_err(|_| Error::Decrypt)
    }

    /// Encrypts `plaintext`; returns `ciphertext || tag`.
    ///
    /// # Errors
    /// Only if the input exceeds AES-GCM-SIV's length limits (2^36 bytes).
    #[cfg(any(test, feature = "internals"))]
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts `ciphertext || tag` straight into a new
    /// buffer (the one allocation of an open: the ciphertext is read where
    /// it lies). Nothing is returned unless the tag verifies.
    ///
    /// # Errors
    /// [`Error::Decrypt`] for any failure, deliberately without detail.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let split = sealed.len().checked_sub(TAG_LEN).ok_or(Error::Decrypt)?;
        let (ct, tag) = sealed.split_at(split);
        let mut out = vec![0u8; ct.len()];
        match self.0.open_separate_gather(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            ct,
            tag,
            &mut out,
        ) {
            Ok(()) => Ok(out),
            Err(_) => {
                // AWS-LC may have written unauthenticated plaintext.
                out.zeroize();
                Err(Error::Decrypt)
            }
        }
    }
}

impl fmt::Debug for SivCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SivCipher(REDACTED)")
    }
}

/// Derives a user's message cipher:
/// `HKDF-SHA256(ikm = user secret, salt = store salt,
/// info = "shredstore/v1/message" || handle || epoch_be32)`.
pub(crate) fn message_cipher(
    user_secret: &Secret32,
    store_salt: &[u8; KEY_LEN],
    handle: &Handle,
    epoch: u32,
) -> SivCipher {
    let key = hkdf_sha256(
        user_secret.expose(),
        store_salt,
        &[INFO_MESSAGE, handle.as_bytes(), &epoch.to_be_bytes()],
    );
    SivCipher::new(&key)
}

/// Derives the key of a conversation message:
/// `HKDF-SHA256(ikm = author secret || conversation secret, salt = store
/// salt, info = "shredstore/v3/conversation/message" || conv handle ||
/// conv_epoch_be32 || author handle || author_epoch_be32)`. Destroying
/// either secret makes it underivable.
pub(crate) fn conversation_message_cipher(
    author_secret: &Secret32,
    conversation_secret: &Secret32,
    store_salt: &[u8; KEY_LEN],
    conversation: (&Handle, u32),
    author: (&Handle, u32),
) -> SivCipher {
    let mut ikm = Zeroizing::new([0u8; 2 * KEY_LEN]);
    ikm[..KEY_LEN].copy_from_slice(author_secret.expose());
    ikm[KEY_LEN..].copy_from_slice(conversation_secret.expose());
    let key = hkdf_sha256(
        ikm.as_slice(),
        store_salt,
        &[
            INFO_CONVERSATION_MESSAGE,
            conversation.0.as_bytes(),
            &conversation.1.to_be_bytes(),
            author.0.as_bytes(),
            &author.1.to_be_bytes(),
        ],
    );
    SivCipher::new(&key)
}

/// Derives a conversation's own cipher (its sealed id, redaction markers):
/// `HKDF-SHA256(ikm = conversation secret, salt = store salt, info =
/// "shredstore/v3/conversation" || conv handle || conv_epoch_be32)`.
pub(crate) fn conversation_cipher(
    conversation_secret: &Secret32,
    store_salt: &[u8; KEY_LEN],
    handle: &Handle,
    epoch: u32,
) -> SivCipher {
    let key = hkdf_sha256(
        conversation_secret.expose(),
        store_salt,
        &[INFO_CONVERSATION, handle.as_bytes(), &epoch.to_be_bytes()],
    );
    SivCipher::new(&key)
}

/// The key that signs erasure receipts (HMAC-SHA256).
pub(crate) struct ReceiptKey(Secret32);

impl ReceiptKey {
    /// A receipt key kept (wrapped) after its root key was retired.
    pub(crate) fn from_secret(secret: Secret32) -> Self {
        ReceiptKey(secret)
    }

    /// The key itself, to wrap it.
    pub(crate) fn secret(&self) -> &Secret32 {
        &self.0
    }

    fn hmac(&self) -> Hmac<Sha256> {
        #[expect(
            clippy::expect_used,
            reason = "HMAC accepts keys of any length; 32 bytes cannot fail"
        )]
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.0.expose()).expect("HMAC key length")
    }

    /// `HMAC-SHA256(receipt key, data)`.
    pub(crate) fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Checks `mac` over `data` in constant time.
    pub(crate) fn verify(&self, data: &[u8], mac: &[u8; 32]) -> bool {
        let mut m = self.hmac();
        m.update(data);
        m.verify_slice(mac).is_ok()
    }
}

/// The key that turns user ids into handles. It holds HMAC-SHA256 keyed
/// once (the inner and outer pad states), so a handle costs two SHA-256
/// blocks instead of four; those states are key material and are zeroized
/// on drop (the `zeroize` features of `hmac` and `sha2`).
pub(crate) struct HandleKey(Hmac<Sha256>);

impl HandleKey {
    pub(crate) fn new(secret: Secret32) -> Self {
        #[expect(
            clippy::expect_used,
            reason = "HMAC accepts keys of any length; 32 bytes cannot fail"
        )]
        let keyed = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(secret.expose())
            .expect("HMAC key length");
        HandleKey(keyed)
    }

    /// `HMAC-SHA256(handle_key, parts[0] || parts[1] || ...)`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// `HMAC-SHA256(handle_key, "shredstore/v2/handle/user\0" || user_id)[..16]`.
    /// The label keeps user handles apart from every other keyed hash of the
    /// handle key (idempotency keys, and the conversation handles to come).
    pub(crate) fn handle(&self, user: &UserId) -> Handle {
        let full = self.mac(&[LABEL_USER_HANDLE, user.as_bytes()]);
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&full[..Handle::LEN]);
        Handle(h)
    }
}

impl HandleKey {
    /// `HMAC-SHA256(handle_key, "shredstore/v2/handle/conversation\0" ||
    /// conversation_id)[..16]`: a conversation's handle, never equal to a
    /// user's for the same bytes.
    pub(crate) fn conversation_handle(&self, conversation: &ConversationId) -> Handle {
        let full = self.mac(&[LABEL_CONVERSATION_HANDLE, conversation.as_bytes()]);
        let mut h = [0u8; Handle::LEN];
        h.copy_from_slice(&full[..Handle::LEN]);
        Handle(h)
    }
}

/// Domain label of conversation handles.
const LABEL_CONVERSATION_HANDLE: &[u8] = b"shredstore/v2/handle/conversation\0";
/// Domain label of user handles.
const LABEL_USER_HANDLE: &[u8] = b"shredstore/v2/handle/user\0";
/// Domain label of idempotency keys.
const LABEL_DEDUP: &[u8] = b"shredstore/v2/dedup\0";

/// Length of an idempotency index key: handle, then 16 bytes of keyed hash.
pub const DEDUP_KEY_LEN: usize = Handle::LEN + 16;

impl HandleKey {
    /// `handle || HMAC-SHA256(handle_key, "shredstore/v2/dedup\0" || handle
    /// || id)[..16]`: the idempotency index key of a client message id.
    pub(crate) fn dedup_key(
        &self,
        handle: &Handle,
        client_message_id: &[u8],
    ) -> [u8; DEDUP_KEY_LEN] {
        let full = self.mac(&[LABEL_DEDUP, handle.as_bytes(), client_message_id]);
        let mut k = [0u8; DEDUP_KEY_LEN];
        k[..Handle::LEN].copy_from_slice(handle.as_bytes());
        k[Handle::LEN..].copy_from_slice(&full[..16]);
        k
    }
}

/// Seals a 32-byte secret under `kek`: returns `nonce || ciphertext || tag`.
pub(crate) fn wrap_secret(
    kek: &SivCipher,
    rng: &dyn SecureRandom,
    aad: &[u8],
    secret: &Secret32,
) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(secret.expose());
    let tag = kek.seal_in_place(&nonce, aad, &mut out[NONCE_LEN..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Length of a wrapped secret: nonce, ciphertext, tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Opens a secret sealed by [`wrap_secret`].
pub(crate) fn unwrap_secret(kek: &SivCipher, aad: &[u8], wrapped: &[u8]) -> Result<Secret32> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::Decrypt);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decrypt)?;
    let plain = Zeroizing::new(kek.open(nonce, aad, sealed)?);
    let arr: [u8; KEY_LEN] = plain.as_slice().try_into().map_err(|_| Error::Decrypt)?;
    Ok(Secret32(arr))
}

#[cfg(test)]
mod kat;

#[cfg(any(test, feature = "internals"))]
pub mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_random_nonces_are_distinct_across_buffer_refills() {
        let mut seen = std::collections::HashSet::new();
        // Several refills of the per-thread buffer, with odd sizes mixed in.
        for i in 0..(4 * OsRandom::BUFFER_LEN / NONCE_LEN) {
            let mut n = [0u8; NONCE_LEN];
            OsRandom.fill(&mut n).unwrap();
            assert!(seen.insert(n), "nonce repeated at {i}");
            let mut odd = [0u8; 5];
            OsRandom.fill(&mut odd).unwrap();
        }
        let mut empty = [0u8; 0];
        OsRandom.fill(&mut empty).unwrap();
        // Large requests bypass the buffer and are not all zero.
        let mut big = [0u8; 64];
        OsRandom.fill(&mut big).unwrap();
        assert_ne!(big, [0u8; 64]);
    }

    #[test]
    fn root_key_hex_round_trip_and_rejects_garbage() {
        let k = RootKey::from_bytes([0xab; 32]);
        let hex = k.to_hex();
        assert_eq!(hex.as_str(), "ab".repeat(32));
        let k2 = RootKey::from_hex(&format!("  {}\n", hex.as_str())).unwrap();
        assert_eq!(k2.0.expose(), &[0xab; 32]);
        assert!(matches!(
            RootKey::from_hex("zz"),
            Err(Error::InvalidRootKey(_))
        ));
        assert!(matches!(
            RootKey::from_hex(&"g".repeat(64)),
            Err(Error::InvalidRootKey(_))
        ));
        assert!(matches!(
            RootKey::from_slice(&[0; 31]),
            Err(Error::InvalidRootKey(_))
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let k = RootKey::from_bytes([0x5a; 32]);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("REDACTED"), "{dbg}");
        assert!(!dbg.contains("5a") && !dbg.contains("90"), "{dbg}");
    }

    #[test]
    fn wrap_unwrap_round_trip_and_aad_binding() {
        let kek = SivCipher::new(&Secret32::from_bytes([7; 32]));
        let secret = Secret32::from_bytes([9; 32]);
        let w = wrap_secret(&kek, &OsRandom, b"aad-1", &secret).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(
            unwrap_secret(&kek, b"aad-1", &w).unwrap().expose(),
            &[9; 32]
        );
        assert!(matches!(
            unwrap_secret(&kek, b"aad-2", &w),
            Err(Error::Decrypt)
        ));
        let other = SivCipher::new(&Secret32::from_bytes([8; 32]));
        assert!(matches!(
            unwrap_secret(&other, b"aad-1", &w),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn handles_and_dedup_keys_carry_their_own_labels() {
        let key = HandleKey::new(Secret32::from_bytes([4; 32]));
        let user = UserId::new("alice").unwrap();
        let h = key.handle(&user);
        let labelled = key.mac(&[b"shredstore/v2/handle/user\0", b"alice"]);
        assert_eq!(h.as_bytes()[..], labelled[..16]);
        // Not the unlabelled MAC of format 1.
        assert_ne!(h.as_bytes()[..], key.mac(&[b"alice"])[..16]);
        // A dedup key is a different kind of hash, even over the same bytes.
        let d = key.dedup_key(&h, b"alice");
        let mut unlabelled = h.as_bytes().to_vec();
        unlabelled.extend_from_slice(&key.mac(&[h.as_bytes(), b"alice"])[..16]);
        assert_ne!(d[..], unlabelled[..]);
        assert_eq!(
            d[16..],
            key.mac(&[b"shredstore/v2/dedup\0", h.as_bytes(), b"alice"])[..16]
        );
    }

    #[test]
    fn handles_differ_per_user_and_key() {
        let k1 = HandleKey::new(Secret32::from_bytes([1; 32]));
        let k2 = HandleKey::new(Secret32::from_bytes([2; 32]));
        let a = UserId::new("alice").unwrap();
        let b = UserId::new("bob").unwrap();
        assert_eq!(k1.handle(&a), k1.handle(&a));
        assert_ne!(k1.handle(&a), k1.handle(&b));
        assert_ne!(k1.handle(&a), k2.handle(&a));
    }
}

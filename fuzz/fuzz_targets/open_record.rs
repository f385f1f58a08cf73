//! Opening envelopes against a real key: nothing is ever returned unless the
//! envelope is authentic for exactly the (handle, seq) it is opened as, and
//! nothing panics.
//!
//! Input (hand-laid so seeds are easy to write; short inputs read as zeros):
//! byte 0 selects the mode.
//! - even: *tamper*. `handle[16] seq[8] epoch[4] timestamp[8] nonce[12]
//!   flags[1] other_handle[16] other_seq[8] edits[1] edit[4]* payload...`.
//!   The payload is sealed into an envelope the way the store does, the edits
//!   (flip / truncate / insert / set a byte) are applied, the CRC is optionally
//!   recomputed (flags bit 0) so the AEAD is reached, and the result is opened
//!   as (handle, seq), or as other_handle (bit 1) / other_seq (bit 2). Opening
//!   may succeed only if bytes and position are unchanged, and then must.
//! - odd: *raw*. `handle[16] seq[8] envelope...`: arbitrary bytes opened as
//!   (handle, seq). Success is allowed only if the envelope is exactly what
//!   sealing the returned plaintext there produces (AES-GCM-SIV is
//!   deterministic for a given nonce), i.e. only if it is authentic.
//!
//! Every seal and open runs through both the store's cipher (AWS-LC) and
//! the reference implementation (RustCrypto): they must produce the same
//! envelope, and accept and refuse exactly the same inputs.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use shredstore::Handle;
use shredstore::internals::reference::ReferenceSivCipher;
use shredstore::internals::{Crc32, Envelope, EnvelopeKind};
use shredstore::internals::{NONCE_LEN, Secret32, SivCipher, hkdf_sha256};

/// The fixed key, derived like a store's message key.
fn key() -> Secret32 {
    let user_secret = Secret32::from_bytes([0x42; 32]);
    hkdf_sha256(
        user_secret.expose(),
        &[7; 32],
        &[b"shredstore/v1/message", &[1; 16], &1u32.to_be_bytes()],
    )
}

/// The store's cipher under the fixed key.
static CIPHER: LazyLock<SivCipher> = LazyLock::new(|| SivCipher::new(&key()));
/// The reference implementation under the same key.
static REFERENCE: LazyLock<ReferenceSivCipher> = LazyLock::new(|| ReferenceSivCipher::new(&key()));

/// Seals with both implementations; they must agree byte for byte.
fn seal(nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let ours = CIPHER.seal(nonce, aad, plaintext).expect("seal");
    let theirs = REFERENCE
        .seal(nonce, aad, plaintext)
        .expect("reference seal");
    assert_eq!(ours, theirs, "AWS-LC and RustCrypto sealed differently");
    ours
}

/// Reads fixed-size fields; past the end of the input it yields zeros.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// What the store does on read (minus the epoch-vs-key-record check): decode,
/// rebuild the AAD from the position and the envelope's header, open.
fn open(handle: &Handle, seq: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let env = Envelope::decode(bytes).ok()?;
    // As the store does: the AAD starts with the envelope's own kind byte.
    let aad = Envelope::aad_of(env.kind, handle, seq, env.epoch, env.timestamp_ms);
    let ours = CIPHER.open(&env.nonce, &aad, env.sealed).ok();
    let theirs = REFERENCE.open(&env.nonce, &aad, env.sealed).ok();
    assert_eq!(ours, theirs, "AWS-LC and RustCrypto disagree on an open");
    ours
}

fn tamper(mut c: Cursor<'_>) {
    let handle = Handle::from_bytes(c.take());
    let seq = c.u64();
    let epoch = c.u32();
    let timestamp_ms = c.u64();
    let nonce: [u8; NONCE_LEN] = c.take();
    let flags = c.u8();
    let other_handle = Handle::from_bytes(c.take());
    let other_seq = c.u64();
    let edits: Vec<(u8, u16, u8)> = (0..c.u8() % 5).map(|_| (c.u8(), c.u16(), c.u8())).collect();
    let payload = c.rest();

    let aad = Envelope::aad_of(EnvelopeKind::Message, &handle, seq, epoch, timestamp_ms);
    let sealed = seal(&nonce, &aad, payload);
    let mut original = Vec::new();
    Envelope {
        kind: EnvelopeKind::Message,
        epoch,
        timestamp_ms,
        nonce,
        sealed: &sealed,
    }
    .encode(&mut original);

    let mut bytes = original.clone();
    for (kind, pos, val) in edits {
        let pos = usize::from(pos);
        match kind % 4 {
            0 if !bytes.is_empty() => {
                let i = pos % bytes.len();
                bytes[i] ^= val.max(1);
            }
            1 => bytes.truncate(pos % (bytes.len() + 1)),
            2 => bytes.insert(pos % (bytes.len() + 1), val),
            3 if !bytes.is_empty() => {
                let i = pos % bytes.len();
                bytes[i] = val;
            }
            _ => {}
        }
    }
    if flags & 1 != 0 && bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = Crc32::of(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.0.to_be_bytes());
    }
    let open_handle = if flags & 2 != 0 { other_handle } else { handle };
    let open_seq = if flags & 4 != 0 { other_seq } else { seq };

    let authentic = bytes == original && open_handle == handle && open_seq == seq;
    match open(&open_handle, open_seq, &bytes) {
        Some(plain) => {
            assert!(
                authentic,
                "a tampered or moved envelope opened: bytes changed: {}, handle changed: {}, seq changed: {}",
                bytes != original,
                open_handle != handle,
                open_seq != seq
            );
            assert_eq!(
                plain, payload,
                "an authentic envelope opened to another payload"
            );
        }
        None => assert!(!authentic, "an authentic envelope failed to open"),
    }
}

fn raw(mut c: Cursor<'_>) {
    let handle = Handle::from_bytes(c.take());
    let seq = c.u64();
    let bytes = c.rest();
    if let Some(plain) = open(&handle, seq, bytes) {
        let env = Envelope::decode(bytes).expect("opened, so it decodes");
        let aad = Envelope::aad_of(
            EnvelopeKind::Message,
            &handle,
            seq,
            env.epoch,
            env.timestamp_ms,
        );
        let resealed = seal(&env.nonce, &aad, &plain);
        assert_eq!(
            resealed, env.sealed,
            "an envelope opened that is not the sealing of its plaintext here"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    if c.u8() % 2 == 0 {
        tamper(c);
    } else {
        raw(c);
    }
});

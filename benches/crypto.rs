//! Cost of the cryptography on the hot path: sealing and opening a message
//! with a cached cipher (the store's AWS-LC cipher, and RustCrypto's
//! reference implementation beside it), deriving a user's message key, and
//! computing a handle.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use shredstore::internals::reference::ReferenceSivCipher;
use shredstore::internals::{Secret32, SivCipher, hkdf_sha256};
use shredstore::{Durability, UserId};

#[path = "support/mod.rs"]
mod support;

const SIZES: [usize; 4] = [64, 256, 1024, 4096];

fn seal_open(c: &mut Criterion) {
    let cipher = SivCipher::new(&Secret32::from_bytes([3; 32]));
    let reference = ReferenceSivCipher::new(&Secret32::from_bytes([3; 32]));
    let nonce = [9u8; 12];
    let aad = [1u8; 41];
    let mut group = c.benchmark_group("crypto");
    for size in SIZES {
        let plaintext = support::payload(size, 1);
        let sealed = cipher.seal(&nonce, &aad, &plaintext).expect("seal");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| cipher.seal(&nonce, &aad, black_box(p)).expect("seal"))
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| cipher.open(&nonce, &aad, black_box(s)).expect("open"))
        });
        group.bench_with_input(
            BenchmarkId::new("seal-rustcrypto", size),
            &plaintext,
            |b, p| b.iter(|| reference.seal(&nonce, &aad, black_box(p)).expect("seal")),
        );
        group.bench_with_input(
            BenchmarkId::new("open-rustcrypto", size),
            &sealed,
            |b, s| b.iter(|| reference.open(&nonce, &aad, black_box(s)).expect("open")),
        );
    }
    group.throughput(Throughput::Elements(1));
    // What a key-cache miss costs: HKDF-SHA256 of the message key from the
    // user secret, then the AES-256-GCM-SIV key schedule.
    let secret = Secret32::from_bytes([5; 32]);
    let salt = [6u8; 32];
    let handle = [7u8; 16];
    let message_key = || {
        hkdf_sha256(
            black_box(secret.expose()),
            &salt,
            &[b"shredstore/v1/message", &handle, &1u32.to_be_bytes()],
        )
    };
    group.bench_function("derive_message_key", |b| {
        b.iter(|| SivCipher::new(&message_key()))
    });
    group.bench_function("derive_message_key-rustcrypto", |b| {
        b.iter(|| ReferenceSivCipher::new(&message_key()))
    });
    // Handle = HMAC-SHA256(handle key, user id), computed on every call.
    let dir = support::tempdir();
    let store = support::open_store(dir.path(), Durability::Buffered);
    let user = UserId::new("user-00001234").expect("user");
    group.bench_function("handle_hmac", |b| b.iter(|| store.handle(black_box(&user))));
    group.finish();
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    seal_open(&mut c);
    c.final_summary();
}

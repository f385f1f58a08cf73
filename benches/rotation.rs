//! Root-key rotation rate: the time to rewrap every key record of a store
//! with 20,000 users and 1,000 conversations (21,000 records) under a new
//! root key, run to the end by `finish_rotation` (batches of 4096, no
//! pause) and by the background thread at its default pace (batches of
//! 256, 5 ms apart). Each iteration rotates the same store once more, to a
//! fresh key. The baseline, measured in the same run: writing 21,000 plain
//! records of a key record's size into a plain RocksDB in batches of 4096
//! (the write a rewrap cannot avoid).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use shredstore::{ConversationId, Durability, Options, RootKey, Store, UserId};

#[path = "support/mod.rs"]
mod support;

const USERS: usize = 20_000;
const CONVS: usize = 1_000;
const RECORDS: usize = USERS + CONVS;
/// About a user key record's size (version, epoch, wrapped secret, times, state, CRC).
const RECORD_BYTES: usize = 80;

fn key(generation: u64) -> RootKey {
    let mut k = [0u8; 32];
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&generation.to_be_bytes());
    }
    RootKey::from_bytes(k)
}

fn options(dir: &std::path::Path, generation: u64) -> Options {
    Options::new(dir, key(generation))
        .durability(Durability::Buffered)
        .purge_interval(None)
}

/// A store of `USERS` users (one message each) and `CONVS` conversations
/// under the root key of generation 1.
fn filled() -> tempfile::TempDir {
    let dir = support::tempdir();
    let store = Store::open(options(dir.path(), 1)).expect("open");
    let payload = support::payload(support::PAYLOAD, 0);
    for u in support::user_ids(USERS) {
        store.append(&u, &payload).expect("append");
    }
    let author = UserId::new("rotation-bench-author").expect("id");
    for c in 0..CONVS {
        let id = ConversationId::new(format!("rotation-bench-room-{c}")).expect("id");
        store
            .conversation(&id)
            .append(&author, &payload)
            .expect("append");
    }
    store.close().expect("close");
    dir
}

fn rotation(c: &mut Criterion) {
    let mut group = c.benchmark_group("rotation");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    let param = RECORDS.to_string();
    let dir = filled();
    let mut generation = 1u64;
    group.bench_function(BenchmarkId::new("finish", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The background thread does one record, then sleeps.
                let store = Store::open(
                    options(dir.path(), generation + 1)
                        .previous_root_key(key(generation))
                        .rotation_pace(1, Duration::from_secs(3600)),
                )
                .expect("open");
                let t = Instant::now();
                store.finish_rotation().expect("rotation");
                total += t.elapsed();
                store.close().expect("close");
                generation += 1;
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("background_default_pace", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let store = Store::open(
                    options(dir.path(), generation + 1).previous_root_key(key(generation)),
                )
                .expect("open");
                while store.rotation().is_some() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                total += t.elapsed();
                store.close().expect("close");
                generation += 1;
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("plain_rewrite", &param), |b| {
        let plain_dir = support::tempdir();
        let db = support::open_plain(plain_dir.path());
        let value = vec![0x5a; RECORD_BYTES];
        let mut round = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let t = Instant::now();
                for chunk in (0..RECORDS as u64).collect::<Vec<_>>().chunks(4096) {
                    let mut wb = rocksdb::WriteBatch::default();
                    for i in chunk {
                        let mut k = [0u8; 16];
                        k[..8].copy_from_slice(&i.to_be_bytes());
                        k[8..].copy_from_slice(&round.to_be_bytes());
                        wb.put(k, &value);
                    }
                    db.write(wb).expect("write");
                }
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    rotation(&mut c);
    c.final_summary();
    let param = RECORDS.to_string();
    let plain = support::median_ns("rotation", "plain_rewrite", &param);
    println!("\nroot-key rotation of {RECORDS} key records ({USERS} users, {CONVS} conversations)");
    for (function, what) in [
        ("finish", "finish_rotation (batches of 4096, no pause)"),
        (
            "background_default_pace",
            "background thread, default pace (256 per 5 ms), incl. open",
        ),
    ] {
        if let Some(t) = support::median_ns("rotation", function, &param) {
            let rate = RECORDS as f64 / (t / 1e9);
            match plain {
                Some(p) => println!(
                    "{what}: {:.1} ms, {rate:.0} records/s, {:.2}x the plain rewrite's time",
                    t / 1e6,
                    t / p
                ),
                None => println!("{what}: {:.1} ms, {rate:.0} records/s", t / 1e6),
            }
        }
    }
}

//! Encrypted `append` against a plain RocksDB `put` of the same payloads with
//! the same tuning (see `shredstore::open_plain_baseline`), side by side in
//! one criterion group, for 1 and 10,000 users (Zipf-distributed), batches of
//! 1 and 64, and both durabilities. The ratio table at the end is
//! encrypted throughput / plain throughput from this run's medians.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use rocksdb::{WriteBatch, WriteOptions};
use shredstore::Durability;

#[path = "support/mod.rs"]
mod support;

const GROUP: &str = "append";

fn param(users: usize, batch: usize, durability: Durability) -> String {
    let d = match durability {
        Durability::Buffered => "buffered",
        Durability::Sync => "sync",
    };
    format!("u{users}-b{batch}-{d}")
}

fn cases() -> Vec<(usize, usize, Durability)> {
    let mut v = Vec::new();
    for durability in [Durability::Buffered, Durability::Sync] {
        for users in [1, 10_000] {
            for batch in [1, 64] {
                v.push((users, batch, durability));
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(4));
    let payloads: Vec<Vec<u8>> = (0..64)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();
    for (users, batch, durability) in cases() {
        let p = param(users, batch, durability);
        let ids = support::user_ids(users);
        group.throughput(Throughput::Elements(batch as u64));
        if durability == Durability::Sync {
            group.sample_size(20);
        } else {
            group.sample_size(50);
        }

        let dir = support::tempdir();
        let store = support::open_store(dir.path(), durability);
        let mut pick = support::UserPicker::new(users);
        group.bench_function(BenchmarkId::new("encrypted", &p), |b| {
            b.iter(|| {
                let user = &ids[pick.next()];
                if batch == 1 {
                    store.append(user, &payloads[0]).expect("append");
                } else {
                    store
                        .append_batch(user, &payloads[..batch])
                        .expect("append_batch");
                }
            })
        });
        drop(store);
        drop(dir);

        let dir = support::tempdir();
        let db = support::open_plain(dir.path());
        let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        let mut seqs = vec![0u64; users];
        let mut pick = support::UserPicker::new(users);
        group.bench_function(BenchmarkId::new("plain", &p), |b| {
            b.iter(|| {
                let u = pick.next();
                let mut wb = WriteBatch::default();
                for payload in &payloads[..batch] {
                    seqs[u] += 1;
                    wb.put_cf(cf, support::plain_key(&ids[u], seqs[u]), payload);
                }
                db.write_opt(wb, &wo).expect("put");
            })
        });
        drop(db);
        drop(dir);
    }
    group.finish();
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    bench(&mut c);
    c.final_summary();
    let params: Vec<String> = cases()
        .into_iter()
        .map(|(u, b, d)| param(u, b, d))
        .collect();
    support::print_ratios(
        "append throughput, encrypted / plain RocksDB (200-byte payloads)",
        GROUP,
        "encrypted",
        "plain",
        &params,
    );
}

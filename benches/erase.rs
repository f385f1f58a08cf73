//! Erase is O(1): the time to erase a user with 10, 1,000 and 100,000
//! messages, held in the memtable or flushed to an SST file (each iteration
//! erases a freshly written user in a fresh store; writing it is not timed). And the cost of `purge` after erasing 1% of the users, against a
//! full manual compaction of a plain RocksDB holding the same bytes.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use rocksdb::{BottommostLevelCompaction, CompactOptions};
use shredstore::{Durability, UserId};

#[path = "support/mod.rs"]
mod support;

const COUNTS: [usize; 3] = [10, 1_000, 100_000];
const PURGE_USERS: usize = 2_000;
const PURGE_PER_USER: usize = 100;

fn erase(c: &mut Criterion) {
    let mut group = c.benchmark_group("erase");
    // Every iteration needs a user with N fresh messages, so keep the number
    // of iterations small: flat sampling, one erase per sample, minimal
    // warm-up. An erase is one fsync, whose latency varies a lot on a shared
    // virtual disk, hence 30 samples and the median.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    let payloads: Vec<Vec<u8>> = (0..1000)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();
    for (variant, flushed) in [("memtable", false), ("flushed", true)] {
        for n in COUNTS {
            group.bench_function(BenchmarkId::new(variant, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += timed_erase(n, flushed, &payloads);
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

/// Writes a user with `n` messages into a fresh store (so that no flush or
/// compaction triggered by earlier setup is still running: on 2 cores it
/// would slow the erase's fsync, more so the more was written), optionally
/// flushes them into an SST file and warms the block cache with a read, as
/// on a running store; then times the erase alone, after a small synced
/// write that puts the disk in the same state whatever `n` was.
fn timed_erase(n: usize, flushed: bool, payloads: &[Vec<u8>]) -> Duration {
    let dir = support::tempdir();
    let store = support::open_store(dir.path(), Durability::Sync);
    let user = UserId::new("erase-me").expect("id");
    let mut left = n;
    while left > 0 {
        let k = left.min(payloads.len());
        store.append_batch(&user, &payloads[..k]).expect("append");
        left -= k;
    }
    if flushed {
        store.flush().expect("flush");
        // The newest message is what erase looks up (and what a chat reads).
        assert_eq!(store.read(&user, n as u64, 1).expect("read").len(), 1);
    }
    // One small synced write first: the first fsync after a large synced
    // write costs up to ~2x more on this disk whatever it writes (measured:
    // with this step, erase after 10 and after 1,000 messages took the same
    // 160-180 µs median; without it, 145 vs 290 µs). The erase is then timed
    // with the disk in the same state for every message count.
    store
        .append(&UserId::new("someone-else").expect("id"), b"x")
        .expect("append");
    let start = Instant::now();
    let erased = store.erase(&user).expect("erase");
    let took = start.elapsed();
    assert_eq!(erased.messages_erased, n as u64);
    took
}

fn purge(c: &mut Criterion) {
    let mut group = c.benchmark_group("purge");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    let ids = support::user_ids(PURGE_USERS);
    let payloads: Vec<Vec<u8>> = (0..PURGE_PER_USER as u64)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();
    let param = format!("1pct-of-{PURGE_USERS}x{PURGE_PER_USER}");

    group.bench_function(BenchmarkId::new("purge", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = support::tempdir();
                let store = support::open_store(dir.path(), Durability::Buffered);
                for user in &ids {
                    store.append_batch(user, &payloads).expect("append");
                }
                store.flush().expect("flush");
                for user in ids.iter().step_by(100) {
                    store.erase(user).expect("erase");
                }
                let start = Instant::now();
                let report = store.purge().expect("purge");
                total += start.elapsed();
                assert!(report.complete);
            }
            total
        })
    });

    group.bench_function(BenchmarkId::new("plain_full_compaction", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = support::tempdir();
                let db = support::open_plain(dir.path());
                support::fill_plain(&db, &ids, &payloads);
                let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
                let start = Instant::now();
                let mut opts = CompactOptions::default();
                opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
                db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    erase(&mut c);
    purge(&mut c);
    c.final_summary();

    for variant in ["memtable", "flushed"] {
        let Some(base) = support::median_ns("erase", variant, &COUNTS[0].to_string()) else {
            continue;
        };
        println!("\nerase latency vs message count, messages in {variant} (Sync durability)");
        println!("{:>10} {:>12} {:>14}", "messages", "median", "vs 10 msgs");
        for n in COUNTS {
            if let Some(t) = support::median_ns("erase", variant, &n.to_string()) {
                println!("{n:>10} {:>10.1}µs {:>13.2}x", t / 1000.0, t / base);
            }
        }
    }
    let param = format!("1pct-of-{PURGE_USERS}x{PURGE_PER_USER}");
    if let (Some(p), Some(f)) = (
        support::median_ns("purge", "purge", &param),
        support::median_ns("purge", "plain_full_compaction", &param),
    ) {
        println!(
            "\npurge after erasing 1% of {PURGE_USERS} users x {PURGE_PER_USER} messages: \
             {:.1} ms; plain full compaction of the same bytes: {:.1} ms; ratio {:.2}x",
            p / 1e6,
            f / 1e6,
            p / f
        );
    }
}

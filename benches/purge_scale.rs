//! Purge and the compaction filter at scale (issue 11, items 9 and 10).
//! Not a criterion bench: each case builds a store of its own and is run a
//! few times; the medians are printed (BENCHMARKS.md, "Purge at scale").
//!
//! - Purge cost grows with what the erased users' ranges touch: 20 and
//!   2,000 erased users among 20,000, against a full compaction of the same
//!   store (the work the old purge did past 64 pending users).
//! - One million erased users: open time and memory with every erasure
//!   purged (none is held in memory) and with every one pending, the cost of
//!   a compaction's snapshot of the filter state, and of an erasure's update
//!   to it, against cloning the whole map (the old snapshot).
//!
//! `cargo bench --features internals --bench purge_scale`; `QUICK=1` runs
//! one trial of each.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shredstore::internals::{EraseMarker, FilterState};
use shredstore::{Durability, Handle, Store, TestHooks, UserId};

const USERS: usize = 20_000;
const PER_USER: usize = 10;
const ERASED_USERS: usize = 1_000_000;

fn trials() -> usize {
    if std::env::var_os("QUICK").is_some() {
        1
    } else {
        3
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Target size of the `messages` SST files: RocksDB's 64 MiB default would
/// put this whole 40 MiB store in one file, which every erased user meets;
/// 512 KiB files give it the many-file layout of a large store.
const FILE_SIZE: u64 = 512 * 1024;

/// A store of `USERS` users with `PER_USER` messages each, compacted into
/// the bottommost level (many files, each a key range), with `erased` users
/// spread evenly erased.
fn build(erased: usize) -> (tempfile::TempDir, Store, Vec<UserId>) {
    let dir = support::tempdir();
    let hooks = TestHooks {
        target_file_size: Some(FILE_SIZE),
        ..TestHooks::default()
    };
    let store = Store::open(support::options(dir.path(), Durability::Buffered).test_hooks(hooks))
        .expect("open");
    let ids = support::user_ids(USERS);
    let payloads: Vec<Vec<u8>> = (0..PER_USER)
        .map(|i| vec![i as u8; support::PAYLOAD])
        .collect();
    for id in &ids {
        store.append_batch(id, &payloads).expect("append");
    }
    store.compact().expect("compact");
    for id in ids.iter().step_by(USERS / erased) {
        store.erase(id).expect("erase");
    }
    (dir, store, ids)
}

fn purge_cost() {
    println!(
        "\npurge among {USERS} users x {PER_USER} messages of {} B ({} KiB SST files)",
        support::PAYLOAD,
        FILE_SIZE / 1024
    );
    println!(
        "{:>8} {:>14} {:>22} {:>8}",
        "erased", "purge", "full compaction", "ratio"
    );
    for erased in [2usize, 20, 200, 2_000] {
        let (mut purge, mut full) = (Vec::new(), Vec::new());
        for _ in 0..trials() {
            let (_dir, store, ids) = build(erased);
            let start = Instant::now();
            let report = store.purge().expect("purge");
            purge.push(start.elapsed());
            assert!(report.complete, "{report:?}");
            assert_eq!(report.erasures_purged, erased);
            assert!(
                store
                    .verify_erasure(&ids[0])
                    .expect("verify")
                    .is_physically_erased()
            );
            drop(store);

            let (_dir, store, _) = build(erased);
            let start = Instant::now();
            store.compact().expect("compact");
            full.push(start.elapsed());
        }
        let (p, f) = (median(purge), median(full));
        println!(
            "{erased:>8} {:>11.1} ms {:>19.1} ms {:>7.2}x",
            ms(p),
            ms(f),
            p.as_secs_f64() / f.as_secs_f64()
        );
    }
}

/// Writes `ERASED_USERS` erasure markers (purged or pending) into a closed
/// store's `erased` column family, as a million past erasures would have.
fn million_markers(dir: &std::path::Path, purged: bool) {
    Store::open(support::options(dir, Durability::Buffered))
        .expect("create")
        .close()
        .expect("close");
    let db = rocksdb::DB::open_cf(
        &rocksdb::Options::default(),
        dir,
        shredstore::layout::ALL_CFS,
    )
    .expect("raw open");
    let cf = db.cf_handle(shredstore::layout::CF_ERASED).expect("cf");
    let mut value = Vec::new();
    EraseMarker {
        epoch: 1,
        erased_at_ms: 1_700_000_000_000,
        next_seq: 11,
        block_new: false,
        purged,
        log_position: 1,
    }
    .encode(&mut value);
    let mut wb = rocksdb::WriteBatch::default();
    for i in 0..ERASED_USERS as u64 {
        wb.put_cf(cf, handle(i).as_bytes(), &value);
        if wb.len() == 10_000 {
            db.write(std::mem::take(&mut wb)).expect("write");
        }
    }
    db.write(wb).expect("write");
    db.flush_cf(cf).expect("flush");
}

/// A spread-out handle (handles are HMAC outputs, uniform).
fn handle(i: u64) -> Handle {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    h[8..].copy_from_slice(&i.to_be_bytes());
    Handle::from_bytes(h)
}

fn million_erased() {
    println!("\n{ERASED_USERS} erased users");
    println!("{:>28} {:>12} {:>16}", "", "open", "memory after open");
    for purged in [true, false] {
        let mut open = Vec::new();
        let mut grown = 0u64;
        for _ in 0..trials() {
            let dir = support::tempdir();
            million_markers(dir.path(), purged);
            let before = rss();
            let start = Instant::now();
            let store =
                Store::open(support::options(dir.path(), Durability::Buffered)).expect("open");
            open.push(start.elapsed());
            grown = rss().saturating_sub(before);
            assert_eq!(
                store.stats().expect("stats").pending_erasures,
                if purged { 0 } else { ERASED_USERS as u64 }
            );
        }
        println!(
            "{:>28} {:>9.1} ms {:>12.1} MiB",
            if purged { "all purged" } else { "all pending" },
            ms(median(open)),
            grown as f64 / (1 << 20) as f64
        );
    }

    // The filter state itself, with a million pending erasures.
    let state = FilterState::new(None);
    let mut old: HashMap<Handle, u32> = HashMap::new();
    for i in 0..ERASED_USERS as u64 {
        state.insert_erased(handle(i), 1);
        old.insert(handle(i), 1);
    }
    let reps = 50;
    let start = Instant::now();
    for i in 0..reps {
        // Each compaction after an erasure: the erasure, then a snapshot.
        state.insert_erased(handle(ERASED_USERS as u64 + i), 1);
        std::hint::black_box(state.snapshot());
    }
    let new_cost = start.elapsed() / reps as u32;
    let start = Instant::now();
    for i in 0..reps {
        old.insert(handle(ERASED_USERS as u64 + i), 1);
        std::hint::black_box(old.clone());
    }
    let old_cost = start.elapsed() / reps as u32;
    let held = state.snapshot();
    let start = Instant::now();
    for i in 0..reps {
        // An erasure while a compaction holds the snapshot: one shard copied.
        state.insert_erased(handle(2 * ERASED_USERS as u64 + i), 1);
    }
    let update_cost = start.elapsed() / reps as u32;
    drop(held);
    println!(
        "erase + next compaction's snapshot: {:.1} µs (sharded copy-on-write); \
         cloning the whole map as before: {:.1} ms ({:.0}x)",
        new_cost.as_secs_f64() * 1e6,
        ms(old_cost),
        old_cost.as_secs_f64() / new_cost.as_secs_f64()
    );
    println!(
        "erase while a compaction holds a snapshot: {:.1} µs (copies one of {} shards)",
        update_cost.as_secs_f64() * 1e6,
        shredstore::internals::FILTER_SHARDS
    );
}

fn main() {
    purge_cost();
    million_erased();
}

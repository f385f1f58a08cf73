//! On-disk size: the same messages (10,000 users, Zipf-distributed, 200-byte
//! payloads) written to a store and to a plain RocksDB with the same tuning,
//! both flushed and fully compacted. Not a criterion bench: it measures bytes,
//! once. `FOOTPRINT_MESSAGES` overrides the message count (default 1,000,000).

use std::path::Path;

use rocksdb::WriteBatch;
use shredstore::Durability;

#[path = "support/mod.rs"]
mod support;

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Bytes of the SST files only (the data itself, without logs and manifests).
fn sst_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and only wants the harness to run quickly.
    if !std::env::args().any(|a| a == "--bench") {
        println!("footprint: run with `cargo bench --bench footprint`");
        return;
    }
    let total: usize = std::env::var("FOOTPRINT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    const USERS: usize = 10_000;
    const BATCH: usize = 64;
    let ids = support::user_ids(USERS);
    let payloads: Vec<Vec<u8>> = (0..BATCH as u64)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();
    let batches = total / BATCH;

    let enc_dir = support::tempdir();
    let store = support::open_store(enc_dir.path(), Durability::Buffered);
    let mut pick = support::UserPicker::new(USERS);
    for _ in 0..batches {
        store
            .append_batch(&ids[pick.next()], &payloads)
            .expect("append");
    }
    store.flush().expect("flush");
    store.compact().expect("compact");
    store.close().expect("close");

    let plain_dir = support::tempdir();
    {
        let db = support::open_plain(plain_dir.path());
        let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
        let mut seqs = vec![0u64; USERS];
        let mut pick = support::UserPicker::new(USERS);
        for _ in 0..batches {
            let u = pick.next();
            let mut wb = WriteBatch::default();
            for p in &payloads {
                seqs[u] += 1;
                wb.put_cf(cf, support::plain_key(&ids[u], seqs[u]), p);
            }
            db.write(wb).expect("write");
        }
        db.flush_cf(cf).expect("flush");
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    }

    let n = (batches * BATCH) as f64;
    let (e_all, p_all) = (dir_bytes(enc_dir.path()), dir_bytes(plain_dir.path()));
    let (e_sst, p_sst) = (sst_bytes(enc_dir.path()), sst_bytes(plain_dir.path()));
    println!(
        "on-disk size, {} messages of {} bytes, {USERS} users (Zipf), after flush + full compaction",
        batches * BATCH,
        support::PAYLOAD
    );
    println!(
        "{:<22} {:>14} {:>14} {:>8}",
        "", "encrypted", "plain", "ratio"
    );
    println!(
        "{:<22} {:>12.1}MB {:>12.1}MB {:>7.2}x",
        "SST files",
        e_sst as f64 / 1e6,
        p_sst as f64 / 1e6,
        e_sst as f64 / p_sst as f64
    );
    println!(
        "{:<22} {:>12.1}MB {:>12.1}MB {:>7.2}x",
        "whole directory",
        e_all as f64 / 1e6,
        p_all as f64 / 1e6,
        e_all as f64 / p_all as f64
    );
    println!(
        "{:<22} {:>12.1}B {:>13.1}B",
        "SST bytes per message",
        e_sst as f64 / n,
        p_sst as f64 / n
    );
}

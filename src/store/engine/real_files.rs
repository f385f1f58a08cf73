//! The SST and WAL readers against files this build's RocksDB writes with
//! the store's own options: every entry is found (the count the table's
//! properties give), with the column family, keys and kinds the store wrote;
//! and damaged copies of those files never make a reader panic or hang.

use std::path::{Path, PathBuf};

use super::sst::{EntryKind, Sst};
use super::wal;
use crate::{Durability, EraseOptions, Options, RootKey, Store, UserId};

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// A store with two users' messages, a redaction (an overwritten version)
/// and an erasure with a range tombstone, in the WAL (returned before the
/// flush) and then in SST files.
fn written(dir: &Path) -> (Vec<Vec<u8>>, Store, [UserId; 2]) {
    let store = Store::open(
        Options::new(dir, RootKey::from_bytes([3; 32]))
            .durability(Durability::Buffered)
            .purge_interval(None)
            .erase_delete_range(true),
    )
    .unwrap();
    let (a, b) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    for u in [&a, &b] {
        let payloads: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 100]).collect();
        store.append_batch(u, &payloads).unwrap();
    }
    store.flush().unwrap();
    store.redact_as(&a, 5, "mistake", "test").unwrap();
    store.erase_with(&b, EraseOptions::default()).unwrap();
    store.sync().unwrap();
    let wals = files(dir, ".log")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    store.flush().unwrap();
    (wals, store, [a, b])
}

#[test]
fn every_entry_of_the_stores_files_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (wals, store, [a, b]) = written(dir.path());
    let (ha, hb) = (store.handle(&a), store.handle(&b));
    let mut messages_a = 0;
    let mut messages_b = 0;
    let mut range_tombstones = 0;
    let mut versions_of_a5 = 0;
    let mut key_a5 = ha.as_bytes().to_vec();
    key_a5.extend_from_slice(&5u64.to_be_bytes());
    for path in files(dir.path(), ".sst") {
        let bytes = std::fs::read(&path).unwrap();
        let sst = Sst::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(sst.format_version(), 7);
        let cf = sst.column_family().expect("a column family name");
        assert!(
            super::Cf::from_name(cf).is_some() || cf == b"default",
            "{}",
            String::from_utf8_lossy(cf)
        );
        let entries: Vec<_> = sst.entries().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            entries.len() as u64,
            sst.property_u64(b"rocksdb.num.entries").unwrap().unwrap(),
            "{}",
            path.display()
        );
        for e in &entries {
            if cf == b"messages" && e.kind == EntryKind::Value {
                if e.user_key.starts_with(ha.as_bytes()) {
                    messages_a += 1;
                }
                if e.user_key.starts_with(hb.as_bytes()) {
                    messages_b += 1;
                }
                if *e.user_key == *key_a5 {
                    versions_of_a5 += 1;
                }
            }
            if e.kind == EntryKind::RangeDeletion && e.user_key.starts_with(hb.as_bytes()) {
                range_tombstones += 1;
            }
        }
    }
    // Every version is there: the original and the redaction marker of
    // a/5 (in two files), bob's messages under his range tombstones.
    assert_eq!(messages_a, 301);
    assert_eq!(versions_of_a5, 2);
    assert_eq!(messages_b, 300);
    assert!(range_tombstones >= 1);

    // The WAL held the redaction and the erasure as write batches.
    let batches: Vec<(u64, usize)> = wals
        .iter()
        .flat_map(|w| wal::batches(w).map(|b| b.map(|(seq, bytes)| (seq, bytes.len()))))
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(batches.len() >= 2, "{batches:?}");
    let firsts: Vec<Option<u64>> = wals
        .iter()
        .map(|w| wal::first_sequence(w).unwrap())
        .collect();
    assert!(firsts.iter().flatten().all(|&s| s > 0), "{firsts:?}");
}

#[test]
fn damaged_copies_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (wals, _store, _) = written(dir.path());
    let mut inputs: Vec<Vec<u8>> = files(dir.path(), ".sst")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    inputs.extend(wals);
    let mut runs = 0u64;
    for bytes in &inputs {
        let n = bytes.len();
        // Every position of the tail (footer, metaindex, properties,
        // index), the head, and a stride through the rest.
        let positions: Vec<usize> = (n.saturating_sub(2048)..n)
            .chain(0..n.min(512))
            .chain((0..n).step_by((n / 500).max(1)))
            .collect();
        for &at in &positions {
            for flip in [1u8, 0x80, 0xff] {
                let mut g = bytes.clone();
                g[at] ^= flip;
                exercise(&g);
                runs += 1;
            }
            if at % 11 == 0 {
                exercise(&bytes[..at]);
                runs += 1;
            }
        }
    }
    assert!(runs > 1_000);
}

fn exercise(b: &[u8]) {
    if let Ok(sst) = Sst::parse(b) {
        let _ = sst.column_family();
        for e in sst.entries() {
            std::hint::black_box(&e);
        }
    }
    let _ = wal::first_sequence(b);
    for r in wal::batches(b) {
        std::hint::black_box(&r);
    }
}

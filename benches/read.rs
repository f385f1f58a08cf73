//! Reading 100 messages of a user: the store's `read` (CRC check, AEAD open,
//! per message) against plain RocksDB prefix iteration over the same payload
//! bytes with the same tuning. Both stores hold 2,000 users x 100 messages
//! of 200 bytes, flushed and compacted, and serve from the block cache.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use rocksdb::{Direction, IteratorMode, ReadOptions};
use shredstore::Durability;

#[path = "support/mod.rs"]
mod support;

const GROUP: &str = "read";
const USERS: usize = 2_000;
const PER_USER: usize = 100;

fn bench(c: &mut Criterion) {
    let ids = support::user_ids(USERS);
    let payloads: Vec<Vec<u8>> = (0..PER_USER as u64)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();
    let param = format!("{PER_USER}-of-{USERS}x{PER_USER}");

    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(PER_USER as u64));

    let dir = support::tempdir();
    let store = support::open_store(dir.path(), Durability::Buffered);
    for user in &ids {
        store.append_batch(user, &payloads).expect("append_batch");
    }
    store.flush().expect("flush");
    store.compact().expect("compact");
    let mut pick = support::UserPicker::new(USERS);
    group.bench_function(BenchmarkId::new("encrypted", &param), |b| {
        b.iter(|| {
            let msgs = store.read(&ids[pick.next()], 0, PER_USER).expect("read");
            assert_eq!(msgs.len(), PER_USER);
            black_box(msgs)
        })
    });
    drop(store);

    let dir2 = support::tempdir();
    let db = support::open_plain(dir2.path());
    let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
    support::fill_plain(&db, &ids, &payloads);
    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    let mut pick = support::UserPicker::new(USERS);
    group.bench_function(BenchmarkId::new("plain", &param), |b| {
        b.iter(|| {
            let user = &ids[pick.next()];
            let start = support::plain_key(user, 0);
            let mut end = support::plain_prefix(user).to_vec();
            end.extend_from_slice(&[0xff; 8]);
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end);
            let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(PER_USER);
            for item in db.iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward)) {
                let (k, v) = item.expect("iter");
                let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("seq"));
                out.push((seq, v.to_vec()));
                if out.len() == PER_USER {
                    break;
                }
            }
            assert_eq!(out.len(), PER_USER);
            black_box(out)
        })
    });
    group.finish();
    drop(db);
    drop(dir);
    drop(dir2);
    let _ = param;
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    bench(&mut c);
    c.final_summary();
    support::print_ratios(
        "read throughput, encrypted / plain RocksDB (100 messages of 200 bytes)",
        GROUP,
        "encrypted",
        "plain",
        &[format!("{PER_USER}-of-{USERS}x{PER_USER}")],
    );
}

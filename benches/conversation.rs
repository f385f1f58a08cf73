//! Conversations against plain RocksDB with the same tuning:
//! - `append`: a conversation append (author and conversation keys, the
//!   slot and its author-index entry in one batch) against one plain `put`,
//!   over 1,000 conversations picked with Zipf, 5 authors each, Buffered,
//!   200-byte payloads.
//! - `read-back`: the 50 newest slots of a 5-author conversation
//!   (`read_back`, one AEAD open per slot under its author's key) against a
//!   plain reverse scan of 50 values, in 1,000 conversations of 200
//!   messages, flushed and compacted, from the block cache.
//!
//! The ratio table at the end is conversation / plain throughput from this
//! run's medians.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use shredstore::{ConversationId, Durability, UserId};

#[path = "support/mod.rs"]
mod support;

const GROUP: &str = "conversation";
const CONVERSATIONS: usize = 1_000;
const AUTHORS: usize = 5;
const PER_CONVERSATION: usize = 200;
const BACK: usize = 50;

fn conversation_ids(n: usize) -> Vec<ConversationId> {
    (0..n)
        .map(|i| ConversationId::new(format!("room-{i:08}")).expect("conversation id"))
        .collect()
}

fn authors() -> Vec<UserId> {
    support::user_ids(AUTHORS)
}

/// The plain baseline's key of a conversation slot (the room id as prefix).
fn plain_key(conv: &ConversationId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    let id = conv.as_bytes();
    k[..id.len()].copy_from_slice(id);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    let convs = conversation_ids(CONVERSATIONS);
    let authors = authors();
    let payload = support::payload(support::PAYLOAD, 1);

    let dir = support::tempdir();
    let store = support::open_store(dir.path(), Durability::Buffered);
    let mut pick = support::UserPicker::new(CONVERSATIONS);
    let mut n = 0usize;
    group.bench_function(BenchmarkId::new("encrypted", "append"), |b| {
        b.iter(|| {
            n += 1;
            store
                .conversation(&convs[pick.next()])
                .append(&authors[n % AUTHORS], &payload)
                .expect("append")
        })
    });
    drop(store);
    drop(dir);

    let dir = support::tempdir();
    let db = support::open_plain(dir.path());
    let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
    let wo = WriteOptions::default();
    let mut seqs = vec![0u64; CONVERSATIONS];
    let mut pick = support::UserPicker::new(CONVERSATIONS);
    group.bench_function(BenchmarkId::new("plain", "append"), |b| {
        b.iter(|| {
            let c = pick.next();
            seqs[c] += 1;
            let mut wb = WriteBatch::default();
            wb.put_cf(cf, plain_key(&convs[c], seqs[c]), &payload);
            db.write_opt(wb, &wo).expect("put");
        })
    });
    drop(db);
    drop(dir);
    group.finish();
}

fn bench_read_back(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(BACK as u64));
    let convs = conversation_ids(CONVERSATIONS);
    let authors = authors();
    let payloads: Vec<Vec<u8>> = (0..PER_CONVERSATION as u64)
        .map(|i| support::payload(support::PAYLOAD, i))
        .collect();

    let dir = support::tempdir();
    let store = support::open_store(dir.path(), Durability::Buffered);
    for conv in &convs {
        let c = store.conversation(conv);
        // Authors take turns in runs of 8.
        for (i, run) in payloads.chunks(8).enumerate() {
            c.append_batch(&authors[i % AUTHORS], run)
                .expect("append_batch");
        }
    }
    store.flush().expect("flush");
    store.compact().expect("compact");
    let mut pick = support::UserPicker::new(CONVERSATIONS);
    group.bench_function(BenchmarkId::new("encrypted", "read-back-50"), |b| {
        b.iter(|| {
            let items = store
                .conversation(&convs[pick.next()])
                .read_back(u64::MAX, BACK)
                .expect("read_back");
            assert_eq!(items.len(), BACK);
            black_box(items)
        })
    });
    drop(store);

    let dir2 = support::tempdir();
    let db = support::open_plain(dir2.path());
    let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
    for conv in &convs {
        let mut wb = WriteBatch::default();
        for (i, p) in payloads.iter().enumerate() {
            wb.put_cf(cf, plain_key(conv, i as u64 + 1), p);
        }
        db.write(wb).expect("write");
    }
    db.flush_cf(cf).expect("flush");
    db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    let mut pick = support::UserPicker::new(CONVERSATIONS);
    group.bench_function(BenchmarkId::new("plain", "read-back-50"), |b| {
        b.iter(|| {
            let conv = &convs[pick.next()];
            let start = plain_key(conv, u64::MAX);
            let mut ro = ReadOptions::default();
            ro.set_iterate_lower_bound(plain_key(conv, 0).to_vec());
            let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(BACK);
            for item in db.iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Reverse)) {
                let (k, v) = item.expect("iter");
                let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("seq"));
                out.push((seq, v.to_vec()));
                if out.len() == BACK {
                    break;
                }
            }
            assert_eq!(out.len(), BACK);
            black_box(out)
        })
    });
    group.finish();
    drop(db);
    drop(dir);
    drop(dir2);
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    bench_append(&mut c);
    bench_read_back(&mut c);
    c.final_summary();
    support::print_ratios(
        "conversation throughput, encrypted / plain RocksDB (200-byte payloads, 5 authors)",
        GROUP,
        "encrypted",
        "plain",
        &["append".to_owned(), "read-back-50".to_owned()],
    );
}

//! Round trips: many users, interleaved appends, read ranges and limits,
//! streaming reads, batch atomicity; on both engines.

mod common;

use std::collections::BTreeMap;

use common::engines::{Fixture, on_both_engines};
use common::user;
use shredstore::{Error, InvalidArgument, UserId};

on_both_engines!(
    interleaved_users_read_back_in_seq_order,
    read_ranges_and_limits,
    streaming_iterator_matches_read,
    batch_is_atomic_and_consecutive,
    empty_payload_round_trips,
    binary_user_ids_are_distinct_users,
    idempotent_append_returns_the_original_seq,
);

fn payload(u: usize, i: usize) -> Vec<u8> {
    format!("user {u} message {i} {}", "x".repeat(i % 50)).into_bytes()
}

fn interleaved_users_read_back_in_seq_order(f: &Fixture) {
    let store = f.open_buffered();
    let users: Vec<UserId> = (0..40).map(|u| user(&format!("user-{u}"))).collect();
    let mut model: BTreeMap<usize, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for i in 0..25 {
        for (u, id) in users.iter().enumerate() {
            let p = payload(u, i);
            let a = store.append(id, &p).unwrap();
            model.entry(u).or_default().push((a.seq, p));
        }
    }
    for (u, id) in users.iter().enumerate() {
        let want = &model[&u];
        // Seqs start at 1 and are consecutive per user.
        let seqs: Vec<u64> = want.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=25).collect::<Vec<u64>>(), "user {u}");
        let got = store.read(id, 0, 100).unwrap();
        assert_eq!(got.len(), 25);
        for (m, (seq, p)) in got.iter().zip(want) {
            assert_eq!((m.seq, &m.payload), (*seq, p));
        }
    }
}

fn read_ranges_and_limits(f: &Fixture) {
    let store = f.open_buffered();
    let a = user("alice");
    for i in 0..100 {
        store.append(&a, format!("m{i}").as_bytes()).unwrap();
    }
    let page = store.read(&a, 10, 5).unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(page[0].payload, b"m9");
    assert_eq!(store.read(&a, 98, 10).unwrap().len(), 3);
    assert!(store.read(&a, 101, 10).unwrap().is_empty());
    assert!(store.read(&a, u64::MAX, 10).unwrap().is_empty());
    // Paging through everything gives everything once.
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read(&a, from, 7).unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        all.extend(page);
    }
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    // An unknown user reads as empty.
    assert!(store.read(&user("nobody"), 0, 10).unwrap().is_empty());
}

fn streaming_iterator_matches_read(f: &Fixture) {
    let store = f.open_buffered();
    let a = user("streamer");
    let payloads: Vec<Vec<u8>> = (0..300).map(|i| payload(1, i)).collect();
    store.append_batch(&a, &payloads[..150]).unwrap();
    store.append_batch(&a, &payloads[150..]).unwrap();
    let streamed: Vec<_> = store
        .read_iter(&a, 0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(streamed.len(), 300);
    for (m, p) in streamed.iter().zip(&payloads) {
        assert_eq!(&m.payload, p);
    }
    let tail: Vec<u64> = store
        .read_iter(&a, 299)
        .unwrap()
        .map(|m| m.unwrap().seq)
        .collect();
    assert_eq!(tail, vec![299, 300]);
}

fn batch_is_atomic_and_consecutive(f: &Fixture) {
    let store = f.open();
    let a = user("batcher");
    store.append(&a, b"first").unwrap();
    let acks = store
        .append_batch(&a, &[b"b1".as_slice(), b"b2", b"", b"b4"])
        .unwrap();
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert!(acks.iter().all(|x| x.timestamp_ms == acks[0].timestamp_ms));

    // One oversize payload rejects the whole batch; nothing of it is stored.
    let big = vec![0u8; shredstore::DEFAULT_MAX_PAYLOAD + 1];
    let err = store
        .append_batch(&a, &[b"ok".to_vec(), big, b"ok".to_vec()])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument(InvalidArgument::PayloadTooLarge { .. })
    ));
    let all = store.read(&a, 0, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[2].payload, b"b2");
    assert_eq!(all[3].payload, b"");
    // And the next seq is not consumed by the failed batch.
    assert_eq!(store.append(&a, b"next").unwrap().seq, 6);
}

fn empty_payload_round_trips(f: &Fixture) {
    let store = f.open();
    let a = user("empty");
    store.append(&a, b"").unwrap();
    let got = store.read(&a, 0, 1).unwrap();
    assert_eq!(got[0].payload, b"");
}

fn binary_user_ids_are_distinct_users(f: &Fixture) {
    let store = f.open();
    let a = UserId::new(vec![0u8, 1, 2, 255]).unwrap();
    let b = UserId::new(vec![0u8, 1, 2, 254]).unwrap();
    let max = UserId::new(vec![7u8; shredstore::MAX_USER_ID_LEN]).unwrap();
    store.append(&a, b"to a").unwrap();
    store.append(&b, b"to b").unwrap();
    store.append(&max, b"to max").unwrap();
    assert_eq!(store.read(&a, 0, 10).unwrap()[0].payload, b"to a");
    assert_eq!(store.read(&b, 0, 10).unwrap()[0].payload, b"to b");
    assert_eq!(store.read(&max, 0, 10).unwrap()[0].payload, b"to max");
    assert_ne!(store.handle(&a), store.handle(&b));
}

fn idempotent_append_returns_the_original_seq(f: &Fixture) {
    let store = f.open();
    let a = user("retrier");
    let first = store.append_idempotent(&a, b"msg-1", b"hello").unwrap();
    assert!(!first.duplicate);
    store.append(&a, b"other").unwrap();
    let retry = store.append_idempotent(&a, b"msg-1", b"hello").unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.appended, first.appended);
    assert_eq!(
        store.read(&a, 0, 10).unwrap().len(),
        2,
        "no duplicate stored"
    );
    // Same id, different payload: refused, nothing stored.
    assert!(matches!(
        store.append_idempotent(&a, b"msg-1", b"changed"),
        Err(Error::IdempotencyConflict)
    ));
    // Ids are per user.
    let b = user("other-retrier");
    assert!(
        !store
            .append_idempotent(&b, b"msg-1", b"hello")
            .unwrap()
            .duplicate
    );
    // Remembered across restarts.
    drop(store);
    let store = f.open();
    assert!(
        store
            .append_idempotent(&a, b"msg-1", b"hello")
            .unwrap()
            .duplicate
    );
    // Forgotten on erase: the same id is a new message afterwards.
    store.erase(&a).unwrap();
    let again = store.append_idempotent(&a, b"msg-1", b"hello").unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.appended.seq, 3);
    // Bad ids are rejected.
    assert!(matches!(
        store.append_idempotent(&a, b"", b"x"),
        Err(Error::InvalidArgument(
            InvalidArgument::EmptyClientMessageId
        ))
    ));
    assert!(matches!(
        store.append_idempotent(&a, &[b'i'; 129], b"x"),
        Err(Error::InvalidArgument(
            InvalidArgument::ClientMessageIdTooLong { len: 129, max: 128 }
        ))
    ));
}

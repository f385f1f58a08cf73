//! The JetStream engine on a real 3-node cluster (nats-server from
//! `scripts/test-tools.sh`, started on 127.0.0.1 with random ports).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;

use crate::store::test_cluster::{
    FILLER_CHUNK, FILLER_CHUNKS, NatsCluster, compact_until_gone, found_in, nats_server,
    wait_current,
};

fn engine(cluster: &NatsCluster, namespace: &str, partitions: u32) -> JetStreamEngine {
    let mut o = JetStreamOptions::new(cluster.urls());
    o.namespace = namespace.into();
    o.partitions = partitions;
    JetStreamEngine::connect(&o).expect("connect to the test cluster")
}

fn handle(b: u8) -> Handle {
    Handle([b; Handle::LEN])
}

fn msg_key(h: &Handle, seq: u64) -> Vec<u8> {
    let mut k = h.as_bytes().to_vec();
    k.extend(seq.to_be_bytes());
    k
}

fn put(e: &JetStreamEngine, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
    let mut b = e.batch();
    b.put(cf, key, value)?;
    e.write(b, true)
}

fn delete(e: &JetStreamEngine, cf: Cf, key: &[u8]) -> Result<()> {
    let mut b = e.batch();
    b.delete(cf, key)?;
    e.write(b, true)
}

fn keys(e: &JetStreamEngine, cf: Cf, scope: Scope<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c = e.cursor(cf, scope).unwrap();
    c.seek_to_first();
    let mut out = Vec::new();
    while let Some((k, v)) = c.item() {
        out.push((k.to_vec(), v.to_vec()));
        c.next();
    }
    c.status().unwrap();
    out
}

/// How many messages partition `p`'s stream holds on subjects matching
/// `filter` (replaced values and tombstones included).
fn stored(e: &JetStreamEngine, p: u32, filter: &str) -> u64 {
    e.rt.block_on(e.api.subjects(&e.layout.stream(p), filter))
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b
}

#[test]
fn records_batches_and_races_on_a_cluster() {
    let _cluster_tests = crate::store::test_cluster::beside_others();
    let cluster = NatsCluster::start(&nats_server(), 3);
    let e = engine(&cluster, "kv", 1);
    let (a, b) = (handle(1), handle(2));

    // Round trip, key order whatever the write order, scopes.
    for seq in [5u64, 1, 3, 2, 4] {
        put(
            &e,
            Cf::Messages,
            &msg_key(&a, seq),
            format!("a{seq}").as_bytes(),
        )
        .unwrap();
    }
    put(&e, Cf::Messages, &msg_key(&b, 1), b"b1").unwrap();
    put(&e, Cf::Keys, a.as_bytes(), b"key record of a").unwrap();
    put(&e, Cf::Meta, b"format_version", &[1]).unwrap();
    assert_eq!(
        e.get(Cf::Keys, a.as_bytes()).unwrap().as_deref(),
        Some(&b"key record of a"[..])
    );
    assert_eq!(e.get(Cf::Keys, b.as_bytes()).unwrap(), None);
    assert_eq!(e.get(Cf::Meta, b"format_version").unwrap(), Some(vec![1]));
    let got = keys(&e, Cf::Messages, Scope::Handle(&a));
    let want: Vec<_> = (1..=5u64)
        .map(|s| (msg_key(&a, s), format!("a{s}").into_bytes()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(keys(&e, Cf::Messages, Scope::All).len(), 6);
    assert_eq!(keys(&e, Cf::Keys, Scope::All).len(), 1);

    // Cursor moves.
    let mut c = e.cursor(Cf::Messages, Scope::Handle(&a)).unwrap();
    c.seek(&msg_key(&a, 3));
    assert_eq!(c.value(), Some(&b"a3"[..]));
    c.prev();
    assert_eq!(c.value(), Some(&b"a2"[..]));
    c.seek_for_prev(&msg_key(&a, u64::MAX));
    assert_eq!(c.value(), Some(&b"a5"[..]));
    c.next();
    assert_eq!(c.item(), None);
    c.seek(&msg_key(&a, 6));
    assert_eq!(c.item(), None);
    c.seek_to_first();
    assert_eq!(c.key(), Some(msg_key(&a, 1).as_slice()));
    drop(c);
    let empty = e.batch();
    assert!(empty.is_empty());
    e.write(empty, true).unwrap();

    // Overwrite and delete: the replaced value and the tombstone are gone
    // from the stream once the write returns, not just hidden.
    put(&e, Cf::Messages, &msg_key(&a, 3), b"a3 redacted").unwrap();
    delete(&e, Cf::Messages, &msg_key(&a, 4)).unwrap();
    delete(&e, Cf::Messages, &msg_key(&a, 40)).unwrap(); // absent: nothing to do
    let got: Vec<_> = keys(&e, Cf::Messages, Scope::Handle(&a))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got, [&b"a1"[..], b"a2", b"a3 redacted", b"a5"]);
    let (_, filter) = e.layout.handle_filter(Cf::Messages, &a);
    assert_eq!(
        stored(&e, 0, &filter),
        4,
        "replaced and deleted records removed"
    );
    assert_eq!(e.sweep().unwrap(), 0, "nothing left behind");
    // A deleted key can be written again.
    put(&e, Cf::Messages, &msg_key(&a, 4), b"a4 again").unwrap();

    // A new leader serves the same records.
    let before = e.leader(0).unwrap().expect("a leader");
    e.step_down(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while e.leader(0).ok().flatten().is_none_or(|l| l == before) {
        assert!(
            Instant::now() < deadline,
            "no other leader after a step-down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        e.get(Cf::Messages, &msg_key(&a, 5)).unwrap().as_deref(),
        Some(&b"a5"[..])
    );

    // A second front end: its writes are conditional on what it saw.
    let f = engine(&cluster, "kv", 1);
    assert_eq!(
        f.get(Cf::Messages, &msg_key(&a, 4)).unwrap().as_deref(),
        Some(&b"a4 again"[..])
    );
    // A key one front end believes absent but the other wrote: refused.
    put(&f, Cf::Messages, &msg_key(&a, 6), b"from f").unwrap();
    assert!(matches!(
        put(&e, Cf::Messages, &msg_key(&a, 6), b"from e"),
        Err(Error::Conflict)
    ));
    assert_eq!(
        e.get(Cf::Messages, &msg_key(&a, 6)).unwrap().as_deref(),
        Some(&b"from f"[..])
    );
    // Having read it again, e may overwrite it.
    put(&e, Cf::Messages, &msg_key(&a, 6), b"from e").unwrap();
    // Now f's view is stale: refused until f reads again.
    assert!(matches!(
        put(&f, Cf::Messages, &msg_key(&a, 6), b"stale"),
        Err(Error::Conflict)
    ));
    assert_eq!(
        f.get(Cf::Messages, &msg_key(&a, 6)).unwrap().as_deref(),
        Some(&b"from e"[..])
    );

    // expect(): a write decided on a record another front end changed since
    // stores nothing, however many records it holds.
    assert_eq!(e.get(Cf::Erased, a.as_bytes()).unwrap(), None);
    put(&f, Cf::Erased, a.as_bytes(), b"marker").unwrap();
    let mut batch = e.batch();
    for seq in 100..150 {
        batch.put(Cf::Messages, &msg_key(&a, seq), b"lost").unwrap();
    }
    batch.expect(Cf::Erased, a.as_bytes()).unwrap();
    assert!(matches!(e.write(batch, true), Err(Error::Conflict)));
    assert_eq!(e.get(Cf::Messages, &msg_key(&a, 100)).unwrap(), None);
    assert_eq!(e.get(Cf::Messages, &msg_key(&a, 149)).unwrap(), None);
    // Unread (the failed write forgot it), the record cannot be checked:
    // a conflict too. Read, the same batch goes through, all of it, and
    // leaves no check message behind.
    let mut batch = e.batch();
    batch.expect(Cf::Erased, a.as_bytes()).unwrap();
    batch
        .put(Cf::Messages, &msg_key(&a, 99), b"unchecked")
        .unwrap();
    assert!(matches!(e.write(batch, true), Err(Error::Conflict)));
    assert_eq!(
        e.get(Cf::Erased, a.as_bytes()).unwrap().as_deref(),
        Some(&b"marker"[..])
    );
    let mut batch = e.batch();
    for seq in 100..150 {
        batch.put(Cf::Messages, &msg_key(&a, seq), b"kept").unwrap();
    }
    batch.expect(Cf::Erased, a.as_bytes()).unwrap();
    e.write(batch, true).unwrap();
    assert_eq!(keys(&e, Cf::Messages, Scope::Handle(&a)).len(), 5 + 1 + 50);
    assert_eq!(stored(&e, 0, "kv.0.check"), 0);

    // One stale record in an atomic batch: none of it stored.
    put(&f, Cf::Messages, &msg_key(&b, 7), b"f was first").unwrap();
    let mut batch = e.batch();
    for seq in 2..=9 {
        batch
            .put(Cf::Messages, &msg_key(&b, seq), b"e's batch")
            .unwrap();
    }
    assert!(matches!(e.write(batch, true), Err(Error::Conflict)));
    let got = keys(&f, Cf::Messages, Scope::Handle(&b));
    assert_eq!(got.len(), 2, "only b1 and f's b7: {got:?}");

    // Two front ends racing for the same new keys: each key goes to exactly
    // one of them.
    let f = Arc::new(f);
    let e = Arc::new(e);
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [e.clone(), f.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, eng)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let c = handle(3);
                let mut won = Vec::new();
                for seq in 0..40u64 {
                    match put(&eng, Cf::Messages, &msg_key(&c, seq), &[i as u8]) {
                        Ok(()) => won.push(seq),
                        Err(Error::Conflict) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                won
            })
        })
        .collect();
    let won: Vec<Vec<u64>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut all: Vec<u64> = won.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "every key won exactly once"
    );
    for (i, seqs) in won.iter().enumerate() {
        for seq in seqs {
            assert_eq!(
                e.get(Cf::Messages, &msg_key(&handle(3), *seq)).unwrap(),
                Some(vec![i as u8])
            );
        }
    }

    // Limits: a batch over JetStream's 1000, a batch across partitions, a
    // store opened with another partition count.
    let mut batch = e.batch();
    for seq in 0..1001 {
        batch
            .put(Cf::Messages, &msg_key(&a, 10_000 + seq), b"x")
            .unwrap();
    }
    assert!(matches!(e.write(batch, true), Err(Error::JetStream(m)) if m.contains("1000")));
    let p4 = engine(&cluster, "parts", 4);
    let (h0, h1) = (Handle([0; Handle::LEN]), Handle([1; Handle::LEN]));
    assert_ne!(
        subject::partition_of_handle(h0.as_bytes(), 4),
        subject::partition_of_handle(h1.as_bytes(), 4)
    );
    let mut batch = p4.batch();
    batch.put(Cf::Keys, h0.as_bytes(), b"0").unwrap();
    batch.put(Cf::Keys, h1.as_bytes(), b"1").unwrap();
    assert!(matches!(p4.write(batch, true), Err(Error::JetStream(m)) if m.contains("partitions")));
    put(&p4, Cf::Keys, h0.as_bytes(), b"0").unwrap();
    put(&p4, Cf::Keys, h1.as_bytes(), b"1").unwrap();
    assert_eq!(
        keys(&p4, Cf::Keys, Scope::All).len(),
        2,
        "a scan merges the partitions"
    );
    let mut o = JetStreamOptions::new(cluster.urls());
    o.namespace = "parts".into();
    o.partitions = 2;
    assert!(matches!(
        JetStreamEngine::connect(&o),
        Err(Error::EngineConfig(m)) if m.contains("4 JetStream partitions")
    ));
}

#[test]
fn acknowledged_writes_survive_killing_the_stream_leader() {
    let _cluster_tests = crate::store::test_cluster::beside_others();
    let mut cluster = NatsCluster::start(&nats_server(), 3);
    let e = Arc::new(engine(&cluster, "failover", 1));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let h = handle(9);
            let mut acked = Vec::new();
            let mut failed = 0u32;
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                let value = format!("message {seq}");
                match put(&e, Cf::Messages, &msg_key(&h, seq), value.as_bytes()) {
                    Ok(()) => {
                        acked.push(seq);
                        seq += 1;
                    }
                    // Unknown outcome during the failover: read it back
                    // and go on from what is there.
                    Err(Error::JetStream(_)) | Err(Error::Conflict) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        if let Ok(Some(_)) = e.get(Cf::Messages, &msg_key(&h, seq)) {
                            seq += 1;
                        }
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            (acked, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let leader = e.leader(0).unwrap().expect("a leader");
    let killed = cluster.index_of(&leader);
    cluster.kill(killed);
    // Appends go on once a new leader is elected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(l)) = e.leader(0)
            && l != leader
        {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader after 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Release);
    let (acked, failed) = writer.join().unwrap();
    assert!(
        acked.len() > 20,
        "the writer went on: {} acked, {failed} failed",
        acked.len()
    );
    cluster.restart(killed);
    // Every acknowledged write reads back, through a fresh front end too.
    let fresh = engine(&cluster, "failover", 1);
    for seq in &acked {
        let want = format!("message {seq}");
        assert_eq!(
            fresh
                .get(Cf::Messages, &msg_key(&handle(9), *seq))
                .unwrap()
                .as_deref(),
            Some(want.as_bytes()),
            "acknowledged write {seq} lost"
        );
    }
}

#[test]
fn secure_erase_leaves_no_bytes_on_any_node() {
    let _cluster_tests = crate::store::test_cluster::alone();
    let mut cluster = NatsCluster::start(&nats_server(), 3);
    let e = engine(&cluster, "erase", 1);
    let (a, b) = (handle(0xa), handle(0xb));
    let mut canaries = std::collections::HashMap::new();
    for h in [&a, &b] {
        let key_record = random_bytes(48);
        put(&e, Cf::Keys, h.as_bytes(), &key_record).unwrap();
        let mut records = vec![key_record];
        for seq in 1..=20 {
            let ct = random_bytes(200);
            put(&e, Cf::Messages, &msg_key(h, seq), &ct).unwrap();
            records.push(ct);
        }
        canaries.insert(h.as_bytes()[0], records);
    }
    // Every server stored both users' bytes (the scanner's positive control),
    // once every replica has caught up (an append needs two of the three).
    wait_current(&e);
    let files = cluster.store_files();
    for (who, records) in &canaries {
        for r in records {
            let holders = found_in(&files, r);
            for node in &cluster.nodes {
                assert!(
                    holders.iter().any(|p| p.starts_with(&node.store_dir)),
                    "user {who:x}'s record not on {}",
                    node.name
                );
            }
        }
    }
    assert!(e.replicas_current().unwrap());

    assert_eq!(e.secure_erase(Cf::Keys, &a).unwrap(), 1);
    assert_eq!(e.secure_erase(Cf::Messages, &a).unwrap(), 20);
    assert_eq!(e.get(Cf::Keys, a.as_bytes()).unwrap(), None);
    assert!(keys(&e, Cf::Messages, Scope::Handle(&a)).is_empty());
    // The Raft log still holds the appends until the stream's next snapshot
    // compacts it by whole 4 MiB blocks: write past the block holding a's
    // records, then force snapshots on every replica (rolling graceful
    // restarts) until none of a's bytes is left.
    let chunk = vec![0x5a_u8; FILLER_CHUNK];
    let mut next = 0u64;
    let mut fill = || {
        for _ in 0..FILLER_CHUNKS {
            next += 1;
            put(&e, Cf::Messages, &msg_key(&handle(0xf), next), &chunk).unwrap();
        }
    };
    compact_until_gone(&mut cluster, &e, &canaries[&0xa], &mut fill);
    let files = cluster.store_files();
    for r in &canaries[&0xb] {
        assert!(
            found_in(&files, r).len() >= 3,
            "b's record must stay on every node"
        );
    }
    assert_eq!(keys(&e, Cf::Messages, Scope::Handle(&b)).len(), 20);

    // A replica that is down during an erasure keeps the bytes, and the
    // engine says the cluster is not current.
    let down = 2;
    cluster.kill(down);
    let deadline = Instant::now() + Duration::from_secs(30);
    while e.replicas_current().unwrap() {
        assert!(
            Instant::now() < deadline,
            "a dead replica still reported current"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(e.secure_erase(Cf::Messages, &b).unwrap(), 20);
    let files = cluster.store_files();
    let still = found_in(&files, &canaries[&0xb][1]);
    assert!(
        still
            .iter()
            .all(|p| p.starts_with(&cluster.nodes[down].store_dir))
            && !still.is_empty(),
        "only the down replica keeps b's erased bytes: {still:?}"
    );
    cluster.restart(down);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !e.replicas_current().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the restarted replica never caught up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

//! The store on the JetStream engine, on a real 3-node cluster (nats-server
//! from `scripts/test-tools.sh`, 127.0.0.1, random ports): the same
//! operations as on RocksDB, several front ends on one cluster, purge that
//! leaves no bytes on any node, and what the engine refuses.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Barrier};

use super::engine::{Cf, Scope};
use super::*;
use crate::codec::Restriction;
use crate::types::ConversationId;
use crate::{InvalidArgument, JetStreamOptions, Options, RootKey};

use crate::store::test_cluster::{
    self, FILLER_CHUNK, FILLER_CHUNKS, NatsCluster, compact_until_gone, found_in, nats_server,
};

const ROOT: [u8; 32] = [0x42; 32];

const BLOCK_APPENDS: Restriction = Restriction {
    block_appends: true,
    block_reads: false,
};

/// A front end on `cluster` (a store opened on it; the data directory is
/// never used).
fn front_end(cluster: &NatsCluster, namespace: &str) -> Store {
    Store::open(options(cluster, namespace)).expect("open a front end")
}

fn options(cluster: &NatsCluster, namespace: &str) -> Options {
    Options::new(
        "/nonexistent/shredstore-jetstream",
        RootKey::from_bytes(ROOT),
    )
    .purge_interval(None)
    .ledger_interval(None)
    .jetstream(JetStreamOptions::new(cluster.urls()).namespace(namespace))
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn payloads(msgs: &[Message]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.payload.clone()).collect()
}

#[test]
fn the_store_runs_on_a_cluster_and_a_new_front_end_finds_everything() {
    let _cluster_tests = test_cluster::beside_others();
    let cluster = NatsCluster::start(&nats_server(), 3);
    let store = front_end(&cluster, "rt");
    assert!(
        !std::path::Path::new("/nonexistent/shredstore-jetstream").exists(),
        "a front end keeps no files"
    );
    let (alice, bob) = (user("alice"), user("bob"));

    // Appends: the first one is the key record and message in one batch.
    for i in 1..=5u64 {
        let a = store.append(&alice, format!("a{i}").as_bytes()).unwrap();
        assert_eq!(a.seq, i);
    }
    let batch = store
        .append_batch(&bob, &[b"b1".as_slice(), b"b2", b"b3"])
        .unwrap();
    assert_eq!(batch.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Idempotent appends: the retry is the same message.
    let first = store.append_idempotent(&alice, b"x", b"hello").unwrap();
    let again = store.append_idempotent(&alice, b"x", b"hello").unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.appended, again.appended);
    assert!(matches!(
        store.append_idempotent(&alice, b"x", b"other"),
        Err(Error::IdempotencyConflict)
    ));
    assert_eq!(
        payloads(&store.read(&alice, 0, 100).unwrap()),
        ["a1", "a2", "a3", "a4", "a5", "hello"].map(|s| s.as_bytes().to_vec())
    );
    assert_eq!(
        store
            .read(&alice, 3, 2)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [3, 4]
    );

    // Rights: a restriction holds, and is lifted.
    store.restrict_as(&alice, BLOCK_APPENDS, "dpo").unwrap();
    assert!(matches!(
        store.append(&alice, b"no"),
        Err(Error::Restricted { .. })
    ));
    store
        .unrestrict_as(&alice, Restriction::default(), "dpo")
        .unwrap();
    assert_eq!(store.append(&alice, b"a7").unwrap().seq, 7);

    // Conversations: two authors, read forward and backward.
    let conv = ConversationId::new("room").unwrap();
    let c = store.conversation(&conv);
    c.append(&alice, b"hi bob").unwrap();
    c.append(&bob, b"hi alice").unwrap();
    c.append(&alice, b"bye").unwrap();
    let seqs: Vec<u64> = c.read(0, 10).unwrap().iter().map(|i| i.seq()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let back: Vec<u64> = c
        .read_back(u64::MAX, 2)
        .unwrap()
        .iter()
        .map(|i| i.seq())
        .collect();
    assert_eq!(back, [3, 2]);

    // Bad input is refused as on RocksDB, before anything is sent.
    assert!(matches!(
        store.append_batch::<&[u8]>(&alice, &[]),
        Err(Error::InvalidArgument(InvalidArgument::EmptyBatch))
    ));
    let big = vec![0u8; crate::DEFAULT_MAX_PAYLOAD + 1];
    assert!(matches!(
        store.append(&alice, &big),
        Err(Error::InvalidArgument(
            InvalidArgument::PayloadTooLarge { .. }
        ))
    ));
    // The largest batch fits one atomic JetStream batch.
    let many: Vec<Vec<u8>> = (0..crate::store::options::JETSTREAM_MAX_BATCH)
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    let appended = store.append_batch(&bob, &many).unwrap();
    assert_eq!(appended.len(), many.len());
    let too_many = vec![b"m".to_vec(); crate::store::options::JETSTREAM_MAX_BATCH + 1];
    assert!(matches!(
        store.append_batch(&bob, &too_many),
        Err(Error::InvalidArgument(
            InvalidArgument::BatchTooLarge { .. }
        ))
    ));

    // What only RocksDB has is refused, naming the engine.
    for err in [
        store.compact().unwrap_err(),
        store.verify_erasure(&alice).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::Unsupported {
                    engine: "jetstream",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("jetstream engine"), "{err}");
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.bytes_on_disk, 0);
    drop(store);

    // A new front end (no cache, no files) finds everything in the cluster.
    let other = front_end(&cluster, "rt");
    assert_eq!(other.read(&alice, 0, 100).unwrap().len(), 7);
    assert_eq!(other.read(&bob, 0, 1000).unwrap().len(), 3 + many.len());
    assert_eq!(other.conversation(&conv).read(0, 10).unwrap().len(), 3);
    assert_eq!(other.append(&alice, b"a8").unwrap().seq, 8);
    // The partition count is part of the store; the store runs on one.
    let err = Store::open(
        options(&cluster, "rt2").jetstream(
            JetStreamOptions::new(cluster.urls())
                .namespace("rt2")
                .partitions(2),
        ),
    )
    .unwrap_err();
    assert!(matches!(err, Error::EngineConfig(_)), "{err:?}");
}

#[test]
fn rights_audit_export_redaction_and_the_change_feed_on_a_cluster() {
    let _cluster_tests = test_cluster::beside_others();
    let cluster = NatsCluster::start(&nats_server(), 3);
    let store = front_end(&cluster, "rights");
    let (alice, bob) = (user("alice"), user("bob"));
    for i in 0..3 {
        store.append(&alice, format!("a{i}").as_bytes()).unwrap();
    }
    // Consent history, sealed under the user's key.
    let consent = crate::codec::Consent {
        purpose: "marketing-email".into(),
        basis: crate::codec::LegalBasis::Consent,
        granted: true,
        given_at_ms: 1,
    };
    store.record_consent_as(&alice, &consent, "app").unwrap();
    let history = store.consent_history(&alice, Access::Subject).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].consent, consent);
    // Redaction: the payload is gone, seq and time remain.
    store.redact_as(&alice, 2, "typo", "dpo").unwrap();
    let read = store.read(&alice, 0, 10).unwrap();
    assert!(read[1].redaction.is_some() && read[1].payload.is_empty());
    // Export: every message of her log, in order.
    let mut exported = Vec::new();
    store
        .export_as(&alice, "dpo", |item| {
            if let ExportItem::Message(m) = item {
                exported.push(m.seq);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(exported, [1, 2, 3]);
    // A legal hold refuses the erasure; lifted, the erasure goes through.
    store
        .set_legal_hold_as(&alice, "case-1", None, "legal")
        .unwrap();
    assert!(matches!(store.erase(&alice), Err(Error::LegalHold)));
    store.lift_legal_hold_as(&alice, "legal").unwrap();
    // Conversations: a deletion, and an erased author's slots as tombstones.
    let conv = ConversationId::new("room").unwrap();
    let c = store.conversation(&conv);
    c.append(&alice, b"from alice").unwrap();
    c.append(&bob, b"from bob").unwrap();
    let start = store.changes_end().unwrap();
    let erased = store.erase(&alice).unwrap();
    assert!(store.verify_receipt(&erased.receipt));
    let items = c.read(0, 10).unwrap();
    assert!(matches!(items[0], ConversationItem::Tombstone(_)));
    assert!(matches!(items[1], ConversationItem::Message(_)));
    let other = ConversationId::new("gone").unwrap();
    store.conversation(&other).append(&bob, b"x").unwrap();
    store.conversation(&other).delete().unwrap();
    assert!(store.conversation(&other).read(0, 10).unwrap().is_empty());
    // The change feed names both, in order.
    let changes = store.changes(start, 10).unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(matches!(
        changes[0].change,
        crate::codec::Change::UserErased { .. }
    ));
    assert!(changes[0].number < changes[1].number);
    // The audit trail has the operations, by handle.
    let audit = store.audit_log(0, u64::MAX, 1000).unwrap();
    for op in [AuditOp::RecordConsent, AuditOp::Redact, AuditOp::Erase] {
        assert!(
            audit.iter().any(|r| r.op == op),
            "no {op:?} in the audit trail"
        );
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.pending_erasures, 1);
}

#[test]
fn two_front_ends_append_to_the_same_users_and_conversation() {
    let _cluster_tests = test_cluster::beside_others();
    let cluster = NatsCluster::start(&nats_server(), 3);
    let fronts = [
        Arc::new(front_end(&cluster, "two")),
        Arc::new(front_end(&cluster, "two")),
    ];
    let users: Vec<UserId> = (0..3).map(|u| user(&format!("u{u}"))).collect();
    let conv = ConversationId::new("shared").unwrap();
    const EACH: usize = 25;
    let barrier = Arc::new(Barrier::new(4));
    let mut threads = Vec::new();
    for t in 0..4usize {
        let store = Arc::clone(&fronts[t % 2]);
        let users = users.clone();
        let conv = conv.clone();
        let barrier = Arc::clone(&barrier);
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let mut got: Vec<(usize, u64, Vec<u8>)> = Vec::new();
            let mut conv_got = Vec::new();
            for i in 0..EACH {
                let u = (i + t) % users.len();
                let p = format!("t{t} i{i}").into_bytes();
                let a = store.append(&users[u], &p).expect("append");
                got.push((u, a.seq, p.clone()));
                let c = store
                    .conversation(&conv)
                    .append(&users[u], &p)
                    .expect("conversation append");
                conv_got.push((c.seq, p));
            }
            (got, conv_got)
        }));
    }
    let mut per_user: HashMap<usize, Vec<(u64, Vec<u8>)>> = HashMap::new();
    let mut conv_all = Vec::new();
    for t in threads {
        let (got, conv_got) = t.join().unwrap();
        for (u, seq, p) in got {
            per_user.entry(u).or_default().push((seq, p));
        }
        conv_all.extend(conv_got);
    }
    // Seqs are unique and dense (none lost, none reused), and each front
    // end reads every acknowledged message under the seq it was given.
    for (u, mut acked) in per_user {
        acked.sort();
        let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=acked.len() as u64).collect::<Vec<_>>(),
            "user {u}"
        );
        for store in &fronts {
            let read = store.read(&users[u], 0, 1000).unwrap();
            let got: Vec<(u64, Vec<u8>)> = read.into_iter().map(|m| (m.seq, m.payload)).collect();
            assert_eq!(got, acked, "user {u}");
        }
    }
    conv_all.sort();
    let seqs: BTreeSet<u64> = conv_all.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), 4 * EACH);
    assert_eq!(seqs, (1..=(4 * EACH) as u64).collect());
    for store in &fronts {
        let items = store.conversation(&conv).read(0, 1000).unwrap();
        let got: Vec<(u64, Vec<u8>)> = items
            .into_iter()
            .map(|i| match i {
                ConversationItem::Message(m) => (m.seq, m.payload),
                ConversationItem::Tombstone(t) => panic!("unexpected tombstone {t:?}"),
            })
            .collect();
        assert_eq!(got, conv_all);
    }
}

#[test]
fn an_erase_through_one_front_end_is_honoured_by_the_other() {
    let _cluster_tests = test_cluster::beside_others();
    let cluster = NatsCluster::start(&nats_server(), 3);
    let (a, b) = (front_end(&cluster, "inval"), front_end(&cluster, "inval"));
    let alice = user("alice");
    for i in 0..5 {
        a.append(&alice, format!("old {i}").as_bytes()).unwrap();
    }
    // Front end A has alice's key cached; B erases her.
    assert_eq!(a.read(&alice, 0, 10).unwrap().len(), 5);
    let erased = b.erase(&alice).unwrap();
    assert_eq!(erased.messages_erased, 5);
    // A reads nothing of the erased epoch, at once.
    assert!(a.read(&alice, 0, 10).unwrap().is_empty());
    // A's next append is a new epoch, after the erased seqs.
    let next = a.append(&alice, b"new").unwrap();
    assert_eq!(next.seq, 6);
    assert_eq!(payloads(&b.read(&alice, 0, 10).unwrap()), [b"new".to_vec()]);
    // A blocked erasure through B refuses A's appends.
    b.erase_with(&alice, crate::EraseOptions::block_new())
        .unwrap();
    assert!(matches!(a.append(&alice, b"no"), Err(Error::Blocked)));
    // A policy set through A is seen by B.
    let bob = user("bob");
    b.append(&bob, b"b").unwrap();
    a.restrict_as(&bob, BLOCK_APPENDS, "dpo").unwrap();
    assert!(matches!(
        b.append(&bob, b"x"),
        Err(Error::Restricted { .. })
    ));
}

/// Every stored value of `handle`'s key record and messages.
fn stored_records(store: &Store, handle: &Handle) -> Vec<Vec<u8>> {
    let engine = &store.inner.engine;
    let mut out = vec![
        engine
            .get(Cf::Keys, handle.as_bytes())
            .unwrap()
            .unwrap()
            .to_vec(),
    ];
    let mut c = engine.cursor(Cf::Messages, Scope::Handle(handle)).unwrap();
    c.seek_to_first();
    while let Some((_, v)) = c.item() {
        out.push(v.to_vec());
        c.next();
    }
    c.status().unwrap();
    out
}

/// [`compact_until_gone`], the filler appended under a filler user.
fn purge_raft_logs(cluster: &mut NatsCluster, store: &Store, gone: &[Vec<u8>]) {
    let filler = user("filler");
    let chunk = vec![0x5a_u8; FILLER_CHUNK];
    let mut fill = || {
        for _ in 0..FILLER_CHUNKS / 15 {
            store
                .append_batch(&filler, &vec![chunk.as_slice(); 15])
                .unwrap();
        }
    };
    compact_until_gone(
        cluster,
        store.inner.engine.jetstream().unwrap(),
        gone,
        &mut fill,
    );
}

fn wait_current(store: &Store) {
    test_cluster::wait_current(store.inner.engine.jetstream().unwrap());
}

#[test]
fn erase_and_purge_leave_none_of_the_users_bytes_on_any_node() {
    let _cluster_tests = test_cluster::alone();
    let mut cluster = NatsCluster::start(&nats_server(), 3);
    let store = front_end(&cluster, "purge");
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for u in [&alice, &bob, &carol] {
        for i in 0..10 {
            store
                .append(u, format!("{u:?} message {i}").as_bytes())
                .unwrap();
        }
    }
    let (ha, hb, hc) = (
        store.handle(&alice),
        store.handle(&bob),
        store.handle(&carol),
    );
    let (ra, rb, rc) = (
        stored_records(&store, &ha),
        stored_records(&store, &hb),
        stored_records(&store, &hc),
    );
    // The positive control: every node holds every user's records (once
    // every replica has caught up: an append needs two of the three).
    wait_current(&store);
    let files = cluster.store_files();
    for r in ra.iter().chain(&rb).chain(&rc) {
        let holders = found_in(&files, r);
        for node in &cluster.nodes {
            assert!(holders.iter().any(|p| p.starts_with(&node.store_dir)));
        }
    }

    let erased = store.erase(&alice).unwrap();
    assert_eq!(store.purge_status(&ha).unwrap(), Some(PurgeStatus::Pending));
    let report = store.purge().unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!(report.erasures_purged, 1);
    assert_eq!(store.purge_status(&ha).unwrap(), Some(PurgeStatus::Purged));
    assert!(store.verify_receipt(&erased.receipt));
    purge_raft_logs(&mut cluster, &store, &ra);
    let files = cluster.store_files();
    for r in rb.iter().chain(&rc) {
        assert!(
            !found_in(&files, r).is_empty(),
            "bob's or carol's record lost"
        );
    }
    // Bob and carol read as before.
    assert_eq!(store.read(&bob, 0, 100).unwrap().len(), 10);

    // A replica down during an erase and its purge: the purge does not
    // report the erasure physical (the down node keeps the bytes).
    let down = 2;
    cluster.kill(down);
    store.erase(&bob).unwrap();
    let report = store.purge().unwrap();
    assert!(!report.complete, "{report:?}");
    assert_eq!(report.erasures_purged, 0);
    assert_eq!(store.purge_status(&hb).unwrap(), Some(PurgeStatus::Pending));
    let down_dir = cluster.nodes[down].store_dir.clone();
    let files = cluster.store_files();
    assert!(
        rb.iter()
            .all(|r| found_in(&files, r).iter().any(|p| p.starts_with(&down_dir))),
        "the down node keeps bob's bytes"
    );
    // Back and current, it still holds bob's bytes (catching up does not
    // remove them from its own Raft log): still not physical.
    cluster.restart(down);
    wait_current(&store);
    let report = store.purge().unwrap();
    assert!(!report.complete, "{report:?}");
    assert_eq!(store.purge_status(&hb).unwrap(), Some(PurgeStatus::Pending));
    // The rebuild (README "Scale-out"): stop the node, remove its store
    // directory, start it; it copies the streams afresh. Then confirm.
    cluster.kill(down);
    std::fs::remove_dir_all(&down_dir).unwrap();
    cluster.restart(down);
    wait_current(&store);
    assert_eq!(store.confirm_replicas_rebuilt("ops").unwrap(), 1);
    // While the rebuilt replica settles, a purge may still find it behind
    // (and say so): the purger retries, so does this.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let report = store.purge().unwrap();
        if report.complete {
            assert_eq!(report.erasures_purged, 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{report:?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(store.purge_status(&hb).unwrap(), Some(PurgeStatus::Purged));
    purge_raft_logs(&mut cluster, &store, &rb);
    let files = cluster.store_files();
    for r in &rc {
        let holders = found_in(&files, r);
        for node in &cluster.nodes {
            assert!(
                holders.iter().any(|p| p.starts_with(&node.store_dir)),
                "carol's record not on {} after the rebuild",
                node.name
            );
        }
    }
    assert_eq!(store.read(&carol, 0, 100).unwrap().len(), 10);
}

#[test]
fn acknowledged_appends_survive_killing_the_stream_leader() {
    let _cluster_tests = test_cluster::beside_others();
    let mut cluster = NatsCluster::start(&nats_server(), 3);
    let store = Arc::new(front_end(&cluster, "failover"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let alice = user("alice");
            let (mut acked, mut failed) = (Vec::new(), 0u32);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let payload = format!("message {i}").into_bytes();
                match store.append(&alice, &payload) {
                    Ok(a) => acked.push((a.seq, payload)),
                    // Not acknowledged during the failover (its outcome
                    // unknown): the next append finds out.
                    Err(Error::JetStream(_) | Error::Conflict) => {
                        failed += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(other) => panic!("{other}"),
                }
                i += 1;
            }
            (acked, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let js = store.inner.engine.jetstream().unwrap();
    let leader = js.leader(0).unwrap().expect("a leader");
    let killed = cluster.index_of(&leader);
    cluster.kill(killed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while js.leader(0).ok().flatten().is_none_or(|l| l == leader) {
        assert!(std::time::Instant::now() < deadline, "no new leader");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (acked, failed) = writer.join().unwrap();
    let n = acked.len();
    assert!(n > 20, "{n} acked, {failed} failed");
    // Seqs stayed strictly increasing through the failover.
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0));
    cluster.restart(killed);
    // Every acknowledged append reads back under its seq, through a new
    // front end too.
    let fresh = front_end(&cluster, "failover");
    let read: HashMap<u64, Vec<u8>> = fresh
        .read(&user("alice"), 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.payload))
        .collect();
    for (seq, payload) in &acked {
        assert_eq!(
            read.get(seq),
            Some(payload),
            "acknowledged append {seq} lost"
        );
    }
}

//! Root-key rotation: a store opened with a new root key and its previous
//! one rewraps every key record (users, conversations, the handle key) in
//! the background while it serves; when it is done, the old key opens
//! nothing, the new one alone opens everything, and receipts issued before
//! still verify. A rotation in progress needs both keys, and survives
//! kill -9 at any point (`rotation_survives_kill_9_at_random_points`: this
//! binary re-executes itself as the child, the way tests/crash.rs does).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::user;
use shredstore::{
    ConversationId, ConversationItem, Durability, Error, Options, Restriction, RootKey, Store,
    UserId,
};

fn key(n: u8) -> RootKey {
    RootKey::from_bytes([n; 32])
}

fn options(dir: &Path, root: u8) -> Options {
    Options::new(dir, key(root)).purge_interval(None)
}

fn rotating(dir: &Path, root: u8, previous: u8) -> Options {
    options(dir, root).previous_root_key(key(previous))
}

fn conv(n: u64) -> ConversationId {
    ConversationId::new(format!("rotation-room-{n}")).unwrap()
}

fn payload(u: u64, n: u64) -> Vec<u8> {
    format!("rotation-user-{u}:message-{n}").into_bytes()
}

fn user_n(u: u64) -> UserId {
    user(&format!("rotation-user-{u}"))
}

/// Asserts `err` refuses a root key of generation `retired` retired by a
/// store now at `current`.
fn assert_retired(err: &Error, retired: u32, current: u32) {
    assert!(
        matches!(err, Error::RetiredRootKey { retired: r, current: c } if *r == retired && *c == current),
        "{err:?}"
    );
}

/// Restricts `u`'s appends.
fn block_appends(store: &Store, u: &UserId) {
    store
        .restrict_as(
            u,
            Restriction {
                block_appends: true,
                block_reads: false,
            },
            "test",
        )
        .unwrap();
}

/// `users` users with two messages each and `convs` conversations with a
/// message by each of two of them.
fn fill(store: &Store, users: u64, convs: u64) {
    for u in 0..users {
        for n in 0..2 {
            store.append(&user_n(u), &payload(u, n)).unwrap();
        }
    }
    for c in 0..convs {
        let room = store.conversation(&conv(c));
        room.append(&user_n(c % users), b"conversation message one")
            .unwrap();
        room.append(&user_n((c + 1) % users), b"conversation message two")
            .unwrap();
    }
}

/// Every user's two messages and every conversation's two read back.
fn check(store: &Store, users: u64, convs: u64) {
    for u in 0..users {
        let got: Vec<Vec<u8>> = store
            .read(&user_n(u), 0, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.payload)
            .collect();
        assert_eq!(got, vec![payload(u, 0), payload(u, 1)], "user {u}");
    }
    for c in 0..convs {
        let items = store.conversation(&conv(c)).read(0, 10).unwrap();
        assert_eq!(items.len(), 2, "conversation {c}");
        assert!(
            items
                .iter()
                .all(|i| matches!(i, ConversationItem::Message(_))),
            "conversation {c}: {items:?}"
        );
    }
}

/// The record versions of every key record: 1 under generation 1, 2 later.
fn key_record_versions(dir: &Path) -> Vec<u8> {
    let db = common::raw_db(dir);
    let mut v: Vec<u8> = [
        shredstore::layout::CF_KEYS,
        shredstore::layout::CF_CONV_KEYS,
    ]
    .iter()
    .flat_map(|cf| common::raw_entries(&db, cf, b""))
    .map(|(_, v)| v[0])
    .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn rotation_rewraps_every_key_record_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let (users, convs) = (300, 20);
    let store = Store::open(options(dir.path(), 1)).unwrap();
    fill(&store, users, convs);
    block_appends(&store, &user_n(3));
    let gone = user("rotation-erased-before");
    store.append(&gone, b"erased before the rotation").unwrap();
    let old_receipt = store.erase(&gone).unwrap().receipt;
    assert_eq!(store.root_key_generation(), 1);
    store.close().unwrap();
    assert_eq!(key_record_versions(dir.path()), vec![1]);

    // Small batches: the rotation is still running while we use the store.
    let store =
        Store::open(rotating(dir.path(), 2, 1).rotation_pace(8, Duration::from_millis(2))).unwrap();
    assert_eq!(store.root_key_generation(), 2);
    assert!(
        store.rotation().is_some(),
        "40 batches 2 ms apart: still running"
    );
    let stats = store.stats().unwrap();
    assert_eq!(stats.root_key_generation, 2);
    assert!(stats.rotation_in_progress);
    // Policy changes during the rotation, on records it has not reached yet
    // (most likely) or already rewrapped: none is lost, none reverts a
    // record to the old key.
    for u in (0..users).step_by(7) {
        block_appends(&store, &user_n(u));
    }
    for c in 0..convs {
        store
            .conversation(&conv(c))
            .set_retention_as(shredstore::Retention::Forever, "test")
            .unwrap();
    }
    check(&store, users, convs);
    let newcomer = user("rotation-newcomer");
    store
        .append(&newcomer, b"appended during the rotation")
        .unwrap();
    assert!(
        matches!(
            store.append(&user_n(3), b"refused"),
            Err(Error::Restricted { .. })
        ),
        "the restriction survived the rewrap"
    );
    assert!(store.verify_receipt(&old_receipt));
    store.finish_rotation().unwrap();
    assert_eq!(store.rotation(), None);
    // Every record that existed at the start was rewrapped once: the
    // erased user's key record is gone, the newcomer's was new.
    let done = store.finished_rotation().expect("finished here");
    assert_eq!(done.rewrapped, users + convs, "{done:?}");
    let stats = store.stats().unwrap();
    assert!(!stats.rotation_in_progress);
    assert_eq!(stats.rotation_skipped, 0);
    assert!(
        store.verify_receipt(&old_receipt),
        "receipts from before still verify"
    );
    let after = user("rotation-erased-after");
    store.append(&after, b"x").unwrap();
    let new_receipt = store.erase(&after).unwrap().receipt;
    assert!(store.verify_receipt(&new_receipt));
    let audit: Vec<_> = store
        .audit_log(0, u64::MAX, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.actor == shredstore::ROTATION_ACTOR)
        .map(|r| r.op)
        .collect();
    assert_eq!(
        audit,
        vec![
            shredstore::AuditOp::RootKeyRotationStarted,
            shredstore::AuditOp::RootKeyRotationFinished
        ]
    );
    store.close().unwrap();
    // Every key record names generation 2 (record version 2).
    assert_eq!(key_record_versions(dir.path()), vec![2]);

    // The old key is refused by name; an unknown key is just wrong.
    let err = Store::open(options(dir.path(), 1)).unwrap_err();
    assert_retired(&err, 1, 2);
    assert!(err.to_string().contains("retired"), "{err}");
    assert!(matches!(
        Store::open(options(dir.path(), 9)),
        Err(Error::WrongRootKey)
    ));
    // Both keys still given after the end: it opens (the old one is ignored).
    drop(Store::open(rotating(dir.path(), 2, 1)).unwrap());
    // The retired key cannot come back as the new key of another rotation.
    let err = Store::open(rotating(dir.path(), 1, 2)).unwrap_err();
    assert_retired(&err, 1, 2);
    let store = Store::open(options(dir.path(), 2)).unwrap();
    check(&store, users, convs);
    for u in 0..users {
        assert_eq!(
            store
                .rights_state(&user_n(u))
                .unwrap()
                .restriction
                .block_appends,
            u % 7 == 0 || u == 3,
            "user {u}'s restriction"
        );
    }
    for c in 0..convs {
        assert_eq!(
            store
                .conversation(&conv(c))
                .rights_state()
                .unwrap()
                .retention,
            shredstore::Retention::Forever
        );
    }
    assert_eq!(store.read(&newcomer, 0, 10).unwrap().len(), 1);
    assert!(store.read(&gone, 0, 10).unwrap().is_empty());
    assert!(store.verify_receipt(&old_receipt));
    store.close().unwrap();

    // A second rotation: receipts of generation 1 still verify, both old
    // keys are refused by name.
    let store = Store::open(rotating(dir.path(), 3, 2)).unwrap();
    store.finish_rotation().unwrap();
    assert!(store.verify_receipt(&old_receipt));
    assert!(store.verify_receipt(&new_receipt));
    store.close().unwrap();
    for (k, retired) in [(1, 1), (2, 2)] {
        let err = Store::open(options(dir.path(), k)).unwrap_err();
        assert_retired(&err, retired, 3);
    }
    let store = Store::open(options(dir.path(), 3)).unwrap();
    check(&store, users, convs);
    assert_eq!(store.stats().unwrap().root_key_generation, 3);
}

#[test]
fn a_rotation_in_progress_needs_both_keys_in_their_places() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path(), 1)).unwrap();
    fill(&store, 50, 5);
    store.close().unwrap();
    // One record per batch and a long pause: it is still running at close.
    let store = Store::open(rotating(dir.path(), 2, 1).rotation_pace(1, Duration::from_secs(3600)))
        .unwrap();
    let status = store.rotation().expect("a rotation is running");
    assert_eq!((status.from_generation, status.to_generation), (1, 2));
    let stats = store.stats().unwrap();
    assert!(stats.rotation_in_progress);
    assert!(stats.rotation_remaining_estimate > 0);
    store.close().unwrap();

    let refused = |o: Options| match Store::open(o) {
        Err(e) => e,
        Ok(_) => panic!("opened"),
    };
    // The new key alone: the previous one is still needed.
    let e = refused(options(dir.path(), 2));
    assert!(
        matches!(e, Error::RootKeyRotation(m) if m.contains("previous")),
        "{e:?}"
    );
    // The old key alone, or the keys swapped: the new key goes first.
    let e = refused(options(dir.path(), 1));
    assert!(
        matches!(e, Error::RootKeyRotation(m) if m.contains("new key")),
        "{e:?}"
    );
    let e = refused(rotating(dir.path(), 1, 2));
    assert!(matches!(e, Error::RootKeyRotation(_)), "{e:?}");
    // A wrong previous key, or a third root key.
    let e = refused(rotating(dir.path(), 2, 7));
    assert!(matches!(e, Error::RootKeyRotation(_)), "{e:?}");
    let e = refused(rotating(dir.path(), 3, 1));
    assert!(matches!(e, Error::WrongRootKey), "{e:?}");

    // Both keys: it resumes where it stopped and finishes.
    let store = Store::open(rotating(dir.path(), 2, 1).purge_interval(None)).unwrap();
    store.finish_rotation().unwrap();
    check(&store, 50, 5);
    store.close().unwrap();
    let store = Store::open(options(dir.path(), 2)).unwrap();
    check(&store, 50, 5);
}

const CHILD_ENV: &str = "SHREDSTORE_ROTATION_CHILD";
const CHILD_ROOT_ENV: &str = "SHREDSTORE_ROTATION_CHILD_ROOT";
const USERS: u64 = 400;
const CONVS: u64 = 20;

/// Not a test of its own: the child of the kill -9 test. It opens the
/// store with root key N+1 and previous key N (small rotation batches) and
/// appends for new users, printing each acknowledgement, until it is killed.
#[test]
fn rotation_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root: u8 = std::env::var(CHILD_ROOT_ENV).unwrap().parse().unwrap();
    let store = Store::open(
        rotating(Path::new(&dir), root, root - 1)
            .durability(Durability::Sync)
            .rotation_pace(4, Duration::from_millis(1)),
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for n in 0u64.. {
        store
            .append(&user(&format!("child-{root}-{n}")), &n.to_be_bytes())
            .unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn rotation_survives_kill_9_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(dir.path(), 1)).unwrap();
    fill(&store, USERS, CONVS);
    store.close().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = seed | 1;
    let mut mid_rotation = 0;
    // Each round rotates from key `root - 1` to `root`.
    for root in 2u8..=7 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Even rounds kill within 150 ms of the start (inside the
        // rotation, nearly always), odd ones later (in it or after it).
        let delay = Duration::from_millis(if root % 2 == 0 {
            rng % 150
        } else {
            150 + rng % 450
        });
        let (mut child, lines) = common::spawn_child(
            "rotation_child_process",
            &[
                (CHILD_ENV, dir.path().as_os_str()),
                (CHILD_ROOT_ENV, root.to_string().as_ref()),
            ],
        );
        let started = Instant::now();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in lines.map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    acked.push(n.parse::<u64>().unwrap());
                }
            }
            acked
        });
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();

        // The rotation is in progress or done; with both keys the store
        // opens either way and finishes it.
        let store = Store::open(rotating(dir.path(), root, root - 1)).unwrap();
        if store.rotation().is_some() {
            mid_rotation += 1;
        }
        store.finish_rotation().unwrap();
        assert_eq!(store.root_key_generation(), u32::from(root), "seed {seed}");
        assert_eq!(store.stats().unwrap().rotation_skipped, 0, "seed {seed}");
        check(&store, USERS, CONVS);
        for n in &acked {
            let got = store
                .read(&user(&format!("child-{root}-{n}")), 0, 10)
                .unwrap();
            assert_eq!(got.len(), 1, "acknowledged append {n} lost, seed {seed}");
            assert_eq!(got[0].payload, n.to_be_bytes());
        }
        store.close().unwrap();
        // Nothing opens under the retired key; the new one alone opens all.
        assert!(
            matches!(
                Store::open(options(dir.path(), root - 1)),
                Err(Error::RetiredRootKey { .. })
            ),
            "seed {seed}"
        );
        let store = Store::open(options(dir.path(), root)).unwrap();
        check(&store, USERS, CONVS);
        store.close().unwrap();
        assert_eq!(key_record_versions(dir.path()), vec![2], "seed {seed}");
    }
    eprintln!("kill -9 rounds: {mid_rotation} of 6 found the rotation in progress (seed {seed})");
    // A rotation takes at least 105 batches 1 ms apart; three kills come
    // within 150 ms of its start.
    assert!(
        mid_rotation >= 1,
        "no kill landed inside a rotation, seed {seed}"
    );
}

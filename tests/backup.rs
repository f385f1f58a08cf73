//! Backups that honour erasure: a backup restored with a newer erasure
//! journal never brings back an erased user, a deleted conversation or a
//! redacted message, and holds none of their key material afterwards
//! (byte scans of the restored directory); without a newer journal the
//! restore refuses; a rekey after a root-key rotation opens under the new
//! key and drops what the journal erased; `inspect` names the erased users
//! a backup still holds keys of; the backup file holds no plaintext or id.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{raw_db, raw_entries, scan, user};
use shredstore::backup::{self, RestoreOptions};
use shredstore::layout::{CF_CONV_KEYS, CF_KEYS, CF_MESSAGES};
use shredstore::{BackupError, ConversationId, ConversationItem, Error, Options, RootKey, Store};

fn key(n: u8) -> RootKey {
    RootKey::from_bytes([n; 32])
}

fn options(dir: &Path, root: u8) -> Options {
    Options::new(dir, key(root)).purge_interval(None)
}

fn take_backup(store: &Store, file: &Path) -> backup::BackupManifest {
    let mut f = backup::create_private(file).unwrap();
    let m = backup::write_backup(store, &mut f, "test").unwrap();
    f.sync_all().unwrap();
    m
}

/// The raw records of a closed store: `(keys value, message values)` of
/// `handle`, and a conversation's key record.
fn raw_user(dir: &Path, handle: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let db = raw_db(dir);
    let key = raw_entries(&db, CF_KEYS, handle);
    assert_eq!(key.len(), 1);
    let msgs = raw_entries(&db, CF_MESSAGES, handle)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    (key[0].1.clone(), msgs)
}

fn raw_conv_key(dir: &Path, handle: &[u8]) -> Vec<u8> {
    let db = raw_db(dir);
    let e = raw_entries(&db, CF_CONV_KEYS, handle);
    assert_eq!(e.len(), 1);
    e[0].1.clone()
}

fn bytes_contain(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn room() -> ConversationId {
    ConversationId::new("backup-room-1").unwrap()
}

/// Fills a store under root key 1 with users alice and bob and a
/// conversation both write in; returns the captured raw records.
struct Fixture {
    _tmp: tempfile::TempDir,
    live: PathBuf,
    root: PathBuf,
    alice_key: Vec<u8>,
    alice_msgs: Vec<Vec<u8>>,
    bob_key: Vec<u8>,
    room_key: Vec<u8>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let live = root.join("live");
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    let store = Store::open(options(&live, 1)).unwrap();
    for n in 1..=3 {
        store
            .append(&alice, format!("canary-alice-{n}").as_bytes())
            .unwrap();
        store
            .append(&bob, format!("canary-bob-{n}").as_bytes())
            .unwrap();
    }
    let c = store.conversation(&room());
    c.append(&alice, b"canary-room-from-alice").unwrap();
    c.append(&bob, b"canary-room-from-bob").unwrap();
    let (ha, hb, hc) = (store.handle(&alice), store.handle(&bob), c.handle());
    drop(c);
    store.close().unwrap();
    let (alice_key, alice_msgs) = raw_user(&live, ha.as_bytes());
    let (bob_key, _) = raw_user(&live, hb.as_bytes());
    let room_key = raw_conv_key(&live, hc.as_bytes());
    Fixture {
        _tmp: tmp,
        live,
        root,
        alice_key,
        alice_msgs,
        bob_key,
        room_key,
    }
}

#[test]
fn a_restored_backup_with_the_live_journal_brings_nothing_erased_back() {
    let fx = fixture();
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    let store = Store::open(options(&fx.live, 1)).unwrap();
    let old = fx.root.join("old.shredbak");
    let manifest = take_backup(&store, &old);
    assert_eq!(manifest.users, 2);
    assert_eq!(manifest.conversations, 1);
    assert_eq!(manifest.root_key_generation, 1);
    assert_eq!(manifest.pending_erasures, 0);

    // The backup file: ciphertext and wrapped keys only. It does hold
    // alice's wrapped secret (the scan's positive control).
    let bytes = std::fs::read(&old).unwrap();
    for plain in [
        &b"canary-"[..],
        b"alice@example.com",
        b"bob@example.com",
        b"backup-room-1",
    ] {
        assert!(
            !bytes_contain(&bytes, plain),
            "{:?} in the backup file",
            String::from_utf8_lossy(plain)
        );
    }
    assert!(bytes_contain(&bytes, &fx.alice_key));

    // After the backup: alice is erased, the room deleted, one of bob's
    // messages redacted.
    store.erase(&alice).unwrap();
    store.conversation(&room()).delete().unwrap();
    store.redact_as(&bob, 2, "typo", "test").unwrap();
    let journal = store.erasure_journal().unwrap();
    assert_eq!(journal.users.len(), 1);
    assert_eq!(journal.conversations.len(), 1);
    assert_eq!(journal.redactions.len(), 1);
    assert!(journal.taken_ms >= manifest.journal_ms);

    // Without a newer journal the restore refuses, and creates nothing.
    let target = fx.root.join("restored");
    let err = backup::restore(RestoreOptions::new(&old, &target, key(1))).unwrap_err();
    assert!(
        matches!(err, Error::Backup(BackupError::StaleJournal { .. })),
        "{err:?}"
    );
    assert!(!target.exists());
    // Another store's journal is refused.
    let other = fx.root.join("other");
    let foreign = Store::open(options(&other, 1))
        .unwrap()
        .erasure_journal()
        .unwrap();
    let err = backup::restore(RestoreOptions::new(&old, &target, key(1)).journal(foreign.clone()))
        .unwrap_err();
    assert!(
        matches!(err, Error::Backup(BackupError::OtherStore)),
        "{err:?}"
    );
    // A target that holds something is refused.
    std::fs::create_dir_all(other.join("x")).unwrap();
    let err = backup::restore(RestoreOptions::new(&old, &other, key(1)).journal(journal.clone()))
        .unwrap_err();
    assert!(
        matches!(err, Error::Backup(BackupError::TargetNotEmpty)),
        "{err:?}"
    );

    // The journal is newer than the backup only if it was taken later.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let journal = store.erasure_journal().unwrap();
    let r = backup::restore(RestoreOptions::new(&old, &target, key(1)).journal(journal)).unwrap();
    assert!(!r.stale_journal);
    assert!(r.purge_complete);
    assert_eq!(r.replay.users_erased, 1);
    assert_eq!(r.replay.conversations_deleted, 1);
    assert_eq!(r.replay.redactions, 1);

    // Byte scans of the restored directory: nothing of alice's key record
    // or ciphertext, nor of the room's key; bob's key record is there.
    let mut needles = vec![fx.alice_key.clone(), fx.room_key.clone()];
    needles.extend(fx.alice_msgs.iter().cloned());
    let hits = scan(&target, &needles);
    assert!(
        hits.is_empty(),
        "erased bytes in the restored store: {hits:?}"
    );
    assert!(
        !scan(&target, std::slice::from_ref(&fx.bob_key)).is_empty(),
        "the scanner finds nothing"
    );

    let restored = Store::open(options(&target, 1)).unwrap();
    assert!(restored.read(&alice, 0, 10).unwrap().is_empty());
    assert!(
        restored
            .conversation(&room())
            .read(0, 10)
            .unwrap()
            .is_empty()
    );
    let b = restored.read(&bob, 0, 10).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].payload, b"canary-bob-1");
    assert!(b[1].redaction.is_some(), "the redaction came along");
    assert_eq!(b[2].payload, b"canary-bob-3");
    assert!(
        restored
            .verify_erasure(&alice)
            .unwrap()
            .is_physically_erased()
    );
    // The restore is on the audit trail, and so is each replayed step.
    let (trail, _) = restored.audit_page(0, u64::MAX, None, 1000).unwrap();
    assert!(trail.iter().any(|r| r.op == shredstore::AuditOp::Restore));
    assert!(
        trail
            .iter()
            .any(|r| r.op == shredstore::AuditOp::Erase && r.actor == backup::RESTORE_ACTOR)
    );
    // Seqs go on where the live store's did: a new append by alice is not
    // given a seq she had.
    assert!(restored.append(&alice, b"again").unwrap().seq > 3);
    restored.close().unwrap();

    // Accepting a stale journal restores what the backup had, loudly.
    let stale = fx.root.join("stale");
    let r = backup::restore(RestoreOptions::new(&old, &stale, key(1)).accept_stale_journal(true))
        .unwrap();
    assert!(r.stale_journal);
    let s = Store::open(options(&stale, 1)).unwrap();
    assert_eq!(
        s.read(&alice, 0, 10).unwrap().len(),
        3,
        "only a journal honours the erasure"
    );
    drop(s);

    // A newer backup carries the newer journal: restoring the old one with
    // the new backup as its journal honours the erasure too.
    let newer = fx.root.join("new.shredbak");
    take_backup(&store, &newer);
    let from_backup = backup::read_journal(&newer).unwrap();
    let again = fx.root.join("again");
    backup::restore(RestoreOptions::new(&old, &again, key(1)).journal(from_backup)).unwrap();
    let a = Store::open(options(&again, 1)).unwrap();
    assert!(a.read(&alice, 0, 10).unwrap().is_empty());
    assert_eq!(a.read(&bob, 0, 10).unwrap().len(), 3);
    store.close().unwrap();
}

#[test]
fn a_rekeyed_backup_opens_under_the_new_key_and_still_honours_erasure() {
    let fx = fixture();
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    let store = Store::open(options(&fx.live, 1)).unwrap();
    let old = fx.root.join("gen1.shredbak");
    take_backup(&store, &old);
    store.erase(&alice).unwrap();
    store.close().unwrap();
    // Rotate the live store to key 2.
    let store = Store::open(options(&fx.live, 2).previous_root_key(key(1))).unwrap();
    store.finish_rotation().unwrap();
    assert_eq!(store.root_key_generation(), 2);
    let journal = store.erasure_journal().unwrap();
    assert_eq!(journal.root_key_generation, 2);

    // The old backup holds alice's key, under a retired root key.
    let seen = backup::inspect(&old, std::slice::from_ref(&journal)).unwrap();
    assert_eq!(seen.erased_users_with_keys, vec![store.handle(&alice)]);
    assert_eq!(seen.current_root_key, Some(false));
    assert!(seen.holds_erased_keys());
    assert_eq!((seen.users, seen.conversations), (2, 1));
    assert_eq!(seen.root_key_generation, 1);
    assert_eq!(seen.messages, 6);

    let rekeyed = fx.root.join("gen2.shredbak");
    let r = backup::rekey(&old, &rekeyed, key(1), key(2), vec![journal.clone()], false).unwrap();
    assert_eq!(r.from.root_key_generation, 1);
    assert_eq!(r.to.root_key_generation, 2, "the live store's generation");
    assert_eq!(
        r.to.created_ms, r.from.created_ms,
        "a rekey keeps the data's time"
    );
    assert_eq!(r.to.journal_ms, journal.taken_ms);
    assert!(r.to.rekeyed_ms.is_some());
    assert_eq!(r.replay.users_erased, 1);
    assert_eq!(r.to.users, 1);
    // Nothing of alice, and nothing wrapped under the old key (bob's old
    // key record), is in the rekeyed file.
    let bytes = std::fs::read(&rekeyed).unwrap();
    assert!(!bytes_contain(&bytes, &fx.alice_key));
    assert!(
        !bytes_contain(&bytes, &fx.bob_key),
        "a key record under the old key survived"
    );
    for m in &fx.alice_msgs {
        assert!(!bytes_contain(&bytes, m));
    }
    let seen = backup::inspect(&rekeyed, std::slice::from_ref(&journal)).unwrap();
    assert!(!seen.holds_erased_keys(), "{seen:?}");
    assert_eq!(
        seen.current_root_key, None,
        "no journal newer than the rekeyed backup"
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newer = store.erasure_journal().unwrap();
    let seen = backup::inspect(&rekeyed, std::slice::from_ref(&newer)).unwrap();
    assert_eq!(seen.current_root_key, Some(true));
    assert_eq!(seen.root_key_generation, 2);

    // It restores under key 2; key 1 is refused as retired.
    let target = fx.root.join("restored");
    let err =
        backup::restore(RestoreOptions::new(&rekeyed, &target, key(1)).journal(newer.clone()))
            .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RetiredRootKey {
                retired: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    assert!(!target.exists());
    backup::restore(RestoreOptions::new(&rekeyed, &target, key(2)).journal(newer.clone())).unwrap();
    let restored = Store::open(options(&target, 2)).unwrap();
    assert!(restored.read(&alice, 0, 10).unwrap().is_empty());
    assert_eq!(
        restored.read(&bob, 0, 10).unwrap()[0].payload,
        b"canary-bob-1"
    );
    let room = restored.conversation(&room()).read(0, 10).unwrap();
    assert!(
        matches!(room[0], ConversationItem::Tombstone(_)),
        "alice's message is a tombstone"
    );
    assert!(matches!(room[1], ConversationItem::Message(_)));
    restored.close().unwrap();

    // The old backup restores straight under the new key too (the backup's
    // key as the previous root key).
    let direct = fx.root.join("direct");
    let r = backup::restore(
        RestoreOptions::new(&old, &direct, key(2))
            .previous_root_key(key(1))
            .journal(newer),
    )
    .unwrap();
    assert_eq!(r.root_key_generation, 2);
    assert!(scan(&direct, &[fx.alice_key.clone(), fx.bob_key.clone()]).is_empty());
    let d = Store::open(options(&direct, 2)).unwrap();
    assert!(d.read(&alice, 0, 10).unwrap().is_empty());
    assert_eq!(d.read(&bob, 0, 10).unwrap().len(), 3);
    store.close().unwrap();
}

#[test]
fn a_backup_taken_while_appends_go_on_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Arc::new(Store::open(options(&live, 1)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut acked = vec![0u64; 8];
                while !stop.load(Ordering::Relaxed) {
                    for (u, n) in acked.iter_mut().enumerate() {
                        let id = user(&format!("writer-{w}-user-{u}"));
                        let a = store
                            .append(&id, format!("m{}", *n + 1).as_bytes())
                            .unwrap();
                        *n = a.seq;
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let file = tmp.path().join("b.shredbak");
    take_backup(&store, &file);
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Vec<u64>> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(backup::verify_file(&file).is_ok());
    let target = tmp.path().join("restored");
    backup::restore(RestoreOptions::new(&file, &target, key(1)).accept_stale_journal(true))
        .unwrap();
    let r = Store::open(options(&target, 1)).unwrap();
    let mut total = 0;
    for (w, users) in acked.iter().enumerate() {
        for (u, &last) in users.iter().enumerate() {
            let id = user(&format!("writer-{w}-user-{u}"));
            let got: Vec<_> = r.read_iter(&id, 0).unwrap().map(|m| m.unwrap()).collect();
            // A prefix of what was acknowledged, without gaps.
            for (i, m) in got.iter().enumerate() {
                assert_eq!(m.seq, i as u64 + 1);
                assert_eq!(m.payload, format!("m{}", i + 1).as_bytes());
            }
            assert!(got.len() as u64 <= last);
            total += got.len();
        }
    }
    assert!(total > 0, "the backup holds what was appended before it");
}

#[test]
fn a_damaged_backup_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Store::open(options(&live, 1)).unwrap();
    store.append(&user("u"), b"hello").unwrap();
    let file = tmp.path().join("b.shredbak");
    let m = take_backup(&store, &file);
    let journal = store.erasure_journal().unwrap();
    let good = std::fs::read(&file).unwrap();
    let restore_bytes = |bytes: &[u8], name: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        backup::restore(
            RestoreOptions::new(&f, tmp.path().join(format!("{name}.dir")), key(1))
                .journal(journal.clone())
                .accept_stale_journal(true),
        )
    };
    // Truncated, a flipped byte in the last store file, not a backup.
    let cut = &good[..good.len() / 2];
    assert!(matches!(
        restore_bytes(cut, "cut"),
        Err(Error::Backup(BackupError::Damaged(_)))
    ));
    let mut flipped = good.clone();
    let total: u64 = m.files.iter().map(|f| f.len).sum();
    assert!(total > 0);
    // The checksums entry is the last 1024 bytes or so; flip a byte well
    // inside the data.
    let at = good.len() / 2;
    flipped[at] ^= 0x55;
    assert!(restore_bytes(&flipped, "flipped").is_err());
    assert!(matches!(
        restore_bytes(b"hello", "junk"),
        Err(Error::Backup(BackupError::NotABackup))
    ));
    assert!(matches!(
        backup::read_journal(&tmp.path().join("junk")),
        Err(Error::Backup(BackupError::NotAJournal))
    ));
    // A journal file round-trips through the file reader.
    let jf = tmp.path().join("j.shredjnl");
    let mut bytes = Vec::new();
    journal.encode(&mut bytes);
    std::fs::write(&jf, &bytes).unwrap();
    assert_eq!(backup::read_journal(&jf).unwrap(), journal);
    // Only one backup at a time is not tested here; the good file restores.
    assert!(restore_bytes(&good, "good").is_ok());
}

/// The journal carries the erasure ledger: a restore of an older backup
/// knows the requests cancelled, done or received since. A request
/// cancelled since does not run in the restored store (its user is no
/// longer restricted), one received since is there and restricts its
/// user, one done since is closed with the live receipt.
#[test]
fn a_restore_brings_the_erasure_ledger_up_to_the_journal() {
    use shredstore::{Access, ErasureRequestState};
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let (carol, dave, erin) = (user("carol"), user("dave"), user("erin"));
    let store = Store::open(options(&live, 1).ledger_interval(None)).unwrap();
    for u in [&carol, &dave, &erin] {
        store.append(u, b"m").unwrap();
    }
    let hour = 3_600_000;
    let c = store
        .request_erasure_as(&carol, hour, false, "dpo")
        .unwrap()
        .request;
    let d = store
        .request_erasure_as(&dave, 0, false, "dpo")
        .unwrap()
        .request;
    let file = tmp.path().join("b.shredbak");
    take_backup(&store, &file);
    // Since the backup: carol's request cancelled, dave's run, erin's
    // received.
    store.cancel_erasure_as(c.id, "dpo").unwrap();
    assert_eq!(store.run_erasure_requests().unwrap(), 1);
    let e = store
        .request_erasure_as(&erin, hour, false, "dpo")
        .unwrap()
        .request;
    std::thread::sleep(std::time::Duration::from_millis(2));
    let journal = store.erasure_journal().unwrap();
    assert_eq!(journal.requests.len(), 3);
    let live_list = store.erasure_requests(None).unwrap();
    store.close().unwrap();

    let target = tmp.path().join("restored");
    let r = backup::restore(RestoreOptions::new(&file, &target, key(1)).journal(journal)).unwrap();
    assert_eq!(r.replay.requests, 3);
    let restored = Store::open(options(&target, 1).ledger_interval(None)).unwrap();
    let listed = restored.erasure_requests(None).unwrap();
    assert_eq!(listed, live_list);
    let state = |id| listed.iter().find(|r| r.id == id).unwrap().state;
    assert_eq!(state(c.id), ErasureRequestState::Cancelled);
    assert_eq!(state(d.id), ErasureRequestState::Done);
    assert_eq!(state(e.id), ErasureRequestState::Pending);
    // Carol is readable again; dave erased; erin restricted.
    assert_eq!(restored.read(&carol, 0, 10).unwrap().len(), 1);
    assert!(
        restored
            .read_with(&dave, 0, 10, Access::Override)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        restored.read(&erin, 0, 10),
        Err(Error::Restricted { .. })
    ));
    assert_eq!(restored.stats().unwrap().erasure_requests_open, 1);
    // Nothing runs that should not: carol's request is closed.
    assert_eq!(restored.run_erasure_requests().unwrap(), 0);
    assert_eq!(restored.read(&carol, 0, 10).unwrap().len(), 1);
    restored.close().unwrap();
}

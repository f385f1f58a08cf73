//! Tampering with stored records never yields wrong plaintext: a flipped byte
//! is `Corrupt` or `Decrypt`; an envelope moved to another user or seq fails to
//! open; a lost key record fails closed instead of looking like an erasure.

mod common;

use std::path::Path;

use common::{open, raw_db, user};
use shredstore::layout::{CF_KEYS, CF_MESSAGES};
use shredstore::{Corruption, Error, Handle, Store, UserId};

fn setup(dir: &Path) -> (Handle, Handle) {
    let store = open(dir);
    let (a, b) = (user("tamper-a"), user("tamper-b"));
    for i in 0..3 {
        store.append(&a, format!("a-{i}").as_bytes()).unwrap();
        store.append(&b, format!("b-{i}").as_bytes()).unwrap();
    }
    let handles = (store.handle(&a), store.handle(&b));
    store.close().unwrap();
    handles
}

fn with_raw(dir: &Path, f: impl FnOnce(&rocksdb::DB)) {
    let db = raw_db(dir);
    f(&db);
}

fn get(db: &rocksdb::DB, cf: &str, key: &[u8]) -> Vec<u8> {
    db.get_cf(db.cf_handle(cf).unwrap(), key).unwrap().unwrap()
}

fn put(db: &rocksdb::DB, cf: &str, key: &[u8], v: &[u8]) {
    db.put_cf(db.cf_handle(cf).unwrap(), key, v).unwrap();
}

fn read_all(store: &Store, u: &UserId) -> Result<Vec<shredstore::Message>, Error> {
    store.read(u, 0, 100)
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    let key = message_key(&ha, 2);
    let original = {
        let db = raw_db(dir.path());
        get(&db, CF_MESSAGES, &key)
    };
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        with_raw(dir.path(), |db| put(db, CF_MESSAGES, &key, &bad));
        let store = open(dir.path());
        let err = read_all(&store, &user("tamper-a")).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt(_) | Error::Decrypt),
            "byte {i}: {err:?}"
        );
        // Messages before the damaged one are still served by a range read.
        assert_eq!(
            store.read(&user("tamper-a"), 1, 1).unwrap()[0].payload,
            b"a-0"
        );
        drop(store);
    }
    with_raw(dir.path(), |db| put(db, CF_MESSAGES, &key, &original));
    assert_eq!(
        read_all(&open(dir.path()), &user("tamper-a"))
            .unwrap()
            .len(),
        3
    );
}

/// Re-seals the CRC so only the AEAD stands between an attacker and the data.
fn recrc(v: &mut [u8]) {
    let n = v.len() - 4;
    let crc = crc32fast::hash(&v[..n]);
    v[n..].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn flipped_ciphertext_with_valid_crc_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    let key = message_key(&ha, 1);
    with_raw(dir.path(), |db| {
        let mut v = get(db, CF_MESSAGES, &key);
        v[30] ^= 0x80;
        recrc(&mut v);
        put(db, CF_MESSAGES, &key, &v);
    });
    let err = read_all(&open(dir.path()), &user("tamper-a")).unwrap_err();
    assert!(matches!(err, Error::Decrypt), "{err:?}");
}

#[test]
fn altered_timestamp_with_valid_crc_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    let key = message_key(&ha, 1);
    with_raw(dir.path(), |db| {
        let mut v = get(db, CF_MESSAGES, &key);
        v[12] ^= 0x01; // last byte of the timestamp
        recrc(&mut v);
        put(db, CF_MESSAGES, &key, &v);
    });
    let err = read_all(&open(dir.path()), &user("tamper-a")).unwrap_err();
    assert!(matches!(err, Error::Decrypt), "{err:?}");
}

#[test]
fn envelope_moved_to_another_seq_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    with_raw(dir.path(), |db| {
        let v = get(db, CF_MESSAGES, &message_key(&ha, 1));
        put(db, CF_MESSAGES, &message_key(&ha, 3), &v);
    });
    let store = open(dir.path());
    let err = store.read(&user("tamper-a"), 3, 1).unwrap_err();
    assert!(matches!(err, Error::Decrypt), "{err:?}");
    assert_eq!(store.read(&user("tamper-a"), 1, 2).unwrap().len(), 2);
}

#[test]
fn envelope_copied_to_another_user_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, hb) = setup(dir.path());
    with_raw(dir.path(), |db| {
        let v = get(db, CF_MESSAGES, &message_key(&ha, 2));
        put(db, CF_MESSAGES, &message_key(&hb, 2), &v);
    });
    let store = open(dir.path());
    let err = store.read(&user("tamper-b"), 2, 1).unwrap_err();
    assert!(matches!(err, Error::Decrypt), "{err:?}");
    // The victim's own messages are intact.
    assert_eq!(read_all(&store, &user("tamper-a")).unwrap().len(), 3);
}

#[test]
fn key_record_swapped_between_users_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, hb) = setup(dir.path());
    with_raw(dir.path(), |db| {
        let ka = get(db, CF_KEYS, ha.as_bytes());
        put(db, CF_KEYS, hb.as_bytes(), &ka);
    });
    let err = read_all(&open(dir.path()), &user("tamper-b")).unwrap_err();
    assert!(matches!(err, Error::Decrypt), "{err:?}");
}

#[test]
fn lost_key_record_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    with_raw(dir.path(), |db| {
        db.delete_cf(db.cf_handle(CF_KEYS).unwrap(), ha.as_bytes())
            .unwrap();
    });
    let store = open(dir.path());
    let a = user("tamper-a");
    let err = read_all(&store, &a).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt(Corruption::MissingKeyRecord)),
        "{err:?}"
    );
    // Appending must not silently start a new key over orphaned data either.
    assert!(matches!(
        store.append(&a, b"x"),
        Err(Error::Corrupt(Corruption::MissingKeyRecord))
    ));
    // But the user can still be erased (and then reads empty).
    store.erase(&a).unwrap();
    assert!(read_all(&store, &a).unwrap().is_empty());
    assert_eq!(store.append(&a, b"fresh").unwrap().seq, 4);
    store.purge().unwrap();
    assert_eq!(read_all(&store, &a).unwrap().len(), 1);
    assert_eq!(read_all(&store, &user("tamper-b")).unwrap().len(), 3);
}

#[test]
fn damaged_key_record_is_corrupt_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    with_raw(dir.path(), |db| {
        let mut k = get(db, CF_KEYS, ha.as_bytes());
        k[2] ^= 0x40;
        put(db, CF_KEYS, ha.as_bytes(), &k);
    });
    let err = read_all(&open(dir.path()), &user("tamper-a")).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt(Corruption::Checksum)),
        "{err:?}"
    );
}

/// A message's storage key: `handle || seq_be64` (docs/format.md).
fn message_key(h: &shredstore::Handle, seq: u64) -> Vec<u8> {
    let mut k = h.as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Regression (issue 11, item 8): one undecodable erasure marker stopped the
/// whole store from opening. Now the store opens, that user alone fails
/// closed (its reads are `Corrupt`), others are served, and erasing the
/// user again rewrites the marker.
#[test]
fn an_undecodable_marker_fails_closed_for_its_user_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    let (a, b) = (user("tamper-a"), user("tamper-b"));
    {
        let store = open(dir.path());
        store.erase(&a).unwrap();
        store.append(&a, b"back again").unwrap();
        store.close().unwrap();
    }
    with_raw(dir.path(), |db| {
        let mut m = get(db, shredstore::layout::CF_ERASED, ha.as_bytes());
        m[1] ^= 0x40;
        put(db, shredstore::layout::CF_ERASED, ha.as_bytes(), &m);
    });
    let store = open(dir.path());
    assert!(matches!(read_all(&store, &a), Err(Error::Corrupt(_))));
    assert!(matches!(store.append(&a, b"x"), Err(Error::Corrupt(_))));
    assert_eq!(read_all(&store, &b).unwrap().len(), 3);
    store.erase(&a).unwrap();
    assert!(read_all(&store, &a).unwrap().is_empty());
    assert!(store.purge().unwrap().complete);
    drop(store);
    let store = open(dir.path());
    assert!(read_all(&store, &a).unwrap().is_empty());
    assert_eq!(read_all(&store, &b).unwrap().len(), 3);
}

/// Regression (issue 11, item 11): erasing a user whose only record was a
/// damaged key record (no messages) produced a receipt saying `purged`
/// while the wrapped secret was still on disk.
#[test]
fn a_damaged_key_record_without_messages_is_purged_not_declared_purged() {
    let dir = tempfile::tempdir().unwrap();
    let c = user("tamper-c");
    let hc = {
        let store = open(dir.path());
        store.set_legal_hold_as(&c, "case 1", None, "test").unwrap();
        store.lift_legal_hold_as(&c, "test").unwrap();
        let h = store.handle(&c);
        store.close().unwrap();
        h
    };
    with_raw(dir.path(), |db| {
        let mut rec = get(db, CF_KEYS, hc.as_bytes());
        rec[3] ^= 1;
        put(db, CF_KEYS, hc.as_bytes(), &rec);
    });
    let store = open(dir.path());
    let erased = store.erase(&c).unwrap();
    assert_eq!(
        erased.receipt.purge_status,
        shredstore::PurgeStatus::Pending
    );
    assert_eq!(store.stats().unwrap().pending_erasures, 1);
    assert!(!store.verify_erasure(&c).unwrap().is_physically_erased());
    assert!(store.purge().unwrap().complete);
    assert_eq!(
        store.purge_status(&hc).unwrap(),
        Some(shredstore::PurgeStatus::Purged)
    );
    assert!(store.verify_erasure(&c).unwrap().is_physically_erased());
}

/// Regression (issue 11, item 11): the compaction filter removed a record
/// on its header's epoch alone, so a bit flip that made a live record look
/// erased deleted it silently. The CRC must hold first: the damaged record
/// stays and reads report it (`DATA_LOSS` over gRPC); its purge cannot be
/// confirmed while it claims the erased epoch.
#[test]
fn a_flipped_epoch_is_reported_not_silently_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (ha, _) = setup(dir.path());
    let a = user("tamper-a");
    {
        let store = open(dir.path());
        store.erase(&a).unwrap();
        store.append(&a, b"epoch two").unwrap();
        store.close().unwrap();
    }
    with_raw(dir.path(), |db| {
        let key = message_key(&ha, 4);
        let mut v = get(db, CF_MESSAGES, &key);
        assert_eq!(v[1..5], 2u32.to_be_bytes());
        v[4] = 1; // epoch 2 -> 1, the erased one; CRC left as it was
        put(db, CF_MESSAGES, &key, &v);
    });
    let store = open(dir.path());
    let report = store.purge().unwrap();
    assert!(!report.complete, "{report:?}");
    assert!(matches!(
        read_all(&store, &a),
        Err(Error::Corrupt(Corruption::Checksum))
    ));
}

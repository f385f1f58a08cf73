//! Tampering with stored records never yields wrong plaintext: a flipped byte
//! is `Corrupt` or `Decrypt`; an envelope moved to another user or seq fails to
//! open; a lost key record fails closed instead of looking like an erasure.

mod common;

use std::path::Path;

use common::{open, raw_db, user};
use shredstore::codec::message_key;
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

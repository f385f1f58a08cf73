//! Close and reopen: data, seqs and erasures persist; a wrong root key fails
//! at open with a typed error; root keys load from files.

mod common;

use common::{open, options, user};
use shredstore::{Error, Options, RootKey, Store};

#[test]
fn reopen_keeps_everything_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, gone) = (user("a"), user("b"), user("gone"));
    {
        let store = open(dir.path());
        for i in 0..10 {
            store.append(&a, format!("a{i}").as_bytes()).unwrap();
        }
        store.append(&b, b"b0").unwrap();
        store.append(&gone, b"secret").unwrap();
        store.erase(&gone).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    let got = store.read(&a, 0, 100).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].payload, b"a9");
    assert_eq!(store.append(&a, b"a10").unwrap().seq, 11);
    assert_eq!(store.append(&b, b"b1").unwrap().seq, 2);
    assert!(store.read(&gone, 0, 100).unwrap().is_empty());
    assert_eq!(store.append(&gone, b"back").unwrap().seq, 2);
    let stats = store.stats().unwrap();
    assert_eq!(stats.users, 3);
    // Dropping without close is also safe (Sync durability).
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.read(&a, 0, 100).unwrap().len(), 11);
    assert_eq!(store.read(&gone, 0, 100).unwrap().len(), 1);
}

#[test]
fn wrong_root_key_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).append(&user("a"), b"x").unwrap();
    let err = Store::open(Options::new(dir.path(), RootKey::from_bytes([0x43; 32]))).unwrap_err();
    assert!(matches!(err, Error::WrongRootKey), "{err:?}");
    // The right key still works afterwards.
    assert_eq!(open(dir.path()).read(&user("a"), 0, 1).unwrap().len(), 1);
}

#[test]
fn root_key_from_file_raw_or_hex() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let raw = dir.path().join("raw.key");
    let hex = dir.path().join("hex.key");
    std::fs::write(&raw, common::ROOT).unwrap();
    std::fs::write(&hex, format!("{}\n", hex::encode(common::ROOT))).unwrap();
    Store::open(Options::new(&data, RootKey::from_file(&raw).unwrap()).purge_interval(None))
        .unwrap()
        .append(&user("k"), b"v")
        .unwrap();
    let store =
        Store::open(Options::new(&data, RootKey::from_file(&hex).unwrap()).purge_interval(None))
            .unwrap();
    assert_eq!(store.read(&user("k"), 0, 1).unwrap()[0].payload, b"v");
    std::fs::write(&raw, b"too short").unwrap();
    assert!(matches!(
        RootKey::from_file(&raw),
        Err(Error::InvalidRootKey(_))
    ));
    assert!(matches!(
        RootKey::from_file(dir.path().join("missing")),
        Err(Error::Io(_))
    ));
}

#[test]
fn unsupported_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().unwrap();
    {
        let db = common::raw_db(dir.path());
        let meta = db.cf_handle(shredstore::layout::CF_META).unwrap();
        db.put_cf(
            meta,
            shredstore::layout::META_FORMAT_VERSION,
            99u32.to_be_bytes(),
        )
        .unwrap();
    }
    let err = Store::open(options(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedFormat {
                found: 99,
                supported: 4
            }
        ),
        "{err:?}"
    );
}

/// A store of format version 1 (before labelled handles and the
/// `seq_floors` column family) is refused naming both versions, and left
/// exactly as it was: the build that wrote it can still open it.
#[test]
fn an_older_format_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let v1_cfs = [
        "meta", "keys", "messages", "erased", "dedup", "audit", "consent",
    ];
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), v1_cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"format_version", 1u32.to_be_bytes())
            .unwrap();
    }
    let err = Store::open(options(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedFormat {
                found: 1,
                supported: 4
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains('1') && err.to_string().contains('4'));
    let mut cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    cfs.sort();
    let mut want: Vec<String> = v1_cfs.iter().map(|s| s.to_string()).collect();
    want.push("default".into());
    want.sort();
    assert_eq!(cfs, want, "the refused store was changed");
}

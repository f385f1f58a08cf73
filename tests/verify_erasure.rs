//! Erasure verification: `Store::verify_erasure` and the `shredstore
//! verify-erasure` command report a user's state before an erasure, while it
//! is pending and once it is physical, and agree with a byte scan of the
//! data directory.

mod common;

use common::{open, options, raw_db, raw_entries, scan, user};
use shredstore::{IdempotentAppend, Store};

#[test]
fn reports_live_pending_and_physical_states() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    for i in 0..50 {
        store
            .append(&alice, format!("alice secret {i}").as_bytes())
            .unwrap();
    }
    let IdempotentAppend { .. } = store
        .append_idempotent(&alice, b"client-msg-1", b"alice idempotent")
        .unwrap();
    store.append(&bob, b"bob stays").unwrap();
    // Capture alice's ciphertexts as stored, for the byte scan at the end.
    let handle = store.handle(&alice);
    store.close().unwrap();
    let sealed: Vec<Vec<u8>> = {
        let db = raw_db(dir.path());
        raw_entries(&db, shredstore::layout::CF_MESSAGES, handle.as_bytes())
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(sealed.len(), 51);
    let store = open(dir.path());

    let before = store.verify_erasure(&alice).unwrap();
    assert_eq!(before.handle, store.handle(&alice));
    assert!(before.marker.is_none() && before.live_key);
    assert_eq!((before.erased_records, before.live_records), (0, 51));
    assert_eq!(before.dedup_entries, 1);
    assert!(!before.is_physically_erased() && !before.is_pending());

    store.erase(&alice).unwrap();
    let pending = store.verify_erasure(&alice).unwrap();
    let marker = pending.marker.unwrap();
    assert!(!marker.purged);
    assert_eq!(marker.epoch, 1);
    assert!(!pending.live_key);
    assert_eq!((pending.erased_records, pending.live_records), (51, 0));
    assert_eq!(
        pending.dedup_entries, 0,
        "erase drops the idempotency index"
    );
    assert!(pending.is_pending() && !pending.is_physically_erased());

    assert!(store.purge().unwrap().complete);
    let done = store.verify_erasure(&alice).unwrap();
    assert!(done.marker.unwrap().purged);
    assert_eq!(done.erased_records, 0);
    assert!(done.is_physically_erased() && !done.is_pending());
    // The byte scan agrees: none of alice's ciphertexts is left in any file.
    store.flush().unwrap();
    assert_eq!(scan(dir.path(), &sealed), vec![]);

    // She comes back: the new data is hers and live; the old erasure stays physical.
    store.append(&alice, b"alice again").unwrap();
    let back = store.verify_erasure(&alice).unwrap();
    assert!(back.live_key && back.live_records == 1 && back.erased_records == 0);
    assert!(back.is_physically_erased());

    // Bob, never erased, is untouched.
    let b = store.verify_erasure(&bob).unwrap();
    assert!(b.marker.is_none() && b.live_records == 1);
    assert_eq!(store.read(&bob, 0, 10).unwrap()[0].payload, b"bob stays");
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(&user("carol"), b"carol's").unwrap();
        store.erase(&user("carol")).unwrap();
        store.close().unwrap();
    }
    let store = Store::open(options(dir.path())).unwrap();
    let check = store.verify_erasure(&user("carol")).unwrap();
    assert!(check.is_pending());
    assert_eq!(check.erased_records, 1);
    store.purge().unwrap();
    assert!(
        store
            .verify_erasure(&user("carol"))
            .unwrap()
            .is_physically_erased()
    );
}

#[cfg(feature = "server")]
#[test]
fn command_exit_codes_follow_the_state() {
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("root.key");
    std::fs::write(&key, common::ROOT).unwrap();
    {
        let store = open(&data);
        store.append(&user("dave"), b"dave's").unwrap();
        store.append(&user("erin"), b"erin's").unwrap();
        store.erase(&user("dave")).unwrap();
        store.close().unwrap();
    }
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
            .arg("verify-erasure")
            .arg("--data-dir")
            .arg(&data)
            .arg("--root-key-file")
            .arg(&key)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--user-id", "dave"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("NOT PHYSICALLY") && out.contains("erased-epoch messages:  1"),
        "{out}"
    );
    assert!(
        !out.contains("dave"),
        "the report must not print the user id: {out}"
    );

    let (code, out, _) = run(&["--user-id", "dave", "--purge"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PHYSICALLY ERASED"));

    // base64 of "erin": never erased.
    let (code, out, _) = run(&["--user-id-base64", "ZXJpbg=="]);
    assert_eq!(code, Some(3), "{out}");

    // A wrong key, a missing store, a bad id: errors, status 1.
    std::fs::write(&key, [0x11u8; 32]).unwrap();
    let (code, _, err) = run(&["--user-id", "dave"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("root key"), "{err}");
    let (code, _, err) = run(&["--user-id-base64", "%%%"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("base64"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["verify-erasure", "--user-id", "x", "--data-dir"])
        .arg(dir.path().join("nothing-here"))
        .arg("--root-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

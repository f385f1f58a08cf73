//! The audit trail (records of processing) and signed erasure receipts.

mod common;

use common::engines::{Fixture, on_both_engines};
use common::{open, raw_db, raw_entries, user};
use shredstore::layout::CF_AUDIT;
use shredstore::{
    AuditOp, AuditOutcome, EraseOptions, ErasureReceipt, Options, PurgeStatus, RootKey, Store,
};

// Receipts and the audit trail, on both engines (its raw bytes: the RocksDB
// test below).
on_both_engines!(
    erasing_a_user_with_nothing_stored_gives_a_purged_receipt,
    re_erasing_a_purged_user_stays_purged,
    callers_cannot_forge_the_stores_own_records,
    audit_trail_survives_reopen_and_erasure,
);

#[test]
fn erase_and_purge_are_audited_with_actor_and_handle_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let alice = user("alice@example.com");
    store.append(&alice, b"hello").unwrap();
    let erased = store
        .erase_as(&alice, EraseOptions::default(), "privacy-team")
        .unwrap();
    store.purge_as("ops").unwrap();
    store.erase(&user("bob@example.com")).unwrap();
    store
        .record_audit("auditor", AuditOp::Stats, None, AuditOutcome::Refused)
        .unwrap();

    let log = store.audit_log(0, u64::MAX, 100).unwrap();
    let summary: Vec<(String, AuditOp, Option<[u8; 16]>, AuditOutcome)> = log
        .iter()
        .map(|r| (r.actor.clone(), r.op, r.handle, r.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "privacy-team".into(),
                AuditOp::Erase,
                Some(*erased.handle.as_bytes()),
                AuditOutcome::Ok
            ),
            ("ops".into(), AuditOp::Purge, None, AuditOutcome::Ok),
            (
                "library".into(),
                AuditOp::Erase,
                Some(*store.handle(&user("bob@example.com")).as_bytes()),
                AuditOutcome::Ok
            ),
            (
                "auditor".into(),
                AuditOp::Stats,
                None,
                AuditOutcome::Refused
            ),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    // Time range and limit.
    assert_eq!(store.audit_log(0, u64::MAX, 2).unwrap().len(), 2);
    assert!(store.audit_log(0, log[0].time_ms, 10).unwrap().is_empty());
    assert!(store.audit_log(0, u64::MAX, 0).is_err());

    // The raw records hold no user id: scan the column family's values.
    store.close().unwrap();
    let db = raw_db(dir.path());
    let raw = raw_entries(&db, CF_AUDIT, b"");
    assert_eq!(raw.len(), 4);
    for (_, v) in &raw {
        for id in [
            &b"alice@example.com"[..],
            b"bob@example.com",
            b"alice",
            b"bob",
        ] {
            assert!(
                !v.windows(id.len()).any(|w| w == id),
                "an audit record contains a user id"
            );
        }
    }
}

fn audit_trail_survives_reopen_and_erasure(f: &Fixture) {
    let carol = user("carol");
    {
        let store = f.open();
        store.append(&carol, b"x").unwrap();
        store.erase(&carol).unwrap();
        store.close().unwrap();
    }
    let store = Store::open(f.options()).unwrap();
    // Carol comes back and is erased again: both erasures stay on record,
    // with distinct keys (the counter continues after reopen).
    store.append(&carol, b"y").unwrap();
    store.erase(&carol).unwrap();
    store.purge().unwrap();
    let log = store.audit_log(0, u64::MAX, 100).unwrap();
    let erases = log.iter().filter(|r| r.op == AuditOp::Erase).count();
    assert_eq!(erases, 2);
    assert_eq!(log.iter().filter(|r| r.op == AuditOp::Purge).count(), 1);
}

#[test]
fn receipts_verify_and_any_change_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let dave = user("dave");
    for i in 0..7 {
        store.append(&dave, format!("m{i}").as_bytes()).unwrap();
    }
    let erased = store.erase(&dave).unwrap();
    let r = erased.receipt;
    assert_eq!(r.handle, store.handle(&dave));
    assert_eq!((r.epoch, r.messages_erased), (1, 7));
    assert_eq!(r.erased_at_ms, erased.erased_at_ms);
    assert_eq!(r.purge_status, PurgeStatus::Pending);
    assert!(store.verify_receipt(&r));

    let tampered: Vec<(&str, ErasureReceipt)> = vec![
        ("epoch", ErasureReceipt { epoch: 2, ..r }),
        (
            "time",
            ErasureReceipt {
                erased_at_ms: r.erased_at_ms - 1,
                ..r
            },
        ),
        (
            "count",
            ErasureReceipt {
                messages_erased: 6,
                ..r
            },
        ),
        (
            "status",
            ErasureReceipt {
                purge_status: PurgeStatus::Purged,
                ..r
            },
        ),
        (
            "handle",
            ErasureReceipt {
                handle: store.handle(&user("eve")),
                ..r
            },
        ),
        ("mac", {
            let mut m = r.mac;
            m[31] ^= 1;
            ErasureReceipt { mac: m, ..r }
        }),
    ];
    for (what, t) in tampered {
        assert!(
            !store.verify_receipt(&t),
            "a receipt with a changed {what} verified"
        );
    }

    // The purge status moves on; the receipt keeps what it said when issued.
    assert_eq!(
        store.purge_status(&r.handle).unwrap(),
        Some(PurgeStatus::Pending)
    );
    store.purge().unwrap();
    assert_eq!(
        store.purge_status(&r.handle).unwrap(),
        Some(PurgeStatus::Purged)
    );
    assert!(store.verify_receipt(&r));
    assert_eq!(
        store.purge_status(&store.handle(&user("never"))).unwrap(),
        None
    );

    // Another store (another root key) does not accept it.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(
        Options::new(other_dir.path(), RootKey::from_bytes([9; 32])).purge_interval(None),
    )
    .unwrap();
    assert!(!other.verify_receipt(&r));
}

fn erasing_a_user_with_nothing_stored_gives_a_purged_receipt(f: &Fixture) {
    let store = f.open();
    let r = store.erase(&user("nobody")).unwrap().receipt;
    assert_eq!((r.epoch, r.messages_erased), (0, 0));
    assert_eq!(r.purge_status, PurgeStatus::Purged);
    assert!(store.verify_receipt(&r));
}

/// Regression (issue 11, item 11): re-erasing a user whose erasure was
/// already purged reset it to pending (and re-issued a pending receipt)
/// though nothing new had been stored.
fn re_erasing_a_purged_user_stays_purged(f: &Fixture) {
    let store = f.open();
    let a = common::user("re-erased");
    store.append(&a, b"one").unwrap();
    store.erase(&a).unwrap();
    assert!(store.purge().unwrap().complete);
    let again = store.erase(&a).unwrap();
    assert_eq!(again.receipt.purge_status, PurgeStatus::Purged);
    assert_eq!(store.stats().unwrap().pending_erasures, 0);
    assert_eq!(
        store.purge_status(&again.handle).unwrap(),
        Some(PurgeStatus::Purged)
    );
    // verify-erasure reads RocksDB's files: JetStream refuses it, naming
    // the engine.
    match store.verify_erasure(&a) {
        Err(shredstore::Error::Unsupported {
            engine: "jetstream",
            ..
        }) if f.is_jetstream() => {}
        r => assert!(r.unwrap().is_physically_erased()),
    }
    // New data, then an erasure: pending again, as it must be.
    store.append(&a, b"two").unwrap();
    let third = store.erase(&a).unwrap();
    assert_eq!(third.receipt.purge_status, PurgeStatus::Pending);
    assert_eq!(store.stats().unwrap().pending_erasures, 1);
}

/// Regression (issue 11, item 11): `record_audit` let an embedder write an
/// `Erase`/`Ok` record, which the export manifest trusts for the dates of
/// earlier erasures. Only the store records its own operations as done;
/// a caller may still record their refusal or failure.
fn callers_cannot_forge_the_stores_own_records(f: &Fixture) {
    let store = f.open();
    let a = common::user("forged");
    let h = store.handle(&a);
    for op in [
        AuditOp::Erase,
        AuditOp::Purge,
        AuditOp::Export,
        AuditOp::Redact,
    ] {
        assert!(matches!(
            store.record_audit("embedder", op, Some(h), AuditOutcome::Ok),
            Err(shredstore::Error::InvalidArgument(
                shredstore::InvalidArgument::ReservedAuditOp { .. }
            ))
        ));
    }
    store
        .record_audit("embedder", AuditOp::Erase, Some(h), AuditOutcome::Refused)
        .unwrap();
    store
        .record_audit(
            "embedder",
            AuditOp::RestrictedRead,
            Some(h),
            AuditOutcome::Ok,
        )
        .unwrap();
    store.append(&a, b"x").unwrap();
    let m = store.export_as(&a, "test", |_| Ok(())).unwrap();
    assert!(m.erasures_ms.is_empty(), "{m:?}");
}

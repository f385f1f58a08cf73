//! Data-subject rights in the library: restriction, redaction, retention
//! (with an injected clock), consent history and legal holds, each with its
//! audit records.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::engines::{Fixture, on_both_engines};
use common::{options, raw_db, raw_entries, scan, user};
use shredstore::layout::{CF_AUDIT, CF_CONSENT, CF_MESSAGES};
use shredstore::{
    Access, AuditOp, AuditOutcome, Clock, Consent, Error, InvalidArgument, LegalBasis, Restriction,
    Retention, Store, UserId,
};

const DPO: &str = "dpo";

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn at(ms: u64) -> Self {
        TestClock(Arc::new(AtomicU64::new(ms)))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

// Restriction, legal hold and retention as reads and writes see them, on
// both engines; what is left in the files, RocksDB's tests further down.
on_both_engines!(
    block_appends_refuses_until_unrestricted_and_survives_restart,
    block_reads_needs_the_override_and_survives_restart,
    legal_hold_blocks_erase_redact_and_expiry_until_lifted,
    seqs_are_not_reused_when_retention_removed_every_message,
    an_idempotent_retry_after_retention_dropped_the_original_is_a_duplicate,
);

fn open_at(dir: &std::path::Path, clock: &TestClock, retention_ms: Option<u64>) -> Store {
    Store::open(
        options(dir)
            .clock(Arc::new(clock.clone()))
            .retention(retention_ms.map(Duration::from_millis)),
    )
    .unwrap()
}

/// [`open_at`] on the fixture's engine (reopening it when called again).
fn open_on(f: &Fixture, clock: &TestClock, retention_ms: Option<u64>) -> Store {
    Store::open(
        f.options()
            .clock(Arc::new(clock.clone()))
            .retention(retention_ms.map(Duration::from_millis)),
    )
    .unwrap()
}

/// Compacts on RocksDB (where retention drops what expired); JetStream
/// refuses it, naming the engine (expired messages are hidden from reads
/// there: README's engine table), and the test goes on with what reads see.
fn compact(f: &Fixture, store: &Store) {
    if f.is_jetstream() {
        assert!(matches!(
            store.compact(),
            Err(Error::Unsupported {
                engine: "jetstream",
                ..
            })
        ));
    } else {
        store.compact().unwrap();
    }
}

fn block_appends() -> Restriction {
    Restriction {
        block_appends: true,
        block_reads: false,
    }
}

fn block_reads() -> Restriction {
    Restriction {
        block_appends: false,
        block_reads: true,
    }
}

fn payloads(store: &Store, u: &UserId) -> Vec<Vec<u8>> {
    store
        .read_with(u, 0, 1000, Access::Override)
        .unwrap()
        .into_iter()
        .map(|m| m.payload)
        .collect()
}

/// (op, outcome) of every audit record of `store`'s handle for `u`.
fn audit_of(store: &Store, u: &UserId) -> Vec<(AuditOp, AuditOutcome)> {
    let h = *store.handle(u).as_bytes();
    store
        .audit_log(0, u64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.handle == Some(h))
        .map(|r| (r.op, r.outcome))
        .collect()
}

/// The sealed bytes of each stored envelope of `u` in `cf` (store closed).
fn sealed_bytes(dir: &std::path::Path, handle: [u8; 16], cf: &str) -> Vec<(u64, Vec<u8>)> {
    let db = raw_db(dir);
    raw_entries(&db, cf, &handle)
        .into_iter()
        .map(|(k, v)| {
            let seq = u64::from_be_bytes(k[16..24].try_into().unwrap());
            (seq, v[25..v.len() - 4].to_vec())
        })
        .collect()
}

fn block_appends_refuses_until_unrestricted_and_survives_restart(f: &Fixture) {
    let clock = TestClock::at(1_000);
    let store = open_on(f, &clock, None);
    let a = user("alice");
    store.append(&a, b"one").unwrap();
    let st = store.restrict_as(&a, block_appends(), DPO).unwrap();
    assert!(st.restriction.block_appends && !st.restriction.block_reads);
    assert!(matches!(
        store.append(&a, b"two"),
        Err(Error::Restricted {
            mode: "block_appends"
        })
    ));
    assert!(matches!(
        store.append_batch(&a, &[b"x"]),
        Err(Error::Restricted { .. })
    ));
    // Reads still work; other users are not affected.
    assert_eq!(payloads(&store, &a), vec![b"one".to_vec()]);
    store.append(&user("bob"), b"bob").unwrap();

    drop(store);
    let store = open_on(f, &clock, None);
    assert!(store.rights_state(&a).unwrap().restriction.block_appends);
    assert!(matches!(
        store.append(&a, b"two"),
        Err(Error::Restricted { .. })
    ));
    let st = store
        .unrestrict_as(&a, Restriction::default(), DPO)
        .unwrap();
    assert!(!st.restriction.any());
    store.append(&a, b"two").unwrap();
    drop(store);
    let store = open_on(f, &clock, None);
    store.append(&a, b"three").unwrap();
    assert_eq!(payloads(&store, &a).len(), 3);
    let ops = audit_of(&store, &a);
    assert!(ops.contains(&(AuditOp::Restrict, AuditOutcome::Ok)));
    assert!(ops.contains(&(AuditOp::Unrestrict, AuditOutcome::Ok)));

    // No mode is a bad argument; a user without data can be restricted.
    assert!(matches!(
        store.restrict_as(&a, Restriction::default(), DPO),
        Err(Error::InvalidArgument(InvalidArgument::NoRestrictionMode))
    ));
    let c = user("carol");
    store.restrict_as(&c, block_appends(), DPO).unwrap();
    assert!(matches!(
        store.append(&c, b"x"),
        Err(Error::Restricted { .. })
    ));
}

fn block_reads_needs_the_override_and_survives_restart(f: &Fixture) {
    let clock = TestClock::at(1_000);
    let store = open_on(f, &clock, None);
    let a = user("alice");
    store.append(&a, b"secret").unwrap();
    store
        .record_consent_as(
            &a,
            &Consent {
                purpose: "support".into(),
                basis: LegalBasis::Contract,
                granted: true,
                given_at_ms: 5,
            },
            DPO,
        )
        .unwrap();
    store.restrict_as(&a, block_reads(), DPO).unwrap();
    let refused = |r: Result<_, Error>| {
        matches!(
            r,
            Err(Error::Restricted {
                mode: "block_reads"
            })
        )
    };
    assert!(refused(store.read(&a, 0, 10).map(|_| ())));
    assert!(refused(store.read_iter(&a, 0).map(|_| ())));
    assert!(refused(store.export_as(&a, DPO, |_| Ok(())).map(|_| ())));
    assert!(refused(
        store.consent_history(&a, Access::Subject).map(|_| ())
    ));
    // Appends still work (only reads are restricted).
    store.append(&a, b"more").unwrap();
    assert_eq!(payloads(&store, &a).len(), 2);
    let m = store
        .export_with(&a, DPO, Access::Override, |_| Ok(()))
        .unwrap();
    assert_eq!(m.message_count, 2);
    assert!(m.rights.restriction.block_reads);
    assert_eq!(m.consents.len(), 1);

    drop(store);
    let store = open_on(f, &clock, None);
    assert!(refused(store.read(&a, 0, 10).map(|_| ())));
    store.unrestrict_as(&a, block_reads(), DPO).unwrap();
    assert_eq!(store.read(&a, 0, 10).unwrap().len(), 2);
    let ops = audit_of(&store, &a);
    assert!(
        ops.contains(&(AuditOp::Export, AuditOutcome::Refused)),
        "{ops:?}"
    );
}

#[test]
fn redaction_keeps_seq_and_time_and_purge_removes_the_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(50_000);
    let store = open_at(dir.path(), &clock, None);
    let a = user("alice");
    let b = user("bob");
    let mut acks = Vec::new();
    for i in 0..5u8 {
        clock.set(50_000 + u64::from(i));
        let p = vec![b'a' + i; 64];
        acks.push(store.append_idempotent(&a, &[i], &p).unwrap().appended);
        store.append(&b, &[b'B'; 64]).unwrap();
    }
    store.flush().unwrap();
    let handle = *store.handle(&a).as_bytes();
    store.close().unwrap();
    let before = sealed_bytes(dir.path(), handle, CF_MESSAGES);
    let store = open_at(dir.path(), &clock, None);

    clock.set(60_000);
    let seq = acks[2].seq;
    let r = store.redact_as(&a, seq, "posted by mistake", DPO).unwrap();
    assert_eq!((r.seq, r.timestamp_ms), (seq, acks[2].timestamp_ms));
    assert_eq!(r.redacted_at_ms, 60_000);
    assert!(!r.already_redacted);
    let again = store.redact_as(&a, seq, "other", DPO).unwrap();
    assert!(again.already_redacted);
    assert_eq!(again.redacted_at_ms, 60_000);
    assert_eq!(store.stats().unwrap().pending_redactions, 1);

    let msgs = store.read(&a, 0, 10).unwrap();
    assert_eq!(msgs.len(), 5);
    let marker = &msgs[2];
    assert_eq!(
        (marker.seq, marker.timestamp_ms),
        (seq, acks[2].timestamp_ms)
    );
    assert!(marker.payload.is_empty());
    let red = marker.redaction.as_ref().unwrap();
    assert_eq!(red.reason, "posted by mistake");
    assert_eq!(red.redacted_at_ms, 60_000);
    for (i, m) in msgs.iter().enumerate().filter(|(i, _)| *i != 2) {
        assert_eq!(m.payload, vec![b'a' + i as u8; 64]);
        assert!(m.redaction.is_none());
    }
    // A retry of the redacted message's append is a duplicate, not a new message.
    let retry = store.append_idempotent(&a, &[2], &[b'c'; 64]).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.appended.seq, seq);
    let mut exported = Vec::new();
    let m = store
        .export_as(&a, DPO, |m| {
            exported.push(m);
            Ok(())
        })
        .unwrap();
    assert_eq!(m.redacted_count, 1);
    let want: Vec<shredstore::ExportItem> = msgs
        .iter()
        .cloned()
        .map(shredstore::ExportItem::Message)
        .collect();
    assert_eq!(exported, want);

    // Errors: no such seq, unknown user, over-long reason.
    assert!(matches!(
        store.redact_as(&a, 999, "x", DPO),
        Err(Error::NoSuchMessage)
    ));
    assert!(matches!(
        store.redact_as(&user("nobody"), 1, "x", DPO),
        Err(Error::NoSuchMessage)
    ));
    assert!(matches!(
        store.redact_as(&a, seq, &"r".repeat(257), DPO),
        Err(Error::InvalidArgument(InvalidArgument::TextTooLong { .. }))
    ));

    // The old ciphertext is still on disk until a purge (here across a restart).
    let old: Vec<Vec<u8>> = before
        .iter()
        .filter(|(s, _)| *s == seq)
        .map(|(_, v)| v.clone())
        .collect();
    let neighbours: Vec<Vec<u8>> = before
        .iter()
        .filter(|(s, _)| *s != seq)
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(old.len(), 1);
    assert!(!scan(dir.path(), &old).is_empty(), "before purge");
    drop(store);
    let store = open_at(dir.path(), &clock, None);
    assert_eq!(store.read(&a, 0, 10).unwrap(), msgs, "marker persists");
    assert_eq!(
        store.stats().unwrap().pending_redactions,
        1,
        "pending across restart"
    );
    let report = store.purge().unwrap();
    assert!(report.complete);
    assert_eq!(report.redactions_purged, 1);
    assert!(scan(dir.path(), &old).is_empty(), "redacted bytes remain");
    assert_eq!(store.stats().unwrap().pending_redactions, 0);
    assert_eq!(
        scan(dir.path(), &neighbours)
            .iter()
            .map(|(_, i)| *i)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4,
        "neighbours stay"
    );
    assert_eq!(store.read(&a, 0, 10).unwrap(), msgs);
    assert_eq!(store.read(&b, 0, 10).unwrap().len(), 5);
    // Nothing left to purge.
    assert_eq!(store.purge().unwrap().redactions_purged, 0);
    let ops = audit_of(&store, &a);
    let count = |want| ops.iter().filter(|o| **o == want).count();
    // The redaction and its repeat; two refusals (the missing seq, the long
    // reason; the unknown user's refusal is under its own handle).
    assert_eq!(count((AuditOp::Redact, AuditOutcome::Ok)), 2, "{ops:?}");
    assert_eq!(
        count((AuditOp::Redact, AuditOutcome::Refused)),
        2,
        "{ops:?}"
    );
}

#[test]
fn retention_hides_at_once_and_compaction_drops() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(10_000);
    let store = open_at(dir.path(), &clock, Some(1_000));
    let (a, keep, short) = (user("alice"), user("keeper"), user("shorty"));
    store
        .set_retention_as(&keep, Retention::Forever, DPO)
        .unwrap();
    store.append(&a, &[b'1'; 32]).unwrap();
    store.append(&keep, &[b'k'; 32]).unwrap();
    store.append(&short, &[b's'; 32]).unwrap();
    clock.set(10_500);
    store.append(&a, &[b'2'; 32]).unwrap();
    assert_eq!(payloads(&store, &a).len(), 2);
    store
        .set_retention_as(&short, Retention::After { ms: 100 }, DPO)
        .unwrap();
    assert!(
        payloads(&store, &short).is_empty(),
        "100 ms: expired at once"
    );

    clock.set(11_200);
    // 10_000 < 11_200 - 1_000: the first message is hidden at once.
    assert_eq!(payloads(&store, &a), vec![vec![b'2'; 32]]);
    assert_eq!(payloads(&store, &keep).len(), 1, "Forever keeps it");
    let st = store.rights_state(&a).unwrap();
    assert_eq!(st.effective_retention_ms, Some(1_000));
    assert_eq!(st.expired_before_ms, 10_200);

    // Expiry never goes back: a longer period later does not resurrect.
    store.set_retention_as(&a, Retention::Forever, DPO).unwrap();
    assert_eq!(payloads(&store, &a), vec![vec![b'2'; 32]]);

    // Compaction drops the expired envelopes physically.
    store.flush().unwrap();
    let ha = *store.handle(&a).as_bytes();
    let hk = *store.handle(&keep).as_bytes();
    store.close().unwrap();
    let a_old = sealed_bytes(dir.path(), ha, CF_MESSAGES);
    let k_old = sealed_bytes(dir.path(), hk, CF_MESSAGES);
    assert_eq!(a_old.len(), 2);
    let store = open_at(dir.path(), &clock, Some(1_000));
    let before = store.stats().unwrap().filter_drops;
    store.compact().unwrap();
    assert!(store.stats().unwrap().filter_drops >= before + 2);
    drop(store);
    let expired = vec![a_old[0].1.clone()];
    assert!(
        scan(dir.path(), &expired).is_empty(),
        "expired bytes remain"
    );
    assert!(!scan(dir.path(), &[a_old[1].1.clone()]).is_empty());
    assert!(!scan(dir.path(), &[k_old[0].1.clone()]).is_empty());
    let store = open_at(dir.path(), &clock, Some(1_000));
    assert_eq!(payloads(&store, &a), vec![vec![b'2'; 32]]);
    assert!(audit_of(&store, &a).contains(&(AuditOp::SetRetention, AuditOutcome::Ok)));
    assert!(matches!(
        store.set_retention_as(&a, Retention::After { ms: 0 }, DPO),
        Err(Error::InvalidArgument(InvalidArgument::ZeroRetention))
    ));
}

fn legal_hold_blocks_erase_redact_and_expiry_until_lifted(f: &Fixture) {
    let clock = TestClock::at(100_000);
    let store = open_on(f, &clock, Some(1_000));
    let a = user("alice");
    store.append(&a, &[b'o'; 32]).unwrap();
    clock.set(100_900);
    let kept = store.append(&a, &[b'k'; 32]).unwrap();
    clock.set(101_100);
    // The first message has expired (100_000 < 100_100); the hold keeps the rest.
    let st = store
        .set_legal_hold_as(&a, "case 2026-17", None, DPO)
        .unwrap();
    let hold = st.legal_hold.unwrap();
    assert_eq!(
        (hold.reason.as_str(), hold.since_ms),
        ("case 2026-17", 101_100)
    );
    assert_eq!(st.effective_retention_ms, None);
    assert!(matches!(store.erase(&a), Err(Error::LegalHold)));
    assert!(matches!(
        store.redact_as(&a, kept.seq, "x", DPO),
        Err(Error::LegalHold)
    ));
    clock.set(500_000);
    assert_eq!(payloads(&store, &a), vec![vec![b'k'; 32]], "expiry frozen");
    compact(f, &store);
    drop(store);
    let store = open_on(f, &clock, Some(1_000));
    assert_eq!(
        payloads(&store, &a),
        vec![vec![b'k'; 32]],
        "after compaction and restart"
    );
    assert!(matches!(store.erase(&a), Err(Error::LegalHold)));

    store.lift_legal_hold_as(&a, DPO).unwrap();
    assert!(payloads(&store, &a).is_empty(), "retention resumes");
    store.erase(&a).unwrap();
    let ops = audit_of(&store, &a);
    for want in [
        (AuditOp::SetLegalHold, AuditOutcome::Ok),
        (AuditOp::Erase, AuditOutcome::Refused),
        (AuditOp::Redact, AuditOutcome::Refused),
        (AuditOp::LiftLegalHold, AuditOutcome::Ok),
        (AuditOp::Erase, AuditOutcome::Ok),
    ] {
        assert!(ops.contains(&want), "missing {want:?} in {ops:?}");
    }

    // A hold with an end lapses by itself; an end in the past is refused.
    let b = user("bob");
    store.append(&b, b"x").unwrap();
    assert!(matches!(
        store.set_legal_hold_as(&b, "r", Some(400_000), DPO),
        Err(Error::InvalidArgument(InvalidArgument::HoldEndsInPast))
    ));
    store
        .set_legal_hold_as(&b, "r", Some(600_000), DPO)
        .unwrap();
    assert!(matches!(store.erase(&b), Err(Error::LegalHold)));
    clock.set(600_000);
    assert!(store.rights_state(&b).unwrap().legal_hold.is_none());
    store.erase(&b).unwrap();
}

#[test]
fn consent_history_is_exported_sealed_and_shredded_by_erase() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(7_000);
    let store = open_at(dir.path(), &clock, None);
    let a = user("alice");
    let purpose = "marketing-email-newsletter-weekly";
    let grant = Consent {
        purpose: purpose.into(),
        basis: LegalBasis::Consent,
        granted: true,
        given_at_ms: 6_500,
    };
    let e1 = store.record_consent_as(&a, &grant, DPO).unwrap();
    clock.set(8_000);
    let withdraw = Consent {
        granted: false,
        given_at_ms: 7_900,
        ..grant.clone()
    };
    let e2 = store.record_consent_as(&a, &withdraw, DPO).unwrap();
    assert_eq!((e1.index, e2.index), (1, 2));
    assert_eq!((e1.recorded_at_ms, e2.recorded_at_ms), (7_000, 8_000));
    store.append(&a, b"hello").unwrap();
    let history = store.consent_history(&a, Access::Subject).unwrap();
    assert_eq!(history, vec![e1.clone(), e2.clone()]);
    let m = store.export_as(&a, DPO, |_| Ok(())).unwrap();
    assert_eq!(m.consents, history);
    assert_eq!(m.message_count, 1);
    assert!(matches!(
        store.record_consent_as(
            &a,
            &Consent {
                purpose: String::new(),
                ..grant.clone()
            },
            DPO
        ),
        Err(Error::InvalidArgument(InvalidArgument::EmptyPurpose))
    ));

    // Sealed: the purpose is not on disk in plaintext.
    store.flush().unwrap();
    let handle = *store.handle(&a).as_bytes();
    assert!(scan(dir.path(), &[purpose.as_bytes().to_vec()]).is_empty());
    store.close().unwrap();
    let sealed: Vec<Vec<u8>> = sealed_bytes(dir.path(), handle, CF_CONSENT)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sealed.len(), 2);
    assert!(!scan(dir.path(), &sealed).is_empty());

    let store = open_at(dir.path(), &clock, None);
    store.erase(&a).unwrap();
    assert!(
        store
            .consent_history(&a, Access::Subject)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .export_as(&a, DPO, |_| Ok(()))
            .unwrap()
            .consents
            .is_empty()
    );
    assert!(store.purge().unwrap().complete);
    assert!(scan(dir.path(), &sealed).is_empty(), "consent bytes remain");
    let check = store.verify_erasure(&a).unwrap();
    assert_eq!(check.erased_consents, 0);
    assert!(check.is_physically_erased());
    // A returning user starts a new history.
    let e = store.record_consent_as(&a, &grant, DPO).unwrap();
    assert_eq!(e.index, 1);
    assert!(audit_of(&store, &a).contains(&(AuditOp::RecordConsent, AuditOutcome::Ok)));
}

#[test]
fn audit_records_of_every_rights_operation_hold_no_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_000);
    let store = open_at(dir.path(), &clock, None);
    let id = "audit-subject-0123456789@example.com";
    let a = user(id);
    let s = store.append(&a, b"m").unwrap().seq;
    store.restrict_as(&a, block_appends(), DPO).unwrap();
    store.unrestrict_as(&a, block_appends(), DPO).unwrap();
    store.redact_as(&a, s, "typo", DPO).unwrap();
    store
        .set_retention_as(&a, Retention::After { ms: 86_400_000 }, DPO)
        .unwrap();
    store
        .record_consent_as(
            &a,
            &Consent {
                purpose: "p".into(),
                basis: LegalBasis::LegitimateInterests,
                granted: true,
                given_at_ms: 1,
            },
            DPO,
        )
        .unwrap();
    store.set_legal_hold_as(&a, "case", None, DPO).unwrap();
    assert!(store.erase(&a).is_err());
    store.lift_legal_hold_as(&a, DPO).unwrap();
    store.export_as(&a, DPO, |_| Ok(())).unwrap();
    store.erase_as(&a, Default::default(), DPO).unwrap();
    store.purge().unwrap();
    let ops: Vec<AuditOp> = audit_of(&store, &a).into_iter().map(|(op, _)| op).collect();
    for op in [
        AuditOp::Restrict,
        AuditOp::Unrestrict,
        AuditOp::Redact,
        AuditOp::SetRetention,
        AuditOp::RecordConsent,
        AuditOp::SetLegalHold,
        AuditOp::LiftLegalHold,
        AuditOp::Export,
        AuditOp::Erase,
    ] {
        assert!(ops.contains(&op), "no {op:?} record: {ops:?}");
    }
    store.close().unwrap();
    let db = raw_db(dir.path());
    let raw = raw_entries(&db, CF_AUDIT, &[]);
    assert!(raw.len() >= 10);
    for (_, v) in &raw {
        assert!(
            !v.windows(id.len()).any(|w| w == id.as_bytes()),
            "raw user id in an audit record"
        );
        assert!(
            !v.windows(4).any(|w| w == b"typo"),
            "reason in an audit record"
        );
    }
}

fn seqs_are_not_reused_when_retention_removed_every_message(f: &Fixture) {
    let clock = TestClock::at(1_000);
    // Written without retention: no high-water marks yet.
    let store = open_on(f, &clock, None);
    let (a, b) = (user("alice"), user("bob"));
    for _ in 0..3 {
        store.append(&a, b"old").unwrap();
    }
    drop(store);
    // A store-wide period switched on later, and a per-user one.
    let store = open_on(f, &clock, Some(500));
    store
        .set_retention_as(&b, Retention::After { ms: 100 }, DPO)
        .unwrap();
    for _ in 0..5 {
        store.append(&b, b"bob").unwrap();
    }
    clock.set(10_000);
    assert!(payloads(&store, &a).is_empty());
    assert!(payloads(&store, &b).is_empty());
    compact(f, &store);
    drop(store);
    let store = open_on(f, &clock, Some(500));
    assert_eq!(store.append(&a, b"new").unwrap().seq, 4);
    assert_eq!(store.append(&b, b"new").unwrap().seq, 6);
    // Also through an erasure of a user whose messages all expired.
    clock.set(20_000);
    compact(f, &store);
    drop(store);
    let store = open_on(f, &clock, Some(500));
    store.erase(&a).unwrap();
    assert_eq!(store.append(&a, b"again").unwrap().seq, 5);
}

fn an_idempotent_retry_after_retention_dropped_the_original_is_a_duplicate(f: &Fixture) {
    let clock = TestClock::at(1_000);
    let store = open_on(f, &clock, Some(700));
    let b = user("bob");
    let first = store.append_idempotent(&b, b"id-1", b"p").unwrap();
    assert!(!first.duplicate);
    clock.set(2_000);
    // Hidden, not yet dropped: a duplicate.
    let again = store.append_idempotent(&b, b"id-1", b"p").unwrap();
    assert!(again.duplicate);
    compact(f, &store);
    drop(store);
    let store = open_on(f, &clock, Some(700));
    let retry = store.append_idempotent(&b, b"id-1", b"p").unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.appended, first.appended);
    assert!(store.read(&b, 0, 10).unwrap().is_empty());
    // A new message still gets a fresh seq.
    assert_eq!(store.append(&b, b"q").unwrap().seq, 2);
}

#[test]
fn damaged_records_fail_closed_under_retention() {
    let dir = tempfile::tempdir().unwrap();
    // Early enough that nothing has expired when Bob's setting is made.
    let clock = TestClock::at(500);
    let store = open_at(dir.path(), &clock, Some(1_000));
    let (a, b, c) = (user("alice"), user("bob"), user("carol"));
    store.append(&a, b"kept").unwrap();
    store.append_idempotent(&b, b"id", b"p").unwrap();
    store.set_retention_as(&b, Retention::Forever, DPO).unwrap();
    store
        .record_consent_as(
            &c,
            &Consent {
                purpose: "p".into(),
                basis: LegalBasis::Consent,
                granted: true,
                given_at_ms: 1,
            },
            DPO,
        )
        .unwrap();
    let (ha, hb, hc) = (
        *store.handle(&a).as_bytes(),
        *store.handle(&b).as_bytes(),
        *store.handle(&c).as_bytes(),
    );
    store.close().unwrap();
    {
        let db = raw_db(dir.path());
        // Alice's timestamp rewritten to an expired one, CRC left stale.
        let msgs = db.cf_handle(CF_MESSAGES).unwrap();
        let (k, mut v) = raw_entries(&db, CF_MESSAGES, &ha).remove(0);
        v[5..13].copy_from_slice(&1u64.to_be_bytes());
        db.put_cf(msgs, &k, &v).unwrap();
        // Bob's message lost behind its idempotency entry (and its
        // high-water mark, as if retention had never applied).
        let (k, _) = raw_entries(&db, CF_MESSAGES, &hb).remove(0);
        db.delete_cf(msgs, &k).unwrap();
        let floors = db.cf_handle(shredstore::layout::CF_SEQ_FLOORS).unwrap();
        db.delete_cf(floors, hb).unwrap();
        // Carol's key record lost: she has only consent records.
        let keys = db.cf_handle(shredstore::layout::CF_KEYS).unwrap();
        db.delete_cf(keys, hc).unwrap();
    }
    clock.set(10_000);
    let store = open_at(dir.path(), &clock, Some(1_000));
    assert!(matches!(
        store.read(&a, 0, 10),
        Err(Error::Corrupt(shredstore::Corruption::Checksum))
    ));
    assert!(matches!(
        store.append_idempotent(&b, b"id", b"other"),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        store.consent_history(&c, Access::Override),
        Err(Error::Corrupt(shredstore::Corruption::MissingKeyRecord))
    ));
    // Compaction does not expire the damaged record either.
    store.compact().unwrap();
    drop(store);
    let db = raw_db(dir.path());
    assert_eq!(raw_entries(&db, CF_MESSAGES, &ha).len(), 1);
}

//! Export (GDPR Art. 15 and 20): everything readable, in order, with a
//! manifest; erased data stays gone (only the dates remain); audited.

mod common;

use common::{open, user};
use shredstore::{AuditOp, AuditOutcome, EraseOptions, Error, Message};

#[test]
fn export_round_trips_what_was_appended_after_the_last_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let alice = user("alice@example.com");
    store.append(&alice, b"before the erasure").unwrap();
    let first = store.erase(&alice).unwrap();
    let mut appended = Vec::new();
    for p in [&b"hello"[..], &[0xff, 0x00, 0xfe][..], b""] {
        let a = store.append(&alice, p).unwrap();
        appended.push(Message {
            seq: a.seq,
            timestamp_ms: a.timestamp_ms,
            payload: p.to_vec(),
            redaction: None,
        });
    }

    let mut got = Vec::new();
    let manifest = store
        .export_as(&alice, "dpo", |m| {
            got.push(m);
            Ok(())
        })
        .unwrap();
    assert_eq!(got, appended);
    assert_eq!(manifest.handle, store.handle(&alice));
    assert_eq!(manifest.message_count, 3);
    assert_eq!(manifest.first_seq, Some(appended[0].seq));
    assert_eq!(manifest.last_seq, Some(appended[2].seq));
    assert_eq!(manifest.key_epoch, Some(2));
    assert!(manifest.key_created_ms.is_some());
    assert_eq!(manifest.erasures_ms, vec![first.erased_at_ms]);
    assert!(!manifest.appends_blocked);

    let log = store.audit_log(0, u64::MAX, 100).unwrap();
    let export = log.iter().find(|r| r.op == AuditOp::Export).unwrap();
    assert_eq!(export.actor, "dpo");
    assert_eq!(export.handle, Some(*manifest.handle.as_bytes()));
    assert_eq!(export.outcome, AuditOutcome::Ok);
}

#[test]
fn erased_and_unknown_users_export_no_data_but_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bob = user("bob");
    store.append(&bob, b"gone").unwrap();
    store.erase_with(&bob, EraseOptions::block_new()).unwrap();
    store.erase(&bob).unwrap();
    let mut n = 0;
    let m = store
        .export_as(&bob, "dpo", |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!((n, m.message_count, m.key_epoch), (0, 0, None));
    assert_eq!(m.erasures_ms.len(), 2);
    assert!(m.appends_blocked);

    let m = store.export_as(&user("nobody"), "dpo", |_| Ok(())).unwrap();
    assert_eq!((m.message_count, m.first_seq, m.key_epoch), (0, None, None));
    assert!(m.erasures_ms.is_empty());
}

#[test]
fn a_failing_sink_stops_the_export_and_is_audited_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let carol = user("carol");
    for i in 0..5 {
        store.append(&carol, format!("m{i}").as_bytes()).unwrap();
    }
    let mut seen = 0;
    let r = store.export_as(&carol, "dpo", |_| {
        seen += 1;
        if seen == 2 {
            Err(Error::Io(std::io::ErrorKind::BrokenPipe.into()))
        } else {
            Ok(())
        }
    });
    assert!(matches!(r, Err(Error::Io(_))));
    assert_eq!(seen, 2);
    let log = store.audit_log(0, u64::MAX, 100).unwrap();
    assert_eq!(log.last().unwrap().op, AuditOp::Export);
    assert_eq!(log.last().unwrap().outcome, AuditOutcome::Failed);
}

//! Export (GDPR Art. 15 and 20): everything readable, in order, with a
//! manifest; erased data stays gone (only the dates remain); audited.

mod common;

use common::engines::{Fixture, on_both_engines};
use common::user;
use shredstore::{AuditOp, AuditOutcome, ConversationId, EraseOptions, Error, ExportItem, Message};

// Export, on both engines.
on_both_engines!(
    export_round_trips_what_was_appended_after_the_last_erasure,
    erased_and_unknown_users_export_no_data_but_their_state,
    a_failing_sink_stops_the_export_and_is_audited_as_failed,
    export_includes_what_the_user_wrote_in_conversations,
);

fn export_round_trips_what_was_appended_after_the_last_erasure(f: &Fixture) {
    let store = f.open();
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
    let want: Vec<ExportItem> = appended.iter().cloned().map(ExportItem::Message).collect();
    assert_eq!(got, want);
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

fn erased_and_unknown_users_export_no_data_but_their_state(f: &Fixture) {
    let store = f.open();
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

fn a_failing_sink_stops_the_export_and_is_audited_as_failed(f: &Fixture) {
    let store = f.open();
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

/// Issue 12: an export includes what the user wrote in conversations (under
/// their current key), each with the conversation's id; not the others'
/// messages, not what an erasure shredded, not redacted or deleted ones.
fn export_includes_what_the_user_wrote_in_conversations(f: &Fixture) {
    let store = f.open();
    let (alice, bob) = (user("alice"), user("bob"));
    let room = ConversationId::new("room:1").unwrap();
    let dm = ConversationId::new("dm:alice:bob").unwrap();
    let gone = ConversationId::new("room:deleted").unwrap();
    store
        .conversation(&room)
        .append(&alice, b"shredded by the erasure")
        .unwrap();
    store.erase(&alice).unwrap();
    store.append(&alice, b"own log").unwrap();
    let r1 = store
        .conversation(&room)
        .append(&alice, b"in room 1")
        .unwrap();
    store
        .conversation(&room)
        .append(&bob, b"bob's, not alice's")
        .unwrap();
    let d1 = store
        .conversation(&dm)
        .append(&alice, b"in the dm")
        .unwrap();
    let red = store
        .conversation(&dm)
        .append(&alice, b"redacted later")
        .unwrap();
    store.conversation(&dm).redact(red.seq, "oops").unwrap();
    store
        .conversation(&gone)
        .append(&alice, b"in a deleted room")
        .unwrap();
    store.conversation(&gone).delete().unwrap();
    let mut items = Vec::new();
    let manifest = store
        .export_as(&alice, "dpo", |i| {
            items.push(i);
            Ok(())
        })
        .unwrap();
    assert_eq!(manifest.message_count, 1);
    assert_eq!(manifest.conversation_message_count, 2);
    assert!(matches!(&items[0], ExportItem::Message(m) if m.payload == b"own log"));
    let authored: Vec<(Vec<u8>, u64, Vec<u8>)> = items[1..]
        .iter()
        .map(|i| match i {
            ExportItem::Authored(a) => {
                (a.conversation.as_bytes().to_vec(), a.seq, a.payload.clone())
            }
            other => panic!("not authored: {other:?}"),
        })
        .collect();
    let mut want = vec![
        (room.as_bytes().to_vec(), r1.seq, b"in room 1".to_vec()),
        (dm.as_bytes().to_vec(), d1.seq, b"in the dm".to_vec()),
    ];
    let mut got = authored.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Page by page, as the server streams it, with a page of one.
    let mut cursor = store.export_begin(&alice, shredstore::Access::Subject);
    while !cursor.is_done() {
        store.export_page(&mut cursor, 1).unwrap();
    }
    let mut n = 0;
    while !cursor.is_authored_done() {
        n += store.export_authored_page(&mut cursor, 1).unwrap().len();
    }
    assert_eq!(n, 2);
    let m = store.export_end(cursor, "dpo", Ok(())).unwrap();
    assert_eq!(m.conversation_message_count, 2);
}

//! The change feed: erasures, conversation deletions, redactions and
//! expiries, by handle and seq, in commit order, each once per cursor,
//! resumable across reopen and live-tailing.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{open, options, raw_db, raw_entries, user};
use shredstore::layout::CF_CHANGES;
use shredstore::{
    Change, ChangeCursor, ChangeEntry, ConversationId, EraseOptions, Error, InvalidArgument,
    Retention, Store,
};

fn conv(name: &str) -> ConversationId {
    ConversationId::new(name).unwrap()
}

fn all(store: &Store, after: ChangeCursor) -> Vec<ChangeEntry> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = store.changes(cursor, 2).unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        cursor = last.cursor;
        out.extend(page);
    }
}

#[test]
fn feed_names_each_erasure_deletion_and_redaction_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(
        store
            .changes(ChangeCursor::default(), 10)
            .unwrap()
            .is_empty()
    );
    let (alice, bob) = (user("alice@example.com"), user("bob@example.com"));
    for i in 0..3 {
        store.append(&alice, format!("a{i}").as_bytes()).unwrap();
        store.append(&bob, format!("b{i}").as_bytes()).unwrap();
    }
    let room = store.conversation(&conv("room:1"));
    let support = store.conversation(&conv("support:alice"));
    let gone = store.conversation(&conv("room:gone"));
    for c in [&room, &support, &gone] {
        c.append(&alice, b"hi from alice").unwrap();
        c.append(&bob, b"hi from bob").unwrap();
    }
    support
        .set_subjects_as(std::slice::from_ref(&alice), "admin")
        .unwrap();

    store.redact_as(&bob, 2, "typo", "admin").unwrap();
    room.redact(2, "spam").unwrap();
    // Redacting again changes nothing, and the feed says nothing new.
    room.redact(2, "spam").unwrap();
    gone.delete().unwrap();
    let erased = store
        .erase_with(&alice, EraseOptions::default().with_subject_conversations())
        .unwrap();

    let (ha, hb) = (
        *store.handle(&alice).as_bytes(),
        *store.handle(&bob).as_bytes(),
    );
    let expected = vec![
        Change::MessageRedacted { user: hb, seq: 2 },
        Change::ConversationMessageRedacted {
            conversation: *room.handle().as_bytes(),
            seq: 2,
        },
        Change::ConversationDeleted {
            conversation: *gone.handle().as_bytes(),
            epoch: 1,
            next_seq: 3,
        },
        Change::UserErased {
            user: ha,
            epoch: erased.epoch,
            next_seq: 4,
        },
        Change::ConversationDeleted {
            conversation: *support.handle().as_bytes(),
            epoch: 1,
            next_seq: 3,
        },
    ];
    let feed = all(&store, ChangeCursor::default());
    assert_eq!(feed.iter().map(|e| e.change).collect::<Vec<_>>(), expected);
    assert_eq!(
        feed.iter().map(|e| e.number).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // The erasure and its deletion share the erasure's time.
    assert_eq!(feed[3].time_ms, erased.erased_at_ms);
    assert_eq!(feed[4].time_ms, erased.erased_at_ms);
    // Resuming from any cursor gives exactly the rest, through the bytes a
    // gRPC client holds.
    for (i, e) in feed.iter().enumerate() {
        let c = ChangeCursor::from_bytes(&e.cursor.to_bytes()).unwrap();
        assert_eq!(all(&store, c), feed[i + 1..].to_vec());
    }
    assert_eq!(store.changes_end().unwrap(), feed[4].cursor);
    assert!(ChangeCursor::default().to_bytes().is_empty());

    // Bad cursors are refused, not taken as the start.
    assert!(matches!(
        ChangeCursor::from_bytes(&[1, 2, 3]),
        Err(Error::InvalidArgument(InvalidArgument::ChangeCursor(_)))
    ));
    assert!(matches!(
        ChangeCursor::from_bytes(&feed[0].cursor.to_bytes()[..8]),
        Err(Error::InvalidArgument(InvalidArgument::ChangeCursor(_)))
    ));
    let mut ahead = feed[4].cursor.to_bytes();
    ahead[..8].copy_from_slice(&99u64.to_be_bytes());
    assert!(matches!(
        store.changes(ChangeCursor::from_bytes(&ahead).unwrap(), 10),
        Err(Error::InvalidArgument(InvalidArgument::ChangeCursor(_)))
    ));
    // A cursor naming change 2 of another feed (another store, a restored
    // copy) does not match this one's change 2: refused, not resumed.
    let mut foreign = feed[1].cursor.to_bytes();
    foreign[11] ^= 1;
    assert!(matches!(
        store.changes(ChangeCursor::from_bytes(&foreign).unwrap(), 10),
        Err(Error::InvalidArgument(InvalidArgument::ChangeCursor(_)))
    ));
    assert!(matches!(
        store.changes(ChangeCursor::default(), 0),
        Err(Error::InvalidArgument(InvalidArgument::ZeroLimit))
    ));

    // Refused operations write nothing to the feed.
    room.set_legal_hold_as("case", None, "admin").unwrap();
    assert!(matches!(room.delete(), Err(Error::LegalHold)));
    assert!(matches!(room.redact(1, "x"), Err(Error::LegalHold)));
    assert_eq!(store.changes_end().unwrap(), feed[4].cursor);

    // After reopen: the same feed, and numbering goes on (never reused).
    drop(room);
    drop(support);
    drop(gone);
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(all(&store, ChangeCursor::default()), feed);
    store.erase(&bob).unwrap();
    let after = all(&store, feed[4].cursor);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].number, 6);
    assert!(matches!(after[0].change, Change::UserErased { user, .. } if user == hb));
    let stats = store.stats().unwrap();
    assert_eq!(stats.last_change, 6);
    // room:1 is left; support:alice went with alice, room:gone was deleted.
    assert_eq!(stats.conversations, 1);
    assert_eq!(stats.pending_conversation_deletions, 2);
    store.close().unwrap();

    // The feed's records hold handles and seqs, never an id.
    let db = raw_db(dir.path());
    let rows = raw_entries(&db, CF_CHANGES, b"");
    assert_eq!(rows.len(), 6);
    for (_, v) in &rows {
        for id in [
            &b"alice@example.com"[..],
            b"bob@example.com",
            b"room:1",
            b"support:alice",
            b"room:gone",
        ] {
            assert!(!v.windows(id.len()).any(|w| w == id));
        }
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);

impl shredstore::Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn expiry_is_reported_once_as_it_moves_for_users_and_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(AtomicU64::new(1_000)));
    let store = Store::open(options(dir.path()).clock(Arc::new(clock.clone()))).unwrap();
    let (carol, dave) = (user("carol"), user("dave"));
    store
        .set_retention_as(&carol, Retention::After { ms: 1_000 }, "admin")
        .unwrap();
    let room = store.conversation(&conv("short room"));
    room.set_retention_as(Retention::After { ms: 1_000 }, "admin")
        .unwrap();
    for i in 0..3 {
        store.append(&carol, format!("old {i}").as_bytes()).unwrap();
        store.append(&dave, format!("kept {i}").as_bytes()).unwrap();
        room.append(&dave, format!("old {i}").as_bytes()).unwrap();
    }
    clock.0.store(1_800, Ordering::SeqCst);
    store.append(&carol, b"newer").unwrap();
    room.append(&carol, b"newer").unwrap();
    // Nothing has expired yet.
    assert_eq!(store.report_expiries().unwrap(), 0);

    // At 2.5 s the three first messages of each are past 1 s.
    clock.0.store(2_500, Ordering::SeqCst);
    assert_eq!(store.report_expiries().unwrap(), 2);
    let changes: HashSet<Change> = all(&store, ChangeCursor::default())
        .into_iter()
        .map(|e| e.change)
        .collect();
    let expected: HashSet<Change> = [
        Change::MessagesExpired {
            user: *store.handle(&carol).as_bytes(),
            before_seq: 4,
        },
        Change::ConversationMessagesExpired {
            conversation: *room.handle().as_bytes(),
            before_seq: 4,
        },
    ]
    .into();
    assert_eq!(changes, expected);
    // Reported once: a second sweep finds nothing new.
    assert_eq!(store.report_expiries().unwrap(), 0);

    // Compaction removes the expired messages; what the sweep says next
    // still counts from where it stopped (and survives reopen).
    store.compact().unwrap();
    let end = store.changes_end().unwrap();
    drop(room);
    store.close().unwrap();
    let store = Store::open(options(dir.path()).clock(Arc::new(clock.clone()))).unwrap();
    let room = store.conversation(&conv("short room"));
    assert_eq!(store.report_expiries().unwrap(), 0);
    clock.0.store(5_000, Ordering::SeqCst);
    assert_eq!(store.report_expiries().unwrap(), 2);
    let later: HashSet<Change> = all(&store, end).into_iter().map(|e| e.change).collect();
    let expected: HashSet<Change> = [
        Change::MessagesExpired {
            user: *store.handle(&carol).as_bytes(),
            before_seq: 5,
        },
        Change::ConversationMessagesExpired {
            conversation: *room.handle().as_bytes(),
            before_seq: 5,
        },
    ]
    .into();
    assert_eq!(later, expected);
    // Dave keeps everything (no retention): never reported.
    assert_eq!(store.read(&dave, 0, 10).unwrap().len(), 3);

    // A hold freezes expiry, and the sweep with it.
    let end = store.changes_end().unwrap();
    store.append(&carol, b"held").unwrap();
    store
        .set_legal_hold_as(&carol, "case", None, "admin")
        .unwrap();
    clock.0.store(9_000, Ordering::SeqCst);
    room.append(&dave, b"room goes on").unwrap();
    clock.0.store(20_000, Ordering::SeqCst);
    assert_eq!(store.report_expiries().unwrap(), 1);
    let held: Vec<Change> = all(&store, end).into_iter().map(|e| e.change).collect();
    assert_eq!(
        held,
        vec![Change::ConversationMessagesExpired {
            conversation: *room.handle().as_bytes(),
            before_seq: 6,
        }]
    );
    // Erasing carol drops what the sweep remembered of her (her handle is
    // kept only by the marker and the feed).
    store.lift_legal_hold_as(&carol, "admin").unwrap();
    store.erase(&carol).unwrap();
    assert_eq!(store.report_expiries().unwrap(), 0);
    let (carol_h, room_h) = (store.handle(&carol), room.handle());
    drop(room);
    store.close().unwrap();
    let db = raw_db(dir.path());
    let marks = |h: &shredstore::Handle| {
        raw_entries(&db, shredstore::layout::CF_EXPIRY_MARKS, h.as_bytes()).len()
    };
    assert_eq!(marks(&carol_h), 0);
    assert_eq!(marks(&room_h), 1);
}

#[test]
fn store_wide_retention_reports_every_user() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(AtomicU64::new(1_000)));
    let store = Store::open(
        options(dir.path())
            .clock(Arc::new(clock.clone()))
            .retention(Some(Duration::from_secs(10))),
    )
    .unwrap();
    let users: Vec<_> = (0..20).map(|i| user(&format!("u{i}"))).collect();
    for u in &users {
        store.append(u, b"one").unwrap();
        store.append(u, b"two").unwrap();
    }
    let c = store.conversation(&conv("everyone"));
    c.append(&users[0], b"x").unwrap();
    clock.0.store(30_000, Ordering::SeqCst);
    // Compaction drops every expired record first: the sweep still reports
    // them (from the seq high-water marks).
    store.compact().unwrap();
    assert!(store.read(&users[0], 0, 10).unwrap().is_empty());
    assert_eq!(store.report_expiries().unwrap(), 21);
    let feed = all(&store, ChangeCursor::default());
    assert!(feed.iter().any(|e| e.change
        == Change::ConversationMessagesExpired {
            conversation: *c.handle().as_bytes(),
            before_seq: 2,
        }));
    for u in &users {
        assert!(feed.iter().any(|e| e.change
            == Change::MessagesExpired {
                user: *store.handle(u).as_bytes(),
                before_seq: 3,
            }));
    }
}

#[test]
fn tailing_sees_every_change_once_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    // Nothing yet: a wait times out.
    assert!(!store.wait_for_changes(ChangeCursor::default(), Duration::from_millis(50)));
    let tail = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let mut cursor = ChangeCursor::default();
            let mut seen = Vec::new();
            while seen.len() < WRITERS * EACH * 2 {
                if !store.wait_for_changes(cursor, Duration::from_secs(30)) {
                    panic!("no change within 30 s after {} changes", seen.len());
                }
                for e in store.changes(cursor, 7).unwrap() {
                    cursor = e.cursor;
                    seen.push(e);
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let u = user(&format!("w{w}-u{i}"));
                    store.append(&u, b"m1").unwrap();
                    store.append(&u, b"m2").unwrap();
                    store.redact_as(&u, 1, "r", "admin").unwrap();
                    store.erase(&u).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let seen = tail.join().unwrap();
    assert_eq!(
        seen.iter().map(|e| e.number).collect::<Vec<_>>(),
        (1..=(WRITERS * EACH * 2) as u64).collect::<Vec<_>>(),
        "numbers contiguous, each once"
    );
    // Per user: its redaction before its erasure.
    for w in 0..WRITERS {
        for i in 0..EACH {
            let h = *store.handle(&user(&format!("w{w}-u{i}"))).as_bytes();
            let pos = |want: fn(&Change, [u8; 16]) -> bool| {
                seen.iter().position(|e| want(&e.change, h)).unwrap()
            };
            let redacted =
                pos(|c, h| matches!(c, Change::MessageRedacted { user, seq: 1 } if *user == h));
            let erased = pos(|c, h| matches!(c, Change::UserErased { user, .. } if *user == h));
            assert!(redacted < erased);
        }
    }
    assert_eq!(seen, all(&store, ChangeCursor::default()));
}

#[test]
fn the_background_purger_reports_expiries_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(AtomicU64::new(1_000)));
    let store = Store::open(
        options(dir.path())
            .clock(Arc::new(clock.clone()))
            .purge_interval(Some(Duration::from_millis(50))),
    )
    .unwrap();
    let u = user("erin");
    store
        .set_retention_as(&u, Retention::After { ms: 100 }, "admin")
        .unwrap();
    store.append(&u, b"short-lived").unwrap();
    clock.0.store(10_000, Ordering::SeqCst);
    assert!(store.wait_for_changes(ChangeCursor::default(), Duration::from_secs(10)));
    let feed = store.changes(ChangeCursor::default(), 10).unwrap();
    assert_eq!(
        feed.iter().map(|e| e.change).collect::<Vec<_>>(),
        vec![Change::MessagesExpired {
            user: *store.handle(&u).as_bytes(),
            before_seq: 2,
        }]
    );
    assert_eq!(feed[0].time_ms, 10_000);
}

#[test]
fn a_format_3_store_from_before_the_feed_gains_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(&user("frank"), b"before the feed").unwrap();
    store.close().unwrap();
    {
        let mut db = raw_db(dir.path());
        db.drop_cf(CF_CHANGES).unwrap();
        db.drop_cf(shredstore::layout::CF_EXPIRY_MARKS).unwrap();
    }
    // A wrong root key is refused before anything is added.
    let wrong = Store::open(
        shredstore::Options::new(dir.path(), shredstore::RootKey::from_bytes([7; 32]))
            .purge_interval(None),
    );
    assert!(matches!(wrong, Err(Error::WrongRootKey)), "{wrong:?}");
    let store = open(dir.path());
    assert_eq!(store.read(&user("frank"), 0, 10).unwrap().len(), 1);
    store.erase(&user("frank")).unwrap();
    assert_eq!(store.changes(ChangeCursor::default(), 10).unwrap().len(), 1);
}

#[test]
fn a_damaged_record_stops_only_its_own_handles_expiry_report() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock(Arc::new(AtomicU64::new(1_000)));
    let open_at = || {
        Store::open(
            options(dir.path())
                .clock(Arc::new(clock.clone()))
                .retention(Some(Duration::from_secs(1))),
        )
        .unwrap()
    };
    let store = open_at();
    let users: Vec<_> = (0..6).map(|i| user(&format!("d{i}"))).collect();
    for u in &users {
        store.append(u, b"old").unwrap();
    }
    let handles: Vec<_> = users.iter().map(|u| store.handle(u)).collect();
    store.close().unwrap();
    // Damage the key record of the user that sorts first (the sweep's
    // first handle), and one message of the one that sorts second.
    let mut sorted = handles.clone();
    sorted.sort_by_key(|h| *h.as_bytes());
    {
        let db = raw_db(dir.path());
        let keys = db.cf_handle(shredstore::layout::CF_KEYS).unwrap();
        db.put_cf(keys, sorted[0].as_bytes(), b"\x01garbage")
            .unwrap();
        let msgs = db.cf_handle(shredstore::layout::CF_MESSAGES).unwrap();
        let mut key = sorted[1].as_bytes().to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        db.put_cf(msgs, &key, b"\x01not an envelope").unwrap();
    }
    let store = open_at();
    clock.0.store(10_000, Ordering::SeqCst);
    let before = store.stats().unwrap().integrity_failures;
    assert_eq!(store.report_expiries().unwrap(), 4);
    assert!(store.stats().unwrap().integrity_failures >= before + 2);
    let reported: HashSet<[u8; 16]> = all(&store, ChangeCursor::default())
        .into_iter()
        .map(|e| match e.change {
            Change::MessagesExpired { user, before_seq } => {
                assert_eq!(before_seq, 2);
                user
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected: HashSet<[u8; 16]> = sorted[2..].iter().map(|h| *h.as_bytes()).collect();
    assert_eq!(reported, expected);
}

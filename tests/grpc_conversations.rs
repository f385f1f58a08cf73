//! `shredstore.v1.Conversations` end to end: append (unary, stream,
//! idempotent), forward and backward reads with tombstones, redaction,
//! deletion with a receipt Admin.VerifyReceipt checks, roles and bad input.
#![cfg(feature = "server")]

mod grpc_support;

use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::{
    ConversationAppendRequest, ConversationItem, ConversationReadRequest,
    ConversationRedactRequest, ConversationRequest, EraseRequest, PurgeRequest, PurgeStatus,
    ReceiptSubject, TombstoneCause, VerifyReceiptRequest, conversation_item::Body,
};
use tokio_stream::StreamExt;
use tonic::Code;

fn append(conv: &str, author: &str, payload: &str) -> ConversationAppendRequest {
    ConversationAppendRequest {
        conversation_id: conv.as_bytes().to_vec(),
        author_id: author.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
        client_message_id: String::new(),
    }
}

fn read(conv: &str, from_seq: u64, limit: u32, backward: bool) -> ConversationReadRequest {
    ConversationReadRequest {
        conversation_id: conv.as_bytes().to_vec(),
        from_seq,
        limit,
        backward,
    }
}

async fn collect(
    client: &mut grpc_support::ConversationsClientT,
    req: ConversationReadRequest,
) -> Vec<ConversationItem> {
    let mut s = client.read(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.push(item.unwrap());
    }
    out
}

fn seqs(items: &[ConversationItem]) -> Vec<u64> {
    items.iter().map(|i| i.seq).collect()
}

fn message(item: &ConversationItem) -> Option<(&[u8], &[u8])> {
    match &item.body {
        Some(Body::Message(m)) => Some((&m.author_id, &m.payload)),
        _ => None,
    }
}

fn tombstone_cause(item: &ConversationItem) -> Option<i32> {
    match &item.body {
        Some(Body::Tombstone(t)) => Some(t.cause),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_redact_delete_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), true);
    // Small pages, so reads page through the store.
    a.max_read_limit = Some(1000);
    let server = TestServer::start(a).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut reader = server.conversations(Some(READER)).await;
    let mut eraser = server.conversations(Some(ERASER)).await;
    let mut store_eraser = server.store(Some(ERASER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;

    // 150 messages by three authors (more than one read page of 64).
    for i in 0..150 {
        let author = ["alice", "bob", "carol"][i % 3];
        let r = appender
            .append(append("room-1", author, &format!("message {i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.seq, i as u64 + 1);
        assert!(!r.duplicate);
    }
    let all = collect(&mut reader, read("room-1", 0, 1000, false)).await;
    assert_eq!(seqs(&all), (1..=150).collect::<Vec<_>>());
    assert_eq!(message(&all[1]), Some((&b"bob"[..], &b"message 1"[..])));
    let some = collect(&mut reader, read("room-1", 100, 5, false)).await;
    assert_eq!(seqs(&some), vec![100, 101, 102, 103, 104]);
    // Backward: from the newest (0), or from a seq, inclusive.
    let latest = collect(&mut reader, read("room-1", 0, 3, true)).await;
    assert_eq!(seqs(&latest), vec![150, 149, 148]);
    let back = collect(&mut reader, read("room-1", 70, 100, true)).await;
    assert_eq!(seqs(&back), (1..=70).rev().collect::<Vec<_>>());

    // Idempotent retries.
    let mut idem = append("room-1", "alice", "once only");
    idem.client_message_id = "c-1".into();
    let first = appender.append(idem.clone()).await.unwrap().into_inner();
    let again = appender.append(idem.clone()).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    let mut other = idem.clone();
    other.payload = b"something else".to_vec();
    let e = appender.append(other).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Redact ("delete for everyone").
    let red = eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"room-1".to_vec(),
            seq: 2,
            reason: "wrong room".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((red.seq, red.already_redacted), (2, false));
    let e = eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"room-1".to_vec(),
            seq: 9999,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Erase alice: her slots become tombstones at once.
    store_eraser
        .erase(EraseRequest {
            user_id: b"alice".to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap();
    let items = collect(&mut reader, read("room-1", 1, 4, false)).await;
    assert_eq!(
        tombstone_cause(&items[0]),
        Some(TombstoneCause::AuthorErased as i32)
    );
    match &items[1].body {
        Some(Body::Tombstone(t)) => {
            assert_eq!(t.cause, TombstoneCause::Redacted as i32);
            assert_eq!(t.reason, "wrong room");
            assert_eq!(t.redacted_at_ms, red.redacted_at_ms);
        }
        other => panic!("not a redaction tombstone: {other:?}"),
    }
    assert_eq!(message(&items[2]), Some((&b"carol"[..], &b"message 2"[..])));
    assert_eq!(
        tombstone_cause(&items[3]),
        Some(TombstoneCause::AuthorErased as i32)
    );

    // Delete the conversation: empty at once, a receipt that verifies.
    let deleted = eraser
        .delete(ConversationRequest {
            conversation_id: b"room-1".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.messages_deleted, 151);
    let receipt = deleted.receipt.unwrap();
    assert_eq!(receipt.subject, ReceiptSubject::Conversation as i32);
    assert_eq!(hex::encode(&receipt.handle), deleted.handle);
    assert!(
        collect(&mut reader, read("room-1", 0, 100, false))
            .await
            .is_empty()
    );
    let v = admin
        .verify_receipt(VerifyReceiptRequest {
            receipt: Some(receipt.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert_eq!(v.current_purge_status, PurgeStatus::Pending as i32);
    // The same receipt claimed for a user does not verify.
    let mut as_user = receipt.clone();
    as_user.subject = ReceiptSubject::User as i32;
    let v = admin
        .verify_receipt(VerifyReceiptRequest {
            receipt: Some(as_user),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    let purge = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
    assert!(purge.complete, "{purge:?}");
    let v = admin
        .verify_receipt(VerifyReceiptRequest {
            receipt: Some(receipt),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.current_purge_status, PurgeStatus::Purged as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_stream_answers_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut reader = server.conversations(Some(READER)).await;
    // Interleaved conversations and authors, one idempotent retry.
    let mut reqs = Vec::new();
    for i in 0..300 {
        let conv = format!("room-{}", i % 4);
        let author = ["alice", "bob"][(i / 4) % 2];
        let mut r = append(&conv, author, &format!("m{i}"));
        if i == 10 || i == 14 {
            r.client_message_id = "retry-me".into();
            r.payload = b"idempotent".to_vec();
            r.conversation_id = b"room-2".to_vec();
            r.author_id = b"alice".to_vec();
        }
        reqs.push(r);
    }
    let responses: Vec<_> = appender
        .append_stream(tokio_stream::iter(reqs.clone()))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(responses.len(), 300);
    assert!(responses[14].duplicate);
    assert_eq!(responses[14].seq, responses[10].seq);
    // Per conversation, seqs follow the request order.
    for c in 0..4 {
        let conv = format!("room-{c}");
        let mine: Vec<u64> = reqs
            .iter()
            .zip(&responses)
            .filter(|(r, resp)| r.conversation_id == conv.as_bytes() && !resp.duplicate)
            .map(|(_, resp)| resp.seq)
            .collect();
        assert_eq!(mine, (1..=mine.len() as u64).collect::<Vec<_>>(), "{conv}");
        let items = collect(&mut reader, read(&conv, 0, 1000, false)).await;
        assert_eq!(items.len(), mine.len());
    }
    // A bad request ends the stream with its status, after the good ones.
    let bad = vec![
        append("room-9", "alice", "fine"),
        append("room-9", "", "no author"),
        append("room-9", "alice", "never"),
    ];
    let mut s = appender
        .append_stream(tokio_stream::iter(bad))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.next().await.unwrap().unwrap().seq, 1);
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("author_id"), "{}", e.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut reader = server.conversations(Some(READER)).await;
    let mut none = server.conversations(None).await;
    appender
        .append(append("room", "alice", "hi"))
        .await
        .unwrap();
    // Roles: append needs append, read needs read, redact/delete need erase.
    assert_eq!(
        reader
            .append(append("room", "alice", "x"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        appender
            .read(read("room", 0, 10, false))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let del = ConversationRequest {
        conversation_id: b"room".to_vec(),
    };
    assert_eq!(
        reader.delete(del.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        appender
            .redact(ConversationRedactRequest {
                conversation_id: b"room".to_vec(),
                seq: 1,
                reason: String::new(),
            })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        none.read(read("room", 0, 10, false))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Bad input names the field.
    for (req, field) in [
        (append("", "alice", "x"), "conversation_id"),
        (append(&"c".repeat(257), "alice", "x"), "conversation_id"),
        (append("room", "", "x"), "author_id"),
    ] {
        let e = appender.append(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }
    let mut long_id = append("room", "alice", "x");
    long_id.client_message_id = "i".repeat(129);
    assert_eq!(
        appender.append(long_id).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    for req in [read("room", 0, 0, false), read("", 0, 10, false)] {
        let e = reader.read(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let mut eraser = server.conversations(Some(ERASER)).await;
    let e = eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"room".to_vec(),
            seq: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("seq"));
    let e = eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"room".to_vec(),
            seq: 1,
            reason: "r".repeat(300),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // The refused delete is on the audit trail.
    let mut admin = server.admin(Some(ADMIN)).await;
    let mut trail = admin
        .audit(shredstore::server::proto::AuditRequest {
            from_ms: 0,
            to_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ops = Vec::new();
    while let Some(r) = trail.next().await {
        let r = r.unwrap();
        ops.push((r.operation, r.outcome));
    }
    assert!(
        ops.contains(&("conversation_delete".to_owned(), "refused".to_owned())),
        "{ops:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_legal_hold_over_grpc() {
    use shredstore::server::proto::{
        ConversationsLiftLegalHoldRequest, ConversationsSetLegalHoldRequest,
        ConversationsSetRetentionRequest, RetentionMode,
        conversations_set_retention_request::Policy,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut eraser = server.conversations(Some(ERASER)).await;
    let mut admin = server.conversations(Some(ADMIN)).await;
    appender
        .append(append("held", "alice", "evidence"))
        .await
        .unwrap();
    let retention = ConversationsSetRetentionRequest {
        conversation_id: b"held".to_vec(),
        policy: Some(Policy::AfterMs(86_400_000)),
    };
    // Admin role only.
    let e = eraser.set_retention(retention.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let rights = admin
        .set_retention(retention)
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(rights.retention, RetentionMode::After as i32);
    assert_eq!(rights.retention_ms, 86_400_000);
    let e = admin
        .set_retention(ConversationsSetRetentionRequest {
            conversation_id: b"held".to_vec(),
            policy: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let hold = admin
        .set_legal_hold(ConversationsSetLegalHoldRequest {
            conversation_id: b"held".to_vec(),
            reason: "case 7".into(),
            until_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(hold.legal_hold);
    assert_eq!(hold.legal_hold_reason, "case 7");
    let del = ConversationRequest {
        conversation_id: b"held".to_vec(),
    };
    let e = eraser.delete(del.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"held".to_vec(),
            seq: 1,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let lifted = admin
        .lift_legal_hold(ConversationsLiftLegalHoldRequest {
            conversation_id: b"held".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(!lifted.legal_hold);
    assert_eq!(
        eraser
            .delete(del)
            .await
            .unwrap()
            .into_inner()
            .messages_deleted,
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_deletes_the_subjects_conversations_on_request() {
    use shredstore::server::proto::ConversationsSetSubjectsRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut reader = server.conversations(Some(READER)).await;
    let mut admin = server.conversations(Some(ADMIN)).await;
    let mut store_eraser = server.store(Some(ERASER)).await;
    appender
        .append(append("dm:alice:bot", "alice", "help me"))
        .await
        .unwrap();
    appender
        .append(append("dm:alice:bot", "bot", "sure"))
        .await
        .unwrap();
    let set = ConversationsSetSubjectsRequest {
        conversation_id: b"dm:alice:bot".to_vec(),
        subject_ids: vec![b"alice".to_vec()],
    };
    assert_eq!(
        appender.set_subjects(set.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        admin.set_subjects(set).await.unwrap().into_inner().subjects,
        1
    );
    let e = admin
        .set_subjects(ConversationsSetSubjectsRequest {
            conversation_id: b"dm:alice:bot".to_vec(),
            subject_ids: vec![Vec::new()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("subject_ids"), "{}", e.message());
    let erased = store_eraser
        .erase(EraseRequest {
            user_id: b"alice".to_vec(),
            block_new: false,
            delete_subject_conversations: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.conversation_receipts.len(), 1);
    assert_eq!(
        erased.conversation_receipts[0].subject,
        ReceiptSubject::Conversation as i32
    );
    assert!(
        collect(&mut reader, read("dm:alice:bot", 0, 10, false))
            .await
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_what_the_user_wrote_in_conversations() {
    use shredstore::server::proto::{ExportRequest, export_response::Record};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut store_reader = server.store(Some(READER)).await;
    appender
        .append(append("room-a", "alice", "alice in a"))
        .await
        .unwrap();
    appender
        .append(append("room-a", "bob", "bob in a"))
        .await
        .unwrap();
    appender
        .append(append("room-b", "alice", "alice in b"))
        .await
        .unwrap();
    let mut s = store_reader
        .export(ExportRequest {
            user_id: b"alice".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut authored = Vec::new();
    let mut manifest = None;
    while let Some(r) = s.next().await {
        match r.unwrap().record.unwrap() {
            Record::ConversationMessage(m) => authored.push((m.conversation_id, m.payload)),
            Record::Manifest(m) => manifest = Some(m),
            Record::Message(_) => panic!("alice has no own log here"),
        }
    }
    authored.sort();
    assert_eq!(
        authored,
        vec![
            (b"room-a".to_vec(), b"alice in a".to_vec()),
            (b"room-b".to_vec(), b"alice in b".to_vec())
        ]
    );
    assert_eq!(manifest.unwrap().conversation_message_count, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_delivers_each_change_once_resumes_and_tails() {
    use shredstore::server::proto::{Change, ChangeKind, ChangesRequest, RedactRequest};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.conversations(Some(APPENDER)).await;
    let mut eraser = server.conversations(Some(ERASER)).await;
    let mut store_appender = server.store(Some(APPENDER)).await;
    let mut store_eraser = server.store(Some(ERASER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    let once = |cursor: Vec<u8>| ChangesRequest {
        cursor,
        stop_at_end: true,
    };
    async fn drain(s: tonic::Streaming<Change>) -> Vec<Change> {
        s.map(|c| c.unwrap()).collect::<Vec<_>>().await
    }

    // Roles: admin only (eraser, reader and appender are refused).
    for token in [APPENDER, ERASER, READER] {
        let mut other = server.admin(Some(token)).await;
        assert_eq!(
            other.changes(once(Vec::new())).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    // Bad cursors name the field.
    let e = admin.changes(once(vec![1, 2, 3])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("cursor"), "{}", e.message());
    let mut ahead = 99u64.to_be_bytes().to_vec();
    ahead.extend_from_slice(&[0; 4]);
    let e = admin.changes(once(ahead)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("cursor"), "{}", e.message());

    // An empty feed ends at once with stop_at_end.
    assert!(
        drain(admin.changes(once(Vec::new())).await.unwrap().into_inner())
            .await
            .is_empty()
    );

    // A live tail opened now sees what comes next.
    let mut tail = admin
        .changes(ChangesRequest {
            cursor: Vec::new(),
            stop_at_end: false,
        })
        .await
        .unwrap()
        .into_inner();

    for (c, a) in [("room", "alice"), ("room", "bob"), ("gone", "alice")] {
        appender.append(append(c, a, "hello")).await.unwrap();
    }
    store_appender
        .append(shredstore::server::proto::AppendRequest {
            user_id: b"bob".to_vec(),
            payload: b"bob's own log".to_vec(),
            client_message_id: None,
        })
        .await
        .unwrap();
    store_eraser
        .redact(RedactRequest {
            user_id: b"bob".to_vec(),
            seq: 1,
            reason: "typo".into(),
        })
        .await
        .unwrap();
    eraser
        .redact(ConversationRedactRequest {
            conversation_id: b"room".to_vec(),
            seq: 2,
            reason: "spam".into(),
        })
        .await
        .unwrap();
    let deleted = eraser
        .delete(ConversationRequest {
            conversation_id: b"gone".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let erased = store_eraser
        .erase(EraseRequest {
            user_id: b"alice".to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap()
        .into_inner();

    let mut live = Vec::new();
    while live.len() < 4 {
        let c = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("the tail delivers within 10 s")
            .unwrap()
            .unwrap();
        live.push(c);
    }
    let kinds: Vec<i32> = live.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::MessageRedacted as i32,
            ChangeKind::ConversationMessageRedacted as i32,
            ChangeKind::ConversationDeleted as i32,
            ChangeKind::UserErased as i32,
        ]
    );
    assert_eq!(
        live.iter().map(|c| c.number).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!((live[0].seq, live[1].seq), (1, 2));
    let receipt = deleted.receipt.unwrap();
    assert_eq!(live[2].handle, receipt.handle);
    assert_eq!((live[2].epoch, live[2].before_seq), (deleted.epoch, 2));
    let user_receipt = erased.receipt.unwrap();
    assert_eq!(live[3].handle, user_receipt.handle);
    assert_eq!((live[3].epoch, live[3].before_seq), (erased.epoch, 1));
    assert_eq!(live[3].timestamp_ms, erased.erased_at_ms);
    // Handles and seqs only: no id anywhere in a change.
    for c in &live {
        assert_eq!(c.handle.len(), 16);
        for id in [&b"alice"[..], b"bob", b"room", b"gone"] {
            assert!(!c.handle.windows(id.len()).any(|w| w == id));
        }
    }
    // Nothing more is pending on the tail.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), tail.next())
            .await
            .is_err()
    );
    drop(tail);

    // Each change once per cursor: from the start, and from each cursor.
    let all = drain(admin.changes(once(Vec::new())).await.unwrap().into_inner()).await;
    assert_eq!(all, live);
    for (i, c) in live.iter().enumerate() {
        let rest = drain(
            admin
                .changes(once(c.cursor.clone()))
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert_eq!(rest, live[i + 1..].to_vec());
    }

    // Reading the feed is audited as `changes`.
    let trail: Vec<_> = admin
        .audit(shredstore::server::proto::AuditRequest {
            from_ms: 0,
            to_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert!(
        trail
            .iter()
            .any(|r| r.operation == "changes" && r.outcome == "ok")
    );
    assert!(
        trail
            .iter()
            .any(|r| r.operation == "changes" && r.outcome == "refused")
    );

    // A tail still open at shutdown ends, so the server stops promptly.
    let mut tail = admin
        .changes(ChangesRequest {
            cursor: live[3].cursor.clone(),
            stop_at_end: false,
        })
        .await
        .unwrap()
        .into_inner();
    let stopping = tokio::spawn(server.stop());
    let end = tokio::time::timeout(Duration::from_secs(5), tail.next())
        .await
        .expect("the tail ends within 5 s of shutdown");
    assert!(
        matches!(&end, Some(Err(s)) if s.code() == Code::Unavailable),
        "{end:?}"
    );
    tokio::time::timeout(Duration::from_secs(8), stopping)
        .await
        .expect("server stops within 8 s")
        .unwrap();
}

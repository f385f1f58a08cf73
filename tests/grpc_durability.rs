//! Graceful shutdown loses no acknowledged append; erase over gRPC followed by
//! Purge leaves none of the user's bytes in the data directory.
#![cfg(feature = "server")]

mod common;
mod grpc_support;

use grpc_support::{ROOT, TestServer, args};
use shredstore::layout::{CF_KEYS, CF_MESSAGES};
use shredstore::server::proto::{AppendRequest, EraseRequest, PurgeRequest, StatsRequest};
use shredstore::{Options, RootKey, Store, UserId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn append(user: &str, payload: Vec<u8>) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload,
        client_message_id: None,
    }
}

fn open_lib(data: &std::path::Path) -> Store {
    Store::open(Options::new(data, RootKey::from_bytes(ROOT)).purge_interval(None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), false)).await;
    let data = server.data_dir.clone();
    let mut c = server.store(None).await;
    let (tx, rx) = mpsc::channel(64);
    let mut responses = c
        .append_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let producer = tokio::spawn(async move {
        for i in 0u32.. {
            let req = append(&format!("d-{}", i % 3), format!("durable {i}").into_bytes());
            if tx.send(req).await.is_err() || i == 2999 {
                break;
            }
        }
        // Dropping tx ends the request stream.
    });
    let mut acked = Vec::new();
    let mut stop = Some(server);
    let mut stopping = None;
    loop {
        match responses.message().await {
            Ok(Some(r)) => acked.push(r.seq),
            Ok(None) | Err(_) => break,
        }
        if acked.len() == 500
            && let Some(s) = stop.take()
        {
            // Stop while the stream is in flight.
            stopping = Some(tokio::spawn(s.stop()));
        }
    }
    producer.await.unwrap();
    stopping.expect("server was stopped").await.unwrap();
    assert!(acked.len() >= 500);
    // Acknowledgements come in request order: request k went to user k % 3.
    let store = open_lib(&data);
    let mut want: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); 3];
    for (k, seq) in acked.iter().enumerate() {
        want[k % 3].push((*seq, format!("durable {k}").into_bytes()));
    }
    for (u, w) in want.iter().enumerate() {
        let got = store
            .read(&UserId::new(format!("d-{u}")).unwrap(), 0, 10_000)
            .unwrap();
        for (seq, payload) in w {
            let m = got
                .iter()
                .find(|m| m.seq == *seq)
                .unwrap_or_else(|| panic!("lost seq {seq} of d-{u}"));
            assert_eq!(&m.payload, payload);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_over_grpc_then_purge_leaves_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let user_a = "grpc-erasure-canary-user@example.com";
    let canary = |i: usize| format!("GRPC-CANARY-PLAINTEXT-{i:04}-secret").into_bytes();
    let server = TestServer::start(args(dir.path(), false)).await;
    let data = server.data_dir.clone();
    let mut c = server.store(None).await;
    for i in 0..50 {
        c.append(append(user_a, canary(i))).await.unwrap();
        c.append(append("grpc-survivor", format!("keep {i}").into_bytes()))
            .await
            .unwrap();
    }
    server.stop().await;

    // Capture A's ciphertexts and key record with the server down.
    let handle = {
        let store = open_lib(&data);
        store.flush().unwrap();
        *store.handle(&UserId::new(user_a).unwrap()).as_bytes()
    };
    let mut needles: Vec<Vec<u8>> = vec![user_a.as_bytes().to_vec()];
    needles.extend((0..50).map(canary));
    {
        let db = common::raw_db(&data);
        let msgs = common::raw_entries(&db, CF_MESSAGES, &handle);
        assert_eq!(msgs.len(), 50);
        needles.extend(msgs.into_iter().map(|(_, v)| v[25..v.len() - 4].to_vec()));
        needles.extend(
            common::raw_entries(&db, CF_KEYS, &handle)
                .into_iter()
                .map(|(_, v)| v),
        );
    }
    assert!(
        !common::scan(&data, &needles[51..]).is_empty(),
        "scanner sees the ciphertext"
    );

    let server = TestServer::start(args(dir.path(), false)).await;
    let mut c = server.store(None).await;
    let e = c
        .erase(EraseRequest {
            user_id: user_a.as_bytes().to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.messages_erased, 50);
    let p = server
        .admin(None)
        .await
        .purge(PurgeRequest {})
        .await
        .unwrap()
        .into_inner();
    // The background purger may have purged first; either way none is pending.
    assert!(p.complete && p.erasures_purged <= 1);
    let stats = server
        .admin(None)
        .await
        .stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.pending_erasures, 0);
    let hits = common::scan(&data, &needles);
    assert!(hits.is_empty(), "erased bytes remain: {hits:?}");
    server.stop().await;
    let store = open_lib(&data);
    assert_eq!(
        store
            .read(&UserId::new("grpc-survivor").unwrap(), 0, 100)
            .unwrap()
            .len(),
        50
    );
    assert!(
        store
            .read(&UserId::new(user_a).unwrap(), 0, 100)
            .unwrap()
            .is_empty()
    );
}

/// Regression (issue 11, item 1): a client that opened `Store.Export` on a
/// user with many messages, read one and stopped reading held one RocksDB
/// iterator for the whole stream, so every `Admin.Purge` waited 10 s and
/// returned `complete: false` while it stayed open. Export now reads page
/// by page, each from a cursor dropped before the page is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_export_does_not_hold_off_purge() {
    use shredstore::server::proto::ExportRequest;
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), false);
    a.durability = Some("buffered".into());
    let server = TestServer::start(a).await;
    let mut c = server.store(None).await;
    let (tx, rx) = mpsc::channel(256);
    let feeder = tokio::spawn(async move {
        for i in 0..30_000u32 {
            let user = if i % 300 == 0 { "alice" } else { "bob" };
            let req = append(user, format!("message {i} of a long chat").into_bytes());
            tx.send(req).await.unwrap();
        }
    });
    let mut acks = c
        .append_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while acks.message().await.unwrap().is_some() {
        n += 1;
    }
    feeder.await.unwrap();
    assert_eq!(n, 30_000);

    let mut exporter = server.store(None).await;
    let mut export = exporter
        .export(ExportRequest {
            user_id: b"bob".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(export.message().await.unwrap().is_some());
    // ...and stop reading.
    c.erase(EraseRequest {
        user_id: b"alice".to_vec(),
        block_new: false,
        delete_subject_conversations: false,
    })
    .await
    .unwrap();
    let mut admin = server.admin(None).await;
    let started = std::time::Instant::now();
    let p = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
    assert!(p.complete, "{p:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    // (The background purger may have been first: either way it is done.)
    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.pending_erasures, 0, "{stats:?}");
    // The export resumes where it stopped and ends with its manifest.
    let mut messages = 1u64;
    let mut manifest = None;
    while let Some(rec) = export.message().await.unwrap() {
        use shredstore::server::proto::export_response::Record;
        match rec.record.unwrap() {
            Record::Message(_) => messages += 1,
            Record::Manifest(m) => manifest = Some(m),
            Record::ConversationMessage(_) => panic!("no conversation messages here"),
        }
    }
    assert_eq!(messages, 29_900);
    assert_eq!(manifest.unwrap().message_count, 29_900);
    server.stop().await;
}

//! The erasure ledger over gRPC: Admin.RequestErasure, CancelErasure and
//! ErasureRequests with roles enforced, the restriction during the grace,
//! the server's own runner erasing a due request, the receipt it lists,
//! Stats, status codes for bad input, and the audit trail of each step.
#![cfg(feature = "server")]

mod grpc_support;

use std::time::{Duration, Instant};

use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::{
    AppendRequest, AuditRequest, CancelErasureRequest, ErasureRequest, ErasureRequestState,
    ErasureRequestsRequest, ReadRequest, RequestErasureRequest, StatsRequest, VerifyReceiptRequest,
};
use tonic::Code;

type Admin = grpc_support::AdminClientT;
type Store = grpc_support::StoreClientT;

fn append(user: &str, payload: &str) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
        client_message_id: None,
    }
}

fn request(user: &str, grace_ms: u64) -> RequestErasureRequest {
    RequestErasureRequest {
        user_id: user.as_bytes().to_vec(),
        grace_ms,
        delete_subject_conversations: false,
    }
}

async fn read_count(client: &mut Store, user: &str) -> Result<usize, tonic::Status> {
    let mut stream = client
        .read(ReadRequest {
            user_id: user.as_bytes().to_vec(),
            from_seq: 0,
            limit: 100,
        })
        .await?
        .into_inner();
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn list(admin: &mut Admin, state: ErasureRequestState) -> Vec<ErasureRequest> {
    let mut stream = admin
        .erasure_requests(ErasureRequestsRequest {
            state: state.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        out.push(r.request.expect("a request"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_restrict_cancel_and_run_by_themselves_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin_store = server.store(Some(ADMIN)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    for user in ["grpc-ledger-alice", "grpc-ledger-bob"] {
        appender.append(append(user, "a message")).await.unwrap();
        appender.append(append(user, "another")).await.unwrap();
    }

    // Only the admin role may use the ledger.
    for token in [APPENDER, READER, ERASER] {
        let mut other = server.admin(Some(token)).await;
        let e = other
            .request_erasure(request("grpc-ledger-alice", 0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{token}");
        let e = other
            .erasure_requests(ErasureRequestsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{token}");
    }
    // Bad input.
    for (req, what) in [
        (request("", 0), "user_id"),
        (request("grpc-ledger-alice", 31 * 24 * 3600 * 1000), "grace"),
    ] {
        let e = admin.request_erasure(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}");
        assert!(
            !e.message().contains("grpc-ledger-alice"),
            "{}",
            e.message()
        );
    }
    for (id, code) in [
        ("not hex", Code::InvalidArgument),
        ("00000000000000000000000000000000", Code::NotFound),
    ] {
        let e = admin
            .cancel_erasure(CancelErasureRequest {
                request_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{id}");
    }
    let e = admin
        .erasure_requests(ErasureRequestsRequest { state: 99 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A request with a grace of a minute: restricted, listed, cancellable.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let resp = admin
        .request_erasure(request("grpc-ledger-alice", 60_000))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.existing);
    let alice_req = resp.request.unwrap();
    assert_eq!(alice_req.state(), ErasureRequestState::Pending);
    assert_eq!(alice_req.request_id.len(), 32);
    assert!(alice_req.received_ms >= before);
    assert_eq!(alice_req.grace_until_ms, alice_req.received_ms + 60_000);
    assert_eq!(
        alice_req.due_ms,
        alice_req.received_ms + 30 * 24 * 3600 * 1000
    );
    assert!(alice_req.receipt.is_none() && !alice_req.overdue);
    let again = admin
        .request_erasure(request("grpc-ledger-alice", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(again.existing);
    assert_eq!(again.request.unwrap(), alice_req);
    let e = appender
        .append(append("grpc-ledger-alice", "refused"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        read_count(&mut reader, "grpc-ledger-alice")
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        read_count(&mut admin_store, "grpc-ledger-alice")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        list(&mut admin, ErasureRequestState::Pending).await,
        vec![alice_req.clone()]
    );
    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (stats.erasure_requests_open, stats.erasure_requests_overdue),
        (1, 0)
    );
    let cancelled = admin
        .cancel_erasure(CancelErasureRequest {
            request_id: alice_req.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(cancelled.state(), ErasureRequestState::Cancelled);
    assert_eq!(
        read_count(&mut reader, "grpc-ledger-alice").await.unwrap(),
        2
    );
    appender
        .append(append("grpc-ledger-alice", "back"))
        .await
        .unwrap();
    let e = admin
        .cancel_erasure(CancelErasureRequest {
            request_id: alice_req.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Bob's request has no grace: the server's runner erases him.
    let bob_req = admin
        .request_erasure(request("grpc-ledger-bob", 0))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let done = list(&mut admin, ErasureRequestState::Done).await;
        if let Some(d) = done
            .into_iter()
            .find(|r| r.request_id == bob_req.request_id)
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the server never ran the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let receipt = done.receipt.clone().expect("a done request has a receipt");
    assert_eq!(receipt.messages_erased, 2);
    assert_eq!(hex::encode(&receipt.handle), done.handle);
    let valid = admin
        .verify_receipt(VerifyReceiptRequest {
            receipt: Some(receipt),
        })
        .await
        .unwrap()
        .into_inner()
        .valid;
    assert!(valid);
    assert_eq!(
        read_count(&mut admin_store, "grpc-ledger-bob")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        read_count(&mut reader, "grpc-ledger-alice").await.unwrap(),
        3
    );
    let all = list(&mut admin, ErasureRequestState::Unspecified).await;
    assert_eq!(
        all.iter()
            .map(|r| (r.request_id.as_str(), r.state()))
            .collect::<Vec<_>>(),
        vec![
            (
                alice_req.request_id.as_str(),
                ErasureRequestState::Cancelled
            ),
            (bob_req.request_id.as_str(), ErasureRequestState::Done),
        ]
    );
    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (stats.erasure_requests_open, stats.erasure_requests_overdue),
        (0, 0)
    );

    // The audit trail: every step, the erasure by the ledger.
    let mut stream = admin
        .audit(AuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut trail = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        trail.push((r.operation, r.actor, r.outcome));
    }
    let count = |op: &str, actor: &str, outcome: &str| {
        trail
            .iter()
            .filter(|(o, a, r)| o == op && a == actor && r == outcome)
            .count()
    };
    assert_eq!(count("erasure_requested", "admin", "ok"), 3);
    assert_eq!(count("erasure_requested", "admin", "refused"), 1);
    assert_eq!(count("erasure_requested", "appender", "refused"), 1);
    assert_eq!(count("erasure_request_cancelled", "admin", "ok"), 1);
    assert_eq!(count("erasure_request_cancelled", "admin", "refused"), 3);
    assert_eq!(count("erase", "ledger", "ok"), 1);
    assert!(count("erasure_requests", "admin", "ok") >= 3);
    server.stop().await;
}

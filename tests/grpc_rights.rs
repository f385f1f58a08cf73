//! Erasure receipts and the audit trail over gRPC: Erase returns a signed
//! receipt, Admin.VerifyReceipt checks it (and a tampered one fails),
//! Admin.Audit streams who did what to which handle, with roles enforced.
#![cfg(feature = "server")]

mod grpc_support;

use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::{
    AppendRequest, AuditRequest, EraseRequest, ErasureReceipt, PurgeRequest, PurgeStatus,
    VerifyReceiptRequest,
};
use tonic::Code;

fn check(receipt: ErasureReceipt) -> VerifyReceiptRequest {
    VerifyReceiptRequest {
        receipt: Some(receipt),
    }
}

fn append(user: &str, payload: &str) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
        client_message_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_returns_a_receipt_that_verifies_and_the_trail_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), true);
    // Small pages, so the audit stream pages through the store.
    a.max_read_limit = Some(2);
    let server = TestServer::start(a).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;

    for i in 0..3 {
        appender
            .append(append("alice@example.com", &format!("m{i}")))
            .await
            .unwrap();
    }
    let erased = eraser
        .erase(EraseRequest {
            user_id: b"alice@example.com".to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap()
        .into_inner();
    let receipt = erased.receipt.clone().unwrap();
    assert_eq!(hex::encode(&receipt.handle), erased.handle);
    assert_eq!((receipt.epoch, receipt.messages_erased), (1, 3));
    assert_eq!(receipt.purge_status, PurgeStatus::Pending as i32);

    let v = admin
        .verify_receipt(check(receipt.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert_eq!(v.current_purge_status, PurgeStatus::Pending as i32);
    admin.purge(PurgeRequest {}).await.unwrap();
    let v = admin
        .verify_receipt(check(receipt.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert_eq!(v.current_purge_status, PurgeStatus::Purged as i32);

    // Any change breaks it.
    let mut forged = receipt.clone();
    forged.messages_erased = 0;
    let v = admin
        .verify_receipt(check(forged))
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    assert_eq!(v.current_purge_status, PurgeStatus::Unspecified as i32);
    let mut short = receipt.clone();
    short.handle.truncate(3);
    let e = admin.verify_receipt(check(short)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(!e.message().contains("alice"));
    let mut bad_status = receipt.clone();
    bad_status.purge_status = 0;
    assert_eq!(
        admin
            .verify_receipt(check(bad_status))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Admin only.
    let mut eraser_admin = server.admin(Some(ERASER)).await;
    assert_eq!(
        eraser_admin
            .verify_receipt(check(receipt.clone()))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut reader_admin = server.admin(Some(READER)).await;
    assert_eq!(
        reader_admin
            .audit(AuditRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // The trail, paged 2 at a time by the server.
    let mut stream = admin
        .audit(AuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        records.push(r);
    }
    // The erase wakes the background purger, which may purge before the
    // admin does: exactly one purge is on record, by either.
    let purges: Vec<_> = records.iter().filter(|r| r.operation == "purge").collect();
    assert_eq!(purges.len(), 1, "{records:?}");
    assert!(["admin", "purger"].contains(&purges[0].actor.as_str()));
    let summary: Vec<(String, String, String, String)> = records
        .iter()
        .filter(|r| r.operation != "purge")
        .map(|r| {
            (
                r.actor.clone(),
                r.operation.clone(),
                hex::encode(&r.handle),
                r.outcome.clone(),
            )
        })
        .collect();
    let h = erased.handle.clone();
    let s = |a: &str, o: &str, h: &str| (a.to_owned(), o.to_owned(), h.to_owned(), "ok".to_owned());
    // Calls refused for a missing role are on record too, without a handle.
    let refused = |a: &str, o: &str| {
        (
            a.to_owned(),
            o.to_owned(),
            String::new(),
            "refused".to_owned(),
        )
    };
    assert_eq!(
        summary,
        vec![
            s("eraser", "erase", &h),
            s("admin", "verify_receipt", &h),
            s("admin", "verify_receipt", &h),
            s("admin", "verify_receipt", &h),
            refused("eraser", "verify_receipt"),
            refused("reader", "audit"),
            s("admin", "audit", ""),
        ]
    );
    for r in &records {
        assert!(!format!("{r:?}").contains("alice"), "user id in {r:?}");
    }
    // A time window.
    let first = records[0].time_ms;
    let mut stream = admin
        .audit(AuditRequest {
            from_ms: 0,
            to_ms: first,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_none());
    assert_eq!(
        admin
            .audit(AuditRequest {
                from_ms: 5,
                to_ms: 5
            })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_from_another_store_is_not_valid() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    let foreign = ErasureReceipt {
        handle: vec![7; 16],
        epoch: 1,
        erased_at_ms: 1,
        messages_erased: 1,
        purge_status: PurgeStatus::Purged as i32,
        mac: vec![0; 32],
        subject: 0,
    };
    assert!(
        !admin
            .verify_receipt(check(foreign))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_messages_then_the_manifest_and_the_command_writes_ndjson() {
    use shredstore::server::proto::ExportRequest;
    use shredstore::server::proto::export_response::Record;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    for p in ["hello", "wörld"] {
        appender.append(append("frank", p)).await.unwrap();
    }
    appender
        .append(AppendRequest {
            user_id: b"frank".to_vec(),
            payload: vec![0xff, 0xfe],
            client_message_id: None,
        })
        .await
        .unwrap();

    let mut reader = server.store(Some(READER)).await;
    let mut s = reader
        .export(ExportRequest {
            user_id: b"frank".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut recs = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        recs.push(r.record.unwrap());
    }
    assert_eq!(recs.len(), 4);
    let Record::Manifest(m) = recs.pop().unwrap() else {
        panic!("the last record is not the manifest")
    };
    assert_eq!(
        (m.message_count, m.first_seq, m.last_seq, m.key_epoch),
        (3, 1, 3, 1)
    );
    let payloads: Vec<Vec<u8>> = recs
        .into_iter()
        .map(|r| match r {
            Record::Message(m) => m.payload,
            Record::Manifest(_) => panic!("two manifests"),
            Record::ConversationMessage(_) => panic!("a conversation message: there are none"),
        })
        .collect();
    assert_eq!(
        payloads,
        [
            b"hello".to_vec(),
            "wörld".as_bytes().to_vec(),
            vec![0xff, 0xfe]
        ]
    );

    // The read role is needed; the appender lacks it.
    let e = appender
        .export(ExportRequest {
            user_id: b"frank".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The command: NDJSON, private file mode.
    let out_file = dir.path().join("frank.ndjson");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "export",
            "--addr",
            &server.url(),
            "--user-id",
            "frank",
            "--out",
        ])
        .arg(&out_file)
        .env("SHREDSTORE_TOKEN", READER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["payload_utf8"], "hello");
    assert_eq!(lines[1]["payload_utf8"], "wörld");
    assert_eq!(lines[2]["payload_base64"], "//4=");
    assert_eq!(lines[3]["type"], "manifest");
    assert_eq!(lines[3]["message_count"], 3);

    // Both exports are on the audit trail, by the reader.
    let mut admin = server.admin(Some(ADMIN)).await;
    let mut stream = admin
        .audit(AuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut exports = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        if r.operation == "export" {
            exports.push((r.actor, r.outcome));
        }
    }
    let rec = |a: &str, o: &str| (a.to_owned(), o.to_owned());
    // The appender's refused attempt (no read role) comes between them.
    assert_eq!(
        exports,
        vec![
            rec("reader", "ok"),
            rec("appender", "refused"),
            rec("reader", "ok")
        ]
    );

    // A bad token: the command fails cleanly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "export",
            "--addr",
            &server.url(),
            "--user-id",
            "frank",
            "--out",
            "-",
        ])
        .env("SHREDSTORE_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    server.stop().await;
}

/// A VerifyReceipt request of a client older than 0.3.0 carried the
/// receipt's fields at the top level (fields 1 to 6, now reserved): it reads
/// as a request without a receipt and is refused, never taken for another
/// receipt.
#[test]
fn an_old_clients_verify_request_is_refused_as_missing_its_receipt() {
    use prost::Message;
    use shredstore::server::validate::validate_receipt;
    let old = ErasureReceipt {
        handle: vec![7; 16],
        epoch: 1,
        erased_at_ms: 1,
        messages_erased: 1,
        purge_status: PurgeStatus::Purged as i32,
        mac: vec![1; 32],
        // A 0.2 client's receipt has no subject (0 is not encoded).
        subject: 0,
    }
    .encode_to_vec();
    let read = VerifyReceiptRequest::decode(old.as_slice()).unwrap();
    assert!(read.receipt.is_none());
    let e = validate_receipt(&read).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "receipt must be set");
    // The same receipt sent as 0.3.0 sends it passes validation.
    let new = check(ErasureReceipt::decode(old.as_slice()).unwrap());
    let decoded = VerifyReceiptRequest::decode(new.encode_to_vec().as_slice()).unwrap();
    assert!(validate_receipt(&decoded).is_ok());
}

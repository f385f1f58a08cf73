//! Invariant 7 (issue 11, item 6): no log line carries a raw user id, a
//! payload, a reason or a bearer token. The server's whole log output, every
//! target at TRACE level (tonic, h2 and hyper included), is captured while
//! every RPC runs, good and bad, and searched for each canary in raw, hex
//! and base64 form.
#![cfg(feature = "server")]

mod grpc_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::{
    AppendRequest, AuditRequest, EraseRequest, ExportRequest, GetRightsRequest, LegalBasis,
    LiftLegalHoldRequest, PurgeRequest, ReadRequest, RecordConsentRequest, RedactRequest,
    RestrictRequest, SetLegalHoldRequest, StatsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const IDS: [&str; 3] = [
    "canary-user-7f3a@example.com",
    "canary-user-bb91@example.com",
    "canary-user-0c2e@example.com",
];
const PAYLOAD: &str = "CANARY-PAYLOAD-e41d9 hello there";
const REASON: &str = "CANARY-REASON-8a2c sent to the wrong chat";
const HOLD: &str = "CANARY-HOLD-55d1 litigation";
const CLIENT_ID: &str = "CANARY-CLIENT-ID-33f0";
const BAD_TOKEN: &str = "CANARY-TOKEN-c7e2-not-a-real-token";

fn append(user: &str, payload: &str, id: Option<&str>) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
        client_message_id: id.map(str::to_owned),
    }
}

fn user(u: &str) -> GetRightsRequest {
    GetRightsRequest {
        user_id: u.as_bytes().to_vec(),
    }
}

/// Reads (up to 10 of) `user`'s messages to the end of the stream.
async fn read_all(
    client: &mut shredstore::server::proto::store_client::StoreClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            grpc_support::Bearer,
        >,
    >,
    user: &str,
) {
    let mut s = client
        .read(ReadRequest {
            user_id: user.as_bytes().to_vec(),
            from_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    while s.message().await.unwrap().is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_a_user_id_payload_reason_or_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    let mut admin_store = server.store(Some(ADMIN)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    let [a, b, c] = IDS;

    // Appends: unary, idempotent (twice), streamed, and refused ones.
    appender.append(append(a, PAYLOAD, None)).await.unwrap();
    appender
        .append(append(a, PAYLOAD, Some(CLIENT_ID)))
        .await
        .unwrap();
    appender
        .append(append(a, PAYLOAD, Some(CLIENT_ID)))
        .await
        .unwrap();
    let conflict = appender.append(append(a, "other", Some(CLIENT_ID))).await;
    assert!(conflict.is_err());
    let big = "X".repeat(70_000) + PAYLOAD;
    assert!(appender.append(append(b, &big, None)).await.is_err());
    assert!(appender.append(append("", PAYLOAD, None)).await.is_err());
    let (tx, rx) = mpsc::channel(8);
    for i in 0..5 {
        tx.send(append(b, &format!("{PAYLOAD} {i}"), None))
            .await
            .unwrap();
    }
    drop(tx);
    let mut acks = appender
        .append_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while acks.message().await.unwrap().is_some() {}

    // Reads and an export, allowed and refused.
    read_all(&mut reader, a).await;
    let mut e = reader
        .export(ExportRequest {
            user_id: b.as_bytes().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    while e.message().await.unwrap().is_some() {}
    assert!(
        appender
            .read(ReadRequest {
                user_id: a.as_bytes().to_vec(),
                from_seq: 0,
                limit: 10,
            })
            .await
            .is_err()
    );

    // Rights operations with free-text reasons.
    eraser
        .redact(RedactRequest {
            user_id: a.as_bytes().to_vec(),
            seq: 1,
            reason: REASON.into(),
        })
        .await
        .unwrap();
    assert!(
        eraser
            .redact(RedactRequest {
                user_id: a.as_bytes().to_vec(),
                seq: 999,
                reason: REASON.into(),
            })
            .await
            .is_err()
    );
    appender
        .record_consent(RecordConsentRequest {
            user_id: c.as_bytes().to_vec(),
            purpose: "newsletter".into(),
            basis: LegalBasis::Consent as i32,
            granted: true,
            given_at_ms: 1_700_000_000_000,
        })
        .await
        .unwrap();
    admin
        .restrict(RestrictRequest {
            user_id: c.as_bytes().to_vec(),
            block_appends: true,
            block_reads: true,
        })
        .await
        .unwrap();
    assert!(appender.append(append(c, PAYLOAD, None)).await.is_err());
    read_all(&mut admin_store, c).await;
    admin
        .set_legal_hold(SetLegalHoldRequest {
            user_id: b.as_bytes().to_vec(),
            reason: HOLD.into(),
            until_ms: 0,
        })
        .await
        .unwrap();
    assert!(
        eraser
            .erase(EraseRequest {
                user_id: b.as_bytes().to_vec(),
                block_new: false,
                delete_subject_conversations: false,
            })
            .await
            .is_err()
    );
    admin
        .lift_legal_hold(LiftLegalHoldRequest {
            user_id: b.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    admin.get_rights(user(c)).await.unwrap();

    // Erasure, purge, stats, audit; refusals and a bad token.
    for u in [a, b, c] {
        eraser
            .erase(EraseRequest {
                user_id: u.as_bytes().to_vec(),
                block_new: false,
                delete_subject_conversations: false,
            })
            .await
            .unwrap();
    }
    admin.purge(PurgeRequest {}).await.unwrap();
    admin.stats(StatsRequest {}).await.unwrap();
    let mut trail = admin
        .audit(AuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    while trail.message().await.unwrap().is_some() {}
    let mut wrong = server.store(Some(BAD_TOKEN)).await;
    assert!(wrong.append(append(a, PAYLOAD, None)).await.is_err());
    let mut reader_admin = server.admin(Some(READER)).await;
    assert!(reader_admin.get_rights(user(a)).await.is_err());
    server.stop().await;

    let log = captured.0.lock().unwrap().clone();
    assert!(log.len() > 10_000, "the capture saw the server's logs");
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("user erased"),
        "the store's own lines are captured"
    );
    assert!(text.contains("TRACE"), "trace level is on");
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for s in IDS
        .iter()
        .chain([PAYLOAD, REASON, HOLD, CLIENT_ID, BAD_TOKEN].iter())
    {
        needles.push((format!("raw {s}"), s.as_bytes().to_vec()));
        needles.push((format!("hex {s}"), hex::encode(s).into_bytes()));
        needles.push((format!("base64 {s}"), b64.encode(s).into_bytes()));
    }
    // The distinctive parts alone, in case a value is cut or split.
    for s in ["CANARY", "canary-user", "@example.com"] {
        needles.push((format!("fragment {s}"), s.as_bytes().to_vec()));
    }
    for (what, needle) in &needles {
        if let Some(at) = log
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            let from = at.saturating_sub(200);
            let to = (at + 200).min(log.len());
            panic!(
                "log holds {what}: ...{}...",
                String::from_utf8_lossy(&log[from..to])
            );
        }
    }
}

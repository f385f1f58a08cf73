//! The data-subject rights beyond erasure over gRPC: restriction (Art. 18),
//! redaction (Art. 16), legal holds, retention, consent records, and the
//! audit trail of each (refusals included), with roles enforced.
#![cfg(feature = "server")]

mod grpc_support;

use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::export_response::Record;
use shredstore::server::proto::set_retention_request::Policy;
use shredstore::server::proto::{
    AppendRequest, AuditRequest, AuditResponse, ConsentRecord, EraseRequest, ExportManifest,
    ExportRequest, GetRightsRequest, LegalBasis, LiftLegalHoldRequest, Message, PurgeRequest,
    ReadRequest, ReadResponse, RecordConsentRequest, RedactRequest, RestrictRequest, RetentionMode,
    RightsState, SetLegalHoldRequest, SetRetentionRequest, StatsRequest, UnrestrictRequest,
    VerifyReceiptRequest,
};
use tonic::{Code, Status};

type Store = grpc_support::StoreClientT;
type Admin = grpc_support::AdminClientT;

fn append(user: &str, payload: &str) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: payload.as_bytes().to_vec(),
        client_message_id: None,
    }
}

fn user(user: &str) -> GetRightsRequest {
    GetRightsRequest {
        user_id: user.as_bytes().to_vec(),
    }
}

fn lift(user: &str) -> LiftLegalHoldRequest {
    LiftLegalHoldRequest {
        user_id: user.as_bytes().to_vec(),
    }
}

fn unrestrict(user: &str, block_appends: bool, block_reads: bool) -> UnrestrictRequest {
    UnrestrictRequest {
        user_id: user.as_bytes().to_vec(),
        block_appends,
        block_reads,
    }
}

fn restrict(user: &str, block_appends: bool, block_reads: bool) -> RestrictRequest {
    RestrictRequest {
        user_id: user.as_bytes().to_vec(),
        block_appends,
        block_reads,
    }
}

fn redact(user: &str, seq: u64, reason: &str) -> RedactRequest {
    RedactRequest {
        user_id: user.as_bytes().to_vec(),
        seq,
        reason: reason.to_owned(),
    }
}

fn consent(user: &str, purpose: &str, basis: LegalBasis, granted: bool) -> RecordConsentRequest {
    RecordConsentRequest {
        user_id: user.as_bytes().to_vec(),
        purpose: purpose.to_owned(),
        basis: basis as i32,
        granted,
        given_at_ms: 1_700_000_000_000,
    }
}

fn retention(user: &str, policy: Option<Policy>) -> SetRetentionRequest {
    SetRetentionRequest {
        user_id: user.as_bytes().to_vec(),
        policy,
    }
}

fn erase(user: &str) -> EraseRequest {
    EraseRequest {
        user_id: user.as_bytes().to_vec(),
        block_new: false,
        delete_subject_conversations: false,
    }
}

/// A whole Read (up to 10,000 messages). A refusal may come as the call's
/// status or as the stream's first item; either is returned as the error.
async fn read_all(client: &mut Store, user: &str) -> Result<Vec<ReadResponse>, Status> {
    let mut stream = client
        .read(ReadRequest {
            user_id: user.as_bytes().to_vec(),
            from_seq: 0,
            limit: 10_000,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// A whole Export: the messages, then the manifest.
async fn export_all(
    client: &mut Store,
    user: &str,
) -> Result<(Vec<Message>, ExportManifest), Status> {
    let mut stream = client
        .export(ExportRequest {
            user_id: user.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(r) = stream.message().await? {
        match r.record.expect("a record") {
            Record::Message(m) => messages.push(m),
            Record::ConversationMessage(_) => panic!("no conversation messages here"),
            Record::Manifest(m) => {
                assert!(
                    stream.message().await?.is_none(),
                    "a record after the manifest"
                );
                return Ok((messages, m));
            }
        }
    }
    panic!("the export ended without its manifest");
}

/// The whole audit trail.
async fn audit_trail(admin: &mut Admin) -> Vec<AuditResponse> {
    let mut stream = admin
        .audit(AuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        out.push(r);
    }
    out
}

/// The audit records of `op`, as (actor, handle hex, outcome).
fn records_of(trail: &[AuditResponse], op: &str) -> Vec<(String, String, String)> {
    trail
        .iter()
        .filter(|r| r.operation == op)
        .map(|r| (r.actor.clone(), hex::encode(&r.handle), r.outcome.clone()))
        .collect()
}

fn code<T>(r: Result<T, Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restriction_blocks_appends_and_reads_until_lifted_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin_store = server.store(Some(ADMIN)).await;
    let mut admin = server.admin(Some(ADMIN)).await;

    // More than one Read page (64), so the override is seen to be audited
    // per call, not per page.
    for i in 0..70 {
        appender
            .append(append("carol", &format!("m{i}")))
            .await
            .unwrap();
    }

    // block_appends: Append is refused, Read is not.
    let s = admin
        .restrict(restrict("carol", true, false))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(s.block_appends && !s.block_reads);
    let e = appender.append(append("carol", "no")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(!e.message().contains("carol"));
    assert_eq!(read_all(&mut reader, "carol").await.unwrap().len(), 70);
    // Other users are not affected.
    appender.append(append("dan", "hi")).await.unwrap();
    // Unrestrict: appends work again.
    let s = admin
        .unrestrict(unrestrict("carol", true, false))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(!s.block_appends && !s.block_reads);
    let a = appender
        .append(append("carol", "back"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.seq, 71);

    // block_reads: the reader is refused for Read and Export.
    let s = admin
        .restrict(restrict("carol", false, true))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(!s.block_appends && s.block_reads);
    let e = read_all(&mut reader, "carol").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(!e.message().contains("carol"));
    assert_eq!(
        code(export_all(&mut reader, "carol").await),
        Code::FailedPrecondition
    );
    // Appends still work (only reads are restricted).
    appender.append(append("carol", "more")).await.unwrap();
    assert!(
        records_of(&audit_trail(&mut admin).await, "restricted_read").is_empty(),
        "a refused read is not a restricted read"
    );

    // A token that also has the admin role reads through the override:
    // one audit record per call.
    let msgs = read_all(&mut admin_store, "carol").await.unwrap();
    assert_eq!(msgs.len(), 72);
    assert_eq!(msgs[0].payload, b"m0");
    assert_eq!(msgs[71].payload, b"more");
    let (exported, manifest) = export_all(&mut admin_store, "carol").await.unwrap();
    assert_eq!(exported.len(), 72);
    assert_eq!(manifest.message_count, 72);
    let rights = manifest.rights.clone().unwrap();
    assert!(rights.block_reads && !rights.block_appends);
    let handle = manifest.handle.clone();
    let trail = audit_trail(&mut admin).await;
    let ok = |actor: &str| (actor.to_owned(), handle.clone(), "ok".to_owned());
    assert_eq!(
        records_of(&trail, "restricted_read"),
        vec![ok("admin"), ok("admin")],
        "one restricted_read for the Read, one for the Export"
    );
    let refused = |actor: &str| (actor.to_owned(), handle.clone(), "refused".to_owned());
    assert_eq!(
        records_of(&trail, "export"),
        vec![refused("reader"), ok("admin")]
    );
    assert_eq!(
        records_of(&trail, "restrict"),
        vec![ok("admin"), ok("admin")]
    );
    assert_eq!(records_of(&trail, "unrestrict"), vec![ok("admin")]);
    // An unrestricted user read by the admin token: no override record.
    assert_eq!(read_all(&mut admin_store, "dan").await.unwrap().len(), 1);
    assert_eq!(
        records_of(&audit_trail(&mut admin).await, "restricted_read").len(),
        2
    );
    for r in &audit_trail(&mut admin).await {
        assert!(!format!("{r:?}").contains("carol"), "user id in {r:?}");
    }

    // The restriction survives a restart.
    server.stop().await;
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    let s = admin
        .get_rights(user("carol"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(s.block_reads && !s.block_appends);
    assert_eq!(
        read_all(&mut reader, "carol").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Unrestrict with no mode lifts both.
    let s = admin
        .unrestrict(unrestrict("carol", false, false))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(!s.block_reads && !s.block_appends);
    assert_eq!(read_all(&mut reader, "carol").await.unwrap().len(), 72);

    // Restrict needs a mode; a bad user id is refused.
    let e = admin
        .restrict(restrict("carol", false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        code(admin.restrict(restrict("", true, false)).await),
        Code::InvalidArgument
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_leaves_a_marker_and_the_next_purge_removes_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;

    // The background purger runs at once the first time there is work, then
    // once an hour (the tests' interval): let it spend that first run on an
    // erasure, so the Admin.Purge below is the one that purges the redaction.
    appender.append(append("zed", "x")).await.unwrap();
    eraser.erase(erase("zed")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while records_of(&audit_trail(&mut admin).await, "purge").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background purger never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut appended = Vec::new();
    for p in ["one", "two", "three"] {
        appended.push(
            appender
                .append(append("dave", p))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let r = eraser
        .redact(redact("dave", 2, "typo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seq, 2);
    assert_eq!(r.timestamp_ms, appended[1].timestamp_ms);
    assert!(!r.already_redacted);
    assert!(r.redacted_at_ms >= r.timestamp_ms);

    // Read: the marker keeps seq and time, the neighbours are intact.
    let msgs = read_all(&mut reader, "dave").await.unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!((msgs[0].seq, msgs[0].payload.as_slice()), (1, &b"one"[..]));
    assert!(msgs[0].redaction.is_none());
    assert_eq!(
        (msgs[2].seq, msgs[2].payload.as_slice()),
        (3, &b"three"[..])
    );
    assert!(msgs[2].redaction.is_none());
    assert_eq!(msgs[1].seq, 2);
    assert_eq!(msgs[1].timestamp_ms, appended[1].timestamp_ms);
    assert!(msgs[1].payload.is_empty());
    let mark = msgs[1].redaction.clone().unwrap();
    assert_eq!(mark.reason, "typo");
    assert_eq!(mark.redacted_at_ms, r.redacted_at_ms);

    // Again: nothing changes.
    let again = eraser
        .redact(redact("dave", 2, "other"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_redacted);
    assert_eq!(again.redacted_at_ms, r.redacted_at_ms);
    assert_eq!(again.timestamp_ms, r.timestamp_ms);

    // The export carries the marker.
    let (exported, manifest) = export_all(&mut reader, "dave").await.unwrap();
    // Export's Message has Read's fields.
    let exported: Vec<ReadResponse> = exported
        .into_iter()
        .map(|m| ReadResponse {
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
            payload: m.payload,
            redaction: m.redaction,
        })
        .collect();
    assert_eq!(exported, msgs);
    assert_eq!((manifest.message_count, manifest.redacted_count), (3, 1));

    // Unknown seq or user: NOT_FOUND; bad arguments: INVALID_ARGUMENT without
    // the value.
    for req in [redact("dave", 99, ""), redact("nobody", 1, "")] {
        assert_eq!(code(eraser.redact(req).await), Code::NotFound);
    }
    assert_eq!(
        code(eraser.redact(redact("dave", 0, "")).await),
        Code::InvalidArgument
    );
    let long = "secret-reason-".repeat(20);
    let e = eraser.redact(redact("dave", 1, &long)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("reason"), "{e:?}");
    assert!(!e.message().contains("secret"));
    assert_eq!(
        code(eraser.redact(redact("", 1, "")).await),
        Code::InvalidArgument
    );

    // The erase role is needed; the refusal is audited with the token name.
    let e = reader.redact(redact("dave", 1, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = appender.redact(redact("dave", 1, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        read_all(&mut reader, "dave").await.unwrap()[0].payload,
        b"one"
    );
    let trail = audit_trail(&mut admin).await;
    let redacts = records_of(&trail, "redact");
    let refused = |a: &str| (a.to_owned(), String::new(), "refused".to_owned());
    assert!(redacts.contains(&refused("reader")), "{redacts:?}");
    assert!(redacts.contains(&refused("appender")), "{redacts:?}");
    let handle = manifest.handle.clone();
    assert!(
        redacts
            .iter()
            .any(|r| r.0 == "eraser" && r.1 == handle && r.2 == "ok"),
        "{redacts:?}"
    );
    // Redacting an unknown seq is a refusal on record, with the handle.
    assert!(
        redacts
            .iter()
            .any(|r| r.0 == "eraser" && r.1 == handle && r.2 == "refused"),
        "{redacts:?}"
    );

    // The next purge makes the redaction physical.
    let p = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
    assert!(p.complete);
    assert!(p.redactions_purged >= 1, "{p:?}");
    let p = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
    assert_eq!(p.redactions_purged, 0);
    // The marker stays.
    let after = read_all(&mut reader, "dave").await.unwrap();
    assert_eq!(after, msgs);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_blocks_erase_and_redact_until_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    appender.append(append("erin", "a")).await.unwrap();
    appender.append(append("erin", "b")).await.unwrap();

    let s = admin
        .set_legal_hold(SetLegalHoldRequest {
            user_id: b"erin".to_vec(),
            reason: "case-42".into(),
            until_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(s.legal_hold);
    assert_eq!(s.legal_hold_reason, "case-42");
    assert!(s.legal_hold_since_ms > 0);
    assert_eq!((s.legal_hold_until_ms, s.effective_retention_ms), (0, 0));
    assert_eq!(
        admin
            .get_rights(user("erin"))
            .await
            .unwrap()
            .into_inner()
            .rights
            .unwrap(),
        s
    );

    let e = eraser.erase(erase("erin")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(!e.message().contains("erin"));
    assert_eq!(
        code(eraser.redact(redact("erin", 1, "")).await),
        Code::FailedPrecondition
    );
    // Appends and reads go on.
    appender.append(append("erin", "c")).await.unwrap();

    // Bad holds: an end in the past, a reason too long, a bad user id.
    let hold = |until_ms: u64, reason: &str, user: &str| SetLegalHoldRequest {
        user_id: user.as_bytes().to_vec(),
        reason: reason.to_owned(),
        until_ms,
    };
    assert_eq!(
        code(admin.set_legal_hold(hold(1, "late", "erin")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            admin
                .set_legal_hold(hold(0, &"x".repeat(257), "erin"))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(admin.set_legal_hold(hold(0, "r", "")).await),
        Code::InvalidArgument
    );
    // The hold in force is unchanged.
    assert_eq!(
        admin
            .get_rights(user("erin"))
            .await
            .unwrap()
            .into_inner()
            .rights
            .unwrap(),
        s
    );
    // Replacing it keeps its start.
    let until = s.legal_hold_since_ms + 86_400_000;
    let s2 = admin
        .set_legal_hold(hold(until, "case-43", "erin"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(
        (
            s2.legal_hold_reason.as_str(),
            s2.legal_hold_since_ms,
            s2.legal_hold_until_ms
        ),
        ("case-43", s.legal_hold_since_ms, until)
    );

    let s = admin
        .lift_legal_hold(lift("erin"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(!s.legal_hold);
    assert_eq!(
        (s.legal_hold_reason.as_str(), s.legal_hold_since_ms),
        ("", 0)
    );
    eraser.redact(redact("erin", 1, "spam")).await.unwrap();
    let e = eraser.erase(erase("erin")).await.unwrap().into_inner();
    assert_eq!(e.messages_erased, 3);

    let trail = audit_trail(&mut admin).await;
    let handle = e.handle.clone();
    let rec = |o: &str| ("eraser".to_owned(), handle.clone(), o.to_owned());
    assert_eq!(records_of(&trail, "erase"), vec![rec("refused"), rec("ok")]);
    assert_eq!(
        records_of(&trail, "set_legal_hold").len(),
        2 + 1,
        "two placed, one refused past end"
    );
    assert_eq!(records_of(&trail, "lift_legal_hold").len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_are_exported_and_shredded_with_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;

    appender.append(append("frank", "hello")).await.unwrap();
    appender.append(append("frank", "oops")).await.unwrap();
    let c1 = appender
        .record_consent(consent("frank", "newsletter", LegalBasis::Consent, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c1.index, 1);
    assert!(c1.recorded_at_ms > 0);
    // A withdrawal is recordable while appends are restricted.
    admin
        .restrict(restrict("frank", true, false))
        .await
        .unwrap();
    let c2 = appender
        .record_consent(consent("frank", "newsletter", LegalBasis::Consent, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c2.index, 2);
    let c3 = appender
        .record_consent(consent("frank", "billing", LegalBasis::Contract, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c3.index, 3);
    eraser
        .redact(redact("frank", 2, "sent by mistake"))
        .await
        .unwrap();

    // Bad requests: INVALID_ARGUMENT naming the field.
    let mut bad = Vec::new();
    bad.push((
        "basis",
        consent("frank", "x", LegalBasis::Unspecified, true),
    ));
    let mut unknown = consent("frank", "x", LegalBasis::Consent, true);
    unknown.basis = 99;
    bad.push(("basis", unknown));
    bad.push(("purpose", consent("frank", "", LegalBasis::Consent, true)));
    bad.push((
        "purpose",
        consent("frank", &"p".repeat(257), LegalBasis::Consent, true),
    ));
    let mut no_time = consent("frank", "x", LegalBasis::Consent, true);
    no_time.given_at_ms = 0;
    bad.push(("given_at_ms", no_time));
    bad.push(("user_id", consent("", "x", LegalBasis::Consent, true)));
    for (field, req) in bad {
        let e = appender.record_consent(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().starts_with(field), "{e:?}");
    }
    // The append role is needed.
    assert_eq!(
        code(
            reader
                .record_consent(consent("frank", "x", LegalBasis::Consent, true))
                .await
        ),
        Code::PermissionDenied
    );

    // The export's manifest lists them, oldest first, and the rights state.
    let (msgs, m) = export_all(&mut reader, "frank").await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!((m.message_count, m.redacted_count), (2, 1));
    let summary: Vec<(u64, &str, i32, bool, u64)> = m
        .consents
        .iter()
        .map(|c: &ConsentRecord| {
            (
                c.index,
                c.purpose.as_str(),
                c.basis,
                c.granted,
                c.given_at_ms,
            )
        })
        .collect();
    let t = 1_700_000_000_000;
    assert_eq!(
        summary,
        vec![
            (1, "newsletter", LegalBasis::Consent as i32, true, t),
            (2, "newsletter", LegalBasis::Consent as i32, false, t),
            (3, "billing", LegalBasis::Contract as i32, true, t),
        ]
    );
    assert_eq!(m.consents[0].recorded_at_ms, c1.recorded_at_ms);
    let rights = m.rights.clone().unwrap();
    assert!(rights.block_appends && !rights.block_reads);
    assert_eq!(rights.retention, RetentionMode::StoreDefault as i32);

    // The command writes the marker and the manifest's new fields.
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
        .env("SHREDSTORE_TOKEN", READER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["payload_utf8"], "hello");
    assert!(lines[0].get("redacted").is_none());
    let marker = &lines[1];
    assert_eq!(marker["type"], "message");
    assert_eq!(marker["seq"], 2);
    assert_eq!(marker["redacted"], true);
    assert_eq!(marker["reason"], "sent by mistake");
    assert!(marker["redacted_at_ms"].as_u64().unwrap() > 0);
    assert!(marker.get("payload_utf8").is_none() && marker.get("payload_base64").is_none());
    let manifest = &lines[2];
    assert_eq!(manifest["type"], "manifest");
    assert_eq!(manifest["redacted_count"], 1);
    assert_eq!(manifest["rights"]["block_appends"], true);
    assert_eq!(manifest["rights"]["block_reads"], false);
    assert_eq!(manifest["rights"]["retention"], "store_default");
    assert!(manifest["rights"]["legal_hold"].is_null());
    let consents = manifest["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 3);
    assert_eq!(consents[0]["basis"], "consent");
    assert_eq!(consents[0]["purpose"], "newsletter");
    assert_eq!(consents[0]["granted"], true);
    assert_eq!(consents[1]["granted"], false);
    assert_eq!(consents[2]["basis"], "contract");
    assert_eq!(consents[2]["given_at_ms"], 1_700_000_000_000u64);

    // Erasure shreds the consent history with the key.
    eraser.erase(erase("frank")).await.unwrap();
    let (msgs, m) = export_all(&mut reader, "frank").await.unwrap();
    assert!(msgs.is_empty());
    assert!(m.consents.is_empty(), "{:?}", m.consents);
    assert_eq!(m.erased_at_ms.len(), 1);
    let rights = m.rights.unwrap();
    assert!(!rights.block_appends, "the restriction goes with the key");

    let trail = audit_trail(&mut admin).await;
    let consents = records_of(&trail, "record_consent");
    assert_eq!(
        consents.iter().filter(|c| c.2 == "ok").count(),
        3,
        "{consents:?}"
    );
    assert!(consents.contains(&("reader".to_owned(), String::new(), "refused".to_owned())));
    for r in &trail {
        assert!(!format!("{r:?}").contains("frank"), "user id in {r:?}");
        assert!(!format!("{r:?}").contains("newsletter"), "purpose in {r:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_validated_and_get_rights_reflects_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    appender.append(append("gina", "hi")).await.unwrap();

    // An unknown user has the default state.
    let s = admin
        .get_rights(user("nobody"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(
        s,
        RightsState {
            retention: RetentionMode::StoreDefault as i32,
            ..Default::default()
        }
    );

    // Validation: the field is named, never the value.
    for (field, req) in [
        ("policy", retention("gina", None)),
        ("after_ms", retention("gina", Some(Policy::AfterMs(0)))),
        (
            "store_default",
            retention("gina", Some(Policy::StoreDefault(false))),
        ),
        ("forever", retention("gina", Some(Policy::Forever(false)))),
        ("user_id", retention("", Some(Policy::Forever(true)))),
    ] {
        let e = admin.set_retention(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().starts_with(field), "{e:?}");
        assert!(!e.message().contains("gina"));
    }
    assert_eq!(
        code(
            admin
                .get_rights(GetRightsRequest {
                    user_id: vec![b'u'; 257]
                })
                .await
        ),
        Code::InvalidArgument
    );

    let s = admin
        .set_retention(retention("gina", Some(Policy::AfterMs(3_600_000))))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(s.retention, RetentionMode::After as i32);
    assert_eq!(
        (s.retention_ms, s.effective_retention_ms),
        (3_600_000, 3_600_000)
    );
    // Messages older than an hour count as expired (the horizon moves with
    // the clock).
    assert!(s.expired_before_ms > 0);
    let got = admin
        .get_rights(user("gina"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(got.expired_before_ms >= s.expired_before_ms);
    assert_eq!(
        RightsState {
            expired_before_ms: s.expired_before_ms,
            ..got
        },
        s
    );
    // Expiry follows: nothing of gina's is an hour old yet.
    let mut reader = server.store(Some(READER)).await;
    assert_eq!(read_all(&mut reader, "gina").await.unwrap().len(), 1);

    let s = admin
        .set_retention(retention("gina", Some(Policy::Forever(true))))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(s.retention, RetentionMode::Forever as i32);
    assert_eq!((s.retention_ms, s.effective_retention_ms), (0, 0));
    let s = admin
        .set_retention(retention("gina", Some(Policy::StoreDefault(true))))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(s.retention, RetentionMode::StoreDefault as i32);
    assert_eq!(
        s.effective_retention_ms, 0,
        "the test server has no default"
    );

    // Restrict and hold show up too.
    admin.restrict(restrict("gina", true, true)).await.unwrap();
    let s = admin
        .get_rights(user("gina"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert!(s.block_appends && s.block_reads && !s.legal_hold);

    let trail = audit_trail(&mut admin).await;
    assert_eq!(
        records_of(&trail, "set_retention")
            .iter()
            .filter(|r| r.2 == "ok")
            .count(),
        3
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rights_calls_are_audited_with_the_token_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader_admin = server.admin(Some(READER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    let pd = Code::PermissionDenied;

    // The reader has none of these roles.
    assert_eq!(code(reader.erase(erase("hal")).await), pd);
    assert_eq!(code(reader.redact(redact("hal", 1, "")).await), pd);
    assert_eq!(
        code(
            reader
                .record_consent(consent("hal", "x", LegalBasis::Consent, true))
                .await
        ),
        pd
    );
    assert_eq!(
        code(reader_admin.restrict(restrict("hal", true, false)).await),
        pd
    );
    assert_eq!(
        code(
            reader_admin
                .unrestrict(unrestrict("hal", true, false))
                .await
        ),
        pd
    );
    assert_eq!(
        code(
            reader_admin
                .set_retention(retention("hal", Some(Policy::Forever(true))))
                .await
        ),
        pd
    );
    assert_eq!(
        code(
            reader_admin
                .set_legal_hold(SetLegalHoldRequest {
                    user_id: b"hal".to_vec(),
                    reason: String::new(),
                    until_ms: 0,
                })
                .await
        ),
        pd
    );
    assert_eq!(code(reader_admin.lift_legal_hold(lift("hal")).await), pd);
    assert_eq!(code(reader_admin.get_rights(user("hal")).await), pd);
    assert_eq!(code(reader_admin.purge(PurgeRequest {}).await), pd);
    assert_eq!(code(reader_admin.stats(StatsRequest {}).await), pd);
    assert_eq!(code(reader_admin.audit(AuditRequest::default()).await), pd);
    assert_eq!(
        code(
            reader_admin
                .verify_receipt(VerifyReceiptRequest::default())
                .await
        ),
        pd
    );
    // The appender lacks the read role.
    assert_eq!(code(export_all(&mut appender, "hal").await), pd);
    // Unauthenticated calls are refused before any record is written.
    let mut anonymous = server.admin(None).await;
    assert_eq!(
        code(anonymous.restrict(restrict("hal", true, false)).await),
        Code::Unauthenticated
    );
    let mut wrong = server.store(Some("tok-wrong")).await;
    assert_eq!(code(wrong.erase(erase("hal")).await), Code::Unauthenticated);

    let trail = audit_trail(&mut admin).await;
    let refusals: Vec<(&str, &str, &str)> = trail
        .iter()
        .filter(|r| r.outcome == "refused")
        .map(|r| {
            assert!(r.handle.is_empty(), "a refusal names no user: {r:?}");
            (r.actor.as_str(), r.operation.as_str(), r.outcome.as_str())
        })
        .collect();
    let refused = |actor, op| (actor, op, "refused");
    assert_eq!(
        refusals,
        vec![
            refused("reader", "erase"),
            refused("reader", "redact"),
            refused("reader", "record_consent"),
            refused("reader", "restrict"),
            refused("reader", "unrestrict"),
            refused("reader", "set_retention"),
            refused("reader", "set_legal_hold"),
            refused("reader", "lift_legal_hold"),
            refused("reader", "get_rights"),
            refused("reader", "purge"),
            refused("reader", "stats"),
            refused("reader", "audit"),
            refused("reader", "verify_receipt"),
            refused("appender", "export"),
        ]
    );
    // Nothing else happened but the admin's audit read.
    assert_eq!(trail.len(), refusals.len() + 1, "{trail:?}");
    let last = trail.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.operation.as_str()),
        ("admin", "audit")
    );
    // A successful GetRights is a read of the user's state: recorded with
    // the user's handle.
    admin.get_rights(user("hal")).await.unwrap();
    let trail = audit_trail(&mut admin).await;
    let read = trail
        .iter()
        .find(|r| r.operation == "get_rights" && r.outcome == "ok")
        .expect("get_rights recorded");
    assert_eq!(read.actor, "admin");
    assert_eq!(read.handle.len(), 16);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_flag_expires_messages_unless_a_user_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), true);
    a.retention_secs = Some(1);
    let server = TestServer::start(a).await;
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut admin = server.admin(Some(ADMIN)).await;
    admin
        .set_retention(retention("keeper", Some(Policy::Forever(true))))
        .await
        .unwrap();
    appender
        .append(append("henry", "short-lived"))
        .await
        .unwrap();
    appender.append(append("keeper", "kept")).await.unwrap();
    assert_eq!(read_all(&mut reader, "henry").await.unwrap().len(), 1);
    let s = admin
        .get_rights(user("henry"))
        .await
        .unwrap()
        .into_inner()
        .rights
        .unwrap();
    assert_eq!(s.effective_retention_ms, 1_000);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert!(read_all(&mut reader, "henry").await.unwrap().is_empty());
    assert_eq!(read_all(&mut reader, "keeper").await.unwrap().len(), 1);
    // The seq is not reused after the expiry.
    let next = appender.append(append("henry", "again")).await.unwrap();
    assert_eq!(next.into_inner().seq, 2);
    server.stop().await;
}

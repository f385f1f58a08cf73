//! `shredstore load` against an in-process server: unary, streaming and
//! open-loop runs complete without errors and verify what they read, a
//! damaged message is caught, and the binary's flags and exit codes work;
//! the conversation mode (`--conversations`) writes to and reads back from
//! the Conversations service, over gRPC and embedded.
#![cfg(feature = "server")]

mod grpc_support;

use std::process::Command;
use std::time::Duration;

use grpc_support::{ADMIN, READER, TestServer, args};
use shredstore::load::{
    LoadConfig, LoadError, LoadReport, Op, RunLimit, VERIFY_ERROR, author_id, build_payload,
    conversation_id, run,
};
use shredstore::server::proto::conversation_item::Body;
use shredstore::server::proto::{
    AppendRequest, ConversationAppendRequest, ConversationReadRequest, EraseRequest,
};

async fn server(dir: &std::path::Path, auth: bool) -> TestServer {
    let mut a = args(dir, auth);
    // fsync per append would make the runs slow without testing anything more.
    a.durability = Some("buffered".into());
    TestServer::start(a).await
}

fn config(server: &TestServer, requests: u64) -> LoadConfig {
    LoadConfig {
        concurrency: 4,
        limit: RunLimit::Requests(requests),
        users: 40,
        seed: Some(7),
        ..LoadConfig::new(server.url())
    }
}

/// No errors, every request accounted for, reads found and verified messages.
fn assert_clean(r: &LoadReport, requests: u64) {
    assert_eq!(r.errors, 0, "{r}");
    assert!(r.errors_by_code.is_empty(), "{r}");
    assert_eq!(r.total_ops, requests, "{r}");
    assert_eq!(r.ok_ops, requests, "{r}");
    let count = |op| r.op(op).unwrap().count;
    assert_eq!(
        count(Op::Append) + count(Op::Read) + count(Op::Erase),
        requests
    );
    // 90/9/1: appends dominate, some reads.
    assert!(count(Op::Append) > requests * 8 / 10, "{r}");
    assert!(count(Op::Read) > 0, "{r}");
    assert!(r.messages_verified > 0, "{r}");
    assert_eq!(r.messages_corrupt, 0, "{r}");
    assert_eq!(r.messages_read, r.messages_verified);
    let append = &r.op(Op::Append).unwrap().latency_us;
    assert_eq!(append.count, count(Op::Append));
    assert!(append.p50_us > 0 && append.p50_us <= append.p99_us && append.p99_us <= append.max_us);
    assert!(r.throughput > 0.0);
    assert_eq!(r.timeline.iter().map(|b| b.ops).sum::<u64>(), requests);
}

fn assert_svg(path: &std::path::Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("Latency by percentile") && svg.contains("Throughput per second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unary_closed_loop_run_is_clean_and_plotted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    let plot = dir.path().join("unary.svg");
    let report = run(LoadConfig {
        plot: Some(plot.clone()),
        ..config(&server, 2_000)
    })
    .await
    .unwrap();
    assert_clean(&report, 2_000);
    assert_eq!(report.mode, "unary");
    assert!(report.send_lag_us.is_none(), "closed loop: no schedule");
    assert_svg(&plot);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["total_ops"], 2_000);
    assert!(json["ops"][1]["latency_us"]["p99_us"].as_u64().is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_run_with_a_token_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), true).await;
    let plot = dir.path().join("stream.svg");
    let report = run(LoadConfig {
        stream: true,
        stream_window: 16,
        token: Some(ADMIN.to_owned()),
        plot: Some(plot.clone()),
        ..config(&server, 3_000)
    })
    .await
    .unwrap();
    assert_clean(&report, 3_000);
    assert_eq!(report.mode, "stream");
    assert_eq!(report.stream_window, Some(16));
    assert_svg(&plot);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_loop_runs_at_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    for stream in [false, true] {
        let plot = dir.path().join(format!("rate-{stream}.svg"));
        let report = run(LoadConfig {
            rate: Some(1_000.0),
            stream,
            plot: Some(plot.clone()),
            ..config(&server, 600)
        })
        .await
        .unwrap();
        assert_clean(&report, 600);
        assert_eq!(report.rate, Some(1_000.0));
        assert_eq!(
            report.send_lag_us.unwrap().count,
            600,
            "open loop: send lag recorded"
        );
        // 600 requests due over 0.6 s: the run cannot be much shorter.
        assert!(report.elapsed_secs >= 0.59, "{report}");
        assert!(report.throughput <= 1_050.0, "{report}");
        assert_svg(&plot);
    }
    // Duration-bounded open loop with a warm-up: about rate * duration requests.
    let report = run(LoadConfig {
        rate: Some(500.0),
        limit: RunLimit::Duration(Duration::from_millis(400)),
        warmup: Duration::from_millis(200),
        ..config(&server, 1)
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.total_ops, 200, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_and_foreign_messages_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    let user = "corrupt-0";
    let mut good = build_payload(user.as_bytes(), 64, &mut rand::rng()).unwrap();
    let mut flipped = good.clone();
    flipped[40] ^= 0x80;
    let other_users = build_payload(b"corrupt-1", 64, &mut rand::rng()).unwrap();
    let mut c = server.store(None).await;
    for payload in [
        std::mem::take(&mut good),
        flipped,
        other_users,
        b"not ours".to_vec(),
    ] {
        c.append(AppendRequest {
            user_id: user.as_bytes().to_vec(),
            payload,
            client_message_id: None,
        })
        .await
        .unwrap();
    }
    let report = run(LoadConfig {
        users: 1,
        user_prefix: "corrupt-".into(),
        mix: "read=1".parse().unwrap(),
        ..config(&server, 10)
    })
    .await
    .unwrap();
    assert_eq!(report.errors_with(VERIFY_ERROR), 10, "{report}");
    assert_eq!(report.op(Op::Read).unwrap().errors, 10);
    assert_eq!(report.messages_read, 40);
    assert_eq!(report.messages_verified, 10);
    assert_eq!(report.messages_corrupt, 30);
    assert!(report.to_string().contains(VERIFY_ERROR));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_requests_are_counted_and_no_server_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), true).await;
    // The reader token may read but not append or erase.
    for stream in [false, true] {
        let report = run(LoadConfig {
            token: Some(READER.to_owned()),
            stream,
            ..config(&server, 200)
        })
        .await
        .unwrap();
        assert_eq!(report.total_ops, 200, "{report}");
        let append = report.op(Op::Append).unwrap();
        assert_eq!(append.errors, append.count, "{report}");
        assert_eq!(append.errors_by_code["PERMISSION_DENIED"], append.count);
        assert_eq!(report.op(Op::Read).unwrap().errors, 0, "{report}");
    }
    let addr = server.url();
    server.stop().await;
    let plot = dir.path().join("never.svg");
    let e = run(LoadConfig {
        plot: Some(plot.clone()),
        ..LoadConfig::new(addr)
    })
    .await
    .unwrap_err();
    assert!(matches!(e, LoadError::Connect { .. }), "{e}");
    assert!(!plot.exists(), "no empty plot left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_stream_is_counted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    // Appends for a blocked user fail and end their AppendStream.
    let mut c = server.store(None).await;
    c.erase(EraseRequest {
        user_id: b"blk-0".to_vec(),
        block_new: true,
        delete_subject_conversations: false,
    })
    .await
    .unwrap();
    let report = run(LoadConfig {
        users: 4,
        zipf: 0.0,
        user_prefix: "blk-".into(),
        mix: "append=1".parse().unwrap(),
        stream: true,
        ..config(&server, 400)
    })
    .await
    .unwrap();
    let append = report.op(Op::Append).unwrap();
    assert_eq!(
        append.count, 400,
        "every append accounted for once: {report}"
    );
    assert!(append.ok > 0, "{report}");
    assert!(
        append.errors_by_code["FAILED_PRECONDITION"] >= 50,
        "{report}"
    );
    assert_eq!(report.errors, append.errors);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_prints_json_and_honours_fail_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), true).await;
    let bin = env!("CARGO_BIN_EXE_shredstore");
    let plot = dir.path().join("bin.svg");
    let out = Command::new(bin)
        .args(["load", "--addr", &server.url(), "--requests", "300"])
        .args([
            "--concurrency",
            "2",
            "--stream",
            "--json",
            "--fail-on-error",
        ])
        .arg("--plot")
        .arg(&plot)
        .env("SHREDSTORE_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["total_ops"], 300);
    assert_eq!(json["errors"], 0);
    assert_svg(&plot);

    // Refused requests: reported, exit 0; with --fail-on-error, exit 1.
    let refused = |fail: bool| {
        let mut cmd = Command::new(bin);
        cmd.args(["load", "--addr", &server.url(), "--requests", "20"])
            .args(["--token", "wrong", "--concurrency", "1"]);
        if fail {
            cmd.arg("--fail-on-error");
        }
        cmd.output().unwrap()
    };
    let out = refused(false);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNAUTHENTICATED"));
    assert!(!refused(true).status.success());

    let bad = Command::new(bin)
        .args(["load", "--addr", &server.url(), "--payload-size", "4"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--payload-size"));
    let url = server.url();
    server.stop().await;
    let out = Command::new(bin)
        .args(["load", "--addr", &url, "--requests", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no server: non-zero exit");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_over_mutual_tls() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap()
            .pem();
        (cert, key.serialize_pem())
    };
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("client");
    let ca_path = write("ca.pem", &ca);
    let mut a = args(dir.path(), true);
    a.durability = Some("buffered".into());
    a.tls_cert = Some(write("server.pem", &server_cert));
    a.tls_key = Some(write("server.key", &server_key));
    a.tls_client_ca = Some(ca_path.clone());
    let server = TestServer::start(a).await;
    let report = run(LoadConfig {
        addr: format!("https://{}", server.addr),
        tls_ca: Some(ca_path),
        tls_domain: Some("localhost".into()),
        tls_identity: Some((
            write("client.pem", &client_cert),
            write("client.key", &client_key),
        )),
        token: Some(ADMIN.to_owned()),
        stream: true,
        ..config(&server, 300)
    })
    .await
    .unwrap();
    assert_eq!(report.target, format!("https://{}", server.addr));
    assert_eq!((report.total_ops, report.errors), (300, 0), "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_run_is_clean_and_refuses_streams_and_used_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("embedded");
    let report = run(LoadConfig {
        concurrency: 4,
        limit: RunLimit::Requests(400),
        users: 40,
        seed: Some(7),
        embedded: Some(store_dir.clone()),
        ..LoadConfig::new("unused")
    })
    .await
    .unwrap();
    assert_clean(&report, 400);
    assert_eq!(report.mode, "embedded");
    assert!(store_dir.join("CURRENT").exists());

    // The directory now holds a store under another (random) key.
    let again = run(LoadConfig {
        limit: RunLimit::Requests(10),
        embedded: Some(store_dir),
        ..LoadConfig::new("unused")
    })
    .await;
    assert!(matches!(again, Err(LoadError::Config(m)) if m.contains("new or empty")));

    let stream = run(LoadConfig {
        stream: true,
        embedded: Some(dir.path().join("other")),
        ..LoadConfig::new("unused")
    })
    .await;
    assert!(matches!(stream, Err(LoadError::Config(m)) if m.contains("--stream")));
}

fn conversation_config(server: &TestServer, requests: u64) -> LoadConfig {
    LoadConfig {
        conversations: 20,
        authors_per_conversation: 3,
        mix: "append=9,read=1".parse().unwrap(),
        ..config(server, requests)
    }
}

/// Appends and reads only, no errors, every message read verified.
fn assert_conversations_clean(r: &LoadReport, requests: u64) {
    assert_eq!(r.errors, 0, "{r}");
    assert_eq!((r.total_ops, r.ok_ops), (requests, requests), "{r}");
    let (appends, reads) = (r.op(Op::Append).unwrap(), r.op(Op::Read).unwrap());
    assert_eq!(appends.count + reads.count, requests, "{r}");
    assert!(appends.count > requests * 8 / 10, "{r}");
    assert!(reads.count > 0, "{r}");
    assert!(r.messages_verified > 0, "{r}");
    assert_eq!(r.messages_read, r.messages_verified, "{r}");
    assert_eq!(r.messages_corrupt, 0, "{r}");
    assert_eq!(r.tombstones_read, 0, "nothing erased: {r}");
    assert_eq!(r.conversations, Some(20));
    assert_eq!(r.authors_per_conversation, Some(3));
    assert_eq!((r.users, r.read_limit), (60, 50), "{r}");
    assert_eq!(r.user_prefix, "load-conv-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_mode_appends_to_conversations_and_reads_the_newest_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    let report = run(conversation_config(&server, 2_000)).await.unwrap();
    assert_conversations_clean(&report, 2_000);
    assert_eq!(report.mode, "unary");
    // A read returns at most the newest 50.
    let reads = report.op(Op::Read).unwrap().count;
    assert!(report.messages_read <= reads * 50, "{report}");
    let text = report.to_string();
    assert!(text.contains("20 conversations x 3 authors"), "{text}");

    // Every acknowledged append is in its conversation, by one of its
    // authors, and nothing went to the per-user Store.
    let mut conv = server.conversations(None).await;
    let mut stored = 0u64;
    let mut per_conversation = Vec::new();
    for c in 0..20 {
        let id = conversation_id("load-conv-", c);
        let mut items = conv
            .read(ConversationReadRequest {
                conversation_id: id.into_bytes(),
                from_seq: 0,
                limit: 10_000,
                backward: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0u64;
        while let Some(item) = items.message().await.unwrap() {
            let Some(Body::Message(m)) = item.body else {
                panic!("conversation {c}: seq {} is not a message", item.seq)
            };
            let authors: Vec<String> = (0..3).map(|a| author_id("load-conv-", c, a)).collect();
            assert!(
                authors.iter().any(|a| a.as_bytes() == m.author_id),
                "conversation {c}: author {}",
                String::from_utf8_lossy(&m.author_id)
            );
            n += 1;
        }
        stored += n;
        per_conversation.push(n);
    }
    assert_eq!(stored, report.op(Op::Append).unwrap().ok, "{report}");
    // Zipf: conversation 0 is the hottest.
    assert!(
        per_conversation[0] > per_conversation[19],
        "{per_conversation:?}"
    );
    let mut store = server.store(None).await;
    let mut own = store
        .read(shredstore::server::proto::ReadRequest {
            user_id: author_id("load-conv-", 0, 0).into_bytes(),
            from_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        own.message().await.unwrap().is_none(),
        "no per-user appends"
    );

    // AppendStream, and erases of authors: their slots read as tombstones.
    let report = run(LoadConfig {
        stream: true,
        stream_window: 16,
        ..conversation_config(&server, 1_500)
    })
    .await
    .unwrap();
    assert_conversations_clean(&report, 1_500);
    assert_eq!(report.mode, "stream");
    let report = run(LoadConfig {
        mix: "append=6,read=3,erase=1".parse().unwrap(),
        ..conversation_config(&server, 1_500)
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.op(Op::Erase).unwrap().ok > 0, "{report}");
    assert!(report.tombstones_read > 0, "{report}");
    assert!(report.messages_verified > 0, "{report}");
    assert_eq!(report.messages_corrupt, 0, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_reads_catch_foreign_damaged_and_misplaced_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    let mut conv = server.conversations(None).await;
    let (a0, a1) = (author_id("bad-", 0, 0), author_id("bad-", 0, 1));
    // Another conversation's author, with a payload intact for that author.
    let stranger = author_id("bad-", 1, 0);
    let mut rng = rand::rng();
    let mut flipped = build_payload(a0.as_bytes(), 64, &mut rng).unwrap();
    flipped[40] ^= 0x01;
    for (author, payload) in [
        (&a0, build_payload(a0.as_bytes(), 64, &mut rng).unwrap()),
        (&a1, build_payload(a0.as_bytes(), 64, &mut rng).unwrap()),
        (
            &stranger,
            build_payload(stranger.as_bytes(), 64, &mut rng).unwrap(),
        ),
        (&a0, flipped),
        (&a1, b"not ours".to_vec()),
    ] {
        conv.append(ConversationAppendRequest {
            conversation_id: conversation_id("bad-", 0).into_bytes(),
            author_id: author.clone().into_bytes(),
            payload,
            client_message_id: String::new(),
        })
        .await
        .unwrap();
    }
    let report = run(LoadConfig {
        conversations: 1,
        authors_per_conversation: 2,
        conversation_prefix: "bad-".into(),
        mix: "read=1".parse().unwrap(),
        ..config(&server, 10)
    })
    .await
    .unwrap();
    assert_eq!(report.errors_with(VERIFY_ERROR), 10, "{report}");
    assert_eq!(report.op(Op::Read).unwrap().errors, 10);
    assert_eq!(report.messages_read, 50, "{report}");
    assert_eq!(report.messages_verified, 10, "{report}");
    assert_eq!(report.messages_corrupt, 40, "{report}");

    // A read limit of 2 sees only the two newest (both bad).
    let report = run(LoadConfig {
        conversations: 1,
        conversation_prefix: "bad-".into(),
        conversation_read_limit: 2,
        mix: "read=1".parse().unwrap(),
        ..config(&server, 4)
    })
    .await
    .unwrap();
    assert_eq!(report.messages_read, 8, "{report}");
    assert_eq!(report.messages_corrupt, 8, "{report}");
    assert_eq!(report.read_limit, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_conversation_run_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(LoadConfig {
        concurrency: 4,
        limit: RunLimit::Requests(600),
        seed: Some(7),
        conversations: 20,
        authors_per_conversation: 3,
        mix: "append=9,read=1".parse().unwrap(),
        embedded: Some(dir.path().join("embedded")),
        ..LoadConfig::new("unused")
    })
    .await
    .unwrap();
    assert_conversations_clean(&report, 600);
    assert_eq!(report.mode, "embedded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_runs_conversation_mode() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), false).await;
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["load", "--addr", &server.url(), "--requests", "300"])
        .args(["--concurrency", "2", "--conversations", "10"])
        .args([
            "--authors-per-conversation",
            "4",
            "--mix",
            "append=9,read=1",
        ])
        .args(["--json", "--fail-on-error"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["total_ops"], 300);
    assert_eq!(json["errors"], 0);
    assert_eq!(json["conversations"], 10);
    assert_eq!(json["authors_per_conversation"], 4);
    assert!(json["messages_verified"].as_u64().unwrap() > 0, "{json}");
    let bad = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["load", "--addr", &server.url(), "--conversations", "10"])
        .args(["--authors-per-conversation", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--authors-per-conversation"));
    server.stop().await;
}

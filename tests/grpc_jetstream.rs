//! `shredstore serve --engine jetstream` as an operator runs it: two
//! stateless front ends (real server processes) on one real 3-node NATS
//! JetStream cluster (nats-server from `scripts/test-tools.sh`), serving
//! the same users; what only RocksDB can do is refused, naming the engine.
#![cfg(all(feature = "server", feature = "jetstream"))]

use std::process::Command;

#[path = "tools/nats_cluster.rs"]
mod nats_cluster;
mod spawn_server;
mod tools;

use nats_cluster::NatsCluster;
use shredstore::server::proto::admin_client::AdminClient;
use shredstore::server::proto::store_client::StoreClient;
use shredstore::server::proto::{
    AppendRequest, BackupRequest, EraseRequest, PurgeRequest, PurgeStatus, ReadRequest,
    VerifyReceiptRequest,
};
use tonic::Code;

fn kill(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn read_all(url: &str, user: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut c = StoreClient::connect(url.to_string()).await.unwrap();
    let mut s = c
        .read(ReadRequest {
            user_id: user.to_vec(),
            from_seq: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.push((m.seq, m.payload));
    }
    out
}

#[test]
fn two_front_ends_serve_one_cluster() {
    let cluster = NatsCluster::start(&tools::tool("nats-server"), 3);
    let dir = tempfile::tempdir().unwrap();
    // Both front ends use the development key beside this (unused) data
    // directory: one root key, as front ends of one store must.
    let data = dir.path().join("data");
    let args = [
        "--engine".to_string(),
        "jetstream".into(),
        "--nats-url".into(),
        cluster.urls(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    let (mut one, url1) = spawn_server::spawn_serve(&args);
    let (mut two, url2) = spawn_server::spawn_serve(&args);
    assert!(
        !data.exists(),
        "a JetStream front end keeps no data directory"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Appends through both front ends: one seq sequence.
        for (i, url) in [&url1, &url2, &url1, &url2].into_iter().enumerate() {
            let mut c = StoreClient::connect(url.clone()).await.unwrap();
            let seq = c
                .append(AppendRequest {
                    user_id: b"alice".to_vec(),
                    payload: format!("m{i}").into_bytes(),
                    client_message_id: None,
                })
                .await
                .unwrap()
                .into_inner()
                .seq;
            assert_eq!(seq, i as u64 + 1);
        }
        let want: Vec<(u64, Vec<u8>)> = (0..4u64)
            .map(|i| (i + 1, format!("m{i}").into_bytes()))
            .collect();
        assert_eq!(read_all(&url1, b"alice").await, want);
        assert_eq!(read_all(&url2, b"alice").await, want);

        // Erased through two, gone through one.
        let mut c2 = StoreClient::connect(url2.clone()).await.unwrap();
        let erased = c2
            .erase(EraseRequest {
                user_id: b"alice".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(erased.messages_erased, 4);
        assert!(read_all(&url1, b"alice").await.is_empty());

        let mut admin = AdminClient::connect(url1.clone()).await.unwrap();
        let purge = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
        assert!(purge.complete, "{purge:?}");
        // The purger of front end two may have got there first: either way
        // the erasure is purged, and one front end says so of the other's.
        assert!(purge.erasures_purged <= 1, "{purge:?}");
        let verified = admin
            .verify_receipt(VerifyReceiptRequest {
                receipt: erased.receipt.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verified.valid);
        assert_eq!(
            verified.current_purge_status,
            PurgeStatus::Purged as i32,
            "{verified:?}"
        );

        // Backups are RocksDB checkpoints: refused, naming the engine.
        let status = match admin.backup(BackupRequest {}).await {
            Err(s) => s,
            Ok(mut stream) => stream
                .get_mut()
                .message()
                .await
                .expect_err("a backup of a JetStream store"),
        };
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("jetstream"), "{status:?}");
    });
    kill(&mut one);
    kill(&mut two);
}

#[test]
fn serve_refuses_contradictory_engine_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "serve",
            "--insecure-no-auth",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--engine jetstream"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["serve", "--insecure-no-auth", "--engine", "jetstream"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nats-url"), "{err}");
}

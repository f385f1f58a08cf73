//! Incident signals (issue 11, GDPR Art. 33): the server's `/metrics`
//! exposes authentication failures by reason, permission refusals,
//! integrity failures, a poisoned store, incomplete purges, overdue
//! erasures and overdue erasure requests; `docs/ops/alerts.yml` passes `promtool check rules` and its
//! unit tests (`docs/ops/alerts_test.yml`), and every metric it alerts on
//! is one the server really exports.
#![cfg(feature = "server")]

mod grpc_support;
mod tools;

use std::process::Command;

use grpc_support::{READER, TestServer, args};
use shredstore::server::proto::{AppendRequest, PurgeRequest};

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ops/alerts.yml");
const ALERT_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ops/alerts_test.yml");

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the sample `name{labels}` (or `name` without labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn alert_rules_pass_promtool() {
    let promtool = tools::tool("promtool");
    for args in [["check", "rules", ALERTS], ["test", "rules", ALERT_TESTS]] {
        let out = Command::new(&promtool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_signals_are_exported_and_alerted_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), true);
    a.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start(a).await;
    let append = AppendRequest {
        user_id: b"ops-user".to_vec(),
        payload: b"x".to_vec(),
        client_message_id: None,
    };
    let mut anonymous = server.store(None).await;
    assert!(anonymous.append(append.clone()).await.is_err());
    let mut wrong = server.store(Some("tok-not-a-token")).await;
    assert!(wrong.append(append.clone()).await.is_err());
    assert!(wrong.append(append.clone()).await.is_err());
    let mut reader_admin = server.admin(Some(READER)).await;
    assert!(reader_admin.purge(PurgeRequest {}).await.is_err());

    let body = scrape(server.metrics.unwrap()).await;
    let want = [
        (
            "shredstore_auth_failures_total{reason=\"missing_token\"}",
            1.0,
        ),
        (
            "shredstore_auth_failures_total{reason=\"unknown_token\"}",
            2.0,
        ),
        ("shredstore_auth_failures_total{reason=\"malformed\"}", 0.0),
        ("shredstore_permission_denied_total{method=\"Purge\"}", 1.0),
        ("shredstore_integrity_failures_total", 0.0),
        ("shredstore_purges_incomplete_total", 0.0),
        ("shredstore_store_poisoned", 0.0),
        ("shredstore_overdue_erasures", 0.0),
        ("shredstore_oldest_pending_erasure_seconds", 0.0),
        ("shredstore_erasure_requests_open", 0.0),
        ("shredstore_erasure_requests_overdue", 0.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&body, series), Some(value), "{series} in\n{body}");
    }
    assert!(
        !body.contains("tok-not-a-token"),
        "a token leaked into /metrics"
    );
    assert!(!body.contains("ops-user"));

    // Every metric the alerts use is exported.
    let rules = std::fs::read_to_string(ALERTS).unwrap();
    let used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("shredstore_"))
        .collect();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "alerts.yml uses {name}, which /metrics does not export"
        );
    }
    server.stop().await;
}

//! The gRPC API end to end against an in-process server: append, streaming
//! append and read, erase, idempotent retries, bad input, health, reflection
//! and metrics.
#![cfg(feature = "server")]

mod grpc_support;

use grpc_support::{TestServer, args};
use shredstore::server::proto::{
    AppendRequest, EraseRequest, PurgeRequest, ReadRequest, StatsRequest,
};
use tonic::Code;

fn append(user: &str, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: payload.to_vec(),
        client_message_id: None,
    }
}

fn read(user: &str, from_seq: u64, limit: u32) -> ReadRequest {
    ReadRequest {
        user_id: user.as_bytes().to_vec(),
        from_seq,
        limit,
    }
}

async fn read_all<T>(
    client: &mut shredstore::server::proto::store_client::StoreClient<T>,
    user: &str,
) -> Result<Vec<shredstore::server::proto::ReadResponse>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut stream = client.read(read(user, 0, 10_000)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_erase_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), false)).await;
    let mut c = server.store(None).await;
    for i in 0..5 {
        let r = c
            .append(append("alice", format!("m{i}").as_bytes()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.seq, i + 1);
        assert!(!r.duplicate);
    }
    c.append(append("bob", b"hi")).await.unwrap();
    let msgs = read_all(&mut c, "alice").await.unwrap();
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[4].payload, b"m4");
    let page: Vec<u64> = {
        let mut s = c.read(read("alice", 2, 2)).await.unwrap().into_inner();
        let mut v = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            v.push(m.seq);
        }
        v
    };
    assert_eq!(page, vec![2, 3]);

    let e = c
        .erase(EraseRequest {
            user_id: b"alice".to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.messages_erased, 5);
    assert_eq!(e.handle.len(), 32);
    assert!(read_all(&mut c, "alice").await.unwrap().is_empty());
    assert_eq!(read_all(&mut c, "bob").await.unwrap().len(), 1);
    assert_eq!(
        c.append(append("alice", b"back"))
            .await
            .unwrap()
            .into_inner()
            .seq,
        6
    );

    let mut admin = server.admin(None).await;
    let p = admin.purge(PurgeRequest {}).await.unwrap().into_inner();
    assert!(p.complete);
    let s = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(s.users, 2);
    assert!(s.filter_drops >= 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_append_of_10000_and_streaming_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), false)).await;
    let mut c = server.store(None).await;
    let users = ["s-0", "s-1", "s-2", "s-3"];
    let requests: Vec<AppendRequest> = (0..10_000)
        .map(|i| append(users[i % 4], format!("payload {i}").as_bytes()))
        .collect();
    let mut responses = c
        .append_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = vec![Vec::new(); 4];
    let mut n = 0;
    while let Some(r) = responses.message().await.unwrap() {
        seqs[n % 4].push(r.seq);
        n += 1;
    }
    assert_eq!(n, 10_000);
    for (u, s) in seqs.iter().enumerate() {
        // Responses come in request order and each user's seqs follow it.
        assert_eq!(*s, (1..=2500).collect::<Vec<u64>>(), "user {u}");
    }
    for (u, name) in users.iter().enumerate() {
        let msgs = read_all(&mut c, name).await.unwrap();
        assert_eq!(msgs.len(), 2500);
        for (k, m) in msgs.iter().enumerate() {
            assert_eq!(m.payload, format!("payload {}", k * 4 + u).into_bytes());
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_returns_the_same_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), false)).await;
    let mut c = server.store(None).await;
    let mut req = append("carol", b"only once");
    req.client_message_id = Some("client-42".into());
    let first = c.append(req.clone()).await.unwrap().into_inner();
    let again = c.append(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        (again.seq, again.timestamp_ms),
        (first.seq, first.timestamp_ms)
    );
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(read_all(&mut c, "carol").await.unwrap().len(), 1);
    // Also through the stream.
    let mut s = c
        .append_stream(tokio_stream::iter(vec![
            req.clone(),
            append("carol", b"new"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let r1 = s.message().await.unwrap().unwrap();
    let r2 = s.message().await.unwrap().unwrap();
    assert!(r1.duplicate && r1.seq == first.seq);
    assert_eq!(r2.seq, first.seq + 1);
    // Same id, other payload.
    req.payload = b"changed".to_vec();
    assert_eq!(
        c.append(req).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_codes_and_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), false);
    a.max_payload = Some(1000);
    a.max_read_limit = Some(100);
    let server = TestServer::start(a).await;
    let mut c = server.store(None).await;
    let secret_user = "very-private-user@example.com";
    let cases: Vec<(AppendRequest, Code)> = vec![
        (append("", b"x"), Code::InvalidArgument),
        (
            AppendRequest {
                user_id: vec![b'u'; 257],
                ..append("", b"x")
            },
            Code::InvalidArgument,
        ),
        (append(secret_user, &[b'P'; 1001]), Code::InvalidArgument),
        (
            AppendRequest {
                client_message_id: Some(String::new()),
                ..append(secret_user, b"x")
            },
            Code::InvalidArgument,
        ),
        (
            AppendRequest {
                client_message_id: Some("i".repeat(129)),
                ..append(secret_user, b"x")
            },
            Code::InvalidArgument,
        ),
        // Over the gRPC message limit itself.
        (append(secret_user, &[b'P'; 100_000]), Code::OutOfRange),
    ];
    for (req, want) in cases {
        let err = c.append(req).await.unwrap_err();
        assert!(
            err.code() == want
                || (want == Code::OutOfRange && err.code() == Code::ResourceExhausted),
            "{err:?}"
        );
        assert!(
            !err.message().contains("very-private") && !err.message().contains("PPPP"),
            "{err:?}"
        );
    }
    for (req, want) in [
        (read("u", 0, 0), Code::InvalidArgument),
        (read("u", 0, 101), Code::InvalidArgument),
        (read("", 0, 1), Code::InvalidArgument),
    ] {
        assert_eq!(c.read(req).await.unwrap_err().code(), want);
    }
    assert_eq!(
        c.erase(EraseRequest {
            user_id: vec![],
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    // A bad request in a stream ends it with its status, after the good ones.
    let mut s = c
        .append_stream(tokio_stream::iter(vec![
            append("streamer", b"ok"),
            append("", b"bad"),
            append("streamer", b"never"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().seq, 1);
    assert_eq!(s.message().await.unwrap_err().code(), Code::InvalidArgument);
    // Blocked users are a failed precondition.
    c.erase(EraseRequest {
        user_id: b"gone".to_vec(),
        block_new: true,
        delete_subject_conversations: false,
    })
    .await
    .unwrap();
    assert_eq!(
        c.append(append("gone", b"x")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Nothing of the bad requests was written; the server still serves.
    assert_eq!(
        c.append(append(secret_user, b"fine"))
            .await
            .unwrap()
            .into_inner()
            .seq,
        1
    );
    let mut s = c.read(read("streamer", 0, 100)).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().payload, b"ok");
    assert!(
        s.message().await.unwrap().is_none(),
        "only the message before the bad one"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), false);
    a.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start(a).await;
    let channel = server.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "shredstore.v1.Store".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel);
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"shredstore.v1.Store".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"shredstore.v1.Admin".to_string()),
        "{names:?}"
    );

    let mut c = server.store(None).await;
    c.append(append("metric-user-secret", b"x")).await.unwrap();
    let _ = c.read(read("u", 0, 0)).await;
    let body = http_get(server.metrics.unwrap(), "/metrics").await;
    assert!(
        body.contains("shredstore_grpc_requests_total{method=\"Append\",code=\"OK\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("method=\"Read\",code=\"INVALID_ARGUMENT\""),
        "{body}"
    );
    assert!(
        body.contains("shredstore_appended_messages_total 1"),
        "{body}"
    );
    assert!(!body.contains("metric-user-secret"));
    server.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

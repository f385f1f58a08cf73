//! Authentication, roles and TLS of the gRPC server.
#![cfg(feature = "server")]

mod grpc_support;

use grpc_support::{ADMIN, APPENDER, ERASER, READER, TestServer, args};
use shredstore::server::proto::store_client::StoreClient;
use shredstore::server::proto::{
    AppendRequest, BackupRequest, EraseRequest, ErasureJournalRequest, PurgeRequest, ReadRequest,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn append(user: &str) -> AppendRequest {
    AppendRequest {
        user_id: user.as_bytes().to_vec(),
        payload: b"p".to_vec(),
        client_message_id: None,
    }
}

fn read(user: &str) -> ReadRequest {
    ReadRequest {
        user_id: user.as_bytes().to_vec(),
        from_seq: 0,
        limit: 10,
    }
}

fn erase(user: &str) -> EraseRequest {
    EraseRequest {
        user_id: user.as_bytes().to_vec(),
        block_new: false,
        delete_subject_conversations: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(args(dir.path(), true)).await;

    // No token, wrong token: unauthenticated, on every service.
    for token in [None, Some("not-a-token")] {
        let mut c = server.store(token).await;
        assert_eq!(
            c.append(append("u")).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            c.read(read("u")).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            c.erase(erase("u")).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let stream = c.append_stream(tokio_stream::iter(vec![append("u")])).await;
        let code = match stream {
            Err(s) => s.code(),
            Ok(r) => r.into_inner().message().await.unwrap_err().code(),
        };
        assert_eq!(code, Code::Unauthenticated);
        let mut a = server.admin(token).await;
        assert_eq!(
            a.purge(PurgeRequest {}).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    // Least privilege.
    let mut appender = server.store(Some(APPENDER)).await;
    let mut reader = server.store(Some(READER)).await;
    let mut eraser = server.store(Some(ERASER)).await;
    appender.append(append("u")).await.unwrap();
    assert_eq!(
        appender.read(read("u")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        appender.erase(erase("u")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        reader.append(append("u")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let err = reader.erase(erase("u")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a reader cannot erase");
    // The reader's failed erase changed nothing.
    let mut s = reader.read(read("u")).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().seq, 1);
    let mut a = server.admin(Some(READER)).await;
    assert_eq!(
        a.purge(PurgeRequest {}).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    assert_eq!(
        eraser
            .erase(erase("u"))
            .await
            .unwrap()
            .into_inner()
            .messages_erased,
        1
    );
    let mut admin = server.admin(Some(ADMIN)).await;
    assert!(
        admin
            .purge(PurgeRequest {})
            .await
            .unwrap()
            .into_inner()
            .complete
    );

    // Backups and the erasure journal are for the admin role only.
    let mut a = server.admin(Some(READER)).await;
    assert_eq!(
        a.backup(BackupRequest {}).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        a.erasure_journal(ErasureJournalRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut s = admin
        .erasure_journal(ErasureJournalRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = s.message().await.unwrap() {
        bytes.extend_from_slice(&c.data);
    }
    let journal = shredstore::backup::Journal::decode(&bytes).unwrap();
    assert_eq!(journal.users.len(), 1, "u's erasure");
    let mut s = admin.backup(BackupRequest {}).await.unwrap().into_inner();
    let file = dir.path().join("b.shredbak");
    let mut bytes = Vec::new();
    while let Some(c) = s.message().await.unwrap() {
        assert!(c.data.len() <= 1 << 20);
        bytes.extend_from_slice(&c.data);
    }
    std::fs::write(&file, &bytes).unwrap();
    let m = shredstore::backup::verify_file(&file).unwrap();
    assert_eq!(m.users, 0, "u was erased");
    server.stop().await;
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    other_ca: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap()
        .pem();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap()
        .pem();
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Pki {
        ca,
        server_cert,
        server_key: server_key.serialize_pem(),
        client_cert,
        client_key: client_key.serialize_pem(),
        other_ca: other.self_signed(&other_key).unwrap().pem(),
    }
}

async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<StoreClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(StoreClient::new(ch))
}

fn write_pki(
    dir: &std::path::Path,
    p: &Pki,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (c, k, ca) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    );
    std::fs::write(&c, &p.server_cert).unwrap();
    std::fs::write(&k, &p.server_key).unwrap();
    std::fs::write(&ca, &p.ca).unwrap();
    (c, k, ca)
}

async fn works(c: Result<StoreClient<Channel>, tonic::transport::Error>) -> bool {
    match c {
        Ok(mut c) => c.append(append("tls-user")).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_trusting_clients_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let (cert, key, _) = write_pki(dir.path(), &p);
    let mut a = args(dir.path(), false);
    a.tls_cert = Some(cert);
    a.tls_key = Some(key);
    let server = TestServer::start(a).await;
    assert!(
        works(tls_client(server.addr, &p.ca, None).await).await,
        "trusting client"
    );
    assert!(
        !works(tls_client(server.addr, &p.other_ca, None).await).await,
        "untrusted CA"
    );
    // A plaintext client gets no service.
    let plain = async {
        let ch = Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .ok()?;
        StoreClient::new(ch).append(append("x")).await.ok()
    };
    let plain = tokio::time::timeout(std::time::Duration::from_secs(10), plain).await;
    let served_plaintext = matches!(plain, Ok(Some(_)));
    assert!(!served_plaintext, "plaintext call succeeded");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let (cert, key, ca) = write_pki(dir.path(), &p);
    let mut a = args(dir.path(), false);
    a.tls_cert = Some(cert);
    a.tls_key = Some(key);
    a.tls_client_ca = Some(ca);
    let server = TestServer::start(a).await;
    assert!(
        !works(tls_client(server.addr, &p.ca, None).await).await,
        "no client cert accepted"
    );
    assert!(
        works(tls_client(server.addr, &p.ca, Some((&p.client_cert, &p.client_key))).await).await,
        "client cert refused"
    );
    server.stop().await;
}

//! In-process gRPC server for the grpc_* tests: a real tonic server on
//! 127.0.0.1:0 and real tonic clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use shredstore::server::proto::admin_client::AdminClient;
use shredstore::server::proto::store_client::StoreClient;
use shredstore::server::{ServeArgs, Server, ServerError, hash_token};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const ROOT: [u8; 32] = [0x24; 32];

/// Tokens every authenticated test server accepts.
pub const APPENDER: &str = "tok-appender";
pub const READER: &str = "tok-reader";
pub const ERASER: &str = "tok-eraser";
pub const ADMIN: &str = "tok-admin";

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

/// Writes the root key and tokens files into `dir` and returns serve flags
/// for a server on 127.0.0.1:0 with its data in `dir/data`.
pub fn args(dir: &Path, auth: bool) -> ServeArgs {
    let key = dir.join("root.key");
    std::fs::write(&key, ROOT).unwrap();
    let mut a = ServeArgs {
        data_dir: Some(dir.join("data")),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        root_key_file: Some(key),
        purge_interval_secs: Some(3600),
        ..Default::default()
    };
    if auth {
        let tokens = dir.join("tokens.toml");
        let entry = |name: &str, tok: &str, roles: &str| {
            format!(
                "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [{roles}]\n",
                hash_token(tok)
            )
        };
        let text = [
            entry("appender", APPENDER, "\"append\""),
            entry("reader", READER, "\"read\""),
            entry("eraser", ERASER, "\"erase\", \"read\""),
            entry("admin", ADMIN, "\"admin\", \"append\", \"read\", \"erase\""),
        ]
        .concat();
        std::fs::write(&tokens, text).unwrap();
        a.tokens_file = Some(tokens);
    } else {
        a.insecure_no_auth = true;
    }
    a
}

impl TestServer {
    pub async fn start(args: ServeArgs) -> TestServer {
        let config = args.resolve().expect("valid config");
        let data_dir = config.data_dir.clone();
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let metrics = server.metrics_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            metrics,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn store(&self, token: Option<&'static str>) -> StoreClientT {
        StoreClient::with_interceptor(self.channel().await, Bearer(token))
    }

    pub async fn admin(&self, token: Option<&'static str>) -> AdminClientT {
        AdminClient::with_interceptor(self.channel().await, Bearer(token))
    }

    /// Graceful shutdown; returns once the store is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct Bearer(pub Option<&'static str>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(req)
    }
}

/// A Conversations client with a bearer token.
/// The clients the test server hands out, with a bearer token.
pub type StoreClientT = StoreClient<InterceptedService<Channel, Bearer>>;
pub type AdminClientT = AdminClient<InterceptedService<Channel, Bearer>>;
pub type ConversationsClientT =
    shredstore::server::proto::conversations_client::ConversationsClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >;

impl TestServer {
    pub async fn conversations(&self, token: Option<&'static str>) -> ConversationsClientT {
        shredstore::server::proto::conversations_client::ConversationsClient::with_interceptor(
            self.channel().await,
            Bearer(token),
        )
    }
}

//! The gRPC server (tonic): the `shredstore.v1` Store and Admin services,
//! health and reflection, bearer-token auth, TLS, metrics and graceful
//! shutdown. The only module that knows about tonic and prost; protobuf types
//! are converted at this edge and errors mapped to `Status` in [`status`].

mod admin_service;
mod auth;
mod calls;
mod config;
mod conversation_service;
mod convert;
mod gate;
mod metrics;
mod store_service;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use auth::{Auth, AuthFailure, Caller, Role, hash_token};
pub use config::{
    EngineChoice, PREVIOUS_ROOT_KEY_ENV, ROOT_KEY_ENV, RootKeySource, ServeArgs, ServerConfig,
    dev_key_path,
};
pub use metrics::Metrics;

use crate::{Error, Options, Store};

/// Generated protobuf and gRPC code of `proto/shredstore/v1/store.proto`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "generated code"
)]
pub mod proto {
    tonic::include_proto!("shredstore.v1");

    /// Encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/shredstore_descriptor.bin"));
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Invalid settings.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed to open or close.
    #[error("store: {0}")]
    Store(#[from] Error),
    /// Binding or other I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Maps a store error to a gRPC status. The one place that decides codes;
/// messages carry no user ids or payloads.
pub fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(a) => Status::invalid_argument(a.to_string()),
        Error::Blocked
        | Error::IdempotencyConflict
        | Error::Restricted { .. }
        | Error::LegalHold
        | Error::RequestClosed
        | Error::Unsupported { .. } => Status::failed_precondition(e.to_string()),
        Error::NoSuchMessage | Error::NoSuchRequest => Status::not_found(e.to_string()),
        Error::Decrypt | Error::Corrupt(_) => Status::data_loss(e.to_string()),
        Error::Poisoned => Status::unavailable(e.to_string()),
        // A lost race with another front end (retry) or a cluster that did
        // not answer: both are worth retrying.
        Error::Conflict => Status::aborted(e.to_string()),
        Error::JetStream(_) => Status::unavailable(e.to_string()),
        Error::SeqExhausted => Status::resource_exhausted(e.to_string()),
        Error::Backup(
            crate::BackupError::Busy
            | crate::BackupError::RotationInProgress
            | crate::BackupError::InMemory,
        ) => Status::failed_precondition(e.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            Status::internal("internal storage error")
        }
    }
}

/// `options` on the engine `choice` names.
fn with_engine(options: Options, choice: &config::EngineChoice) -> Result<Options, ServerError> {
    match choice {
        config::EngineChoice::RocksDb => Ok(options),
        #[cfg(feature = "jetstream")]
        config::EngineChoice::JetStream {
            urls,
            creds,
            tls_ca,
            partitions,
        } => {
            let mut js = crate::JetStreamOptions::new(urls.clone()).partitions(*partitions);
            if let Some(c) = creds {
                js = js.creds(c.clone());
            }
            if let Some(ca) = tls_ca {
                js = js.tls_ca(ca.clone());
            }
            Ok(options.jetstream(js))
        }
        #[cfg(not(feature = "jetstream"))]
        config::EngineChoice::JetStream { .. } => Err(ServerError::Config(
            "this build has no jetstream engine (cargo feature `jetstream`)".into(),
        )),
    }
}

/// A bound, not yet serving, server.
pub struct Server {
    store: Arc<Store>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<ServerTlsConfig>,
    /// AppendStream requests processed together; the other limits are the store's.
    stream_window: usize,
}

impl Server {
    /// Opens the store and binds the listeners described by `config`.
    ///
    /// # Errors
    /// Bad settings, a store that fails to open (wrong root key...), an
    /// address in use.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let cfg = config.clone();
        let store = tokio::task::spawn_blocking(move || -> Result<Store, ServerError> {
            let root_key = cfg.root_key.load()?;
            let mut options = Options::new(&cfg.data_dir, root_key);
            if let Some(previous) = &cfg.previous_root_key {
                options = options.previous_root_key(previous.load()?);
            }
            let options = options
                .durability(cfg.durability)
                .max_payload(cfg.max_payload)
                .max_read_limit(cfg.max_read_limit)
                .purge_interval(Some(cfg.purge_interval))
                .retention(cfg.retention)
                .erasure_due(cfg.erasure_due)
                .block_cache_bytes(cfg.block_cache_bytes)
                .write_buffer_bytes(cfg.write_buffer_bytes)
                .key_cache_entries(cfg.key_cache_entries);
            let options = with_engine(options, &cfg.engine)?;
            tracing::info!(budget = %options.memory_budget(), "store memory budget");
            Ok(Store::open(options)?)
        })
        .await
        .map_err(|e| ServerError::Config(format!("store open task failed: {e}")))??;
        Self::bind_with_store(store, &config).await
    }

    /// Binds the listeners of `config` around an already open store (used by
    /// tests and embedders that build their own `Options`).
    ///
    /// # Errors
    /// Bad TLS or tokens files, an address in use.
    pub async fn bind_with_store(
        store: Store,
        config: &ServerConfig,
    ) -> Result<Server, ServerError> {
        let auth = match (&config.tokens_file, config.insecure_no_auth) {
            (Some(_), true) => {
                return Err(ServerError::Config(
                    "tokens_file and insecure_no_auth contradict each other; choose one".into(),
                ));
            }
            (None, false) => {
                return Err(ServerError::Config(
                    "no tokens file given; set insecure_no_auth for local development".into(),
                ));
            }
            (Some(path), false) => Auth::from_file(path)?,
            (None, true) => {
                tracing::warn!(
                    "AUTHENTICATION DISABLED (--insecure-no-auth): every caller may read and erase any user. Development only"
                );
                Auth::insecure()
            }
        };
        let tls = match &config.tls {
            Some((cert, key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p)
                        .map_err(|e| ServerError::Config(format!("TLS file {}: {e}", p.display())))
                };
                let mut tls =
                    ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                if let Some(ca) = &config.tls_client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
                }
                Some(tls)
            }
            None => None,
        };
        if tls.is_none() && !config.listen.ip().is_loopback() {
            if !config.plaintext_remote {
                return Err(ServerError::Config(format!(
                    "refusing plaintext gRPC on the non-loopback address {}: tokens and messages \
                     would cross the network unencrypted. Give --tls-cert/--tls-key, or \
                     --plaintext-remote if TLS is terminated in front of this server",
                    config.listen
                )));
            }
            tracing::warn!(
                listen = %config.listen,
                "serving plaintext gRPC on a non-loopback address (--plaintext-remote): TLS must be terminated in front of it"
            );
        }
        let listener = TcpListener::bind(config.listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        Ok(Server {
            store: Arc::new(store),
            auth: Arc::new(auth),
            metrics: Arc::new(Metrics::default()),
            listener,
            metrics_listener,
            tls,
            stream_window: config.max_stream_in_flight,
        })
    }

    /// The gRPC address actually bound (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metrics address actually bound, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// calls finish, syncs the WAL and closes the store.
    ///
    /// # Errors
    /// A transport failure, or a failed final WAL sync.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        use proto::admin_server::AdminServer;
        use proto::conversations_server::ConversationsServer;
        use proto::store_server::StoreServer;
        type ConvServer = ConversationsServer<conversation_service::ConversationService>;

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<StoreServer<store_service::StoreService>>()
            .await;
        health_reporter
            .set_serving::<AdminServer<admin_service::AdminService>>()
            .await;
        health_reporter.set_serving::<ConvServer>().await;
        // Reflection v1 and v1alpha: many clients (grpcurl before 1.9,
        // grpcui, Postman, Evans) speak only v1alpha. Each lists both.
        let reflection_builder = || {
            tonic_reflection::server::Builder::configure()
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
        };
        let reflection = reflection_builder()
            .build_v1()
            .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;
        let reflection_alpha = reflection_builder()
            .build_v1alpha()
            .map_err(|e| ServerError::Config(format!("reflection: {e}")))?;

        let store_svc = store_service::StoreService::new(
            Arc::clone(&self.store),
            Arc::clone(&self.auth),
            Arc::clone(&self.metrics),
            self.stream_window,
        );
        let conv_svc = conversation_service::ConversationService::new(
            Arc::clone(&self.store),
            Arc::clone(&self.auth),
            Arc::clone(&self.metrics),
            self.stream_window,
        );
        // Turns true on the shutdown signal: live change-feed tails end.
        let (fired_tx, mut fired_rx) = tokio::sync::watch::channel(false);
        let admin_svc = admin_service::AdminService::new(
            Arc::clone(&self.store),
            Arc::clone(&self.auth),
            Arc::clone(&self.metrics),
            fired_rx.clone(),
        );
        let metrics_task = self.metrics_listener.map(|l| {
            tokio::spawn(metrics::serve(
                l,
                Arc::clone(&self.metrics),
                Arc::clone(&self.store),
                Arc::clone(&self.auth),
            ))
        });

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        // Not gRPC (method, content-type) or no valid token: refused before
        // any body is read.
        let mut builder = builder.layer(gate::GateLayer {
            auth: Arc::clone(&self.auth),
        });
        // TCP_NODELAY: without it, Nagle's algorithm and delayed ACKs hold a
        // small response (a Read stream's end) for ~40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        // On the signal: report NOT_SERVING, stop accepting, let in-flight calls
        // finish for at most SHUTDOWN_GRACE, then close what is left.
        let reporter = health_reporter.clone();
        let signal = async move {
            shutdown.await;
            reporter
                .set_not_serving::<StoreServer<store_service::StoreService>>()
                .await;
            reporter
                .set_not_serving::<AdminServer<admin_service::AdminService>>()
                .await;
            reporter.set_not_serving::<ConvServer>().await;
            let _ = fired_tx.send(true);
        };
        let grace = async move {
            if fired_rx.wait_for(|fired| *fired).await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let serving =
            builder
                .add_service(health_service)
                .add_service(reflection)
                .add_service(reflection_alpha)
                .add_service(StoreServer::new(store_svc).max_decoding_message_size(
                    self.store.limits().max_payload.saturating_add(4096),
                ))
                .add_service(AdminServer::new(admin_svc))
                .add_service(
                    ConversationsServer::new(conv_svc).max_decoding_message_size(
                        self.store.limits().max_payload.saturating_add(4096),
                    ),
                )
                .serve_with_incoming_shutdown(incoming, signal);
        let result = tokio::select! {
            r = serving => r,
            () = grace => {
                tracing::warn!("shutdown grace period over; closing the remaining connections");
                Ok(())
            }
        };
        if let Some(t) = metrics_task {
            t.abort();
        }
        tracing::info!("gRPC server stopped; syncing and closing the store");
        let store = self.store;
        let synced = tokio::task::spawn_blocking(move || {
            let r = store.sync();
            // Other handles (a finishing read) may still hold the store; it
            // closes when the last one drops.
            drop(store);
            r
        })
        .await
        .map_err(|e| ServerError::Config(format!("close task failed: {e}")))?;
        result?;
        synced?;
        Ok(())
    }
}

/// How long in-flight calls may run after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// while the server is still starting is not lost (nor fatal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = handlers;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int.take()) => {},
                () = wait(term.take()) => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received");
    }
}

//! Connecting to the server (TLS, bearer token) or opening the embedded
//! store: the targets the workers send their requests to.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use super::{LoadConfig, LoadError};
use crate::server::proto::admin_client::AdminClient;
use crate::server::proto::conversations_client::ConversationsClient;
use crate::server::proto::store_client::StoreClient;

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response message accepted (a Read streams one message per frame).
const MAX_DECODING: usize = 64 << 20;

/// A Store client that sends the configured bearer token.
pub type Client = StoreClient<InterceptedService<Channel, Bearer>>;

/// Connects one Store client with `config`'s address, TLS settings and
/// token (what `shredstore export` uses).
///
/// # Errors
/// Bad settings, or a server that cannot be reached.
pub async fn connect_client(config: &LoadConfig) -> Result<Client, LoadError> {
    let (ch, bearer) = connect_channel(config).await?;
    Ok(StoreClient::with_interceptor(ch, bearer).max_decoding_message_size(MAX_DECODING))
}

/// One connection with `config`'s settings, and its token.
async fn connect_channel(config: &LoadConfig) -> Result<(Channel, Bearer), LoadError> {
    let (ep, addr) = endpoint(config)?;
    let bearer = bearer(config)?;
    let ch = ep.connect().await.map_err(|e| LoadError::Connect {
        addr,
        reason: chain(&e),
    })?;
    Ok((ch, bearer))
}

/// An Admin client that sends the configured bearer token.
pub type AdminGrpc = AdminClient<InterceptedService<Channel, Bearer>>;

/// Connects one Admin client with `config`'s address, TLS settings and
/// token (what `shredstore backup`, `journal` and `restore --journal`
/// use).
///
/// # Errors
/// Bad settings, or a server that cannot be reached.
pub async fn connect_admin(config: &LoadConfig) -> Result<AdminGrpc, LoadError> {
    let (ch, bearer) = connect_channel(config).await?;
    Ok(AdminClient::with_interceptor(ch, bearer).max_decoding_message_size(MAX_DECODING))
}

/// A Conversations client that sends the configured bearer token.
pub(super) type ConversationsGrpc = ConversationsClient<InterceptedService<Channel, Bearer>>;

/// Where requests go: a server over gRPC (its Store and Conversations
/// services on one connection), or (`--embedded`) a store opened
/// in-process, called on the blocking pool as the server itself does.
#[derive(Clone)]
pub(super) enum Target {
    Grpc(Box<Grpc>),
    Embedded(Arc<crate::Store>),
}

/// The clients of one connection.
#[derive(Clone)]
pub(super) struct Grpc {
    pub(super) store: Client,
    pub(super) conversations: ConversationsGrpc,
}

/// Runs one store call for `user` on the blocking pool; errors become the
/// status code the server would have answered with.
pub(super) async fn embedded<T: Send + 'static>(
    store: &Arc<crate::Store>,
    user: Vec<u8>,
    call: impl FnOnce(&crate::Store, &crate::UserId) -> crate::Result<T> + Send + 'static,
) -> Result<T, &'static str> {
    on_pool(store, move |st| {
        let user = crate::UserId::new(user)?;
        call(st, &user)
    })
    .await
}

/// Runs one call on conversation `id` on the blocking pool, as
/// [`embedded`] does for a user.
pub(super) async fn embedded_conversation<T: Send + 'static>(
    store: &Arc<crate::Store>,
    id: Vec<u8>,
    call: impl FnOnce(&crate::Conversation<'_>) -> crate::Result<T> + Send + 'static,
) -> Result<T, &'static str> {
    on_pool(store, move |st| {
        let id = crate::ConversationId::new(id)?;
        call(&st.conversation(&id))
    })
    .await
}

async fn on_pool<T: Send + 'static>(
    store: &Arc<crate::Store>,
    call: impl FnOnce(&crate::Store) -> crate::Result<T> + Send + 'static,
) -> Result<T, &'static str> {
    let store = Arc::clone(store);
    let joined = tokio::task::spawn_blocking(move || call(&store)).await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(code_name(crate::server::status(e).code())),
        Err(_) => Err(code_name(Code::Internal)),
    }
}

/// The canonical name of a gRPC status code (`UNAVAILABLE`...), as used in
/// the report's error tables.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub(super) Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// An error and its sources on one line (tonic's transport errors say
/// little at the top level).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

pub(super) fn endpoint(config: &LoadConfig) -> Result<(Endpoint, String), LoadError> {
    let cfg = |m: String| LoadError::Config(m);
    let addr = if config.addr.contains("://") {
        config.addr.clone()
    } else if config.tls_ca.is_some() {
        format!("https://{}", config.addr)
    } else {
        format!("http://{}", config.addr)
    };
    let https = addr.starts_with("https://");
    if !https && !addr.starts_with("http://") {
        return Err(cfg(format!(
            "--addr {addr:?} must start with http:// or https://"
        )));
    }
    let mut ep = Endpoint::from_shared(addr.clone())
        .map_err(|e| cfg(format!("--addr {addr:?}: {}", chain(&e))))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let tls_options =
        config.tls_ca.is_some() || config.tls_domain.is_some() || config.tls_identity.is_some();
    if https {
        let Some(ca) = &config.tls_ca else {
            return Err(cfg(format!(
                "--addr {addr} is https but no --tls-ca was given (this build trusts no system roots)"
            )));
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| cfg(format!("{}: {e}", p.display())));
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(d) = &config.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        if let Some((cert, key)) = &config.tls_identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| cfg(format!("TLS settings: {}", chain(&e))))?;
    } else if tls_options {
        return Err(cfg(format!(
            "TLS options need an https:// --addr, not {addr}"
        )));
    }
    Ok((ep, addr))
}

pub(super) fn bearer(config: &LoadConfig) -> Result<Bearer, LoadError> {
    match &config.token {
        None => Ok(Bearer(None)),
        Some(t) => {
            let bad = || LoadError::Config("the token must be printable ASCII".to_owned());
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad());
            }
            let value = format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| bad())?;
            Ok(Bearer(Some(value)))
        }
    }
}

/// One target per worker, and a description of where requests go.
pub(super) async fn targets(config: &LoadConfig) -> Result<(Vec<Target>, String), LoadError> {
    let Some(dir) = config.embedded.clone() else {
        // A bad token is refused before any connection is made.
        let bearer = bearer(config)?;
        let (channels, addr) = connect(config).await?;
        let grpc = |ch: Channel| {
            Target::Grpc(Box::new(Grpc {
                store: StoreClient::with_interceptor(ch.clone(), bearer.clone())
                    .max_decoding_message_size(MAX_DECODING),
                conversations: ConversationsClient::with_interceptor(ch, bearer.clone())
                    .max_decoding_message_size(MAX_DECODING),
            }))
        };
        return Ok((channels.into_iter().map(grpc).collect(), addr));
    };
    let described = format!("embedded store in {}", dir.display());
    let store = tokio::task::spawn_blocking(move || -> Result<crate::Store, LoadError> {
        let fresh = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
        if !fresh {
            return Err(LoadError::Config(format!(
                "--embedded {}: the directory must be new or empty (each run uses a fresh root key)",
                dir.display()
            )));
        }
        let key = crate::RootKey::generate()
            .map_err(|e| LoadError::Internal(format!("root key: {e}")))?;
        crate::Store::open(
            crate::Options::new(&dir, key).durability(crate::Durability::Buffered),
        )
        .map_err(|e| LoadError::Config(format!("--embedded {}: {e}", dir.display())))
    })
    .await
    .map_err(|e| LoadError::Internal(format!("store open task: {e}")))??;
    let store = Arc::new(store);
    Ok((vec![Target::Embedded(store); config.concurrency], described))
}

/// One connection per worker (fails if any cannot be made), and the URL.
pub(super) async fn connect(config: &LoadConfig) -> Result<(Vec<Channel>, String), LoadError> {
    let (ep, addr) = endpoint(config)?;
    let failed = |e: tonic::transport::Error| LoadError::Connect {
        addr: addr.clone(),
        reason: chain(&e),
    };
    // One first, so an unreachable server fails fast with one message.
    let mut channels = vec![ep.connect().await.map_err(failed)?];
    let mut rest = tokio::task::JoinSet::new();
    for _ in 1..config.concurrency {
        let ep = ep.clone();
        rest.spawn(async move { ep.connect().await });
    }
    while let Some(r) = rest.join_next().await {
        let ch = r.map_err(|e| LoadError::Internal(format!("connect task: {e}")))?;
        channels.push(ch.map_err(failed)?);
    }
    Ok((channels, addr))
}

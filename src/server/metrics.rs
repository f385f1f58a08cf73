//! Prometheus metrics: request counts and latency per method, appends,
//! erasures, purges, store gauges refreshed at scrape time, and the
//! incident signals `docs/ops/alerts.yml` alerts on (authentication failures
//! by reason, permission refusals, integrity failures, a poisoned store,
//! purges that could not finish, overdue erasures). Labels carry method
//! names, status codes and reasons only, never user ids or tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::auth::Auth;
use crate::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCode {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodCode, Counter>,
    latency: Family<Method, Histogram>,
    appends: Counter,
    erasures: Counter,
    purges: Counter,
    users: Gauge,
    pending_erasures: Gauge,
    pending_redactions: Gauge,
    conversations: Gauge,
    pending_conversation_deletions: Gauge,
    last_change: Gauge,
    filter_drops: Gauge,
    bytes_on_disk: Gauge,
    auth_failures: Family<Reason, Counter>,
    permission_denied: Family<Method, Counter>,
    integrity_failures: Counter,
    purges_incomplete: Counter,
    poisoned: Gauge,
    overdue_erasures: Gauge,
    oldest_pending_erasure: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Root-key generation, rotation in progress, rewrapped, remaining,
    /// skipped.
    rotation: [Gauge; 5],
    /// Erasure requests open, and overdue.
    ledger: [Gauge; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shredstore");
        let requests = Family::<MethodCode, Counter>::default();
        let latency = Family::<Method, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let appends = Counter::default();
        let erasures = Counter::default();
        let purges = Counter::default();
        let users = Gauge::default();
        let pending_erasures = Gauge::default();
        let pending_redactions = Gauge::default();
        let conversations = Gauge::default();
        let pending_conversation_deletions = Gauge::default();
        let last_change = Gauge::default();
        let filter_drops = Gauge::default();
        let bytes_on_disk = Gauge::default();
        let auth_failures = Family::<Reason, Counter>::default();
        let permission_denied = Family::<Method, Counter>::default();
        let integrity_failures = Counter::default();
        let purges_incomplete = Counter::default();
        let poisoned = Gauge::default();
        let overdue_erasures = Gauge::default();
        let oldest_pending_erasure = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let rotation: [Gauge; 5] = Default::default();
        let ledger: [Gauge; 2] = Default::default();
        for (g, (name, help)) in ledger.iter().zip([
            (
                "erasure_requests_open",
                "Erasure requests not yet done or cancelled (pending or waiting for a legal hold)",
            ),
            (
                "erasure_requests_overdue",
                "Open erasure requests past their due date (GDPR Art. 12(3): one month)",
            ),
        ]) {
            registry.register(name, help, g.clone());
        }
        for (g, (name, help)) in rotation.iter().zip([
            (
                "root_key_generation",
                "Generation of the root key the store runs under (the new key's during a rotation)",
            ),
            (
                "root_key_rotation_in_progress",
                "1 while a root-key rotation is rewrapping key records",
            ),
            (
                "root_key_rotation_rewrapped",
                "Key records the rotation in progress has rewrapped",
            ),
            (
                "root_key_rotation_remaining",
                "Estimate of the key records the rotation in progress has still to rewrap",
            ),
            (
                "root_key_rotation_skipped",
                "Key records a rotation could not rewrap since start (damaged, unreadable under any key)",
            ),
        ]) {
            registry.register(name, help, g.clone());
        }
        registry.register(
            "auth_failures",
            "Calls refused for a missing, malformed or unknown bearer token, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "permission_denied",
            "Calls refused because the token lacks the role, by method",
            permission_denied.clone(),
        );
        registry.register(
            "integrity_failures",
            "Decrypt and corruption errors (damaged or tampered records)",
            integrity_failures.clone(),
        );
        registry.register(
            "purges_incomplete",
            "Purges that could not confirm every pending erasure physical",
            purges_incomplete.clone(),
        );
        registry.register(
            "store_poisoned",
            "1 once a write or sync failed: writes are refused until restart",
            poisoned.clone(),
        );
        registry.register(
            "overdue_erasures",
            "Erasures pending for longer than the purge interval",
            overdue_erasures.clone(),
        );
        registry.register(
            "oldest_pending_erasure_seconds",
            "Age of the oldest erasure not yet physical (0 if none)",
            oldest_pending_erasure.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        registry.register(
            "grpc_latency_seconds",
            "gRPC request latency",
            latency.clone(),
        );
        registry.register("appended_messages", "Messages appended", appends.clone());
        registry.register("erasures", "Users erased", erasures.clone());
        registry.register("purges", "Purges run through the Admin API", purges.clone());
        registry.register("users", "Users with a live key", users.clone());
        registry.register(
            "pending_erasures",
            "Erasures not yet physical",
            pending_erasures.clone(),
        );
        registry.register(
            "pending_redactions",
            "Users with redactions not yet physical",
            pending_redactions.clone(),
        );
        registry.register(
            "conversations",
            "Conversations with a live key",
            conversations.clone(),
        );
        registry.register(
            "pending_conversation_deletions",
            "Conversation deletions not yet physical",
            pending_conversation_deletions.clone(),
        );
        registry.register(
            "change_feed_last",
            "Number of the newest change on the change feed (Admin.Changes)",
            last_change.clone(),
        );
        registry.register(
            "compaction_filter_drops",
            "Records dropped by the compaction filter since start",
            filter_drops.clone(),
        );
        registry.register(
            "bytes_on_disk",
            "Bytes in the data directory",
            bytes_on_disk.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            appends,
            erasures,
            purges,
            users,
            pending_erasures,
            pending_redactions,
            conversations,
            pending_conversation_deletions,
            last_change,
            filter_drops,
            bytes_on_disk,
            auth_failures,
            permission_denied,
            integrity_failures,
            purges_incomplete,
            poisoned,
            overdue_erasures,
            oldest_pending_erasure,
            rotation,
            ledger,
        }
    }
}

/// Raises a counter to `total` (a count the store keeps since open).
fn raise_to(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, method: &'static str, started: Instant, code: tonic::Code) {
        self.requests
            .get_or_create(&MethodCode {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&Method { method })
            .observe(started.elapsed().as_secs_f64());
        if code == tonic::Code::PermissionDenied {
            self.permission_denied
                .get_or_create(&Method { method })
                .inc();
        }
    }

    /// Records one finished request from its result.
    pub fn observe_result<T>(
        &self,
        method: &'static str,
        started: Instant,
        r: &Result<T, tonic::Status>,
    ) {
        let code = r
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        self.observe(method, started, code);
    }

    /// Counts appended messages.
    pub fn appended(&self, n: u64) {
        self.appends.inc_by(n);
    }

    /// Counts an erasure.
    pub fn erased(&self) {
        self.erasures.inc();
    }

    /// Counts a purge.
    pub fn purged(&self) {
        self.purges.inc();
    }

    /// The exposition text, after refreshing the store gauges and the
    /// authentication counters.
    pub fn render(&self, store: &Store, auth: &Auth) -> String {
        if let Ok(s) = store.stats() {
            self.users.set(to_i64(s.users));
            self.pending_erasures.set(to_i64(s.pending_erasures));
            self.pending_redactions.set(to_i64(s.pending_redactions));
            self.conversations.set(to_i64(s.conversations));
            self.pending_conversation_deletions
                .set(to_i64(s.pending_conversation_deletions));
            self.last_change.set(to_i64(s.last_change));
            self.filter_drops.set(to_i64(s.filter_drops));
            self.bytes_on_disk.set(to_i64(s.bytes_on_disk));
            raise_to(&self.integrity_failures, s.integrity_failures);
            raise_to(&self.purges_incomplete, s.purges_incomplete);
            self.poisoned.set(i64::from(s.poisoned));
            self.overdue_erasures.set(to_i64(s.overdue_erasures));
            self.oldest_pending_erasure
                .set(s.oldest_pending_erasure_ms as f64 / 1000.0);
            for (g, v) in self.rotation.iter().zip([
                u64::from(s.root_key_generation),
                u64::from(s.rotation_in_progress),
                s.rotation_rewrapped,
                s.rotation_remaining_estimate,
                s.rotation_skipped,
            ]) {
                g.set(to_i64(v));
            }
            for (g, v) in self
                .ledger
                .iter()
                .zip([s.erasure_requests_open, s.erasure_requests_overdue])
            {
                g.set(to_i64(v));
            }
        }
        for (reason, n) in auth.failures() {
            raise_to(
                &self.auth_failures.get_or_create(&Reason {
                    reason: reason.name(),
                }),
                n,
            );
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    auth: Arc<Auth>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // E.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, store, auth) = (Arc::clone(&metrics), Arc::clone(&store), Arc::clone(&auth));
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, store, auth) =
                        (Arc::clone(&metrics), Arc::clone(&store), Arc::clone(&auth));
                    async move {
                        if req.uri().path() != "/metrics" {
                            let mut r =
                                Response::new(Full::new(Bytes::from_static(b"not found\n")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            return Ok::<_, std::convert::Infallible>(r);
                        }
                        let body =
                            tokio::task::spawn_blocking(move || metrics.render(&store, &auth))
                                .await
                                .unwrap_or_default();
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        if let Ok(v) = "text/plain; version=0.0.4; charset=utf-8".parse() {
                            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                        }
                        Ok(r)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// Binds the metrics listener.
///
/// # Errors
/// If the address can't be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

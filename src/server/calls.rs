//! What the Store and Admin services share: running store calls on the
//! blocking pool (the async runtime never blocks), role checks that audit
//! their refusals, the admin override of restricted reads, bounded sends to
//! slow clients, and audit log lines.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::auth::{Caller, Role};
use super::status;
use crate::{Access, AuditOp, AuditOutcome, Store, UserId};

/// How long a server stream waits for a client to take its next message
/// before it gives up on the call (its resources are freed; a page-wise
/// Read or Export pins no file meanwhile, but a stalled client must not
/// hold a task forever either).
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `item`, waiting at most [`SEND_TIMEOUT`] for room. `false` if the
/// client went away or did not read in time.
pub(super) async fn send_bounded<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    item: Result<T, Status>,
) -> bool {
    match tx.send_timeout(item, SEND_TIMEOUT).await {
        Ok(()) => true,
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            tracing::warn!(
                timeout_s = SEND_TIMEOUT.as_secs(),
                "client stopped reading; stream abandoned"
            );
            false
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
    }
}

pub(super) const READ_PAGE: usize = 64;

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Runs `f` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("worker task failed"))?
}

/// Checks that `caller` has `role`. A refusal is `PERMISSION_DENIED`; for a
/// rights operation (`op` set) it also goes on the audit trail as `refused`,
/// naming the token but no user (the request is not even decoded).
pub(super) async fn require(
    store: &Arc<Store>,
    caller: &Caller,
    role: Role,
    op: Option<AuditOp>,
) -> Result<(), Status> {
    let Err(denied) = caller.require(role) else {
        return Ok(());
    };
    if let Some(op) = op {
        tracing::warn!(
            target: "shredstore::audit",
            actor = %caller.name(), op = op.name(), outcome = "refused", code = ?denied.code()
        );
        let store = Arc::clone(store);
        let actor = caller.name().to_owned();
        let recorded = blocking(move || {
            store
                .record_audit(&actor, op, None, AuditOutcome::Refused)
                .map_err(status)
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(op = op.name(), code = ?e.code(), "could not record a refused call");
        }
    }
    Err(denied)
}

/// Records that `actor` read (or exported) a user whose reads are restricted,
/// through the admin override.
pub(super) fn record_restricted_read(
    store: &Store,
    actor: &str,
    user: &UserId,
) -> Result<(), Status> {
    let handle = store.handle(user);
    tracing::info!(
        target: "shredstore::audit",
        actor = %actor, op = "restricted_read", %handle, outcome = "ok"
    );
    store
        .record_audit(
            actor,
            AuditOp::RestrictedRead,
            Some(handle),
            AuditOutcome::Ok,
        )
        .map_err(status)
}

/// One page of a Read. A caller allowed to override (`may_override`) who
/// meets a user with restricted reads records the override once and reads
/// on with [`Access::Override`]; returns the access the page used.
pub(super) fn read_page(
    store: &Store,
    user: &UserId,
    from: u64,
    page: usize,
    access: Access,
    may_override: Option<&str>,
) -> Result<(Vec<crate::Message>, Access), Status> {
    match (store.read_with(user, from, page, access), may_override) {
        (Err(crate::Error::Restricted { .. }), Some(actor)) if access == Access::Subject => {
            record_restricted_read(store, actor, user)?;
            let msgs = store
                .read_with(user, from, page, Access::Override)
                .map_err(status)?;
            Ok((msgs, Access::Override))
        }
        (r, _) => r.map(|m| (m, access)).map_err(status),
    }
}

/// Logs a rights operation's outcome on the `shredstore::audit` target (the
/// store writes the audit record itself).
pub(super) fn log_outcome<T>(
    actor: &str,
    op: AuditOp,
    handle: Option<crate::Handle>,
    result: &Result<T, Status>,
) {
    let handle = handle.map(|h| h.to_string()).unwrap_or_default();
    match result {
        Ok(_) => tracing::info!(
            target: "shredstore::audit",
            actor = %actor, op = op.name(), %handle, outcome = "ok"
        ),
        Err(s) => tracing::warn!(
            target: "shredstore::audit",
            actor = %actor, op = op.name(), %handle, outcome = "error", code = ?s.code()
        ),
    }
}

/// An append that a stream answers: whether it was a duplicate (not
/// counted as appended).
pub(super) trait StreamAck {
    fn duplicate(&self) -> bool;
}

impl StreamAck for super::proto::AppendResponse {
    fn duplicate(&self) -> bool {
        self.duplicate
    }
}

impl StreamAck for super::proto::ConversationAppendResponse {
    fn duplicate(&self) -> bool {
        self.duplicate
    }
}

/// Drives an append stream (Store.AppendStream, Conversations.AppendStream)
/// in a task of its own: waits for one request, takes whatever else is
/// ready (up to `window`), validates up to the first bad request (which
/// ends the stream after the good ones), has `run` append the chunk (one
/// result per request, in order), and answers in request order; the first
/// failure ends the stream with its status. Returns the response stream.
pub(super) fn drive_append_stream<Req, Args, Resp, Fut>(
    mut inbound: tonic::Streaming<Req>,
    window: usize,
    metrics: Arc<super::metrics::Metrics>,
    method: &'static str,
    started: std::time::Instant,
    validate: impl Fn(Req) -> Result<Args, Status> + Send + 'static,
    run: impl Fn(Vec<Args>) -> Fut + Send + 'static,
) -> BoxStream<Resp>
where
    Req: Send + 'static,
    Args: Send + 'static,
    Resp: StreamAck + Send + 'static,
    Fut: std::future::Future<Output = Vec<Option<Result<Resp, Status>>>> + Send,
{
    let (tx, rx) = mpsc::channel::<Result<Resp, Status>>(window);
    tokio::spawn(async move {
        let mut code = tonic::Code::Ok;
        'stream: loop {
            let first = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    code = s.code();
                    let _ = tx.send(Err(s)).await;
                    break;
                }
            };
            let mut raw = vec![first];
            let mut stream_error = None;
            while raw.len() < window {
                match tokio::time::timeout(Duration::ZERO, inbound.message()).await {
                    Ok(Ok(Some(m))) => raw.push(m),
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(s)) => {
                        stream_error = Some(s);
                        break;
                    }
                }
            }
            let mut chunk = Vec::with_capacity(raw.len());
            for r in raw {
                match validate(r) {
                    Ok(a) => chunk.push(a),
                    Err(s) => {
                        stream_error = Some(s);
                        break;
                    }
                }
            }
            for r in run(chunk).await {
                match r.unwrap_or_else(|| Err(Status::internal("append worker failed"))) {
                    Ok(resp) => {
                        if !resp.duplicate() {
                            metrics.appended(1);
                        }
                        if tx.send(Ok(resp)).await.is_err() {
                            code = tonic::Code::Cancelled;
                            break 'stream;
                        }
                    }
                    Err(s) => {
                        code = s.code();
                        let _ = tx.send(Err(s)).await;
                        break 'stream;
                    }
                }
            }
            if let Some(s) = stream_error {
                code = s.code();
                let _ = tx.send(Err(s)).await;
                break;
            }
        }
        metrics.observe(method, started, code);
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

//! `shredstore.v1.Admin`: Purge, Stats, VerifyReceipt, Audit and the
//! rights operations. Every call is audited, refusals included.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{Auth, Role};
use super::calls::{BoxStream, blocking, log_outcome, require, send_bounded};
use super::convert::{
    audit_to_proto, change_to_proto, erasure_request_to_proto, purge_status_to_proto,
    rights_to_proto,
};
use super::metrics::Metrics;
use super::proto::{
    self, AuditRequest, ChangesRequest, GetRightsRequest, GetRightsResponse, LiftLegalHoldRequest,
    LiftLegalHoldResponse, PurgeRequest, PurgeResponse, RestrictRequest, RestrictResponse,
    SetLegalHoldRequest, SetLegalHoldResponse, SetRetentionRequest, SetRetentionResponse,
    StatsRequest, StatsResponse, UnrestrictRequest, UnrestrictResponse, VerifyReceiptRequest,
    VerifyReceiptResponse,
};
use super::status;
use super::validate::{
    validate_audit, validate_get_rights, validate_lift_legal_hold, validate_receipt,
    validate_restrict, validate_set_legal_hold, validate_set_retention, validate_unrestrict,
};
use crate::{AuditOp, AuditOutcome, ChangeCursor, Store, UserId};

/// How long one wait of a live change-feed tail lasts before it checks that
/// its client is still there and the server is not shutting down.
const TAIL_POLL: Duration = Duration::from_millis(500);

/// Largest chunk of a streamed file (backup, journal).
const FILE_CHUNK: usize = 1 << 20;

/// A `Write` that sends what is written, in chunks of [`FILE_CHUNK`], to a
/// response stream (from the blocking pool; it waits while the client is
/// slow). Fails once the client has gone.
struct ChunkWriter<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    buf: Vec<u8>,
    wrap: fn(Vec<u8>) -> T,
}

impl<T> ChunkWriter<T> {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(FILE_CHUNK));
        self.tx.blocking_send(Ok((self.wrap)(data))).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl<T> Write for ChunkWriter<T> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(FILE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FILE_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A response stream of the file `produce` writes, on the blocking pool;
/// an error ends the stream with its status.
fn stream_file<T: Send + 'static>(
    produce: impl FnOnce(&mut dyn Write) -> crate::Result<()> + Send + 'static,
    wrap: fn(Vec<u8>) -> T,
) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(4);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(FILE_CHUNK),
            wrap,
        };
        let r = produce(&mut w).and_then(|()| w.flush().map_err(crate::Error::Io));
        if let Err(e) = r {
            let gone =
                matches!(&e, crate::Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe);
            if gone {
                tracing::info!("a streamed file's client went away");
            } else {
                let _ = err_tx.blocking_send(Err(status(e)));
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// `shredstore.v1.Admin`.
pub struct AdminService {
    store: Arc<Store>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    /// Turns true when the server begins shutting down (live tails end).
    shutdown: watch::Receiver<bool>,
}

impl AdminService {
    pub(crate) fn new(
        store: Arc<Store>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AdminService {
            store,
            auth,
            metrics,
            shutdown,
        }
    }

    /// An admin rights call: checks the admin role (a refusal is audited as
    /// `op`, if set), validates the request into a user and arguments, runs
    /// `call` on the blocking pool (the store audits it) and returns the
    /// user's rights state in the method's response.
    async fn rights_call<R, A, T>(
        &self,
        method: &'static str,
        request: Request<R>,
        op: Option<AuditOp>,
        validate: impl FnOnce(R) -> Result<(UserId, A), Status> + Send,
        call: impl FnOnce(&Store, &UserId, A, &str) -> crate::Result<crate::RightsState>
        + Send
        + 'static,
    ) -> Result<Response<T>, Status>
    where
        R: Send,
        A: Send + 'static,
        T: From<proto::RightsState>,
    {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, op).await?;
            let actor = caller.name().to_owned();
            let (user, args) = validate(request.into_inner())?;
            let handle = self.store.handle(&user);
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || call(&store, &user, args, &who).map_err(status)).await;
            if let Some(op) = op {
                log_outcome(&actor, op, Some(handle), &result);
            }
            Ok(Response::new(T::from(rights_to_proto(&result?))))
        }
        .await;
        self.metrics.observe_result(method, started, &r);
        r
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn purge(
        &self,
        request: Request<PurgeRequest>,
    ) -> Result<Response<PurgeResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(AuditOp::Purge)).await?;
            let actor = caller.name().to_owned();
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || store.purge_as(&who).map_err(status)).await;
            match &result {
                Ok(p) => tracing::info!(
                    target: "shredstore::audit",
                    actor = %actor, op = "purge", erasures_purged = p.erasures_purged,
                    redactions_purged = p.redactions_purged, complete = p.complete, outcome = "ok"
                ),
                Err(s) => tracing::warn!(
                    target: "shredstore::audit",
                    actor = %actor, op = "purge", outcome = "error", code = ?s.code()
                ),
            }
            let p = result?;
            self.metrics.purged();
            Ok(Response::new(PurgeResponse {
                erasures_purged: p.erasures_purged as u64,
                complete: p.complete,
                duration_ms: u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
                redactions_purged: p.redactions_purged as u64,
                conversations_purged: p.conversations_purged as u64,
            }))
        }
        .await;
        self.metrics.observe_result("Purge", started, &r);
        r
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(AuditOp::Stats)).await?;
            let actor = caller.name().to_owned();
            tracing::info!(target: "shredstore::audit", actor = %actor, op = "stats", outcome = "ok");
            // Counters concern no one's data: logged, not recorded in the
            // trail (monitoring polls it); a refusal is recorded.
            let store = Arc::clone(&self.store);
            let s = blocking(move || store.stats().map_err(status)).await?;
            Ok(Response::new(StatsResponse {
                users: s.users,
                messages_estimate: s.messages_estimate,
                pending_erasures: s.pending_erasures,
                pending_redactions: s.pending_redactions,
                conversations: s.conversations,
                pending_conversation_deletions: s.pending_conversation_deletions,
                last_change: s.last_change,
                root_key_generation: s.root_key_generation,
                rotation_in_progress: s.rotation_in_progress,
                rotation_rewrapped: s.rotation_rewrapped,
                rotation_remaining_estimate: s.rotation_remaining_estimate,
                rotation_skipped: s.rotation_skipped,
                erasure_requests_open: s.erasure_requests_open,
                erasure_requests_overdue: s.erasure_requests_overdue,
                purges_done: s.purges_done,
                filter_drops: s.filter_drops,
                bytes_on_disk: s.bytes_on_disk,
                oldest_pending_erasure_ms: s.oldest_pending_erasure_ms,
                overdue_erasures: s.overdue_erasures,
                purges_incomplete: s.purges_incomplete,
                integrity_failures: s.integrity_failures,
                poisoned: s.poisoned,
            }))
        }
        .await;
        self.metrics.observe_result("Stats", started, &r);
        r
    }

    async fn verify_receipt(
        &self,
        request: Request<VerifyReceiptRequest>,
    ) -> Result<Response<VerifyReceiptResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(
                &self.store,
                &caller,
                Role::Admin,
                Some(AuditOp::VerifyReceipt),
            )
            .await?;
            let actor = caller.name().to_owned();
            let receipt = validate_receipt(&request.into_inner())?;
            let store = Arc::clone(&self.store);
            let (valid, now) = blocking(move || {
                let valid = store.verify_receipt(&receipt);
                let now = match (valid, receipt.subject) {
                    (false, _) => None,
                    (true, crate::ReceiptSubject::User) => {
                        store.purge_status(&receipt.handle).map_err(status)?
                    }
                    (true, crate::ReceiptSubject::Conversation) => store
                        .conversation_purge_status(&receipt.handle)
                        .map_err(status)?,
                };
                store
                    .record_audit(
                        &actor,
                        AuditOp::VerifyReceipt,
                        Some(receipt.handle),
                        AuditOutcome::Ok,
                    )
                    .map_err(status)?;
                Ok((valid, now))
            })
            .await?;
            Ok(Response::new(VerifyReceiptResponse {
                valid,
                current_purge_status: now
                    .map_or(proto::PurgeStatus::Unspecified, purge_status_to_proto)
                    as i32,
            }))
        }
        .await;
        self.metrics.observe_result("VerifyReceipt", started, &r);
        r
    }

    type AuditStream = BoxStream<proto::AuditResponse>;

    type ChangesStream = BoxStream<proto::Change>;

    async fn changes(
        &self,
        request: Request<ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(AuditOp::Changes)).await?;
            let actor = caller.name().to_owned();
            let req = request.into_inner();
            let mut cursor = ChangeCursor::from_bytes(&req.cursor)
                .map_err(|e| Status::invalid_argument(format!("cursor: {e}")))?;
            let stop_at_end = req.stop_at_end;
            let store = Arc::clone(&self.store);
            let page = store.limits().max_read_limit;
            // The first page, read before the stream opens: a cursor ahead of
            // the feed, or not of this store's, is refused as the call's
            // status. Then the read is audited, so the trail shows who read
            // the feed.
            let s = Arc::clone(&store);
            let first = blocking(move || {
                let first = s.changes(cursor, page).map_err(|e| match e {
                    crate::Error::InvalidArgument(a) => {
                        Status::invalid_argument(format!("cursor: {a}"))
                    }
                    other => status(other),
                })?;
                s.record_audit(&actor, AuditOp::Changes, None, AuditOutcome::Ok)
                    .map_err(status)?;
                Ok(first)
            })
            .await?;
            let (tx, rx) = mpsc::channel(16);
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let mut first = Some(first);
                loop {
                    let got = match first.take() {
                        Some(p) => Ok(p),
                        None => {
                            let s = Arc::clone(&store);
                            blocking(move || s.changes(cursor, page).map_err(status)).await
                        }
                    };
                    let entries = match got {
                        Ok(p) => p,
                        Err(e) => {
                            send_bounded(&tx, Err(e)).await;
                            return;
                        }
                    };
                    for e in &entries {
                        if !send_bounded(&tx, Ok(change_to_proto(e))).await {
                            return;
                        }
                        cursor = e.cursor;
                    }
                    if entries.len() >= page {
                        continue;
                    }
                    if stop_at_end {
                        return;
                    }
                    // The live tail: wait for the next commit, checking now
                    // and then that the client and the server are still up.
                    loop {
                        if tx.is_closed() {
                            return;
                        }
                        if *shutdown.borrow() {
                            send_bounded(
                                &tx,
                                Err(Status::unavailable(
                                    "server shutting down; resume from the last cursor",
                                )),
                            )
                            .await;
                            return;
                        }
                        let s = Arc::clone(&store);
                        let more =
                            blocking(move || Ok(s.wait_for_changes(cursor, TAIL_POLL))).await;
                        if more.unwrap_or(false) {
                            break;
                        }
                    }
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ChangesStream
            ))
        }
        .await;
        self.metrics.observe_result("Changes", started, &r);
        r
    }

    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<Self::AuditStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(AuditOp::Audit)).await?;
            let actor = caller.name().to_owned();
            let (from_ms, to_ms) = validate_audit(&request.into_inner())?;
            let store = Arc::clone(&self.store);
            let page = store.limits().max_read_limit;
            // Audited first, so the trail shows who read it.
            let s = Arc::clone(&store);
            blocking(move || {
                s.record_audit(&actor, AuditOp::Audit, None, AuditOutcome::Ok)
                    .map_err(status)
            })
            .await?;
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                let mut cursor = None;
                loop {
                    let s = Arc::clone(&store);
                    let got = blocking(move || {
                        s.audit_page(from_ms, to_ms, cursor, page).map_err(status)
                    })
                    .await;
                    let (records, next) = match got {
                        Ok(p) => p,
                        Err(e) => {
                            send_bounded(&tx, Err(e)).await;
                            return;
                        }
                    };
                    for rec in &records {
                        if !send_bounded(&tx, Ok(audit_to_proto(rec))).await {
                            return;
                        }
                    }
                    match next {
                        Some(c) => cursor = Some(c),
                        None => return,
                    }
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::AuditStream
            ))
        }
        .await;
        self.metrics.observe_result("Audit", started, &r);
        r
    }

    type BackupStream = BoxStream<proto::BackupResponse>;

    async fn backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(AuditOp::Backup)).await?;
            let actor = caller.name().to_owned();
            let store = Arc::clone(&self.store);
            Ok(Response::new(stream_file(
                move |out| crate::backup::write_backup(&store, out, &actor).map(|_| ()),
                |data| proto::BackupResponse { data },
            ) as Self::BackupStream))
        }
        .await;
        self.metrics.observe_result("Backup", started, &r);
        r
    }

    type ErasureJournalStream = BoxStream<proto::ErasureJournalResponse>;

    async fn erasure_journal(
        &self,
        request: Request<proto::ErasureJournalRequest>,
    ) -> Result<Response<Self::ErasureJournalStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(
                &self.store,
                &caller,
                Role::Admin,
                Some(AuditOp::ErasureJournal),
            )
            .await?;
            let actor = caller.name().to_owned();
            let s = Arc::clone(&self.store);
            // Read (and audited) before the stream opens: a failure is the
            // call's status.
            let bytes = blocking(move || {
                let journal = s.erasure_journal().map_err(status)?;
                s.record_audit(&actor, AuditOp::ErasureJournal, None, AuditOutcome::Ok)
                    .map_err(status)?;
                let mut bytes = Vec::new();
                journal.encode(&mut bytes);
                Ok(bytes)
            })
            .await?;
            Ok(Response::new(stream_file(
                move |out| {
                    out.write_all(&bytes)?;
                    out.flush()?;
                    Ok(())
                },
                |data| proto::ErasureJournalResponse { data },
            ) as Self::ErasureJournalStream))
        }
        .await;
        self.metrics.observe_result("ErasureJournal", started, &r);
        r
    }

    async fn request_erasure(
        &self,
        request: Request<proto::RequestErasureRequest>,
    ) -> Result<Response<proto::RequestErasureResponse>, Status> {
        let started = Instant::now();
        let op = AuditOp::ErasureRequested;
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(op)).await?;
            let actor = caller.name().to_owned();
            let req = request.into_inner();
            let user = super::validate::user_id(req.user_id)?;
            let handle = self.store.handle(&user);
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || {
                store
                    .request_erasure_as(&user, req.grace_ms, req.delete_subject_conversations, &who)
                    .map_err(status)
            })
            .await;
            log_outcome(&actor, op, Some(handle), &result);
            let done = result?;
            Ok(Response::new(proto::RequestErasureResponse {
                request: Some(erasure_request_to_proto(&done.request)),
                existing: done.existing,
            }))
        }
        .await;
        self.metrics.observe_result("RequestErasure", started, &r);
        r
    }

    async fn cancel_erasure(
        &self,
        request: Request<proto::CancelErasureRequest>,
    ) -> Result<Response<proto::CancelErasureResponse>, Status> {
        let started = Instant::now();
        let op = AuditOp::ErasureRequestCancelled;
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(op)).await?;
            let actor = caller.name().to_owned();
            let id: crate::RequestId = match request.into_inner().request_id.parse() {
                Ok(id) => id,
                Err(e) => {
                    let store = Arc::clone(&self.store);
                    let who = actor.clone();
                    // The refusal's synced write off the async workers.
                    let _ = blocking(move || {
                        store
                            .record_audit(&who, op, None, AuditOutcome::Refused)
                            .map_err(status)
                    })
                    .await;
                    return Err(Status::invalid_argument(format!("request_id: {e}")));
                }
            };
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || store.cancel_erasure_as(id, &who).map_err(status)).await;
            let handle = result.as_ref().ok().map(|r| r.handle);
            log_outcome(&actor, op, handle, &result);
            Ok(Response::new(proto::CancelErasureResponse {
                request: Some(erasure_request_to_proto(&result?)),
            }))
        }
        .await;
        self.metrics.observe_result("CancelErasure", started, &r);
        r
    }

    type ErasureRequestsStream = BoxStream<proto::ErasureRequestsResponse>;

    async fn erasure_requests(
        &self,
        request: Request<proto::ErasureRequestsRequest>,
    ) -> Result<Response<Self::ErasureRequestsStream>, Status> {
        let started = Instant::now();
        let op = AuditOp::ErasureRequests;
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Admin, Some(op)).await?;
            let actor = caller.name().to_owned();
            let state = match proto::ErasureRequestState::try_from(request.into_inner().state) {
                Ok(proto::ErasureRequestState::Unspecified) => None,
                Ok(proto::ErasureRequestState::Pending) => {
                    Some(crate::ErasureRequestState::Pending)
                }
                Ok(proto::ErasureRequestState::WaitingForHold) => {
                    Some(crate::ErasureRequestState::WaitingForHold)
                }
                Ok(proto::ErasureRequestState::Done) => Some(crate::ErasureRequestState::Done),
                Ok(proto::ErasureRequestState::Cancelled) => {
                    Some(crate::ErasureRequestState::Cancelled)
                }
                Err(_) => return Err(Status::invalid_argument("state: unknown value")),
            };
            let store = Arc::clone(&self.store);
            let list = blocking(move || {
                let list = store.erasure_requests(state).map_err(status)?;
                store
                    .record_audit(&actor, op, None, AuditOutcome::Ok)
                    .map_err(status)?;
                Ok(list)
            })
            .await?;
            let items: Vec<Result<proto::ErasureRequestsResponse, Status>> = list
                .iter()
                .map(|r| {
                    Ok(proto::ErasureRequestsResponse {
                        request: Some(erasure_request_to_proto(r)),
                    })
                })
                .collect();
            Ok(Response::new(
                Box::pin(tokio_stream::iter(items)) as Self::ErasureRequestsStream
            ))
        }
        .await;
        self.metrics.observe_result("ErasureRequests", started, &r);
        r
    }

    async fn restrict(
        &self,
        request: Request<RestrictRequest>,
    ) -> Result<Response<RestrictResponse>, Status> {
        self.rights_call(
            "Restrict",
            request,
            Some(AuditOp::Restrict),
            |r| validate_restrict(r).map(|a| (a.user, a.modes)),
            |store, user, modes, actor| store.restrict_as(user, modes, actor),
        )
        .await
    }

    async fn unrestrict(
        &self,
        request: Request<UnrestrictRequest>,
    ) -> Result<Response<UnrestrictResponse>, Status> {
        self.rights_call(
            "Unrestrict",
            request,
            Some(AuditOp::Unrestrict),
            |r| validate_unrestrict(r).map(|a| (a.user, a.modes)),
            |store, user, modes, actor| store.unrestrict_as(user, modes, actor),
        )
        .await
    }

    async fn set_retention(
        &self,
        request: Request<SetRetentionRequest>,
    ) -> Result<Response<SetRetentionResponse>, Status> {
        self.rights_call(
            "SetRetention",
            request,
            Some(AuditOp::SetRetention),
            |r| validate_set_retention(r).map(|a| (a.user, a.retention)),
            |store, user, retention, actor| store.set_retention_as(user, retention, actor),
        )
        .await
    }

    async fn set_legal_hold(
        &self,
        request: Request<SetLegalHoldRequest>,
    ) -> Result<Response<SetLegalHoldResponse>, Status> {
        self.rights_call(
            "SetLegalHold",
            request,
            Some(AuditOp::SetLegalHold),
            |r| validate_set_legal_hold(r).map(|a| (a.user, (a.reason, a.until_ms))),
            |store, user, (reason, until_ms), actor| {
                store.set_legal_hold_as(user, &reason, until_ms, actor)
            },
        )
        .await
    }

    async fn lift_legal_hold(
        &self,
        request: Request<LiftLegalHoldRequest>,
    ) -> Result<Response<LiftLegalHoldResponse>, Status> {
        self.rights_call(
            "LiftLegalHold",
            request,
            Some(AuditOp::LiftLegalHold),
            |r| validate_lift_legal_hold(r).map(|u| (u, ())),
            |store, user, (), actor| store.lift_legal_hold_as(user, actor),
        )
        .await
    }

    async fn get_rights(
        &self,
        request: Request<GetRightsRequest>,
    ) -> Result<Response<GetRightsResponse>, Status> {
        // A read of a user's state, audited like every admin call.
        self.rights_call(
            "GetRights",
            request,
            Some(AuditOp::GetRights),
            |r| validate_get_rights(r).map(|u| (u, ())),
            |store, user, (), actor| {
                let state = store.rights_state(user)?;
                store.record_audit(
                    actor,
                    AuditOp::GetRights,
                    Some(store.handle(user)),
                    AuditOutcome::Ok,
                )?;
                Ok(state)
            },
        )
        .await
    }
}

//! The Store and Admin service implementations. The synchronous store runs on
//! tokio's blocking pool; the async runtime never blocks.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Auth, Caller, Role};
use super::metrics::Metrics;
use super::proto::{
    self, AppendRequest, AppendResponse, AuditRequest, EraseRequest, EraseResponse, ExportRequest,
    PurgeRequest, PurgeResponse, ReadRequest, RecordConsentRequest, RecordConsentResponse,
    RedactRequest, RedactResponse, RestrictRequest, SetLegalHoldRequest, SetRetentionRequest,
    StatsRequest, StatsResponse, UserRequest, VerifyReceiptResponse,
};
use super::status;
use super::validate::{
    AppendArgs, RequestLimits, validate_append, validate_audit, validate_erase, validate_export,
    validate_read, validate_receipt, validate_record_consent, validate_redact, validate_restrict,
    validate_set_legal_hold, validate_set_retention, validate_unrestrict, validate_user_request,
};
use crate::{Access, AuditOp, AuditOutcome, Store, UserId};

/// Messages a Read fetches per blocking call.
const READ_PAGE: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("worker task failed"))?
}

/// Checks that `caller` has `role`. A refusal is `PERMISSION_DENIED`; for a
/// rights operation (`op` set) it also goes on the audit trail as `refused`,
/// naming the token but no user (the request is not even decoded).
async fn require(
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
fn record_restricted_read(store: &Store, actor: &str, user: &UserId) -> Result<(), Status> {
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
fn read_page(
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

fn message_to_proto(m: crate::Message) -> proto::Message {
    proto::Message {
        seq: m.seq,
        timestamp_ms: m.timestamp_ms,
        payload: m.payload,
        redaction: m.redaction.map(|r| proto::Redaction {
            redacted_at_ms: r.redacted_at_ms,
            reason: r.reason,
        }),
    }
}

impl AppendArgs {
    fn run(&self, store: &Store) -> Result<AppendResponse, Status> {
        match &self.client_message_id {
            Some(id) => {
                let r = store
                    .append_idempotent(&self.user, id.as_bytes(), &self.payload)
                    .map_err(status)?;
                Ok(AppendResponse {
                    seq: r.appended.seq,
                    timestamp_ms: r.appended.timestamp_ms,
                    duplicate: r.duplicate,
                })
            }
            None => {
                let a = store.append(&self.user, &self.payload).map_err(status)?;
                Ok(AppendResponse {
                    seq: a.seq,
                    timestamp_ms: a.timestamp_ms,
                    duplicate: false,
                })
            }
        }
    }
}

/// `shredstore.v1.Store`.
pub struct StoreService {
    store: Arc<Store>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    stream_window: usize,
}

impl StoreService {
    pub(crate) fn new(
        store: Arc<Store>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        stream_window: usize,
    ) -> Self {
        StoreService {
            store,
            auth,
            metrics,
            stream_window,
        }
    }

    fn done<T>(&self, method: &'static str, started: Instant, r: &Result<T, Status>) {
        self.metrics.observe_result(method, started, r);
    }
}

/// Appends a chunk of stream requests: per user in request order, users in
/// parallel on the blocking pool, consecutive plain appends of one user in one
/// atomic batch. Returns one result per request; processing of a user stops at
/// its first failure.
async fn append_chunk(
    store: &Arc<Store>,
    chunk: Vec<AppendArgs>,
) -> Vec<Option<Result<AppendResponse, Status>>> {
    let n = chunk.len();
    let mut groups: HashMap<Vec<u8>, Vec<(usize, AppendArgs)>> = HashMap::new();
    for (i, a) in chunk.into_iter().enumerate() {
        groups
            .entry(a.user.as_bytes().to_vec())
            .or_default()
            .push((i, a));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, group) in groups {
        let store = Arc::clone(store);
        tasks.spawn_blocking(move || append_group(&store, group));
    }
    let mut results: Vec<Option<Result<AppendResponse, Status>>> = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(group) => {
                for (i, r) in group {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            }
            Err(_) => {
                // A worker died: whatever it did not report fails below.
            }
        }
    }
    results
}

fn append_group(
    store: &Store,
    group: Vec<(usize, AppendArgs)>,
) -> Vec<(usize, Result<AppendResponse, Status>)> {
    let mut out = Vec::with_capacity(group.len());
    let mut i = 0;
    while i < group.len() {
        if group[i].1.client_message_id.is_some() {
            let r = group[i].1.run(store);
            let failed = r.is_err();
            out.push((group[i].0, r));
            if failed {
                return out;
            }
            i += 1;
            continue;
        }
        // A run of plain appends of this user, within the store's batch
        // limits: one atomic batch.
        let limits = store.limits();
        let mut end = i;
        let mut bytes = 0usize;
        while end < group.len()
            && group[end].1.client_message_id.is_none()
            && end - i < limits.max_batch
            && (end == i || bytes + group[end].1.payload.len() <= limits.max_batch_bytes)
        {
            bytes += group[end].1.payload.len();
            end += 1;
        }
        let run = &group[i..end];
        let payloads: Vec<&[u8]> = run.iter().map(|(_, a)| a.payload.as_slice()).collect();
        match store.append_batch(&run[0].1.user, &payloads) {
            Ok(acks) => {
                for ((idx, _), a) in run.iter().zip(acks) {
                    out.push((
                        *idx,
                        Ok(AppendResponse {
                            seq: a.seq,
                            timestamp_ms: a.timestamp_ms,
                            duplicate: false,
                        }),
                    ));
                }
            }
            Err(e) => {
                out.push((run[0].0, Err(status(e))));
                return out;
            }
        }
        i = end;
    }
    out
}

#[tonic::async_trait]
impl proto::store_server::Store for StoreService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.auth.check(&request, Role::Append)?;
            let limits = RequestLimits::from(self.store.limits());
            let a = validate_append(request.into_inner(), &limits)?;
            let store = Arc::clone(&self.store);
            let resp = blocking(move || a.run(&store)).await?;
            if !resp.duplicate {
                self.metrics.appended(1);
            }
            Ok(Response::new(resp))
        }
        .await;
        self.done("Append", started, &r);
        r
    }

    type AppendStreamStream = BoxStream<AppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let started = Instant::now();
        if let Err(e) = self.auth.check(&request, Role::Append) {
            self.metrics.observe("AppendStream", started, e.code());
            return Err(e);
        }
        let mut inbound = request.into_inner();
        let window = self.stream_window;
        let (tx, rx) = mpsc::channel::<Result<AppendResponse, Status>>(window);
        let store = Arc::clone(&self.store);
        let metrics = Arc::clone(&self.metrics);
        let limits = RequestLimits::from(store.limits());
        tokio::spawn(async move {
            let mut code = tonic::Code::Ok;
            'stream: loop {
                // Wait for one request, then take whatever else is ready.
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
                // Validate up to the first bad request; it ends the stream.
                let mut chunk = Vec::with_capacity(raw.len());
                for r in raw {
                    match validate_append(r, &limits) {
                        Ok(a) => chunk.push(a),
                        Err(s) => {
                            stream_error = Some(s);
                            break;
                        }
                    }
                }
                let results = append_chunk(&store, chunk).await;
                for r in results {
                    let r = r.unwrap_or_else(|| Err(Status::internal("append worker failed")));
                    match r {
                        Ok(resp) => {
                            if !resp.duplicate {
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
            metrics.observe("AppendStream", started, code);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadStream = BoxStream<proto::Message>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            caller.require(Role::Read)?;
            // A token that also has the admin role may read a user whose
            // reads are restricted (audited once, when first needed).
            let may_override = caller.has(Role::Admin).then(|| caller.name().to_owned());
            let limits = RequestLimits::from(self.store.limits());
            let req = validate_read(request.into_inner(), &limits)?;
            let (user, limit) = (req.user, req.limit);
            let (tx, rx) = mpsc::channel(READ_PAGE);
            let store = Arc::clone(&self.store);
            // Read in short pages on the blocking pool and send from async code:
            // a slow client holds neither a blocking thread nor a RocksDB
            // iterator (which would pin files and delay purges), and each page
            // starts after any erase that returned before it.
            tokio::spawn(async move {
                let mut from = req.from_seq;
                let mut remaining = limit;
                let mut access = Access::Subject;
                while remaining > 0 {
                    let page = remaining.min(READ_PAGE);
                    let (s, u, o) = (Arc::clone(&store), user.clone(), may_override.clone());
                    let batch =
                        blocking(move || read_page(&s, &u, from, page, access, o.as_deref())).await;
                    let msgs = match batch {
                        Ok((m, used)) => {
                            access = used;
                            m
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let full = msgs.len() == page;
                    remaining -= msgs.len();
                    for m in msgs {
                        from = m.seq.saturating_add(1);
                        if tx.send(Ok(message_to_proto(m))).await.is_err() {
                            return;
                        }
                    }
                    if !full || from == u64::MAX {
                        return;
                    }
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ReadStream
            ))
        }
        .await;
        self.done("Read", started, &r);
        r
    }

    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<EraseResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Erase, Some(AuditOp::Erase)).await?;
            let actor = caller.name().to_owned();
            let req = validate_erase(request.into_inner())?;
            let options = req.options();
            let user = req.user;
            let handle = self.store.handle(&user);
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result =
                blocking(move || store.erase_as(&user, options, &who).map_err(status)).await;
            match &result {
                Ok(e) => tracing::info!(
                    target: "shredstore::audit",
                    actor = %actor, op = "erase", %handle, block_new = req.block_new,
                    messages_erased = e.messages_before, outcome = "ok"
                ),
                Err(s) => tracing::warn!(
                    target: "shredstore::audit",
                    actor = %actor, op = "erase", %handle, outcome = "error", code = ?s.code()
                ),
            }
            let e = result?;
            self.metrics.erased();
            Ok(Response::new(EraseResponse {
                messages_erased: e.messages_before,
                erased_at_ms: e.erased_at_ms,
                epoch: e.epoch,
                handle: e.handle.to_string(),
                receipt: Some(receipt_to_proto(&e.receipt)),
            }))
        }
        .await;
        self.done("Erase", started, &r);
        r
    }

    type ExportStream = BoxStream<proto::ExportRecord>;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Read, Some(AuditOp::Export)).await?;
            let may_override = caller.has(Role::Admin);
            let actor = caller.name().to_owned();
            let user = validate_export(request.into_inner())?;
            let (tx, rx) = mpsc::channel(READ_PAGE);
            let store = Arc::clone(&self.store);
            // One blocking task streams the whole export (an export is rare
            // and its manifest must describe exactly what was sent); it stops
            // as soon as the client goes away.
            tokio::task::spawn_blocking(move || {
                // An admin-capable token exports a user with restricted reads
                // through the override, recorded first. (Restricted after this
                // check: the export is refused, never unaudited.)
                let access = if may_override {
                    let restricted = store
                        .rights_state(&user)
                        .map_err(status)
                        .map(|r| r.restriction.block_reads)
                        .and_then(|restricted| {
                            if restricted {
                                record_restricted_read(&store, &actor, &user)?;
                            }
                            Ok(restricted)
                        });
                    match restricted {
                        Ok(true) => Access::Override,
                        Ok(false) => Access::Subject,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                } else {
                    Access::Subject
                };
                let sent = store.export_with(&user, &actor, access, |m| {
                    let rec = proto::ExportRecord {
                        record: Some(proto::export_record::Record::Message(message_to_proto(m))),
                    };
                    tx.blocking_send(Ok(rec))
                        .map_err(|_| crate::Error::Io(std::io::ErrorKind::BrokenPipe.into()))
                });
                let last = match sent {
                    Ok(m) => Ok(proto::ExportRecord {
                        record: Some(proto::export_record::Record::Manifest(manifest_to_proto(
                            &m,
                        ))),
                    }),
                    Err(e) => Err(status(e)),
                };
                let _ = tx.blocking_send(last);
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ExportStream
            ))
        }
        .await;
        self.done("Export", started, &r);
        r
    }

    async fn redact(
        &self,
        request: Request<RedactRequest>,
    ) -> Result<Response<RedactResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, Role::Erase, Some(AuditOp::Redact)).await?;
            let actor = caller.name().to_owned();
            let req = validate_redact(request.into_inner())?;
            let handle = self.store.handle(&req.user);
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || {
                store
                    .redact_as(&req.user, req.seq, &req.reason, &who)
                    .map_err(status)
            })
            .await;
            log_outcome(&actor, AuditOp::Redact, Some(handle), &result);
            let d = result?;
            Ok(Response::new(RedactResponse {
                seq: d.seq,
                timestamp_ms: d.timestamp_ms,
                redacted_at_ms: d.redacted_at_ms,
                already_redacted: d.already_redacted,
            }))
        }
        .await;
        self.done("Redact", started, &r);
        r
    }

    async fn record_consent(
        &self,
        request: Request<RecordConsentRequest>,
    ) -> Result<Response<RecordConsentResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(
                &self.store,
                &caller,
                Role::Append,
                Some(AuditOp::RecordConsent),
            )
            .await?;
            let actor = caller.name().to_owned();
            let req = validate_record_consent(request.into_inner())?;
            let handle = self.store.handle(&req.user);
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result = blocking(move || {
                store
                    .record_consent_as(&req.user, &req.consent, &who)
                    .map_err(status)
            })
            .await;
            log_outcome(&actor, AuditOp::RecordConsent, Some(handle), &result);
            let e = result?;
            Ok(Response::new(RecordConsentResponse {
                index: e.index,
                recorded_at_ms: e.recorded_at_ms,
            }))
        }
        .await;
        self.done("RecordConsent", started, &r);
        r
    }
}

/// Logs a rights operation's outcome on the `shredstore::audit` target (the
/// store writes the audit record itself).
fn log_outcome<T>(
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

/// `shredstore.v1.Admin`.
pub struct AdminService {
    store: Arc<Store>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
}

impl AdminService {
    pub(crate) fn new(store: Arc<Store>, auth: Arc<Auth>, metrics: Arc<Metrics>) -> Self {
        AdminService {
            store,
            auth,
            metrics,
        }
    }

    /// An admin rights call: checks the admin role (a refusal is audited as
    /// `op`, if set), validates the request into a user and arguments, runs
    /// `call` on the blocking pool (the store audits it) and returns the
    /// user's rights state.
    async fn rights_call<R, A>(
        &self,
        method: &'static str,
        request: Request<R>,
        op: Option<AuditOp>,
        validate: impl FnOnce(R) -> Result<(UserId, A), Status> + Send,
        call: impl FnOnce(&Store, &UserId, A, &str) -> crate::Result<crate::RightsState>
        + Send
        + 'static,
    ) -> Result<Response<proto::RightsState>, Status>
    where
        R: Send,
        A: Send + 'static,
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
            Ok(Response::new(rights_to_proto(&result?)))
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
            let actor = self.auth.check(&request, Role::Admin)?;
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
            let actor = self.auth.check(&request, Role::Admin)?;
            tracing::info!(target: "shredstore::audit", actor = %actor, op = "stats", outcome = "ok");
            let store = Arc::clone(&self.store);
            let s = blocking(move || store.stats().map_err(status)).await?;
            Ok(Response::new(StatsResponse {
                users: s.users,
                messages_estimate: s.messages_estimate,
                pending_erasures: s.pending_erasures,
                pending_redactions: s.pending_redactions,
                purges_done: s.purges_done,
                filter_drops: s.filter_drops,
                bytes_on_disk: s.bytes_on_disk,
            }))
        }
        .await;
        self.metrics.observe_result("Stats", started, &r);
        r
    }

    async fn verify_receipt(
        &self,
        request: Request<proto::ErasureReceipt>,
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
                let now = if valid {
                    store.purge_status(&receipt.handle).map_err(status)?
                } else {
                    None
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

    type AuditStream = BoxStream<proto::AuditRecord>;

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
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    for rec in &records {
                        if tx.send(Ok(audit_to_proto(rec))).await.is_err() {
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

    async fn restrict(
        &self,
        request: Request<RestrictRequest>,
    ) -> Result<Response<proto::RightsState>, Status> {
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
        request: Request<RestrictRequest>,
    ) -> Result<Response<proto::RightsState>, Status> {
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
    ) -> Result<Response<proto::RightsState>, Status> {
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
    ) -> Result<Response<proto::RightsState>, Status> {
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
        request: Request<UserRequest>,
    ) -> Result<Response<proto::RightsState>, Status> {
        self.rights_call(
            "LiftLegalHold",
            request,
            Some(AuditOp::LiftLegalHold),
            |r| validate_user_request(r).map(|u| (u, ())),
            |store, user, (), actor| store.lift_legal_hold_as(user, actor),
        )
        .await
    }

    async fn get_rights(
        &self,
        request: Request<UserRequest>,
    ) -> Result<Response<proto::RightsState>, Status> {
        // Reading the state is not a rights operation: neither it nor its
        // refusal is audited.
        self.rights_call(
            "GetRights",
            request,
            None,
            |r| validate_user_request(r).map(|u| (u, ())),
            |store, user, (), _| store.rights_state(user),
        )
        .await
    }
}

fn purge_status_to_proto(p: crate::PurgeStatus) -> proto::PurgeStatus {
    match p {
        crate::PurgeStatus::Pending => proto::PurgeStatus::Pending,
        crate::PurgeStatus::Purged => proto::PurgeStatus::Purged,
    }
}

fn receipt_to_proto(r: &crate::ErasureReceipt) -> proto::ErasureReceipt {
    proto::ErasureReceipt {
        handle: r.handle.as_bytes().to_vec(),
        epoch: r.epoch,
        erased_at_ms: r.erased_at_ms,
        messages_erased: r.messages_erased,
        purge_status: purge_status_to_proto(r.purge_status) as i32,
        mac: r.mac.to_vec(),
    }
}

fn audit_to_proto(r: &crate::AuditRecord) -> proto::AuditRecord {
    proto::AuditRecord {
        time_ms: r.time_ms,
        actor: r.actor.clone(),
        operation: r.op.name().to_owned(),
        handle: r.handle.map(|h| h.to_vec()).unwrap_or_default(),
        outcome: r.outcome.name().to_owned(),
    }
}

fn legal_basis_to_proto(b: crate::LegalBasis) -> proto::LegalBasis {
    match b {
        crate::LegalBasis::Consent => proto::LegalBasis::Consent,
        crate::LegalBasis::Contract => proto::LegalBasis::Contract,
        crate::LegalBasis::LegalObligation => proto::LegalBasis::LegalObligation,
        crate::LegalBasis::VitalInterests => proto::LegalBasis::VitalInterests,
        crate::LegalBasis::PublicTask => proto::LegalBasis::PublicTask,
        crate::LegalBasis::LegitimateInterests => proto::LegalBasis::LegitimateInterests,
    }
}

fn rights_to_proto(r: &crate::RightsState) -> proto::RightsState {
    let (retention, retention_ms) = match r.retention {
        crate::Retention::StoreDefault => (proto::RetentionMode::StoreDefault, 0),
        crate::Retention::Forever => (proto::RetentionMode::Forever, 0),
        crate::Retention::After { ms } => (proto::RetentionMode::After, ms),
    };
    let hold = r.legal_hold.as_ref();
    proto::RightsState {
        block_appends: r.restriction.block_appends,
        block_reads: r.restriction.block_reads,
        retention: retention as i32,
        retention_ms,
        effective_retention_ms: r.effective_retention_ms.unwrap_or(0),
        legal_hold: hold.is_some(),
        legal_hold_reason: hold.map(|h| h.reason.clone()).unwrap_or_default(),
        legal_hold_since_ms: hold.map_or(0, |h| h.since_ms),
        legal_hold_until_ms: hold.and_then(|h| h.until_ms).unwrap_or(0),
        expired_before_ms: r.expired_before_ms,
    }
}

fn consent_to_proto(e: &crate::ConsentEntry) -> proto::ConsentRecord {
    proto::ConsentRecord {
        index: e.index,
        recorded_at_ms: e.recorded_at_ms,
        purpose: e.consent.purpose.clone(),
        basis: legal_basis_to_proto(e.consent.basis) as i32,
        granted: e.consent.granted,
        given_at_ms: e.consent.given_at_ms,
    }
}

fn manifest_to_proto(m: &crate::ExportManifest) -> proto::ExportManifest {
    proto::ExportManifest {
        handle: m.handle.to_string(),
        message_count: m.message_count,
        first_seq: m.first_seq.unwrap_or(0),
        last_seq: m.last_seq.unwrap_or(0),
        key_epoch: m.key_epoch.unwrap_or(0),
        key_created_ms: m.key_created_ms.unwrap_or(0),
        erased_at_ms: m.erasures_ms.clone(),
        appends_blocked: m.appends_blocked,
        redacted_count: m.redacted_count,
        rights: Some(rights_to_proto(&m.rights)),
        consents: m.consents.iter().map(consent_to_proto).collect(),
    }
}

//! `shredstore.v1.Store`: Append, AppendStream, Read, Erase, Export,
//! Redact, RecordConsent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Auth, Role};
use super::calls::{
    BoxStream, READ_PAGE, blocking, drive_append_stream, log_outcome, read_page,
    record_restricted_read, require, send_bounded,
};
use super::convert::{
    authored_to_proto, manifest_to_proto, message_to_proto, read_response, receipt_to_proto,
};
use super::metrics::Metrics;
use super::proto::{
    self, AppendRequest, AppendResponse, EraseRequest, EraseResponse, ExportRequest, ReadRequest,
    RecordConsentRequest, RecordConsentResponse, RedactRequest, RedactResponse,
};
use super::status;
use super::validate::{
    AppendArgs, RequestLimits, validate_append, validate_erase, validate_export, validate_read,
    validate_record_consent, validate_redact,
};
use crate::{Access, AuditOp, Durability, ExportCursor, Store, UserId};

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
    let mut results: Vec<Option<Result<AppendResponse, Status>>> = (0..n).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    if store.durability() == Durability::Buffered {
        // A buffered append never waits for the disk: the whole chunk runs
        // in one blocking task, one thread hand-off instead of one per user
        // (with Sync durability each user's write waits for its fsync, so
        // users run in parallel and share RocksDB's group commit).
        // A panic in one user's appends loses only that user's answers, as
        // with a task per user.
        let store = Arc::clone(store);
        tasks.spawn_blocking(move || {
            groups
                .into_values()
                .flat_map(|group| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        append_group(&store, group)
                    }))
                    .unwrap_or_default()
                })
                .collect::<Vec<_>>()
        });
    } else {
        for (_, group) in groups {
            let store = Arc::clone(store);
            tasks.spawn_blocking(move || append_group(&store, group));
        }
    }
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
        let store = Arc::clone(&self.store);
        let limits = RequestLimits::from(store.limits());
        Ok(Response::new(drive_append_stream(
            request.into_inner(),
            self.stream_window,
            Arc::clone(&self.metrics),
            "AppendStream",
            started,
            move |r| validate_append(r, &limits),
            move |chunk| {
                let store = Arc::clone(&store);
                async move { append_chunk(&store, chunk).await }
            },
        )))
    }

    type ReadStream = BoxStream<proto::ReadResponse>;

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
                            send_bounded(&tx, Err(e)).await;
                            return;
                        }
                    };
                    let full = msgs.len() == page;
                    remaining -= msgs.len();
                    for m in msgs {
                        from = m.seq.saturating_add(1);
                        if !send_bounded(&tx, Ok(read_response(m))).await {
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
                    messages_erased = e.messages_erased, outcome = "ok"
                ),
                Err(s) => tracing::warn!(
                    target: "shredstore::audit",
                    actor = %actor, op = "erase", %handle, outcome = "error", code = ?s.code()
                ),
            }
            let e = result?;
            self.metrics.erased();
            Ok(Response::new(EraseResponse {
                messages_erased: e.messages_erased,
                erased_at_ms: e.erased_at_ms,
                epoch: e.epoch,
                handle: e.handle.to_string(),
                receipt: Some(receipt_to_proto(&e.receipt)),
                conversation_receipts: e
                    .conversations_deleted
                    .iter()
                    .map(|d| receipt_to_proto(&d.receipt))
                    .collect(),
            }))
        }
        .await;
        self.done("Erase", started, &r);
        r
    }

    type ExportStream = BoxStream<proto::ExportResponse>;

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
            tokio::spawn(export_task(
                Arc::clone(&self.store),
                user,
                actor,
                may_override,
                tx,
            ));
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

/// Streams an export page by page: each page is read on the blocking pool
/// and sent from here, so a client that stops reading holds no thread and
/// pins no file; after `SEND_TIMEOUT` without progress the export is
/// abandoned and recorded as failed. The manifest describes exactly the
/// messages sent.
async fn export_task(
    store: Arc<Store>,
    user: UserId,
    actor: String,
    may_override: bool,
    tx: mpsc::Sender<Result<proto::ExportResponse, Status>>,
) {
    // An admin-capable token exports a user with restricted reads through
    // the override, recorded first. (Restricted after this check: the
    // export is refused, never unaudited.)
    let access = if may_override {
        let (s, u, a) = (Arc::clone(&store), user.clone(), actor.clone());
        let restricted = blocking(move || {
            let restricted = s.rights_state(&u).map_err(status)?.restriction.block_reads;
            if restricted {
                record_restricted_read(&s, &a, &u)?;
            }
            Ok(restricted)
        })
        .await;
        match restricted {
            Ok(true) => Access::Override,
            Ok(false) => Access::Subject,
            Err(e) => {
                send_bounded(&tx, Err(e)).await;
                return;
            }
        }
    } else {
        Access::Subject
    };
    let cursor = store.export_begin(&user, access);
    let Some((cursor, result)) = send_pages(
        &store,
        cursor,
        &tx,
        ExportCursor::is_done,
        |s, c| s.export_page(c, READ_PAGE),
        |m| proto::export_response::Record::Message(message_to_proto(m)),
    )
    .await
    else {
        return;
    };
    // Then what the user wrote in conversations, page by page the same way.
    let (cursor, result) = match result {
        Ok(()) => {
            let Some(sent) = send_pages(
                &store,
                cursor,
                &tx,
                ExportCursor::is_authored_done,
                |s, c| s.export_authored_page(c, READ_PAGE),
                |m| proto::export_response::Record::ConversationMessage(authored_to_proto(m)),
            )
            .await
            else {
                return;
            };
            sent
        }
        Err(e) => (cursor, Err(e)),
    };
    let client_gone = result.is_err() && tx.is_closed();
    let s = Arc::clone(&store);
    let ended = blocking(move || s.export_end(cursor, &actor, result).map_err(status)).await;
    if client_gone {
        return;
    }
    let last = ended.map(|m| proto::ExportResponse {
        record: Some(proto::export_response::Record::Manifest(manifest_to_proto(
            &m,
        ))),
    });
    send_bounded(&tx, last).await;
}

/// Sends an export's pages until `done`: each page is fetched on the
/// blocking pool (the cursor travels there and back) and its records sent
/// from here. Returns the cursor and how it ended (a failed page, or a
/// client that went away or stopped reading); `None` if a worker died
/// (the client was told).
async fn send_pages<T: Send + 'static>(
    store: &Arc<Store>,
    mut cursor: ExportCursor,
    tx: &mpsc::Sender<Result<proto::ExportResponse, Status>>,
    done: fn(&ExportCursor) -> bool,
    fetch: fn(&Store, &mut ExportCursor) -> crate::Result<Vec<T>>,
    record: fn(T) -> proto::export_response::Record,
) -> Option<(ExportCursor, crate::Result<()>)> {
    loop {
        if done(&cursor) {
            return Some((cursor, Ok(())));
        }
        let s = Arc::clone(store);
        let paged = tokio::task::spawn_blocking(move || {
            let page = fetch(&s, &mut cursor);
            (cursor, page)
        })
        .await;
        let page = match paged {
            Ok((c, page)) => {
                cursor = c;
                page
            }
            Err(_) => {
                send_bounded(tx, Err(Status::internal("worker task failed"))).await;
                return None;
            }
        };
        match page {
            Err(e) => return Some((cursor, Err(e))),
            Ok(items) => {
                for item in items {
                    let rec = proto::ExportResponse {
                        record: Some(record(item)),
                    };
                    if !send_bounded(tx, Ok(rec)).await {
                        let gone = crate::Error::Io(std::io::ErrorKind::BrokenPipe.into());
                        return Some((cursor, Err(gone)));
                    }
                }
            }
        }
    }
}

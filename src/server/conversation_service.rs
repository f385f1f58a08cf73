//! `shredstore.v1.Conversations`: Append, AppendStream, Read, Redact,
//! Delete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Auth, Role};
use super::calls::{
    BoxStream, READ_PAGE, blocking, drive_append_stream, log_outcome, require, send_bounded,
};
use super::convert::{conversation_item_to_proto, receipt_to_proto, rights_to_proto};
use super::metrics::Metrics;
use super::proto::{
    self, ConversationAppendRequest, ConversationAppendResponse, ConversationReadRequest,
    ConversationRedactRequest, ConversationRequest, ConversationsDeleteResponse,
    ConversationsRedactResponse,
};
use super::status;
use super::validate::{
    ConversationAppendArgs, RequestLimits, validate_conversation, validate_conversation_append,
    validate_conversation_read, validate_conversation_redact, validate_conversation_set_legal_hold,
    validate_conversation_set_retention, validate_conversation_set_subjects,
};
use crate::{AuditOp, Store};

impl ConversationAppendArgs {
    fn run(&self, store: &Store) -> Result<ConversationAppendResponse, Status> {
        let conv = store.conversation(&self.conversation);
        match &self.client_message_id {
            Some(id) => {
                let r = conv
                    .append_idempotent(&self.author, id.as_bytes(), &self.payload)
                    .map_err(status)?;
                Ok(ConversationAppendResponse {
                    seq: r.appended.seq,
                    timestamp_ms: r.appended.timestamp_ms,
                    duplicate: r.duplicate,
                })
            }
            None => {
                let a = conv.append(&self.author, &self.payload).map_err(status)?;
                Ok(ConversationAppendResponse {
                    seq: a.seq,
                    timestamp_ms: a.timestamp_ms,
                    duplicate: false,
                })
            }
        }
    }
}

type Results = Vec<Option<Result<ConversationAppendResponse, Status>>>;

/// Appends a chunk of stream requests: per conversation in request order,
/// conversations in parallel on the blocking pool, consecutive plain
/// appends by one author to one conversation in one atomic batch. Returns
/// one result per request; a conversation's processing stops at its first
/// failure.
async fn append_chunk(store: &Arc<Store>, chunk: Vec<ConversationAppendArgs>) -> Results {
    let n = chunk.len();
    let mut groups: HashMap<Vec<u8>, Vec<(usize, ConversationAppendArgs)>> = HashMap::new();
    for (i, a) in chunk.into_iter().enumerate() {
        groups
            .entry(a.conversation.as_bytes().to_vec())
            .or_default()
            .push((i, a));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, group) in groups {
        let store = Arc::clone(store);
        tasks.spawn_blocking(move || append_group(&store, group));
    }
    let mut results: Results = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        // A worker that died leaves its slots empty: they fail below.
        if let Ok(group) = done {
            for (i, r) in group {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
    }
    results
}

fn append_group(
    store: &Store,
    group: Vec<(usize, ConversationAppendArgs)>,
) -> Vec<(usize, Result<ConversationAppendResponse, Status>)> {
    let mut out = Vec::with_capacity(group.len());
    let limits = store.limits();
    let mut i = 0;
    while i < group.len() {
        let first = &group[i].1;
        if first.client_message_id.is_some() {
            let r = first.run(store);
            let failed = r.is_err();
            out.push((group[i].0, r));
            if failed {
                return out;
            }
            i += 1;
            continue;
        }
        // A run of plain appends by one author, within the batch limits.
        let mut end = i;
        let mut bytes = 0usize;
        while end < group.len()
            && group[end].1.client_message_id.is_none()
            && group[end].1.author == first.author
            && end - i < limits.max_batch
            && (end == i || bytes + group[end].1.payload.len() <= limits.max_batch_bytes)
        {
            bytes += group[end].1.payload.len();
            end += 1;
        }
        let run = &group[i..end];
        let payloads: Vec<&[u8]> = run.iter().map(|(_, a)| a.payload.as_slice()).collect();
        match store
            .conversation(&first.conversation)
            .append_batch(&first.author, &payloads)
        {
            Ok(acks) => {
                for ((idx, _), a) in run.iter().zip(acks) {
                    out.push((
                        *idx,
                        Ok(ConversationAppendResponse {
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

/// `shredstore.v1.Conversations`.
pub struct ConversationService {
    store: Arc<Store>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    stream_window: usize,
}

impl ConversationService {
    /// An audited call on one conversation: the role check (a refusal
    /// audited), validation, the store call on the blocking pool, its audit
    /// log line, and `respond` building the response.
    #[allow(clippy::too_many_arguments, reason = "each step of the call")]
    async fn audited_call<R, A, V, T>(
        &self,
        method: &'static str,
        request: Request<R>,
        role: Role,
        op: AuditOp,
        validate: impl FnOnce(R) -> Result<(crate::ConversationId, A), Status> + Send,
        call: impl FnOnce(&crate::Conversation<'_>, A, &str) -> crate::Result<V> + Send + 'static,
        respond: impl FnOnce(V) -> T + Send,
    ) -> Result<Response<T>, Status>
    where
        R: Send,
        A: Send + 'static,
        V: Send + 'static,
    {
        let started = Instant::now();
        let r = async {
            let caller = self.auth.caller(&request)?;
            require(&self.store, &caller, role, Some(op)).await?;
            let actor = caller.name().to_owned();
            let (id, args) = validate(request.into_inner())?;
            let handle = self.store.conversation(&id).handle();
            let store = Arc::clone(&self.store);
            let who = actor.clone();
            let result =
                blocking(move || call(&store.conversation(&id), args, &who).map_err(status)).await;
            log_outcome(&actor, op, Some(handle), &result);
            Ok(Response::new(respond(result?)))
        }
        .await;
        self.done(method, started, &r);
        r
    }

    /// A conversation rights call (admin role), answered with the state.
    async fn rights_call<R, A, T>(
        &self,
        method: &'static str,
        request: Request<R>,
        op: AuditOp,
        validate: impl FnOnce(R) -> Result<(crate::ConversationId, A), Status> + Send,
        call: impl FnOnce(&crate::Conversation<'_>, A, &str) -> crate::Result<crate::RightsState>
        + Send
        + 'static,
    ) -> Result<Response<T>, Status>
    where
        R: Send,
        A: Send + 'static,
        T: From<proto::RightsState> + Send,
    {
        self.audited_call(method, request, Role::Admin, op, validate, call, |r| {
            T::from(rights_to_proto(&r))
        })
        .await
    }

    pub(crate) fn new(
        store: Arc<Store>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        stream_window: usize,
    ) -> Self {
        ConversationService {
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

#[tonic::async_trait]
impl proto::conversations_server::Conversations for ConversationService {
    async fn append(
        &self,
        request: Request<ConversationAppendRequest>,
    ) -> Result<Response<ConversationAppendResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.auth.check(&request, Role::Append)?;
            let limits = RequestLimits::from(self.store.limits());
            let a = validate_conversation_append(request.into_inner(), &limits)?;
            let store = Arc::clone(&self.store);
            let resp = blocking(move || a.run(&store)).await?;
            if !resp.duplicate {
                self.metrics.appended(1);
            }
            Ok(Response::new(resp))
        }
        .await;
        self.done("ConversationAppend", started, &r);
        r
    }

    type AppendStreamStream = BoxStream<ConversationAppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<ConversationAppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let started = Instant::now();
        if let Err(e) = self.auth.check(&request, Role::Append) {
            self.metrics
                .observe("ConversationAppendStream", started, e.code());
            return Err(e);
        }
        let store = Arc::clone(&self.store);
        let limits = RequestLimits::from(store.limits());
        Ok(Response::new(drive_append_stream(
            request.into_inner(),
            self.stream_window,
            Arc::clone(&self.metrics),
            "ConversationAppendStream",
            started,
            move |r| validate_conversation_append(r, &limits),
            move |chunk| {
                let store = Arc::clone(&store);
                async move { append_chunk(&store, chunk).await }
            },
        )))
    }

    type ReadStream = BoxStream<proto::ConversationItem>;

    async fn read(
        &self,
        request: Request<ConversationReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let started = Instant::now();
        let r = async {
            self.auth.check(&request, Role::Read)?;
            let limits = RequestLimits::from(self.store.limits());
            let req = validate_conversation_read(request.into_inner(), &limits)?;
            let (tx, rx) = mpsc::channel(READ_PAGE);
            let store = Arc::clone(&self.store);
            // Pages on the blocking pool, sent from async code: a slow client
            // holds neither a thread nor a RocksDB cursor, and each page
            // starts after any erase or deletion that returned before it.
            tokio::spawn(async move {
                // Forward: the next seq wanted. Backward: the seq before
                // which to read (exclusive; u64::MAX: from the newest).
                let mut next = match (req.backward, req.from_seq) {
                    (false, from) => from,
                    (true, 0) => u64::MAX,
                    (true, from) => from.saturating_add(1),
                };
                let mut remaining = req.limit;
                while remaining > 0 {
                    let page = remaining.min(READ_PAGE);
                    let (s, id) = (Arc::clone(&store), req.conversation.clone());
                    let backward = req.backward;
                    let batch = blocking(move || {
                        let c = s.conversation(&id);
                        if backward {
                            c.read_back(next, page)
                        } else {
                            c.read(next, page)
                        }
                        .map_err(status)
                    })
                    .await;
                    let items = match batch {
                        Ok(items) => items,
                        Err(e) => {
                            send_bounded(&tx, Err(e)).await;
                            return;
                        }
                    };
                    let full = items.len() == page;
                    remaining -= items.len();
                    for item in items {
                        let seq = item.seq();
                        // Backward reads continue below the last seq sent.
                        next = if req.backward {
                            seq
                        } else {
                            seq.saturating_add(1)
                        };
                        if !send_bounded(&tx, Ok(conversation_item_to_proto(item))).await {
                            return;
                        }
                    }
                    if !full || next == u64::MAX || (req.backward && next <= 1) {
                        return;
                    }
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::ReadStream
            ))
        }
        .await;
        self.done("ConversationRead", started, &r);
        r
    }

    async fn redact(
        &self,
        request: Request<ConversationRedactRequest>,
    ) -> Result<Response<ConversationsRedactResponse>, Status> {
        self.audited_call(
            "ConversationRedact",
            request,
            Role::Erase,
            AuditOp::ConversationRedact,
            |r| validate_conversation_redact(r).map(|a| (a.conversation, (a.seq, a.reason))),
            |c, (seq, reason), actor| c.redact_as(seq, &reason, actor),
            |d| ConversationsRedactResponse {
                seq: d.seq,
                timestamp_ms: d.timestamp_ms,
                redacted_at_ms: d.redacted_at_ms,
                already_redacted: d.already_redacted,
            },
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<ConversationRequest>,
    ) -> Result<Response<ConversationsDeleteResponse>, Status> {
        self.audited_call(
            "ConversationDelete",
            request,
            Role::Erase,
            AuditOp::ConversationDelete,
            |r| validate_conversation(r).map(|c| (c, ())),
            |c, (), actor| c.delete_as(actor),
            |d| ConversationsDeleteResponse {
                messages_deleted: d.messages_deleted,
                deleted_at_ms: d.deleted_at_ms,
                epoch: d.epoch,
                handle: d.handle.to_string(),
                receipt: Some(receipt_to_proto(&d.receipt)),
            },
        )
        .await
    }

    async fn set_retention(
        &self,
        request: Request<proto::ConversationsSetRetentionRequest>,
    ) -> Result<Response<proto::ConversationsSetRetentionResponse>, Status> {
        self.rights_call(
            "ConversationSetRetention",
            request,
            AuditOp::ConversationSetRetention,
            validate_conversation_set_retention,
            |c, retention, actor| c.set_retention_as(retention, actor),
        )
        .await
    }

    async fn set_legal_hold(
        &self,
        request: Request<proto::ConversationsSetLegalHoldRequest>,
    ) -> Result<Response<proto::ConversationsSetLegalHoldResponse>, Status> {
        self.rights_call(
            "ConversationSetLegalHold",
            request,
            AuditOp::ConversationSetLegalHold,
            |r| {
                validate_conversation_set_legal_hold(r)
                    .map(|(c, reason, until)| (c, (reason, until)))
            },
            |c, (reason, until_ms), actor| c.set_legal_hold_as(&reason, until_ms, actor),
        )
        .await
    }

    async fn lift_legal_hold(
        &self,
        request: Request<proto::ConversationsLiftLegalHoldRequest>,
    ) -> Result<Response<proto::ConversationsLiftLegalHoldResponse>, Status> {
        self.rights_call(
            "ConversationLiftLegalHold",
            request,
            AuditOp::ConversationLiftLegalHold,
            |r| {
                validate_conversation(ConversationRequest {
                    conversation_id: r.conversation_id,
                })
                .map(|c| (c, ()))
            },
            |c, (), actor| c.lift_legal_hold_as(actor),
        )
        .await
    }

    async fn set_subjects(
        &self,
        request: Request<proto::ConversationsSetSubjectsRequest>,
    ) -> Result<Response<proto::ConversationsSetSubjectsResponse>, Status> {
        self.audited_call(
            "ConversationSetSubjects",
            request,
            Role::Admin,
            AuditOp::ConversationSetSubjects,
            validate_conversation_set_subjects,
            |c, subjects, actor| c.set_subjects_as(&subjects, actor),
            |n| proto::ConversationsSetSubjectsResponse {
                subjects: u32::try_from(n).unwrap_or(u32::MAX),
            },
        )
        .await
    }
}

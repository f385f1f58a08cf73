//! The JetStream JSON API over a core NATS connection: stream create and
//! info, message get and (secure) delete, conditional publish and atomic
//! batch publish. async-nats's typed JetStream helpers have no atomic batch
//! and hide the server's error codes, so the engine speaks the documented
//! API (`$JS.API.*`, ADR-50 for batches) itself.

use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use serde_json::{Value, json};

/// JetStream's error codes the engine acts on.
pub(super) mod code {
    /// `Nats-Expected-Last-Subject-Sequence` did not match.
    pub const WRONG_LAST_SEQUENCE: u64 = 10071;
    /// An expected-sequence check inside an atomic batch failed (a subject
    /// written earlier in the same batch, or a clustered check).
    pub const BATCH_EXPECTED_SEQUENCE: u64 = 10164;
    /// No message matched a get.
    pub const NO_MESSAGE_FOUND: u64 = 10037;
    /// A stream of that name exists with another configuration.
    pub const STREAM_NAME_IN_USE: u64 = 10058;
}

/// A failed request: JetStream's answer, or no answer.
#[derive(Debug)]
pub(super) enum ApiError {
    /// JetStream answered with an error.
    JetStream { err_code: u64, description: String },
    /// The request failed or timed out (its effect is unknown).
    Transport(String),
    /// Nobody received the publish (nothing was stored).
    NoResponders,
}

impl ApiError {
    pub(super) fn is(&self, code: u64) -> bool {
        matches!(self, ApiError::JetStream { err_code, .. } if *err_code == code)
    }

    /// A lost optimistic-concurrency race.
    pub(super) fn is_conflict(&self) -> bool {
        self.is(code::WRONG_LAST_SEQUENCE) || self.is(code::BATCH_EXPECTED_SEQUENCE)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::JetStream {
                err_code,
                description,
            } => write!(f, "{description} (JetStream error {err_code})"),
            ApiError::Transport(e) => write!(f, "{e}"),
            ApiError::NoResponders => write!(f, "no JetStream stream answered"),
        }
    }
}

/// One stored message.
#[derive(Debug, Clone)]
pub(super) struct StoredMsg {
    pub(super) subject: String,
    pub(super) seq: u64,
    /// The raw NATS header block (`NATS/1.0\r\n...`), empty if none.
    pub(super) headers: Vec<u8>,
    pub(super) data: Vec<u8>,
}

/// A publish acknowledgement: the stream sequence of the (last) message and,
/// for a batch, how many it stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    pub(super) seq: u64,
    pub(super) count: u64,
}

/// A message to publish.
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Vec<u8>,
}

/// The pause before asking again when no server answered.
const NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(100);

pub(super) struct Api {
    pub(super) client: async_nats::Client,
    pub(super) timeout: Duration,
}

fn parse(payload: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| ApiError::Transport(format!("unreadable JetStream answer: {e}")))?;
    if let Some(err) = v.get("error") {
        return Err(ApiError::JetStream {
            err_code: err.get("err_code").and_then(Value::as_u64).unwrap_or(0),
            description: err
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
        });
    }
    Ok(v)
}

fn b64(v: Option<&Value>) -> Result<Vec<u8>, ApiError> {
    match v.and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| ApiError::Transport("unreadable message in a JetStream answer".into())),
    }
}

impl Api {
    async fn call(&self, subject: String, body: Vec<u8>) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let req = self.client.request(subject.clone(), body.clone().into());
            match tokio::time::timeout_at(deadline, req).await {
                Err(_) => return Err(ApiError::Transport("JetStream request timed out".into())),
                Ok(Ok(msg)) => return parse(&msg.payload),
                // Nobody listened (a stream between leaders): nothing was
                // done, so asking again is safe.
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    if tokio::time::Instant::now() + NO_RESPONDERS_PAUSE >= deadline {
                        return Err(ApiError::Transport("no JetStream server answered".into()));
                    }
                    tokio::time::sleep(NO_RESPONDERS_PAUSE).await;
                }
                Ok(Err(e)) => {
                    return Err(ApiError::Transport(format!(
                        "JetStream request failed: {e}"
                    )));
                }
            }
        }
    }

    /// `$JS.API.<what>` with a JSON body.
    pub(super) async fn api(&self, what: &str, body: Value) -> Result<Value, ApiError> {
        self.call(format!("$JS.API.{what}"), body.to_string().into_bytes())
            .await
    }

    /// Creates `stream` with `config` (idempotent for an identical config);
    /// returns the stream's info.
    pub(super) async fn create_stream(
        &self,
        stream: &str,
        config: Value,
    ) -> Result<Value, ApiError> {
        self.api(&format!("STREAM.CREATE.{stream}"), config).await
    }

    /// The stream's info (with the leader in `cluster.leader`).
    pub(super) async fn stream_info(&self, stream: &str) -> Result<Value, ApiError> {
        self.api(&format!("STREAM.INFO.{stream}"), json!({})).await
    }

    /// The subjects of `stream` matching `filter`, with their message counts.
    pub(super) async fn subjects(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<Vec<(String, u64)>, ApiError> {
        let mut out = Vec::new();
        loop {
            let v = self
                .api(
                    &format!("STREAM.INFO.{stream}"),
                    json!({ "subjects_filter": filter, "offset": out.len() }),
                )
                .await?;
            let page = v
                .pointer("/state/subjects")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(s, n)| (s.clone(), n.as_u64().unwrap_or(0)))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let total = v.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let empty = page.is_empty();
            out.extend(page);
            if empty || out.len() >= total {
                return Ok(out);
            }
        }
    }

    async fn get(&self, stream: &str, body: Value) -> Result<Option<StoredMsg>, ApiError> {
        match self.api(&format!("STREAM.MSG.GET.{stream}"), body).await {
            Ok(v) => {
                let m = v.get("message").ok_or_else(|| {
                    ApiError::Transport("JetStream answer without a message".into())
                })?;
                Ok(Some(StoredMsg {
                    subject: m
                        .get("subject")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    seq: m.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    headers: b64(m.get("hdrs"))?,
                    data: b64(m.get("data"))?,
                }))
            }
            Err(e) if e.is(code::NO_MESSAGE_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The last message on `subject` (from the stream's leader).
    pub(super) async fn last_for(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<StoredMsg>, ApiError> {
        self.get(stream, json!({ "last_by_subj": subject })).await
    }

    /// The first message at or after `seq` on a subject matching `filter`.
    pub(super) async fn next_for(
        &self,
        stream: &str,
        filter: &str,
        seq: u64,
    ) -> Result<Option<StoredMsg>, ApiError> {
        self.get(stream, json!({ "seq": seq, "next_by_subj": filter }))
            .await
    }

    /// Deletes message `seq` with JetStream's secure erase (the default: the
    /// stored bytes are overwritten on every replica that applies it). A
    /// message already gone is not an error.
    pub(super) async fn secure_delete(&self, stream: &str, seq: u64) -> Result<(), ApiError> {
        match self
            .api(
                &format!("STREAM.MSG.DELETE.{stream}"),
                json!({ "seq": seq }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(ApiError::JetStream { description, .. })
                if description.contains("not found") || description.contains("no message") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes `msgs` as one write: a single message as a plain publish,
    /// several as one atomic batch (all stored or none). Returns the ack.
    /// When no stream answers (one between leaders), nothing was stored
    /// (a batch's earlier messages reached nobody either), so it publishes
    /// again, under a new batch id, until the request timeout.
    pub(super) async fn publish(&self, msgs: Vec<Outgoing>) -> Result<Ack, ApiError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let batch_id =
                super::random_id().map_err(|_| ApiError::Transport("no random batch id".into()))?;
            let copy = msgs
                .iter()
                .map(|m| Outgoing {
                    subject: m.subject.clone(),
                    headers: m.headers.clone(),
                    payload: m.payload.clone(),
                })
                .collect();
            match self.publish_once(&batch_id, copy).await {
                Err(ApiError::NoResponders)
                    if tokio::time::Instant::now() + NO_RESPONDERS_PAUSE < deadline =>
                {
                    tokio::time::sleep(NO_RESPONDERS_PAUSE).await;
                }
                Err(ApiError::NoResponders) => {
                    return Err(ApiError::Transport(
                        "no JetStream stream answered the publish".into(),
                    ));
                }
                other => return other,
            }
        }
    }

    async fn publish_once(&self, batch_id: &str, msgs: Vec<Outgoing>) -> Result<Ack, ApiError> {
        let n = msgs.len();
        let mut last = None;
        for (i, mut m) in msgs.into_iter().enumerate() {
            if n > 1 {
                m.headers.insert("Nats-Batch-Id", batch_id);
                m.headers
                    .insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            }
            if i + 1 < n {
                // Intermediate batch messages carry no reply subject: the
                // server answers only the commit.
                self.client
                    .publish_with_headers(m.subject, m.headers, m.payload.into())
                    .await
                    .map_err(|e| ApiError::Transport(format!("JetStream publish failed: {e}")))?;
            } else {
                if n > 1 {
                    m.headers.insert("Nats-Batch-Commit", "1");
                }
                last = Some(m);
            }
        }
        let m = last.ok_or_else(|| ApiError::Transport("empty publish".into()))?;
        let req = self
            .client
            .request_with_headers(m.subject, m.headers, m.payload.into());
        let msg = match tokio::time::timeout(self.timeout, req).await {
            Err(_) => return Err(ApiError::Transport("JetStream publish timed out".into())),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(ApiError::NoResponders);
            }
            Ok(Err(e)) => {
                return Err(ApiError::Transport(format!(
                    "JetStream publish failed: {e}"
                )));
            }
            Ok(Ok(msg)) => msg,
        };
        if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(ApiError::NoResponders);
        }
        let v = parse(&msg.payload)?;
        Ok(Ack {
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            count: v.get("count").and_then(Value::as_u64).unwrap_or(1),
        })
    }
}

/// Whether a raw header block holds `name: value`.
pub(super) fn has_header(block: &[u8], name: &str, value: &str) -> bool {
    let Ok(text) = std::str::from_utf8(block) else {
        return false;
    };
    text.split("\r\n").skip(1).any(|line| {
        line.split_once(':')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

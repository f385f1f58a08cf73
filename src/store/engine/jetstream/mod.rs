//! The JetStream engine: the store's records in a NATS JetStream cluster
//! instead of a local RocksDB, behind the same kind of interface as
//! [`super::Engine`] (column families, point reads, atomic batches, ordered
//! cursors), so that several stateless front ends can serve one cluster.
//!
//! Layout ([`subject`], `docs/format.md`): `P` partition streams, each
//! replicated (R3 by default) on file storage, with atomic batches allowed
//! and purge denied (purge leaves the bytes on disk; deletes here are
//! JetStream's secure erase). Every record is one subject; its value is the
//! last message on it, a deletion is a tombstone message.
//!
//! Concurrency is optimistic. The engine remembers, per subject, the stream
//! sequence it last saw ([`JetStreamEngine::get`], cursors and its own
//! writes). Every write of a batch is conditional on that sequence
//! (`Nats-Expected-Last-Subject-Sequence`; a key never seen must be absent),
//! and [`JsBatch::expect`] adds the same check on a record the batch only
//! read. A batch is one atomic JetStream batch: when another front end wrote
//! any of those subjects since, nothing is stored and the write fails with
//! [`Error::Conflict`], after which the caller reads again and retries.
//!
//! After a batch commits, the values it replaced are removed with secure
//! deletes, and a deleted record's tombstone once its value is gone. A crash
//! in between leaves them for [`JetStreamEngine::sweep`]; readers never see
//! them (they read the last message of a subject).
//!
//! Limits of this first part: a batch's records must all live in one
//! partition (with `P = 1` every batch does); ranged deletes are not
//! offered (the erasure protocol on JetStream deletes what it lists).

mod api;
mod batch;
mod cursor;
pub(crate) mod subject;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use parking_lot::Mutex;
use serde_json::json;

use self::api::{Api, ApiError, Outgoing, StoredMsg};
pub(crate) use self::cursor::JsCursor;
use self::subject::{Layout, Place};
use super::{Cf, Scope};
use crate::error::{Error, Result};
use crate::types::Handle;

/// The header marking a tombstone (a deleted record).
const OP_HEADER: &str = "Shred-Op";
const OP_DELETE: &str = "del";
/// At most this many messages in one atomic batch (JetStream's limit).
pub(crate) const MAX_BATCH: usize = 1000;
/// The remembered sequences are dropped when they grow past this many
/// subjects (a forgotten subject costs a spurious conflict and a retry).
const MAX_VERSIONS: usize = 1 << 20;
/// The meta record holding the partition count.
const META_PARTITIONS: &[u8] = b"jetstream_partitions";

/// How to reach the cluster and how the store is laid out in it.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Server URLs, comma-separated (`nats://h1:4222,nats://h2:4222`).
    pub(crate) urls: String,
    /// A NATS credentials file (JWT and nkey seed).
    pub(crate) creds: Option<PathBuf>,
    /// A CA certificate (PEM) to verify the servers' TLS certificates with.
    pub(crate) tls_ca: Option<PathBuf>,
    /// Partition streams (fixed when the store is created).
    pub(crate) partitions: u32,
    /// Replicas of each stream.
    pub(crate) replicas: usize,
    /// The first subject token and the streams' name prefix.
    pub(crate) namespace: String,
    /// How long a request may wait for JetStream's answer.
    pub(crate) request_timeout: Duration,
}

impl JetStreamOptions {
    /// The cluster at `urls` (comma-separated `nats://host:port`), with
    /// defaults: 1 partition, 3 replicas, namespace `shred`, 10 s requests.
    pub fn new(urls: impl Into<String>) -> JetStreamOptions {
        JetStreamOptions {
            urls: urls.into(),
            creds: None,
            tls_ca: None,
            partitions: 1,
            replicas: 3,
            namespace: "shred".into(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// A NATS credentials file (JWT and nkey seed).
    pub fn creds(mut self, path: impl Into<PathBuf>) -> Self {
        self.creds = Some(path.into());
        self
    }

    /// Verify the servers' TLS certificates with this CA (PEM); TLS is
    /// then required.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Partition streams (fixed when the store is created).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Replicas of each stream (3 by default; 1 to 5).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The subjects' first token and the streams' name prefix (several
    /// stores can share a cluster under different namespaces).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a request may wait for JetStream's answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::EngineConfig(what.to_owned()));
        if self.partitions == 0 || self.partitions > 1024 {
            return bad("JetStream partitions must be 1 to 1024");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("JetStream replicas must be 1 to 5");
        }
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 32
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ns_ok {
            return bad("JetStream namespace must be 1 to 32 of a-z, 0-9 and _");
        }
        if self.urls.split(',').all(|u| u.trim().is_empty()) {
            return bad("no NATS server URL given");
        }
        Ok(())
    }
}

/// A store's records in a JetStream cluster.
pub(crate) struct JetStreamEngine {
    // Dropped last: the client's tasks run on it.
    rt: tokio::runtime::Runtime,
    api: Api,
    layout: Layout,
    /// The last stream sequence seen per subject (0: seen absent).
    versions: Mutex<HashMap<String, u64>>,
}

fn js_err(e: ApiError) -> Error {
    if e.is_conflict() {
        Error::Conflict
    } else {
        Error::JetStream(e.to_string())
    }
}

impl JetStreamEngine {
    /// Connects, creates the partition streams if missing (or checks them),
    /// and records the partition count on first use.
    pub(crate) fn connect(options: &JetStreamOptions) -> Result<JetStreamEngine> {
        options.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shredstore-nats")
            .enable_all()
            .build()?;
        let client = rt.block_on(connect_client(options))?;
        let engine = JetStreamEngine {
            rt,
            api: Api {
                client,
                timeout: options.request_timeout,
            },
            layout: Layout {
                namespace: options.namespace.clone(),
                partitions: options.partitions,
            },
            versions: Mutex::new(HashMap::new()),
        };
        for p in 0..options.partitions {
            engine.ensure_stream(p, options.replicas)?;
        }
        engine.check_partitions()?;
        Ok(engine)
    }

    fn ensure_stream(&self, p: u32, replicas: usize) -> Result<()> {
        let name = self.layout.stream(p);
        let config = json!({
            "name": name,
            "subjects": [self.layout.stream_subjects(p)],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "allow_atomic": true,
            // Purge keeps the bytes on disk; the engine deletes securely.
            "deny_purge": true,
            "deny_delete": false,
            // Reads go to the leader (a replica may lag behind an erase).
            "allow_direct": false,
        });
        // A stream created at the same moment by another front end, or a
        // cluster still electing: retry for a while.
        let mut tries = 0;
        loop {
            match self
                .rt
                .block_on(self.api.create_stream(&name, config.clone()))
            {
                Ok(info) => return check_stream(&info, replicas),
                Err(e) if e.is(api::code::STREAM_NAME_IN_USE) => {
                    let info = self
                        .rt
                        .block_on(self.api.stream_info(&name))
                        .map_err(js_err)?;
                    return check_stream(&info, replicas);
                }
                Err(e) if tries < 20 => {
                    tracing::debug!(error = %e, "creating a JetStream stream; retrying");
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(js_err(e)),
            }
        }
    }

    /// The partition count is part of the layout: a store created with `P`
    /// partitions must be opened with `P`.
    fn check_partitions(&self) -> Result<()> {
        let want = self.layout.partitions.to_be_bytes();
        loop {
            match self.get(Cf::Meta, META_PARTITIONS)? {
                Some(v) if v == want => return Ok(()),
                Some(v) => {
                    let found = <[u8; 4]>::try_from(v.as_slice())
                        .map(u32::from_be_bytes)
                        .unwrap_or(0);
                    return Err(Error::EngineConfig(format!(
                        "this store has {found} JetStream partitions, not {}",
                        self.layout.partitions
                    )));
                }
                None => {
                    let mut b = self.batch();
                    b.put(Cf::Meta, META_PARTITIONS, &want)?;
                    match self.write(b, true) {
                        Ok(()) => return Ok(()),
                        Err(Error::Conflict) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn place(&self, cf: Cf, key: &[u8]) -> Result<Place> {
        self.layout
            .place(cf, key)
            .ok_or_else(|| Error::JetStream("a record key is shorter than its handle".into()))
    }

    fn remember(&self, subject: &str, seq: u64) {
        let mut v = self.versions.lock();
        if v.len() >= MAX_VERSIONS && !v.contains_key(subject) {
            v.clear();
        }
        v.insert(subject.to_owned(), seq);
    }

    fn forget(&self, subjects: impl IntoIterator<Item = String>) {
        let mut v = self.versions.lock();
        for s in subjects {
            v.remove(&s);
        }
    }

    fn known(&self, subject: &str) -> Option<u64> {
        self.versions.lock().get(subject).copied()
    }

    /// The last message on a subject, remembered; `None` if there is none.
    fn last(&self, place: &Place) -> Result<Option<StoredMsg>> {
        let m = self
            .rt
            .block_on(
                self.api
                    .last_for(&self.layout.stream(place.partition), &place.subject),
            )
            .map_err(js_err)?;
        self.remember(&place.subject, m.as_ref().map_or(0, |m| m.seq));
        Ok(m)
    }

    /// The value under `key`, if any (read from the stream's leader).
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.value_at(&self.place(cf, key)?)
    }

    /// Whether the record under `key` is still the version this engine
    /// last saw (asks the stream's leader, and remembers what it found): a
    /// front end's cached state of a user or conversation is only as good
    /// as the key record it was loaded from, which another front end may
    /// have changed or erased.
    pub(crate) fn is_unchanged(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        let place = self.place(cf, key)?;
        let seen = self.known(&place.subject);
        let now = self.last(&place)?.map_or(0, |m| m.seq);
        Ok(seen == Some(now))
    }

    /// An empty batch.
    pub(crate) fn batch(&self) -> JsBatch {
        JsBatch { ops: Vec::new() }
    }

    /// Writes `batch` atomically: every record or none. JetStream
    /// acknowledges after a quorum of replicas stored it (and, with the
    /// servers' `sync_interval: always`, fsynced it), so `sync` changes
    /// nothing here. Fails with [`Error::Conflict`], writing nothing, if a
    /// record the batch writes or expects changed since this engine saw it.
    pub(crate) fn write(&self, batch: JsBatch, _sync: bool) -> Result<()> {
        let plan = self.plan(batch)?;
        if plan.msgs.is_empty() {
            return Ok(());
        }
        let touched: Vec<String> = plan.touched.clone();
        let stream = self.layout.stream(plan.partition);
        let count = plan.msgs.len() as u64;
        let ack = match self.rt.block_on(self.api.publish(plan.msgs)) {
            Ok(ack) => ack,
            Err(e) => {
                // Lost the race, or the outcome is unknown: read again.
                self.forget(touched);
                return Err(js_err(e));
            }
        };
        if ack.count != count || ack.seq < count {
            self.forget(touched);
            return Err(Error::JetStream(format!(
                "JetStream stored {} of a batch of {count}",
                ack.count
            )));
        }
        // An atomic batch is stored contiguously, in order.
        let first = ack.seq + 1 - count;
        let mut superseded = Vec::new();
        for (i, w) in plan.writes.iter().enumerate() {
            let seq = first + i as u64;
            self.remember(&w.subject, seq);
            if w.previous > 0 {
                superseded.push(w.previous);
            }
        }
        self.clean_up(&stream, &plan.writes, first, superseded, plan.nops);
        Ok(())
    }

    /// Removes what a committed batch replaced: old values securely, then
    /// the tombstones of deleted records whose values are gone, and the
    /// batch's check messages. A failure leaves them for [`Self::sweep`].
    fn clean_up(
        &self,
        stream: &str,
        writes: &[PlannedWrite],
        first: u64,
        superseded: Vec<u64>,
        nops: Vec<u64>,
    ) {
        let result: std::result::Result<(), ApiError> = self.rt.block_on(async {
            for seq in &superseded {
                self.api.secure_delete(stream, *seq).await?;
            }
            for (i, w) in writes.iter().enumerate() {
                if w.delete {
                    self.api.secure_delete(stream, first + i as u64).await?;
                }
            }
            for i in &nops {
                self.api.secure_delete(stream, first + i).await?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                for w in writes.iter().filter(|w| w.delete) {
                    self.remember(&w.subject, 0);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "removing replaced records failed; the sweep will");
                self.forget(writes.iter().map(|w| w.subject.clone()));
            }
        }
    }

    fn plan(&self, batch: JsBatch) -> Result<Plan> {
        let mut partition = None;
        // The last op per subject wins; the order of first appearance is kept.
        let mut order: Vec<Place> = Vec::new();
        let mut last: HashMap<Place, Op> = HashMap::new();
        let mut expects: Vec<Place> = Vec::new();
        for op in batch.ops {
            let place = self.place(op.cf(), op.key())?;
            match partition {
                None => partition = Some(place.partition),
                Some(p) if p != place.partition => {
                    return Err(Error::JetStream(format!(
                        "a write spans JetStream partitions {p} and {} (this engine writes one \
                         partition atomically)",
                        place.partition
                    )));
                }
                Some(_) => {}
            }
            if matches!(op, Op::Expect { .. }) {
                if !expects.contains(&place) {
                    expects.push(place);
                }
                continue;
            }
            if !last.contains_key(&place) {
                order.push(place.clone());
            }
            last.insert(place, op);
        }
        let partition = partition.unwrap_or(0);
        let mut plan = Plan {
            partition,
            msgs: Vec::new(),
            writes: Vec::new(),
            nops: Vec::new(),
            touched: Vec::new(),
        };
        for place in order {
            let Some(op) = last.remove(&place) else {
                continue; // every ordered place has its op
            };
            let delete = matches!(op, Op::Delete { .. });
            let previous = match self.known(&place.subject) {
                Some(seq) => seq,
                // Never seen: a put must find the key absent; a delete
                // deletes whatever is there now.
                None if !delete => 0,
                None => self.last(&place)?.map_or(0, |m| m.seq),
            };
            if delete && previous == 0 {
                continue; // nothing to delete
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                previous.to_string().as_str(),
            );
            let payload = match op {
                Op::Put { value, .. } => value,
                _ => {
                    headers.insert(OP_HEADER, OP_DELETE);
                    Vec::new()
                }
            };
            plan.touched.push(place.subject.clone());
            plan.msgs.push(Outgoing {
                subject: place.subject.clone(),
                headers,
                payload,
            });
            plan.writes.push(PlannedWrite {
                subject: place.subject,
                previous,
                delete,
            });
        }
        // A checked record rides on a message of its own (one expectation per
        // message), on the partition's check subject; removed after commit.
        for place in expects {
            if plan.writes.iter().any(|w| w.subject == place.subject) {
                continue; // written, so already checked
            }
            // A record the caller relies on but this engine no longer
            // remembers (forgotten after a failed write, or the table was
            // cleared): what the caller decided on cannot be checked, so
            // the write is a lost race; the caller reads again.
            let Some(seq) = self.known(&place.subject) else {
                return Err(Error::Conflict);
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                seq.to_string().as_str(),
            );
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence-Subject",
                place.subject.as_str(),
            );
            plan.nops.push(plan.msgs.len() as u64);
            plan.msgs.push(Outgoing {
                subject: self.check_subject(partition),
                headers,
                payload: Vec::new(),
            });
        }
        if plan.msgs.len() > MAX_BATCH {
            return Err(Error::JetStream(format!(
                "a write of {} records is over JetStream's atomic batch limit of {MAX_BATCH}",
                plan.msgs.len()
            )));
        }
        Ok(plan)
    }

    /// The subject of a partition's check messages.
    fn check_subject(&self, p: u32) -> String {
        format!("{}.{p}.check", self.layout.namespace)
    }

    /// A cursor over `scope` of `cf`, in key order. It lists the keys when
    /// made and reads each value when it reaches it.
    pub(crate) fn cursor(&self, cf: Cf, scope: Scope<'_>) -> Result<JsCursor<'_>> {
        Ok(JsCursor::new(self, self.listed(cf, scope)?))
    }

    /// The keys of `scope` of `cf` now (tombstoned ones included), in key
    /// order.
    pub(crate) fn list_keys(&self, cf: Cf, scope: Scope<'_>) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .listed(cf, scope)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// About how many records `cf` holds: its subjects (a deleted record's
    /// tombstone, counted too, goes right after its write).
    pub(crate) fn count_keys(&self, cf: Cf) -> Result<u64> {
        Ok(self.listed(cf, Scope::All)?.len() as u64)
    }

    /// The highest last sequence of the partition streams: every write
    /// acknowledged before this call is at or below it.
    pub(crate) fn write_position(&self) -> Result<u64> {
        let mut top = 0;
        for p in 0..self.layout.partitions {
            let info = self
                .rt
                .block_on(self.api.stream_info(&self.layout.stream(p)))
                .map_err(js_err)?;
            let last = info
                .pointer("/state/last_seq")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            top = top.max(last);
        }
        Ok(top)
    }

    fn listed(&self, cf: Cf, scope: Scope<'_>) -> Result<Vec<(Vec<u8>, Place)>> {
        let filters = match scope {
            Scope::All => self.layout.cf_filters(cf),
            Scope::Handle(h) => vec![self.layout.handle_filter(cf, h)],
        };
        let prefix: &[u8] = match scope {
            Scope::All => &[],
            Scope::Handle(h) => h.as_bytes(),
        };
        let mut keys = Vec::new();
        for (p, filter) in filters {
            let subjects = self
                .rt
                .block_on(self.api.subjects(&self.layout.stream(p), &filter))
                .map_err(js_err)?;
            for (subject, _) in subjects {
                if let Some(key) = self.layout.key_of(cf, &subject)
                    && key.starts_with(prefix)
                {
                    keys.push((
                        key,
                        Place {
                            partition: p,
                            subject,
                        },
                    ));
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keys)
    }

    /// The current value of a listed key (`None`: deleted since listed).
    fn value_at(&self, place: &Place) -> Result<Option<Vec<u8>>> {
        Ok(self
            .last(place)?
            .filter(|m| !is_tombstone(m))
            .map(|m| m.data))
    }

    #[cfg(test)]
    /// Securely deletes every message of `cf` under `handle`: current
    /// values, tombstones and any replaced value not yet removed. Returns how
    /// many it deleted. (The purge of an erased user or deleted
    /// conversation; never JetStream's purge, which keeps the bytes.)
    pub(crate) fn secure_erase(&self, cf: Cf, handle: &Handle) -> Result<u64> {
        Ok(self
            .secure_delete_where(cf, handle, u64::MAX, |_, _| Ok(true))?
            .0)
    }

    /// Securely deletes the messages of `cf` under `handle` that `erased`
    /// picks, given each one's key and value (`None`: a tombstone, always
    /// deleted), current and replaced versions alike. The purge's walk: it
    /// decides per version, as RocksDB's compaction filter does. Deletes at
    /// most `budget` messages; returns how many it deleted and whether it
    /// went through them all.
    pub(crate) fn secure_delete_where(
        &self,
        cf: Cf,
        handle: &Handle,
        budget: u64,
        mut erased: impl FnMut(&[u8], Option<&[u8]>) -> Result<bool>,
    ) -> Result<(u64, bool)> {
        let (p, filter) = self.layout.handle_filter(cf, handle);
        let stream = self.layout.stream(p);
        let prefix = handle.as_bytes();
        let mut deleted = 0;
        let mut seq = 1;
        // Per subject: whether every message of it was deleted.
        let mut emptied: HashMap<String, bool> = HashMap::new();
        let mut finished = true;
        while let Some(m) = self
            .rt
            .block_on(self.api.next_for(&stream, &filter, seq))
            .map_err(js_err)?
        {
            seq = m.seq + 1;
            let Some(key) = self
                .layout
                .key_of(cf, &m.subject)
                .filter(|k| k.starts_with(prefix))
            else {
                continue;
            };
            let value = (!is_tombstone(&m)).then_some(m.data.as_slice());
            let gone = value.is_none() || erased(&key, value)?;
            if gone && deleted == budget {
                finished = false;
                emptied.insert(m.subject, false);
                break;
            }
            if gone {
                self.rt
                    .block_on(self.api.secure_delete(&stream, m.seq))
                    .map_err(js_err)?;
                deleted += 1;
            }
            let all = emptied.entry(m.subject).or_insert(true);
            *all &= gone;
        }
        for (subject, all) in emptied {
            if all {
                self.remember(&subject, 0);
            } else {
                self.forget([subject]);
            }
        }
        Ok((deleted, finished))
    }

    /// Removes, in every partition, what interrupted writes left: values
    /// replaced by a newer message on their subject, tombstones, check
    /// messages. Returns how many messages it deleted.
    pub(crate) fn sweep(&self) -> Result<u64> {
        let mut deleted = 0;
        for p in 0..self.layout.partitions {
            let stream = self.layout.stream(p);
            let subjects = self
                .rt
                .block_on(self.api.subjects(&stream, &self.layout.stream_subjects(p)))
                .map_err(js_err)?;
            let check = self.check_subject(p);
            for (subject, count) in subjects {
                let is_check = subject == check;
                if count < 2 && !is_check {
                    continue;
                }
                let mut msgs = Vec::new();
                let mut seq = 1;
                while let Some(m) = self
                    .rt
                    .block_on(self.api.next_for(&stream, &subject, seq))
                    .map_err(js_err)?
                {
                    seq = m.seq + 1;
                    msgs.push(m);
                }
                let keep_last = !is_check && msgs.last().is_some_and(|m| !is_tombstone(m));
                let n = msgs.len() - usize::from(keep_last);
                for m in &msgs[..n] {
                    self.rt
                        .block_on(self.api.secure_delete(&stream, m.seq))
                        .map_err(js_err)?;
                    deleted += 1;
                }
                self.forget([subject]);
            }
        }
        Ok(deleted)
    }

    #[cfg(test)]
    /// The server leading partition `p`'s stream, if one does.
    pub(crate) fn leader(&self, p: u32) -> Result<Option<String>> {
        let info = self
            .rt
            .block_on(self.api.stream_info(&self.layout.stream(p)))
            .map_err(js_err)?;
        Ok(info
            .pointer("/cluster/leader")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned))
    }

    /// Whether every partition has a leader and every replica of it is
    /// online and current. A secure delete reaches only the replicas that
    /// apply it: one that is offline or behind (and later catches up from a
    /// snapshot) keeps the deleted bytes until it is rebuilt, so an erasure
    /// is physical on the whole cluster only while this holds.
    pub(crate) fn replicas_current(&self) -> Result<bool> {
        for p in 0..self.layout.partitions {
            let info = self
                .rt
                .block_on(self.api.stream_info(&self.layout.stream(p)))
                .map_err(js_err)?;
            let cluster = info.get("cluster").unwrap_or(&serde_json::Value::Null);
            if cluster
                .get("leader")
                .and_then(serde_json::Value::as_str)
                .is_none()
            {
                return Ok(false);
            }
            let want = info
                .pointer("/config/num_replicas")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1);
            let replicas = cluster
                .get("replicas")
                .and_then(serde_json::Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let current = replicas
                .iter()
                .filter(|r| {
                    r.get("current").and_then(serde_json::Value::as_bool) == Some(true)
                        && r.get("offline").and_then(serde_json::Value::as_bool) != Some(true)
                })
                .count() as u64;
            // The leader is not in `replicas`.
            if current + 1 < want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Self::replicas_current`], asked again every 50 ms for up to
    /// `within`: right after a write a follower is often a few entries
    /// behind for a moment, which is not what the purge must notice (a
    /// replica that is offline, or stays behind).
    pub(crate) fn replicas_settle(&self, within: Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.replicas_current()? {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[cfg(test)]
    /// Asks partition `p`'s stream leader to step down (a new leader is
    /// elected among the replicas).
    pub(crate) fn step_down(&self, p: u32) -> Result<()> {
        self.rt
            .block_on(self.api.api(
                &format!("STREAM.LEADER.STEPDOWN.{}", self.layout.stream(p)),
                json!({}),
            ))
            .map_err(js_err)?;
        Ok(())
    }
}

fn check_stream(info: &serde_json::Value, replicas: usize) -> Result<()> {
    let cfg = info.get("config").unwrap_or(&serde_json::Value::Null);
    let ok = cfg.get("num_replicas").and_then(serde_json::Value::as_u64) == Some(replicas as u64)
        && cfg.get("allow_atomic").and_then(serde_json::Value::as_bool) == Some(true)
        && cfg.get("deny_purge").and_then(serde_json::Value::as_bool) == Some(true)
        && cfg.get("storage").and_then(serde_json::Value::as_str) == Some("file");
    if ok {
        Ok(())
    } else {
        Err(Error::EngineConfig(format!(
            "an existing JetStream stream is not configured as this store needs ({replicas} \
             replicas, file storage, atomic batches, purge denied)"
        )))
    }
}

async fn connect_client(o: &JetStreamOptions) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("shredstore")
        .request_timeout(Some(o.request_timeout))
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(creds) = &o.creds {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| Error::EngineConfig(format!("NATS credentials file: {e}")))?;
    }
    if let Some(ca) = &o.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = o
        .urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse()
                .map_err(|_| Error::EngineConfig("a NATS server URL does not parse".into()))
        })
        .collect::<Result<_>>()?;
    let connect = opts.connect(urls);
    tokio::time::timeout(o.request_timeout, connect)
        .await
        .map_err(|_| Error::JetStream("no NATS server answered".into()))?
        .map_err(|e| Error::JetStream(format!("connecting to NATS: {e}")))
}

fn is_tombstone(m: &StoredMsg) -> bool {
    api::has_header(&m.headers, OP_HEADER, OP_DELETE)
}

pub(super) fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| Error::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub(crate) use self::batch::JsBatch;
use self::batch::{Op, Plan, PlannedWrite};

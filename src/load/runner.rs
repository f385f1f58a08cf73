//! Workers and the request schedule.

mod conversation;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::connect::{Target, code_name, embedded, targets};
use super::conversations::ConversationPicker;
use super::mix::{Mix, Op};
use super::payload::{build_payload, verify_payload};
use super::plot::write_svg;
use super::report::{Live, LoadReport, Recorder, VERIFY_ERROR};
use super::users::{UserPicker, user_id};
use super::{LoadConfig, LoadError, RunLimit};
use crate::server::proto::{AppendRequest, ConversationAppendRequest, EraseRequest, ReadRequest};

/// Error code of appends still in flight when their stream ended without an
/// error status.
const STREAM_ENDED: &str = "STREAM_ENDED";

/// What every worker sends.
struct Plan {
    mix: Mix,
    picker: UserPicker,
    prefix: String,
    /// Conversation mode: requests go to conversations, not users.
    conversations: Option<ConversationPicker>,
    payload_size: usize,
    /// Items per read (the conversation read limit in conversation mode).
    read_limit: u32,
    stream: bool,
    window: usize,
    open_loop: bool,
}

/// One phase (warm-up or measured run): the ticket dispenser and schedule.
struct Phase {
    start: Instant,
    deadline: Option<Instant>,
    requests: Option<u64>,
    rate: Option<f64>,
    next: AtomicU64,
    live: Arc<Live>,
    /// Open loop: one permit per request that has fallen due, released by
    /// the [`dispatch`] thread.
    released: Arc<Semaphore>,
}

impl Phase {
    /// Open loop: waits until a request has fallen due and takes it.
    async fn ticket(&self) -> Option<Instant> {
        self.released.acquire().await.ok()?.forget();
        self.next_due()
    }

    /// The next request's due time, or `None` when the phase is over. In a
    /// closed loop a request is due when a worker is free to send it; in an
    /// open loop request `i` is due at `start + i / rate`.
    fn next_due(&self) -> Option<Instant> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.requests.is_some_and(|n| i >= n) {
            return None;
        }
        let due = match self.rate {
            Some(r) => self
                .start
                .checked_add(Duration::try_from_secs_f64(i as f64 / r).ok()?)?,
            None => Instant::now(),
        };
        if self.deadline.is_some_and(|d| due >= d) {
            return None;
        }
        Some(due)
    }
}

/// The open-loop clock, on its own OS thread: releases one permit per
/// request as it falls due (request *i* at `start + i / rate`), sleeping with
/// `std::thread::sleep` in between (tens of microseconds late at most, where
/// tokio's timer rounds up to the millisecond), until the phase's limit;
/// then releases one more permit per worker so each sees the end. Workers
/// measure latency from the due time, so when all are busy the wait counts.
/// Spinning workers would be precise too but would take the CPU the server
/// needs on a small machine.
fn dispatch(phase: Arc<Phase>, rate: f64, workers: usize, stop: Arc<AtomicBool>) {
    let limit = phase.requests.unwrap_or(u64::MAX);
    let mut released = 0u64;
    while released < limit && !stop.load(Ordering::Relaxed) {
        let due = |i: u64| {
            Duration::try_from_secs_f64(i as f64 / rate)
                .ok()
                .and_then(|d| phase.start.checked_add(d))
        };
        let Some(next) = due(released) else { break };
        if phase.deadline.is_some_and(|d| next >= d) {
            break;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
            continue;
        }
        // Everything due by now, in one go.
        let elapsed = now.saturating_duration_since(phase.start).as_secs_f64();
        let due_by_now = ((elapsed * rate).floor() as u64).saturating_add(1);
        let upto = due_by_now.min(limit).max(released + 1);
        let n = usize::try_from(upto - released).unwrap_or(usize::MAX);
        phase
            .released
            .add_permits(n.min(Semaphore::MAX_PERMITS / 2));
        released = upto;
    }
    phase.released.add_permits(workers);
}

#[derive(Default)]
struct StreamState {
    /// When each unacknowledged append was sent (or due), in request order.
    pending: VecDeque<Instant>,
    /// Set (with the error code) once the stream has ended.
    broken: Option<&'static str>,
}

/// An append for a worker's stream: Store.AppendStream in the per-user mode,
/// Conversations.AppendStream in conversation mode.
enum StreamRequest {
    Store(AppendRequest),
    Conversation(ConversationAppendRequest),
}

impl StreamRequest {
    // A worker opens the stream of its plan's mode and sends only that
    // mode's requests, so neither filter drops anything.
    fn into_store(self) -> Option<AppendRequest> {
        match self {
            StreamRequest::Store(r) => Some(r),
            StreamRequest::Conversation(_) => None,
        }
    }

    fn into_conversation(self) -> Option<ConversationAppendRequest> {
        match self {
            StreamRequest::Conversation(r) => Some(r),
            StreamRequest::Store(_) => None,
        }
    }
}

/// A worker's AppendStream: requests go into `tx`, a reader task matches
/// responses to `pending` in order and frees a `window` slot for each.
struct Streamer {
    tx: mpsc::Sender<StreamRequest>,
    state: Arc<Mutex<StreamState>>,
    window: Arc<Semaphore>,
    reader: tokio::task::JoinHandle<Recorder>,
}

async fn read_acks<T>(
    mut inbound: Streaming<T>,
    state: Arc<Mutex<StreamState>>,
    window: Arc<Semaphore>,
    mut rec: Recorder,
) -> Recorder {
    let end = loop {
        match inbound.message().await {
            Ok(Some(_)) => {
                let sent = state.lock().pending.pop_front();
                // Responses come one per request, in order; one without a
                // request cannot be attributed and is ignored.
                if let Some(sent) = sent {
                    rec.ok(Op::Append, sent);
                }
                window.add_permits(1);
            }
            Ok(None) => break STREAM_ENDED,
            Err(s) => break code_name(s.code()),
        }
    };
    let lost = {
        let mut st = state.lock();
        st.broken = Some(end);
        std::mem::take(&mut st.pending)
    };
    // The first unacknowledged append failed with `end`; the ones after it
    // were not acknowledged either.
    for _ in lost {
        rec.error(Op::Append, end);
    }
    window.close();
    rec
}

struct Worker {
    client: Target,
    plan: Arc<Plan>,
    phase: Arc<Phase>,
    rng: SmallRng,
    rec: Recorder,
    streamer: Option<Streamer>,
}

impl Worker {
    async fn run(mut self) -> Result<Recorder, LoadError> {
        loop {
            let due = if self.plan.open_loop {
                self.phase.ticket().await
            } else {
                self.phase.next_due()
            };
            let Some(due) = due else { break };
            let op = self
                .plan
                .mix
                .pick(self.rng.random_range(0..self.plan.mix.total()));
            let plan = Arc::clone(&self.plan);
            if let Some(convs) = &plan.conversations {
                let (c, a) = convs.pick(&mut self.rng);
                match op {
                    Op::Append => self.conversation_append(convs, c, a, due).await?,
                    Op::Read => self.conversation_read(convs, c, due).await,
                    // The author's messages in every conversation become
                    // tombstones; their next append starts a new key.
                    Op::Erase => self.erase(convs.author_id(c, a).into_bytes(), due).await,
                }
                continue;
            }
            let user = user_id(&plan.prefix, plan.picker.pick(&mut self.rng)).into_bytes();
            match op {
                Op::Append => self.append(user, due).await?,
                Op::Read => self.read(user, due).await,
                Op::Erase => self.erase(user, due).await,
            }
        }
        if let Some(s) = self.streamer.take() {
            self.retire(s).await?;
        }
        Ok(self.rec)
    }

    /// Where latency starts for a request sent now: its due time in an open
    /// loop (how late it is sent is recorded too), now in a closed loop.
    fn since(&mut self, due: Instant) -> Instant {
        let now = Instant::now();
        if self.plan.open_loop {
            self.rec.lag(due, now);
            due
        } else {
            now
        }
    }

    async fn append(&mut self, user: Vec<u8>, due: Instant) -> Result<(), LoadError> {
        let payload =
            build_payload(&user, self.plan.payload_size, &mut self.rng).ok_or_else(|| {
                LoadError::Config("--payload-size is smaller than the header".to_owned())
            })?;
        let req = AppendRequest {
            user_id: user,
            payload,
            client_message_id: None,
        };
        if self.plan.stream {
            return self.stream_append(StreamRequest::Store(req), due).await;
        }
        let since = self.since(due);
        let result = match &mut self.client {
            Target::Grpc(g) => g
                .store
                .append(req)
                .await
                .map(drop)
                .map_err(|s| code_name(s.code())),
            Target::Embedded(store) => {
                let payload = req.payload;
                embedded(store, req.user_id, move |st, u| st.append(u, &payload))
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => self.rec.ok(Op::Append, since),
            Err(code) => self.rec.error(Op::Append, code),
        }
        Ok(())
    }

    async fn stream_append(&mut self, req: StreamRequest, due: Instant) -> Result<(), LoadError> {
        let mut last_code = STREAM_ENDED;
        // A stream that ended is replaced; give up on this append after a
        // few streams in a row end before it could be sent.
        for _ in 0..3 {
            let broken = self.streamer.as_ref().map(|s| s.state.lock().broken);
            match broken {
                Some(None) => {}
                Some(Some(code)) => {
                    last_code = code;
                    if let Some(old) = self.streamer.take() {
                        self.retire(old).await?;
                    }
                    if let Err(code) = self.open_stream().await? {
                        self.rec.error(Op::Append, code);
                        return Ok(());
                    }
                }
                None => {
                    if let Err(code) = self.open_stream().await? {
                        self.rec.error(Op::Append, code);
                        return Ok(());
                    }
                }
            }
            let Some(s) = &self.streamer else { continue };
            let Ok(permit) = Arc::clone(&s.window).acquire_owned().await else {
                continue;
            };
            let sent = Instant::now();
            let since = if self.plan.open_loop { due } else { sent };
            {
                let mut st = s.state.lock();
                if st.broken.is_some() {
                    continue;
                }
                st.pending.push_back(since);
            }
            // The reader returns the slot when the response arrives.
            permit.forget();
            // If the stream just ended, the reader has counted this append
            // as failed already.
            let _ = s.tx.send(req).await;
            if self.plan.open_loop {
                self.rec.lag(due, sent);
            }
            return Ok(());
        }
        self.rec.error(Op::Append, last_code);
        Ok(())
    }

    /// Opens a new AppendStream (Store's, or Conversations' in conversation
    /// mode); `Ok(Err(code))` if the server refused it.
    async fn open_stream(&mut self) -> Result<Result<(), &'static str>, LoadError> {
        let (tx, rx) = mpsc::channel(self.plan.window);
        let requests = ReceiverStream::new(rx);
        let Target::Grpc(g) = &mut self.client else {
            return Err(LoadError::Config(
                "--stream needs a server, not --embedded".into(),
            ));
        };
        let state = Arc::new(Mutex::new(StreamState::default()));
        let window = Arc::new(Semaphore::new(self.plan.window));
        let rec = Recorder::new(self.phase.start, Arc::clone(&self.phase.live))
            .map_err(|e| LoadError::Internal(format!("histogram: {e}")))?;
        let (st, win) = (Arc::clone(&state), Arc::clone(&window));
        let reader = if self.plan.conversations.is_some() {
            let requests = requests.filter_map(StreamRequest::into_conversation);
            match g.conversations.append_stream(requests).await {
                Ok(r) => tokio::spawn(read_acks(r.into_inner(), st, win, rec)),
                Err(s) => return Ok(Err(code_name(s.code()))),
            }
        } else {
            let requests = requests.filter_map(StreamRequest::into_store);
            match g.store.append_stream(requests).await {
                Ok(r) => tokio::spawn(read_acks(r.into_inner(), st, win, rec)),
                Err(s) => return Ok(Err(code_name(s.code()))),
            }
        };
        self.streamer = Some(Streamer {
            tx,
            state,
            window,
            reader,
        });
        Ok(Ok(()))
    }

    /// Closes the request side and waits for the remaining responses.
    async fn retire(&mut self, s: Streamer) -> Result<(), LoadError> {
        drop(s.tx);
        let rec = s
            .reader
            .await
            .map_err(|e| LoadError::Internal(format!("stream reader: {e}")))?;
        self.rec.merge(rec);
        Ok(())
    }

    async fn read(&mut self, user: Vec<u8>, due: Instant) {
        let req = ReadRequest {
            user_id: user.clone(),
            from_seq: 0,
            limit: self.plan.read_limit,
        };
        let since = self.since(due);
        let (mut good, mut bad) = (0u64, 0u64);
        let mut check = |payload: &[u8]| {
            if verify_payload(&user, payload).is_ok() {
                good += 1;
            } else {
                bad += 1;
            }
        };
        let result: Result<(), &'static str> = match &mut self.client {
            Target::Grpc(g) => {
                async {
                    let mut stream = g.store.read(req).await?.into_inner();
                    while let Some(m) = stream.message().await? {
                        check(&m.payload);
                    }
                    Ok(())
                }
                .await
            }
            .map_err(|s: Status| code_name(s.code())),
            Target::Embedded(store) => {
                let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
                embedded(store, req.user_id, move |st, u| {
                    st.read(u, req.from_seq, limit)
                })
                .await
                .map(|msgs| msgs.iter().for_each(|m| check(&m.payload)))
            }
        };
        self.rec.messages(good, bad);
        match result {
            Ok(()) if bad == 0 => self.rec.ok(Op::Read, since),
            Ok(()) => self.rec.error(Op::Read, VERIFY_ERROR),
            Err(code) => self.rec.error(Op::Read, code),
        }
    }

    async fn erase(&mut self, user: Vec<u8>, due: Instant) {
        let req = EraseRequest {
            user_id: user,
            block_new: false,
            delete_subject_conversations: false,
        };
        let since = self.since(due);
        let result = match &mut self.client {
            Target::Grpc(g) => g
                .store
                .erase(req)
                .await
                .map(drop)
                .map_err(|s| code_name(s.code())),
            Target::Embedded(store) => embedded(store, req.user_id, |st, u| st.erase(u))
                .await
                .map(drop),
        };
        match result {
            Ok(()) => self.rec.ok(Op::Erase, since),
            Err(code) => self.rec.error(Op::Erase, code),
        }
    }
}

/// Prints one progress line per second to stderr until aborted.
async fn progress(label: &'static str, start: Instant, live: Arc<Live>) {
    let second = Duration::from_secs(1);
    let first = tokio::time::Instant::from_std(start) + second;
    let mut tick = tokio::time::interval_at(first, second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let ops = live.ops.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        eprintln!(
            "[{label} {:>5.1}s] {ops} requests, {} req/s, {errors} errors",
            start.elapsed().as_secs_f64(),
            ops.saturating_sub(last)
        );
        last = ops;
    }
}

/// Derives worker `id`'s seed in phase `phase` from the run's seed.
fn worker_seed(seed: u64, phase: u64, id: usize) -> u64 {
    // SplitMix64 finalizer over the combined inputs.
    let mut z = seed
        ^ phase.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (id as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn run_phase(
    clients: &[Target],
    plan: &Arc<Plan>,
    config: &LoadConfig,
    limit: RunLimit,
    phase_no: u64,
) -> Result<(Recorder, Duration), LoadError> {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let histogram = |e: hdrhistogram::CreationError| LoadError::Internal(format!("histogram: {e}"));
    let phase = Arc::new(Phase {
        start,
        deadline: match limit {
            RunLimit::Duration(d) => start.checked_add(d),
            RunLimit::Requests(_) => None,
        },
        requests: match limit {
            RunLimit::Requests(n) => Some(n),
            RunLimit::Duration(_) => None,
        },
        rate: config.rate,
        next: AtomicU64::new(0),
        live: Arc::clone(&live),
        released: Arc::new(Semaphore::new(0)),
    });
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(rate) = config.rate {
        let (phase, stop, n) = (Arc::clone(&phase), Arc::clone(&stop), clients.len());
        std::thread::Builder::new()
            .name("load-clock".into())
            .spawn(move || dispatch(phase, rate, n, stop))
            .map_err(|e| LoadError::Internal(format!("clock thread: {e}")))?;
    }
    let label = if phase_no == 0 { "warm-up" } else { "load" };
    let progress = config
        .progress
        .then(|| tokio::spawn(progress(label, start, Arc::clone(&live))));
    let mut workers = Vec::with_capacity(clients.len());
    for (id, client) in clients.iter().enumerate() {
        let rng = match config.seed {
            Some(s) => SmallRng::seed_from_u64(worker_seed(s, phase_no, id)),
            None => rand::make_rng(),
        };
        let worker = Worker {
            client: client.clone(),
            plan: Arc::clone(plan),
            phase: Arc::clone(&phase),
            rng,
            rec: Recorder::new(start, Arc::clone(&live)).map_err(histogram)?,
            streamer: None,
        };
        workers.push(tokio::spawn(worker.run()));
    }
    let mut total = Recorder::new(start, live).map_err(histogram)?;
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(Ok(rec)) => total.merge(rec),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(LoadError::Internal(format!("worker: {e}")))),
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((total, elapsed)),
    }
}

/// Runs the load described by `config` and returns what it measured (and
/// writes the plot if `config.plot` is set). Failed requests are counted in
/// the report, not returned as errors.
///
/// # Errors
/// Bad settings, a server that cannot be reached, an unwritable plot file.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let picker = UserPicker::new(config.users, config.zipf).map_err(LoadError::Config)?;
    let conversations = config.conversation_picker()?;
    let mut created = false;
    if let Some(p) = &config.plot {
        // Fail before the run, not after it, if the plot cannot be written.
        created = !p.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .map_err(|e| LoadError::Plot(format!("plot {}: {e}", p.display())))?;
    }
    let result = run_checked(&config, picker, conversations).await;
    if result.is_err()
        && created
        && let Some(p) = &config.plot
    {
        let _ = std::fs::remove_file(p);
    }
    result
}

async fn run_checked(
    config: &LoadConfig,
    picker: UserPicker,
    conversations: Option<ConversationPicker>,
) -> Result<LoadReport, LoadError> {
    let (clients, target) = targets(config).await?;
    let conversation_mode = conversations
        .as_ref()
        .map(|p| (p.conversations(), p.authors()));
    let read_limit = match conversation_mode {
        Some(_) => config.conversation_read_limit,
        None => config.read_limit,
    };
    let plan = Arc::new(Plan {
        mix: config.mix,
        picker,
        prefix: config.user_prefix.clone(),
        conversations,
        payload_size: config.payload_size,
        read_limit,
        stream: config.stream,
        window: config.stream_window,
        open_loop: config.rate.is_some(),
    });
    if !config.warmup.is_zero() {
        run_phase(
            &clients,
            &plan,
            config,
            RunLimit::Duration(config.warmup),
            0,
        )
        .await?;
    }
    let (rec, elapsed) = run_phase(&clients, &plan, config, config.limit, 1).await?;
    let mut report = LoadReport {
        target,
        mode: match (config.embedded.is_some(), config.stream) {
            (true, _) => "embedded",
            (false, true) => "stream",
            (false, false) => "unary",
        }
        .to_owned(),
        stream_window: config.stream.then_some(config.stream_window),
        rate: config.rate,
        concurrency: config.concurrency,
        payload_size: config.payload_size,
        users: match conversation_mode {
            Some((n, k)) => n.saturating_mul(u64::from(k)),
            None => config.users,
        },
        zipf: config.zipf,
        user_prefix: match conversation_mode {
            Some(_) => config.conversation_prefix.clone(),
            None => config.user_prefix.clone(),
        },
        conversations: conversation_mode.map(|(n, _)| n),
        authors_per_conversation: conversation_mode.map(|(_, k)| k),
        mix: config.mix.to_string(),
        read_limit,
        warmup_secs: config.warmup.as_secs_f64(),
        elapsed_secs: 0.0,
        total_ops: 0,
        ok_ops: 0,
        errors: 0,
        throughput: 0.0,
        errors_by_code: Default::default(),
        ops: Vec::new(),
        messages_read: 0,
        messages_verified: 0,
        messages_corrupt: 0,
        tombstones_read: 0,
        send_lag_us: None,
        timeline: Vec::new(),
    };
    rec.finish(elapsed, &mut report);
    if let Some(p) = &config.plot {
        write_svg(&report, p).map_err(LoadError::Plot)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::connect::{Bearer, bearer, endpoint};
    use super::*;
    use tonic::Code;

    #[test]
    fn clock_releases_each_request_when_due_then_one_permit_per_worker() {
        let start = Instant::now();
        let phase = Arc::new(Phase {
            start,
            deadline: None,
            requests: Some(50),
            rate: Some(1000.0),
            next: AtomicU64::new(0),
            live: Arc::new(Live::default()),
            released: Arc::new(Semaphore::new(0)),
        });
        dispatch(
            Arc::clone(&phase),
            1000.0,
            3,
            Arc::new(AtomicBool::new(false)),
        );
        // Request 49 is due at 49 ms.
        assert!(start.elapsed() >= Duration::from_millis(49));
        assert_eq!(phase.released.available_permits(), 53);
    }

    #[test]
    fn open_loop_schedule_and_limits() {
        let live = Arc::new(Live::default());
        let start = Instant::now();
        let phase = Phase {
            start,
            deadline: start.checked_add(Duration::from_secs(1)),
            requests: None,
            rate: Some(4.0),
            next: AtomicU64::new(0),
            live: Arc::clone(&live),
            released: Arc::new(Semaphore::new(0)),
        };
        let dues: Vec<Duration> = std::iter::from_fn(|| phase.next_due())
            .map(|d| d - start)
            .collect();
        assert_eq!(
            dues,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec(),
            "request i is due at i/rate, none at or past the deadline"
        );
        let phase = Phase {
            start,
            deadline: None,
            requests: Some(3),
            rate: None,
            next: AtomicU64::new(0),
            live,
            released: Arc::new(Semaphore::new(0)),
        };
        assert_eq!(std::iter::from_fn(|| phase.next_due()).count(), 3);
    }

    #[test]
    fn addresses_tls_and_tokens() {
        let ok = |c: &LoadConfig| endpoint(c).map(|(_, a)| a);
        assert_eq!(
            ok(&LoadConfig::new("127.0.0.1:1")).unwrap(),
            "http://127.0.0.1:1"
        );
        let https = LoadConfig::new("https://localhost:1");
        assert!(ok(&https).unwrap_err().to_string().contains("--tls-ca"));
        let tls_on_http = LoadConfig {
            tls_domain: Some("x".into()),
            ..LoadConfig::new("http://localhost:1")
        };
        assert!(ok(&tls_on_http).unwrap_err().to_string().contains("https"));
        assert!(ok(&LoadConfig::new("ftp://x:1")).is_err());
        for bad in ["caf\u{e9}", "a b", "a\nb", "  "] {
            let c = LoadConfig {
                token: Some(bad.into()),
                ..LoadConfig::new("http://x:1")
            };
            assert!(bearer(&c).is_err(), "{bad:?}");
        }
        let good = LoadConfig {
            token: Some(" s3cret-token \n".into()),
            ..LoadConfig::new("http://x:1")
        };
        let Bearer(Some(v)) = bearer(&good).unwrap() else {
            panic!("no header")
        };
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret-token");
        assert_eq!(code_name(Code::DataLoss), "DATA_LOSS");
        assert_ne!(worker_seed(1, 1, 0), worker_seed(1, 1, 1));
    }
}

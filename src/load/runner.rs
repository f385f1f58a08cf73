//! Connections, workers and the request schedule.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status, Streaming};

use super::mix::{Mix, Op};
use super::payload::{build_payload, verify_payload};
use super::plot::write_svg;
use super::report::{Live, LoadReport, Recorder, VERIFY_ERROR};
use super::users::{UserPicker, user_id};
use super::{LoadConfig, LoadError, RunLimit};
use crate::server::proto::store_client::StoreClient;
use crate::server::proto::{AppendRequest, AppendResponse, EraseRequest, ReadRequest};

/// Error code of appends still in flight when their stream ended without an
/// error status.
const STREAM_ENDED: &str = "STREAM_ENDED";

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response message accepted (a Read streams one message per frame).
const MAX_DECODING: usize = 64 << 20;

type Client = StoreClient<InterceptedService<Channel, Bearer>>;

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
struct Bearer(Option<MetadataValue<Ascii>>);

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
fn chain(e: &dyn std::error::Error) -> String {
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

fn endpoint(config: &LoadConfig) -> Result<(Endpoint, String), LoadError> {
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

fn bearer(config: &LoadConfig) -> Result<Bearer, LoadError> {
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

/// One connection per worker (fails if any cannot be made), and the URL.
async fn connect(config: &LoadConfig) -> Result<(Vec<Client>, String), LoadError> {
    let (ep, addr) = endpoint(config)?;
    let bearer = bearer(config)?;
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
    let clients = channels
        .into_iter()
        .map(|ch| {
            StoreClient::with_interceptor(ch, bearer.clone())
                .max_decoding_message_size(MAX_DECODING)
        })
        .collect();
    Ok((clients, addr))
}

/// What every worker sends.
struct Plan {
    mix: Mix,
    picker: UserPicker,
    prefix: String,
    payload_size: usize,
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
}

impl Phase {
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

/// Sleeps until `due`. Tokio's timer has millisecond granularity and rounds
/// up, so the last millisecond is spent yielding: waking late would add up
/// to 1 ms to every open-loop latency.
async fn sleep_until(due: Instant) {
    let slack = Duration::from_millis(1);
    if let Some(early) = due.checked_sub(slack)
        && early > Instant::now()
    {
        tokio::time::sleep_until(tokio::time::Instant::from_std(early)).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

#[derive(Default)]
struct StreamState {
    /// When each unacknowledged append was sent (or due), in request order.
    pending: VecDeque<Instant>,
    /// Set (with the error code) once the stream has ended.
    broken: Option<&'static str>,
}

/// A worker's AppendStream: requests go into `tx`, a reader task matches
/// responses to `pending` in order and frees a `window` slot for each.
struct Streamer {
    tx: mpsc::Sender<AppendRequest>,
    state: Arc<Mutex<StreamState>>,
    window: Arc<Semaphore>,
    reader: tokio::task::JoinHandle<Recorder>,
}

async fn read_acks(
    mut inbound: Streaming<AppendResponse>,
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
    client: Client,
    plan: Arc<Plan>,
    phase: Arc<Phase>,
    rng: SmallRng,
    rec: Recorder,
    streamer: Option<Streamer>,
}

impl Worker {
    async fn run(mut self) -> Result<Recorder, LoadError> {
        while let Some(due) = self.phase.next_due() {
            if self.plan.open_loop {
                sleep_until(due).await;
            }
            let op = self
                .plan
                .mix
                .pick(self.rng.random_range(0..self.plan.mix.total()));
            let user =
                user_id(&self.plan.prefix, self.plan.picker.pick(&mut self.rng)).into_bytes();
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
            return self.stream_append(req, due).await;
        }
        let since = self.since(due);
        match self.client.append(req).await {
            Ok(_) => self.rec.ok(Op::Append, since),
            Err(s) => self.rec.error(Op::Append, code_name(s.code())),
        }
        Ok(())
    }

    async fn stream_append(&mut self, req: AppendRequest, due: Instant) -> Result<(), LoadError> {
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

    /// Opens a new AppendStream; `Ok(Err(code))` if the server refused it.
    async fn open_stream(&mut self) -> Result<Result<(), &'static str>, LoadError> {
        let (tx, rx) = mpsc::channel(self.plan.window);
        let inbound = match self.client.append_stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Ok(Err(code_name(s.code()))),
        };
        let state = Arc::new(Mutex::new(StreamState::default()));
        let window = Arc::new(Semaphore::new(self.plan.window));
        let rec = Recorder::new(self.phase.start, Arc::clone(&self.phase.live))
            .map_err(|e| LoadError::Internal(format!("histogram: {e}")))?;
        let reader = tokio::spawn(read_acks(
            inbound,
            Arc::clone(&state),
            Arc::clone(&window),
            rec,
        ));
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
        let result: Result<(), Status> = async {
            let mut stream = self.client.read(req).await?.into_inner();
            while let Some(m) = stream.message().await? {
                if verify_payload(&user, &m.payload).is_ok() {
                    good += 1;
                } else {
                    bad += 1;
                }
            }
            Ok(())
        }
        .await;
        self.rec.messages(good, bad);
        match result {
            Ok(()) if bad == 0 => self.rec.ok(Op::Read, since),
            Ok(()) => self.rec.error(Op::Read, VERIFY_ERROR),
            Err(s) => self.rec.error(Op::Read, code_name(s.code())),
        }
    }

    async fn erase(&mut self, user: Vec<u8>, due: Instant) {
        let req = EraseRequest {
            user_id: user,
            block_new: false,
        };
        let since = self.since(due);
        match self.client.erase(req).await {
            Ok(_) => self.rec.ok(Op::Erase, since),
            Err(s) => self.rec.error(Op::Erase, code_name(s.code())),
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
    clients: &[Client],
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
    });
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
    let result = run_checked(&config, picker).await;
    if result.is_err()
        && created
        && let Some(p) = &config.plot
    {
        let _ = std::fs::remove_file(p);
    }
    result
}

async fn run_checked(config: &LoadConfig, picker: UserPicker) -> Result<LoadReport, LoadError> {
    let (clients, target) = connect(config).await?;
    let plan = Arc::new(Plan {
        mix: config.mix,
        picker,
        prefix: config.user_prefix.clone(),
        payload_size: config.payload_size,
        read_limit: config.read_limit,
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
        mode: if config.stream { "stream" } else { "unary" }.to_owned(),
        stream_window: config.stream.then_some(config.stream_window),
        rate: config.rate,
        concurrency: config.concurrency,
        payload_size: config.payload_size,
        users: config.users,
        zipf: config.zipf,
        user_prefix: config.user_prefix.clone(),
        mix: config.mix.to_string(),
        read_limit: config.read_limit,
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
    use super::*;

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

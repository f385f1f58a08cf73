//! What a run measured: per-operation counts, errors by status code and
//! latency percentiles (HdrHistogram, microseconds), messages verified, and
//! throughput per second. [`LoadReport`] is also the `--json` document.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::Op;

/// Smallest latency a histogram records, in microseconds.
pub const LATENCY_MIN_US: u64 = 1;
/// Largest latency a histogram records (60 s), in microseconds; longer ones
/// are recorded as 60 s.
pub const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant figures the histograms keep.
pub const LATENCY_SIGFIG: u8 = 3;

/// The error code of a message that failed verification (next to the gRPC
/// status codes).
pub const VERIFY_ERROR: &str = "VERIFY";

/// An empty latency histogram with the bounds above.
///
/// # Errors
/// Never with these constant bounds; the error is hdrhistogram's.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGFIG)
}

/// Latency percentiles of one operation, in microseconds (0 when nothing was
/// recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Latencies recorded (successful operations).
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl LatencySummary {
    /// The summary of `h`.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One point of a latency-by-percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The percentile as "nines": `-log10(1 - q)`, so 0 is the minimum, 1 is
    /// p90, 2 is p99, 3 is p99.9.
    pub nines: f64,
    /// The latency at that percentile, microseconds.
    pub latency_us: u64,
}

/// The percentile curve of `h`, in steps of 0.1 nines up to the precision the
/// sample count supports (and at most 6 nines), ending at the maximum.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = (h.len() as f64).log10().clamp(0.0, 6.0);
    let mut out = Vec::new();
    let mut step = 0u32;
    loop {
        let nines = f64::from(step) / 10.0;
        if nines >= top {
            break;
        }
        let q = 1.0 - 10f64.powf(-nines);
        out.push(CurvePoint {
            nines,
            latency_us: h.value_at_quantile(q),
        });
        step += 1;
    }
    out.push(CurvePoint {
        nines: top.max(0.1),
        latency_us: h.max(),
    });
    out
}

/// The results of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// Which operation.
    pub op: Op,
    /// Completed requests (successful and failed).
    pub count: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by gRPC status code (`UNAVAILABLE`...) or `VERIFY`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Latency of the successful requests.
    pub latency_us: LatencySummary,
    /// Latency by percentile, for plotting (not in the JSON).
    #[serde(skip)]
    pub latency_curve: Vec<CurvePoint>,
}

/// Completions in one second of the measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TimelineBucket {
    /// Seconds since the measured run started (the bucket covers
    /// `second..second + width_secs`).
    pub second: u64,
    /// The bucket's length: 1 s except for a last, partial one.
    pub width_secs: f64,
    /// Requests completed (successful and failed).
    pub ops: u64,
    /// Appends completed.
    pub append: u64,
    /// Reads completed.
    pub read: u64,
    /// Erases completed.
    pub erase: u64,
    /// Requests that failed.
    pub errors: u64,
}

impl TimelineBucket {
    /// Completions per second in this bucket.
    pub fn ops_per_sec(&self) -> f64 {
        if self.width_secs > 0.0 {
            self.ops as f64 / self.width_secs
        } else {
            0.0
        }
    }
}

/// Everything a run measured. Serialized as the `--json` document;
/// [`fmt::Display`] renders the human table.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The server address (or the embedded store's directory).
    pub target: String,
    /// `unary`, `stream` (appends over AppendStream) or `embedded` (no server).
    pub mode: String,
    /// The AppendStream in-flight window (stream mode only).
    pub stream_window: Option<usize>,
    /// The fixed request rate (open loop), or `None` for a closed loop.
    pub rate: Option<f64>,
    /// Workers (one connection each).
    pub concurrency: usize,
    /// Bytes per appended payload.
    pub payload_size: usize,
    /// Distinct users; in conversation mode, the distinct authors
    /// (`conversations * authors_per_conversation`).
    pub users: u64,
    /// Zipf exponent of the user (or conversation) choice (0 = uniform).
    pub zipf: f64,
    /// Prefix of the user ids (of the conversation and author ids in
    /// conversation mode).
    pub user_prefix: String,
    /// Conversation mode: the number of conversations (`None`: the
    /// per-user mode). Appends, reads and erases are then reported as
    /// `append` (Conversations.Append/AppendStream), `read` (a backward
    /// Conversations.Read of the newest `read_limit`) and `erase`
    /// (Store.Erase of one author).
    pub conversations: Option<u64>,
    /// Conversation mode: the authors of each conversation.
    pub authors_per_conversation: Option<u32>,
    /// The operation mix.
    pub mix: String,
    /// Messages asked for per read.
    pub read_limit: u32,
    /// Seconds of warm-up before the measured run (not counted).
    pub warmup_secs: f64,
    /// Length of the measured run, until the last response arrived.
    pub elapsed_secs: f64,
    /// Completed requests (successful and failed).
    pub total_ops: u64,
    /// Successful requests.
    pub ok_ops: u64,
    /// Failed requests (including reads that returned a bad message).
    pub errors: u64,
    /// Completed requests per second.
    pub throughput: f64,
    /// Failed requests by code, all operations together.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Per operation, in the order append, read, erase.
    pub ops: Vec<OpReport>,
    /// Messages returned by reads.
    pub messages_read: u64,
    /// Of those, messages whose payload verified.
    pub messages_verified: u64,
    /// Of those, messages that failed verification (damaged, foreign or
    /// another user's).
    pub messages_corrupt: u64,
    /// Conversation mode: tombstones returned by reads (slots of erased
    /// authors or redacted messages), not counted in `messages_read`.
    pub tombstones_read: u64,
    /// Open loop only: how late requests were sent after their due time
    /// (waiting for a free worker or window slot, timer wake-up). Large
    /// values mean the generator, not only the server, fell behind: add
    /// workers or lower the rate.
    pub send_lag_us: Option<LatencySummary>,
    /// Completions per second of the measured run.
    pub timeline: Vec<TimelineBucket>,
}

impl LoadReport {
    /// The results of `op`.
    pub fn op(&self, op: Op) -> Option<&OpReport> {
        self.ops.iter().find(|r| r.op == op)
    }

    /// Failed requests with `code` (a gRPC code name such as `UNAVAILABLE`,
    /// or [`VERIFY_ERROR`]).
    pub fn errors_with(&self, code: &str) -> u64 {
        self.errors_by_code.get(code).copied().unwrap_or(0)
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schedule = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_owned(),
        };
        let mode = match self.stream_window {
            Some(w) => format!("{} (window {w})", self.mode),
            None => self.mode.clone(),
        };
        writeln!(f, "shredstore load against {}", self.target)?;
        let picked = match (self.conversations, self.authors_per_conversation) {
            (Some(n), Some(k)) => format!(
                "{n} conversations x {k} authors (zipf {}), reads of the newest {}",
                self.zipf, self.read_limit
            ),
            _ => format!("{} users (zipf {})", self.users, self.zipf),
        };
        writeln!(
            f,
            "  {mode}, {schedule}, {} workers, mix {}, {picked}, {} B payloads",
            self.concurrency, self.mix, self.payload_size
        )?;
        if self.warmup_secs > 0.0 {
            writeln!(f, "  warm-up {:.1} s (not counted)", self.warmup_secs)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  requests     {} in {:.2} s ({} ok, {} errors)",
            self.total_ops, self.elapsed_secs, self.ok_ops, self.errors
        )?;
        writeln!(f, "  throughput   {:.1} req/s", self.throughput)?;
        write!(
            f,
            "  messages     {} read, {} verified, {} corrupt",
            self.messages_read, self.messages_verified, self.messages_corrupt
        )?;
        if self.conversations.is_some() {
            write!(f, "; {} tombstones", self.tombstones_read)?;
        }
        writeln!(f)?;
        if let Some(l) = &self.send_lag_us {
            writeln!(
                f,
                "  send lag     p50 {} ms, p99 {} ms, max {} ms (behind the open-loop schedule)",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {:<7} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        )?;
        for r in &self.ops {
            if r.count == 0 {
                continue;
            }
            let l = &r.latency_us;
            writeln!(
                f,
                "  {:<7} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                r.op.name(),
                r.count,
                r.errors,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            )?;
        }
        if !self.errors_by_code.is_empty() {
            writeln!(f)?;
            writeln!(f, "  errors by code:")?;
            for (code, n) in &self.errors_by_code {
                let per_op: Vec<String> = self
                    .ops
                    .iter()
                    .filter_map(|r| {
                        r.errors_by_code
                            .get(code)
                            .map(|k| format!("{} {k}", r.op.name()))
                    })
                    .collect();
                writeln!(f, "    {code:<20} {n:>8}  ({})", per_op.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Counters the progress line reads while a phase runs.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) ops: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// One worker's measurements; merged into the report at the end.
pub(crate) struct Recorder {
    start: Instant,
    hist: [Histogram<u64>; 3],
    /// Open loop: send time minus due time.
    lag: Histogram<u64>,
    ok: [u64; 3],
    errors: [BTreeMap<&'static str, u64>; 3],
    messages_read: u64,
    messages_verified: u64,
    messages_corrupt: u64,
    tombstones: u64,
    /// Per second: completions of append, read, erase; errors.
    timeline: Vec<[u64; 4]>,
    live: Arc<Live>,
}

impl Recorder {
    pub(crate) fn new(
        start: Instant,
        live: Arc<Live>,
    ) -> Result<Recorder, hdrhistogram::CreationError> {
        Ok(Recorder {
            start,
            hist: [new_histogram()?, new_histogram()?, new_histogram()?],
            lag: new_histogram()?,
            ok: [0; 3],
            errors: Default::default(),
            messages_read: 0,
            messages_verified: 0,
            messages_corrupt: 0,
            tombstones: 0,
            timeline: Vec::new(),
            live,
        })
    }

    fn bucket(&mut self, now: Instant) -> &mut [u64; 4] {
        let second =
            usize::try_from(now.saturating_duration_since(self.start).as_secs()).unwrap_or(0);
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, [0; 4]);
        }
        &mut self.timeline[second]
    }

    /// A successful `op` that was sent (or due) at `since`.
    pub(crate) fn ok(&mut self, op: Op, since: Instant) {
        let now = Instant::now();
        let us = now.saturating_duration_since(since).as_micros();
        let us = u64::try_from(us)
            .unwrap_or(u64::MAX)
            .clamp(LATENCY_MIN_US, LATENCY_MAX_US);
        let i = op.index();
        self.hist[i].saturating_record(us);
        self.ok[i] += 1;
        self.bucket(now)[i] += 1;
        self.live.ops.fetch_add(1, Ordering::Relaxed);
    }

    /// An open-loop request due at `due` was sent at `sent`.
    pub(crate) fn lag(&mut self, due: Instant, sent: Instant) {
        let us = u64::try_from(sent.saturating_duration_since(due).as_micros())
            .unwrap_or(u64::MAX)
            .clamp(LATENCY_MIN_US, LATENCY_MAX_US);
        self.lag.saturating_record(us);
    }

    /// A failed `op`.
    pub(crate) fn error(&mut self, op: Op, code: &'static str) {
        let i = op.index();
        *self.errors[i].entry(code).or_insert(0) += 1;
        let b = self.bucket(Instant::now());
        b[i] += 1;
        b[3] += 1;
        self.live.ops.fetch_add(1, Ordering::Relaxed);
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages a read returned: `good` verified, `bad` did not.
    pub(crate) fn messages(&mut self, good: u64, bad: u64) {
        self.messages_read += good + bad;
        self.messages_verified += good;
        self.messages_corrupt += bad;
    }

    /// Tombstones a conversation read returned.
    pub(crate) fn tombstones(&mut self, n: u64) {
        self.tombstones += n;
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
        for i in 0..3 {
            // Same bounds on both sides: adding cannot fail.
            let _ = self.hist[i].add(&other.hist[i]);
            self.ok[i] += other.ok[i];
            for (code, n) in &other.errors[i] {
                *self.errors[i].entry(code).or_insert(0) += n;
            }
        }
        let _ = self.lag.add(&other.lag);
        self.messages_read += other.messages_read;
        self.messages_verified += other.messages_verified;
        self.messages_corrupt += other.messages_corrupt;
        self.tombstones += other.tombstones;
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), [0; 4]);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }

    /// Fills the measured fields of `report` (everything but the settings).
    pub(crate) fn finish(self, elapsed: Duration, report: &mut LoadReport) {
        let elapsed_secs = elapsed.as_secs_f64();
        let mut ops = Vec::with_capacity(3);
        let mut all_errors: BTreeMap<String, u64> = BTreeMap::new();
        for op in Op::ALL {
            let i = op.index();
            let errors_by_code: BTreeMap<String, u64> = self.errors[i]
                .iter()
                .map(|(c, n)| ((*c).to_owned(), *n))
                .collect();
            for (c, n) in &errors_by_code {
                *all_errors.entry(c.clone()).or_insert(0) += n;
            }
            let errors: u64 = errors_by_code.values().sum();
            ops.push(OpReport {
                op,
                count: self.ok[i] + errors,
                ok: self.ok[i],
                errors,
                errors_by_code,
                latency_us: LatencySummary::from_histogram(&self.hist[i]),
                latency_curve: percentile_curve(&self.hist[i]),
            });
        }
        report.total_ops = ops.iter().map(|r| r.count).sum();
        report.ok_ops = ops.iter().map(|r| r.ok).sum();
        report.errors = ops.iter().map(|r| r.errors).sum();
        report.throughput = if elapsed_secs > 0.0 {
            report.total_ops as f64 / elapsed_secs
        } else {
            0.0
        };
        report.elapsed_secs = elapsed_secs;
        report.errors_by_code = all_errors;
        report.ops = ops;
        report.messages_read = self.messages_read;
        report.messages_verified = self.messages_verified;
        report.messages_corrupt = self.messages_corrupt;
        report.tombstones_read = self.tombstones;
        report.send_lag_us =
            (!self.lag.is_empty()).then(|| LatencySummary::from_histogram(&self.lag));
        report.timeline = self
            .timeline
            .iter()
            .enumerate()
            .map(|(s, b)| {
                let start = s as f64;
                TimelineBucket {
                    second: s as u64,
                    width_secs: (elapsed_secs - start).clamp(0.0, 1.0),
                    ops: b[0] + b[1] + b[2],
                    append: b[0],
                    read: b[1],
                    erase: b[2],
                    errors: b[3],
                }
            })
            .collect();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_histogram() {
        let mut h = new_histogram().unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min_us, 1);
        // 3 significant figures: within 0.1%.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(s.p50_us, 5_000), "{s:?}");
        assert!(near(s.p90_us, 9_000), "{s:?}");
        assert!(near(s.p99_us, 9_900), "{s:?}");
        assert!(near(s.p999_us, 9_990), "{s:?}");
        assert!(near(s.max_us, 10_000), "{s:?}");
        assert!((s.mean_us - 5_000.5).abs() < 10.0, "{s:?}");
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram().unwrap()),
            LatencySummary::default()
        );

        let curve = percentile_curve(&h);
        assert_eq!(curve[0].nines, 0.0);
        assert_eq!(curve[0].latency_us, 1);
        let p90 = curve.iter().find(|p| (p.nines - 1.0).abs() < 1e-9).unwrap();
        assert!(near(p90.latency_us, 9_000));
        let last = curve.last().unwrap();
        assert!((last.nines - 4.0).abs() < 1e-9 && near(last.latency_us, 10_000));
        assert!(curve.windows(2).all(|w| w[0].latency_us <= w[1].latency_us));
    }

    #[test]
    fn recorder_counts_latencies_errors_and_merges() {
        let live = Arc::new(Live::default());
        let start = Instant::now();
        let mut a = Recorder::new(start, Arc::clone(&live)).unwrap();
        let mut b = Recorder::new(start, Arc::clone(&live)).unwrap();
        let past = Instant::now()
            .checked_sub(Duration::from_millis(5))
            .unwrap();
        a.ok(Op::Append, past);
        a.ok(Op::Append, Instant::now());
        b.ok(Op::Read, past);
        b.messages(9, 1);
        b.tombstones(2);
        b.error(Op::Read, VERIFY_ERROR);
        b.error(Op::Erase, "UNAVAILABLE");
        a.merge(b);
        assert_eq!(live.ops.load(Ordering::Relaxed), 5);
        assert_eq!(live.errors.load(Ordering::Relaxed), 2);
        let mut r = empty_report();
        a.finish(Duration::from_millis(500), &mut r);
        assert_eq!((r.total_ops, r.ok_ops, r.errors), (5, 3, 2));
        assert_eq!(r.throughput, 10.0);
        assert_eq!(r.errors_with(VERIFY_ERROR), 1);
        assert_eq!(r.errors_with("UNAVAILABLE"), 1);
        let append = r.op(Op::Append).unwrap();
        assert_eq!((append.count, append.ok), (2, 2));
        assert!(append.latency_us.max_us >= 5_000);
        assert_eq!(r.op(Op::Read).unwrap().errors_by_code[VERIFY_ERROR], 1);
        assert_eq!(
            (r.messages_read, r.messages_verified, r.messages_corrupt),
            (10, 9, 1)
        );
        assert_eq!(r.tombstones_read, 2);
        assert_eq!(r.timeline.len(), 1);
        assert_eq!(r.timeline[0].ops, 5);
        assert_eq!(r.timeline[0].ops_per_sec(), 10.0);
        let text = r.to_string();
        assert!(text.contains("append") && text.contains("VERIFY"), "{text}");
        assert!(
            text.contains("10 users") && !text.contains("tombstones"),
            "{text}"
        );
        let conv = LoadReport {
            conversations: Some(1000),
            authors_per_conversation: Some(5),
            read_limit: 50,
            ..r.clone()
        };
        let text = conv.to_string();
        assert!(
            text.contains("1000 conversations x 5 authors (zipf 1), reads of the newest 50")
                && text.contains("; 2 tombstones"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ops"][0]["op"], "append");
        assert_eq!(json["errors_by_code"]["VERIFY"], 1);
        assert!(json["ops"][0].get("latency_curve").is_none());
    }

    pub(crate) fn empty_report() -> LoadReport {
        LoadReport {
            target: "http://test".into(),
            mode: "unary".into(),
            stream_window: None,
            rate: None,
            concurrency: 1,
            payload_size: 200,
            users: 10,
            zipf: 1.0,
            user_prefix: "load-user-".into(),
            conversations: None,
            authors_per_conversation: None,
            mix: "append=90,read=9,erase=1".into(),
            read_limit: 100,
            warmup_secs: 0.0,
            elapsed_secs: 0.0,
            total_ops: 0,
            ok_ops: 0,
            errors: 0,
            throughput: 0.0,
            errors_by_code: BTreeMap::new(),
            ops: Vec::new(),
            messages_read: 0,
            messages_verified: 0,
            messages_corrupt: 0,
            tombstones_read: 0,
            send_lag_us: None,
            timeline: Vec::new(),
        }
    }
}

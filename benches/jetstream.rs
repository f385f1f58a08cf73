//! The JetStream engine against the embedded one and against raw JetStream
//! (issue 15): appends and reads of 200-byte payloads, closed loop, on a real
//! 3-node nats-server cluster on this machine (`sync_interval: always`),
//! through one and through two front ends (stores in this process, each its
//! own connection; gRPC would add the same cost to every row). The raw
//! baseline publishes the same payloads to a stream of the same settings
//! (R3, file storage) with one request per message and reads them back with
//! one `STREAM.MSG.GET` each. Not a criterion bench: it prints ops/s and
//! p50/p99 per row. `JETSTREAM_BENCH_OPS` sets the appends per row (default
//! 2000); needs `scripts/test-tools.sh`'s nats-server.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shredstore::{Durability, JetStreamOptions, Options, RootKey, Store, UserId};

#[path = "../tests/tools/nats_cluster.rs"]
mod nats_cluster;
#[path = "../tests/tools/mod.rs"]
mod tools;

const PAYLOAD: usize = 200;
const USERS: usize = 100;

struct Row {
    name: String,
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Row {
    fn print(&self) {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} |",
            self.name,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            self.hist.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn users() -> Vec<UserId> {
    (0..USERS)
        .map(|u| UserId::new(format!("bench-user-{u}").as_bytes()).unwrap())
        .collect()
}

/// `threads` closed-loop workers, worker `t` on `stores[t % stores.len()]`,
/// each doing `per_thread` calls of `op`; one histogram of microseconds.
fn run(
    name: &str,
    stores: &[Arc<Store>],
    threads: usize,
    per_thread: usize,
    op: impl Fn(&Store, usize, usize) + Send + Sync + Copy + 'static,
) -> Row {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&stores[t % stores.len()]);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut h = hist();
                barrier.wait();
                for i in 0..per_thread {
                    let start = Instant::now();
                    op(&store, t, i);
                    h.record(start.elapsed().as_micros().max(1) as u64).unwrap();
                }
                h
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut total = hist();
    for h in handles {
        total.add(h.join().unwrap()).unwrap();
    }
    Row {
        name: name.into(),
        ops: (threads * per_thread) as u64,
        elapsed: start.elapsed(),
        hist: total,
    }
}

fn append(store: &Store, t: usize, i: usize) {
    let users = USERS_CELL.get().unwrap();
    let payload = [b'a' + (i % 26) as u8; PAYLOAD];
    store
        .append(&users[(t * 7919 + i) % USERS], &payload)
        .expect("append");
}

fn read(store: &Store, t: usize, i: usize) {
    let users = USERS_CELL.get().unwrap();
    let got = store
        .read(&users[(t * 7919 + i) % USERS], 1, 20)
        .expect("read");
    assert_eq!(got.len(), 20);
}

static USERS_CELL: std::sync::OnceLock<Vec<UserId>> = std::sync::OnceLock::new();

fn js_store(cluster: &nats_cluster::NatsCluster, namespace: &str) -> Arc<Store> {
    Arc::new(
        Store::open(
            Options::new("/nonexistent/bench", RootKey::from_bytes([7; 32]))
                .purge_interval(None)
                .ledger_interval(None)
                .jetstream(JetStreamOptions::new(cluster.urls()).namespace(namespace)),
        )
        .expect("open a front end"),
    )
}

/// Raw JetStream: one publish request per message into a stream like the
/// store's, and one `STREAM.MSG.GET` per message read back.
fn raw(cluster: &nats_cluster::NatsCluster, ops: usize) -> (Row, Row) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let urls = cluster.urls();
        let first = urls.split(',').next().unwrap().to_owned();
        let client = async_nats::connect(first).await.unwrap();
        let config = serde_json::json!({
            "name": "RAW", "subjects": ["raw.>"], "storage": "file",
            "num_replicas": 3, "allow_atomic": true,
        });
        let _ = client
            .request("$JS.API.STREAM.CREATE.RAW", config.to_string().into())
            .await
            .unwrap();
        let mut h = hist();
        let start = Instant::now();
        for i in 0..ops {
            let t = Instant::now();
            let ack = client
                .request(format!("raw.{}.{i}", i % USERS), vec![b'r'; PAYLOAD].into())
                .await
                .unwrap();
            assert!(!ack.payload.is_empty());
            h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        }
        let append = Row {
            name: "raw JetStream publish (1 client)".into(),
            ops: ops as u64,
            elapsed: start.elapsed(),
            hist: h,
        };
        let mut h = hist();
        let start = Instant::now();
        for i in 0..ops {
            let t = Instant::now();
            let req = serde_json::json!({ "seq": (i % ops) + 1 }).to_string();
            let m = client
                .request("$JS.API.STREAM.MSG.GET.RAW", req.into())
                .await
                .unwrap();
            assert!(!m.payload.is_empty());
            h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        }
        let get = Row {
            name: "raw JetStream get, per message (1 client)".into(),
            ops: ops as u64,
            elapsed: start.elapsed(),
            hist: h,
        };
        (append, get)
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("jetstream: run with `cargo bench --bench jetstream`");
        return;
    }
    let ops: usize = std::env::var("JETSTREAM_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    USERS_CELL.set(users()).unwrap();
    let cluster = nats_cluster::NatsCluster::start(&tools::tool("nats-server"), 3);
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(
        Store::open(
            Options::new(dir.path(), RootKey::from_bytes([7; 32]))
                .purge_interval(None)
                .durability(Durability::Sync),
        )
        .unwrap(),
    );
    let one = js_store(&cluster, "bench");
    let two = [Arc::clone(&one), js_store(&cluster, "bench")];
    let reads = ops / 4;
    let rows = [
        run(
            "embedded RocksDB append (sync, 1 thread)",
            &[Arc::clone(&embedded)],
            1,
            ops,
            append,
        ),
        run(
            "embedded RocksDB append (sync, 4 threads)",
            &[Arc::clone(&embedded)],
            4,
            ops / 4,
            append,
        ),
        run(
            "jetstream append, 1 front end, 1 thread",
            &[Arc::clone(&one)],
            1,
            ops,
            append,
        ),
        run(
            "jetstream append, 1 front end, 4 threads",
            &[Arc::clone(&one)],
            4,
            ops / 4,
            append,
        ),
        run(
            "jetstream append, 2 front ends, 2 threads each",
            &two,
            4,
            ops / 4,
            append,
        ),
        run(
            "embedded RocksDB read of 20 (1 thread)",
            &[Arc::clone(&embedded)],
            1,
            reads,
            read,
        ),
        run(
            "jetstream read of 20, 1 front end, 1 thread",
            &[Arc::clone(&one)],
            1,
            reads,
            read,
        ),
        run(
            "jetstream read of 20, 2 front ends, 2 threads each",
            &two,
            4,
            reads / 4,
            read,
        ),
    ];
    let (raw_append, raw_get) = raw(&cluster, ops);
    println!("\n| row | ops/s | p50 ms | p99 ms |\n|---|---|---|---|");
    for r in rows.iter().chain([&raw_append, &raw_get]) {
        r.print();
    }
    let per = |r: &Row| r.ops as f64 / r.elapsed.as_secs_f64();
    println!(
        "\njetstream append (1 front end, 1 thread) / raw publish: {:.2}",
        per(&rows[2]) / per(&raw_append)
    );
    println!(
        "jetstream read of 20 (1 thread), messages/s / raw get: {:.2}",
        per(&rows[6]) * 20.0 / per(&raw_get)
    );
}

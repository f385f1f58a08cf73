//! kill -9 at random moments (the way sled's tests/test_crash_recovery.rs
//! does it): this test binary re-executes itself as a child that appends with
//! Sync durability and erases users, printing every intent before the call
//! and every acknowledgement after it to a pipe; the parent kills it with
//! SIGKILL after a random delay, reopens the store and checks that
//! - every acknowledged append is readable with its payload, unless an
//!   acknowledged erase of that user followed it;
//! - every acknowledged erase holds: none of the user's earlier messages is
//!   readable;
//! - an erase cut off by the kill happened entirely or not at all;
//! - every acknowledged redaction holds (the seq reads as a marker), and a
//!   cut-off one left either the message or the marker;
//! - messages that were not acknowledged may exist, but only ones the child
//!   tried to append, with their payloads;
//! - no seq is reused after the restart.
//!
//! The store is reused across rounds, so recovery after recovery is tested
//! too. It runs on both engines: on JetStream the child is a front end
//! killed mid-operation (an erase cut off there is whole or not at all, by
//! its atomic batch) and the parent's new front end checks the cluster. `SHREDSTORE_CRASH_ROUNDS` and `SHREDSTORE_CRASH_SEED` override the
//! defaults (12 rounds, a time-based seed printed on failure).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::engines::{self, Fixture, on_both_engines};
use shredstore::{Durability, Options, RootKey, Store, UserId};

on_both_engines!(
    kill_9_at_random_moments_loses_nothing_acknowledged,
    an_erase_cut_off_by_kill_9_is_whole_or_not_at_all,
);

const CHILD_ENV: &str = "SHREDSTORE_CRASH_CHILD";
const FIRST_N_ENV: &str = "SHREDSTORE_CRASH_FIRST_N";
/// The child erases one operation in this many.
const ERASE_ONE_IN_ENV: &str = "SHREDSTORE_CRASH_ERASE_ONE_IN";
const USERS: u64 = 12;
const ROOT: [u8; 32] = [0x42; 32];

fn tuned(options: Options) -> Options {
    options
        .durability(Durability::Sync)
        // Purges run in the background during the crash windows too.
        .purge_interval(Some(Duration::from_millis(30)))
}

/// The child's options: on the parent fixture's engine.
fn child_options(dir: &Path) -> Options {
    tuned(engines::child_options(Options::new(
        dir,
        RootKey::from_bytes(ROOT),
    )))
}

fn user(u: u64) -> UserId {
    UserId::new(format!("crash-user-{u}")).unwrap()
}

fn payload(u: u64, n: u64) -> Vec<u8> {
    format!("crash-user-{u}:message-{n}").into_bytes()
}

/// Small deterministic generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Not a test of its own: the body of the child process. Without the
/// environment variable it returns at once.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let first_n: u64 = std::env::var(FIRST_N_ENV).unwrap().parse().unwrap();
    let erase_one_in: u64 = std::env::var(ERASE_ONE_IN_ENV).unwrap().parse().unwrap();
    let store = Store::open(child_options(Path::new(&dir))).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut rng = Rng(first_n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // The last seq each user got in this process (redaction targets).
    let mut last: HashMap<u64, u64> = HashMap::new();
    for n in first_n.. {
        let u = rng.below(USERS);
        if rng.below(erase_one_in) == 0 {
            writeln!(out, "e {u}").unwrap();
            out.flush().unwrap();
            store.erase(&user(u)).unwrap();
            last.remove(&u);
            writeln!(out, "E {u}").unwrap();
        } else if let Some(seq) = last.get(&u).copied().filter(|_| rng.below(12) == 0) {
            writeln!(out, "r {u} {seq}").unwrap();
            out.flush().unwrap();
            store.redact_as(&user(u), seq, "crash", "crash").unwrap();
            writeln!(out, "R {u} {seq}").unwrap();
        } else if rng.below(4) == 0 {
            // A batch: all or nothing.
            let ns: Vec<u64> = (0..1 + rng.below(8)).map(|i| n * 16 + i).collect();
            let payloads: Vec<Vec<u8>> = ns.iter().map(|&m| payload(u, m)).collect();
            for m in &ns {
                writeln!(out, "a {u} {m}").unwrap();
            }
            out.flush().unwrap();
            let acks = store.append_batch(&user(u), &payloads).unwrap();
            for (m, a) in ns.iter().zip(acks) {
                writeln!(out, "A {u} {m} {}", a.seq).unwrap();
                last.insert(u, a.seq);
            }
        } else {
            let m = n * 16;
            writeln!(out, "a {u} {m}").unwrap();
            out.flush().unwrap();
            let a = store.append(&user(u), &payload(u, m)).unwrap();
            writeln!(out, "A {u} {m} {}", a.seq).unwrap();
            last.insert(u, a.seq);
        }
        out.flush().unwrap();
    }
}

/// What the parent knows about one user.
#[derive(Default, Debug)]
struct Model {
    /// Acknowledged appends not followed by an acknowledged erase: seq -> n.
    live: BTreeMap<u64, u64>,
    /// Appends tried but not acknowledged (n values), since the last check.
    tried: BTreeSet<u64>,
    /// An erase was started and not acknowledged.
    erase_pending: bool,
    /// Live seqs whose redaction was acknowledged.
    redacted: BTreeSet<u64>,
    /// Live seqs whose redaction was started and not acknowledged.
    redact_pending: BTreeSet<u64>,
    /// Highest seq ever acknowledged or read.
    max_seq: u64,
}

fn run_child(f: &Fixture, first_n: u64, erase_one_in: u64, kill_after: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, f.dir.path())
        .envs(f.child_env())
        .env(FIRST_N_ENV, first_n.to_string())
        .env(ERASE_ONE_IN_ENV, erase_one_in.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for the store to be open, then let it run for `kill_after`.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("child did not get ready");
        // The harness prints "test crash_child_process ... " first, on the
        // same line.
        if line.ends_with("ready") {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
}

/// Applies the child's output to the model.
fn apply(models: &mut BTreeMap<u64, Model>, lines: &[String]) -> usize {
    let mut acked = 0;
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap() };
        // Lines are written whole (one write(2) each); anything else is the
        // test harness's own output.
        let complete = matches!(
            (f[0], f.len()),
            ("a", 3) | ("A", 4) | ("e", 2) | ("E", 2) | ("r", 3) | ("R", 3)
        );
        if !complete {
            continue;
        }
        match f[0] {
            "a" => {
                models.entry(num(1)).or_default().tried.insert(num(2));
            }
            "A" => {
                let m = models.entry(num(1)).or_default();
                let (n, seq) = (num(2), num(3));
                assert!(
                    seq > m.max_seq,
                    "seq {seq} of user {} reused or out of order (max {})",
                    num(1),
                    m.max_seq
                );
                m.tried.remove(&n);
                m.live.insert(seq, n);
                m.max_seq = seq;
                acked += 1;
            }
            "e" => models.entry(num(1)).or_default().erase_pending = true,
            "E" => {
                let m = models.entry(num(1)).or_default();
                m.live.clear();
                m.redacted.clear();
                m.redact_pending.clear();
                m.erase_pending = false;
                acked += 1;
            }
            "r" => {
                models
                    .entry(num(1))
                    .or_default()
                    .redact_pending
                    .insert(num(2));
            }
            "R" => {
                let m = models.entry(num(1)).or_default();
                m.redact_pending.remove(&num(2));
                m.redacted.insert(num(2));
                acked += 1;
            }
            // A line cut off by the kill.
            _ => {}
        }
    }
    acked
}

/// Reopens the store and checks every user against the model, then brings
/// the model in line with what is stored.
/// Returns the redaction markers read and the erases the kill cut off.
fn verify(f: &Fixture, models: &mut BTreeMap<u64, Model>, context: &str) -> (usize, usize) {
    let store = Store::open(tuned(f.options())).unwrap();
    let mut markers_seen = 0;
    let mut cut_off_erases = 0;
    for (&u, m) in models.iter_mut() {
        // A cut-off erase with acknowledged messages to take: the check
        // below finds it whole or not at all.
        cut_off_erases += usize::from(m.erase_pending && !m.live.is_empty());
        let got = store.read(&user(u), 0, 10_000).unwrap();
        let markers: BTreeSet<u64> = got
            .iter()
            .filter(|g| g.redaction.is_some())
            .map(|g| g.seq)
            .collect();
        markers_seen += markers.len();
        let got: BTreeMap<u64, Vec<u8>> = got.into_iter().map(|g| (g.seq, g.payload)).collect();
        // Acknowledged redactions hold; a cut-off one may have happened.
        for seq in &m.redacted {
            assert!(
                markers.contains(seq) || m.erase_pending,
                "{context}: user {u}: acknowledged redaction of seq {seq} lost"
            );
        }
        for seq in &markers {
            assert!(
                m.redacted.contains(seq) || m.redact_pending.contains(seq),
                "{context}: user {u}: seq {seq} redacted by nobody"
            );
        }
        let all_acked_present = m
            .live
            .iter()
            .all(|(seq, n)| markers.contains(seq) || got.get(seq) == Some(&payload(u, *n)));
        if m.erase_pending && !m.live.is_empty() && !all_acked_present {
            // The cut-off erase happened: then it took everything.
            assert!(
                got.keys().all(|s| !m.live.contains_key(s)),
                "{context}: user {u}: a cut-off erase removed only part of the messages"
            );
            m.live.clear();
        } else {
            assert!(
                all_acked_present,
                "{context}: user {u}: acknowledged messages missing: expected seqs {:?}, got {:?}",
                m.live.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
        }
        for (seq, p) in &got {
            if markers.contains(seq) {
                assert!(
                    p.is_empty(),
                    "{context}: user {u} seq {seq}: marker with payload"
                );
                m.redacted.insert(*seq);
            } else if let Some(n) = m.live.get(seq) {
                assert_eq!(p, &payload(u, *n), "{context}: user {u} seq {seq}");
            } else {
                // Not acknowledged: must be one the child tried, with its
                // payload (a durable append whose ack was lost).
                let n = m
                    .tried
                    .iter()
                    .copied()
                    .find(|n| p == &payload(u, *n))
                    .unwrap_or_else(|| {
                        panic!(
                            "{context}: user {u} seq {seq}: a message nobody acknowledged or tried"
                        )
                    });
                m.tried.remove(&n);
                m.live.insert(*seq, n);
            }
            m.max_seq = m.max_seq.max(*seq);
        }
        m.tried.clear();
        m.erase_pending = false;
        m.redact_pending.clear();
        m.redacted.retain(|s| got.contains_key(s));
    }
    // No seq is reused after the restart: a new append lands above every
    // seq ever acknowledged or read for that user.
    for (&u, m) in models.iter_mut() {
        let a = store.append(&user(u), &payload(u, u64::MAX - u)).unwrap();
        assert!(
            a.seq > m.max_seq,
            "{context}: user {u}: seq {} reused after restart (max seen {})",
            a.seq,
            m.max_seq
        );
        m.live.insert(a.seq, u64::MAX - u);
        m.max_seq = a.seq;
    }
    store.close().unwrap();
    (markers_seen, cut_off_erases)
}

fn kill_9_at_random_moments_loses_nothing_acknowledged(f: &Fixture) {
    let rounds: u64 = std::env::var("SHREDSTORE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let run = crash_rounds(f, 40, rounds, usize::MAX);
    assert!(
        run.markers > 0,
        "{}: no redaction was ever checked",
        run.name
    );
}

/// Erases are one operation in three, so kills land in them: rounds go on
/// until three erases were cut off (60 rounds at most), each of which
/// `verify` found whole or not at all.
fn an_erase_cut_off_by_kill_9_is_whole_or_not_at_all(f: &Fixture) {
    let run = crash_rounds(f, 3, 60, 3);
    assert!(run.cut_off > 0, "{}: no kill landed in an erase", run.name);
}

/// What one crash run verified.
struct Run {
    /// Engine and seed, for the failure messages.
    name: String,
    markers: usize,
    cut_off: usize,
}

/// Up to `rounds` rounds of child, kill, verify; fewer once
/// `enough_cut_off` erases were cut off by the kill.
fn crash_rounds(f: &Fixture, erase_one_in: u64, rounds: u64, enough_cut_off: usize) -> Run {
    let seed: u64 = std::env::var("SHREDSTORE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let engine = if f.is_jetstream() {
        "jetstream"
    } else {
        "rocksdb"
    };
    let mut rng = Rng(seed | 1);
    let mut models: BTreeMap<u64, Model> = BTreeMap::new();
    let mut total_acked = 0;
    let (mut markers, mut cut_off, mut kills) = (0, 0, 0);
    for round in 0..rounds {
        // From "just opened" to a few hundred milliseconds of work.
        let kill_after = Duration::from_millis(rng.below(250));
        let context = format!("{engine}: seed {seed} round {round} (kill after {kill_after:?})");
        let lines = run_child(f, (round + 1) * 1_000_000_000, erase_one_in, kill_after);
        total_acked += apply(&mut models, &lines);
        let (m, c) = verify(f, &mut models, &context);
        markers += m;
        cut_off += c;
        kills += 1;
        if cut_off >= enough_cut_off {
            break;
        }
    }
    assert!(
        total_acked > 0,
        "{engine}: seed {seed}: the child never acknowledged anything"
    );
    eprintln!(
        "crash test ({engine}, erase 1 in {erase_one_in}): seed {seed}, {kills} kills, \
         {total_acked} acknowledged operations verified, {markers} redaction markers read back, \
         {cut_off} erases cut off by the kill"
    );
    Run {
        name: format!("{engine}: seed {seed}"),
        markers,
        cut_off,
    }
}

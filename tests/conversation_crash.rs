//! kill -9 at random moments over conversations (as `tests/crash.rs` does
//! for per-user logs): this test binary re-executes itself as a child that
//! appends to a few conversations as a few authors (Sync durability),
//! erases authors and deletes conversations, printing every intent before
//! the call and every acknowledgement after it; the parent kills it with
//! SIGKILL after a random delay, reopens the store and checks that
//! - every acknowledged append reads back with its author and payload,
//!   unless an acknowledged erase of its author (then a tombstone) or an
//!   acknowledged deletion of its conversation (then nothing) followed;
//! - an erase cut off by the kill happened for all of the author's slots in
//!   every conversation, or for none; a cut-off deletion took the whole
//!   conversation or nothing;
//! - slots nobody acknowledged are ones the child tried, with their
//!   payloads;
//! - no conversation seq is reused after the restart.
//!
//! The store is reused across rounds. `SHREDSTORE_CRASH_ROUNDS` and
//! `SHREDSTORE_CRASH_SEED` override the defaults (10 rounds, a time-based
//! seed printed on failure).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shredstore::{
    ConversationId, ConversationItem, Durability, Options, RootKey, Store, TombstoneCause, UserId,
};

const CHILD_ENV: &str = "SHREDSTORE_CONV_CRASH_CHILD";
const FIRST_N_ENV: &str = "SHREDSTORE_CONV_CRASH_FIRST_N";
const CONVS: u64 = 4;
const AUTHORS: u64 = 5;
const ROOT: [u8; 32] = [0x42; 32];

fn options(dir: &Path) -> Options {
    Options::new(dir, RootKey::from_bytes(ROOT))
        .durability(Durability::Sync)
        // Purges run in the background during the crash windows too.
        .purge_interval(Some(Duration::from_millis(30)))
}

fn author(a: u64) -> UserId {
    UserId::new(format!("crash-author-{a}")).unwrap()
}

fn conv(c: u64) -> ConversationId {
    ConversationId::new(format!("crash-room-{c}")).unwrap()
}

fn payload(c: u64, a: u64, n: u64) -> Vec<u8> {
    format!("room-{c}:author-{a}:message-{n}").into_bytes()
}

/// xorshift64*, so a failing seed replays.
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

/// Not a test of its own: the body of the child process.
#[test]
fn conversation_crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let first_n: u64 = std::env::var(FIRST_N_ENV).unwrap().parse().unwrap();
    let store = Store::open(options(Path::new(&dir))).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut rng = Rng(first_n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for n in first_n.. {
        let (c, a) = (rng.below(CONVS), rng.below(AUTHORS));
        match rng.below(60) {
            0 => {
                writeln!(out, "e {a}").unwrap();
                out.flush().unwrap();
                store.erase(&author(a)).unwrap();
                writeln!(out, "E {a}").unwrap();
            }
            1 => {
                writeln!(out, "d {c}").unwrap();
                out.flush().unwrap();
                store.conversation(&conv(c)).delete().unwrap();
                writeln!(out, "D {c}").unwrap();
            }
            k if k < 15 => {
                // A batch: all or nothing.
                let ns: Vec<u64> = (0..1 + rng.below(6)).map(|i| n * 16 + i).collect();
                let payloads: Vec<Vec<u8>> = ns.iter().map(|&m| payload(c, a, m)).collect();
                for m in &ns {
                    writeln!(out, "a {c} {a} {m}").unwrap();
                }
                out.flush().unwrap();
                let acks = store
                    .conversation(&conv(c))
                    .append_batch(&author(a), &payloads)
                    .unwrap();
                for (m, ack) in ns.iter().zip(acks) {
                    writeln!(out, "A {c} {a} {m} {}", ack.seq).unwrap();
                }
            }
            _ => {
                let m = n * 16;
                writeln!(out, "a {c} {a} {m}").unwrap();
                out.flush().unwrap();
                let ack = store
                    .conversation(&conv(c))
                    .append(&author(a), &payload(c, a, m))
                    .unwrap();
                writeln!(out, "A {c} {a} {m} {}", ack.seq).unwrap();
            }
        }
        out.flush().unwrap();
    }
}

/// What the parent knows about one conversation.
#[derive(Default, Debug)]
struct Conv {
    /// Acknowledged appends not followed by an acknowledged deletion:
    /// seq -> (author, n).
    live: BTreeMap<u64, (u64, u64)>,
    /// Appends tried but not acknowledged: (author, n).
    tried: BTreeSet<(u64, u64)>,
    /// A deletion was started and not acknowledged.
    delete_pending: bool,
    /// Highest seq ever acknowledged or read.
    max_seq: u64,
}

#[derive(Default, Debug)]
struct Model {
    convs: BTreeMap<u64, Conv>,
    /// Authors whose acknowledged erase came after these (conv, seq) slots:
    /// they read as tombstones (until their conversation is deleted).
    tombstoned: BTreeSet<(u64, u64)>,
    /// Authors with an erase started and not acknowledged.
    erase_pending: BTreeSet<u64>,
}

fn run_child(dir: &Path, first_n: u64, kill_after: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "conversation_crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(FIRST_N_ENV, first_n.to_string())
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("child did not get ready");
        if line.ends_with("ready") {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    rx.try_iter().collect()
}

/// Applies the child's output to the model; returns the acknowledgements.
fn apply(model: &mut Model, lines: &[String]) -> usize {
    let mut acked = 0;
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap() };
        let complete = matches!(
            (f[0], f.len()),
            ("a", 4) | ("A", 5) | ("e", 2) | ("E", 2) | ("d", 2) | ("D", 2)
        );
        if !complete {
            continue;
        }
        match f[0] {
            "a" => {
                let c = model.convs.entry(num(1)).or_default();
                c.tried.insert((num(2), num(3)));
            }
            "A" => {
                let (ci, a, n, seq) = (num(1), num(2), num(3), num(4));
                let c = model.convs.entry(ci).or_default();
                assert!(
                    seq > c.max_seq,
                    "room {ci}: seq {seq} reused or out of order (max {})",
                    c.max_seq
                );
                c.tried.remove(&(a, n));
                c.live.insert(seq, (a, n));
                c.max_seq = seq;
                acked += 1;
            }
            "e" => {
                model.erase_pending.insert(num(1));
            }
            "E" => {
                let a = num(1);
                model.erase_pending.remove(&a);
                for (ci, c) in &model.convs {
                    for (seq, (who, _)) in &c.live {
                        if *who == a {
                            model.tombstoned.insert((*ci, *seq));
                        }
                    }
                }
                acked += 1;
            }
            "d" => model.convs.entry(num(1)).or_default().delete_pending = true,
            "D" => {
                let ci = num(1);
                let c = model.convs.entry(ci).or_default();
                c.live.clear();
                c.delete_pending = false;
                model.tombstoned.retain(|(x, _)| *x != ci);
                acked += 1;
            }
            _ => {}
        }
    }
    acked
}

/// Reopens the store, checks every conversation against the model, then
/// brings the model in line with what is stored.
fn verify(dir: &Path, model: &mut Model, context: &str) -> usize {
    let store = Store::open(options(dir)).unwrap();
    let mut tombstones_seen = 0;
    // Per author with a cut-off erase: whether their slots read erased.
    let mut erase_outcome: BTreeMap<u64, bool> = BTreeMap::new();
    let conv_ids: Vec<u64> = model.convs.keys().copied().collect();
    for ci in conv_ids {
        let items = store.conversation(&conv(ci)).read(0, 10_000).unwrap();
        let got: BTreeMap<u64, ConversationItem> =
            items.into_iter().map(|i| (i.seq(), i)).collect();
        let c = model.convs.get_mut(&ci).unwrap();
        // A cut-off deletion took all of the acknowledged slots or none.
        if c.delete_pending && !c.live.is_empty() {
            let present = c.live.keys().filter(|s| got.contains_key(s)).count();
            assert!(
                present == 0 || present == c.live.len(),
                "{context}: room {ci}: a cut-off deletion removed {} of {} slots",
                c.live.len() - present,
                c.live.len()
            );
            if present == 0 {
                c.live.clear();
                model.tombstoned.retain(|(x, _)| *x != ci);
            }
        }
        for (seq, (a, n)) in &c.live {
            let item = got.get(seq).unwrap_or_else(|| {
                panic!("{context}: room {ci}: acknowledged seq {seq} (author {a}) missing")
            });
            match item {
                ConversationItem::Message(m) => {
                    assert!(
                        !model.tombstoned.contains(&(ci, *seq)),
                        "{context}: room {ci} seq {seq}: an erased author's message readable"
                    );
                    assert_eq!(m.author, author(*a), "{context}: room {ci} seq {seq}");
                    assert_eq!(
                        m.payload,
                        payload(ci, *a, *n),
                        "{context}: room {ci} seq {seq}"
                    );
                    if model.erase_pending.contains(a) {
                        let prev = erase_outcome.insert(*a, false);
                        assert_ne!(prev, Some(true), "{context}: author {a}: partial erase");
                    }
                }
                ConversationItem::Tombstone(t) => {
                    assert_eq!(t.cause, TombstoneCause::AuthorErased, "{context}");
                    tombstones_seen += 1;
                    if !model.tombstoned.contains(&(ci, *seq)) {
                        assert!(
                            model.erase_pending.contains(a),
                            "{context}: room {ci} seq {seq}: tombstone without an erase"
                        );
                        let prev = erase_outcome.insert(*a, true);
                        assert_ne!(prev, Some(false), "{context}: author {a}: partial erase");
                    }
                }
            }
        }
        // Slots nobody acknowledged: tried ones, with their payloads.
        for (seq, item) in &got {
            if c.live.contains_key(seq) {
                continue;
            }
            match item {
                ConversationItem::Message(m) => {
                    let found = c
                        .tried
                        .iter()
                        .copied()
                        .find(|(a, n)| m.author == author(*a) && m.payload == payload(ci, *a, *n))
                        .unwrap_or_else(|| {
                            panic!("{context}: room {ci} seq {seq}: a slot nobody tried")
                        });
                    c.tried.remove(&found);
                    c.live.insert(*seq, found);
                }
                // An unacknowledged append of an author erased since.
                ConversationItem::Tombstone(_) => {
                    c.live.insert(*seq, (u64::MAX, 0));
                    model.tombstoned.insert((ci, *seq));
                }
            }
            c.max_seq = c.max_seq.max(*seq);
        }
        c.tried.clear();
        c.delete_pending = false;
        for seq in got.keys() {
            c.max_seq = c.max_seq.max(*seq);
        }
    }
    // Cut-off erases that happened: their slots are tombstones from now on.
    for (a, happened) in &erase_outcome {
        if *happened {
            for (ci, c) in &model.convs {
                for (seq, (who, _)) in &c.live {
                    if who == a {
                        model.tombstoned.insert((*ci, *seq));
                    }
                }
            }
        }
    }
    model.erase_pending.clear();
    // No seq is reused after the restart.
    for (&ci, c) in model.convs.iter_mut() {
        let a = store
            .conversation(&conv(ci))
            .append(&author(0), &payload(ci, 0, u64::MAX))
            .unwrap();
        assert!(
            a.seq > c.max_seq,
            "{context}: room {ci}: seq {} reused after restart (max seen {})",
            a.seq,
            c.max_seq
        );
        c.live.insert(a.seq, (0, u64::MAX));
        c.max_seq = a.seq;
    }
    store.close().unwrap();
    tombstones_seen
}

#[test]
fn kill_9_over_conversations_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("SHREDSTORE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("SHREDSTORE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let (mut acked, mut tombstones) = (0, 0);
    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.below(250));
        let context = format!("seed {seed} round {round} (kill after {kill_after:?})");
        let lines = run_child(dir.path(), (round + 1) * 1_000_000_000, kill_after);
        acked += apply(&mut model, &lines);
        tombstones += verify(dir.path(), &mut model, &context);
    }
    assert!(
        acked > 0,
        "seed {seed}: the child never acknowledged anything"
    );
    eprintln!(
        "conversation crash test: seed {seed}, {rounds} kills, {acked} acknowledged operations, \
         {tombstones} tombstones read back"
    );
}

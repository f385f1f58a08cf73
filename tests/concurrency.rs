//! Concurrent appends to overlapping users while another thread erases some
//! of them: seqs are unique and increasing per user, and no message
//! acknowledged before an erase started is readable after it returned.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use common::{open_buffered, user};
use shredstore::{Store, UserId};

const THREADS: usize = 8;
const USERS: usize = 12;
const PER_THREAD: usize = 400;
const ERASED: [usize; 3] = [0, 1, 2];

/// A tiny deterministic generator (xorshift), one per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Ack {
    user: usize,
    seq: u64,
    acked: Instant,
}

struct EraseObs {
    user: usize,
    started: Instant,
    visible: Vec<u64>,
}

#[test]
fn appends_and_erases_race_safely() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_buffered(dir.path()));
    let ids: Arc<Vec<UserId>> = Arc::new((0..USERS).map(|u| user(&format!("c-{u}"))).collect());
    let barrier = Arc::new(Barrier::new(THREADS + 1));

    let appenders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, ids, barrier) =
                (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let mut acks = Vec::with_capacity(PER_THREAD);
                barrier.wait();
                for i in 0..PER_THREAD {
                    let u = (rng.next() % USERS as u64) as usize;
                    let p = format!("t{t} i{i}");
                    let a = store.append(&ids[u], p.as_bytes()).unwrap();
                    acks.push(Ack {
                        user: u,
                        seq: a.seq,
                        acked: Instant::now(),
                    });
                }
                acks
            })
        })
        .collect();

    let eraser = {
        let (store, ids, barrier) = (Arc::clone(&store), Arc::clone(&ids), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            let mut obs = Vec::new();
            for round in 0..30 {
                let u = ERASED[round % ERASED.len()];
                let started = Instant::now();
                store.erase(&ids[u]).unwrap();
                let visible = store
                    .read(&ids[u], 0, 10_000)
                    .unwrap()
                    .iter()
                    .map(|m| m.seq)
                    .collect();
                obs.push(EraseObs {
                    user: u,
                    started,
                    visible,
                });
                std::thread::yield_now();
            }
            obs
        })
    };

    let mut per_thread: Vec<Vec<Ack>> = appenders.into_iter().map(|h| h.join().unwrap()).collect();
    let obs = eraser.join().unwrap();

    // Per user, across all threads: no duplicate seq.
    let mut seen: HashMap<usize, HashSet<u64>> = HashMap::new();
    for acks in &per_thread {
        for a in acks {
            assert!(
                seen.entry(a.user).or_default().insert(a.seq),
                "duplicate seq {} for user {}",
                a.seq,
                a.user
            );
        }
    }
    // Per user, within a thread: strictly increasing (program order).
    for acks in &per_thread {
        let mut last: HashMap<usize, u64> = HashMap::new();
        for a in acks {
            if let Some(prev) = last.insert(a.user, a.seq) {
                assert!(a.seq > prev, "seq went backwards for user {}", a.user);
            }
        }
    }
    // After each erase returned, nothing acknowledged before it started is visible.
    let acks: Vec<Ack> = per_thread.drain(..).flatten().collect();
    for o in &obs {
        let before: HashSet<u64> = acks
            .iter()
            .filter(|a| a.user == o.user && a.acked < o.started)
            .map(|a| a.seq)
            .collect();
        for s in &o.visible {
            assert!(
                !before.contains(s),
                "user {} seq {s} readable after erase",
                o.user
            );
        }
    }
    // Users never erased have every acknowledged message, in order.
    for u in (0..USERS).filter(|u| !ERASED.contains(u)) {
        let mut want: Vec<u64> = acks.iter().filter(|a| a.user == u).map(|a| a.seq).collect();
        want.sort_unstable();
        let got: Vec<u64> = store
            .read(&ids[u], 0, 10_000)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(got, want, "user {u}");
    }
    // A final erase leaves erased users empty, and purge keeps the others.
    for u in ERASED {
        store.erase(&ids[u]).unwrap();
        assert!(store.read(&ids[u], 0, 10_000).unwrap().is_empty());
    }
    store.purge().unwrap();
    let total: usize = (0..USERS)
        .map(|u| store.read(&ids[u], 0, 10_000).unwrap().len())
        .sum();
    let expected = acks.iter().filter(|a| !ERASED.contains(&a.user)).count();
    assert_eq!(total, expected);
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

//! A sequence of operations on a real `Store` (fresh directory per input),
//! checked after every step against an in-memory model: the same messages
//! under the same seqs and timestamps, erased users read empty, seqs never
//! reused (after an erase a user's seqs continue above every earlier one, also
//! across reopen and purge), and every expected error (`InvalidArgument` with
//! its exact limits, `Blocked`, `IdempotencyConflict`, a failing RNG,
//! `WrongRootKey`) exactly where the model predicts it.
//!
//! Input: one byte of key-cache size, then operations (`Op`, decoded with
//! `arbitrary`) until the input ends. Users come from a set of four.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use shredstore::{
    Clock, Durability, EraseOptions, Error, Handle, InvalidArgument, MAX_CLIENT_MESSAGE_ID_LEN,
    Options, RootKey, SecureRandom, Store, UserId,
};

const MAX_PAYLOAD: usize = 40;
const MAX_BATCH: usize = 4;
const MAX_BATCH_BYTES: usize = 100;
const MAX_READ_LIMIT: usize = 8;
/// Operations per input; the rest of a longer input is ignored.
const MAX_OPS: usize = 48;
/// Slow operations (purge, compact, flush, reopen) per input.
const MAX_SLOW_OPS: usize = 6;
const ROOT_KEY: [u8; 32] = [0x5e; 32];
const START_MS: u64 = 1_700_000_000_000;

/// A payload: `len` (mod 48, so some exceed `MAX_PAYLOAD`) bytes derived from `seed`.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Payload {
    len: u8,
    seed: u8,
}

impl Payload {
    fn bytes(self) -> Vec<u8> {
        let len = usize::from(self.len % 48);
        (0..len)
            .map(|i| self.seed ^ (i as u8).wrapping_mul(167))
            .collect()
    }

    /// The `i`-th payload of a batch starting with `self`.
    fn nth(self, i: u8) -> Payload {
        Payload {
            len: self.len.wrapping_add(i.wrapping_mul(29)),
            seed: self.seed.wrapping_add(i),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        user: u8,
        payload: Payload,
    },
    /// `id` 0 is the empty id, 255 one byte too long, others `id-<n>`.
    AppendIdempotent {
        user: u8,
        id: u8,
        payload: Payload,
    },
    /// `count` (mod 7) payloads: 0 is empty, above `MAX_BATCH` too many.
    AppendBatch {
        user: u8,
        count: u8,
        first: Payload,
    },
    /// `from` 255 is `u64::MAX`; `limit` mod 10 (0 and 9 are invalid).
    Read {
        user: u8,
        from: u8,
        limit: u8,
    },
    /// `read_iter`, taking `take` (mod 12) messages.
    ReadIter {
        user: u8,
        from: u8,
        take: u8,
    },
    Erase {
        user: u8,
        block_new: bool,
    },
    Purge,
    Flush,
    Compact,
    /// Close (or just drop, as a crash would) and reopen.
    Reopen {
        clean: bool,
        key_cache: u8,
    },
    /// Reopening with another root key fails with `WrongRootKey`.
    ReopenWrongKey,
    /// Moves the clock, forwards or backwards.
    Tick {
        ms: u16,
        back: bool,
    },
    /// The next RNG call fails.
    FailNextRandom,
}

/// The user set: three short ids and the longest allowed.
fn user_id(user: u8) -> UserId {
    let bytes = match user % 4 {
        0 => b"alice".to_vec(),
        1 => b"bob".to_vec(),
        2 => b"carol@example.com".to_vec(),
        _ => vec![0xa5; shredstore::MAX_USER_ID_LEN],
    };
    UserId::new(bytes).expect("valid user id")
}

fn client_message_id(id: u8) -> Vec<u8> {
    match id {
        0 => Vec::new(),
        255 => vec![b'x'; MAX_CLIENT_MESSAGE_ID_LEN + 1],
        n => format!("id-{n}").into_bytes(),
    }
}

struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Deterministic (splitmix64) so a crash reproduces, with injectable failure.
struct TestRandom {
    state: AtomicU64,
    fail_next: AtomicBool,
}

impl SecureRandom for TestRandom {
    fn fill(&self, dest: &mut [u8]) -> shredstore::Result<()> {
        if self.fail_next.swap(false, Ordering::Relaxed) {
            return Err(Error::Random);
        }
        for chunk in dest.chunks_mut(8) {
            let mut z = self
                .state
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    seq: u64,
    timestamp_ms: u64,
    payload: Vec<u8>,
}

/// One user as the model sees it.
#[derive(Debug, Default)]
struct UserModel {
    /// Messages of the live key epoch, in seq order.
    live: Vec<Msg>,
    /// The next seq; never goes down.
    next_seq: u64,
    /// Highest key epoch created (0: never had a key).
    epoch: u32,
    /// Has a live key record (appended since the last erase).
    has_key: bool,
    blocked: bool,
    /// Client message ids of the live epoch.
    dedup: HashMap<Vec<u8>, Msg>,
    /// Erased (with something ever stored) and not yet purged.
    pending: bool,
}

/// What an operation should fail with.
#[derive(Debug)]
enum Expect {
    Invalid(InvalidArgument),
    Blocked,
    Conflict,
    Random,
}

fn check_err(op: &Op, got: &Error, want: &Expect) {
    let ok = match (got, want) {
        (Error::InvalidArgument(a), Expect::Invalid(b)) => a == b,
        (Error::Blocked, Expect::Blocked)
        | (Error::IdempotencyConflict, Expect::Conflict)
        | (Error::Random, Expect::Random) => true,
        _ => false,
    };
    assert!(ok, "{op:?}: got {got:?}, the model expected {want:?}");
}

fn validate_batch(payloads: &[Vec<u8>]) -> Option<InvalidArgument> {
    if payloads.is_empty() {
        return Some(InvalidArgument::EmptyBatch);
    }
    if payloads.len() > MAX_BATCH {
        return Some(InvalidArgument::BatchTooLarge {
            len: payloads.len(),
            max: MAX_BATCH,
        });
    }
    if let Some(p) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
        return Some(InvalidArgument::PayloadTooLarge {
            len: p.len(),
            max: MAX_PAYLOAD,
        });
    }
    let total: usize = payloads.iter().map(Vec::len).sum();
    (total > MAX_BATCH_BYTES).then_some(InvalidArgument::BatchBytesTooLarge {
        len: total,
        max: MAX_BATCH_BYTES,
    })
}

struct Harness {
    dir: PathBuf,
    clock: Arc<FakeClock>,
    rng: Arc<TestRandom>,
    store: Option<Store>,
    users: BTreeMap<u8, UserModel>,
    /// The model's "next RNG call fails" flag.
    rng_fails: bool,
    purges_since_open: u64,
    handles: BTreeMap<u8, Handle>,
}

impl Harness {
    fn options(&self, key: [u8; 32], key_cache: u8) -> Options {
        Options::new(&self.dir, RootKey::from_bytes(key))
            .durability(Durability::Buffered)
            .purge_interval(None)
            .max_payload(MAX_PAYLOAD)
            .max_batch(MAX_BATCH)
            .max_batch_bytes(MAX_BATCH_BYTES)
            .max_read_limit(MAX_READ_LIMIT)
            .key_cache_entries(usize::from(key_cache % 4) + 1)
            .block_cache_bytes(1 << 20)
            .write_buffer_bytes(1 << 20)
            .clock(self.clock.clone())
            .rng(self.rng.clone())
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn user(&mut self, user: u8) -> &mut UserModel {
        self.users.entry(user % 4).or_insert_with(|| UserModel {
            next_seq: 1,
            ..UserModel::default()
        })
    }

    /// Appends `payloads` in the model, or says why it must fail.
    fn model_append(&mut self, user: u8, payloads: &[Vec<u8>]) -> Result<Vec<Msg>, Expect> {
        let now = self.now();
        let rng_fails = self.rng_fails;
        let u = self.user(user);
        if u.blocked {
            return Err(Expect::Blocked);
        }
        if rng_fails {
            // Nothing is written; the failure is used up.
            self.rng_fails = false;
            return Err(Expect::Random);
        }
        let u = self.user(user);
        if !u.has_key {
            u.epoch += 1;
            u.has_key = true;
        }
        let mut out = Vec::new();
        for p in payloads {
            let m = Msg {
                seq: u.next_seq,
                timestamp_ms: now,
                payload: p.clone(),
            };
            u.next_seq += 1;
            u.live.push(m.clone());
            out.push(m);
        }
        Ok(out)
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append { user, payload } => {
                let p = payload.bytes();
                let got = self.store().append(&user_id(user), &p);
                let want = match validate_batch(std::slice::from_ref(&p)) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_append(user, std::slice::from_ref(&p)),
                };
                match (got, want) {
                    (Ok(a), Ok(m)) => {
                        assert_eq!(
                            (a.seq, a.timestamp_ms),
                            (m[0].seq, m[0].timestamp_ms),
                            "{op:?}"
                        )
                    }
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::AppendIdempotent { user, id, payload } => {
                let p = payload.bytes();
                let id = client_message_id(id);
                let got = self.store().append_idempotent(&user_id(user), &id, &p);
                let want = if id.is_empty() {
                    Err(Expect::Invalid(InvalidArgument::EmptyClientMessageId))
                } else if id.len() > MAX_CLIENT_MESSAGE_ID_LEN {
                    Err(Expect::Invalid(InvalidArgument::ClientMessageIdTooLong {
                        len: id.len(),
                        max: MAX_CLIENT_MESSAGE_ID_LEN,
                    }))
                } else if let Some(e) = validate_batch(std::slice::from_ref(&p)) {
                    Err(Expect::Invalid(e))
                } else if let Some(earlier) = self.user(user).dedup.get(&id).cloned() {
                    // Duplicates are found before the blocked check and use no randomness.
                    if earlier.payload == p {
                        Ok((earlier, true))
                    } else {
                        Err(Expect::Conflict)
                    }
                } else {
                    self.model_append(user, std::slice::from_ref(&p))
                        .map(|mut m| (m.remove(0), false))
                };
                if let Ok((m, false)) = &want {
                    self.user(user).dedup.insert(id, m.clone());
                }
                match (got, want) {
                    (Ok(a), Ok((m, duplicate))) => assert_eq!(
                        (a.appended.seq, a.appended.timestamp_ms, a.duplicate),
                        (m.seq, m.timestamp_ms, duplicate),
                        "{op:?}"
                    ),
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::AppendBatch { user, count, first } => {
                let payloads: Vec<Vec<u8>> = (0..count % 7).map(|i| first.nth(i).bytes()).collect();
                let got = self.store().append_batch(&user_id(user), &payloads);
                let want = match validate_batch(&payloads) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_append(user, &payloads),
                };
                match (got, want) {
                    (Ok(a), Ok(m)) => {
                        let a: Vec<_> = a.iter().map(|a| (a.seq, a.timestamp_ms)).collect();
                        let m: Vec<_> = m.iter().map(|m| (m.seq, m.timestamp_ms)).collect();
                        assert_eq!(a, m, "{op:?}");
                    }
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::Read { user, from, limit } => {
                let from = if from == 255 {
                    u64::MAX
                } else {
                    u64::from(from)
                };
                let limit = usize::from(limit % 10);
                let got = self.store().read(&user_id(user), from, limit);
                let want = if limit == 0 {
                    Err(Expect::Invalid(InvalidArgument::ZeroLimit))
                } else if limit > MAX_READ_LIMIT {
                    Err(Expect::Invalid(InvalidArgument::LimitTooLarge {
                        limit,
                        max: MAX_READ_LIMIT,
                    }))
                } else {
                    Ok(self.expected_read(user, from, limit))
                };
                match (got, want) {
                    (Ok(got), Ok(want)) => assert_eq!(as_msgs(got), want, "{op:?}"),
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::ReadIter { user, from, take } => {
                let from = if from == 255 {
                    u64::MAX
                } else {
                    u64::from(from)
                };
                let take = usize::from(take % 12);
                let got: Vec<_> = self
                    .store()
                    .read_iter(&user_id(user), from)
                    .expect("read_iter")
                    .take(take)
                    .collect::<shredstore::Result<_>>()
                    .expect("read_iter item");
                assert_eq!(as_msgs(got), self.expected_read(user, from, take), "{op:?}");
            }
            Op::Erase { user, block_new } => {
                let options = if block_new {
                    EraseOptions::block_new()
                } else {
                    EraseOptions::default()
                };
                let got = self
                    .store()
                    .erase_with(&user_id(user), options)
                    .expect("erase");
                let now = self.now();
                let handle = self.handles[&(user % 4)];
                let u = self.user(user);
                let messages_before = if u.has_key { u.live.len() as u64 } else { 0 };
                assert_eq!(
                    (got.handle, got.messages_before, got.epoch, got.erased_at_ms),
                    (handle, messages_before, u.epoch, now),
                    "{op:?}"
                );
                u.live.clear();
                u.dedup.clear();
                u.has_key = false;
                u.blocked |= block_new;
                u.pending |= u.epoch > 0;
            }
            Op::Purge => {
                let report = self.store().purge().expect("purge");
                let pending = self.users.values().filter(|u| u.pending).count();
                assert!(report.complete, "purge incomplete: {report:?}");
                assert_eq!(report.erasures_purged, pending, "{op:?}");
                self.users.values_mut().for_each(|u| u.pending = false);
                self.purges_since_open += 1;
            }
            Op::Flush => self.store().flush().expect("flush"),
            Op::Compact => self.store().compact().expect("compact"),
            Op::Reopen { clean, key_cache } => {
                let store = self.store.take().expect("store is open");
                if clean {
                    store.close().expect("close");
                } else {
                    drop(store);
                }
                self.open(key_cache);
            }
            Op::ReopenWrongKey => {
                self.store
                    .take()
                    .expect("store is open")
                    .close()
                    .expect("close");
                let mut wrong = ROOT_KEY;
                wrong[0] ^= 1;
                match Store::open(self.options(wrong, 0)) {
                    Err(Error::WrongRootKey) => {}
                    other => panic!("open with a wrong root key: {other:?}"),
                }
                self.open(0);
            }
            Op::Tick { ms, back } => {
                let now = self.now();
                let ms = u64::from(ms);
                let next = if back {
                    now.saturating_sub(ms)
                } else {
                    now + ms
                };
                self.clock.0.store(next, Ordering::Relaxed);
            }
            Op::FailNextRandom => {
                self.rng.fail_next.store(true, Ordering::Relaxed);
                self.rng_fails = true;
            }
        }
    }

    fn expected_read(&mut self, user: u8, from: u64, limit: usize) -> Vec<Msg> {
        self.user(user)
            .live
            .iter()
            .filter(|m| m.seq >= from)
            .take(limit)
            .cloned()
            .collect()
    }

    fn open(&mut self, key_cache: u8) {
        self.store = Some(Store::open(self.options(ROOT_KEY, key_cache)).expect("reopen"));
        self.purges_since_open = 0;
        // Handles are stable for the life of the store.
        for (user, handle) in &self.handles {
            assert_eq!(self.store().handle(&user_id(*user)), *handle);
        }
    }

    /// Everything the store holds agrees with the model.
    fn check_all(&mut self) {
        for user in 0..4u8 {
            let got: Vec<_> = self
                .store()
                .read_iter(&user_id(user), 0)
                .expect("read_iter")
                .collect::<shredstore::Result<_>>()
                .expect("read_iter item");
            let want = self.expected_read(user, 0, usize::MAX);
            assert_eq!(as_msgs(got), want, "contents of user {user}");
        }
        let stats = self.store().stats().expect("stats");
        let live_users = self.users.values().filter(|u| u.has_key).count() as u64;
        let pending = self.users.values().filter(|u| u.pending).count() as u64;
        assert_eq!(stats.users, live_users, "Stats::users");
        assert_eq!(stats.pending_erasures, pending, "Stats::pending_erasures");
        assert_eq!(
            stats.purges_done, self.purges_since_open,
            "Stats::purges_done"
        );
    }
}

fn as_msgs(got: Vec<shredstore::Message>) -> Vec<Msg> {
    got.into_iter()
        .map(|m| Msg {
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
            payload: m.payload,
        })
        .collect()
}

/// Where the stores go: `SHREDSTORE_FUZZ_TMP`, else the system temp dir.
/// Not tmpfs if avoidable: RocksDB preallocates its WAL with `fallocate`,
/// which tmpfs zero-fills, and that made every input twice as slow.
fn scratch_root() -> PathBuf {
    std::env::var_os("SHREDSTORE_FUZZ_TMP").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn is_slow(op: &Op) -> bool {
    matches!(
        op,
        Op::Purge | Op::Flush | Op::Compact | Op::Reopen { .. } | Op::ReopenWrongKey
    )
}

/// `SHREDSTORE_FUZZ_DEBUG=1`: print each operation and its duration (to
/// follow a crashing input).
static DEBUG: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SHREDSTORE_FUZZ_DEBUG").is_some());

fn debug(what: &dyn std::fmt::Debug, started: Instant) {
    if *DEBUG {
        eprintln!("{:>8.2?} {what:?}", started.elapsed());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(key_cache) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    let mut slow = 0;
    while !u.is_empty() && ops.len() < MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if is_slow(&op) {
            if slow == MAX_SLOW_OPS {
                continue;
            }
            slow += 1;
        }
        ops.push(op);
    }

    let dir = tempfile::Builder::new()
        .prefix("shredstore-fuzz-")
        .tempdir_in(scratch_root())
        .expect("temp dir");
    let mut h = Harness {
        dir: dir.path().join("db"),
        clock: Arc::new(FakeClock(AtomicU64::new(START_MS))),
        rng: Arc::new(TestRandom {
            state: AtomicU64::new(0),
            fail_next: AtomicBool::new(false),
        }),
        store: None,
        users: BTreeMap::new(),
        rng_fails: false,
        purges_since_open: 0,
        handles: BTreeMap::new(),
    };
    let started = Instant::now();
    h.open(key_cache);
    debug(&"open", started);
    for user in 0..4u8 {
        let handle = h.store().handle(&user_id(user));
        h.handles.insert(user, handle);
    }
    for op in &ops {
        let started = Instant::now();
        h.step(op);
        debug(op, started);
        h.check_all();
    }
    let started = Instant::now();
    if let Some(store) = h.store.take() {
        store.close().expect("close");
    }
    debug(&"close", started);
    let started = Instant::now();
    drop(dir);
    debug(&"remove dir", started);
});

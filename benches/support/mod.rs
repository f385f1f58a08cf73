//! Shared pieces of the criterion benches: stores in temp dirs, a seeded
//! Zipf user picker, and the ratio summary printed after a bench run.
#![allow(dead_code)]

use std::path::PathBuf;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use shredstore::{Durability, Options, RootKey, Store, UserId};

/// Payload size of the append/read benches (a typical chat message).
pub const PAYLOAD: usize = 200;

pub fn options(dir: &std::path::Path, durability: Durability) -> Options {
    Options::new(dir, RootKey::from_bytes([7; 32]))
        .durability(durability)
        // Benches call purge themselves; the background purger would add noise.
        .purge_interval(None)
}

pub fn open_store(dir: &std::path::Path, durability: Durability) -> Store {
    Store::open(options(dir, durability)).expect("open store")
}

pub fn open_plain(dir: &std::path::Path) -> rocksdb::DB {
    shredstore::open_plain_baseline(&options(dir, Durability::Buffered)).expect("open plain db")
}

/// Writes `payloads` as seqs 1.. of every user into the plain baseline (one
/// batch per user) and flushes it: the same bytes the store benches hold.
pub fn fill_plain(db: &rocksdb::DB, ids: &[UserId], payloads: &[Vec<u8>]) {
    let cf = db.cf_handle(shredstore::layout::CF_MESSAGES).expect("cf");
    for user in ids {
        let mut wb = rocksdb::WriteBatch::default();
        for (seq, p) in payloads.iter().enumerate() {
            wb.put_cf(cf, plain_key(user, seq as u64 + 1), p);
        }
        db.write(wb).expect("write");
    }
    db.flush_cf(cf).expect("flush");
}

pub fn user_ids(n: usize) -> Vec<UserId> {
    (0..n)
        .map(|i| UserId::new(format!("user-{i:08}")).expect("user id"))
        .collect()
}

/// The plain baseline's 16-byte key prefix of a user: the id's bytes, zero
/// padded (bench ids are 13 bytes), the same length as the store's handle.
pub fn plain_prefix(user: &UserId) -> [u8; 16] {
    let mut p = [0u8; 16];
    let id = user.as_bytes();
    p[..id.len()].copy_from_slice(id);
    p
}

/// The plain baseline's key: prefix, then the seq big-endian: 24 bytes, like
/// the store's handle || seq.
pub fn plain_key(user: &UserId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&plain_prefix(user));
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn payload(len: usize, tag: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(tag) as u8)
        .collect()
}

/// Picks user indices 0..n with Zipf(s = 1.0) skew (a few very active users,
/// a long tail), from a fixed seed so every run sees the same sequence.
pub struct UserPicker {
    rng: StdRng,
    zipf: Option<Zipf<f64>>,
}

impl UserPicker {
    pub fn new(n: usize) -> Self {
        UserPicker {
            rng: StdRng::seed_from_u64(42),
            zipf: (n > 1).then(|| Zipf::new(n as f64, 1.0).expect("zipf")),
        }
    }

    pub fn next(&mut self) -> usize {
        match &self.zipf {
            Some(z) => z.sample(&mut self.rng) as usize - 1,
            None => 0,
        }
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Where criterion writes its results: `$CRITERION_HOME`, else `criterion/`
/// in the target dir this bench binary was built into
/// (`<target>/release/deps/<bench>`). Benches pass it to criterion with
/// [`criterion`] so the summary reads what criterion wrote.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// A criterion configured from the command line, writing to [`criterion_home`].
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .output_directory(&criterion_home())
        .configure_from_args()
}

static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// Call first in a bench's main: summaries only use estimates written after it.
pub fn begin() {
    STARTED.get_or_init(std::time::SystemTime::now);
}

/// Median time per iteration, in ns, of `group/function/param` from this
/// run's criterion estimates; `None` if that bench did not run in this
/// process (older estimates of earlier runs are ignored).
pub fn median_ns(group: &str, function: &str, param: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(function)
        .join(param)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < *STARTED.get()? {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// Prints `numerator / denominator` throughput ratios (time of the
/// denominator's bench over the numerator's) for the benches that ran.
pub fn print_ratios(title: &str, group: &str, num: &str, den: &str, params: &[String]) {
    let rows: Vec<_> = params
        .iter()
        .filter_map(|p| {
            let n = median_ns(group, num, p)?;
            let d = median_ns(group, den, p)?;
            Some((p, n, d))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n{title}");
    println!("{:<28} {:>14} {:>14} {:>10}", "case", num, den, "ratio");
    for (p, n, d) in rows {
        println!(
            "{:<28} {:>12.2}µs {:>12.2}µs {:>9.2}x",
            p,
            n / 1000.0,
            d / 1000.0,
            d / n
        );
    }
}

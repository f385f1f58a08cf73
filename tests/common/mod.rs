//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use shredstore::{Durability, Options, RootKey, Store, UserId};

pub mod engines;

/// The root key every test store uses (tests that need another say so).
pub const ROOT: [u8; 32] = [0x42; 32];

pub fn options(dir: &Path) -> Options {
    Options::new(dir, RootKey::from_bytes(ROOT)).purge_interval(None)
}

pub fn open(dir: &Path) -> Store {
    Store::open(options(dir)).expect("open store")
}

pub fn open_buffered(dir: &Path) -> Store {
    Store::open(options(dir).durability(Durability::Buffered)).expect("open store")
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Every regular file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Length of the windows the scanner matches. Every needle must be at least
/// this long; a needle is "found" if any of its 16-byte windows occurs.
pub const WINDOW: usize = 16;

/// Scans every file under `dir` for the needles; returns (file, needle index)
/// for each hit. Each needle contributes all of its 16-byte windows, so even a
/// partial copy of at least 16 bytes is found.
pub fn scan(dir: &Path, needles: &[Vec<u8>]) -> Vec<(PathBuf, usize)> {
    let mut windows: std::collections::HashMap<&[u8], usize> = Default::default();
    for (i, n) in needles.iter().enumerate() {
        assert!(n.len() >= WINDOW, "needle {i} shorter than {WINDOW} bytes");
        for w in n.windows(WINDOW) {
            windows.insert(w, i);
        }
    }
    let mut hits = Vec::new();
    for file in files_below(dir) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // deleted while we listed
        };
        let mut found = HashSet::new();
        for w in bytes.windows(WINDOW) {
            if let Some(&i) = windows.get(w) {
                found.insert(i);
            }
        }
        hits.extend(found.into_iter().map(|i| (file.clone(), i)));
    }
    hits
}

/// Opens the data directory with plain RocksDB (the store must be closed).
pub fn raw_db(dir: &Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    rocksdb::DB::open_cf(&opts, dir, shredstore::layout::ALL_CFS).expect("raw open")
}

/// All (key, value) pairs of a column family whose key starts with `prefix`.
pub fn raw_entries(db: &rocksdb::DB, cf: &str, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cf = db.cf_handle(cf).unwrap();
    let mut it = db.raw_iterator_cf(cf);
    it.seek(prefix);
    let mut out = Vec::new();
    while let Some((k, v)) = it.item() {
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
        it.next();
    }
    it.status().unwrap();
    out
}

/// The stdout lines of a child test process.
pub type ChildLines = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Re-executes this test binary as a child running test `name` alone (the
/// kill -9 tests: the child test returns at once unless its variables are
/// set), with `env` set, and reads its stdout past the line ending in
/// "ready" (libtest's "test NAME ... " precedes it without a newline).
pub fn spawn_child(
    name: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, ChildLines) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.ends_with("ready") => return (child, lines),
            Some(Ok(_)) => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child exited before ready");
            }
        }
    }
}

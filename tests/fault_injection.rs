//! A full disk, simulated with a file-size limit: this test binary re-executes
//! itself as a child under `prlimit --fsize` (with SIGXFSZ ignored, so a write
//! past the limit fails with EFBIG instead of killing the process). The child
//! appends with Sync durability until a write fails and reports what every
//! call returned. The parent checks that
//! - the failing call returned an error (no panic, no abort),
//! - the store then refused every write (`Error::Poisoned`),
//! - after reopening without the limit, every acknowledged append is readable
//!   with its payload, and the store takes new appends with higher seqs.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use shredstore::{Durability, Error, Options, RootKey, Store, UserId};

const CHILD_ENV: &str = "SHREDSTORE_FAULT_CHILD";
const LIMIT_BYTES: u64 = 400 * 1024;

fn options(dir: &Path) -> Options {
    Options::new(dir, RootKey::from_bytes([0x51; 32]))
        .durability(Durability::Sync)
        .purge_interval(None)
}

fn user(u: u64) -> UserId {
    UserId::new(format!("fault-user-{u}")).unwrap()
}

fn payload(u: u64, n: u64) -> Vec<u8> {
    let mut p = format!("fault-user-{u}:message-{n}:").into_bytes();
    p.resize(1500, b'.');
    p
}

/// Not a test of its own: the body of the child process. Without the
/// environment variable it returns at once.
#[test]
fn fault_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let store = match Store::open(options(Path::new(&dir))) {
        Ok(s) => s,
        Err(e) => {
            writeln!(out, "OPEN-ERR {e:?}").unwrap();
            return;
        }
    };
    for n in 0..100_000u64 {
        let u = n % 5;
        match store.append(&user(u), &payload(u, n)) {
            Ok(a) => writeln!(out, "A {u} {n} {}", a.seq).unwrap(),
            Err(e) => {
                writeln!(out, "ERR {}", variant(&e)).unwrap();
                let again = store.append(&user(u), b"after the failure");
                writeln!(
                    out,
                    "AFTER-APPEND {}",
                    again.err().as_ref().map_or("ok", variant)
                )
                .unwrap();
                let erase = store.erase(&user(u));
                writeln!(
                    out,
                    "AFTER-ERASE {}",
                    erase.err().as_ref().map_or("ok", variant)
                )
                .unwrap();
                let read = store.read(&user(u), 0, 10);
                writeln!(
                    out,
                    "AFTER-READ {}",
                    read.err().as_ref().map_or("ok", variant)
                )
                .unwrap();
                break;
            }
        }
        out.flush().unwrap();
    }
    writeln!(out, "DONE").unwrap();
}

fn variant(e: &Error) -> &'static str {
    match e {
        Error::Poisoned => "Poisoned",
        Error::Storage(_) => "Storage",
        Error::Io(_) => "Io",
        _ => "Other",
    }
}

#[test]
fn full_disk_poisons_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        // An ignored signal stays ignored across exec.
        .arg(r#"trap '' XFSZ; exec prlimit --fsize="$1" -- "$2" --exact fault_child_process --nocapture --test-threads=1"#)
        .arg("sh")
        .arg(LIMIT_BYTES.to_string())
        .arg(&exe)
        .env(CHILD_ENV, dir.path())
        .output()
        .expect("sh and prlimit (util-linux) are needed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child must not crash: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut acked: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    let mut failure = None;
    let mut after = Vec::new();
    for line in stdout.lines() {
        // The harness prints "test fault_child_process ... " before the
        // child's first line, on the same line.
        let line = line.rsplit("... ").next().unwrap_or(line);
        let f: Vec<&str> = line.split(' ').collect();
        match (f[0], f.len()) {
            ("A", 4) => acked
                .entry(f[1].parse().unwrap())
                .or_default()
                .push((f[2].parse().unwrap(), f[3].parse().unwrap())),
            ("ERR", 2) => failure = Some(f[1].to_owned()),
            ("AFTER-APPEND" | "AFTER-ERASE" | "AFTER-READ", 2) => {
                after.push((f[0].to_owned(), f[1].to_owned()));
            }
            ("OPEN-ERR", _) => panic!("the store did not open under the limit: {line}"),
            _ => {}
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= 20,
        "too few appends before the disk filled: {total}\n{stdout}"
    );
    let failure = failure.unwrap_or_else(|| panic!("no write failed under the limit\n{stdout}"));
    assert!(
        failure == "Storage" || failure == "Io",
        "the failing append returned {failure}"
    );
    assert_eq!(
        after,
        [
            ("AFTER-APPEND".to_owned(), "Poisoned".to_owned()),
            ("AFTER-ERASE".to_owned(), "Poisoned".to_owned()),
            // Reads still work on a poisoned store.
            ("AFTER-READ".to_owned(), "ok".to_owned()),
        ]
    );

    // Reopen without the limit: everything acknowledged is there.
    let store = Store::open(options(dir.path())).unwrap();
    for (&u, msgs) in &acked {
        let got = store.read(&user(u), 0, 10_000).unwrap();
        let got: BTreeMap<u64, Vec<u8>> = got.into_iter().map(|m| (m.seq, m.payload)).collect();
        for (n, seq) in msgs {
            assert_eq!(
                got.get(seq),
                Some(&payload(u, *n)),
                "user {u}: acknowledged seq {seq} lost"
            );
        }
        // At most the one failed append may also have reached the WAL.
        assert!(got.len() <= msgs.len() + 1, "user {u}: unexpected messages");
        let max = msgs.iter().map(|(_, s)| *s).max().unwrap();
        let next = store.append(&user(u), b"after reopen").unwrap().seq;
        assert!(next > max, "user {u}: seq {next} reused");
    }
    store.close().unwrap();
}

/// Regression (issue 11, item 11): a failed `sync()` or `close()` did not
/// poison the store, though DESIGN.md says a failed write or sync must: the
/// buffered appends before it may be lost, so nothing more may be
/// acknowledged until the store is reopened.
#[test]
fn a_failed_sync_poisons_the_store() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let hooks = shredstore::TestHooks {
        fail_syncs: Some(Arc::clone(&fail)),
        ..shredstore::TestHooks::default()
    };
    let store = Store::open(
        options(dir.path())
            .durability(Durability::Buffered)
            .test_hooks(hooks.clone()),
    )
    .unwrap();
    let u = user(1);
    store.append(&u, b"before").unwrap();
    store.sync().unwrap();
    fail.store(true, Ordering::Release);
    assert!(store.sync().is_err());
    fail.store(false, Ordering::Release);
    assert!(matches!(store.append(&u, b"after"), Err(Error::Poisoned)));
    assert!(matches!(store.erase(&u), Err(Error::Poisoned)));
    assert!(store.stats().unwrap().poisoned);
    assert!(matches!(store.close(), Err(Error::Poisoned)));

    // close() itself: its final sync fails, and says so.
    let store = Store::open(options(dir.path()).test_hooks(hooks)).unwrap();
    assert_eq!(store.read(&u, 0, 10).unwrap().len(), 1);
    fail.store(true, Ordering::Release);
    assert!(store.close().is_err());
}

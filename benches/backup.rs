//! Backup and restore times: a store of `SHREDSTORE_BACKUP_BENCH_MESSAGES`
//! messages (default 100,000; the closing note of issue 14 used 1,000,000)
//! of 200 bytes from 10,000 users, 100 of them erased after the backup.
//! `write` takes a backup into a file (checkpoint, manifest, journal, tar);
//! `restore` restores it into a new directory with the live journal
//! (extract and check, open, replay the 100 erasures, purge). The baseline,
//! measured in the same run: copying the store's files with `std::fs::copy`
//! (what a cold file-level backup cannot avoid).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use shredstore::backup::{self, RestoreOptions};
use shredstore::{Durability, Options, RootKey, Store};

#[path = "support/mod.rs"]
mod support;

const USERS: usize = 10_000;
const ERASED: usize = 100;

fn messages() -> usize {
    std::env::var("SHREDSTORE_BACKUP_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn options(dir: &std::path::Path) -> Options {
    Options::new(dir, RootKey::from_bytes([7; 32]))
        .durability(Durability::Buffered)
        .purge_interval(None)
}

fn bench(c: &mut Criterion) {
    let n = messages();
    let per_user = n.div_ceil(USERS);
    let param = n.to_string();
    let root = support::tempdir();
    let live = root.path().join("live");
    let store = Store::open(options(&live)).expect("open");
    let ids = support::user_ids(USERS);
    let payloads: Vec<Vec<u8>> = (0..per_user)
        .map(|i| support::payload(support::PAYLOAD, i as u64))
        .collect();
    for u in &ids {
        store.append_batch(u, &payloads).expect("append");
    }
    store.compact().expect("compact");
    let file = root.path().join("bench.shredbak");
    let take = |store: &Store| {
        let mut f = backup::create_private(&file).expect("create");
        backup::write_backup(store, &mut f, "bench").expect("backup");
        f.sync_all().expect("sync");
    };
    take(&store);
    for u in ids.iter().take(ERASED) {
        store.erase(u).expect("erase");
    }
    store.purge().expect("purge");
    std::thread::sleep(Duration::from_millis(2));
    let journal = store.erasure_journal().expect("journal");
    let backup_bytes = std::fs::metadata(&file).expect("size").len();

    let mut group = c.benchmark_group("backup");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    let old = root.path().join("old.shredbak");
    std::fs::copy(&file, &old).expect("copy");
    group.bench_function(BenchmarkId::new("write", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                take(&store);
                total += t.elapsed();
            }
            total
        })
    });
    let mut round = 0u64;
    group.bench_function(BenchmarkId::new("restore", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let target = root.path().join(format!("restored-{round}"));
                let t = Instant::now();
                let r = backup::restore(
                    RestoreOptions::new(&old, &target, RootKey::from_bytes([7; 32]))
                        .journal(journal.clone()),
                )
                .expect("restore");
                total += t.elapsed();
                assert_eq!(r.replay.users_erased, ERASED as u64);
                std::fs::remove_dir_all(&target).expect("remove");
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("copy_files", &param), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let target = root.path().join(format!("copy-{round}"));
                let t = Instant::now();
                std::fs::create_dir(&target).expect("mkdir");
                for e in std::fs::read_dir(&live).expect("list") {
                    let e = e.expect("entry");
                    if e.file_type().expect("type").is_file() && e.file_name() != "LOCK" {
                        std::fs::copy(e.path(), target.join(e.file_name())).expect("copy");
                    }
                }
                std::fs::File::open(&target)
                    .and_then(|d| d.sync_all())
                    .expect("sync");
                total += t.elapsed();
                std::fs::remove_dir_all(&target).expect("remove");
            }
            total
        })
    });
    group.finish();
    store.close().expect("close");
    println!(
        "\nbackup of {n} messages ({USERS} users, {per_user} each, {} bytes of payload): a file of {backup_bytes} bytes",
        support::PAYLOAD
    );
}

fn main() {
    support::begin();
    let mut c = support::criterion();
    bench(&mut c);
    c.final_summary();
    let param = messages().to_string();
    let copy = support::median_ns("backup", "copy_files", &param);
    for (function, what) in [
        ("write", "write_backup to a file (checkpoint, journal, tar)"),
        (
            "restore",
            "restore with the live journal (extract, open, replay 100 erasures, purge)",
        ),
    ] {
        if let Some(t) = support::median_ns("backup", function, &param) {
            match copy {
                Some(p) => println!(
                    "{what}: {:.2} s, {:.2}x copying the store's files",
                    t / 1e9,
                    t / p
                ),
                None => println!("{what}: {:.2} s", t / 1e9),
            }
        }
    }
}

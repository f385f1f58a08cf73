//! kill -9 of the server process: a real `shredstore serve` (Sync durability)
//! is killed with SIGKILL while clients stream appends (AppendStream) and
//! erase users; after a restart on the same data directory, every
//! acknowledged append is readable, every acknowledged erase holds, a cut-off
//! erase happened entirely or not at all, and no seq is reused. Several
//! rounds on the same store, each killed at a random moment.
#![cfg(feature = "server")]

mod spawn_server;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shredstore::server::proto::store_client::StoreClient;
use shredstore::server::proto::{AppendRequest, EraseRequest, ReadRequest};
use tonic::transport::Channel;

const USERS: u64 = 8;

fn serve(data: &Path, key: &Path) -> (Child, String) {
    let (data, key) = (data.as_os_str(), key.as_os_str());
    spawn_server::spawn_serve([
        OsStr::new("--durability"),
        OsStr::new("sync"),
        OsStr::new("--purge-interval-secs"),
        OsStr::new("1"),
        OsStr::new("--data-dir"),
        data,
        OsStr::new("--root-key-file"),
        key,
    ])
}

fn user(u: u64) -> Vec<u8> {
    format!("grpc-crash-user-{u}").into_bytes()
}

fn payload(u: u64, n: u64) -> Vec<u8> {
    format!("grpc-crash-user-{u}:message-{n}").into_bytes()
}

/// What the clients saw, per user.
#[derive(Default, Debug)]
struct Seen {
    /// Acknowledged appends not followed by an acknowledged erase: seq -> n.
    live: BTreeMap<u64, u64>,
    /// Sent, not acknowledged (n values).
    tried: BTreeSet<u64>,
    erase_pending: bool,
    max_seq: u64,
}

type Log = Arc<Mutex<BTreeMap<u64, Seen>>>;

/// One client: an AppendStream for user `u`'s appends, with an erase (unary,
/// on another connection) every so often. Runs until the server dies.
async fn client(url: String, u: u64, first_n: u64, log: Log) {
    let Ok(mut c) = StoreClient::connect(url.clone()).await else {
        return;
    };
    let Ok(mut eraser) = StoreClient::connect(url).await else {
        return;
    };
    let mut n = first_n;
    loop {
        // A burst of appends over one stream, acknowledged in order.
        let burst: Vec<u64> = (n..n + 20).collect();
        n += 20;
        {
            let mut l = log.lock().unwrap();
            l.entry(u).or_default().tried.extend(burst.iter().copied());
        }
        let reqs: Vec<AppendRequest> = burst
            .iter()
            .map(|&m| AppendRequest {
                user_id: user(u),
                payload: payload(u, m),
                client_message_id: None,
            })
            .collect();
        let Ok(resp) = c.append_stream(tokio_stream::iter(reqs)).await else {
            return;
        };
        let mut acks = resp.into_inner();
        for &m in &burst {
            match acks.message().await {
                Ok(Some(a)) => {
                    let mut l = log.lock().unwrap();
                    let s = l.entry(u).or_default();
                    assert!(a.seq > s.max_seq, "user {u}: seq {} not increasing", a.seq);
                    s.tried.remove(&m);
                    s.live.insert(a.seq, m);
                    s.max_seq = a.seq;
                }
                _ => return,
            }
        }
        if n.is_multiple_of(100) {
            log.lock().unwrap().entry(u).or_default().erase_pending = true;
            let r = eraser
                .erase(EraseRequest {
                    user_id: user(u),
                    block_new: false,
                    delete_subject_conversations: false,
                })
                .await;
            if r.is_err() {
                return;
            }
            let mut l = log.lock().unwrap();
            let s = l.entry(u).or_default();
            s.live.clear();
            s.erase_pending = false;
        }
    }
}

async fn read_all(c: &mut StoreClient<Channel>, u: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut from = 0;
    loop {
        let mut s = c
            .read(ReadRequest {
                user_id: user(u),
                from_seq: from,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = 0;
        while let Some(m) = s.message().await.unwrap() {
            from = m.seq + 1;
            out.insert(m.seq, m.payload);
            got += 1;
        }
        if got < 1000 {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (data, key) = (dir.path().join("data"), dir.path().join("root.key"));
    std::fs::write(&key, [0x77u8; 32]).unwrap();
    let log: Log = Arc::default();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut acked_total = 0usize;
    for round in 0..4u64 {
        let (mut server, url) = serve(&data, &key);
        let tasks: Vec<_> = (0..USERS)
            .map(|u| {
                tokio::spawn(client(
                    url.clone(),
                    u,
                    (round + 1) * 1_000_000,
                    Arc::clone(&log),
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(100 + (seed.wrapping_mul(round + 7) % 400));
        tokio::time::sleep(kill_after).await;
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }

        let (mut server, url) = serve(&data, &key);
        let mut c = StoreClient::connect(url).await.unwrap();
        let context = format!("round {round}, killed after {kill_after:?}");
        // The clients are done: take the log out (no lock across awaits).
        let mut l = std::mem::take(&mut *log.lock().unwrap());
        for u in 0..USERS {
            let s = l.entry(u).or_default();
            let got = read_all(&mut c, u).await;
            let all_present = s
                .live
                .iter()
                .all(|(seq, n)| got.get(seq) == Some(&payload(u, *n)));
            if s.erase_pending && !all_present {
                assert!(
                    s.live.keys().all(|k| !got.contains_key(k)),
                    "{context}: user {u}: a cut-off erase removed only part"
                );
                s.live.clear();
            } else {
                assert!(
                    all_present,
                    "{context}: user {u}: acknowledged seqs {:?} not all in {:?}",
                    s.live.keys().collect::<Vec<_>>(),
                    got.keys().collect::<Vec<_>>()
                );
            }
            for (seq, p) in &got {
                if !s.live.contains_key(seq) {
                    let n = s
                        .tried
                        .iter()
                        .copied()
                        .find(|n| p == &payload(u, *n))
                        .unwrap_or_else(|| {
                            panic!("{context}: user {u} seq {seq}: unknown message")
                        });
                    s.live.insert(*seq, n);
                }
                s.max_seq = s.max_seq.max(*seq);
            }
            acked_total += s.live.len();
            s.tried.clear();
            s.erase_pending = false;
            // No seq reuse after the restart.
            let a = c
                .append(AppendRequest {
                    user_id: user(u),
                    payload: payload(u, u64::MAX - u),
                    client_message_id: None,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                a.seq > s.max_seq,
                "{context}: user {u}: seq {} reused",
                a.seq
            );
            s.live.insert(a.seq, u64::MAX - u);
            s.max_seq = a.seq;
        }
        *log.lock().unwrap() = l;
        server.kill().unwrap();
        server.wait().unwrap();
    }
    assert!(acked_total > 0, "nothing was acknowledged");
    eprintln!("grpc crash test: 4 kills, {acked_total} stored messages verified across rounds");
}

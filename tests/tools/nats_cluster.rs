//! A real NATS JetStream cluster for tests: `n` `nats-server` processes on
//! 127.0.0.1 (random ports), each with its own store directory in a temp dir,
//! `sync_interval: always` (every acknowledged write fsynced), every process
//! stopped by its pid (SIGKILL) when the cluster is dropped.
//!
//! Only std and tempfile: the crate's unit tests include this file by path
//! (`src/store/engine/jetstream/tests.rs`); an integration test can add it to
//! `tools` as a module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server of a [`NatsCluster`].
pub struct Node {
    /// The server's name (`n1`, `n2`, ...), as JetStream reports leaders.
    pub name: String,
    /// The client port.
    pub port: u16,
    /// The HTTP monitoring port (`/healthz`).
    pub http_port: u16,
    /// The JetStream store directory.
    pub store_dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; dropping it kills every server.
pub struct NatsCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The servers, in start order.
    pub nodes: Vec<Node>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl NatsCluster {
    /// Starts `n` servers of `bin` clustered with each other and waits until
    /// every one reports JetStream healthy.
    pub fn start(bin: &Path, n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(n);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store_dir = dir.path().join(&name);
            std::fs::create_dir_all(&store_dir).expect("store dir");
            let (port, http_port) = (free_port(), free_port());
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{port}\n\
                     http: 127.0.0.1:{http_port}\n\
                     server_name: {name}\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                     cluster {{ name: shredstore-test, listen: 127.0.0.1:{cluster_port}, \
                     routes: [{routes}] }}\n",
                    store_dir.display()
                ),
            )
            .expect("server config");
            nodes.push(Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                port,
                http_port,
                store_dir,
                conf,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            bin: bin.to_path_buf(),
            dir,
            nodes,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("server log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Waits until server `i` answers `/healthz` with 200 (JetStream up and
    /// current), at most 60 s.
    pub fn wait_healthy(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_status(node.http_port, "/healthz") == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy after 60 s; its log:\n{}",
                node.name,
                self.log_of(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client URLs of every server, comma-separated (as `--nats-url`
    /// takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no server named {name}"))
    }

    /// Kills server `i` with SIGKILL (by its pid) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again (same config and store directory) and waits
    /// until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Stops server `i` gracefully (SIGTERM by its pid: the server snapshots
    /// every stream it replicates and compacts their Raft logs on the way
    /// out), then starts it again and waits until it is healthy. SIGKILL if
    /// it has not exited after 30 s.
    pub fn graceful_restart(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Whether server `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Server `i`'s log so far.
    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Every file under every server's store directory, with its bytes.
    pub fn store_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            collect_files(&node.store_dir, &mut out);
        }
        out
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:`port`, `None` if no answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

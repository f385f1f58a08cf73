//! Spawns the real `shredstore serve` binary on 127.0.0.1:0 and returns the
//! child and the URL it printed (for tests that kill or signal the process).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `shredstore serve --listen 127.0.0.1:0 --insecure-no-auth <extra...>`,
/// without SHREDSTORE_ROOT_KEY or SHREDSTORE_PREVIOUS_ROOT_KEY in its
/// environment.
pub fn spawn_serve<I, S>(extra: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .args(extra)
        .env_remove("SHREDSTORE_ROOT_KEY")
        .env_remove("SHREDSTORE_PREVIOUS_ROOT_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep draining stdout so the server never writes into a closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server printed its address");
        if line.contains("listening on") {
            break line;
        }
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

//! Embedding shredstore: append, read, erase and purge against a data dir.
//!
//! ```text
//! cargo run --release --example embedded -- [DATA_DIR] [ROOT_KEY_FILE]
//! ```
//!
//! Without a root key file, a development key is generated beside the data
//! directory (mode 0600). Production root keys come from outside.

use std::io::Write;
use std::path::{Path, PathBuf};

use shredstore::{Options, RootKey, Store, UserId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let data_dir = PathBuf::from(args.next().unwrap_or_else(|| "./data".into()));
    let key_file = PathBuf::from(args.next().unwrap_or_else(|| "./dev-root.key".into()));
    let root_key = load_or_generate_dev_key(&key_file)?;

    let store = Store::open(Options::new(&data_dir, root_key))?;
    println!("opened store in {}", data_dir.display());

    let alice = UserId::new("alice@example.com")?;
    let bob = UserId::new("bob@example.com")?;
    for text in ["hi bob", "how are you?", "see you at 5"] {
        let a = store.append(&alice, text.as_bytes())?;
        println!("append alice seq={} ts={}", a.seq, a.timestamp_ms);
    }
    let b = store.append(&bob, b"hi alice")?;
    println!("append bob   seq={}", b.seq);

    for m in store.read(&alice, 0, 100)? {
        println!(
            "read alice   seq={} {:?}",
            m.seq,
            String::from_utf8_lossy(&m.payload)
        );
    }

    let e = store.erase(&alice)?;
    println!(
        "erase alice  handle={} messages_erased={} epoch={}",
        e.handle, e.messages_erased, e.epoch
    );
    println!(
        "read alice   -> {} messages",
        store.read(&alice, 0, 100)?.len()
    );

    // The background purger starts on the erasure at once (and then at most
    // every purge interval), so it may have purged already.
    let p = store.purge()?;
    println!(
        "purge        erasures_purged={} complete={} in {:?} (purges so far, background included: {})",
        p.erasures_purged,
        p.complete,
        p.duration,
        store.stats()?.purges_done
    );
    println!(
        "read bob     -> {} messages",
        store.read(&bob, 0, 100)?.len()
    );
    println!("stats        {:?}", store.stats()?);
    store.close()?;
    Ok(())
}

fn load_or_generate_dev_key(path: &Path) -> Result<RootKey, Box<dyn std::error::Error>> {
    if path.exists() {
        return Ok(RootKey::from_file(path)?);
    }
    let key = RootKey::generate()?;
    let mut f = open_private(path)?;
    f.write_all(key.to_hex().as_bytes())?;
    f.write_all(b"\n")?;
    eprintln!(
        "WARNING: generated a DEVELOPMENT root key at {}",
        path.display()
    );
    eprintln!("WARNING: anyone with this file can read the store; do not use it in production.");
    Ok(key)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

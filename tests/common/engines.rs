//! The engines a suite runs on: each test named in an [`on_both_engines!`]
//! list runs once on the embedded RocksDB engine and once as a front end of
//! a real 3-node NATS JetStream cluster (nats-server from
//! `scripts/test-tools.sh`, which `make test` runs), so one test body checks
//! both engines.
//!
//! The JetStream tests of one test binary share a cluster while they run
//! (each test in its own namespace, so each starts from an empty store);
//! the last one to finish stops it, every server by its pid.

use shredstore::{Durability, Options, Store};

#[cfg(feature = "jetstream")]
#[path = "../tools/nats_cluster.rs"]
mod nats_cluster;
#[cfg(feature = "jetstream")]
#[path = "../tools/mod.rs"]
mod tools;

/// Where one test's store lives.
pub struct Fixture {
    /// The data directory (on JetStream, unused: the store is the cluster).
    pub dir: tempfile::TempDir,
    #[cfg(feature = "jetstream")]
    cluster: Option<(std::sync::Arc<nats_cluster::NatsCluster>, String)>,
}

impl Fixture {
    /// A store on the embedded RocksDB engine, in a fresh directory.
    pub fn rocksdb() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            #[cfg(feature = "jetstream")]
            cluster: None,
        }
    }

    /// A store in a fresh namespace of this binary's test cluster.
    #[cfg(feature = "jetstream")]
    pub fn jetstream() -> Fixture {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let namespace = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            cluster: Some((shared_cluster(), namespace)),
        }
    }

    /// Whether the store is on JetStream.
    pub fn is_jetstream(&self) -> bool {
        #[cfg(feature = "jetstream")]
        return self.cluster.is_some();
        #[cfg(not(feature = "jetstream"))]
        false
    }

    /// [`super::options`] on this fixture's engine; every call names the
    /// same store, so a test reopens it by opening again.
    pub fn options(&self) -> Options {
        let options = super::options(self.dir.path());
        #[cfg(feature = "jetstream")]
        if let Some((cluster, namespace)) = &self.cluster {
            return options.jetstream(
                shredstore::JetStreamOptions::new(cluster.urls()).namespace(namespace.as_str()),
            );
        }
        options
    }

    /// The environment that makes [`child_options`] in a child process
    /// (a re-executed test binary) name this fixture's store.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        #[cfg(feature = "jetstream")]
        if let Some((cluster, namespace)) = &self.cluster {
            return vec![
                (CHILD_NATS_URLS, cluster.urls()),
                (CHILD_NAMESPACE, namespace.clone()),
            ];
        }
        Vec::new()
    }

    pub fn open(&self) -> Store {
        Store::open(self.options()).expect("open store")
    }

    pub fn open_buffered(&self) -> Store {
        Store::open(self.options().durability(Durability::Buffered)).expect("open store")
    }
}

#[cfg(feature = "jetstream")]
const CHILD_NATS_URLS: &str = "SHREDSTORE_FIXTURE_NATS_URLS";
#[cfg(feature = "jetstream")]
const CHILD_NAMESPACE: &str = "SHREDSTORE_FIXTURE_NAMESPACE";

/// In a child process: `options` on the engine of the parent's fixture
/// (its [`Fixture::child_env`]); RocksDB when none is set.
pub fn child_options(options: Options) -> Options {
    #[cfg(feature = "jetstream")]
    if let (Ok(urls), Ok(namespace)) = (
        std::env::var(CHILD_NATS_URLS),
        std::env::var(CHILD_NAMESPACE),
    ) {
        return options.jetstream(shredstore::JetStreamOptions::new(urls).namespace(namespace));
    }
    options
}

/// The cluster of this binary's JetStream tests: started by the first that
/// needs it, stopped when the last of those running drops it.
#[cfg(feature = "jetstream")]
fn shared_cluster() -> std::sync::Arc<nats_cluster::NatsCluster> {
    use std::sync::{Arc, Mutex, Weak};
    static CLUSTER: Mutex<Weak<nats_cluster::NatsCluster>> = Mutex::new(Weak::new());
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(nats_cluster::NatsCluster::start(
        &tools::tool("nats-server"),
        3,
    ));
    *slot = Arc::downgrade(&cluster);
    cluster
}

/// `on_both_engines!(a, b)`: tests `on_rocksdb::a`, `on_jetstream::a`, ...
/// each calling the function `a(&Fixture)` of the test file with a fixture
/// of that engine (the JetStream ones only with the `jetstream` feature).
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {
        mod on_rocksdb {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::common::engines::Fixture::rocksdb());
                }
            )+
        }
        #[cfg(feature = "jetstream")]
        mod on_jetstream {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::common::engines::Fixture::jetstream());
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_engines;

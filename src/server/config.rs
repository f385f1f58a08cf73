//! `shredstore serve` settings: command-line flags, optionally a TOML file with
//! the same keys (flags win), and how the root key is found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::ServerError;
use crate::{Durability, RootKey};

/// Environment variable holding the base64 root key.
pub const ROOT_KEY_ENV: &str = "SHREDSTORE_ROOT_KEY";

/// Environment variable holding the base64 previous root key (a rotation).
pub const PREVIOUS_ROOT_KEY_ENV: &str = "SHREDSTORE_PREVIOUS_ROOT_KEY";

/// Flags of `shredstore serve`. Every flag can also be set in `--config`.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ServeArgs {
    /// TOML file with any of these settings (command-line flags win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Root key file (32 raw bytes or 64 hex digits). Alternatively set
    /// SHREDSTORE_ROOT_KEY (base64). Required unless in development mode
    /// (--dev or --insecure-no-auth), where a development key is generated
    /// beside the data directory.
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
    /// The root key the store was sealed under before --root-key-file
    /// (same formats; or SHREDSTORE_PREVIOUS_ROOT_KEY): the server starts at
    /// once and rewraps every key record under the new key in the
    /// background (progress in Admin.Stats, /metrics and the log). Keep
    /// giving both until the rotation is reported finished; after that the
    /// previous key opens nothing.
    #[arg(long)]
    pub previous_root_key_file: Option<PathBuf>,
    /// Development mode: without --root-key-file or SHREDSTORE_ROOT_KEY, use
    /// (or generate) a development root key beside the data directory.
    /// Implied by --insecure-no-auth.
    #[arg(long)]
    #[serde(default)]
    pub dev: bool,
    /// Bearer tokens file (TOML: name, sha256, roles).
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Accept every call without a token. Development only.
    #[arg(long)]
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to (mTLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback address (for TLS terminated by
    /// a sidecar or load balancer). Without it, a non-loopback --listen
    /// needs --tls-cert/--tls-key.
    #[arg(long)]
    #[serde(default)]
    pub plaintext_remote: bool,
    /// Address for the Prometheus `/metrics` endpoint (off by default).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// `sync` (fsync every append, default) or `buffered`.
    #[arg(long)]
    pub durability: Option<String>,
    /// Largest payload in bytes [default: 65536].
    #[arg(long)]
    pub max_payload: Option<usize>,
    /// Largest Read limit [default: 10000].
    #[arg(long)]
    pub max_read_limit: Option<usize>,
    /// Most AppendStream requests processed together per stream [default: 256].
    #[arg(long)]
    pub max_stream_in_flight: Option<usize>,
    /// Seconds between background purges when erasures are pending [default: 60].
    #[arg(long)]
    pub purge_interval_secs: Option<u64>,
    /// Store-wide retention: messages older than this many seconds are hidden
    /// at once and removed at the next compaction of their file [default:
    /// none, kept until erased]. Users' own settings (Admin.SetRetention) and
    /// legal holds override it.
    #[arg(long)]
    pub retention_secs: Option<u64>,
    /// Days after its receipt an erasure request (Admin.RequestErasure) is
    /// due: its grace may not end later, and it counts as overdue after
    /// that (GDPR Art. 12(3): one month) [default: 30].
    #[arg(long)]
    pub erasure_due_days: Option<u64>,
    /// RocksDB block cache in MiB, index and filter blocks included [default: 64].
    #[arg(long)]
    pub block_cache_mb: Option<usize>,
    /// Memtable size of the messages column family in MiB [default: 64].
    #[arg(long)]
    pub write_buffer_mb: Option<usize>,
    /// Users whose derived ciphers are cached [default: 65536].
    #[arg(long)]
    pub key_cache_entries: Option<usize>,
    /// Where the records live: `rocksdb` (embedded, in --data-dir; the
    /// default) or `jetstream` (a NATS JetStream cluster, --nats-url: this
    /// server is then a stateless front end, several may serve one
    /// cluster; README "Scale-out").
    #[arg(long)]
    pub engine: Option<String>,
    /// NATS servers of the JetStream cluster, comma-separated
    /// (`nats://h1:4222,nats://h2:4222,nats://h3:4222`).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// NATS credentials file (JWT and nkey seed) for the cluster.
    #[arg(long)]
    pub nats_creds: Option<PathBuf>,
    /// CA (PEM) the NATS servers' TLS certificates must chain to (TLS is
    /// then required).
    #[arg(long)]
    pub nats_tls_ca: Option<PathBuf>,
    /// JetStream partition streams, fixed when the store is created
    /// [default: 1; the store runs on 1 for now].
    #[arg(long)]
    pub partitions: Option<u32>,
}

/// Which engine holds the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineChoice {
    /// The embedded RocksDB in the data directory.
    RocksDb,
    /// A NATS JetStream cluster.
    JetStream {
        /// Server URLs, comma-separated.
        urls: String,
        /// Credentials file.
        creds: Option<PathBuf>,
        /// CA of the servers' TLS certificates.
        tls_ca: Option<PathBuf>,
        /// Partition streams.
        partitions: u32,
    },
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Where the root key comes from.
    pub root_key: RootKeySource,
    /// Where the previous root key comes from (a rotation), if anywhere.
    pub previous_root_key: Option<RootKeySource>,
    /// Tokens file, or `None` with `insecure_no_auth`.
    pub tokens_file: Option<PathBuf>,
    /// Accept calls without tokens.
    pub insecure_no_auth: bool,
    /// Certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Client CA for mTLS.
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address (TLS terminated elsewhere).
    pub plaintext_remote: bool,
    /// Metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// Durability of appends.
    pub durability: Durability,
    /// Largest payload.
    pub max_payload: usize,
    /// Largest read limit.
    pub max_read_limit: usize,
    /// AppendStream window.
    pub max_stream_in_flight: usize,
    /// Background purge interval.
    pub purge_interval: Duration,
    /// Store-wide retention period.
    pub retention: Option<Duration>,
    /// Due period of erasure requests.
    pub erasure_due: Duration,
    /// Block cache bytes.
    pub block_cache_bytes: usize,
    /// Messages memtable bytes.
    pub write_buffer_bytes: usize,
    /// Key cache entries.
    pub key_cache_entries: usize,
    /// The engine.
    pub engine: EngineChoice,
}

/// Where the root key comes from.
#[derive(Debug, Clone)]
pub enum RootKeySource {
    /// A key file.
    File(PathBuf),
    /// Base64 from the environment (`SHREDSTORE_ROOT_KEY`).
    Env,
    /// Base64 from `SHREDSTORE_PREVIOUS_ROOT_KEY`.
    PreviousEnv,
    /// A development key file, generated if missing.
    Dev(PathBuf),
}

impl ServeArgs {
    /// Merges `--config` (if any) under the flags and applies defaults.
    ///
    /// # Errors
    /// Unreadable or invalid config, contradictory settings.
    pub fn resolve(self) -> Result<ServerConfig, ServerError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ServerError::Config(format!("config {}: {e}", path.display())))?;
                toml::from_str::<ServeArgs>(&text).map_err(|e| {
                    ServerError::Config(format!("config {}: {}", path.display(), e.message()))
                })?
            }
            None => ServeArgs::default(),
        };
        let a = self;
        let data_dir = a
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| "./data".into());
        let insecure_no_auth = a.insecure_no_auth || file.insecure_no_auth;
        let dev = a.dev || file.dev || insecure_no_auth;
        let root_key = match a.root_key_file.or(file.root_key_file) {
            Some(p) => RootKeySource::File(p),
            None if std::env::var_os(ROOT_KEY_ENV).is_some() => RootKeySource::Env,
            None if dev => RootKeySource::Dev(dev_key_path(&data_dir)?),
            None => {
                return Err(ServerError::Config(format!(
                    "no root key: give --root-key-file FILE or set {ROOT_KEY_ENV} (base64 of 32 bytes); \
                     only development mode (--dev or --insecure-no-auth) generates one"
                )));
            }
        };
        let previous_root_key = match a.previous_root_key_file.or(file.previous_root_key_file) {
            Some(p) => Some(RootKeySource::File(p)),
            None if std::env::var_os(PREVIOUS_ROOT_KEY_ENV).is_some() => {
                Some(RootKeySource::PreviousEnv)
            }
            None => None,
        };
        if previous_root_key.is_some() && matches!(root_key, RootKeySource::Dev(_)) {
            return Err(ServerError::Config(
                "a previous root key rotates to a new one: give the new key with \
                 --root-key-file or SHREDSTORE_ROOT_KEY, not the development key"
                    .into(),
            ));
        }
        let tokens_file = a.tokens_file.or(file.tokens_file);
        if tokens_file.is_some() && insecure_no_auth {
            return Err(ServerError::Config(
                "--tokens-file and --insecure-no-auth contradict each other; choose one".into(),
            ));
        }
        if tokens_file.is_none() && !insecure_no_auth {
            return Err(ServerError::Config(
                "no --tokens-file given; pass --insecure-no-auth for local development".into(),
            ));
        }
        let tls = match (a.tls_cert.or(file.tls_cert), a.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ServerError::Config(
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        let tls_client_ca = a.tls_client_ca.or(file.tls_client_ca);
        if tls_client_ca.is_some() && tls.is_none() {
            return Err(ServerError::Config(
                "tls_client_ca needs tls_cert and tls_key".into(),
            ));
        }
        let durability = match a.durability.or(file.durability).as_deref() {
            None | Some("sync") => Durability::Sync,
            Some("buffered") => Durability::Buffered,
            Some(other) => {
                return Err(ServerError::Config(format!(
                    "durability must be sync or buffered, not {other:?}"
                )));
            }
        };
        let max_stream_in_flight = a
            .max_stream_in_flight
            .or(file.max_stream_in_flight)
            .unwrap_or(256);
        if !(1..=65_536).contains(&max_stream_in_flight) {
            return Err(ServerError::Config(
                "max_stream_in_flight must be 1..=65536".into(),
            ));
        }
        let purge_secs = a
            .purge_interval_secs
            .or(file.purge_interval_secs)
            .unwrap_or(60);
        if purge_secs == 0 {
            return Err(ServerError::Config(
                "purge_interval_secs must be at least 1".into(),
            ));
        }
        let retention_secs = a.retention_secs.or(file.retention_secs);
        if retention_secs == Some(0) {
            return Err(ServerError::Config(
                "retention_secs must be at least 1".into(),
            ));
        }
        let erasure_due_days = a.erasure_due_days.or(file.erasure_due_days).unwrap_or(30);
        if !(1..=3650).contains(&erasure_due_days) {
            return Err(ServerError::Config(
                "erasure_due_days must be 1..=3650".into(),
            ));
        }
        let engine = resolve_engine(
            a.engine.or(file.engine),
            a.nats_url.or(file.nats_url),
            a.nats_creds.or(file.nats_creds),
            a.nats_tls_ca.or(file.nats_tls_ca),
            a.partitions.or(file.partitions),
        )?;
        Ok(ServerConfig {
            engine,
            data_dir,
            listen: a
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051))),
            root_key,
            previous_root_key,
            tokens_file,
            insecure_no_auth,
            tls,
            tls_client_ca,
            plaintext_remote: a.plaintext_remote || file.plaintext_remote,
            metrics_listen: a.metrics_listen.or(file.metrics_listen),
            durability,
            max_payload: a
                .max_payload
                .or(file.max_payload)
                .unwrap_or(crate::DEFAULT_MAX_PAYLOAD),
            max_read_limit: a.max_read_limit.or(file.max_read_limit).unwrap_or(10_000),
            max_stream_in_flight,
            purge_interval: Duration::from_secs(purge_secs),
            retention: retention_secs.map(Duration::from_secs),
            erasure_due: Duration::from_secs(erasure_due_days * 24 * 3600),
            block_cache_bytes: mib(a.block_cache_mb.or(file.block_cache_mb).unwrap_or(64)),
            write_buffer_bytes: mib(a.write_buffer_mb.or(file.write_buffer_mb).unwrap_or(64)),
            key_cache_entries: a
                .key_cache_entries
                .or(file.key_cache_entries)
                .unwrap_or(65_536),
        })
    }
}

/// The engine the flags name; NATS flags without `--engine jetstream`
/// (or the reverse) are refused rather than ignored.
fn resolve_engine(
    engine: Option<String>,
    urls: Option<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    partitions: Option<u32>,
) -> Result<EngineChoice, ServerError> {
    match engine.as_deref() {
        None | Some("rocksdb") => {
            if urls.is_some() || creds.is_some() || tls_ca.is_some() || partitions.is_some() {
                return Err(ServerError::Config(
                    "nats_url, nats_creds, nats_tls_ca and partitions need --engine jetstream"
                        .into(),
                ));
            }
            Ok(EngineChoice::RocksDb)
        }
        Some("jetstream") => {
            if !cfg!(feature = "jetstream") {
                return Err(ServerError::Config(
                    "this build has no jetstream engine (cargo feature `jetstream`)".into(),
                ));
            }
            let urls = urls
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| ServerError::Config("--engine jetstream needs --nats-url".into()))?;
            let partitions = partitions.unwrap_or(1);
            if partitions == 0 {
                return Err(ServerError::Config("partitions must be at least 1".into()));
            }
            Ok(EngineChoice::JetStream {
                urls,
                creds,
                tls_ca,
                partitions,
            })
        }
        Some(other) => Err(ServerError::Config(format!(
            "engine must be rocksdb or jetstream, not {other:?}"
        ))),
    }
}

fn mib(n: usize) -> usize {
    n.saturating_mul(1024 * 1024)
}

/// Where development mode keeps its root key: beside the data directory,
/// never inside it. `./data` -> `/abs/path/data.dev-root.key`; the data
/// directory's path is made absolute and canonical first (its parent must
/// exist), so `--data-dir .` or a path through a symlink cannot put the key
/// in the data directory.
///
/// # Errors
/// A data directory without a parent (`/`) or whose parent does not exist.
pub fn dev_key_path(data_dir: &Path) -> Result<PathBuf, ServerError> {
    let absolute = canonical_path(data_dir)?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(ServerError::Config(format!(
            "data dir {} has no parent directory to hold the development key",
            absolute.display()
        )));
    };
    let mut key_name = name.to_os_string();
    key_name.push(".dev-root.key");
    let key = parent.join(key_name);
    if key.starts_with(&absolute) {
        return Err(ServerError::Config(
            "the development key would be inside the data directory".into(),
        ));
    }
    Ok(key)
}

/// `path` made absolute and canonical: its longest existing ancestor is
/// canonicalized (symlinks, `.` and `..` resolved) and the rest, which must
/// be plain names, appended.
fn canonical_path(path: &Path) -> Result<PathBuf, ServerError> {
    let start = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut rest = Vec::new();
    let mut existing = start.as_path();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Ok(out);
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(std::path::Component::Normal(name))) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => {
                return Err(ServerError::Config(format!(
                    "cannot resolve the data dir path {}",
                    path.display()
                )));
            }
        }
    }
}

impl RootKeySource {
    /// Loads (or, in dev mode, creates) the root key.
    ///
    /// # Errors
    /// Unreadable or malformed key material.
    pub fn load(&self) -> Result<RootKey, ServerError> {
        match self {
            RootKeySource::File(p) => RootKey::from_file(p)
                .map_err(|e| ServerError::Config(format!("root key file {}: {e}", p.display()))),
            RootKeySource::Env | RootKeySource::PreviousEnv => {
                let var = if matches!(self, RootKeySource::Env) {
                    ROOT_KEY_ENV
                } else {
                    PREVIOUS_ROOT_KEY_ENV
                };
                let text = zeroize::Zeroizing::new(
                    std::env::var(var)
                        .map_err(|_| ServerError::Config(format!("{var} is not UTF-8")))?,
                );
                let bytes = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| ServerError::Config(format!("{var} is not base64")))?,
                );
                RootKey::from_slice(&bytes)
                    .map_err(|_| ServerError::Config(format!("{var} must decode to 32 bytes")))
            }
            RootKeySource::Dev(p) => {
                if p.exists() {
                    tracing::warn!(path = %p.display(), "using the DEVELOPMENT root key");
                    return RootKey::from_file(p).map_err(|e| {
                        ServerError::Config(format!("dev root key {}: {e}", p.display()))
                    });
                }
                let key = RootKey::generate().map_err(ServerError::Store)?;
                write_private(p, format!("{}\n", key.to_hex().as_str()).as_bytes())?;
                tracing::warn!(
                    path = %p.display(),
                    "generated a DEVELOPMENT root key; anyone with this file can read the store. \
                     Use --root-key-file or SHREDSTORE_ROOT_KEY in production"
                );
                Ok(key)
            }
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_sits_beside_the_data_dir_never_inside() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let data = base.join("data");
        assert_eq!(dev_key_path(&data).unwrap(), base.join("data.dev-root.key"));
        std::fs::create_dir(&data).unwrap();
        // `.` inside the data dir, and a trailing `..`-free relative path.
        assert_eq!(
            dev_key_path(&data.join(".")).unwrap(),
            base.join("data.dev-root.key")
        );
        let sub = data.join("inner");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(
            dev_key_path(&sub.join("..")).unwrap(),
            base.join("data.dev-root.key")
        );
        assert!(dev_key_path(Path::new("/")).is_err());
        assert_eq!(
            dev_key_path(&base.join("missing/deeper")).unwrap(),
            base.join("missing/deeper.dev-root.key")
        );
        // A symlink to the data dir resolves to it.
        let link = base.join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert_eq!(dev_key_path(&link).unwrap(), base.join("data.dev-root.key"));
    }

    #[test]
    fn a_previous_root_key_comes_from_the_flag_or_the_config_file_never_with_the_dev_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.key");
        let config = dir.path().join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "root_key_file = \"new.key\"\nprevious_root_key_file = {:?}\ninsecure_no_auth = true\n",
                old.display().to_string()
            ),
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(config),
            data_dir: Some(dir.path().join("data")),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(
            matches!(&from_file.previous_root_key, Some(RootKeySource::File(p)) if *p == old),
            "{:?}",
            from_file.previous_root_key
        );
        if std::env::var_os(ROOT_KEY_ENV).is_none()
            && std::env::var_os(PREVIOUS_ROOT_KEY_ENV).is_none()
        {
            let plain = ServeArgs {
                data_dir: Some(dir.path().join("data")),
                root_key_file: Some(dir.path().join("new.key")),
                insecure_no_auth: true,
                ..Default::default()
            };
            assert!(plain.clone().resolve().unwrap().previous_root_key.is_none());
            // Rotating to the development key is refused.
            let dev = ServeArgs {
                root_key_file: None,
                previous_root_key_file: Some(old),
                ..plain
            };
            let e = dev.resolve().unwrap_err().to_string();
            assert!(e.contains("development key"), "{e}");
        }
    }

    #[test]
    fn a_root_key_is_generated_only_in_development_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("t.toml");
        let prod = ServeArgs {
            data_dir: Some(dir.path().join("data")),
            tokens_file: Some(tokens.clone()),
            ..Default::default()
        };
        if std::env::var_os(ROOT_KEY_ENV).is_none() {
            let e = prod.clone().resolve().unwrap_err().to_string();
            assert!(
                e.contains("--root-key-file") && e.contains(ROOT_KEY_ENV),
                "{e}"
            );
        }
        let dev = ServeArgs {
            dev: true,
            ..prod.clone()
        };
        assert!(matches!(
            dev.resolve().unwrap().root_key,
            RootKeySource::Dev(_) | RootKeySource::Env
        ));
        let no_auth = ServeArgs {
            data_dir: Some(dir.path().join("data")),
            insecure_no_auth: true,
            ..Default::default()
        };
        assert!(matches!(
            no_auth.resolve().unwrap().root_key,
            RootKeySource::Dev(_) | RootKeySource::Env
        ));
    }

    #[test]
    fn flags_override_file_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "listen = \"127.0.0.1:1\"\ninsecure_no_auth = true\nmax_payload = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg.clone()),
            max_payload: Some(20),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.max_payload, 20);
        assert!(c.insecure_no_auth);

        std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(cfg),
            insecure_no_auth: true,
            ..Default::default()
        };
        assert!(args.resolve().is_err());
        assert!(
            ServeArgs::default().resolve().is_err(),
            "auth must be configured"
        );
        let bad = ServeArgs {
            insecure_no_auth: true,
            durability: Some("fast".into()),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        let both = ServeArgs {
            insecure_no_auth: true,
            tokens_file: Some("t.toml".into()),
            ..Default::default()
        };
        assert!(both.resolve().is_err(), "tokens and no-auth contradict");
        let window = ServeArgs {
            insecure_no_auth: true,
            max_stream_in_flight: Some(1 << 20),
            ..Default::default()
        };
        assert!(window.resolve().is_err());
    }
}

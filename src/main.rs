//! The `shredstore` command: `serve` runs the gRPC server; `hash-token` prints
//! the hash a tokens file stores for a bearer token; `load` drives a running
//! server with a request mix and reports throughput and latency;
//! `verify-erasure` reports what is left on disk of one user; `backup`,
//! `journal` and `restore` (in `cli/backup.rs`) take, rekey, inspect and
//! restore backups that honour erasure.

mod cli;

use cli::UserIdArg;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shredstore::load::LoadArgs;
use shredstore::server::{ServeArgs, Server, hash_token, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "shredstore",
    version,
    about = "Encrypted message store with crypto-shredding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at startup")]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Read a bearer token on stdin and print its SHA-256 for the tokens file.
    HashToken,
    /// Generate load against a running server and report throughput, latency
    /// percentiles and errors.
    Load(LoadArgs),
    /// Check what is left on disk of one user, to show that an erasure is
    /// physical. Opens the store directly: stop the server first.
    ///
    /// Exit status: 0 erased and purged (nothing of the erased key epochs
    /// left), 2 erased but not yet purged, 3 never erased, 1 error.
    VerifyErasure(VerifyErasureArgs),
    /// Export everything a running server holds about one user (GDPR Art. 15
    /// and 20) as NDJSON: one line per message (redacted ones as markers),
    /// then a manifest line (with the user's rights state and consents).
    Export(ExportArgs),
    /// Take a backup from a running server (`--out FILE`), or `rekey` or
    /// `inspect` a backup file. A backup carries the erasure journal at its
    /// time; restoring it applies that and every newer journal given.
    Backup(cli::backup::BackupArgs),
    /// Export a running server's erasure journal (handles, epochs and times
    /// of everything erased; no ids) to a file, for `restore --journal`.
    Journal(cli::backup::JournalExportArgs),
    /// Restore a backup offline into a new data directory, applying the
    /// newest erasure journal given before the store can serve.
    Restore(cli::backup::RestoreArgs),
    /// Record, cancel or list erasure requests on a running server (the
    /// erasure ledger): a request restricts the user at once and erases it
    /// when its grace ends (answer due within one month, GDPR Art. 12(3)).
    ///
    /// Exit status of `list`: 0, or 2 if a request is overdue; 1 error.
    ErasureRequest(cli::ledger::ErasureRequestArgs),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Server URL: http://host:port, or https://host:port with --tls-ca.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// CA certificate (PEM) to trust for https.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Bearer token with the read role (or set SHREDSTORE_TOKEN). With the
    /// admin role too, it also exports a user whose reads are restricted
    /// (recorded in the audit trail).
    #[arg(long, env = "SHREDSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    user: UserIdArg,
    /// Output file (`-` for stdout). Created with mode 0600: it holds
    /// personal data.
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(clap::Args)]
struct VerifyErasureArgs {
    /// Data directory of the (stopped) server.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Root key file; otherwise SHREDSTORE_ROOT_KEY (base64), otherwise the
    /// development key beside the data dir if there is one.
    #[arg(long)]
    root_key_file: Option<std::path::PathBuf>,
    /// During a root-key rotation: the previous root key file; otherwise
    /// SHREDSTORE_PREVIOUS_ROOT_KEY (base64) if set. The rotation goes on
    /// while the command runs.
    #[arg(long)]
    previous_root_key_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    user: UserIdArg,
    /// Run a purge first (makes pending erasures physical).
    #[arg(long)]
    purge: bool,
}

fn init_logging() {
    init_logging_at("info");
}

/// Logs to stderr at `level` unless RUST_LOG says otherwise.
fn init_logging_at(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Load(args) => load(&args),
        Command::Backup(args) => {
            init_logging_at("warn");
            cli::backup::backup_command(&args)
        }
        Command::Journal(args) => cli::backup::journal_command(&args),
        Command::ErasureRequest(args) => cli::ledger::erasure_request_command(&args),
        Command::Restore(args) => {
            init_logging_at("warn");
            cli::backup::restore_command(&args)
        }
        Command::Export(args) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(export(&args)) {
                Ok(n) => {
                    eprintln!("exported {n} messages");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::VerifyErasure(args) => match verify_erasure(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::HashToken => {
            let mut token = String::new();
            if std::io::stdin().read_to_string(&mut token).is_err() {
                eprintln!("error: could not read the token from stdin");
                return ExitCode::FAILURE;
            }
            println!("{}", hash_token(token.trim()));
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            init_logging();
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `shredstore load`: exit 1 if the run could not be carried out (bad flags,
/// no connection), or with `--fail-on-error` if any request failed.
fn load(args: &LoadArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let report = match runtime.block_on(shredstore::load::run(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        report.to_string()
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    if let Some(p) = &args.plot {
        eprintln!("plot written to {}", p.display());
    }
    if args.fail_on_error && report.errors > 0 {
        eprintln!(
            "error: {} of {} requests failed",
            report.errors, report.total_ops
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(args: ServeArgs) -> Result<(), shredstore::server::ServerError> {
    // Signal handlers first: a SIGTERM during start-up shuts down cleanly.
    let shutdown = shutdown_signal();
    let config = args.resolve()?;
    let tls = config.tls.is_some();
    let server = Server::bind(config.clone()).await?;
    let addr = server.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    let store_at = match &config.engine {
        shredstore::server::EngineChoice::RocksDb => {
            format!("data dir {}", config.data_dir.display())
        }
        shredstore::server::EngineChoice::JetStream { partitions, .. } => {
            format!("jetstream engine, {partitions} partition(s)")
        }
    };
    let mut banner = format!("shredstore listening on {scheme}://{addr} (gRPC; {store_at})\n");
    if let Some(m) = server.metrics_addr() {
        banner.push_str(&format!("metrics on http://{m}/metrics\n"));
    }
    if config.insecure_no_auth && !tls {
        banner.push_str(&format!(
            "try: grpcurl -plaintext -d '{{\"user_id\":\"YWxpY2U=\",\"payload\":\"aGVsbG8=\"}}' {addr} shredstore.v1.Store/Append\n"
        ));
    }
    // A closed stdout must not take the server down: write once, ignore errors.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    drop(out);
    server.serve(shutdown).await
}

fn verify_erasure(args: &VerifyErasureArgs) -> Result<ExitCode, String> {
    use shredstore::server::{PREVIOUS_ROOT_KEY_ENV, ROOT_KEY_ENV, RootKeySource, dev_key_path};
    use shredstore::{Options, RootKey, Store, UserId};

    let id = args.user.bytes()?;
    let user = UserId::new(id).map_err(|e| format!("user id: {e}"))?;
    let root_key = match &args.root_key_file {
        Some(p) => {
            RootKey::from_file(p).map_err(|e| format!("root key file {}: {e}", p.display()))?
        }
        None if std::env::var_os(ROOT_KEY_ENV).is_some() => {
            RootKeySource::Env.load().map_err(|e| e.to_string())?
        }
        None => {
            let dev = dev_key_path(&args.data_dir).map_err(|e| e.to_string())?;
            if !dev.exists() {
                return Err(format!(
                    "no root key: give --root-key-file or set {ROOT_KEY_ENV} (no development key at {})",
                    dev.display()
                ));
            }
            RootKey::from_file(&dev).map_err(|e| format!("dev root key {}: {e}", dev.display()))?
        }
    };
    if !args.data_dir.join("CURRENT").exists() {
        return Err(format!("no store in {}", args.data_dir.display()));
    }
    let mut options = Options::new(&args.data_dir, root_key)
        .purge_interval(None)
        .ledger_interval(None);
    let previous = match &args.previous_root_key_file {
        Some(p) => Some(RootKeySource::File(p.clone())),
        None if std::env::var_os(PREVIOUS_ROOT_KEY_ENV).is_some() => {
            Some(RootKeySource::PreviousEnv)
        }
        None => None,
    };
    if let Some(previous) = previous {
        options = options.previous_root_key(previous.load().map_err(|e| e.to_string())?);
    }
    let store = Store::open(options).map_err(|e| match e {
        shredstore::Error::Storage(e) => {
            format!("cannot open the store (is the server still running?): {e}")
        }
        e => format!("cannot open the store: {e}"),
    })?;
    if args.purge {
        let report = store.purge().map_err(|e| format!("purge: {e}"))?;
        println!(
            "purge: {} erasure(s) made physical, complete: {}",
            report.erasures_purged, report.complete
        );
    }
    let check = store.verify_erasure(&user).map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;

    println!("handle:                 {}", check.handle);
    match check.marker {
        Some(m) => println!(
            "erased:                 yes (key epoch {}, at {} ms since the Unix epoch)\npurged:                 {}",
            m.epoch,
            m.erased_at_ms,
            if m.purged { "yes" } else { "no, pending" }
        ),
        None => println!("erased:                 never"),
    }
    println!(
        "files read:             {} SST file(s)",
        check.files_checked
    );
    println!(
        "erased-epoch messages:  {} (versions in files)",
        check.erased_records
    );
    println!("erased-epoch consents:  {}", check.erased_consents);
    println!(
        "erased key records:     {} (each holds a wrapped secret)",
        check.erased_key_records
    );
    println!("stale index entries:    {}", check.stale_index_entries);
    println!(
        "conversation records:   {} (naming the user as author, erased epochs)",
        check.erased_conversation_records
    );
    println!("WAL files from before:  {}", check.old_wal_files);
    if check.unreadable_files > 0 {
        println!(
            "unreadable files:       {} (cannot be vouched for)",
            check.unreadable_files
        );
    }
    println!(
        "live records:           {} (written after the erasure, under a new key)",
        check.live_records
    );
    println!(
        "live key record:        {}",
        if check.live_key { "yes" } else { "no" }
    );
    println!("idempotency entries:    {}", check.dedup_entries);
    let (verdict, code) = if check.is_physically_erased() {
        (
            "PHYSICALLY ERASED: no file of the data directory holds anything of the erased key epochs",
            0,
        )
    } else if check.is_pending() {
        (
            "ERASED, NOT PHYSICALLY: unreadable now, but files still hold erased versions; run a purge (or --purge)",
            2,
        )
    } else {
        ("NOT ERASED: this user was never erased", 3)
    };
    println!("verdict:                {verdict}");
    Ok(ExitCode::from(code))
}

/// One NDJSON line of an export. A redaction marker has `"redacted": true`,
/// `redacted_at_ms` and `reason` instead of a payload.
fn export_line(record: shredstore::server::proto::export_response::Record) -> serde_json::Value {
    use base64::Engine;
    use serde_json::json;
    use shredstore::server::proto::export_response::Record;
    match record {
        Record::Message(m) => {
            let mut v = json!({"type": "message", "seq": m.seq, "timestamp_ms": m.timestamp_ms});
            if let Some(r) = m.redaction {
                v["redacted"] = json!(true);
                v["redacted_at_ms"] = json!(r.redacted_at_ms);
                v["reason"] = json!(r.reason);
                return v;
            }
            match String::from_utf8(m.payload) {
                Ok(text) => v["payload_utf8"] = json!(text),
                Err(e) => {
                    v["payload_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
                }
            }
            v
        }
        Record::ConversationMessage(m) => {
            let mut v = json!({
                "type": "conversation_message",
                "seq": m.seq,
                "timestamp_ms": m.timestamp_ms,
            });
            for (key, bytes) in [("conversation", m.conversation_id), ("payload", m.payload)] {
                match String::from_utf8(bytes) {
                    Ok(text) => v[format!("{key}_utf8")] = json!(text),
                    Err(e) => {
                        v[format!("{key}_base64")] =
                            json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
                    }
                }
            }
            v
        }
        Record::Manifest(m) => json!({
            "type": "manifest",
            "handle": m.handle,
            "message_count": m.message_count,
            "first_seq": m.first_seq,
            "last_seq": m.last_seq,
            "key_epoch": m.key_epoch,
            "key_created_ms": m.key_created_ms,
            "erased_at_ms": m.erased_at_ms,
            "appends_blocked": m.appends_blocked,
            "redacted_count": m.redacted_count,
            "conversation_message_count": m.conversation_message_count,
            "rights": m.rights.as_ref().map(rights_json),
            "consents": m.consents.iter().map(|c| json!({
                "index": c.index,
                "recorded_at_ms": c.recorded_at_ms,
                "purpose": c.purpose,
                "basis": basis_name(c.basis),
                "granted": c.granted,
                "given_at_ms": c.given_at_ms,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// The lower-case name of a protobuf `LegalBasis` value.
fn basis_name(basis: i32) -> &'static str {
    shredstore::server::validate::legal_basis(basis).map_or("unspecified", |b| b.name())
}

/// The export manifest's rights state as JSON: `null` for what is not set.
fn rights_json(r: &shredstore::server::proto::RightsState) -> serde_json::Value {
    use serde_json::json;
    use shredstore::server::proto::RetentionMode;
    let nonzero = |v: u64| (v != 0).then_some(v);
    let retention = match RetentionMode::try_from(r.retention) {
        Ok(RetentionMode::StoreDefault) => "store_default",
        Ok(RetentionMode::Forever) => "forever",
        Ok(RetentionMode::After) => "after",
        Ok(RetentionMode::Unspecified) | Err(_) => "unspecified",
    };
    json!({
        "block_appends": r.block_appends,
        "block_reads": r.block_reads,
        "retention": retention,
        "retention_ms": nonzero(r.retention_ms),
        "effective_retention_ms": nonzero(r.effective_retention_ms),
        "legal_hold": r.legal_hold.then(|| json!({
            "reason": r.legal_hold_reason,
            "since_ms": r.legal_hold_since_ms,
            "until_ms": nonzero(r.legal_hold_until_ms),
        })),
        "expired_before_ms": r.expired_before_ms,
    })
}

async fn export(args: &ExportArgs) -> Result<u64, String> {
    use shredstore::server::proto::ExportRequest;
    use shredstore::server::proto::export_response::Record;

    let user_id = args.user.bytes()?;
    let config = shredstore::load::LoadConfig {
        tls_ca: args.tls_ca.clone(),
        token: args.token.clone(),
        ..shredstore::load::LoadConfig::new(args.addr.clone())
    };
    let mut client = shredstore::load::connect_client(&config)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = client
        .export(ExportRequest { user_id })
        .await
        .map_err(|s| format!("export refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&args.out)
            .map_err(|e| format!("{}: {e}", args.out.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let mut messages = 0u64;
    let mut manifest = false;
    while let Some(rec) = stream
        .message()
        .await
        .map_err(|s| format!("export failed: {:?}: {}", s.code(), s.message()))?
    {
        let Some(record) = rec.record else { continue };
        match &record {
            Record::Message(_) | Record::ConversationMessage(_) => messages += 1,
            Record::Manifest(_) => manifest = true,
        }
        writeln!(out, "{}", export_line(record)).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    if !manifest {
        return Err("the export ended without its manifest: incomplete".into());
    }
    Ok(messages)
}

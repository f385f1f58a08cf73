//! `shredstore backup` (take one from a running server, `rekey`,
//! `inspect`), `shredstore journal` and `shredstore restore`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use shredstore::backup::{self, BackupManifest, Inspection, Journal, RestoreOptions};
use shredstore::server::proto::{BackupRequest, ErasureJournalRequest};
use shredstore::server::{PREVIOUS_ROOT_KEY_ENV, ROOT_KEY_ENV, RootKeySource};
use shredstore::{Clock, RootKey, SystemClock};

/// How to reach a running server.
#[derive(clap::Args, Clone)]
pub(crate) struct ServerArgs {
    /// Server URL: http://host:port, or https://host:port with --tls-ca.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub(crate) addr: String,
    /// CA certificate (PEM) to trust for https.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Bearer token with the admin role (or set SHREDSTORE_TOKEN).
    #[arg(long, env = "SHREDSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerArgs {
    pub(crate) fn config(&self, addr: &str) -> shredstore::load::LoadConfig {
        shredstore::load::LoadConfig {
            tls_ca: self.tls_ca.clone(),
            token: self.token.clone(),
            ..shredstore::load::LoadConfig::new(addr.to_owned())
        }
    }
}

/// `shredstore backup`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    action: Option<BackupAction>,
    #[command(flatten)]
    server: ServerArgs,
    /// The backup file to write (mode 0600; written beside it first, and
    /// renamed once every chunk arrived and the whole file checked).
    #[arg(long, required = true)]
    out: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum BackupAction {
    /// Rewrap a backup's key records under the current root key and drop
    /// what the journals erased, into a new backup file.
    Rekey(RekeyArgs),
    /// Check a backup file and report what it holds: date, root-key
    /// generation, users, and the erased users and conversations whose key
    /// records it still holds (against the journals given).
    ///
    /// Exit status: 0 nothing erased survives in it (or it is still inside
    /// the window), 2 it is older than the window and still holds key
    /// material of something erased (rekey or delete it), 1 error.
    Inspect(InspectArgs),
}

/// Where journals come from (`--journal`, repeatable).
#[derive(clap::Args)]
struct JournalArgs {
    /// An erasure journal to apply: a journal file (`shredstore journal`),
    /// a newer backup file, or a running server's URL (http://host:port or
    /// https://..., using --token and --tls-ca). Repeatable; all are
    /// applied.
    #[arg(long = "journal", value_name = "FILE_OR_ADDR")]
    journals: Vec<String>,
    /// Go on even if no journal newer than the backup is given (users and
    /// conversations erased since the backup would come back).
    #[arg(long)]
    accept_stale_journal: bool,
    #[command(flatten)]
    server: JournalServerArgs,
}

/// The token and CA for journals fetched from a server.
#[derive(clap::Args)]
struct JournalServerArgs {
    /// CA certificate (PEM) to trust for an https journal address.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Bearer token with the admin role for a journal address (or set
    /// SHREDSTORE_TOKEN).
    #[arg(long, env = "SHREDSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct RekeyArgs {
    /// The backup file to rekey.
    #[arg(long)]
    from: PathBuf,
    /// The new backup file (mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// The root key that wraps the backup (a retired one, after a rotation).
    #[arg(long)]
    backup_root_key_file: PathBuf,
    /// The current root key; otherwise SHREDSTORE_ROOT_KEY (base64).
    #[arg(long)]
    root_key_file: Option<PathBuf>,
    #[command(flatten)]
    journal: JournalArgs,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The backup file.
    file: PathBuf,
    /// An erasure journal to compare with (as for restore). Repeatable.
    #[arg(long = "journal", value_name = "FILE_OR_ADDR")]
    journals: Vec<String>,
    /// Days after which a backup must hold no key material of anything
    /// erased (Art. 12(3)'s month).
    #[arg(long, default_value_t = 30)]
    window_days: u64,
    #[command(flatten)]
    server: JournalServerArgs,
}

/// `shredstore journal`.
#[derive(clap::Args)]
pub(crate) struct JournalExportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The journal file to write (mode 0600).
    #[arg(long)]
    out: PathBuf,
}

/// `shredstore restore`.
#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The new data directory (must be absent or empty). It appears only
    /// once the journals are applied and the erasures purged.
    #[arg(long)]
    data_dir: PathBuf,
    /// The root key that opens the backup; otherwise SHREDSTORE_ROOT_KEY
    /// (base64).
    #[arg(long)]
    root_key_file: Option<PathBuf>,
    /// The backup's root key, if it is older than the root key: the
    /// restore rewraps it under the root key (like `backup rekey`).
    /// Otherwise SHREDSTORE_PREVIOUS_ROOT_KEY (base64) if set.
    #[arg(long)]
    previous_root_key_file: Option<PathBuf>,
    #[command(flatten)]
    journal: JournalArgs,
}

fn root_key(file: Option<&Path>) -> Result<RootKey, String> {
    match file {
        Some(p) => RootKey::from_file(p).map_err(|e| format!("root key file {}: {e}", p.display())),
        None if std::env::var_os(ROOT_KEY_ENV).is_some() => {
            RootKeySource::Env.load().map_err(|e| e.to_string())
        }
        None => Err(format!(
            "no root key: give --root-key-file or set {ROOT_KEY_ENV}"
        )),
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Streams a server's file (backup or journal) into `out` via a file
/// beside it, checks it with `check`, then renames it into place.
async fn download<S, F>(
    stream: F,
    out: &Path,
    check: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<u64, String>
where
    F: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<S>>, tonic::Status>>,
    S: Chunk,
{
    let partial = {
        let mut name = out.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    };
    let result = async {
        let mut stream = stream
            .await
            .map_err(|s| format!("refused: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let mut f = std::io::BufWriter::new(
            backup::create_private(&partial).map_err(|e| format!("{}: {e}", partial.display()))?,
        );
        let mut bytes = 0u64;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| format!("failed: {:?}: {}", s.code(), s.message()))?
        {
            let data = chunk.data();
            bytes += data.len() as u64;
            f.write_all(data).map_err(|e| e.to_string())?;
        }
        let f = f.into_inner().map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        check(&partial)?;
        std::fs::rename(&partial, out).map_err(|e| e.to_string())?;
        Ok(bytes)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// A response message carrying file bytes.
trait Chunk {
    fn data(&self) -> &[u8];
}

impl Chunk for shredstore::server::proto::BackupResponse {
    fn data(&self) -> &[u8] {
        &self.data
    }
}

impl Chunk for shredstore::server::proto::ErasureJournalResponse {
    fn data(&self) -> &[u8] {
        &self.data
    }
}

pub(crate) fn date(ms: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_manifest(m: &BackupManifest) {
    println!("store:               {}", hex(&m.store_id));
    println!(
        "taken:               {} ({} ms)",
        date(m.created_ms),
        m.created_ms
    );
    if let Some(r) = m.rekeyed_ms {
        println!("rekeyed:             {} ({r} ms)", date(r));
    }
    println!(
        "journal as of:       {} ({} ms)",
        date(m.journal_ms),
        m.journal_ms
    );
    println!("root-key generation: {}", m.root_key_generation);
    println!("users:               {}", m.users);
    println!("conversations:       {}", m.conversations);
    println!(
        "store files:         {} ({} bytes)",
        m.files.len(),
        m.files.iter().map(|f| f.len).sum::<u64>()
    );
    if m.pending_erasures > 0 {
        println!(
            "pending erasures:    {} (not yet physical when taken; restore purges them)",
            m.pending_erasures
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches or reads every journal source.
fn load_journals(sources: &[String], server: &JournalServerArgs) -> Result<Vec<Journal>, String> {
    let mut out = Vec::new();
    for src in sources {
        let j = if src.starts_with("http://") || src.starts_with("https://") {
            fetch_journal(src, server)?
        } else {
            backup::read_journal(Path::new(src)).map_err(|e| format!("journal {src}: {e}"))?
        };
        eprintln!(
            "journal {src}: {} erased user(s), {} deleted conversation(s), {} redaction(s), as of {}",
            j.users.len(),
            j.conversations.len(),
            j.redactions.len() + j.conversation_redactions.len(),
            date(j.taken_ms)
        );
        out.push(j);
    }
    Ok(out)
}

fn fetch_journal(addr: &str, server: &JournalServerArgs) -> Result<Journal, String> {
    let config = ServerArgs {
        addr: addr.to_owned(),
        tls_ca: server.tls_ca.clone(),
        token: server.token.clone(),
    }
    .config(addr);
    runtime()?.block_on(async {
        let mut client = shredstore::load::connect_admin(&config)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = client
            .erasure_journal(ErasureJournalRequest {})
            .await
            .map_err(|s| {
                format!(
                    "journal from {addr} refused: {:?}: {}",
                    s.code(),
                    s.message()
                )
            })?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(|s| {
            format!(
                "journal from {addr} failed: {:?}: {}",
                s.code(),
                s.message()
            )
        })? {
            bytes.extend_from_slice(&chunk.data);
        }
        Journal::decode(&bytes).map_err(|e| format!("journal from {addr}: {e}"))
    })
}

/// `shredstore backup ...`.
pub(crate) fn backup_command(args: &BackupArgs) -> ExitCode {
    let r = match &args.action {
        Some(BackupAction::Rekey(a)) => rekey(a),
        Some(BackupAction::Inspect(a)) => return inspect(a),
        None => take_backup(args),
    };
    finish(r)
}

pub(crate) fn finish(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn take_backup(args: &BackupArgs) -> Result<(), String> {
    let out = args.out.as_deref().ok_or("give --out FILE")?;
    let config = args.server.config(&args.server.addr);
    let started = Instant::now();
    let bytes = runtime()?.block_on(async {
        let mut client = shredstore::load::connect_admin(&config)
            .await
            .map_err(|e| e.to_string())?;
        download(client.backup(BackupRequest {}), out, |p| {
            backup::verify_file(p)
                .map(|_| ())
                .map_err(|e| format!("the backup received does not check: {e}"))
        })
        .await
        .map_err(|e| format!("backup {e}"))
    })?;
    let (manifest, _) = backup::read_manifest(out).map_err(|e| e.to_string())?;
    println!(
        "backup written to {} ({bytes} bytes in {:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    print_manifest(&manifest);
    Ok(())
}

/// `shredstore journal`.
pub(crate) fn journal_command(args: &JournalExportArgs) -> ExitCode {
    let config = args.server.config(&args.server.addr);
    finish(runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = shredstore::load::connect_admin(&config)
                .await
                .map_err(|e| e.to_string())?;
            download(client.erasure_journal(ErasureJournalRequest {}), &args.out, |p| {
                backup::read_journal(p)
                    .map(|_| ())
                    .map_err(|e| format!("the journal received does not check: {e}"))
            })
            .await
            .map_err(|e| format!("journal {e}"))
        })?;
        let j = backup::read_journal(&args.out).map_err(|e| e.to_string())?;
        println!(
            "journal written to {}: {} erased user(s), {} deleted conversation(s), {} redaction(s), as of {}",
            args.out.display(),
            j.users.len(),
            j.conversations.len(),
            j.redactions.len() + j.conversation_redactions.len(),
            date(j.taken_ms)
        );
        Ok(())
    }))
}

fn explain_key_error(e: shredstore::Error) -> String {
    match e {
        shredstore::Error::WrongRootKey => "the root key does not open this backup: give the root \
             key of the generation it was taken under (`shredstore backup inspect` shows it), or, \
             if it was rotated since, that key as --previous-root-key-file (or `shredstore backup \
             rekey`)"
            .to_owned(),
        e => e.to_string(),
    }
}

/// `shredstore restore`.
pub(crate) fn restore_command(args: &RestoreArgs) -> ExitCode {
    finish((|| {
        let key = root_key(args.root_key_file.as_deref())?;
        let previous = match &args.previous_root_key_file {
            Some(p) => Some(RootKeySource::File(p.clone())),
            None if std::env::var_os(PREVIOUS_ROOT_KEY_ENV).is_some() => {
                Some(RootKeySource::PreviousEnv)
            }
            None => None,
        }
        .map(|s| s.load().map_err(|e| e.to_string()))
        .transpose()?;
        let journals = load_journals(&args.journal.journals, &args.journal.server)?;
        if journals.is_empty() {
            eprintln!(
                "WARNING: no --journal given: only the backup's own journal can be applied, and \
                 everything erased after the backup was taken would come back"
            );
        }
        let mut o = RestoreOptions::new(&args.from, &args.data_dir, key)
            .accept_stale_journal(args.journal.accept_stale_journal);
        if let Some(p) = previous {
            o = o.previous_root_key(p);
        }
        for j in journals {
            o = o.journal(j);
        }
        let started = Instant::now();
        let r = backup::restore(o).map_err(explain_key_error)?;
        if r.stale_journal {
            eprintln!(
                "WARNING: restored with a STALE journal (accepted): anything erased after {} may \
                 be back; apply a newer journal as soon as you have one",
                date(r.journal_ms)
            );
        }
        println!(
            "restored {} into {} in {:.1} s",
            args.from.display(),
            args.data_dir.display(),
            started.elapsed().as_secs_f64()
        );
        print_manifest(&r.manifest);
        println!("journal applied:     as of {}", date(r.journal_ms));
        println!(
            "replayed:            {} erasure(s), {} conversation deletion(s), {} redaction(s), {} erasure request(s)",
            r.replay.users_erased,
            r.replay.conversations_deleted,
            r.replay.redactions,
            r.replay.requests
        );
        println!(
            "purge:               {}",
            if r.purge_complete {
                "complete (nothing erased left in the files)"
            } else {
                "INCOMPLETE: run `shredstore verify-erasure --purge` before serving"
            }
        );
        println!(
            "root-key generation: {} (restored store)",
            r.root_key_generation
        );
        Ok(())
    })())
}

fn rekey(a: &RekeyArgs) -> Result<(), String> {
    let key = root_key(a.root_key_file.as_deref())?;
    let old = RootKey::from_file(&a.backup_root_key_file).map_err(|e| {
        format!(
            "backup root key file {}: {e}",
            a.backup_root_key_file.display()
        )
    })?;
    let journals = load_journals(&a.journal.journals, &a.journal.server)?;
    let started = Instant::now();
    let r = backup::rekey(
        &a.from,
        &a.out,
        old,
        key,
        journals,
        a.journal.accept_stale_journal,
    )
    .map_err(explain_key_error)?;
    println!(
        "rekeyed {} (generation {}) into {} in {:.1} s",
        a.from.display(),
        r.from.root_key_generation,
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "dropped:             {} erased user(s), {} deleted conversation(s), {} redaction(s)",
        r.replay.users_erased, r.replay.conversations_deleted, r.replay.redactions
    );
    print_manifest(&r.to);
    Ok(())
}

fn inspect(a: &InspectArgs) -> ExitCode {
    let r = (|| {
        let journals = load_journals(&a.journals, &a.server)?;
        backup::inspect(&a.file, &journals).map_err(|e| e.to_string())
    })();
    match r {
        Ok(i) => report_inspection(&i, a.window_days),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report_inspection(i: &Inspection, window_days: u64) -> ExitCode {
    let now = SystemClock.now_ms();
    let m = &i.manifest;
    print_manifest(m);
    let age_days = now.saturating_sub(m.created_ms) / 86_400_000;
    println!("age:                 {age_days} day(s) (window {window_days})");
    println!(
        "messages:            {} (user logs), {} (conversations)",
        i.messages, i.conversation_messages
    );
    match i.current_root_key {
        Some(true) => println!("root key:            the live store's current key"),
        Some(false) => println!(
            "root key:            NOT the live store's current key (generation {}): rekey it, or \
             it dies with its key",
            m.root_key_generation
        ),
        None => {}
    }
    if i.newer_journal {
        println!("compared with:       the journal of {}", date(i.journal_ms));
    } else {
        println!(
            "compared with:       its own journal only (give the live store's with --journal to \
             find what was erased since)"
        );
    }
    println!(
        "erased users with key records:        {}",
        i.erased_users_with_keys.len()
    );
    for h in &i.erased_users_with_keys {
        println!("  user {h}");
    }
    println!(
        "deleted conversations with key records: {}",
        i.deleted_conversations_with_keys.len()
    );
    for h in &i.deleted_conversations_with_keys {
        println!("  conversation {h}");
    }
    let window_ms = window_days.saturating_mul(86_400_000);
    let due = m.created_ms.saturating_add(window_ms);
    if !i.holds_erased_keys() {
        println!("verdict:             OK: no key material of anything erased in this backup");
        ExitCode::SUCCESS
    } else if now > due {
        println!(
            "verdict:             PAST THE WINDOW: this backup still holds key material of erased \
             data; rekey it (`shredstore backup rekey`) or delete it"
        );
        ExitCode::from(2)
    } else {
        println!(
            "verdict:             within the window: rekey or delete it before {}",
            date(due)
        );
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(super::date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::date(1_764_633_600_000), "2025-12-02 00:00:00 UTC");
        assert_eq!(
            super::date(951_782_400_000 + 3_723_000),
            "2000-02-29 01:02:03 UTC"
        );
    }
}

//! Backups that honour erasure: taking one ([`write_backup`]), restoring
//! one into a new data directory with the newest erasure journal applied
//! before the store can serve ([`restore`]), rewrapping an old one under
//! the current root key and dropping what the journal erased ([`rekey`]),
//! and checking what key material one still holds ([`inspect`]).
//!
//! A backup file is a tar archive (`archive.rs`; `docs/format.md`,
//! "Backups") of a RocksDB checkpoint of the store, with its manifest and
//! the erasure journal at its time. Nothing in it is plaintext: message
//! bodies are sealed, secrets wrapped under the root key, users named by
//! handles.

mod archive;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::FORMAT_VERSION;
pub use crate::codec::{BackupFile, BackupManifest, Journal, JournalErasure, JournalRedaction};
use crate::crypto::RootKey;
use crate::error::{BackupError, Error, Result};
pub use crate::store::{JournalReplay, RESTORE_ACTOR};
use crate::store::{Options, Store, inspect_dir};
use crate::types::{Clock, Handle, SystemClock};

/// The actor of a rekey's audit records.
pub const REKEY_ACTOR: &str = "rekey";

/// A sibling of `path` named `.<name>.<suffix>` (same filesystem, so
/// checkpoints hard-link and renames are atomic).
fn sibling(path: &Path, suffix: &str) -> Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let name = abs
        .file_name()
        .ok_or_else(|| Error::Io(std::io::Error::other("the path has no file name")))?
        .to_string_lossy()
        .into_owned();
    Ok(abs.with_file_name(format!(".{name}.{suffix}")))
}

/// Removes a working directory when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn fresh(path: PathBuf) -> Result<Scratch> {
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.0)
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a working directory");
        }
    }
}

/// Overrides of a backup's times (a rekeyed backup keeps its data's time).
struct Stamp {
    created_ms: u64,
    journal_ms: u64,
    rekeyed_ms: u64,
}

/// Writes a backup of `store` to `out` while it serves: a consistent copy
/// (a RocksDB checkpoint beside the data directory, removed afterwards)
/// taken once every erasure committed before it is physical, its
/// manifest, and the erasure journal. Audited as `backup` with `actor`.
///
/// # Errors
/// [`BackupError::Busy`] while another backup runs,
/// [`BackupError::RotationInProgress`], or a storage or I/O error (also
/// from `out`).
pub fn write_backup(store: &Store, out: &mut dyn Write, actor: &str) -> Result<BackupManifest> {
    write_backup_as(store, out, actor, None)
}

fn write_backup_as(
    store: &Store,
    out: &mut dyn Write,
    actor: &str,
    stamp: Option<Stamp>,
) -> Result<BackupManifest> {
    let _one = store.backup_guard()?;
    let dir = Scratch::fresh(sibling(store.data_dir()?, "backup-tmp")?)?;
    let info = store.checkpoint(&dir.0, actor)?;
    let mut journal = info.journal;
    let contents = inspect_dir(&dir.0, &journal, false)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir.0)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Error::Io(std::io::Error::other("a checkpoint file name is not UTF-8")))?;
        files.push(BackupFile {
            name,
            len: meta.len(),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let (created_ms, rekeyed_ms) = match stamp {
        Some(s) => {
            journal.taken_ms = s.journal_ms;
            (s.created_ms, Some(s.rekeyed_ms))
        }
        None => (journal.taken_ms, None),
    };
    let manifest = BackupManifest {
        store_id: journal.store_id,
        format_version: FORMAT_VERSION,
        created_ms,
        journal_ms: journal.taken_ms,
        rekeyed_ms,
        root_key_generation: journal.root_key_generation,
        root_key_check: journal.root_key_check,
        users: contents.users,
        conversations: contents.conversations,
        pending_erasures: info.pending,
        files,
    };
    archive::write(out, &manifest, &journal, &dir.0)?;
    tracing::info!(
        files = manifest.files.len(),
        bytes = manifest.files.iter().map(|f| f.len).sum::<u64>(),
        users = manifest.users,
        "backup written"
    );
    Ok(manifest)
}

/// The manifest and journal of a backup file (its first two entries).
///
/// # Errors
/// [`BackupError::NotABackup`], [`BackupError::Damaged`] or an I/O error.
pub fn read_manifest(path: &Path) -> Result<(BackupManifest, Journal)> {
    archive::read_head(path)
}

/// Reads a whole backup file and checks every entry, length and checksum.
///
/// # Errors
/// [`BackupError::NotABackup`], [`BackupError::Damaged`] or an I/O error.
pub fn verify_file(path: &Path) -> Result<BackupManifest> {
    archive::verify(path)
}

/// The erasure journal in a file: a journal file (`shredstore journal`)
/// or a backup file (the journal it carries).
///
/// # Errors
/// [`BackupError::NotAJournal`], [`BackupError::Damaged`] or an I/O error.
pub fn read_journal(path: &Path) -> Result<Journal> {
    archive::read_journal(path)
}

/// What [`restore`] does.
#[non_exhaustive]
pub struct RestoreOptions {
    /// The backup file.
    pub from: PathBuf,
    /// The new data directory (absent or empty).
    pub data_dir: PathBuf,
    /// The root key that opens the backup (or, with `previous_root_key`,
    /// the key to rotate it to).
    pub root_key: RootKey,
    /// The root key of the backup, if it is to be rewrapped under
    /// `root_key` as it is restored.
    pub previous_root_key: Option<RootKey>,
    /// Journals to apply (newer backups, journal exports, a live server's).
    pub journals: Vec<Journal>,
    /// Restore even if no journal newer than the backup was given.
    pub accept_stale_journal: bool,
}

impl RestoreOptions {
    /// Restores `from` into `data_dir` with `root_key`; no journal yet.
    pub fn new(from: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, root_key: RootKey) -> Self {
        RestoreOptions {
            from: from.into(),
            data_dir: data_dir.into(),
            root_key,
            previous_root_key: None,
            journals: Vec::new(),
            accept_stale_journal: false,
        }
    }

    /// Applies `journal` too.
    #[must_use]
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journals.push(journal);
        self
    }

    /// The backup is under `key`: rewrap it under the root key as it is
    /// restored.
    #[must_use]
    pub fn previous_root_key(mut self, key: RootKey) -> Self {
        self.previous_root_key = Some(key);
        self
    }

    /// Whether to restore without a journal newer than the backup.
    #[must_use]
    pub fn accept_stale_journal(mut self, accept: bool) -> Self {
        self.accept_stale_journal = accept;
        self
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: BackupManifest,
    /// The time of the newest journal applied.
    pub journal_ms: u64,
    /// No journal newer than the backup was given (accepted).
    pub stale_journal: bool,
    /// What the journals changed.
    pub replay: JournalReplay,
    /// The purge after the replay confirmed every erasure physical.
    pub purge_complete: bool,
    /// The restored store's root-key generation.
    pub root_key_generation: u32,
}

/// Checks the journals given against a backup's manifest: all of its
/// store, and one newer than it unless a stale one is accepted. Returns
/// whether the newest is stale.
fn check_journals(manifest: &BackupManifest, journals: &[Journal], accept: bool) -> Result<bool> {
    if journals.iter().any(|j| j.store_id != manifest.store_id) {
        return Err(BackupError::OtherStore.into());
    }
    let newest = journals.iter().map(|j| j.taken_ms).max();
    let stale = newest.is_none_or(|t| t <= manifest.journal_ms);
    if stale && !accept {
        return Err(BackupError::StaleJournal {
            backup_ms: manifest.journal_ms,
            journal_ms: newest.unwrap_or(manifest.journal_ms),
        }
        .into());
    }
    Ok(stale)
}

/// Restores a backup offline into a new data directory: extracts and
/// checks it into a directory beside the target, opens it (rewrapping it
/// under the root key first when the backup's key is given as the
/// previous root key), applies its own journal and every journal given,
/// purges (so no erased user's key record or ciphertext survives in the
/// files), and only then renames it into place. An erased user or
/// conversation never comes back, provided a journal at least as new as
/// the erasure is given: without one newer than the backup the restore is
/// refused ([`BackupError::StaleJournal`]) unless accepted.
///
/// # Errors
/// [`BackupError`] (not a backup, damaged, another store's journal, stale
/// journal, target not empty), a root key that does not open the backup
/// ([`Error::WrongRootKey`], [`Error::RetiredRootKey`]), or a storage or
/// I/O error. The target is left as it was.
pub fn restore(o: RestoreOptions) -> Result<Restored> {
    let (manifest, own) = archive::read_head(&o.from)?;
    let stale = check_journals(&manifest, &o.journals, o.accept_stale_journal)?;
    if o.data_dir.exists() && std::fs::read_dir(&o.data_dir)?.next().is_some() {
        return Err(BackupError::TargetNotEmpty.into());
    }
    let staging = Scratch::fresh(sibling(&o.data_dir, "restoring")?)?;
    std::fs::create_dir_all(&staging.0)?;
    archive::extract(&o.from, &staging.0)?;
    let journal = o.journals.iter().fold(own, |a, j| a.merged(j));
    let mut options = Options::new(&staging.0, o.root_key)
        .purge_interval(None)
        .ledger_interval(None);
    if let Some(previous) = o.previous_root_key {
        options = options.previous_root_key(previous);
        options.rotation_target = Some((journal.root_key_generation, journal.root_key_check));
    }
    let store = Store::open(options)?;
    let rotated = store.rotation().is_some();
    if rotated {
        store.finish_rotation()?;
    }
    let replay = store.apply_journal(&journal)?;
    let purge = store.purge_as(RESTORE_ACTOR)?;
    if rotated {
        // No version of a key record wrapped under the old key stays in
        // the files.
        store.compact()?;
    }
    store.record_restore()?;
    let root_key_generation = store.root_key_generation();
    store.close()?;
    if o.data_dir.exists() {
        std::fs::remove_dir(&o.data_dir)?;
    }
    std::fs::rename(&staging.0, &o.data_dir)?;
    if let Some(parent) = std::path::absolute(&o.data_dir)?.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    tracing::info!(
        users_erased = replay.users_erased,
        conversations_deleted = replay.conversations_deleted,
        redactions = replay.redactions,
        stale_journal = stale,
        "backup restored"
    );
    Ok(Restored {
        manifest,
        journal_ms: journal.taken_ms,
        stale_journal: stale,
        replay,
        purge_complete: purge.complete,
        root_key_generation,
    })
}

/// What [`rekey`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rekeyed {
    /// The old backup's manifest.
    pub from: BackupManifest,
    /// The new backup's manifest.
    pub to: BackupManifest,
    /// What the journals changed.
    pub replay: JournalReplay,
}

/// Rewraps a backup under the current root key: restores `from` (with
/// `backup_root_key`, and the journals given) into a working directory
/// beside `out`, rotating it to `root_key`, then writes a new backup of it
/// to `out`. The new backup keeps the old one's creation time, takes the
/// journals' time and root-key generation, and no longer holds anything
/// the journals erased. `out` is written beside first and renamed when
/// complete.
///
/// # Errors
/// As [`restore`], and I/O errors writing `out`.
pub fn rekey(
    from: &Path,
    out: &Path,
    backup_root_key: RootKey,
    root_key: RootKey,
    journals: Vec<Journal>,
    accept_stale_journal: bool,
) -> Result<Rekeyed> {
    let work = Scratch::fresh(sibling(out, "rekey-tmp")?)?;
    let restored = restore(RestoreOptions {
        from: from.to_path_buf(),
        data_dir: work.0.clone(),
        root_key: root_key.duplicate(),
        previous_root_key: Some(backup_root_key),
        journals,
        accept_stale_journal,
    })?;
    let store = Store::open(
        Options::new(&work.0, root_key)
            .purge_interval(None)
            .ledger_interval(None),
    )?;
    let partial = sibling(out, "partial")?;
    let written = (|| {
        let mut f = create_private(&partial)?;
        let to = write_backup_as(
            &store,
            &mut f,
            REKEY_ACTOR,
            Some(Stamp {
                created_ms: restored.manifest.created_ms,
                journal_ms: restored.journal_ms,
                rekeyed_ms: SystemClock.now_ms(),
            }),
        )?;
        f.sync_all()?;
        Ok::<_, Error>(to)
    })();
    store.close()?;
    let to = match written {
        Ok(to) => to,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out)?;
    Ok(Rekeyed {
        from: restored.manifest,
        to,
        replay: restored.replay,
    })
}

/// Creates `path` for writing with mode 0600 (a backup holds wrapped keys).
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?)
}

/// What [`inspect`] found in a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// Its manifest.
    pub manifest: BackupManifest,
    /// The time of the newest journal compared (its own if none newer was
    /// given).
    pub journal_ms: u64,
    /// A journal newer than the backup was given.
    pub newer_journal: bool,
    /// Users with a key record.
    pub users: u64,
    /// Conversations with a key record.
    pub conversations: u64,
    /// Stored envelopes of users' logs.
    pub messages: u64,
    /// Stored conversation records.
    pub conversation_messages: u64,
    /// The root-key generation its `meta` names.
    pub root_key_generation: u32,
    /// Users the journals erased whose wrapped secret this backup still
    /// holds.
    pub erased_users_with_keys: Vec<Handle>,
    /// Conversations the journals deleted whose wrapped secret it still
    /// holds.
    pub deleted_conversations_with_keys: Vec<Handle>,
    /// Whether its root key is the newest journal's (the live store's
    /// current key); `None` without a newer journal.
    pub current_root_key: Option<bool>,
}

impl Inspection {
    /// Whether key material of something erased may survive in it: an
    /// erased user's or deleted conversation's key record, or erasures not
    /// yet physical when it was taken (their old file versions).
    pub fn holds_erased_keys(&self) -> bool {
        !self.erased_users_with_keys.is_empty()
            || !self.deleted_conversations_with_keys.is_empty()
            || self.manifest.pending_erasures > 0
    }
}

/// Checks a backup file (every entry and checksum) and reads its store
/// read-only, without its root key: counts, root-key generation, and the
/// users and conversations that `journals` (of the same store) erased but
/// whose key records the backup still holds. Extracts into a temporary
/// directory, removed afterwards.
///
/// # Errors
/// [`BackupError`] (not a backup, damaged, another store's journal), or a
/// storage or I/O error.
pub fn inspect(path: &Path, journals: &[Journal]) -> Result<Inspection> {
    let (manifest, own) = archive::read_head(path)?;
    if journals.iter().any(|j| j.store_id != manifest.store_id) {
        return Err(BackupError::OtherStore.into());
    }
    let tmp = Scratch::fresh(std::env::temp_dir().join(format!(
        "shredstore-inspect-{}-{}",
        std::process::id(),
        SystemClock.now_ms()
    )))?;
    std::fs::create_dir_all(&tmp.0)?;
    archive::extract(path, &tmp.0)?;
    let newer = journals
        .iter()
        .filter(|j| j.taken_ms > manifest.journal_ms)
        .max_by_key(|j| j.taken_ms);
    let current_root_key = newer.map(|j| j.root_key_check == manifest.root_key_check);
    let journal = journals.iter().fold(own, |a, j| a.merged(j));
    let c = inspect_dir(&tmp.0, &journal, true)?;
    Ok(Inspection {
        journal_ms: journal.taken_ms,
        newer_journal: newer.is_some(),
        users: c.users,
        conversations: c.conversations,
        messages: c.messages,
        conversation_messages: c.conversation_messages,
        root_key_generation: c.root_key_generation,
        erased_users_with_keys: c.erased_users_with_keys,
        deleted_conversations_with_keys: c.deleted_conversations_with_keys,
        current_root_key,
        manifest,
    })
}

//! The backup file: a POSIX tar archive (so `tar tvf` lists it) of, in this
//! order, `MANIFEST.shredbak` (what it holds), `JOURNAL.shredjnl` (the
//! erasure journal at its time, usable as `--journal` for an older
//! backup), `store/<file>` for every file of the store's checkpoint, and
//! `CHECKSUMS.shredbak` (the CRC32 of each store file). Readers check the
//! order, the names, every length and every checksum before anything is
//! used; see `docs/format.md`, "Backups".

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crate::codec::{BackupChecksums, BackupManifest, JOURNAL_MAGIC, Journal, MANIFEST_MAGIC};
use crate::error::{BackupError, Error, Result};

/// Names of the archive's entries.
pub(crate) const MANIFEST_ENTRY: &str = "MANIFEST.shredbak";
pub(crate) const JOURNAL_ENTRY: &str = "JOURNAL.shredjnl";
pub(crate) const CHECKSUMS_ENTRY: &str = "CHECKSUMS.shredbak";
pub(crate) const STORE_PREFIX: &str = "store/";

/// Largest manifest, journal or checksums entry read into memory (a
/// journal of ten million erasures is about 500 MB).
const MAX_RECORD_ENTRY: u64 = 1 << 30;

fn damaged(what: &'static str) -> Error {
    Error::Backup(BackupError::Damaged(what))
}

fn header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// A reader that computes the CRC32 of what passes through it.
struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes a backup archive of the checkpoint in `dir` to `out`.
pub(crate) fn write(
    out: &mut dyn Write,
    manifest: &BackupManifest,
    journal: &Journal,
    dir: &Path,
) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let mut bytes = Vec::new();
    manifest.encode(&mut bytes);
    b.append_data(
        &mut header(bytes.len() as u64),
        MANIFEST_ENTRY,
        bytes.as_slice(),
    )?;
    bytes.clear();
    journal.encode(&mut bytes);
    b.append_data(
        &mut header(bytes.len() as u64),
        JOURNAL_ENTRY,
        bytes.as_slice(),
    )?;
    let mut crcs = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let file = File::open(dir.join(&f.name))?;
        // Never more than the manifest says (a WAL copy cannot grow, but
        // the archive's framing must hold whatever happens).
        let mut r = CrcReader {
            inner: file.take(f.len),
            crc: crc32fast::Hasher::new(),
        };
        b.append_data(
            &mut header(f.len),
            format!("{STORE_PREFIX}{}", f.name),
            &mut r,
        )?;
        if r.inner.limit() != 0 {
            return Err(Error::Io(io::Error::other(
                "a checkpoint file shrank while it was copied",
            )));
        }
        crcs.push(r.crc.finalize());
    }
    bytes.clear();
    BackupChecksums { files: crcs }.encode(&mut bytes);
    b.append_data(
        &mut header(bytes.len() as u64),
        CHECKSUMS_ENTRY,
        bytes.as_slice(),
    )?;
    b.into_inner()?.flush()?;
    Ok(())
}

/// Reads one record entry (manifest, journal, checksums) into memory.
fn read_record<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>> {
    let path = entry.path().map_err(|_| damaged("an entry name"))?;
    if path.to_str() != Some(name) {
        return Err(damaged("the entries are not in a backup's order"));
    }
    let len = entry
        .header()
        .size()
        .map_err(|_| damaged("an entry header"))?;
    if len > MAX_RECORD_ENTRY {
        return Err(damaged("a record entry is too large"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    entry
        .read_to_end(&mut bytes)
        .map_err(|_| damaged("truncated"))?;
    Ok(bytes)
}

fn open_archive(path: &Path) -> Result<tar::Archive<BufReader<File>>> {
    let f = File::open(path)?;
    Ok(tar::Archive::new(BufReader::with_capacity(1 << 20, f)))
}

/// The manifest and journal of the backup file at `path` (its first two
/// entries; the store files are not read).
pub(crate) fn read_head(path: &Path) -> Result<(BackupManifest, Journal)> {
    let mut archive = open_archive(path)?;
    let mut entries = archive
        .entries()
        .map_err(|_| Error::Backup(BackupError::NotABackup))?;
    head(&mut entries)
}

fn head<R: Read>(entries: &mut tar::Entries<'_, R>) -> Result<(BackupManifest, Journal)> {
    let mut first = entries
        .next()
        .ok_or(Error::Backup(BackupError::NotABackup))?
        .map_err(|_| Error::Backup(BackupError::NotABackup))?;
    let bytes = read_record(&mut first, MANIFEST_ENTRY)
        .map_err(|_| Error::Backup(BackupError::NotABackup))?;
    if !bytes.starts_with(MANIFEST_MAGIC) {
        return Err(Error::Backup(BackupError::NotABackup));
    }
    let manifest = BackupManifest::decode(&bytes).map_err(|_| damaged("the manifest"))?;
    drop(first);
    let mut second = entries
        .next()
        .ok_or_else(|| damaged("truncated after the manifest"))?
        .map_err(|_| damaged("the journal entry"))?;
    let bytes = read_record(&mut second, JOURNAL_ENTRY)?;
    let journal = Journal::decode(&bytes).map_err(|_| damaged("the journal"))?;
    if journal.store_id != manifest.store_id {
        return Err(damaged("the journal is not of the manifest's store"));
    }
    Ok((manifest, journal))
}

/// Extracts the backup file at `path` into `dir` (which must exist and be
/// empty), checking every entry. On error `dir` may hold part of it.
pub(crate) fn extract(path: &Path, dir: &Path) -> Result<(BackupManifest, Journal)> {
    read_all(path, Some(dir))
}

/// Checks a whole backup file (every entry, length and checksum) without
/// writing anything.
pub(crate) fn verify(path: &Path) -> Result<BackupManifest> {
    read_all(path, None).map(|(m, _)| m)
}

/// Reads the backup file at `path` through, checking every entry, and
/// writes its store files into `dir` if given.
fn read_all(path: &Path, dir: Option<&Path>) -> Result<(BackupManifest, Journal)> {
    let mut archive = open_archive(path)?;
    let mut entries = archive
        .entries()
        .map_err(|_| Error::Backup(BackupError::NotABackup))?;
    let (manifest, journal) = head(&mut entries)?;
    let mut crcs = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let mut entry = entries
            .next()
            .ok_or_else(|| damaged("truncated: a store file is missing"))?
            .map_err(|_| damaged("a store file's entry"))?;
        let name = entry.path().map_err(|_| damaged("an entry name"))?;
        if name.to_str() != Some(&format!("{STORE_PREFIX}{}", f.name)) {
            return Err(damaged("a store file is not the one the manifest names"));
        }
        if entry.header().size().ok() != Some(f.len) {
            return Err(damaged("a store file's length is not the manifest's"));
        }
        let mut r = CrcReader {
            inner: &mut entry,
            crc: crc32fast::Hasher::new(),
        };
        let copied = match dir {
            Some(dir) => {
                let mut out = File::create(dir.join(&f.name))?;
                let n = io::copy(&mut r, &mut out).map_err(|_| damaged("truncated"))?;
                out.sync_all()?;
                n
            }
            None => io::copy(&mut r, &mut io::sink()).map_err(|_| damaged("truncated"))?,
        };
        if copied != f.len {
            return Err(damaged("truncated"));
        }
        crcs.push(r.crc.finalize());
    }
    let mut last = entries
        .next()
        .ok_or_else(|| damaged("truncated: the checksums are missing"))?
        .map_err(|_| damaged("the checksums entry"))?;
    let bytes = read_record(&mut last, CHECKSUMS_ENTRY)?;
    drop(last);
    let sums = BackupChecksums::decode(&bytes).map_err(|_| damaged("the checksums"))?;
    if sums.files != crcs {
        return Err(damaged("a store file's checksum does not match"));
    }
    if entries.next().is_some() {
        return Err(damaged("entries after the checksums"));
    }
    if let Some(dir) = dir {
        File::open(dir)?.sync_all()?;
    }
    Ok((manifest, journal))
}

/// A journal from a file: an erasure-journal file, or a backup file (its
/// journal).
pub(crate) fn read_journal(path: &Path) -> Result<Journal> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 8];
    let n = f.read(&mut magic)?;
    if n == magic.len() && &magic == JOURNAL_MAGIC {
        let mut bytes = magic.to_vec();
        f.read_to_end(&mut bytes)?;
        return Journal::decode(&bytes).map_err(|_| damaged("the journal file"));
    }
    match read_head(path) {
        Ok((_, j)) => Ok(j),
        Err(Error::Backup(BackupError::NotABackup)) => Err(BackupError::NotAJournal.into()),
        Err(e) => Err(e),
    }
}

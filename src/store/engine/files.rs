//! The data directory's files: SST and WAL numbers, sizes, and every stored
//! version of a user's records in them, read from the files themselves
//! ([`sst`](super::sst), [`wal`](super::wal)) rather than through an
//! iterator, which shows neither overwritten nor deleted versions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Cf, sst, wal};
use crate::error::Result;
use crate::types::Handle;

/// A live SST file: its column family and key range.
#[derive(Debug, Clone)]
pub(crate) struct LiveSst {
    /// Its column family (`None`: one shredstore does not know).
    pub(crate) cf: Option<Cf>,
    /// The file number (`000123.sst` is 123).
    pub(crate) number: u64,
    /// Smallest user key in the file.
    pub(crate) smallest: Vec<u8>,
    /// Largest user key in the file.
    pub(crate) largest: Vec<u8>,
}

/// One stored version of a record, found in a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRecord<'a> {
    /// The column family of the file (`None` for an SST not known to
    /// RocksDB whose properties name no shredstore column family).
    pub(crate) cf: Option<Cf>,
    /// The record's key.
    pub(crate) key: &'a [u8],
    /// Its value; `None` for a deletion marker.
    pub(crate) value: Option<&'a [u8]>,
}

/// What a scan of files read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScanReport {
    /// Files parsed.
    pub(crate) files_read: u64,
    /// Files present but not parseable (they may hold anything).
    pub(crate) unreadable: u64,
}

/// A WAL file and the log position of its first write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalFile {
    /// Position (sequence) of its first write batch; `None` if it holds
    /// none. `Err`-free: an unreadable WAL reports `Some(0)`, older than
    /// everything, so it is never mistaken for a clean one.
    pub(crate) first_position: Option<u64>,
}

/// The number of a RocksDB file such as `000123.sst`, compared numerically
/// (names past 999999 are wider, so text order would be wrong).
pub(crate) fn file_number(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

/// Numbers of the files in `dir` ending in `suffix`.
pub(crate) fn file_numbers(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name.to_str().and_then(|n| file_number(n, suffix)) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Bytes of every file below `dir`.
pub(crate) fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // RocksDB deletes obsolete files at any time: one listed a moment ago
        // may be gone.
        let meta = match entry.metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl super::rocks::Rocks {
    fn path_of(&self, number: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("{number:06}{suffix}"))
    }

    /// Numbers of the SST files in the data directory (live or not).
    pub(crate) fn sst_files_on_disk(&self) -> Result<Vec<u64>> {
        if self.in_memory {
            return Ok(Vec::new());
        }
        file_numbers(&self.dir, ".sst")
    }

    /// Numbers of the WAL files in the data directory.
    pub(crate) fn wal_numbers(&self) -> Result<Vec<u64>> {
        if self.in_memory {
            return Ok(Vec::new());
        }
        file_numbers(&self.dir, ".log")
    }

    /// Bytes of every file in the data directory.
    pub(crate) fn bytes_on_disk(&self) -> Result<u64> {
        if self.in_memory {
            return Ok(0);
        }
        dir_size(&self.dir)
    }

    /// The WAL files in the data directory with the position of their first
    /// write.
    pub(crate) fn wal_files(&self) -> Result<Vec<WalFile>> {
        let mut out = Vec::new();
        for number in self.wal_numbers()? {
            let Some(bytes) = read_if_present(&self.path_of(number, ".log"))? else {
                continue;
            };
            let first_position = match wal::first_sequence(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(wal = number, error = %e, "unreadable WAL file");
                    Some(0)
                }
            };
            out.push(WalFile { first_position });
        }
        Ok(out)
    }

    /// Reads every stored version of every record whose key starts with one
    /// of `handles` (`None`: of every record keyed by a handle), in the SST files `numbers` (each with the column family
    /// RocksDB lists it under, or `None` to take it from the file's own
    /// properties), and hands each to `found`. Files deleted meanwhile are
    /// skipped; files that do not parse are counted as unreadable.
    pub(crate) fn scan_ssts(
        &self,
        numbers: &[(u64, Option<Cf>)],
        handles: Option<&HashSet<Handle>>,
        mut found: impl FnMut(&Handle, FileRecord<'_>),
    ) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        for &(number, listed_cf) in numbers {
            let Some(bytes) = read_if_present(&self.path_of(number, ".sst"))? else {
                continue;
            };
            let table = match sst::Sst::parse(&bytes) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(sst = number, error = %e, "unreadable SST file");
                    report.unreadable += 1;
                    continue;
                }
            };
            let cf = listed_cf.or_else(|| table.column_family().and_then(Cf::from_name));
            let mut broken = false;
            for entry in table.entries() {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(sst = number, error = %e, "unreadable SST block");
                        broken = true;
                        break;
                    }
                };
                let Some(prefix) = entry.user_key.get(..Handle::LEN) else {
                    continue;
                };
                let mut h = [0u8; Handle::LEN];
                h.copy_from_slice(prefix);
                let handle = Handle(h);
                if handles.is_some_and(|hs| !hs.contains(&handle)) {
                    continue;
                }
                let value = match entry.kind {
                    sst::EntryKind::Value | sst::EntryKind::Merge | sst::EntryKind::Other(_) => {
                        Some(entry.value)
                    }
                    sst::EntryKind::Deletion
                    | sst::EntryKind::SingleDeletion
                    | sst::EntryKind::RangeDeletion => None,
                };
                found(
                    &handle,
                    FileRecord {
                        cf,
                        key: &entry.user_key,
                        value,
                    },
                );
            }
            report.files_read += 1;
            report.unreadable += u64::from(broken);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_numbers_compare_numerically() {
        assert_eq!(file_number("000123.sst", ".sst"), Some(123));
        assert_eq!(file_number("1234567.log", ".log"), Some(1_234_567));
        assert_eq!(file_number("MANIFEST-000005", ".sst"), None);
    }
}

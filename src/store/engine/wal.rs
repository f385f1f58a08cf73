//! A reader for RocksDB write-ahead-log (`*.log`) files, written from the
//! RocksDB 11.8 sources (`db/log_format.h`, `db/log_reader.cc`,
//! `db/log_writer.cc`, `db/write_batch.cc`).
//!
//! A WAL is a sequence of 32 KiB blocks of physical records, each with a 7-byte
//! header (masked crc32c, little-endian u16 length, type byte) and never
//! crossing a block boundary; a block tail too short for a header is zero
//! padding. A logical record (a WriteBatch, which begins with its sequence
//! number as fixed64 and its count as fixed32) is one FULL record or FIRST,
//! MIDDLE..., LAST fragments.
//!
//! CRCs are not verified: this scans for presence, not integrity. Metadata
//! records (compression type 9, user-defined timestamp sizes 10, predecessor
//! WAL info 130, and any other type with the 0x80 "safe to ignore" bit) are
//! skipped; a compression record naming a codec is rejected, as are recycled
//! log records (types 5..=8, 11, 131: they need the log number to tell stale
//! records from live ones) and unknown types without the 0x80 bit, which
//! RocksDB reports as corruption. A record cut off by the end of the file
//! (a crash mid-write) ends the file without error, dropping the partial
//! WriteBatch, as RocksDB's recovery does.

use std::borrow::Cow;
use std::fmt;

/// What was malformed (or unsupported) in a WAL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalError(&'static str);

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable WAL file: {}", self.0)
    }
}

impl std::error::Error for WalError {}

/// A `WriteBatch`'s sequence number and bytes (borrowed from the file when
/// stored as one FULL record).
pub(crate) type Batch<'a> = (u64, Cow<'a, [u8]>);

/// Size of a WAL block.
const BLOCK: usize = 32 * 1024;
/// Size of a legacy physical record header.
const HEADER: usize = 7;
/// Size of a `WriteBatch` header (sequence + count).
const BATCH_HEADER: usize = 12;

/// The sequence number of the first `WriteBatch` in a WAL file, None if the
/// file holds no batch (an empty or freshly created WAL). Skips `RocksDB`'s non-batch
/// metadata records by their record types; a truncated last record (crash)
/// ends the file without error. Corruption after the first batch is not seen.
pub(crate) fn first_sequence(file: &[u8]) -> Result<Option<u64>, WalError> {
    batches(file)
        .next()
        .transpose()
        .map(|b| b.map(|(seq, _)| seq))
}

/// Every (sequence, `WriteBatch` bytes) logical record in the file, in order,
/// reassembled from FIRST/MIDDLE/LAST fragments: borrowed from `file` when the
/// batch is one FULL record, owned when reassembled. The bytes are the whole
/// batch, header included. The iterator ends after the first error.
pub(crate) fn batches(file: &[u8]) -> Batches<'_> {
    Batches {
        file,
        pos: 0,
        done: false,
    }
}

/// Iterator over the `WriteBatch`es of a WAL file; see [`batches`].
#[derive(Clone, Debug)]
pub(crate) struct Batches<'a> {
    /// The whole file.
    file: &'a [u8],
    /// Offset of the next physical record.
    pos: usize,
    /// Set after the end or an error.
    done: bool,
}

impl<'a> Batches<'a> {
    /// The next logical record, or None at the end of the file.
    fn step(&mut self) -> Result<Option<Batch<'a>>, WalError> {
        // A fragmented record being reassembled (an empty FIRST may precede a
        // FULL or FIRST: an old writer bug that RocksDB tolerates).
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let block_end = (self.pos / BLOCK).saturating_add(1).saturating_mul(BLOCK);
            let last_block = block_end >= self.file.len();
            let avail_end = block_end.min(self.file.len());
            let Some(rest) = self.file.get(self.pos..avail_end).filter(|r| !r.is_empty()) else {
                return Ok(None); // end of file; a partial fragmented record is dropped
            };
            let Some(&[_, _, _, _, len_lo, len_hi, kind]) = rest.get(..HEADER) else {
                if last_block {
                    return Ok(None); // truncated header at the end of the file
                }
                self.pos = block_end; // zero padding at a block tail
                continue;
            };
            let Some(payload) = rest.get(
                HEADER..HEADER.saturating_add(usize::from(u16::from_le_bytes([len_lo, len_hi]))),
            ) else {
                if last_block {
                    return Ok(None); // truncated final record
                }
                return Err(WalError("record runs past the end of its block"));
            };
            let in_record = pending.as_ref().is_some_and(|p| !p.is_empty());
            self.pos = self
                .pos
                .saturating_add(HEADER)
                .saturating_add(payload.len());
            match kind {
                0 if payload.is_empty() && !in_record => self.pos = block_end,
                1 | 2 if in_record => {
                    return Err(WalError("fragmented record without its LAST fragment"));
                }
                1 => return batch(Cow::Borrowed(payload)).map(Some),
                2 => pending = Some(payload.to_vec()),
                3 | 4 => {
                    let buf = pending
                        .as_mut()
                        .ok_or(WalError("MIDDLE or LAST fragment without FIRST"))?;
                    buf.extend_from_slice(payload);
                    if kind == 4 {
                        return batch(Cow::Owned(pending.take().unwrap_or_default())).map(Some);
                    }
                }
                5..=8 | 11 | 131 => return Err(WalError("recycled WAL records not supported")),
                _ if in_record => {
                    return Err(WalError("unexpected record inside a fragmented record"));
                }
                9 if payload.get(..4) != Some(&[0u8; 4][..]) => {
                    return Err(WalError("compressed WAL not supported"));
                }
                9 | 10 | 130 => {}
                k if k & 0x80 != 0 => pending = None,
                _ => return Err(WalError("unknown WAL record type")),
            }
        }
    }
}

/// A logical record as a `WriteBatch`: its sequence number and bytes.
fn batch(bytes: Cow<'_, [u8]>) -> Result<Batch<'_>, WalError> {
    match bytes.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
        Some(seq) if bytes.len() >= BATCH_HEADER => Ok((u64::from_le_bytes(seq), bytes)),
        _ => Err(WalError("WriteBatch shorter than its 12-byte header")),
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step().transpose();
        self.done = !matches!(r, Some(Ok(_)));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WriteBatch with sequence `seq` and `n` bytes of body.
    fn wb(seq: u64, n: usize) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend(1u32.to_le_bytes());
        b.extend((0..n).map(|i| i as u8));
        b
    }

    /// Appends one physical record (zero CRC).
    fn phys(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
        out.extend([0, 0, 0, 0]);
        out.extend((payload.len() as u16).to_le_bytes());
        out.push(kind);
        out.extend(payload);
    }

    /// Appends a logical record as `log::Writer::AddRecord` does.
    fn add(out: &mut Vec<u8>, data: &[u8]) {
        let mut left = data;
        let mut begin = true;
        loop {
            let leftover = BLOCK - out.len() % BLOCK;
            if leftover < HEADER {
                out.extend(std::iter::repeat_n(0, leftover));
            }
            let avail = BLOCK - out.len() % BLOCK - HEADER;
            let (frag, rest) = left.split_at(left.len().min(avail));
            let kind = match (begin, rest.is_empty()) {
                (true, true) => 1,
                (true, false) => 2,
                (false, false) => 3,
                (false, true) => 4,
            };
            phys(out, kind, frag);
            (left, begin) = (rest, false);
            if left.is_empty() {
                return;
            }
        }
    }

    fn all(file: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        batches(file)
            .map(|r| r.map(|(s, b)| (s, b.into_owned())))
            .collect()
    }

    #[test]
    fn full_fragmented_padding_and_truncation() {
        let mut f = Vec::new();
        phys(&mut f, 10, &[1, 0, 0, 0, 8, 0]); // user-defined timestamp sizes
        phys(&mut f, 130, &[9; 20]); // predecessor WAL info
        let (a, b) = (wb(5, 100), wb(6, 70_000));
        add(&mut f, &a);
        add(&mut f, &b); // FIRST / MIDDLE / LAST across two block boundaries
        let c = wb(9, BLOCK - f.len() % BLOCK - 4 - HEADER - BATCH_HEADER);
        add(&mut f, &c); // leaves 4 bytes of padding at the block tail
        let tail_pad = f.len();
        add(&mut f, &wb(10, 3));
        assert_eq!(tail_pad % BLOCK, BLOCK - 4, "test layout");
        assert_eq!(&f[tail_pad..tail_pad + 4], &[0; 4]);
        assert_eq!(f[BLOCK + 6], 3, "MIDDLE fragment at block 1");
        let got = all(&f).unwrap();
        assert_eq!(got, vec![(5, a), (6, b.clone()), (9, c), (10, wb(10, 3))]);
        assert_eq!(first_sequence(&f), Ok(Some(5)));
        assert!(matches!(batches(&f).nth(1), Some(Ok((6, Cow::Owned(_))))));
        // A crash mid-record: every cut ends cleanly after the complete batches.
        for cut in [tail_pad + 2, tail_pad + 4 + 3, f.len() - 1, 60_000, 10] {
            let n = all(&f[..cut]).unwrap().len();
            assert!(n <= 3, "cut {cut}");
        }
        assert_eq!(all(&f[..60_000]).unwrap(), vec![(5, wb(5, 100))]);
    }

    #[test]
    fn empty_and_metadata_only() {
        assert_eq!(first_sequence(&[]), Ok(None));
        let mut f = Vec::new();
        phys(&mut f, 9, &[0; 4]);
        phys(&mut f, 0x85, b"ignorable");
        assert_eq!(first_sequence(&f), Ok(None));
        assert_eq!(first_sequence(&vec![0; 2 * BLOCK]), Ok(None)); // preallocated zeros
    }

    #[test]
    fn malformed() {
        let bad = |recs: &[(u8, &[u8])]| {
            let mut f = Vec::new();
            recs.iter().for_each(|(k, p)| phys(&mut f, *k, p));
            f.extend([0; BLOCK]);
            first_sequence(&f)
        };
        let b = wb(1, 0);
        assert!(bad(&[(3, &b)]).is_err());
        assert!(bad(&[(4, &b)]).is_err());
        assert!(bad(&[(2, &b), (1, &b)]).is_err());
        assert!(bad(&[(2, &b), (10, &b)]).is_err());
        assert!(bad(&[(5, &b)]).is_err());
        assert!(bad(&[(9, &[4, 0, 0, 0])]).is_err());
        assert!(bad(&[(42, &b)]).is_err());
        assert!(bad(&[(1, &b[..11])]).is_err());
        assert!(bad(&[(0, &b)]).is_err());
        assert_eq!(bad(&[(2, &[]), (1, &b)]), Ok(Some(1)));
        let mut f = Vec::new();
        phys(&mut f, 1, &vec![0; BLOCK - HEADER + 1]); // longer than its block
        f.extend([0; BLOCK]);
        assert!(first_sequence(&f).is_err());
        let mut it = batches(&f);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}

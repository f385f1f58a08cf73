//! A reader for RocksDB block-based table (SST) files, written from the RocksDB
//! 11.8 sources (`table/format.cc`, `table/meta_blocks.cc`,
//! `table/block_based/{block.cc,block_util.h,data_block_footer.cc}`).
//!
//! It walks every data block the index lists, then the range-deletion meta
//! block, so every stored version of every key is seen, including tombstoned
//! and overwritten ones that no RocksDB iterator shows.
//!
//! Handled: `format_version` 2..=7 (up to 5 the footer holds the index handle;
//! from 6 the metaindex does, under `rocksdb.index`), binary-search, hash and
//! binary-search-with-first-key indexes (index types 0, 1, 3), index value
//! delta encoding, data blocks with a hash index. Rejected with an error:
//! compressed blocks (compression type byte not 0), two-level (partitioned)
//! indexes, unknown index types, data blocks with separated key/value storage,
//! and anything malformed. Block checksums are not verified: this scans for
//! presence, not integrity. Nothing here panics on any input or allocates more
//! than the input holds.
//!
//! Keys in a block are prefix-compressed against the previous key, so a key's
//! bytes need not be contiguous in the file: searching a raw file for a key
//! proves nothing, and [`Entry::user_key`] is owned when it had to be rebuilt.

use std::borrow::Cow;
use std::fmt;

/// What was malformed (or unsupported) in an SST file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SstError(&'static str);

impl fmt::Display for SstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable SST file: {}", self.0)
    }
}

impl std::error::Error for SstError {}

/// Results of this module.
type Result<T> = std::result::Result<T, SstError>;

/// An error saying `what` was wrong.
fn err<T>(what: &'static str) -> Result<T> {
    Err(SstError(what))
}

/// Turns a missing value into an error.
trait OrBad<T> {
    /// The value, or an error saying `what` was wrong.
    fn or_bad(self, what: &'static str) -> Result<T>;
}

impl<T> OrBad<T> for Option<T> {
    fn or_bad(self, what: &'static str) -> Result<T> {
        self.ok_or(SstError(what))
    }
}

/// Magic number at the end of every block-based table.
const MAGIC: u64 = 0x88e2_41b7_85f4_cff7;
/// Magic number of block-based tables with `format_version` 0 or 1.
const LEGACY_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Footer length from `format_version` 1: checksum type, 40 bytes of handles
/// (or, from 6, extended magic, checksums and metaindex size), version, magic.
const FOOTER_LEN: usize = 53;
/// Compression type byte and checksum after every block.
#[cfg(test)]
const TRAILER_LEN: usize = 5;
/// Extended magic at the start of the footer's part 2 from `format_version` 6.
const EXT_MAGIC: [u8; 4] = [0x3e, 0x00, 0x7a, 0x00];

/// The type of an internal key (`db/dbformat.h` `ValueType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// `kTypeValue` (1): a put.
    Value,
    /// `kTypeDeletion` (0): a point tombstone.
    Deletion,
    /// `kTypeSingleDeletion` (7).
    SingleDeletion,
    /// `kTypeMerge` (2): a merge operand.
    Merge,
    /// `kTypeRangeDeletion` (0xF): a range tombstone; the value is the end key.
    RangeDeletion,
    /// Any other type byte (blob index, wide-column entity, ...).
    Other(u8),
}

/// One stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// The user key (for a range tombstone, its start): borrowed from the file
    /// when stored whole, owned when rebuilt from a shared prefix.
    pub(crate) user_key: Cow<'a, [u8]>,
    /// The sequence number (0 after compaction to the bottom level).
    pub(crate) seq: u64,
    /// The type of the entry.
    pub(crate) kind: EntryKind,
    /// The value, possibly empty (for a range tombstone, the end key).
    pub(crate) value: &'a [u8],
}

/// A parsed SST file, borrowing the file's bytes.
#[derive(Clone, Debug)]
pub(crate) struct Sst<'a> {
    /// `format_version` from the footer.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    format_version: u32,
    /// All table properties: name, raw value.
    properties: Vec<(Cow<'a, [u8]>, &'a [u8])>,
    /// Each data block's contents, in index order, then the range-deletion
    /// block's (flagged true).
    blocks: Vec<(&'a [u8], bool)>,
}

impl<'a> Sst<'a> {
    /// Parses the footer, metaindex, properties and index of a whole SST file,
    /// and checks that every block they point to lies in the file uncompressed.
    pub(crate) fn parse(file: &'a [u8]) -> Result<Self> {
        let end = file
            .len()
            .checked_sub(FOOTER_LEN)
            .or_bad("file too short")?;
        let footer = file.get(end..).or_bad("file too short")?;
        let format_version = match fixed64(footer, 45)? {
            MAGIC => fixed32(footer, 41)?,
            LEGACY_MAGIC => return err("format_version 0/1 tables not supported"),
            _ => return err("bad magic number (not a block-based table)"),
        };
        if !(2..=7).contains(&format_version) || footer.first().is_none_or(|&c| c > 4) {
            return err("unsupported format_version or checksum type");
        }
        let (metaindex, footer_index) = if format_version >= 6 {
            let ok = footer.get(1..5) == Some(&EXT_MAGIC[..]) && fixed64(footer, 33)? == 0;
            if !ok || fixed32(footer, 9)? == 0 {
                return err("bad format_version 6+ footer");
            }
            let size = u64::from(fixed32(footer, 13)?);
            let offset = (end as u64)
                .checked_sub(size)
                .and_then(|o| o.checked_sub(5));
            (
                Handle(offset.or_bad("metaindex before file start")?, size),
                None,
            )
        } else {
            let mut handles = footer.get(1..41).or_bad("file too short")?;
            (handle(&mut handles)?, Some(handle(&mut handles)?))
        };
        let (mut props, mut range_del, mut index) = (None, None, footer_index);
        let mut it = BlockIter::new(read_block(file, end, metaindex)?, false)?;
        while let Some(raw) = it.next_raw()? {
            let slot = match &*raw.key {
                b"rocksdb.properties" => &mut props,
                b"rocksdb.range_del" => &mut range_del,
                b"rocksdb.index" if format_version >= 6 => &mut index,
                _ => continue,
            };
            *slot = Some(handle(&mut { raw.value })?);
        }
        let props = read_block(file, end, props.or_bad("no properties block")?)?;
        let mut sst = Sst {
            format_version,
            properties: Vec::new(),
            blocks: Vec::new(),
        };
        let mut it = BlockIter::new(props, false)?;
        while let Some(raw) = it.next_raw()? {
            sst.properties.push((raw.key, raw.value));
        }
        let index_type = sst.property(b"rocksdb.block.based.table.index.type");
        let first_key = match index_type.or_bad("no index type property")? {
            [0 | 1, 0, 0, 0] => false,
            [3, 0, 0, 0] => true,
            [2, 0, 0, 0] => return err("two-level (partitioned) index not supported"),
            _ => return err("unknown or malformed index type property"),
        };
        // "rocksdb.index.key.is.user.key" only changes how index keys compare.
        let delta = sst.property_u64(b"rocksdb.index.value.is.delta.encoded")?;
        let delta = delta.is_some_and(|d| d != 0);
        let index = read_block(file, end, index.or_bad("no index handle")?)?;
        let (mut it, mut prev) = (BlockIter::new(index, delta)?, None);
        while let Some(raw) = it.next_raw()? {
            let mut v = raw.value;
            let h = match prev {
                // Delta-encoded handles follow the previous block and its
                // trailer, and hold the zigzag-varint change in size.
                Some(Handle(offset, size)) if delta && raw.shared => {
                    let z = varint64(&mut v)?;
                    let d = (z >> 1).cast_signed() ^ (z & 1).cast_signed().wrapping_neg();
                    let offset = offset.checked_add(size).and_then(|o| o.checked_add(5));
                    let size = size.checked_add_signed(d);
                    Handle(offset.or_bad("bad index")?, size.or_bad("bad index")?)
                }
                _ => handle(&mut v)?,
            };
            if first_key {
                let n = varint32(&mut v)?;
                take(&mut v, n)?;
            }
            if delta {
                it.skip_value(raw.value.len().saturating_sub(v.len()));
            }
            sst.blocks.push((read_block(file, end, h)?, false));
            prev = Some(h);
        }
        if let Some(h) = range_del {
            sst.blocks.push((read_block(file, end, h)?, true));
        }
        Ok(sst)
    }

    /// The column family name, from property `rocksdb.column.family.name`.
    pub(crate) fn column_family(&self) -> Option<&'a [u8]> {
        self.property(b"rocksdb.column.family.name")
    }

    /// The table's `format_version`, from the footer.
    #[cfg(test)]
    pub(crate) fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The raw value of a table property (numbers are varint64-encoded).
    pub(crate) fn property(&self, name: &[u8]) -> Option<&'a [u8]> {
        let found = self.properties.iter().find(|(k, _)| **k == *name);
        found.map(|&(_, v)| v)
    }

    /// A numeric (varint64) table property; `rocksdb.num.entries` counts every
    /// entry [`Sst::entries`] yields, range tombstones included.
    pub(crate) fn property_u64(&self, name: &[u8]) -> Result<Option<u64>> {
        self.property(name)
            .map(|mut v| varint64(&mut v))
            .transpose()
    }

    /// Every entry of every data block, in file order, then the range
    /// tombstones of the range-deletion meta block (kind `RangeDeletion`,
    /// `user_key` = start, `value` = end key). Ends after the first error.
    pub(crate) fn entries(&self) -> Entries<'a> {
        let blocks = self.blocks.clone().into_iter();
        Entries {
            blocks,
            cur: None,
            done: false,
        }
    }
}

/// Iterator over the entries of an [`Sst`]; see [`Sst::entries`].
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    /// Blocks not yet started, flagged true for the range-deletion block.
    blocks: std::vec::IntoIter<(&'a [u8], bool)>,
    /// The block being read, and its flag.
    cur: Option<(BlockIter<'a>, bool)>,
    /// Set after the end or an error.
    done: bool,
}

impl<'a> Entries<'a> {
    /// The next entry, or None at the end.
    fn step(&mut self) -> Result<Option<Entry<'a>>> {
        loop {
            if let Some((it, range_del)) = &mut self.cur
                && let Some(raw) = it.next_raw()?
            {
                return entry(raw.key, raw.value, *range_del).map(Some);
            }
            let Some((block, range_del)) = self.blocks.next() else {
                return Ok(None);
            };
            self.cur = Some((BlockIter::new(block, false)?, range_del));
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step().transpose();
        self.done = !matches!(r, Some(Ok(_)));
        r
    }
}

/// Splits an internal key (`user_key || fixed64(seq << 8 | type)`).
fn entry<'a>(key: Cow<'a, [u8]>, value: &'a [u8], range_del: bool) -> Result<Entry<'a>> {
    let split = key.len().checked_sub(8).or_bad("internal key too short")?;
    let trailer = fixed64(&key, split)?;
    let kind = match (trailer & 0xff) as u8 {
        1 => EntryKind::Value,
        0 => EntryKind::Deletion,
        7 => EntryKind::SingleDeletion,
        2 => EntryKind::Merge,
        0xF => EntryKind::RangeDeletion,
        t => EntryKind::Other(t),
    };
    if range_del && kind != EntryKind::RangeDeletion {
        return err("range-deletion block entry is not a range tombstone");
    }
    let user_key = match key {
        Cow::Borrowed(k) => Cow::Borrowed(k.get(..split).unwrap_or_default()),
        Cow::Owned(mut k) => {
            k.truncate(split);
            Cow::Owned(k)
        }
    };
    Ok(Entry {
        user_key,
        seq: trailer >> 8,
        kind,
        value,
    })
}

/// Location of a block: offset, and size without the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Handle(u64, u64);

/// Decodes a block handle (two varint64s).
fn handle(input: &mut &[u8]) -> Result<Handle> {
    Ok(Handle(varint64(input)?, varint64(input)?))
}

/// The contents of the uncompressed block at `h`, whose trailer must end by
/// `limit`.
fn read_block(file: &[u8], limit: usize, Handle(offset, size): Handle) -> Result<&[u8]> {
    let end = offset
        .checked_add(size)
        .filter(|e| e.saturating_add(5) <= limit as u64);
    let start = usize::try_from(offset).ok().filter(|_| end.is_some());
    let contents = start.and_then(|s| file.get(s..)?.get(..usize::try_from(size).ok()?));
    let contents = contents.or_bad("block handle past the end of the file")?;
    match end.and_then(|e| file.get(usize::try_from(e).ok()?)) {
        Some(0) => Ok(contents),
        Some(_) => err("compressed block (compression type byte is not 0)"),
        None => err("block handle past the end of the file"),
    }
}

/// A block's key/value entry, before internal-key decoding.
struct Raw<'a> {
    /// The whole key, rebuilt from the shared prefix if needed.
    key: Cow<'a, [u8]>,
    /// Whether the key shares a prefix with the previous one.
    shared: bool,
    /// The value; with value delta encoding, everything after the key (the
    /// caller decodes it and calls [`BlockIter::skip_value`]).
    value: &'a [u8],
}

/// Sequential reader of one block's entries (`ParseNextKey` in block.cc).
#[derive(Clone, Debug)]
struct BlockIter<'a> {
    /// The block's entries, up to its restart array.
    data: &'a [u8],
    /// Offset of the next entry.
    pos: usize,
    /// Values have no length prefix (index blocks, `format_version` >= 4).
    delta: bool,
    /// The previous key.
    key: Cow<'a, [u8]>,
}

impl<'a> BlockIter<'a> {
    /// Strips a block's footer (`DataBlockFooter::DecodeFrom`: restart count
    /// with flag bits), hash index and restart array.
    fn new(block: &'a [u8], delta: bool) -> Result<Self> {
        let mut rest = block.len().checked_sub(4).or_bad("block too short")?;
        let packed = fixed32(block, rest)?;
        if packed & 1 << 28 != 0 {
            return err("data blocks with separated key/value storage not supported");
        }
        if packed & 1 << 31 != 0 {
            // Hash index: one byte per bucket, then the fixed16 bucket count.
            let at = rest.checked_sub(2).filter(|_| rest < 1 << 16);
            let at = at.or_bad("bad data block hash index")?;
            let count = block.get(at..rest).and_then(|c| c.try_into().ok());
            let count = count.map(u16::from_le_bytes).filter(|&c| c > 0);
            let start = count.and_then(|c| at.checked_sub(c.into()));
            rest = start.or_bad("bad data block hash index")?;
        }
        // Bit 29 is a hint (uniform keys); bit 30 is reserved.
        let restarts = (packed & !(1 << 31 | 1 << 29)) as usize;
        if restarts >= 1 << 28 {
            return err("block footer has reserved bits set");
        }
        let keys_end = restarts.checked_mul(4).and_then(|n| rest.checked_sub(n));
        let data = keys_end
            .and_then(|n| block.get(..n))
            .or_bad("bad restart array")?;
        if restarts == 0 && !data.is_empty() {
            return err("block without restart points");
        }
        Ok(Self {
            data,
            pos: 0,
            delta,
            key: Cow::Borrowed(&[]),
        })
    }

    /// Consumes `n` bytes of value after a value-delta-encoded entry.
    fn skip_value(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.data.len());
    }

    /// The next entry (`DecodeEntry` / `DecodeEntryV4`), or None at the end.
    fn next_raw(&mut self) -> Result<Option<Raw<'a>>> {
        let Some(mut cur) = self.data.get(self.pos..).filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let shared = varint32(&mut cur)?;
        let non_shared = varint32(&mut cur)?;
        let value_len = if self.delta {
            None
        } else {
            Some(varint32(&mut cur)?)
        };
        let suffix = take(&mut cur, non_shared)?;
        let key = match self.key.get(..shared) {
            _ if shared == 0 => Cow::Borrowed(suffix),
            Some(prefix) => Cow::Owned([prefix, suffix].concat()),
            None => return err("shared key prefix longer than the previous key"),
        };
        let value = match value_len {
            Some(n) => take(&mut cur, n)?,
            None => cur,
        };
        self.pos = self.data.len().saturating_sub(cur.len());
        self.key = key.clone();
        Ok(Some(Raw {
            key,
            shared: shared != 0,
            value,
        }))
    }
}

/// Splits off the first `n` bytes of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    let (head, tail) = input
        .split_at_checked(n)
        .or_bad("length past the end of its block")?;
    *input = tail;
    Ok(head)
}

/// Decodes a varint64, rejecting overlong or overflowing encodings.
fn varint64(input: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = input.split_first() else {
            return err("truncated varint");
        };
        *input = rest;
        if shift == 63 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    err("varint too long")
}

/// Decodes a varint32 (as a usize).
fn varint32(input: &mut &[u8]) -> Result<usize> {
    let v = u32::try_from(varint64(input)?).ok();
    v.and_then(|v| usize::try_from(v).ok())
        .or_bad("varint32 too large")
}

/// The `N` bytes at `at`.
fn fixed<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N]> {
    let bytes = b
        .get(at..at.saturating_add(N))
        .and_then(|s| s.try_into().ok());
    bytes.or_bad("truncated fixed-width integer")
}

/// The little-endian u32 at `at`.
fn fixed32(b: &[u8], at: usize) -> Result<u32> {
    fixed(b, at).map(u32::from_le_bytes)
}

/// The little-endian u64 at `at`.
fn fixed64(b: &[u8], at: usize) -> Result<u64> {
    fixed(b, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, v: u64) {
        let n = (0..10).position(|i| v >> (7 * i) < 0x80).unwrap() + 1;
        let byte = |i: usize| (v >> (7 * i)) as u8 & 0x7f | if i + 1 < n { 0x80 } else { 0 };
        out.extend((0..n).map(byte));
    }

    fn handle_bytes(h: Handle) -> Vec<u8> {
        let mut v = Vec::new();
        varint(&mut v, h.0);
        varint(&mut v, h.1);
        v
    }

    /// A block of (key, value, value when the key shares a prefix) with restart
    /// interval `every`; with `delta` values have no length prefix.
    fn block(entries: &[(Vec<u8>, Vec<u8>, Vec<u8>)], every: usize, delta: bool) -> Vec<u8> {
        let (mut out, mut restarts, mut prev) = (Vec::new(), vec![], &[][..]);
        for (i, (k, full, short)) in entries.iter().enumerate() {
            let mut shared = k.iter().zip(prev).take_while(|(a, b)| a == b).count();
            if i % every == 0 {
                shared = 0;
                restarts.push(out.len() as u32);
            }
            let v = if shared > 0 && delta { short } else { full };
            varint(&mut out, shared as u64);
            varint(&mut out, (k.len() - shared) as u64);
            if !delta {
                varint(&mut out, v.len() as u64);
            }
            out.extend(k[shared..].iter().chain(v));
            prev = k;
        }
        let restarts = if restarts.is_empty() {
            vec![0]
        } else {
            restarts
        };
        restarts.iter().for_each(|r| out.extend(r.to_le_bytes()));
        out.extend((restarts.len() as u32).to_le_bytes());
        out
    }

    fn ikey(k: &[u8], seq: u64, t: u8) -> Vec<u8> {
        [k, &(seq << 8 | u64::from(t)).to_le_bytes()].concat()
    }

    type Want = Vec<(Vec<u8>, u64, EntryKind, Vec<u8>)>;

    /// A table of 4 data blocks of 5 entries, and 2 range tombstones.
    fn sample(fv: u32, index_type: u32, delta: bool) -> (Vec<u8>, Want) {
        let kinds = [1, 0, 2, 7, 0x16].map(|t| (t, entry(ikey(b"", 0, t).into(), b"", false)));
        let (mut f, mut index, mut want, mut prev) = (vec![], vec![], vec![], 0);
        let put = |f: &mut Vec<u8>, b: Vec<u8>| {
            let h = Handle(f.len() as u64, b.len() as u64);
            f.extend(b.into_iter().chain([0; TRAILER_LEN]));
            h
        };
        for b in 0..4u64 {
            let mut es = Vec::new();
            for (i, (t, kind)) in kinds.iter().enumerate() {
                let (key, seq) = (format!("user/{b}/key{i}").into_bytes(), b * 10 + i as u64);
                let value = vec![b as u8; i * 3];
                es.push((ikey(&key, seq, *t), value.clone(), value.clone()));
                want.push((key, seq, kind.clone().unwrap().kind, value));
            }
            let h = put(&mut f, block(&es, 2, false));
            let (mut full, mut short, d) = (handle_bytes(h), vec![], h.1 as i64 - prev);
            varint(&mut short, ((d << 1) ^ (d >> 63)) as u64);
            if index_type == 3 {
                for v in [&mut full, &mut short] {
                    varint(v, es[0].0.len() as u64);
                    v.extend(&es[0].0);
                }
            }
            index.push((es[4].0.clone(), full, short));
            prev = h.1 as i64;
        }
        let rd = [(&b"a"[..], &b"b"[..]), (b"user/2", b"user/3")].map(|(s, e)| {
            want.push((s.to_vec(), 9, EntryKind::RangeDeletion, e.to_vec()));
            (ikey(s, 9, 0xF), e.to_vec(), vec![])
        });
        let rd = put(&mut f, block(&rd, 1, false));
        let ih = put(&mut f, block(&index, 3, delta));
        let props = [
            (
                "rocksdb.block.based.table.index.type",
                index_type.to_le_bytes().to_vec(),
            ),
            ("rocksdb.column.family.name", b"cf".to_vec()),
            ("rocksdb.index.value.is.delta.encoded", vec![delta as u8]),
        ];
        let props = props.map(|(k, v)| (k.into(), v, vec![]));
        let ph = put(&mut f, block(&props, 1000, false));
        let mut meta = vec![("rocksdb.properties", ph), ("rocksdb.range_del", rd)];
        meta.extend((fv >= 6).then_some(("rocksdb.index", ih)));
        let meta: Vec<_> = meta
            .iter()
            .map(|(k, h)| (k.as_bytes().into(), handle_bytes(*h), vec![]))
            .collect();
        let mh = put(&mut f, block(&meta, 1, false));
        f.push(1);
        if fv >= 6 {
            f.extend(EXT_MAGIC.iter().chain(&[0, 0, 0, 0, 1, 0, 0, 0]));
            f.extend((mh.1 as u32).to_le_bytes().iter().chain(&[0; 24]));
        } else {
            let part2 = [handle_bytes(mh), handle_bytes(ih)].concat();
            f.extend(part2.iter().chain(&[0; 40]).take(40));
        }
        f.extend(fv.to_le_bytes().iter().chain(&MAGIC.to_le_bytes()));
        (f, want)
    }

    fn read(file: &[u8]) -> Result<Want> {
        let entry = |e: Entry| (e.user_key.into_owned(), e.seq, e.kind, e.value.to_vec());
        Sst::parse(file)?.entries().map(|e| e.map(entry)).collect()
    }

    #[test]
    fn reads_hand_built_tables() {
        let (f, _) = sample(7, 0, true);
        assert_eq!(Sst::parse(&f).unwrap().column_family(), Some(&b"cf"[..]));
        for (fv, index_type, delta) in [(2, 0, false), (5, 3, true), (6, 1, false), (7, 3, true)] {
            let (file, want) = sample(fv, index_type, delta);
            assert_eq!(Sst::parse(&file).unwrap().format_version(), fv);
            assert_eq!(
                read(&file).unwrap(),
                want,
                "fv {fv} index {index_type} delta {delta}"
            );
        }
    }

    #[test]
    fn rejects_malformed_tables() {
        let (v7, _) = sample(7, 0, true);
        let (v5, _) = sample(5, 0, false);
        let with = |f: &[u8], at: usize, bytes: &[u8]| {
            let mut f = f.to_vec();
            f[at..at + bytes.len()].copy_from_slice(bytes);
            Sst::parse(&f).map(|_| ()).unwrap_err().0
        };
        let (n7, f5) = (v7.len(), v5.len() - FOOTER_LEN);
        assert_eq!(Sst::parse(&[]).unwrap_err().0, "file too short");
        assert!(Sst::parse(&v7[n7 - 52..]).is_err());
        assert!(Sst::parse(&v7[..n7 - 1]).is_err());
        assert!(with(&v7, n7 - 8, &[0; 8]).starts_with("bad magic"));
        assert!(with(&v7, n7 - 8, &LEGACY_MAGIC.to_le_bytes()).contains("0/1"));
        for fv in [0, 1, 8, u32::MAX] {
            assert!(with(&v7, n7 - 12, &fv.to_le_bytes()).contains("format_version"));
        }
        assert!(with(&v7, n7 - 40, &u32::MAX.to_le_bytes()).contains("metaindex"));
        assert!(with(&v7, n7 - 20, &[1]).contains("6+ footer"));
        assert!(Sst::parse(&[&v5[..f5], &[0xff; 41], &v5[f5 + 41..]].concat()).is_err());
        assert_eq!(with(&v5, f5 + 1, &[0xff; 40]), "varint too long");
        let past = [0xff, 0xff, 0xff, 0xff, 0x7f, 0x10, 0];
        assert_eq!(
            with(&v5, f5 + 1, &past),
            "block handle past the end of the file"
        );
        let first = Sst::parse(&v5).unwrap().blocks[0].0.len();
        assert!(with(&v5, first, &[1]).starts_with("compressed block"));
        let (two, _) = sample(7, 2, false);
        assert!(
            Sst::parse(&two)
                .unwrap_err()
                .to_string()
                .contains("two-level")
        );
        // Every truncation and byte flip gives an error or entries, never a panic.
        for f in [&v7, &v5] {
            for at in 0..f.len() {
                let _ = (read(&f[..at]), read(&f[at..]));
                for x in [0x01, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[at] ^= x;
                    let _ = read(&g);
                }
            }
        }
    }
}

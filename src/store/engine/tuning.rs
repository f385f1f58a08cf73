//! RocksDB options of a store, opening it, and the plain baseline the
//! benchmarks compare against.

use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, SliceTransform,
};

use super::Cf;
use super::filter::{ConvMessagesFilterFactory, MessagesFilterFactory};
use crate::codec::FORMAT_VERSION;
use crate::error::{Corruption, Error, Result};
use crate::store::filter_state::FilterState;
use crate::store::options::Options;
use crate::types::Handle;

/// Memtables per column family (RocksDB's default, set explicitly because
/// the memory budget counts on it).
pub(crate) const MAX_WRITE_BUFFERS: usize = 2;
/// Memtable size of the small column families (keys, markers, dedup, meta).
pub(crate) const SMALL_CF_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// The block-based table format this build writes. Pinned (rather than
/// RocksDB's moving default) because [`super::sst`] reads these files to
/// verify erasures; it also reads 5 and 6.
const TABLE_FORMAT_VERSION: i32 = 7;

/// The RocksDB tuning of a store: DB-wide options, the options of the small
/// column families, and those of `messages` (without its compaction filter).
fn rocksdb_options(options: &Options) -> (rocksdb::Options, rocksdb::Options, rocksdb::Options) {
    let cache = Cache::new_lru_cache(options.block_cache_bytes);

    let mut db_opts = rocksdb::Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_paranoid_checks(true);
    // Erasure depends on obsolete WAL files being deleted, not archived or recycled.
    db_opts.set_wal_ttl_seconds(0);
    db_opts.set_wal_size_limit_mb(0);
    db_opts.set_recycle_log_file_num(0);
    // Bound WAL growth so a rarely written column family cannot pin old WALs.
    db_opts.set_max_total_wal_size(256 * 1024 * 1024);
    db_opts.set_keep_log_file_num(4);
    db_opts.set_max_background_jobs(4);
    db_opts.enable_statistics();
    db_opts.set_compression_type(DBCompressionType::None);

    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_format_version(TABLE_FORMAT_VERSION);
    // Index and filter blocks live in the block cache, so the cache bounds them
    // (otherwise they grow with the data, outside any budget).
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut small = rocksdb::Options::default();
    small.set_compression_type(DBCompressionType::None);
    small.set_block_based_table_factory(&table);
    small.set_write_buffer_size(SMALL_CF_WRITE_BUFFER);
    small.set_max_write_buffer_number(MAX_WRITE_BUFFERS as i32);

    let mut msg_table = BlockBasedOptions::default();
    msg_table.set_block_cache(&cache);
    msg_table.set_format_version(TABLE_FORMAT_VERSION);
    msg_table.set_bloom_filter(10.0, false);
    msg_table.set_whole_key_filtering(false);
    msg_table.set_cache_index_and_filter_blocks(true);
    msg_table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut messages = rocksdb::Options::default();
    // Ciphertext does not compress.
    messages.set_compression_type(DBCompressionType::None);
    messages.set_block_based_table_factory(&msg_table);
    messages.set_prefix_extractor(SliceTransform::create_fixed_prefix(Handle::LEN));
    messages.set_write_buffer_size(options.write_buffer_bytes);
    messages.set_max_write_buffer_number(MAX_WRITE_BUFFERS as i32);
    messages.set_periodic_compaction_seconds(options.periodic_compaction.as_secs().max(1));
    (db_opts, small, messages)
}

/// Opens the store's RocksDB instance with every column family.
pub(super) fn open_db(
    options: &Options,
    filter: &Arc<FilterState>,
) -> Result<(DB, rocksdb::Options)> {
    let (mut db_opts, small, mut messages) = rocksdb_options(options);
    if let Some(env) = &options.hooks.memory_env {
        db_opts.set_env(&env.0);
    }
    if let Some(size) = options.hooks.target_file_size {
        messages.set_target_file_size_base(size);
        messages.set_max_bytes_for_level_base(size.saturating_mul(10));
    }
    // Conversation slots: the same layout and tuning as `messages`, with a
    // filter of their own that only applies retention (purge writes the
    // tombstones and range deletions of erasures itself).
    let mut conversations = messages.clone();
    if options.hooks.disable_erasure_filter {
        tracing::warn!("TEST HOOK: the compaction filter is off; erasures will not be purged");
    } else {
        messages.set_compaction_filter_factory(MessagesFilterFactory {
            state: Arc::clone(filter),
            clock: Arc::clone(&options.clock),
        });
        conversations.set_compaction_filter_factory(ConvMessagesFilterFactory {
            state: Arc::clone(filter),
            clock: Arc::clone(&options.clock),
        });
    }
    refuse_other_formats(options)?;
    let cfs = Cf::ALL.map(|cf| {
        let opts = match cf {
            Cf::Messages => messages.clone(),
            Cf::ConvMessages => conversations.clone(),
            _ => small.clone(),
        };
        ColumnFamilyDescriptor::new(cf.name(), opts)
    });
    let db = DB::open_cf_descriptors(&db_opts, &options.data_dir, cfs)?;
    Ok((db, db_opts))
}

/// A store written by another format version has other column families:
/// opening it with ours would add the missing ones, and the build that wrote
/// it could no longer open it. Such a store is refused before anything is
/// changed, naming its version.
fn refuse_other_formats(options: &Options) -> Result<()> {
    let dir = &options.data_dir;
    if options.hooks.memory_env.is_some() || !dir.join("CURRENT").exists() {
        return Ok(());
    }
    let existing = DB::list_cf(&rocksdb::Options::default(), dir)?;
    if Cf::ALL
        .iter()
        .all(|cf| existing.iter().any(|e| e == cf.name()))
    {
        return Ok(());
    }
    let found = if existing.iter().any(|e| e == Cf::Meta.name()) {
        let db = DB::open_cf_for_read_only(&rocksdb::Options::default(), dir, &existing, false)?;
        let meta = db
            .cf_handle(Cf::Meta.name())
            .ok_or(Error::Corrupt(Corruption::Meta))?;
        db.get_cf(meta, crate::store::layout::META_FORMAT_VERSION)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes)
            .ok_or(Error::Corrupt(Corruption::Meta))?
    } else {
        return Err(Error::Corrupt(Corruption::Meta));
    };
    if found == FORMAT_VERSION {
        // Format 3 as written before the change feed (an unreleased build)
        // lacks only its two column families: opening adds them.
        let feed = [
            crate::store::layout::CF_CHANGES,
            crate::store::layout::CF_EXPIRY_MARKS,
        ];
        if Cf::ALL
            .iter()
            .all(|cf| feed.contains(&cf.name()) || existing.iter().any(|e| e == cf.name()))
        {
            check_root_key_read_only(options, &existing)?;
            return Ok(());
        }
        // This version with other column families missing: damaged, not older.
        return Err(Error::Corrupt(Corruption::Meta));
    }
    if found == 2 && is_format_2_layout(&existing) {
        // Format 2 lacks only the conversation column families: opening
        // adds them and `init_meta` records format 3. Nothing is changed
        // unless the root key is the store's (the build that wrote it could
        // no longer open it).
        check_root_key_read_only(options, &existing)?;
        tracing::info!(
            from = found,
            to = FORMAT_VERSION,
            "upgrading the store's format in place"
        );
        return Ok(());
    }
    Err(Error::UnsupportedFormat {
        found,
        supported: FORMAT_VERSION,
    })
}

/// Whether `existing` (a store's column families) is exactly format 2's.
fn is_format_2_layout(existing: &[String]) -> bool {
    use crate::store::layout::FORMAT_2_CFS;
    existing
        .iter()
        .all(|e| e == "default" || FORMAT_2_CFS.contains(&e.as_str()))
        && FORMAT_2_CFS
            .iter()
            .all(|cf| existing.iter().any(|e| e == cf))
}

/// Checks, without writing, that `options`' root key opens the store's
/// handle key.
fn check_root_key_read_only(options: &Options, existing: &[String]) -> Result<()> {
    use crate::store::layout::{META_HANDLE_KEY, META_STORE_SALT};
    let db = DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        &options.data_dir,
        existing,
        false,
    )?;
    let meta = db
        .cf_handle(Cf::Meta.name())
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    let salt: [u8; crate::crypto::KEY_LEN] = db
        .get_cf(meta, META_STORE_SALT)?
        .and_then(|s| s.as_slice().try_into().ok())
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    let wrapped = db
        .get_cf(meta, META_HANDLE_KEY)?
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    // A format-2 store was never rotated: its handle key opens under the
    // root key, or under the previous one if a rotation is to start.
    let opens = |key: &crate::RootKey| {
        crate::crypto::unwrap_secret(
            &key.wrapping_cipher(&salt),
            crate::codec::HANDLE_KEY_AAD,
            &wrapped,
        )
        .is_ok()
    };
    if opens(&options.root_key) || options.previous_root_key.as_ref().is_some_and(opens) {
        Ok(())
    } else {
        Err(Error::WrongRootKey)
    }
}

/// Opens a plain RocksDB in `options`' data dir with a single `messages`
/// column family tuned exactly like a store's (same DB options, block cache,
/// bloom filter, prefix extractor, write buffer; no compaction filter, no
/// encryption). It is the baseline the benchmarks compare the store against;
/// it is not a store and holds no keys.
///
/// # Errors
/// A RocksDB error.
#[doc(hidden)]
pub fn open_plain_baseline(options: &Options) -> Result<DB> {
    let (db_opts, _small, messages) = rocksdb_options(options);
    let cfs = vec![ColumnFamilyDescriptor::new(Cf::Messages.name(), messages)];
    Ok(DB::open_cf_descriptors(&db_opts, &options.data_dir, cfs)?)
}

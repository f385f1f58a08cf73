//! Opening a store: the metadata (format version, salt, wrapped handle
//! key, checked against the root key), then recovery of what lives in
//! memory: pending erasures, the users' expiry policies and pending
//! redactions, the user count, and seq high-water marks where a store-wide
//! retention period needs them.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::conversations::Conversations;
use super::engine::{Cf, Engine, Scope};
use super::filter_state::FilterState;
use super::inner::{Inner, Pending, StoreLimits};
use super::layout;
use super::options::Options;
use super::rootkey::{self, OpenedKeys};
use super::users::Users;
use crate::codec::{
    self, ConvKeyRecord, EraseMarker, FORMAT_VERSION, HANDLE_KEY_AAD, KeyRecord, KeyState,
    UserPolicy,
};
use crate::crypto::{self, KEY_LEN, Secret32};
use crate::error::{Corruption, Error, InvalidArgument, Result};
use crate::types::Handle;

impl Inner {
    /// Opens the engine and recovers the in-memory state.
    pub(super) fn open(options: Options) -> Result<Arc<Inner>> {
        options.validate()?;
        #[cfg(feature = "jetstream")]
        let on_disk = options.jetstream.is_none();
        #[cfg(not(feature = "jetstream"))]
        let on_disk = true;
        if on_disk && options.hooks.memory_env.is_none() {
            std::fs::create_dir_all(&options.data_dir)?;
        }
        let default_retention_ms = options
            .retention
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let filter = Arc::new(FilterState::new(default_retention_ms));
        let engine = Engine::open(&options, &filter)?;
        let OpenedKeys {
            keys,
            rotation,
            starting,
        } = init_meta(&engine, &options)?;
        // Every audit record is a put, so each counter handed out is below
        // the engine's write position at the end of its session: starting
        // there never repeats one, without scanning the trail.
        #[cfg_attr(not(feature = "jetstream"), allow(unused_mut))]
        let mut audit_counter = engine.write_position()?;
        // Front ends of one JetStream cluster count audit records apart:
        // each starts its counter in a random region of its own (the low
        // 40 bits count), so two rarely meet, and a meeting is a lost race
        // the write retries.
        #[cfg(feature = "jetstream")]
        if options.jetstream.is_some() {
            let mut r = [0u8; 3];
            options.rng.fill(&mut r)?;
            let region = u64::from(u32::from_be_bytes([0, r[0], r[1], r[2]]));
            audit_counter = (region << 40) | (audit_counter & ((1 << 40) - 1));
        }
        let cache_size = NonZeroUsize::new(options.key_cache_entries).ok_or(
            InvalidArgument::Option("key_cache_entries must be at least 1"),
        )?;
        let inner = Arc::new(Inner {
            engine,
            limits: StoreLimits {
                max_payload: options.max_payload,
                max_batch: options.max_batch,
                max_batch_bytes: options.max_batch_bytes,
                max_read_limit: options.max_read_limit,
            },
            durability: options.durability,
            erase_delete_range: options.erase_delete_range,
            clock: options.clock,
            rng: options.rng,
            keys,
            audit_counter: AtomicU64::new(audit_counter),
            users: Users::new(cache_size),
            convs: Conversations::new(cache_size),
            changes: super::changes::ChangeLog::new(1),
            filter,
            pending: Mutex::new(HashMap::new()),
            pending_redactions: Mutex::new(HashMap::new()),
            pending_conv_deletions: Mutex::new(HashMap::new()),
            pending_conv_redactions: Mutex::new(HashMap::new()),
            redaction_counter: AtomicU64::new(1),
            damaged_markers: Mutex::new(HashSet::new()),
            default_retention_ms,
            erase_generation: AtomicU64::new(0),
            purges_done: AtomicU64::new(0),
            integrity_failures: AtomicU64::new(0),
            purges_incomplete: AtomicU64::new(0),
            purge_lock: Mutex::new(()),
            purge_interval: options.purge_interval,
            interrupt_purge: options.hooks.interrupt_purge.clone(),
            purger_signal: Arc::default(),
            rotation_view: Mutex::new(rotation.as_ref().map(rootkey::RotationStatus::of)),
            rotation_finished: Mutex::new(None),
            rotation: Mutex::new(rotation),
            rotation_skipped: AtomicU64::new(0),
            backup_lock: Mutex::new(()),
            ledger: Mutex::new(HashMap::new()),
            ledger_signal: Arc::default(),
            erasure_due_ms: u64::try_from(options.erasure_due.as_millis()).unwrap_or(u64::MAX),
        });
        if starting && let Some(rot) = inner.rotation.lock().as_ref() {
            inner.start_rotation(rot)?;
        }
        inner.recover_change_log()?;
        inner.load_markers()?;
        inner.load_policies()?;
        inner.load_conversations()?;
        inner.ensure_seq_floors()?;
        inner.load_ledger()?;
        // Only now may compactions expire messages (see FilterState::set_ready).
        inner.filter.set_ready();
        Ok(inner)
    }

    /// Loads the pending erasures. A marker that does not decode fails
    /// closed for its user alone: logged by handle, its reads refused until
    /// it is erased again.
    fn load_markers(&self) -> Result<()> {
        let mut it = self.engine.cursor(Cf::Erased, Scope::All)?;
        it.seek_to_first();
        let mut pending = self.pending.lock();
        let mut damaged = self.damaged_markers.lock();
        while let Some((k, v)) = it.item() {
            let h = codec::parse_handle_key(k)?;
            match EraseMarker::decode(v) {
                Ok(m) if !m.purged => {
                    self.filter.insert_erased(h, m.epoch);
                    pending.insert(
                        h,
                        Pending {
                            epoch: m.epoch,
                            erased_at_ms: m.erased_at_ms,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(handle = %h, error = %e,
                        "undecodable erasure marker: this user's reads fail until it is erased again");
                    damaged.insert(h);
                }
            }
            it.next();
        }
        it.status()
    }

    /// Counts users and loads their policies (for the compaction filter and
    /// the purger).
    fn load_policies(&self) -> Result<()> {
        let mut it = self.engine.cursor(Cf::Keys, Scope::All)?;
        it.seek_to_first();
        let mut users = 0u64;
        let mut redactions = self.pending_redactions.lock();
        while let Some((k, v)) = it.item() {
            users += 1;
            // A damaged record is reported when the user is used (it fails
            // closed there).
            if let Ok(h) = <[u8; Handle::LEN]>::try_from(k) {
                match KeyRecord::decode(v) {
                    Ok(rec) => {
                        if let KeyState::Governed(policy) = &rec.state {
                            self.filter.set_policy(Handle(h), Some(policy));
                            if policy.purge_pending {
                                redactions.insert(Handle(h), 0);
                            }
                        }
                    }
                    // Unsure of its policy (it may be on hold): retention
                    // keeps everything of this user.
                    Err(_) => self.filter.set_policy(
                        Handle(h),
                        Some(&UserPolicy {
                            retention: codec::Retention::Forever,
                            ..UserPolicy::default()
                        }),
                    ),
                }
            }
            it.next();
        }
        it.status()?;
        self.users.count.store(users, Ordering::Relaxed);
        Ok(())
    }

    /// Counts conversations and loads pending deletions and redactions.
    fn load_conversations(&self) -> Result<()> {
        let mut it = self.engine.cursor(Cf::ConvDeleted, Scope::All)?;
        it.seek_to_first();
        let mut pending = self.pending_conv_deletions.lock();
        while let Some((k, v)) = it.item() {
            let h = codec::parse_handle_key(k)?;
            match EraseMarker::decode(v) {
                Ok(m) if !m.purged => {
                    pending.insert(
                        h,
                        Pending {
                            epoch: m.epoch,
                            erased_at_ms: m.erased_at_ms,
                        },
                    );
                }
                Ok(_) => {}
                // Fails closed: the conversation's state does not load, and
                // purges stay incomplete until it is deleted again.
                Err(e) => {
                    tracing::error!(conversation = %h, error = %e,
                        "undecodable deletion marker: purges stay incomplete until the conversation is deleted again");
                    pending.insert(
                        h,
                        Pending {
                            epoch: 0,
                            erased_at_ms: 0,
                        },
                    );
                }
            }
            it.next();
        }
        it.status()?;
        drop(pending);
        let mut it = self.engine.cursor(Cf::ConvKeys, Scope::All)?;
        it.seek_to_first();
        let mut count = 0u64;
        let mut redactions = self.pending_conv_redactions.lock();
        while let Some((k, v)) = it.item() {
            count += 1;
            if let Ok(h) = <[u8; Handle::LEN]>::try_from(k) {
                match ConvKeyRecord::decode(v) {
                    Ok(rec) => {
                        if rec.policy.purge_pending {
                            redactions.insert(Handle(h), 0);
                        }
                        self.filter.set_policy(Handle(h), Some(&rec.policy));
                    }
                    // Unsure of its policy (it may be on hold): retention
                    // keeps everything of this conversation.
                    Err(_) => self.filter.set_policy(
                        Handle(h),
                        Some(&UserPolicy {
                            retention: codec::Retention::Forever,
                            ..UserPolicy::default()
                        }),
                    ),
                }
            }
            it.next();
        }
        it.status()?;
        self.convs.count.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// With a store-wide retention period, every user needs a seq high-water
    /// mark; users appended while there was none get one now (once: a `meta`
    /// flag remembers it, and is cleared when the store opens without one).
    fn ensure_seq_floors(&self) -> Result<()> {
        let flagged = self
            .engine
            .get(Cf::Meta, layout::META_SEQ_FLOORS)?
            .is_some();
        let mut batch = self.engine.batch();
        match (self.default_retention_ms.is_some(), flagged) {
            (false, true) => batch.delete(Cf::Meta, layout::META_SEQ_FLOORS)?,
            (true, false) => {
                // Users and conversations alike: the next seq above their
                // newest record.
                for (keys, records) in [(Cf::Keys, Cf::Messages), (Cf::ConvKeys, Cf::ConvMessages)]
                {
                    let mut it = self.engine.cursor(keys, Scope::All)?;
                    it.seek_to_first();
                    while let Some(k) = it.key() {
                        let h = codec::parse_handle_key(k)?;
                        let next = self
                            .last_in(records, &h)?
                            .map_or(1, |l| l.seq.saturating_add(1));
                        if next > self.seq_floor(&h)? {
                            self.put_seq_floor(&mut batch, &h, next)?;
                        }
                        it.next();
                    }
                    it.status()?;
                }
                batch.put(Cf::Meta, layout::META_SEQ_FLOORS, &[1u8])?;
            }
            _ => return Ok(()),
        }
        self.engine.write(batch, true)
    }
}

/// Reads or creates the store's metadata; checks format version and root
/// keys, and upgrades an older format in place.
fn init_meta(engine: &Engine, options: &Options) -> Result<OpenedKeys> {
    let version = engine
        .get(Cf::Meta, layout::META_FORMAT_VERSION)?
        .map(|v| v.to_vec());
    let Some(version) = version else {
        // A fresh store: nothing else may exist yet.
        let mut it = engine.cursor(Cf::Keys, Scope::All)?;
        it.seek_to_first();
        if it.key().is_some() || engine.get(Cf::Meta, layout::META_STORE_SALT)?.is_some() {
            return Err(Error::Corrupt(Corruption::Meta));
        }
        drop(it);
        let salt_secret = Secret32::random(options.rng.as_ref())?;
        let salt = *salt_secret.expose();
        let handle_secret = Secret32::random(options.rng.as_ref())?;
        let wrap = options.root_key.wrapping_cipher(&salt);
        let wrapped =
            crypto::wrap_secret(&wrap, options.rng.as_ref(), HANDLE_KEY_AAD, &handle_secret)?;
        let mut batch = engine.batch();
        batch.put(Cf::Meta, layout::META_STORE_SALT, &salt)?;
        batch.put(Cf::Meta, layout::META_HANDLE_KEY, &wrapped)?;
        batch.put(
            Cf::Meta,
            layout::META_FORMAT_VERSION,
            &FORMAT_VERSION.to_be_bytes(),
        )?;
        engine.write(batch, true)?;
        return rootkey::open_keys(engine, options, &salt);
    };
    let version: [u8; 4] = version
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt(Corruption::Meta))?;
    let version = u32::from_be_bytes(version);
    if version != FORMAT_VERSION && !(2..FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let salt: [u8; KEY_LEN] = engine
        .get(Cf::Meta, layout::META_STORE_SALT)?
        .and_then(|s| (*s).try_into().ok())
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    // Checks the keys before anything is written.
    let opened = rootkey::open_keys(engine, options, &salt)?;
    if version != FORMAT_VERSION {
        // Format 2 to 3 adds only column families (created at open); 3 to
        // 4 adds root-key generations, which a store never rotated does
        // not hold yet. The upgrade is recording the new version.
        let mut batch = engine.batch();
        batch.put(
            Cf::Meta,
            layout::META_FORMAT_VERSION,
            &FORMAT_VERSION.to_be_bytes(),
        )?;
        engine.write(batch, true)?;
        tracing::info!(from = version, to = FORMAT_VERSION, "store format upgraded");
    }
    Ok(opened)
}

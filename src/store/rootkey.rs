//! Root-key generations and online rotation.
//!
//! Every wrapped secret (user and conversation key records, the handle
//! key) names the generation of the root key that wraps it: key records in
//! their record version (`docs/format.md`), the handle key in
//! `meta/root_key_generation`. Opening a store with a new root key and its
//! previous one writes `meta/rotation` (the handle key wrapped under the new
//! key, a cursor) and starts a background thread that rewraps the key
//! records in bounded batches, each batch under the locks of the users (or
//! conversations) it holds and in one write with the advanced cursor. So a
//! crash leaves every record wrapped under exactly one of the two keys, with
//! its generation saying which, and the cursor no further than the batches
//! written: the store reopens with both keys and goes on. New records are
//! wrapped under the new key from the start. The last pass rewraps anything
//! still under the old key, then one synced batch switches `meta` to the new
//! handle key and generation, records the old key as retired (its check
//! value, and its receipt key rewrapped so old receipts still verify) and
//! deletes `meta/rotation`. From then on the old key opens nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Inner;
use super::engine::{Batch, Cf, Engine, Scope};
use super::inner::StoreKeys;
use super::layout;
use super::options::Options;
use super::worker::{Signal, Worker};
use crate::codec::{
    self, AuditOp, AuditOutcome, ConvKeyRecord, HANDLE_KEY_AAD, KeyRecord, RetiredRootKey,
    RootKeyHistory, RotationPhase, RotationRecord,
};
use crate::crypto::{self, KEY_LEN, ReceiptKey, RootKey, Secret32, SecureRandom, SivCipher};
use crate::error::{Corruption, Error, Result};
use crate::types::Handle;

/// The actor of the audit records of a rotation.
pub const ROTATION_ACTOR: &str = "rotation";

/// The previous root key's ciphers, held while a rotation runs.
pub(crate) struct Previous {
    generation: u32,
    wrap: SivCipher,
    receipt_key: ReceiptKey,
}

/// A root-key rotation in progress, as [`Store::rotation`](super::Store::rotation) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStatus {
    /// Generation of the root key being retired.
    pub from_generation: u32,
    /// Generation of the new root key.
    pub to_generation: u32,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Key records rewrapped so far.
    pub rewrapped: u64,
    /// `users`, `conversations` or `check` (the last pass).
    pub phase: &'static str,
}

impl RotationStatus {
    pub(super) fn of(r: &RotationRecord) -> Self {
        RotationStatus {
            from_generation: r.from_gen,
            to_generation: r.to_gen,
            started_ms: r.started_ms,
            rewrapped: r.rewrapped,
            phase: match r.phase {
                RotationPhase::Users => "users",
                RotationPhase::Conversations => "conversations",
                RotationPhase::Check => "check",
            },
        }
    }
}

impl StoreKeys {
    /// Opens a secret wrapped under root-key generation `root_gen`.
    pub(super) fn unwrap(&self, root_gen: u32, aad: &[u8], wrapped: &[u8]) -> Result<Secret32> {
        if root_gen == self.generation {
            return crypto::unwrap_secret(&self.wrap, aad, wrapped);
        }
        match &*self.previous.read() {
            Some(p) if p.generation == root_gen => crypto::unwrap_secret(&p.wrap, aad, wrapped),
            _ => Err(Error::Corrupt(Corruption::RootKeyGeneration)),
        }
    }

    /// Wraps a secret under the current root key: the bytes and the
    /// generation to record with them.
    pub(super) fn wrap(
        &self,
        rng: &dyn SecureRandom,
        aad: &[u8],
        secret: &Secret32,
    ) -> Result<(Vec<u8>, u32)> {
        Ok((
            crypto::wrap_secret(&self.wrap, rng, aad, secret)?,
            self.generation,
        ))
    }

    /// Whether `mac` over `data` was made by this store's receipt key or
    /// by that of a root key it retired (or is retiring).
    pub(super) fn verify_receipt(&self, data: &[u8], mac: &[u8; 32]) -> bool {
        self.receipt_key.verify(data, mac)
            || self
                .previous
                .read()
                .as_ref()
                .is_some_and(|p| p.receipt_key.verify(data, mac))
            || self
                .older_receipt_keys
                .read()
                .iter()
                .any(|k| k.verify(data, mac))
    }
}

/// How the root keys given open a store's metadata.
enum Access {
    /// No rotation: the root key opens the handle key.
    Current,
    /// The previous key opens the handle key: a rotation to the root key
    /// starts.
    Start,
    /// A rotation is in progress and both its keys were given.
    Resume(RotationRecord),
}

/// The store's keys as read from `meta` with the root keys given; the
/// `meta` writes still to be done.
pub(super) struct OpenedKeys {
    pub(super) keys: StoreKeys,
    /// The rotation in progress (or starting), if any.
    pub(super) rotation: Option<RotationRecord>,
    /// Whether `rotation` starts now: its record is not yet written.
    pub(super) starting: bool,
}

fn meta_u32(engine: &Engine, key: &[u8]) -> Result<Option<u32>> {
    let Some(v) = engine.get(Cf::Meta, key)? else {
        return Ok(None);
    };
    let b: [u8; 4] = (*v)
        .try_into()
        .map_err(|_| Error::Corrupt(Corruption::Meta))?;
    Ok(Some(u32::from_be_bytes(b)))
}

fn history(engine: &Engine) -> Result<RootKeyHistory> {
    match engine.get(Cf::Meta, layout::META_ROOT_KEYS)? {
        Some(b) => RootKeyHistory::decode(&b).map_err(|_| Error::Corrupt(Corruption::Meta)),
        None => Ok(RootKeyHistory::default()),
    }
}

/// The store's current root-key generation (1 if never rotated).
pub(super) fn generation(engine: &Engine) -> Result<u32> {
    Ok(meta_u32(engine, layout::META_ROOT_KEY_GENERATION)?.unwrap_or(1))
}

/// The error for a root key that opens nothing: retired, or unknown.
fn refused(engine: &Engine, key: &RootKey, salt: &[u8; KEY_LEN], current: u32) -> Error {
    let check = key.check_value(salt);
    match history(engine) {
        Ok(h) => match h.retired.iter().find(|k| k.check == check) {
            Some(k) => Error::RetiredRootKey {
                retired: k.generation,
                current,
            },
            None => Error::WrongRootKey,
        },
        Err(e) => e,
    }
}

/// Checks the root keys of `options` against `meta` (writing nothing) and
/// derives the store's keys.
pub(super) fn open_keys(
    engine: &Engine,
    options: &Options,
    salt: &[u8; KEY_LEN],
) -> Result<OpenedKeys> {
    let wrapped = engine
        .get(Cf::Meta, layout::META_HANDLE_KEY)?
        .ok_or(Error::Corrupt(Corruption::Meta))?;
    if wrapped.len() != crypto::WRAPPED_LEN {
        return Err(Error::Corrupt(Corruption::Meta));
    }
    let current = generation(engine)?;
    let rotation = engine
        .get(Cf::Meta, layout::META_ROTATION)?
        .map(|b| RotationRecord::decode(&b).map_err(|_| Error::Corrupt(Corruption::Meta)))
        .transpose()?;
    let root_wrap = options.root_key.wrapping_cipher(salt);
    let previous_wrap = options
        .previous_root_key
        .as_ref()
        .map(|k| k.wrapping_cipher(salt));
    let opens =
        |cipher: &SivCipher, bytes: &[u8]| crypto::unwrap_secret(cipher, HANDLE_KEY_AAD, bytes);
    let (access, handle_secret) = match rotation {
        None => match opens(&root_wrap, &wrapped) {
            Ok(secret) => {
                if options.previous_root_key.is_some() {
                    tracing::warn!(
                        generation = current,
                        "a previous root key was given, but the root key alone opens the store \
                         (no rotation is in progress): the previous key is ignored"
                    );
                }
                (Access::Current, secret)
            }
            Err(_) => match previous_wrap.as_ref().map(|p| opens(p, &wrapped)) {
                Some(Ok(secret)) => (Access::Start, secret),
                Some(Err(_)) => {
                    return Err(match refused(engine, &options.root_key, salt, current) {
                        Error::WrongRootKey => Error::RootKeyRotation(
                            "neither the root key nor the previous root key opens this store",
                        ),
                        e => e,
                    });
                }
                None => return Err(refused(engine, &options.root_key, salt, current)),
            },
        },
        Some(rot) => {
            let Ok(secret) = opens(&root_wrap, &rot.new_handle_key) else {
                return Err(if opens(&root_wrap, &wrapped).is_ok() {
                    Error::RootKeyRotation(
                        "a rotation to a new root key is in progress: give the new key as the \
                         root key and this one as the previous root key until it finishes",
                    )
                } else {
                    Error::WrongRootKey
                });
            };
            match previous_wrap.as_ref().map(|p| opens(p, &wrapped)) {
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    return Err(Error::RootKeyRotation(
                        "the previous root key is not the key this rotation retires",
                    ));
                }
                None => {
                    return Err(Error::RootKeyRotation(
                        "a root-key rotation is in progress: give the previous root key too \
                         until it finishes (Options::previous_root_key; for the server \
                         --previous-root-key-file or SHREDSTORE_PREVIOUS_ROOT_KEY)",
                    ));
                }
            }
            (Access::Resume(rot), secret)
        }
    };
    drop(wrapped);
    // Retired receipt keys are wrapped under the generation of the handle
    // key in `meta`: the previous key's while a rotation runs.
    let meta_wrap = match &access {
        Access::Current => &root_wrap,
        Access::Start | Access::Resume(_) => previous_wrap
            .as_ref()
            .ok_or(Error::Corrupt(Corruption::Meta))?,
    };
    let mut older = Vec::new();
    for k in history(engine)?.retired {
        let secret = crypto::unwrap_secret(
            meta_wrap,
            &RootKeyHistory::receipt_key_aad(k.generation),
            &k.wrapped_receipt_key,
        )
        .map_err(|_| Error::Corrupt(Corruption::Meta))?;
        older.push(ReceiptKey::from_secret(secret));
    }
    let (generation, rotation, starting) = match access {
        Access::Current => (current, None, false),
        Access::Resume(rot) => {
            if rot.from_gen != current {
                return Err(Error::Corrupt(Corruption::Meta));
            }
            (rot.to_gen, Some(rot), false)
        }
        Access::Start => {
            // A retired key never comes back, not even as a rotation's new
            // key (a configuration rolled back with the previous-key flag
            // still set).
            if let e @ Error::RetiredRootKey { .. } =
                refused(engine, &options.root_key, salt, current)
            {
                return Err(e);
            }
            let next = current
                .checked_add(1)
                .ok_or(Error::RootKeyRotation("root-key generations are exhausted"))?;
            let to_gen = match options.rotation_target {
                Some((g, check)) if g > current && check == options.root_key.check_value(salt) => g,
                _ => next,
            };
            let previous = options
                .previous_root_key
                .as_ref()
                .ok_or(Error::Corrupt(Corruption::Meta))?;
            let rot = RotationRecord {
                from_gen: current,
                to_gen,
                started_ms: options.clock.now_ms(),
                new_handle_key: crypto::wrap_secret(
                    &root_wrap,
                    options.rng.as_ref(),
                    HANDLE_KEY_AAD,
                    &handle_secret,
                )?,
                from_check: previous.check_value(salt),
                phase: RotationPhase::Users,
                cursor: Vec::new(),
                rewrapped: 0,
            };
            (to_gen, Some(rot), true)
        }
    };
    let previous = match (&rotation, &options.previous_root_key, previous_wrap) {
        (Some(rot), Some(key), Some(wrap)) => Some(Previous {
            generation: rot.from_gen,
            wrap,
            receipt_key: key.receipt_key(salt),
        }),
        _ => None,
    };
    Ok(OpenedKeys {
        keys: StoreKeys {
            salt: *salt,
            handle_key: crypto::HandleKey::new(handle_secret),
            wrap: root_wrap,
            generation,
            previous: parking_lot::RwLock::new(previous),
            receipt_key: options.root_key.receipt_key(salt),
            older_receipt_keys: parking_lot::RwLock::new(older),
            root_check: options.root_key.check_value(salt),
            store_id: crypto::store_id(salt),
        },
        rotation,
        starting,
    })
}

impl Inner {
    /// Writes the record of a rotation that starts now, with its audit
    /// record, in one synced batch.
    pub(super) fn start_rotation(&self, rot: &RotationRecord) -> Result<()> {
        let mut batch = self.engine.batch();
        put_rotation(&mut batch, rot)?;
        self.put_audit(
            &mut batch,
            ROTATION_ACTOR,
            AuditOp::RootKeyRotationStarted,
            None,
            AuditOutcome::Ok,
        )?;
        self.engine.write(batch, true)?;
        tracing::info!(
            from_generation = rot.from_gen,
            to_generation = rot.to_gen,
            "root-key rotation started: key records are rewrapped in the background; \
             keep giving both keys until it finishes"
        );
        Ok(())
    }

    /// The rotation in progress, if any (a copy published after each
    /// batch: reading it never waits for one).
    pub(super) fn rotation_status(&self) -> Option<RotationStatus> {
        *self.rotation_view.lock()
    }

    /// The rotation this store finished since it was opened, with its
    /// final counts.
    pub(super) fn finished_rotation(&self) -> Option<RotationStatus> {
        *self.rotation_finished.lock()
    }

    /// Runs one batch of the rotation (at most `limit` records); returns
    /// whether the rotation is finished (or none was running).
    pub(super) fn rotation_step(&self, limit: usize) -> Result<bool> {
        let mut guard = self.rotation.lock();
        let Some(rot) = guard.as_ref() else {
            return Ok(true);
        };
        let mut next = rot.clone();
        match rot.phase {
            RotationPhase::Users | RotationPhase::Conversations => {
                let cf = if rot.phase == RotationPhase::Users {
                    Cf::Keys
                } else {
                    Cf::ConvKeys
                };
                let handles = self.handles_after(cf, &rot.cursor, limit)?;
                if handles.len() < limit {
                    next.phase = if rot.phase == RotationPhase::Users {
                        RotationPhase::Conversations
                    } else {
                        RotationPhase::Check
                    };
                    next.cursor.clear();
                } else if let Some(last) = handles.last() {
                    next.cursor = last.as_bytes().to_vec();
                }
                self.rewrap_batch(cf, &handles, rot.from_gen, |n, batch| {
                    next.rewrapped = next.rewrapped.saturating_add(n);
                    put_rotation(batch, &next)
                })?;
                *self.rotation_view.lock() = Some(RotationStatus::of(&next));
                *guard = Some(next);
                Ok(false)
            }
            RotationPhase::Check => {
                for cf in [Cf::Keys, Cf::ConvKeys] {
                    let stale = self.stale_handles(cf, rot.from_gen)?;
                    for chunk in stale.chunks(limit.max(1)) {
                        self.rewrap_batch(cf, chunk, rot.from_gen, |n, _| {
                            next.rewrapped = next.rewrapped.saturating_add(n);
                            Ok(())
                        })?;
                    }
                }
                self.finish_rotation(&next)?;
                *self.rotation_finished.lock() = Some(RotationStatus::of(&next));
                *self.rotation_view.lock() = None;
                *guard = None;
                Ok(true)
            }
        }
    }

    /// Up to `limit` handles of `cf` after `cursor` (from the start if empty).
    fn handles_after(&self, cf: Cf, cursor: &[u8], limit: usize) -> Result<Vec<Handle>> {
        let mut it = self.engine.cursor(cf, Scope::All)?;
        if cursor.is_empty() {
            it.seek_to_first();
        } else {
            it.seek(cursor);
            if it.key() == Some(cursor) {
                it.next();
            }
        }
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(k) = it.key() else { break };
            out.push(codec::parse_handle_key(k)?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Handles of `cf` whose records decode and are still wrapped under
    /// generation `from_gen` (none, unless a record was skipped).
    fn stale_handles(&self, cf: Cf, from_gen: u32) -> Result<Vec<Handle>> {
        let mut it = self.engine.cursor(cf, Scope::All)?;
        it.seek_to_first();
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let root_gen = match cf {
                Cf::Keys => KeyRecord::decode(v).map(|r| r.root_gen),
                _ => ConvKeyRecord::decode(v).map(|r| r.root_gen),
            };
            if root_gen.is_ok_and(|g| g == from_gen) {
                out.push(codec::parse_handle_key(k)?);
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Rewraps the records of `handles` in `cf` that are still under
    /// `from_gen` and writes them in one batch, with what `extra` adds
    /// (given the count), holding the handles' locks from the reads to the
    /// write: a policy change cannot slip in between and be overwritten.
    /// Unsynced: a lost batch leaves its records and the cursor as they
    /// were, both keys still open them, and the final synced write makes
    /// everything before it durable.
    fn rewrap_batch(
        &self,
        cf: Cf,
        handles: &[Handle],
        from_gen: u32,
        extra: impl FnOnce(u64, &mut Batch<'_>) -> Result<()>,
    ) -> Result<u64> {
        let _guards = if cf == Cf::Keys {
            self.users.lock_many(handles)
        } else {
            self.convs.lock_many(handles)
        };
        let mut batch = self.engine.batch();
        let mut n = 0;
        for h in handles {
            if self.rewrap_record(cf, h, from_gen, &mut batch)? {
                n += 1;
            }
        }
        extra(n, &mut batch)?;
        self.engine.write(batch, false)?;
        Ok(n)
    }

    /// Puts `h`'s record of `cf` rewrapped under the current root key into
    /// `batch`, if it is under `from_gen`. A record that does not decode or
    /// open is skipped (logged, counted): it is unreadable under any key.
    fn rewrap_record(
        &self,
        cf: Cf,
        h: &Handle,
        from_gen: u32,
        batch: &mut Batch<'_>,
    ) -> Result<bool> {
        let Some(bytes) = self.engine.get(cf, h.as_bytes())? else {
            return Ok(false);
        };
        // Unwraps under the record's generation, wraps under the current one.
        let rewrap = |wrapped: &mut Vec<u8>, root_gen: &mut u32, aad: &[u8]| -> Result<()> {
            let secret = self.keys.unwrap(*root_gen, aad, wrapped)?;
            (*wrapped, *root_gen) = self.keys.wrap(self.rng.as_ref(), aad, &secret)?;
            Ok(())
        };
        let mut out = Vec::new();
        let encoded = match cf {
            Cf::Keys => KeyRecord::decode(&bytes).and_then(|mut rec| {
                if rec.root_gen != from_gen {
                    return Ok(false);
                }
                let aad = KeyRecord::wrap_aad(h, rec.epoch);
                rewrap(&mut rec.wrapped_secret, &mut rec.root_gen, &aad)?;
                rec.encode(&mut out);
                Ok(true)
            }),
            _ => ConvKeyRecord::decode(&bytes).and_then(|mut rec| {
                if rec.root_gen != from_gen {
                    return Ok(false);
                }
                let aad = ConvKeyRecord::wrap_aad(h, rec.epoch);
                rewrap(&mut rec.wrapped_secret, &mut rec.root_gen, &aad)?;
                rec.encode(&mut out);
                Ok(true)
            }),
        };
        drop(bytes);
        match encoded {
            Ok(true) => {
                batch.put(cf, h.as_bytes(), &out)?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e @ (Error::Decrypt | Error::Corrupt(_))) => {
                self.rotation_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(handle = %h, column_family = cf.name(), error = %e,
                    "root-key rotation: a damaged key record cannot be rewrapped; it stays unreadable");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The synced batch that ends a rotation: the new handle key and
    /// generation, the retired key's entry (and the older ones' receipt
    /// keys rewrapped under the new key), the rotation record deleted.
    fn finish_rotation(&self, rot: &RotationRecord) -> Result<()> {
        let previous = self.keys.previous.read();
        let prev = previous.as_ref().ok_or(Error::Corrupt(Corruption::Meta))?;
        let rng = self.rng.as_ref();
        let mut hist = history(&self.engine)?;
        for k in &mut hist.retired {
            let aad = RootKeyHistory::receipt_key_aad(k.generation);
            let secret = crypto::unwrap_secret(&prev.wrap, &aad, &k.wrapped_receipt_key)
                .map_err(|_| Error::Corrupt(Corruption::Meta))?;
            k.wrapped_receipt_key = crypto::wrap_secret(&self.keys.wrap, rng, &aad, &secret)?;
        }
        let now = self.clock.now_ms();
        hist.retired.push(RetiredRootKey {
            generation: rot.from_gen,
            check: rot.from_check,
            retired_ms: now,
            wrapped_receipt_key: crypto::wrap_secret(
                &self.keys.wrap,
                rng,
                &RootKeyHistory::receipt_key_aad(rot.from_gen),
                prev.receipt_key.secret(),
            )?,
        });
        let mut batch = self.engine.batch();
        batch.put(Cf::Meta, layout::META_HANDLE_KEY, &rot.new_handle_key)?;
        batch.put(
            Cf::Meta,
            layout::META_ROOT_KEY_GENERATION,
            &rot.to_gen.to_be_bytes(),
        )?;
        let mut encoded = Vec::new();
        hist.encode(&mut encoded);
        batch.put(Cf::Meta, layout::META_ROOT_KEYS, &encoded)?;
        batch.delete(Cf::Meta, layout::META_ROTATION)?;
        self.put_audit_at(
            &mut batch,
            now,
            ROTATION_ACTOR,
            AuditOp::RootKeyRotationFinished,
            None,
            AuditOutcome::Ok,
        )?;
        self.engine.write(batch, true)?;
        drop(previous);
        // The old key's wrapping cipher is dropped (zeroized); its receipt
        // key stays, to verify receipts it signed.
        if let Some(p) = self.keys.previous.write().take() {
            self.keys.older_receipt_keys.write().push(p.receipt_key);
        }
        let secs = now.saturating_sub(rot.started_ms) as f64 / 1000.0;
        tracing::info!(
            from_generation = rot.from_gen,
            to_generation = rot.to_gen,
            rewrapped = rot.rewrapped,
            skipped = self.rotation_skipped.load(Ordering::Relaxed),
            seconds = secs,
            "root-key rotation finished: the previous root key is retired and opens nothing now"
        );
        Ok(())
    }
}

fn put_rotation(batch: &mut Batch<'_>, rot: &RotationRecord) -> Result<()> {
    let mut encoded = Vec::new();
    rot.encode(&mut encoded);
    batch.put(Cf::Meta, layout::META_ROTATION, &encoded)
}

/// Starts the background thread of a rotation; it ends when the rotation
/// is done.
pub(crate) fn spawn(inner: Arc<Inner>, batch: usize, pause: Duration) -> Result<Worker> {
    let signal = Arc::new(Signal::default());
    let stop = Arc::clone(&signal);
    Worker::spawn("shredstore-rotation", signal, move || {
        run(&inner, &stop, batch, pause);
    })
}

fn run(inner: &Inner, stop: &Signal, batch: usize, pause: Duration) {
    let mut last_log = Instant::now();
    loop {
        if stop.stopped() {
            return;
        }
        let wait = match inner.rotation_step(batch) {
            Ok(true) => return,
            Ok(false) => pause,
            Err(e) => {
                tracing::error!(error = %e, "root-key rotation batch failed; retrying in 1 s");
                Duration::from_secs(1)
            }
        };
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            if let Some(s) = inner.rotation_status() {
                tracing::info!(
                    rewrapped = s.rewrapped,
                    phase = s.phase,
                    to_generation = s.to_generation,
                    "root-key rotation in progress"
                );
            }
        }
        if stop.wait(wait) {
            return;
        }
    }
}

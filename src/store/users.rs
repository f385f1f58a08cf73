//! The users table: striped locks that serialise each user's seq
//! assignment, key creation and erasure, the bounded cache of derived
//! ciphers, and loading a user's state. The one place that creates key
//! records and the one formula for a user's next seq live here.

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};

use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};

use super::Inner;
use super::engine::{Batch, Cf, Scope};
use crate::codec::{EnvelopeHeader, EraseMarker, KeyRecord, KeyState, UserPolicy, message_key};
use crate::crypto::{self, Secret32, SivCipher};
use crate::error::{Corruption, Error, Result};
use crate::types::{Handle, HandleBuildHasher};

/// Number of lock stripes serialising per-user work.
const LOCK_STRIPES: usize = 1024;

/// The derived cipher and the secret of one user epoch, shared by every
/// copy of its cache entry (one allocation, one reference count).
pub(super) struct UserKeys {
    pub(super) cipher: SivCipher,
    /// The user secret itself: conversation message keys derive from it
    /// with each conversation's secret.
    pub(super) secret: Secret32,
}

/// The policy of a user who never had one set.
static DEFAULT_POLICY: LazyLock<UserPolicy> = LazyLock::new(UserPolicy::default);

/// Cached per-user state: the keys, the next seq and the rights policy.
/// Cloning it (every cache hit) bumps one reference count.
#[derive(Clone)]
pub(super) struct CachedUser {
    pub(super) epoch: u32,
    pub(super) keys: Arc<UserKeys>,
    /// First seq of this epoch: earlier seqs belong to erased epochs.
    pub(super) first_seq: u64,
    pub(super) next_seq: u64,
    /// `None` for the default policy (most users).
    policy: Option<Arc<UserPolicy>>,
}

impl CachedUser {
    /// The user's rights policy.
    pub(super) fn policy(&self) -> &UserPolicy {
        self.policy.as_deref().unwrap_or(&DEFAULT_POLICY)
    }

    /// Replaces the rights policy.
    pub(super) fn set_policy(&mut self, policy: UserPolicy) {
        self.policy = (policy != *DEFAULT_POLICY).then(|| Arc::new(policy));
    }
}

/// A user's state as loaded under its lock.
pub(super) enum UserState {
    /// The user has a key.
    Live(CachedUser),
    /// No key: never seen, or erased.
    Absent {
        marker: Option<EraseMarker>,
        next_seq: u64,
    },
}

/// The newest record of a handle in a `handle || u64` keyed column family:
/// its u64 and its epoch (`None` if its header is unreadable).
#[derive(Clone, Copy)]
pub(super) struct Last {
    pub(super) seq: u64,
    pub(super) epoch: Option<u32>,
}

impl Last {
    /// The epoch, failing closed on an unreadable header.
    pub(super) fn epoch(&self) -> Result<u32> {
        self.epoch.ok_or(Error::Corrupt(Corruption::Encoding))
    }
}

/// The next seq of a user: above its newest stored message, its high-water
/// mark, what its erasure marker reserved and its key's first seq. The
/// one formula; seqs are never reused.
pub(super) fn next_seq(
    last: Option<&Last>,
    floor: u64,
    marker: Option<&EraseMarker>,
    first_seq: Option<u64>,
) -> u64 {
    last.map_or(1, |l| l.seq.saturating_add(1))
        .max(floor)
        .max(marker.map_or(1, |m| m.next_seq))
        .max(first_seq.unwrap_or(1))
        .max(1)
}

/// Striped locks over handles (users', or conversations').
pub(super) struct Stripes(Box<[Mutex<()>]>);

impl Stripes {
    /// `n` stripes.
    pub(super) fn new(n: usize) -> Self {
        Stripes((0..n).map(|_| Mutex::new(())).collect())
    }

    fn stripe(&self, handle: &Handle) -> usize {
        usize::from(u16::from_be_bytes([handle.0[0], handle.0[1]])) % self.0.len()
    }

    /// The lock of `handle`'s stripe.
    pub(super) fn lock(&self, handle: &Handle) -> MutexGuard<'_, ()> {
        self.0[self.stripe(handle)].lock()
    }

    /// The locks of several handles' stripes, each once, in stripe order
    /// (so two callers never wait on each other in a cycle).
    pub(super) fn lock_many(&self, handles: &[Handle]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = handles.iter().map(|h| self.stripe(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|i| self.0[i].lock()).collect()
    }
}

/// Stripe locks, the key cache and the count of users with a key.
pub(super) struct Users {
    locks: Stripes,
    cache: Mutex<LruCache<Handle, CachedUser, HandleBuildHasher>>,
    /// Users with a live key record.
    pub(super) count: AtomicU64,
}

/// Estimated heap bytes of one key-cache entry: the entry, its keys (an
/// `Arc` allocation with two counters, and AWS-LC's heap of the cipher) and
/// the LRU's node and table slot.
pub(crate) fn key_cache_entry_bytes() -> usize {
    std::mem::size_of::<CachedUser>()
        + std::mem::size_of::<UserKeys>()
        + SivCipher::HEAP_BYTES
        + 4 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Handle>()
        + 64
}

impl Users {
    pub(super) fn new(cache_entries: NonZeroUsize) -> Self {
        Users {
            locks: Stripes::new(LOCK_STRIPES),
            cache: Mutex::new(LruCache::with_hasher(
                cache_entries,
                HandleBuildHasher::default(),
            )),
            count: AtomicU64::new(0),
        }
    }

    /// The lock of `handle`'s stripe.
    pub(super) fn lock(&self, handle: &Handle) -> MutexGuard<'_, ()> {
        self.locks.lock(handle)
    }

    /// The locks of several users' stripes (see [`Stripes::lock_many`];
    /// nothing holding a user's lock takes another's).
    pub(super) fn lock_many(&self, handles: &[Handle]) -> Vec<MutexGuard<'_, ()>> {
        self.locks.lock_many(handles)
    }

    /// The cached state of `handle`.
    pub(super) fn cached(&self, handle: &Handle) -> Option<CachedUser> {
        self.cache.lock().get(handle).cloned()
    }

    /// The cached key epoch of `handle`, without touching the LRU order.
    pub(super) fn cached_epoch(&self, handle: &Handle) -> Option<u32> {
        self.cache.lock().peek(handle).map(|c| c.epoch)
    }

    /// Caches `state` (caller holds the user's lock). An entry already
    /// cached is replaced in place, without moving it in the LRU order (the
    /// lookup that loaded it did).
    pub(super) fn remember(&self, handle: Handle, state: CachedUser) {
        let mut cache = self.cache.lock();
        if let Some(entry) = cache.peek_mut(&handle) {
            *entry = state;
            return;
        }
        cache.put(handle, state);
    }

    /// Evicts `handle`; its cipher is zeroized when the last `Arc` drops.
    pub(super) fn forget(&self, handle: &Handle) {
        drop(self.cache.lock().pop(handle));
    }

    /// Replaces the cached policy of `handle`, if it is cached.
    pub(super) fn set_cached_policy(&self, handle: &Handle, policy: UserPolicy) {
        if let Some(c) = self.cache.lock().get_mut(handle) {
            c.set_policy(policy);
        }
    }
}

impl Inner {
    /// The newest record of `handle` in a `handle || u64` keyed column
    /// family (`messages` or `consent`).
    pub(super) fn last_in(&self, cf: Cf, handle: &Handle) -> Result<Option<Last>> {
        let mut it = self.engine.cursor(cf, Scope::Handle(handle))?;
        it.seek_for_prev(&message_key(handle, u64::MAX));
        let Some((key, value)) = it.item() else {
            it.status()?;
            return Ok(None);
        };
        let (h, seq) = crate::codec::parse_message_key(key)?;
        if h != *handle {
            return Ok(None);
        }
        Ok(Some(Last {
            seq,
            epoch: EnvelopeHeader::parse(value).ok().map(|h| h.epoch),
        }))
    }

    /// The user's seq high-water mark (1 if none is stored).
    pub(super) fn seq_floor(&self, handle: &Handle) -> Result<u64> {
        Ok(self.get_u64(Cf::SeqFloors, handle)?.unwrap_or(1))
    }

    /// A u64 BE value stored under `handle` in `cf` (seq high-water marks,
    /// expiry marks).
    pub(super) fn get_u64(&self, cf: Cf, handle: &Handle) -> Result<Option<u64>> {
        let Some(v) = self.engine.get(cf, handle.as_bytes())? else {
            return Ok(None);
        };
        let b: [u8; 8] = (*v)
            .try_into()
            .map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        Ok(Some(u64::from_be_bytes(b)))
    }

    /// Stores the user's seq high-water mark in `batch`.
    pub(super) fn put_seq_floor(
        &self,
        batch: &mut Batch<'_>,
        handle: &Handle,
        next: u64,
    ) -> Result<()> {
        batch.put(Cf::SeqFloors, handle.as_bytes(), &next.to_be_bytes())
    }

    /// Whether retention may remove messages of a user with `policy`: then
    /// appends also store the seq high-water mark, since the last message
    /// (which otherwise tells the next seq) may be dropped by compaction.
    pub(super) fn retention_may_apply(&self, policy: &UserPolicy) -> bool {
        policy.expired_before_ms > 0 || policy.period(self.default_retention_ms).is_some()
    }

    /// The user's key record, if any.
    pub(super) fn key_record(&self, handle: &Handle) -> Result<Option<KeyRecord>> {
        self.engine
            .get(Cf::Keys, handle.as_bytes())?
            .map(|b| KeyRecord::decode(&b))
            .transpose()
    }

    /// Stores `rec` as the user's key record in `batch`.
    pub(super) fn put_key_record(
        &self,
        batch: &mut Batch<'_>,
        handle: &Handle,
        rec: &KeyRecord,
    ) -> Result<()> {
        let mut encoded = Vec::new();
        rec.encode(&mut encoded);
        batch.put(Cf::Keys, handle.as_bytes(), &encoded)
    }

    /// The user's erasure marker, if any.
    pub(super) fn get_marker(&self, handle: &Handle) -> Result<Option<EraseMarker>> {
        self.engine
            .get(Cf::Erased, handle.as_bytes())?
            .map(|b| EraseMarker::decode(&b))
            .transpose()
    }

    /// Whether `epoch` of `handle` has been erased (read from the marker on
    /// disk, the authority: a purge forgets the in-memory copy).
    pub(super) fn epoch_erased(&self, handle: &Handle, epoch: u32) -> Result<bool> {
        Ok(self.get_marker(handle)?.is_some_and(|m| m.epoch >= epoch))
    }

    /// The cached state of a user, if it is cached and its key record is
    /// still the one it was loaded from. Another front end of a JetStream
    /// cluster may have erased the user or changed its policy since: the
    /// stale entry is dropped then (a RocksDB store has no other writer).
    pub(super) fn fresh_cached_user(&self, handle: &Handle) -> Result<Option<CachedUser>> {
        let Some(c) = self.users.cached(handle) else {
            return Ok(None);
        };
        if self.engine.is_unchanged(Cf::Keys, handle.as_bytes())? {
            return Ok(Some(c));
        }
        self.users.forget(handle);
        self.convs.forget_author(handle);
        Ok(None)
    }

    /// [`Inner::load`] for a write that checks the key record itself
    /// (`Batch::expect`) and reloads when that check fails: a cached state
    /// is used without asking the engine first (one round trip less per
    /// append on JetStream).
    pub(super) fn load_for_write(&self, handle: &Handle) -> Result<UserState> {
        match self.users.cached(handle) {
            Some(c) => Ok(UserState::Live(c)),
            None => self.load(handle),
        }
    }

    /// Loads a user's state. Caller holds the user's lock.
    pub(super) fn load(&self, handle: &Handle) -> Result<UserState> {
        if let Some(c) = self.fresh_cached_user(handle)? {
            return Ok(UserState::Live(c));
        }
        if self.damaged_markers.lock().contains(handle) {
            // Its erased epoch is unknown: nothing of it may be read (erase
            // still works and writes a new marker).
            return Err(Error::Corrupt(Corruption::Encoding));
        }
        let last = self.last_in(Cf::Messages, handle)?;
        let floor = self.seq_floor(handle)?;
        if let Some(rec) = self.key_record(handle)? {
            if let Some(l) = last
                && l.epoch()? > rec.epoch
            {
                return Err(Error::Corrupt(Corruption::EpochMismatch));
            }
            let secret = self.keys.unwrap(
                rec.root_gen,
                &KeyRecord::wrap_aad(handle, rec.epoch),
                &rec.wrapped_secret,
            )?;
            let mut state = CachedUser {
                epoch: rec.epoch,
                keys: Arc::new(UserKeys {
                    cipher: crypto::message_cipher(&secret, &self.keys.salt, handle, rec.epoch),
                    secret,
                }),
                first_seq: rec.first_seq,
                next_seq: next_seq(last.as_ref(), floor, None, Some(rec.first_seq)),
                policy: None,
            };
            state.set_policy(rec.state.policy());
            self.users.remember(*handle, state.clone());
            return Ok(UserState::Live(state));
        }
        let marker = self.get_marker(handle)?;
        // Messages or consent records without a key record or a covering
        // erasure: a lost key.
        let covered = marker.as_ref().map_or(0, |m| m.epoch);
        for l in [last, self.last_in(Cf::Consent, handle)?]
            .into_iter()
            .flatten()
        {
            if l.epoch()? > covered {
                return Err(Error::Corrupt(Corruption::MissingKeyRecord));
            }
        }
        let next_seq = next_seq(last.as_ref(), floor, marker.as_ref(), None);
        Ok(UserState::Absent { marker, next_seq })
    }

    /// A fresh user secret for a user without a key: its cache entry and
    /// its (not yet stored) key record. Refused for a user erased with
    /// `block_new`; the epoch follows the erased one. The one place key
    /// records are created.
    pub(super) fn create_key(
        &self,
        handle: &Handle,
        marker: Option<&EraseMarker>,
        first_seq: u64,
    ) -> Result<(CachedUser, KeyRecord)> {
        if marker.is_some_and(|m| m.block_new) {
            return Err(Error::Blocked);
        }
        let epoch = match marker {
            Some(m) => m.epoch.checked_add(1).ok_or(Error::SeqExhausted)?,
            None => 1,
        };
        let secret = Secret32::random(self.rng.as_ref())?;
        let (wrapped, root_gen) = self.keys.wrap(
            self.rng.as_ref(),
            &KeyRecord::wrap_aad(handle, epoch),
            &secret,
        )?;
        let rec = KeyRecord {
            epoch,
            wrapped_secret: wrapped,
            created_ms: self.clock.now_ms(),
            first_seq,
            state: KeyState::Active,
            root_gen,
        };
        let state = CachedUser {
            epoch,
            keys: Arc::new(UserKeys {
                cipher: crypto::message_cipher(&secret, &self.keys.salt, handle, epoch),
                secret,
            }),
            first_seq,
            next_seq: first_seq,
            policy: None,
        };
        Ok((state, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_seq_is_above_everything_ever_handed_out() {
        let last = Last {
            seq: 9,
            epoch: Some(1),
        };
        let marker = EraseMarker {
            epoch: 1,
            erased_at_ms: 0,
            next_seq: 20,
            block_new: false,
            purged: true,
            log_position: 0,
        };
        assert_eq!(next_seq(None, 1, None, None), 1);
        assert_eq!(next_seq(Some(&last), 1, None, None), 10);
        assert_eq!(next_seq(Some(&last), 15, None, None), 15);
        assert_eq!(next_seq(Some(&last), 1, Some(&marker), None), 20);
        assert_eq!(next_seq(None, 1, None, Some(30)), 30);
        let top = Last {
            seq: u64::MAX,
            epoch: None,
        };
        assert_eq!(next_seq(Some(&top), 1, None, None), u64::MAX);
    }
}

//! The conversations table: striped locks that serialise each
//! conversation's seq assignment, key creation, redaction and deletion;
//! the bounded cache of conversation keys; the cache of derived
//! (author, conversation) message ciphers; loading a conversation's state.
//! The one place conversation key records are created lives here.
//!
//! Lock order: a conversation's lock before a user's. Nothing that holds a
//! user's lock takes a conversation's.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};

use super::Inner;
use super::engine::{Cf, Scope};
use super::users::{CachedUser, Last, Stripes, next_seq};
use crate::codec::{
    ConvHeader, ConvKeyRecord, EraseMarker, UserPolicy, message_key, parse_message_key,
};
use crate::crypto::{self, NONCE_LEN, Secret32, SivCipher};
use crate::error::{Corruption, Error, Result};
use crate::types::{ConversationId, Handle, HandleBuildHasher, HandleMap};

/// Number of lock stripes serialising per-conversation work.
const LOCK_STRIPES: usize = 1024;

/// Most (author, conversation) ciphers kept; the cache is emptied when full.
pub(crate) const PAIR_CACHE_ENTRIES: usize = 4096;

/// Cached state of a conversation with a key.
#[derive(Clone)]
pub(super) struct CachedConv {
    pub(super) epoch: u32,
    pub(super) secret: Arc<Secret32>,
    /// The conversation's own cipher (redaction markers, its sealed id).
    pub(super) cipher: Arc<SivCipher>,
    pub(super) first_seq: u64,
    pub(super) next_seq: u64,
    pub(super) policy: Arc<UserPolicy>,
}

/// A conversation's state as loaded under its lock.
pub(super) enum ConvState {
    /// The conversation has a key.
    Live(CachedConv),
    /// No key: never used, or deleted.
    Absent {
        marker: Option<EraseMarker>,
        next_seq: u64,
    },
}

/// A derived message cipher of one author in one conversation.
struct Pair {
    conv_epoch: u32,
    author_epoch: u32,
    cipher: Arc<SivCipher>,
}

/// Stripe locks, the key cache, the pair cache and the count of
/// conversations with a key.
pub(super) struct Conversations {
    locks: Stripes,
    cache: Mutex<LruCache<Handle, CachedConv, HandleBuildHasher>>,
    /// Keyed by (conversation, author). An erase or a deletion removes its
    /// entries after evicting the key from its own cache; an entry is only
    /// added while both keys are still cached, so none outlives either.
    pairs: Mutex<HandleMap<(Handle, Handle), Pair>>,
    /// Conversations with a live key record.
    pub(super) count: AtomicU64,
}

/// Estimated heap bytes of one conversation-cache entry plus its share of
/// the pair cache.
pub(crate) fn conversation_cache_entry_bytes() -> usize {
    std::mem::size_of::<CachedConv>()
        + std::mem::size_of::<SivCipher>()
        + SivCipher::HEAP_BYTES
        + std::mem::size_of::<Secret32>()
        + std::mem::size_of::<UserPolicy>()
        + 6 * std::mem::size_of::<usize>()
        + std::mem::size_of::<Handle>()
        + 64
}

/// Estimated heap bytes of one pair-cache entry.
pub(crate) fn pair_cache_entry_bytes() -> usize {
    std::mem::size_of::<Pair>()
        + std::mem::size_of::<SivCipher>()
        + SivCipher::HEAP_BYTES
        + 2 * std::mem::size_of::<Handle>()
        + 4 * std::mem::size_of::<usize>()
}

impl Conversations {
    pub(super) fn new(cache_entries: NonZeroUsize) -> Self {
        Conversations {
            locks: Stripes::new(LOCK_STRIPES),
            cache: Mutex::new(LruCache::with_hasher(
                cache_entries,
                HandleBuildHasher::default(),
            )),
            pairs: Mutex::new(HandleMap::default()),
            count: AtomicU64::new(0),
        }
    }

    /// The lock of `handle`'s stripe.
    pub(super) fn lock(&self, handle: &Handle) -> MutexGuard<'_, ()> {
        self.locks.lock(handle)
    }

    /// The locks of several conversations' stripes, each once, in stripe
    /// order (so two callers never wait on each other in a cycle).
    pub(super) fn lock_many(&self, handles: &[Handle]) -> Vec<MutexGuard<'_, ()>> {
        self.locks.lock_many(handles)
    }

    /// The cached state of `handle`.
    pub(super) fn cached(&self, handle: &Handle) -> Option<CachedConv> {
        self.cache.lock().get(handle).cloned()
    }

    /// Caches `state` (caller holds the conversation's lock).
    pub(super) fn remember(&self, handle: Handle, state: CachedConv) {
        self.cache.lock().put(handle, state);
    }

    /// Evicts a conversation and every cipher derived from its secret.
    pub(super) fn forget(&self, handle: &Handle) {
        drop(self.cache.lock().pop(handle));
        self.pairs.lock().retain(|(c, _), _| c != handle);
    }

    /// Drops every cipher derived from an author's secret (after the
    /// author's own cache entry was evicted).
    pub(super) fn forget_author(&self, author: &Handle) {
        self.pairs.lock().retain(|(_, a), _| a != author);
    }
}

impl Inner {
    /// The handle of a conversation id in this store.
    pub(super) fn conversation_handle(&self, id: &ConversationId) -> Handle {
        self.keys.handle_key.conversation_handle(id)
    }

    /// The message cipher of `author` in a conversation, from the pair
    /// cache or derived (and cached while both keys are still cached).
    pub(super) fn pair_cipher(
        &self,
        conv_handle: &Handle,
        conv: &CachedConv,
        author_handle: &Handle,
        author: &CachedUser,
    ) -> Arc<SivCipher> {
        let key = (*conv_handle, *author_handle);
        if let Some(p) = self.convs.pairs.lock().get(&key)
            && p.conv_epoch == conv.epoch
            && p.author_epoch == author.epoch
        {
            return Arc::clone(&p.cipher);
        }
        let cipher = Arc::new(crypto::conversation_message_cipher(
            &author.keys.secret,
            &conv.secret,
            &self.keys.salt,
            (conv_handle, conv.epoch),
            (author_handle, author.epoch),
        ));
        let mut pairs = self.convs.pairs.lock();
        let conv_cached = self
            .convs
            .cache
            .lock()
            .peek(conv_handle)
            .is_some_and(|c| c.epoch == conv.epoch);
        let author_cached = self.users.cached_epoch(author_handle) == Some(author.epoch);
        if conv_cached && author_cached {
            if pairs.len() >= PAIR_CACHE_ENTRIES {
                pairs.clear();
            }
            pairs.insert(
                key,
                Pair {
                    conv_epoch: conv.epoch,
                    author_epoch: author.epoch,
                    cipher: Arc::clone(&cipher),
                },
            );
        }
        cipher
    }

    /// The conversations `user` is a declared subject of, in key order.
    pub(super) fn subject_conversations(&self, user: &Handle) -> Result<Vec<Handle>> {
        let mut it = self.engine.cursor(Cf::Subjects, Scope::Handle(user))?;
        it.seek(user.as_bytes());
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            if !k.starts_with(user.as_bytes()) {
                break;
            }
            if let Some(c) = k
                .get(Handle::LEN..)
                .and_then(|c| <[u8; Handle::LEN]>::try_from(c).ok())
            {
                out.push(Handle(c));
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The newest slot of a conversation: its seq and conversation epoch.
    fn last_slot(&self, handle: &Handle) -> Result<Option<Last>> {
        let mut it = self
            .engine
            .cursor(Cf::ConvMessages, Scope::Handle(handle))?;
        it.seek_for_prev(&message_key(handle, u64::MAX));
        let Some((key, value)) = it.item() else {
            it.status()?;
            return Ok(None);
        };
        let (h, seq) = parse_message_key(key)?;
        if h != *handle {
            return Ok(None);
        }
        Ok(Some(Last {
            seq,
            epoch: ConvHeader::parse(value).ok().map(|h| h.conv_epoch),
        }))
    }

    /// The conversation's key record, if any.
    pub(super) fn conv_key_record(&self, handle: &Handle) -> Result<Option<ConvKeyRecord>> {
        self.engine
            .get(Cf::ConvKeys, handle.as_bytes())?
            .map(|b| ConvKeyRecord::decode(&b))
            .transpose()
    }

    /// The conversation's deletion marker, if any.
    pub(super) fn conv_marker(&self, handle: &Handle) -> Result<Option<EraseMarker>> {
        self.engine
            .get(Cf::ConvDeleted, handle.as_bytes())?
            .map(|b| EraseMarker::decode(&b))
            .transpose()
    }

    /// The cached state of a conversation, if it is cached and its key
    /// record is unchanged (deleted or changed through another front end of
    /// a JetStream cluster: the stale entry is dropped).
    pub(super) fn fresh_cached_conv(&self, handle: &Handle) -> Result<Option<CachedConv>> {
        let Some(c) = self.convs.cached(handle) else {
            return Ok(None);
        };
        if self.engine.is_unchanged(Cf::ConvKeys, handle.as_bytes())? {
            return Ok(Some(c));
        }
        self.convs.forget(handle);
        Ok(None)
    }

    /// [`Inner::load_conv`] for a write that checks the conversation's
    /// key record itself and reloads when that check fails (see
    /// [`Inner::load_for_write`]).
    pub(super) fn load_conv_for_write(&self, handle: &Handle) -> Result<ConvState> {
        match self.convs.cached(handle) {
            Some(c) => Ok(ConvState::Live(c)),
            None => self.load_conv(handle),
        }
    }

    /// Loads a conversation's state. Caller holds its lock.
    pub(super) fn load_conv(&self, handle: &Handle) -> Result<ConvState> {
        if let Some(c) = self.fresh_cached_conv(handle)? {
            return Ok(ConvState::Live(c));
        }
        let last = self.last_slot(handle)?;
        if let Some(rec) = self.conv_key_record(handle)? {
            if let Some(l) = last
                && l.epoch()? > rec.epoch
            {
                return Err(Error::Corrupt(Corruption::EpochMismatch));
            }
            let secret = self.keys.unwrap(
                rec.root_gen,
                &ConvKeyRecord::wrap_aad(handle, rec.epoch),
                &rec.wrapped_secret,
            )?;
            let state = CachedConv {
                epoch: rec.epoch,
                cipher: Arc::new(crypto::conversation_cipher(
                    &secret,
                    &self.keys.salt,
                    handle,
                    rec.epoch,
                )),
                secret: Arc::new(secret),
                first_seq: rec.first_seq,
                next_seq: next_seq(
                    last.as_ref(),
                    self.seq_floor(handle)?,
                    None,
                    Some(rec.first_seq),
                ),
                policy: Arc::new(rec.policy),
            };
            self.convs.remember(*handle, state.clone());
            return Ok(ConvState::Live(state));
        }
        let marker = self.conv_marker(handle)?;
        // Slots without a key record or a covering deletion: a lost key.
        // (A deleted conversation's slots stay until its purge.)
        let covered = marker.as_ref().map_or(0, |m| m.epoch);
        if let Some(l) = last
            && l.epoch()? > covered
        {
            return Err(Error::Corrupt(Corruption::MissingKeyRecord));
        }
        let next_seq = next_seq(
            last.as_ref(),
            self.seq_floor(handle)?,
            marker.as_ref(),
            None,
        );
        Ok(ConvState::Absent { marker, next_seq })
    }

    /// A fresh conversation secret for a conversation without a key: its
    /// cache entry and its (not yet stored) key record, holding `id` sealed
    /// under the new key. The epoch follows the deleted one. The one place
    /// conversation key records are created.
    pub(super) fn create_conv_key(
        &self,
        handle: &Handle,
        id: &ConversationId,
        marker: Option<&EraseMarker>,
        first_seq: u64,
    ) -> Result<(CachedConv, ConvKeyRecord)> {
        let epoch = match marker {
            Some(m) => m.epoch.checked_add(1).ok_or(Error::SeqExhausted)?,
            None => 1,
        };
        let secret = Secret32::random(self.rng.as_ref())?;
        let (wrapped, root_gen) = self.keys.wrap(
            self.rng.as_ref(),
            &ConvKeyRecord::wrap_aad(handle, epoch),
            &secret,
        )?;
        let cipher = crypto::conversation_cipher(&secret, &self.keys.salt, handle, epoch);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce)?;
        let mut sealed_id = Vec::with_capacity(NONCE_LEN + id.as_bytes().len() + 16);
        sealed_id.extend_from_slice(&nonce);
        sealed_id.extend_from_slice(id.as_bytes());
        let tag = cipher.seal_in_place(
            &nonce,
            &ConvKeyRecord::id_aad(handle, epoch),
            &mut sealed_id[NONCE_LEN..],
        )?;
        sealed_id.extend_from_slice(&tag);
        let rec = ConvKeyRecord {
            epoch,
            wrapped_secret: wrapped,
            sealed_id,
            created_ms: self.clock.now_ms(),
            first_seq,
            policy: UserPolicy::default(),
            subjects: Vec::new(),
            root_gen,
        };
        let state = CachedConv {
            epoch,
            secret: Arc::new(secret),
            cipher: Arc::new(cipher),
            first_seq,
            next_seq: first_seq,
            policy: Arc::new(UserPolicy::default()),
        };
        Ok((state, rec))
    }

    /// Opens the conversation id sealed in its key record.
    pub(super) fn open_conversation_id(
        &self,
        handle: &Handle,
        conv: &CachedConv,
        rec: &ConvKeyRecord,
    ) -> Result<ConversationId> {
        let (nonce, sealed) = rec
            .sealed_id
            .split_at_checked(NONCE_LEN)
            .ok_or(Error::Corrupt(Corruption::Encoding))?;
        let nonce: &[u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| Error::Corrupt(Corruption::Encoding))?;
        let id = conv
            .cipher
            .open(nonce, &ConvKeyRecord::id_aad(handle, rec.epoch), sealed)?;
        ConversationId::new(id).map_err(|_| Error::Corrupt(Corruption::Encoding))
    }

    /// Stores `rec` as the conversation's key record in `batch`.
    pub(super) fn put_conv_key_record(
        &self,
        batch: &mut super::engine::Batch<'_>,
        handle: &Handle,
        rec: &ConvKeyRecord,
    ) -> Result<()> {
        let mut encoded = Vec::new();
        rec.encode(&mut encoded);
        batch.put(Cf::ConvKeys, handle.as_bytes(), &encoded)
    }
}

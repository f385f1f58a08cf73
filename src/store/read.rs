//! Reading a user's messages: [`MessageIter`] fetches them in short pages,
//! each from a fresh RocksDB cursor that is dropped before the page is
//! handed out, so an iterator held open (or a slow client) never pins files
//! and never holds off a purge. Each message is decrypted straight from
//! the cursor's bytes into its payload buffer (the one allocation per
//! message). A read whose user is in the key cache takes no lock: appends
//! hold the user's stripe lock across their synced write, and a read must
//! not wait for another user's fsync. The erase generation, checked before
//! every message is handed out, stands in for the lock.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;

use super::Inner;
use super::engine::{Cf, Scope};
use super::rights::Access;
use super::sealing::open_message;
use super::users::{CachedUser, UserState};
use crate::codec::{self, Envelope, message_key};
use crate::error::{Error, Result};
use crate::types::{Handle, UserId};

/// Messages a [`MessageIter`] fetches per page unless told otherwise.
pub(super) const ITER_PAGE: usize = 64;
/// The largest page a read fetches at once.
pub(super) const MAX_PAGE: usize = 1024;

/// A decrypted, authenticated message, or the marker of a redacted one.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Sequence number.
    pub seq: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The plaintext payload (empty for a redaction marker).
    pub payload: Vec<u8>,
    /// Set if the message was redacted ([`Store::redact_as`](crate::Store::redact_as)):
    /// the payload is gone, seq and timestamp remain.
    pub redaction: Option<Redaction>,
}

/// Why and when a message was redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// When, ms since the Unix epoch.
    pub redacted_at_ms: u64,
    /// The reason given.
    pub reason: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_len", &self.payload.len())
            .field("redacted", &self.redaction.is_some())
            .finish()
    }
}

/// Streaming reader returned by [`Store::read_iter`](crate::Store::read_iter).
///
/// It reads in pages of up to 64 messages; each page sees the store as it is
/// when the page is fetched (later appends may appear at the end), and no
/// RocksDB cursor is held between pages, so an iterator left open pins
/// nothing. If the user is erased while it is open, it stops: it never
/// yields a message after the erase returned. It stops after the first
/// error it yields.
pub struct MessageIter<'a> {
    inner: &'a Inner,
    handle: Handle,
    state: Option<CachedUser>,
    /// The next seq to fetch.
    next: u64,
    /// Fetched and opened, not yet handed out (an error ends the page).
    page: VecDeque<Result<Message>>,
    page_size: usize,
    /// The last fetch reached the end of the user's messages.
    exhausted: bool,
    erase_generation: u64,
    /// Messages appended before this time are expired (hidden).
    horizon: u64,
    done: bool,
}

impl Iterator for MessageIter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose().map(|r| self.inner.counted(r));
        if !matches!(item, Some(Ok(_))) {
            // Nothing opened or keyed outlives the end of the iteration.
            self.done = true;
            self.page.clear();
            self.state = None;
        }
        item
    }
}

impl MessageIter<'_> {
    fn step(&mut self) -> Result<Option<Message>> {
        let Some(epoch) = self.state.as_ref().map(|s| s.epoch) else {
            return Ok(None);
        };
        loop {
            let Some(opened) = self.page.pop_front() else {
                if self.exhausted {
                    return Ok(None);
                }
                // An erase that returned meanwhile explains a failed fetch
                // (the next epoch's records): stop, don't report damage.
                let filled = self.fill();
                if filled.is_err() && self.erased_since(epoch)? {
                    return Ok(None);
                }
                filled?;
                continue;
            };
            // Checked after opening, just before handing out: an erase that
            // returned by now stops the iterator, also for this message.
            if self.erased_since(epoch)? {
                return Ok(None);
            }
            return opened.map(Some);
        }
    }

    /// Whether `epoch` was erased, checked on disk only if an erase ran
    /// since the last check.
    fn erased_since(&mut self, epoch: u32) -> Result<bool> {
        let generation = self.inner.erase_generation.load(Ordering::Acquire);
        if generation == self.erase_generation {
            return Ok(false);
        }
        self.erase_generation = generation;
        self.inner.epoch_erased(&self.handle, epoch)
    }

    /// Fetches and opens the next page with a cursor that lives only for
    /// this call. A record that fails to open ends the page with its error.
    fn fill(&mut self) -> Result<()> {
        let Some(state) = self.state.as_ref() else {
            self.exhausted = true;
            return Ok(());
        };
        let mut it = self
            .inner
            .engine
            .cursor(Cf::Messages, Scope::Handle(&self.handle))?;
        it.seek(&message_key(&self.handle, self.next));
        let mut fetched = 0;
        let mut last = None;
        while fetched < self.page_size {
            let Some((key, value)) = it.item() else {
                break;
            };
            let (h, seq) = codec::parse_message_key(key)?;
            if h != self.handle {
                break;
            }
            fetched += 1;
            last = Some(seq);
            match open_stored(&self.handle, state, key, value, self.horizon) {
                Ok(None) => {}
                Ok(Some(message)) => self.page.push_back(Ok(message)),
                Err(e) => {
                    self.page.push_back(Err(e));
                    self.exhausted = true;
                    return Ok(());
                }
            }
            it.next();
        }
        it.status()?;
        match last {
            Some(last) if fetched == self.page_size && last < u64::MAX => self.next = last + 1,
            _ => self.exhausted = true,
        }
        Ok(())
    }
}

/// Opens one stored record of the user's log; `None` if retention expired
/// it (hidden now, dropped at compaction; only a record whose CRC holds is
/// trusted to be expired).
fn open_stored(
    handle: &Handle,
    state: &CachedUser,
    key: &[u8],
    value: &[u8],
    horizon: u64,
) -> Result<Option<Message>> {
    let env = Envelope::decode(value)?;
    if env.timestamp_ms < horizon {
        return Ok(None);
    }
    open_message(handle, state, key, &env).map(Some)
}

impl Inner {
    /// A reader of `user`'s messages from `from_seq`, fetching `page_size`
    /// at a time.
    pub(super) fn read_iter(
        &self,
        user: &UserId,
        from_seq: u64,
        access: Access,
        page_size: usize,
    ) -> Result<MessageIter<'_>> {
        let handle = self.handle(user);
        // The erase generation is noted before the state is looked up: an
        // erase that returns after this point bumps it and is noticed
        // before anything is handed out; one that returned before it has
        // evicted the key already (it evicts, then bumps), so the lookup
        // misses and loads from disk under the user's lock.
        let erase_generation = self.erase_generation.load(Ordering::Acquire);
        let cached = self.fresh_cached_user(&handle)?;
        let loaded = match cached {
            Some(s) => UserState::Live(s),
            None => {
                let _guard = self.users.lock(&handle);
                self.load(&handle)?
            }
        };
        let state = match loaded {
            UserState::Live(s) => s,
            UserState::Absent { .. } => {
                return Ok(MessageIter {
                    inner: self,
                    handle,
                    state: None,
                    next: 0,
                    page: VecDeque::new(),
                    page_size: 1,
                    exhausted: true,
                    erase_generation,
                    horizon: 0,
                    done: true,
                });
            }
        };
        if state.policy().restriction.block_reads && access == Access::Subject {
            return Err(Error::Restricted {
                mode: "block_reads",
            });
        }
        let horizon = state
            .policy()
            .horizon(self.clock.now_ms(), self.default_retention_ms);
        Ok(MessageIter {
            inner: self,
            handle,
            // Seqs before this epoch's first belong to erased epochs: skip them.
            next: from_seq.max(state.first_seq),
            state: Some(state),
            page: VecDeque::with_capacity(page_size.clamp(1, MAX_PAGE)),
            page_size: page_size.clamp(1, MAX_PAGE),
            exhausted: false,
            erase_generation,
            horizon,
            done: false,
        })
    }
}

//! Validated newtypes that cross the API edge.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{Error, InvalidArgument};

/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// A chat service's identifier of a data subject: 1..=256 opaque bytes.
///
/// Raw user ids never reach RocksDB, logs or error messages; the store only
/// ever uses the [`Handle`] derived from one. `Debug` prints the length only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(Vec<u8>);

impl UserId {
    /// Validates and wraps a user id.
    ///
    /// # Errors
    /// [`InvalidArgument::EmptyUserId`] or [`InvalidArgument::UserIdTooLong`].
    pub fn new(id: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidArgument::EmptyUserId.into());
        }
        if id.len() > MAX_USER_ID_LEN {
            return Err(InvalidArgument::UserIdTooLong {
                len: id.len(),
                max: MAX_USER_ID_LEN,
            }
            .into());
        }
        Ok(UserId(id))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId(<{} bytes>)", self.0.len())
    }
}

/// The longest conversation id accepted, in bytes.
pub const MAX_CONVERSATION_ID_LEN: usize = 256;

/// A chat service's identifier of a conversation (a room, channel or direct
/// chat): 1..=256 opaque bytes. It may itself be personal data (such as
/// `dm:alice:bob`), so like a [`UserId`] it never reaches RocksDB, logs or
/// error messages: only its conversation handle does. `Debug` prints the
/// length only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(Vec<u8>);

impl ConversationId {
    /// Validates and wraps a conversation id.
    ///
    /// # Errors
    /// [`InvalidArgument::EmptyConversationId`] or
    /// [`InvalidArgument::ConversationIdTooLong`].
    pub fn new(id: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidArgument::EmptyConversationId.into());
        }
        if id.len() > MAX_CONVERSATION_ID_LEN {
            return Err(InvalidArgument::ConversationIdTooLong {
                len: id.len(),
                max: MAX_CONVERSATION_ID_LEN,
            }
            .into());
        }
        Ok(ConversationId(id))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId(<{} bytes>)", self.0.len())
    }
}

/// The 16-byte pseudonym of a user id: `HMAC-SHA256(handle_key, user_id)[..16]`.
///
/// Handles are what RocksDB keys, logs and metrics carry. `Display` prints hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub(crate) [u8; Handle::LEN]);

impl Handle {
    /// Length of a handle in bytes.
    pub const LEN: usize = 16;

    /// The handle's bytes, as they appear in RocksDB keys.
    pub fn as_bytes(&self) -> &[u8; Handle::LEN] {
        &self.0
    }

    /// Wraps 16 bytes read from a storage key.
    pub fn from_bytes(bytes: [u8; Handle::LEN]) -> Self {
        Handle(bytes)
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({self})")
    }
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Injected through [`Options::clock`](crate::Options::clock) so tests can pin
/// time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A hasher for maps keyed by [`Handle`]s (and tuples of them): an
/// FxHash-style fold of the bytes. A handle is a keyed HMAC output, uniform
/// and unknowable without the handle key, so its bytes need no SipHash to
/// spread them, and nobody can choose handles that collide.
#[derive(Default, Clone, Copy)]
pub(crate) struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Length prefixes and small integers.
        self.write(&n.to_le_bytes());
    }
}

/// Builds [`HandleHasher`]s.
pub(crate) type HandleBuildHasher = BuildHasherDefault<HandleHasher>;

/// A `HashMap` keyed by handles, hashed with [`HandleHasher`].
pub(crate) type HandleMap<K, V> = std::collections::HashMap<K, V, HandleBuildHasher>;

//! An ordered cursor over the keys a [`JetStreamEngine::cursor`] listed:
//! the same moves as the RocksDB engine's cursor. Values are read when the
//! cursor reaches their key; a key deleted since the listing is skipped.

use super::JetStreamEngine;
use super::subject::Place;
use crate::error::{Error, Result};

/// A positioned cursor over one column family's listed keys.
pub(crate) struct JsCursor<'e> {
    engine: &'e JetStreamEngine,
    keys: Vec<(Vec<u8>, Place)>,
    /// The current key's index and value.
    at: Option<(usize, Vec<u8>)>,
    error: Option<Error>,
}

impl<'e> JsCursor<'e> {
    pub(super) fn new(engine: &'e JetStreamEngine, keys: Vec<(Vec<u8>, Place)>) -> JsCursor<'e> {
        JsCursor {
            engine,
            keys,
            at: None,
            error: None,
        }
    }

    /// Stops at the first key from index `i` on (moving by `forward`) that
    /// still has a value.
    fn settle(&mut self, mut i: isize, forward: bool) {
        self.at = None;
        while i >= 0 && (i as usize) < self.keys.len() {
            match self.engine.value_at(&self.keys[i as usize].1) {
                Ok(Some(v)) => {
                    self.at = Some((i as usize, v));
                    return;
                }
                Ok(None) => i += if forward { 1 } else { -1 },
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    /// Moves to the first key `>= key`.
    pub(crate) fn seek(&mut self, key: &[u8]) {
        let i = self.keys.partition_point(|(k, _)| k.as_slice() < key);
        self.settle(i as isize, true);
    }

    /// Moves to the last key `<= key`.
    pub(crate) fn seek_for_prev(&mut self, key: &[u8]) {
        let i = self.keys.partition_point(|(k, _)| k.as_slice() <= key);
        self.settle(i as isize - 1, false);
    }

    /// Moves to the first key.
    pub(crate) fn seek_to_first(&mut self) {
        self.settle(0, true);
    }

    /// Moves to the next key.
    pub(crate) fn next(&mut self) {
        if let Some((i, _)) = self.at {
            self.settle(i as isize + 1, true);
        }
    }

    /// Moves to the previous key.
    pub(crate) fn prev(&mut self) {
        if let Some((i, _)) = self.at {
            self.settle(i as isize - 1, false);
        }
    }

    /// The current key and value, `None` past the end (or on error: see
    /// [`JsCursor::status`]).
    pub(crate) fn item(&self) -> Option<(&[u8], &[u8])> {
        self.at
            .as_ref()
            .map(|(i, v)| (self.keys[*i].0.as_slice(), v.as_slice()))
    }

    /// The current key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.item().map(|(k, _)| k)
    }

    /// The current value.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        self.item().map(|(_, v)| v)
    }

    /// The error that ended the iteration, if one did.
    pub(crate) fn status(&self) -> Result<()> {
        match &self.error {
            None => Ok(()),
            Some(Error::JetStream(e)) => Err(Error::JetStream(e.clone())),
            Some(Error::Conflict) => Err(Error::Conflict),
            Some(_) => Err(Error::JetStream("reading a listed record failed".into())),
        }
    }
}

//! A write's records ([`JsBatch`]) and the plan the engine publishes them by.

use super::Cf;
use super::api::Outgoing;
use crate::error::Result;

/// Writes collected for one atomic [`JetStreamEngine::write`].
pub(crate) struct JsBatch {
    pub(super) ops: Vec<Op>,
}

pub(super) enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    Expect {
        cf: Cf,
        key: Vec<u8>,
    },
}

impl Op {
    pub(super) fn cf(&self) -> Cf {
        match self {
            Op::Put { cf, .. } | Op::Delete { cf, .. } | Op::Expect { cf, .. } => *cf,
        }
    }
    pub(super) fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Expect { key, .. } => key,
        }
    }
}

impl JsBatch {
    /// Sets `key` to `value`.
    pub(crate) fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
        self.ops.push(Op::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Deletes `key`.
    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        self.ops.push(Op::Delete {
            cf,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Makes the write conditional on `key` being as this engine last saw
    /// it (a record the batch's contents were decided on). A record it has
    /// not seen (or has forgotten) fails the write with
    /// [`Error::Conflict`](crate::Error::Conflict): read it, then write.
    pub(crate) fn expect(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        self.ops.push(Op::Expect {
            cf,
            key: key.to_vec(),
        });
        Ok(())
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub(super) struct PlannedWrite {
    pub(super) subject: String,
    /// The sequence the write replaces (0: none).
    pub(super) previous: u64,
    pub(super) delete: bool,
}

pub(super) struct Plan {
    pub(super) partition: u32,
    pub(super) msgs: Vec<Outgoing>,
    /// The record writes, in the order of `msgs` (they come first).
    pub(super) writes: Vec<PlannedWrite>,
    /// The positions in `msgs` of check messages.
    pub(super) nops: Vec<u64>,
    /// Every subject written or checked.
    pub(super) touched: Vec<String>,
}

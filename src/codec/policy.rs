//! Rights policy, redaction markers and consent records.

use serde::{Deserialize, Serialize};

use super::{corrupt_encoding, from_exact_bytes};
use crate::error::Result;

/// Longest legal-hold reason, redaction reason or consent purpose, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// Restriction of processing (GDPR Art. 18). Both off is "not restricted".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// New messages (and consent-free appends) for the user are refused.
    pub block_appends: bool,
    /// Reads and exports need the privileged (admin) path.
    pub block_reads: bool,
}

impl Restriction {
    /// Whether any mode is on.
    pub fn any(self) -> bool {
        self.block_appends || self.block_reads
    }
}

/// How long a user's messages are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retention {
    /// The store's default (`Options::retention`).
    #[default]
    StoreDefault,
    /// Kept until erased or redacted, whatever the store default.
    Forever,
    /// Expire `ms` milliseconds after their append time.
    After {
        /// The period, at least 1.
        ms: u64,
    },
}

/// A legal hold: erase, redact and retention expiry are refused while it is
/// active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    /// The operator's reason (a case number; not meant for personal data).
    pub reason: String,
    /// When it was placed, ms since the Unix epoch.
    pub since_ms: u64,
    /// When it ends by itself, if it does.
    pub until_ms: Option<u64>,
}

impl LegalHold {
    /// Whether the hold is in force at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// The rights policy of one user, kept in its key record (so it goes with
/// the key at erasure and survives restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPolicy {
    /// Restriction of processing.
    pub restriction: Restriction,
    /// Retention override.
    pub retention: Retention,
    /// Messages appended before this time are expired whatever the policy
    /// becomes: raised to the current horizon whenever retention or a hold
    /// changes, so expiry never goes backwards (what a compaction may already
    /// have dropped stays hidden).
    pub expired_before_ms: u64,
    /// The legal hold, if any.
    pub hold: Option<LegalHold>,
    /// Redactions await a purge to become physical.
    pub purge_pending: bool,
}

impl UserPolicy {
    /// Field limits a decoded policy must meet.
    pub(crate) fn is_valid(&self) -> bool {
        self.hold
            .as_ref()
            .is_none_or(|h| h.reason.len() <= MAX_REASON_LEN)
            && self.retention != Retention::After { ms: 0 }
    }

    /// The legal hold if it is in force at `now_ms`.
    pub fn active_hold(&self, now_ms: u64) -> Option<&LegalHold> {
        self.hold.as_ref().filter(|h| h.active_at(now_ms))
    }

    /// The retention period in ms that applies given the store's default
    /// (`None`: kept until erased), legal holds aside.
    pub fn period(&self, default: Option<u64>) -> Option<u64> {
        match self.retention {
            Retention::StoreDefault => default,
            Retention::Forever => None,
            Retention::After { ms } => Some(ms),
        }
    }

    /// Messages appended before the returned time are expired at `now_ms`,
    /// given the store's default retention.
    pub fn horizon(&self, now_ms: u64, default: Option<u64>) -> u64 {
        if self.active_hold(now_ms).is_some() {
            return self.expired_before_ms;
        }
        let by_period = self.period(default).map_or(0, |p| now_ms.saturating_sub(p));
        self.expired_before_ms.max(by_period)
    }
}

/// The sealed body of a redaction marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionBody {
    /// When the message was redacted, ms since the Unix epoch.
    pub redacted_at_ms: u64,
    /// Why (free text from the caller, at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

impl RedactionBody {
    /// postcard encoding (sealed under the user's key).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes an opened body.
    ///
    /// # Errors
    /// [`Corruption::Encoding`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let b: RedactionBody = from_exact_bytes(bytes)?;
        if b.reason.len() > MAX_REASON_LEN {
            return Err(corrupt_encoding());
        }
        Ok(b)
    }
}

/// Legal basis of processing (GDPR Art. 6(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegalBasis {
    /// (a) consent.
    Consent,
    /// (b) performance of a contract.
    Contract,
    /// (c) a legal obligation.
    LegalObligation,
    /// (d) vital interests.
    VitalInterests,
    /// (e) a task in the public interest.
    PublicTask,
    /// (f) legitimate interests.
    LegitimateInterests,
}

impl LegalBasis {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegitimateInterests => "legitimate_interests",
        }
    }
}

/// One entry of a user's consent history: the purpose, its legal basis,
/// whether consent was granted or withdrawn, and when (as the caller states
/// it). Sealed under the user's key, so erasure shreds it with the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// What the data is processed for, e.g. `"marketing-email"` (1..=256 bytes).
    pub purpose: String,
    /// The legal basis.
    pub basis: LegalBasis,
    /// Granted (`true`) or withdrawn (`false`).
    pub granted: bool,
    /// When the person gave or withdrew it, ms since the Unix epoch.
    pub given_at_ms: u64,
}

impl Consent {
    /// postcard encoding (sealed under the user's key).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes an opened consent record.
    ///
    /// # Errors
    /// [`Corruption::Encoding`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let c: Consent = from_exact_bytes(bytes)?;
        if c.purpose.is_empty() || c.purpose.len() > MAX_REASON_LEN {
            return Err(corrupt_encoding());
        }
        Ok(c)
    }
}

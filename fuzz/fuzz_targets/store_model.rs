//! A sequence of operations on a real `Store` (a fresh store per input, its
//! files in RocksDB's in-memory Env unless `SHREDSTORE_FUZZ_DISK` is set),
//! checked after every step against an in-memory model: the same messages
//! under the same seqs and timestamps, erased users read empty, seqs never
//! reused (after an erase a user's seqs continue above every earlier one, also
//! across reopen and purge, and when retention removed the newest messages),
//! and every expected error (`InvalidArgument` with its exact limits,
//! `Blocked`, `IdempotencyConflict`, a failing RNG, `WrongRootKey`,
//! `Restricted`, `LegalHold`, `NoSuchMessage`) exactly where the model
//! predicts it.
//!
//! Data-subject rights: the model mirrors each user's rights policy (it
//! lives in the key record, so erasure resets it): restriction
//! (`block_appends` refuses appends, `block_reads` refuses `Access::Subject`
//! reads, iterators, exports and consent histories; contents are then
//! compared through `Access::Override`), retention (user setting or the
//! store-wide period, with the `expired_before_ms` floor raised to the
//! current horizon by `set_retention_as` and by `set_legal_hold_as` when no
//! hold is active), legal holds (`until_ms` compared with the clock; erase
//! and redact refused while active, expiry frozen at the floor), redaction
//! markers (payload empty, seq and timestamp kept, `already_redacted` on a
//! repeat, purged by the next purge: `PurgeReport::redactions_purged`) and
//! consent histories (indexes 1.. per key epoch, emptied by erase). Rights
//! operations that would create a key fail with `Blocked` for a user erased
//! with `block_new`; those that would not (unrestrict, lift, retention back
//! to the default) succeed as no-ops on a user without a key. Every
//! returned `RightsState` and `rights_state()` is compared with the model's,
//! as are `export_with` manifests (counts, seqs, epoch, erasure dates,
//! consents).
//!
//! Retention and a clock that moves backwards: reads hide messages older
//! than the horizon computed from the *current* clock, while the compaction
//! filter drops them physically at whatever time a compaction runs
//! (automatic compactions may run at any moment between operations). A
//! hidden message therefore may or may not come back when the clock goes
//! back (or the store-wide period is lengthened at a reopen), depending on
//! whether a compaction saw it. The model tracks, per message, whether it is
//! certainly stored (`Present`: never past any horizon the store has been
//! at since it was written), certainly gone (`Dropped`: past the horizon at
//! a `Compact`, or at a `Purge` that compacted its user's range, or found
//! missing by a read, a redact or an idempotent retry while not hidden) or
//! either (`Maybe`). Reads must return exactly the unhidden `Present`
//! messages plus any subset of the unhidden `Maybe` ones, in order; a hidden
//! or `Dropped` message must never come back. A `Maybe` message a read did not return becomes `Dropped`
//! (what is gone stays gone); one it did return stays `Maybe` (a
//! compaction begun earlier may still drop it). Redact and idempotent
//! retries of a `Maybe` message accept both outcomes and learn from them.
//!
//! Conversations: three conversations, written by the four users. The
//! model keeps each conversation's slots of its live key epoch (a message
//! with its author and payload; a tombstone once the author was erased; a
//! redaction marker with its reason and time), its next seq (never reused,
//! also after a deletion, which reads as empty and starts the next epoch
//! above every earlier seq), its client message ids, rights policy (retention
//! and legal hold, as for users), declared subjects and pending deletion or
//! redaction. Every `read` and `read_back` (with limits) must return exactly
//! the model's items, with the same `Present`/`Maybe`/`Dropped` tolerance
//! for retention as users' reads. Appends create the author's key (refused
//! for a blocked or append-restricted author); erasing an author turns
//! their messages into `AuthorErased` tombstones everywhere, and with
//! `with_subject_conversations` deletes the conversations they are a
//! subject of (all refused if one of those is on legal hold), each with a
//! receipt that verifies. An idempotent retry of an erased author's message
//! by another author is a conflict until a purge replaced the record with a
//! tombstone (which names no author), a duplicate after. Exports carry the
//! user's readable conversation messages; purges report the conversation
//! deletions and redactions they made physical.
//!
//! It found three bugs, all fixed: a retry of an idempotent append whose
//! original retention had dropped failed with `Corrupt(MissingKeyRecord)`
//! (now a duplicate); `Store::stats` failed with `Io(NotFound)` when
//! RocksDB deleted a file while it summed the directory; and deleting a
//! conversation left its retention policy in the compaction filter, so once
//! the conversation was used again the next compaction dropped its new
//! messages by the deleted epoch's retention (now reset at deletion;
//! `tests/conversations.rs` keeps the case).
//!
//! Input: one byte (bits 0-1: key-cache size, bits 2-4: store-wide retention
//! period from `RETENTIONS`), then operations (`Op`, decoded with
//! `arbitrary`) until the input ends. Users come from a set of four,
//! conversations from a set of three.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use shredstore::MAX_REASON_LEN;
use shredstore::{
    Access, AuthoredMessage, Clock, Consent, ConsentEntry, Conversation, ConversationDeleted,
    ConversationId, ConversationItem, ConversationMessage, Durability, EraseOptions, Error,
    ExportItem, Handle, InvalidArgument, LegalBasis, LegalHold, MAX_CLIENT_MESSAGE_ID_LEN,
    MAX_CONVERSATION_ID_LEN, MAX_SUBJECTS, MemoryEnv, Options, PurgeStatus, ReceiptSubject,
    Redacted, Redaction, Restriction, Retention, RightsState, RootKey, SecureRandom, Store,
    TestHooks, Tombstone, TombstoneCause, UserId,
};

const MAX_PAYLOAD: usize = 40;
const MAX_BATCH: usize = 4;
const MAX_BATCH_BYTES: usize = 100;
const MAX_READ_LIMIT: usize = 8;
/// Operations per input; the rest of a longer input is ignored.
const MAX_OPS: usize = 48;
/// Slow operations (purge, compact, flush, reopen) per input.
const MAX_SLOW_OPS: usize = 6;
const ROOT_KEY: [u8; 32] = [0x5e; 32];
const START_MS: u64 = 1_700_000_000_000;
const ACTOR: &str = "fuzz";
/// Store-wide retention periods (ms), chosen by bits 2-4 of the first input
/// byte and of `Reopen::key_cache` (where 0 keeps the current period).
const RETENTIONS: [Option<u64>; 8] = [
    None,
    Some(1),
    Some(40),
    Some(700),
    Some(3_000),
    Some(20_000),
    Some(60_000),
    None,
];

/// A payload: `len` (mod 48, so some exceed `MAX_PAYLOAD`) bytes derived from `seed`.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Payload {
    len: u8,
    seed: u8,
}

impl Payload {
    fn bytes(self) -> Vec<u8> {
        let len = usize::from(self.len % 48);
        (0..len)
            .map(|i| self.seed ^ (i as u8).wrapping_mul(167))
            .collect()
    }

    /// The `i`-th payload of a batch starting with `self`.
    fn nth(self, i: u8) -> Payload {
        Payload {
            len: self.len.wrapping_add(i.wrapping_mul(29)),
            seed: self.seed.wrapping_add(i),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        user: u8,
        payload: Payload,
    },
    /// `id` 0 is the empty id, 255 one byte too long, others `id-<n>`.
    AppendIdempotent {
        user: u8,
        id: u8,
        payload: Payload,
    },
    /// `count` (mod 7) payloads: 0 is empty, above `MAX_BATCH` too many.
    AppendBatch {
        user: u8,
        count: u8,
        first: Payload,
    },
    /// `from` 255 is `u64::MAX`; `limit` mod 10 (0 and 9 are invalid).
    Read {
        user: u8,
        from: u8,
        limit: u8,
    },
    /// `read_iter`, taking `take` (mod 12) messages.
    ReadIter {
        user: u8,
        from: u8,
        take: u8,
    },
    /// `subjects`: `with_subject_conversations`.
    Erase {
        user: u8,
        block_new: bool,
        subjects: bool,
    },
    Purge,
    Flush,
    Compact,
    /// Close (or just drop, as a crash would) and reopen; bits 2-4 of
    /// `key_cache` change the store-wide retention (0 keeps it).
    Reopen {
        clean: bool,
        key_cache: u8,
    },
    /// Reopening with another root key fails with `WrongRootKey`.
    ReopenWrongKey,
    /// Moves the clock, forwards or backwards.
    Tick {
        ms: u16,
        back: bool,
    },
    /// The next RNG call fails.
    FailNextRandom,
    /// `restrict_as` with these modes (neither: `NoRestrictionMode`).
    Restrict {
        user: u8,
        appends: bool,
        reads: bool,
    },
    /// `unrestrict_as` with these modes (neither: both).
    Unrestrict {
        user: u8,
        appends: bool,
        reads: bool,
    },
    /// Redacts the `pick`-th message (mod count + 3) of the live key epoch,
    /// expired ones included; the 3 extra picks are missing seqs (the next
    /// one, the one before the epoch's first, `u64::MAX`). `reason` as `text`.
    Redact {
        user: u8,
        pick: u8,
        reason: u8,
    },
    /// `kind` mod 3: the store default, forever, after `ms` (0: `ZeroRetention`).
    SetRetention {
        user: u8,
        kind: u8,
        ms: u16,
    },
    /// `until` mod 3: none, now + `delta` (0 is now: `HoldEndsInPast`),
    /// now - `delta` (past). `reason` as `text`.
    SetLegalHold {
        user: u8,
        reason: u8,
        until: u8,
        delta: u16,
    },
    LiftLegalHold {
        user: u8,
    },
    /// `purpose` as `text` (0: `EmptyPurpose`); `basis` mod 6.
    RecordConsent {
        user: u8,
        purpose: u8,
        basis: u8,
        granted: bool,
        given_at: u16,
    },
    /// `export_with`, `Access::Override` if `privileged`.
    Export {
        user: u8,
        privileged: bool,
    },
    /// Conversation `conv` (mod 3), by author `user`; payloads and batches
    /// as for `Append`, `AppendBatch` and `AppendIdempotent`.
    ConvAppend {
        conv: u8,
        user: u8,
        payload: Payload,
    },
    ConvAppendBatch {
        conv: u8,
        user: u8,
        count: u8,
        first: Payload,
    },
    ConvAppendIdempotent {
        conv: u8,
        user: u8,
        id: u8,
        payload: Payload,
    },
    /// `from` 255 is `u64::MAX`; `limit` mod 10 (0 and 9 are invalid).
    ConvRead {
        conv: u8,
        from: u8,
        limit: u8,
    },
    /// `before` 255 is `u64::MAX` (0 reads nothing); `limit` as `ConvRead`.
    ConvReadBack {
        conv: u8,
        before: u8,
        limit: u8,
    },
    /// Redacts the `pick`-th slot (mod count + 3) of the live epoch, as
    /// `Redact` picks.
    ConvRedact {
        conv: u8,
        pick: u8,
        reason: u8,
    },
    ConvDelete {
        conv: u8,
    },
    /// Bits 0-3 of `mask` pick the users, bit 4 names the first one twice;
    /// 255 is one subject too many.
    ConvSetSubjects {
        conv: u8,
        mask: u8,
    },
    /// As `SetRetention`.
    ConvSetRetention {
        conv: u8,
        kind: u8,
        ms: u16,
    },
    /// As `SetLegalHold`.
    ConvSetLegalHold {
        conv: u8,
        reason: u8,
        until: u8,
        delta: u16,
    },
    ConvLiftLegalHold {
        conv: u8,
    },
}

/// The conversation set: two short ids and the longest allowed.
fn conv_id(conv: u8) -> ConversationId {
    let bytes = match conv % 3 {
        0 => b"general".to_vec(),
        1 => b"dm:alice:bob".to_vec(),
        _ => vec![0x5a; MAX_CONVERSATION_ID_LEN],
    };
    ConversationId::new(bytes).expect("valid conversation id")
}

/// The user set: three short ids and the longest allowed.
fn user_id(user: u8) -> UserId {
    let bytes = match user % 4 {
        0 => b"alice".to_vec(),
        1 => b"bob".to_vec(),
        2 => b"carol@example.com".to_vec(),
        _ => vec![0xa5; shredstore::MAX_USER_ID_LEN],
    };
    UserId::new(bytes).expect("valid user id")
}

fn client_message_id(id: u8) -> Vec<u8> {
    match id {
        0 => Vec::new(),
        255 => vec![b'x'; MAX_CLIENT_MESSAGE_ID_LEN + 1],
        n => format!("id-{n}").into_bytes(),
    }
}

/// A reason or purpose: 0 empty, 255 one byte too long, 254 exactly the
/// maximum (two-byte characters), 253 two bytes too long, else short.
fn text(sel: u8, stem: &str) -> String {
    match sel {
        0 => String::new(),
        255 => "x".repeat(MAX_REASON_LEN + 1),
        254 => "é".repeat(MAX_REASON_LEN / 2),
        253 => "é".repeat(MAX_REASON_LEN / 2 + 1),
        n => format!("{stem} {n}"),
    }
}

fn text_error(what: &'static str, text: &str) -> Option<Expect> {
    (text.len() > MAX_REASON_LEN).then_some(Expect::Invalid(InvalidArgument::TextTooLong {
        what,
        len: text.len(),
        max: MAX_REASON_LEN,
    }))
}

fn legal_basis(b: u8) -> LegalBasis {
    [
        LegalBasis::Consent,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::VitalInterests,
        LegalBasis::PublicTask,
        LegalBasis::LegitimateInterests,
    ][usize::from(b % 6)]
}

struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Deterministic (splitmix64) so a crash reproduces, with injectable failure.
struct TestRandom {
    state: AtomicU64,
    fail_next: AtomicBool,
}

impl SecureRandom for TestRandom {
    fn fill(&self, dest: &mut [u8]) -> shredstore::Result<()> {
        if self.fail_next.swap(false, Ordering::Relaxed) {
            return Err(Error::Random);
        }
        for chunk in dest.chunks_mut(8) {
            let mut z = self
                .state
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    seq: u64,
    timestamp_ms: u64,
    payload: Vec<u8>,
    redaction: Option<Redaction>,
}

/// Whether a message is still physically stored (see the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phys {
    Present,
    Maybe,
    Dropped,
}

#[derive(Debug, Clone)]
struct Stored {
    msg: Msg,
    phys: Phys,
}

/// The model's copy of a user's rights policy (the library's `UserPolicy`
/// without `purge_pending`, which the model keeps as
/// `UserModel::redaction_pending`).
#[derive(Debug, Clone, Default)]
struct Policy {
    restriction: Restriction,
    retention: Retention,
    expired_before_ms: u64,
    hold: Option<LegalHold>,
}

impl Policy {
    fn active_hold(&self, now: u64) -> Option<&LegalHold> {
        self.hold
            .as_ref()
            .filter(|h| h.until_ms.is_none_or(|u| now < u))
    }

    /// The retention period in force, ignoring holds.
    fn period(&self, default: Option<u64>) -> Option<u64> {
        match self.retention {
            Retention::StoreDefault => default,
            Retention::Forever => None,
            Retention::After { ms } => Some(ms),
        }
    }

    /// Messages with a timestamp below this are expired at `now`.
    fn horizon(&self, now: u64, default: Option<u64>) -> u64 {
        if self.active_hold(now).is_some() {
            return self.expired_before_ms;
        }
        let by_period = self.period(default).map_or(0, |p| now.saturating_sub(p));
        self.expired_before_ms.max(by_period)
    }

    fn rights(&self, now: u64, default: Option<u64>) -> RightsState {
        let hold = self.active_hold(now).cloned();
        RightsState {
            restriction: self.restriction,
            retention: self.retention,
            effective_retention_ms: if hold.is_some() {
                None
            } else {
                self.period(default)
            },
            legal_hold: hold,
            expired_before_ms: self.horizon(now, default),
        }
    }
}

/// One user as the model sees it.
#[derive(Debug)]
struct UserModel {
    /// Every message written under the live key epoch, in seq order
    /// (expired and dropped ones included).
    live: Vec<Stored>,
    /// The next seq; never goes down.
    next_seq: u64,
    /// First seq of the live key epoch.
    first_seq: u64,
    /// Highest key epoch created (0: never had a key).
    epoch: u32,
    /// When the live key was created.
    key_created_ms: u64,
    /// Has a live key record (created since the last erase).
    has_key: bool,
    blocked: bool,
    /// Client message ids of the live epoch, with their seq.
    dedup: HashMap<Vec<u8>, u64>,
    /// Erased (with something ever stored) and not yet purged.
    pending: bool,
    /// The rights policy of the live key (default without one).
    policy: Policy,
    /// Consent history of the live key epoch.
    consents: Vec<ConsentEntry>,
    /// A redaction awaits a purge.
    redaction_pending: bool,
    /// Times of the successful erasures.
    erasures: Vec<u64>,
}

impl Default for UserModel {
    fn default() -> Self {
        UserModel {
            live: Vec::new(),
            next_seq: 1,
            first_seq: 1,
            epoch: 0,
            key_created_ms: 0,
            has_key: false,
            blocked: false,
            dedup: HashMap::new(),
            pending: false,
            policy: Policy::default(),
            consents: Vec::new(),
            redaction_pending: false,
            erasures: Vec::new(),
        }
    }
}

impl UserModel {
    fn create_key(&mut self, now: u64) {
        debug_assert!(!self.has_key && self.live.is_empty());
        self.epoch += 1;
        self.has_key = true;
        self.first_seq = self.next_seq;
        self.key_created_ms = now;
        self.policy = Policy::default();
        self.consents.clear();
    }

    fn find(&mut self, seq: u64) -> Option<&mut Stored> {
        self.live.iter_mut().find(|s| s.msg.seq == seq)
    }

    fn block_reads(&self) -> bool {
        self.has_key && self.policy.restriction.block_reads
    }
}

/// What a conversation slot holds, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotKind {
    Message {
        author: u8,
        payload: Vec<u8>,
    },
    /// Its author was erased. The stored record still names the author
    /// (`Some`) until a purge puts a tombstone over it.
    Erased {
        author: Option<u8>,
    },
    Redacted {
        reason: String,
        at_ms: u64,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    seq: u64,
    timestamp_ms: u64,
    kind: SlotKind,
    phys: Phys,
}

impl Slot {
    /// The item a read returns for it.
    fn item(&self) -> ConversationItem {
        let tombstone = |cause| {
            ConversationItem::Tombstone(Tombstone {
                seq: self.seq,
                timestamp_ms: self.timestamp_ms,
                cause,
            })
        };
        match &self.kind {
            SlotKind::Message { author, payload } => {
                ConversationItem::Message(ConversationMessage {
                    seq: self.seq,
                    timestamp_ms: self.timestamp_ms,
                    author: user_id(*author),
                    payload: payload.clone(),
                })
            }
            SlotKind::Erased { .. } => tombstone(TombstoneCause::AuthorErased),
            SlotKind::Redacted { reason, at_ms } => tombstone(TombstoneCause::Redacted {
                reason: reason.clone(),
                redacted_at_ms: *at_ms,
            }),
        }
    }
}

/// One conversation as the model sees it.
#[derive(Debug)]
struct ConvModel {
    /// Every slot of the live key epoch, in seq order (expired and dropped
    /// ones included).
    slots: Vec<Slot>,
    /// The next seq; never goes down, also across deletions.
    next_seq: u64,
    /// First seq of the live key epoch.
    first_seq: u64,
    /// Highest key epoch created (0: never had a key).
    epoch: u32,
    has_key: bool,
    /// Client message ids of the live epoch, with their seq.
    dedup: HashMap<Vec<u8>, u64>,
    /// Retention and legal hold (the restriction stays off).
    policy: Policy,
    /// Declared subjects (users mod 4).
    subjects: BTreeSet<u8>,
    /// Deleted (with a key) and not yet purged.
    pending: bool,
    /// A redaction awaits a purge.
    redaction_pending: bool,
}

impl Default for ConvModel {
    fn default() -> Self {
        ConvModel {
            slots: Vec::new(),
            next_seq: 1,
            first_seq: 1,
            epoch: 0,
            has_key: false,
            dedup: HashMap::new(),
            policy: Policy::default(),
            subjects: BTreeSet::new(),
            pending: false,
            redaction_pending: false,
        }
    }
}

impl ConvModel {
    fn create_key(&mut self) {
        debug_assert!(!self.has_key && self.slots.is_empty());
        self.epoch += 1;
        self.has_key = true;
        self.first_seq = self.next_seq;
        self.policy = Policy::default();
    }

    fn find(&mut self, seq: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.seq == seq)
    }

    /// A compaction of this conversation's range ran now.
    fn drop_expired(&mut self, now: u64, default: Option<u64>) {
        let horizon = self.policy.horizon(now, default);
        for s in &mut self.slots {
            if s.timestamp_ms < horizon {
                s.phys = Phys::Dropped;
            }
        }
    }

    /// Deletes the conversation; returns the receipt's epoch, message count
    /// and purge status.
    fn delete(&mut self) -> (u32, u64, PurgeStatus) {
        let had_key = self.has_key;
        let messages = if had_key {
            self.next_seq - self.first_seq
        } else {
            0
        };
        // Nothing new since the last (or no) deletion: nothing to purge.
        let status = if had_key || self.pending {
            PurgeStatus::Pending
        } else {
            PurgeStatus::Purged
        };
        self.slots.clear();
        self.dedup.clear();
        self.policy = Policy::default();
        self.subjects.clear();
        self.has_key = false;
        self.redaction_pending = false;
        self.pending |= had_key;
        (self.epoch, messages, status)
    }
}

/// Matches a read's `got` against `candidates`, the items it may return in
/// order with their physical state: every `Present` one and any subset of
/// the `Maybe` ones, cut at `limit`. Returns the positions of the `Maybe`
/// candidates it skipped (gone from the store).
fn match_subset<T: PartialEq + Debug, K: PartialEq>(
    what: &dyn Debug,
    candidates: &[(T, Phys)],
    got: &[T],
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Vec<usize> {
    assert!(
        got.len() <= limit,
        "{what:?}: {} items over the limit",
        got.len()
    );
    let mut j = 0;
    let mut gone = Vec::new();
    for (i, (c, phys)) in candidates.iter().enumerate() {
        if j < got.len() && key(&got[j]) == key(c) {
            assert_eq!(&got[j], c, "{what:?}: item {i}");
            j += 1;
            continue;
        }
        if j == got.len() && got.len() == limit {
            break;
        }
        assert!(
            *phys == Phys::Maybe,
            "{what:?}: {c:?} missing: got {got:?}, candidates {candidates:?}"
        );
        gone.push(i);
    }
    assert_eq!(
        j,
        got.len(),
        "{what:?}: unexpected items: got {got:?}, candidates {candidates:?}"
    );
    gone
}

/// A retention change as `set_retention_as` makes it (users and
/// conversations alike).
fn retention_change(
    retention: Retention,
) -> impl FnOnce(&mut Policy, u64, Option<u64>) -> Result<(), Expect> {
    move |p, now, default| {
        if retention == (Retention::After { ms: 0 }) {
            return Err(Expect::Invalid(InvalidArgument::ZeroRetention));
        }
        p.expired_before_ms = p.horizon(now, default);
        p.retention = retention;
        Ok(())
    }
}

/// A legal hold as `set_legal_hold_as` places it.
fn hold_change(
    reason: String,
    until_ms: Option<u64>,
) -> impl FnOnce(&mut Policy, u64, Option<u64>) -> Result<(), Expect> {
    move |p, now, default| {
        if let Some(e) = text_error("legal hold reason", &reason) {
            return Err(e);
        }
        if until_ms.is_some_and(|u| u <= now) {
            return Err(Expect::Invalid(InvalidArgument::HoldEndsInPast));
        }
        let since_ms = match p.active_hold(now) {
            Some(h) => h.since_ms,
            None => {
                p.expired_before_ms = p.horizon(now, default);
                now
            }
        };
        p.hold = Some(LegalHold {
            reason,
            since_ms,
            until_ms,
        });
        Ok(())
    }
}

/// `until` mod 3 as `SetLegalHold` reads it.
fn hold_until(now: u64, until: u8, delta: u16) -> Option<u64> {
    let delta = u64::from(delta);
    match until % 3 {
        0 => None,
        1 => Some(now + delta),
        _ => Some(now.saturating_sub(delta)),
    }
}

fn retention_of(kind: u8, ms: u16) -> Retention {
    match kind % 3 {
        0 => Retention::StoreDefault,
        1 => Retention::Forever,
        _ => Retention::After { ms: u64::from(ms) },
    }
}

/// What an operation should fail with.
#[derive(Debug, Clone)]
enum Expect {
    Invalid(InvalidArgument),
    Blocked,
    Conflict,
    Random,
    Restricted(&'static str),
    LegalHold,
    NoSuchMessage,
}

fn err_matches(got: &Error, want: &Expect) -> bool {
    match (got, want) {
        (Error::InvalidArgument(a), Expect::Invalid(b)) => a == b,
        (Error::Restricted { mode }, Expect::Restricted(m)) => mode == m,
        (Error::Blocked, Expect::Blocked)
        | (Error::IdempotencyConflict, Expect::Conflict)
        | (Error::Random, Expect::Random)
        | (Error::LegalHold, Expect::LegalHold)
        | (Error::NoSuchMessage, Expect::NoSuchMessage) => true,
        _ => false,
    }
}

fn check_err(op: &Op, got: &Error, want: &Expect) {
    assert!(
        err_matches(got, want),
        "{op:?}: got {got:?}, the model expected {want:?}"
    );
}

/// Checks `got` against the acceptable outcomes `wants` (usually one);
/// returns the index of the one it matched.
fn check_outcome<T: PartialEq + Debug>(
    op: &Op,
    got: &Result<T, Error>,
    wants: &[Result<T, Expect>],
) -> usize {
    let found = wants.iter().position(|w| match (got, w) {
        (Ok(a), Ok(b)) => a == b,
        (Err(e), Err(w)) => err_matches(e, w),
        _ => false,
    });
    found.unwrap_or_else(|| panic!("{op:?}: got {got:?}, the model expected one of {wants:?}"))
}

fn id_error(id: &[u8]) -> Option<InvalidArgument> {
    if id.is_empty() {
        Some(InvalidArgument::EmptyClientMessageId)
    } else if id.len() > MAX_CLIENT_MESSAGE_ID_LEN {
        Some(InvalidArgument::ClientMessageIdTooLong {
            len: id.len(),
            max: MAX_CLIENT_MESSAGE_ID_LEN,
        })
    } else {
        None
    }
}

fn limit_error(limit: usize) -> Option<Expect> {
    if limit == 0 {
        Some(Expect::Invalid(InvalidArgument::ZeroLimit))
    } else if limit > MAX_READ_LIMIT {
        Some(Expect::Invalid(InvalidArgument::LimitTooLarge {
            limit,
            max: MAX_READ_LIMIT,
        }))
    } else {
        None
    }
}

fn validate_batch(payloads: &[Vec<u8>]) -> Option<InvalidArgument> {
    if payloads.is_empty() {
        return Some(InvalidArgument::EmptyBatch);
    }
    if payloads.len() > MAX_BATCH {
        return Some(InvalidArgument::BatchTooLarge {
            len: payloads.len(),
            max: MAX_BATCH,
        });
    }
    if let Some(p) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
        return Some(InvalidArgument::PayloadTooLarge {
            len: p.len(),
            max: MAX_PAYLOAD,
        });
    }
    let total: usize = payloads.iter().map(Vec::len).sum();
    (total > MAX_BATCH_BYTES).then_some(InvalidArgument::BatchBytesTooLarge {
        len: total,
        max: MAX_BATCH_BYTES,
    })
}

struct Harness {
    dir: PathBuf,
    /// RocksDB's in-memory filesystem (unless `SHREDSTORE_FUZZ_DISK` is set):
    /// every reopen of this input's store finds it there.
    env: Option<MemoryEnv>,
    clock: Arc<FakeClock>,
    rng: Arc<TestRandom>,
    store: Option<Store>,
    users: BTreeMap<u8, UserModel>,
    /// The model's "next RNG call fails" flag.
    rng_fails: bool,
    purges_since_open: u64,
    handles: BTreeMap<u8, Handle>,
    /// The store-wide retention period of the open store, in ms.
    default_retention: Option<u64>,
    convs: BTreeMap<u8, ConvModel>,
    conv_handles: BTreeMap<u8, Handle>,
}

impl Harness {
    fn options(&self, key: [u8; 32], key_cache: u8) -> Options {
        Options::new(&self.dir, RootKey::from_bytes(key))
            .durability(Durability::Buffered)
            .purge_interval(None)
            .max_payload(MAX_PAYLOAD)
            .max_batch(MAX_BATCH)
            .max_batch_bytes(MAX_BATCH_BYTES)
            .max_read_limit(MAX_READ_LIMIT)
            .key_cache_entries(usize::from(key_cache % 4) + 1)
            .block_cache_bytes(1 << 20)
            .write_buffer_bytes(1 << 20)
            .retention(self.default_retention.map(Duration::from_millis))
            .clock(self.clock.clone())
            .rng(self.rng.clone())
            .test_hooks(TestHooks {
                memory_env: self.env.clone(),
                ..TestHooks::default()
            })
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn user(&mut self, user: u8) -> &mut UserModel {
        self.users.entry(user % 4).or_default()
    }

    fn conv(&mut self, conv: u8) -> &mut ConvModel {
        self.convs.entry(conv % 3).or_default()
    }

    fn conversation(&self, conv: u8) -> Conversation<'_> {
        self.store().conversation(&conv_id(conv))
    }

    /// Consumes the model's RNG failure: whether the next RNG call fails.
    fn take_rng_failure(&mut self) -> bool {
        std::mem::take(&mut self.rng_fails)
    }

    /// Appends `payloads` in the model, or says why it must fail.
    fn model_append(&mut self, user: u8, payloads: &[Vec<u8>]) -> Result<Vec<Msg>, Expect> {
        let now = self.now();
        let u = self.user(user);
        if u.blocked {
            return Err(Expect::Blocked);
        }
        if u.has_key && u.policy.restriction.block_appends {
            return Err(Expect::Restricted("block_appends"));
        }
        if self.take_rng_failure() {
            // Nothing is written; the failure is used up.
            return Err(Expect::Random);
        }
        let u = self.user(user);
        if !u.has_key {
            u.create_key(now);
        }
        let mut out = Vec::new();
        for p in payloads {
            let m = Msg {
                seq: u.next_seq,
                timestamp_ms: now,
                payload: p.clone(),
                redaction: None,
            };
            u.next_seq += 1;
            u.live.push(Stored {
                msg: m.clone(),
                phys: Phys::Present,
            });
            out.push(m);
        }
        Ok(out)
    }

    /// A policy change as `update_policy` makes it: a user without a key
    /// gets one if `create` (refused if blocked, or by a failing RNG) and
    /// is otherwise left alone; `change` may refuse. Returns the resulting
    /// rights state.
    fn model_policy(
        &mut self,
        user: u8,
        create: bool,
        change: impl FnOnce(&mut Policy, u64, Option<u64>) -> Result<(), Expect>,
    ) -> Result<RightsState, Expect> {
        let now = self.now();
        let default = self.default_retention;
        let (has_key, blocked) = {
            let u = self.user(user);
            (u.has_key, u.blocked)
        };
        if !has_key {
            if !create {
                change(&mut Policy::default(), now, default)?;
                return Ok(Policy::default().rights(now, default));
            }
            if blocked {
                return Err(Expect::Blocked);
            }
            if self.take_rng_failure() {
                return Err(Expect::Random);
            }
            let mut p = Policy::default();
            change(&mut p, now, default)?;
            let u = self.user(user);
            u.create_key(now);
            u.policy = p;
            return Ok(u.policy.rights(now, default));
        }
        let u = self.user(user);
        let mut p = u.policy.clone();
        change(&mut p, now, default)?;
        u.policy = p;
        Ok(u.policy.rights(now, default))
    }

    /// Appends `payloads` by `user` to `conv` in the model (seqs and
    /// timestamps), or says why it must fail. A new conversation's key is
    /// made (drawing randomness) before the author is looked at; a live
    /// one's author is checked before any randomness is drawn.
    fn model_conv_append(
        &mut self,
        conv: u8,
        user: u8,
        payloads: &[Vec<u8>],
    ) -> Result<Vec<(u64, u64)>, Expect> {
        let now = self.now();
        let live = self.conv(conv).has_key;
        if !live && self.take_rng_failure() {
            return Err(Expect::Random);
        }
        let u = self.user(user);
        if u.blocked {
            return Err(Expect::Blocked);
        }
        if u.has_key && u.policy.restriction.block_appends {
            return Err(Expect::Restricted("block_appends"));
        }
        if live && self.take_rng_failure() {
            return Err(Expect::Random);
        }
        let u = self.user(user);
        if !u.has_key {
            u.create_key(now);
        }
        let c = self.conv(conv);
        if !c.has_key {
            c.create_key();
        }
        let mut out = Vec::new();
        for p in payloads {
            c.slots.push(Slot {
                seq: c.next_seq,
                timestamp_ms: now,
                kind: SlotKind::Message {
                    author: user % 4,
                    payload: p.clone(),
                },
                phys: Phys::Present,
            });
            out.push((c.next_seq, now));
            c.next_seq += 1;
        }
        Ok(out)
    }

    /// A conversation policy change as `update_conv_policy` makes it: a
    /// conversation without a key gets one if `create` (a failing RNG
    /// refuses it before `change` is looked at) and is otherwise left alone.
    fn model_conv_policy(
        &mut self,
        conv: u8,
        create: bool,
        change: impl FnOnce(&mut Policy, u64, Option<u64>) -> Result<(), Expect>,
    ) -> Result<RightsState, Expect> {
        let now = self.now();
        let default = self.default_retention;
        if !self.conv(conv).has_key {
            if !create {
                change(&mut Policy::default(), now, default)?;
                return Ok(Policy::default().rights(now, default));
            }
            if self.take_rng_failure() {
                return Err(Expect::Random);
            }
            let mut p = Policy::default();
            change(&mut p, now, default)?;
            let c = self.conv(conv);
            c.create_key();
            c.policy = p;
            return Ok(c.policy.rights(now, default));
        }
        let c = self.conv(conv);
        let mut p = c.policy.clone();
        change(&mut p, now, default)?;
        c.policy = p;
        Ok(c.policy.rights(now, default))
    }

    /// Checks a conversation deletion's result against the model's
    /// (`deleted`: epoch, messages, purge status) at `now`.
    fn check_deleted(
        &self,
        what: &dyn Debug,
        conv: u8,
        got: &ConversationDeleted,
        deleted: (u32, u64, PurgeStatus),
        now: u64,
    ) {
        let handle = self.conv_handles[&(conv % 3)];
        let (epoch, messages, status) = deleted;
        assert_eq!(
            (got.handle, got.epoch, got.messages_deleted, got.deleted_at_ms),
            (handle, epoch, messages, now),
            "{what:?}: deletion of conversation {}",
            conv % 3
        );
        let r = &got.receipt;
        assert_eq!(
            (
                r.subject,
                r.handle,
                r.epoch,
                r.erased_at_ms,
                r.messages_erased,
                r.purge_status
            ),
            (
                ReceiptSubject::Conversation,
                handle,
                epoch,
                now,
                messages,
                status
            ),
            "{what:?}: receipt of conversation {}",
            conv % 3
        );
        assert!(
            self.store().verify_receipt(r),
            "{what:?}: receipt does not verify"
        );
    }

    fn check_rights(
        op: &Op,
        got: shredstore::Result<RightsState>,
        want: Result<RightsState, Expect>,
    ) {
        match (got, want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{op:?}: rights state"),
            (Err(e), Err(w)) => check_err(op, &e, &w),
            (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append { user, payload } => {
                let p = payload.bytes();
                let got = self.store().append(&user_id(user), &p);
                let want = match validate_batch(std::slice::from_ref(&p)) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_append(user, std::slice::from_ref(&p)),
                };
                match (got, want) {
                    (Ok(a), Ok(m)) => {
                        assert_eq!(
                            (a.seq, a.timestamp_ms),
                            (m[0].seq, m[0].timestamp_ms),
                            "{op:?}"
                        )
                    }
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::AppendIdempotent { user, id, payload } => {
                self.append_idempotent(op, user, id, payload)
            }
            Op::AppendBatch { user, count, first } => {
                let payloads: Vec<Vec<u8>> = (0..count % 7).map(|i| first.nth(i).bytes()).collect();
                let got = self.store().append_batch(&user_id(user), &payloads);
                let want = match validate_batch(&payloads) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_append(user, &payloads),
                };
                match (got, want) {
                    (Ok(a), Ok(m)) => {
                        let a: Vec<_> = a.iter().map(|a| (a.seq, a.timestamp_ms)).collect();
                        let m: Vec<_> = m.iter().map(|m| (m.seq, m.timestamp_ms)).collect();
                        assert_eq!(a, m, "{op:?}");
                    }
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::Read { user, from, limit } => {
                let from = if from == 255 {
                    u64::MAX
                } else {
                    u64::from(from)
                };
                let limit = usize::from(limit % 10);
                let got = self.store().read(&user_id(user), from, limit);
                let want = if limit == 0 {
                    Err(Expect::Invalid(InvalidArgument::ZeroLimit))
                } else if limit > MAX_READ_LIMIT {
                    Err(Expect::Invalid(InvalidArgument::LimitTooLarge {
                        limit,
                        max: MAX_READ_LIMIT,
                    }))
                } else if self.user(user).block_reads() {
                    Err(Expect::Restricted("block_reads"))
                } else {
                    Ok(())
                };
                match (got, want) {
                    (Ok(got), Ok(())) => self.check_read(op, user, from, limit, as_msgs(got)),
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::ReadIter { user, from, take } => {
                let from = if from == 255 {
                    u64::MAX
                } else {
                    u64::from(from)
                };
                let take = usize::from(take % 12);
                let restricted = self.user(user).block_reads();
                let got = self.store().read_iter(&user_id(user), from);
                if restricted {
                    match got {
                        Err(e) => check_err(op, &e, &Expect::Restricted("block_reads")),
                        Ok(_) => panic!("{op:?}: read_iter of a block_reads user succeeded"),
                    }
                    return;
                }
                let got: Vec<_> = got
                    .expect("read_iter")
                    .take(take)
                    .collect::<shredstore::Result<_>>()
                    .expect("read_iter item");
                self.check_read(op, user, from, take, as_msgs(got));
            }
            Op::Erase {
                user,
                block_new,
                subjects,
            } => {
                let mut options = if block_new {
                    EraseOptions::block_new()
                } else {
                    EraseOptions::default()
                };
                if subjects {
                    options = options.with_subject_conversations();
                }
                let got = self.store().erase_with(&user_id(user), options);
                let now = self.now();
                let handle = self.handles[&(user % 4)];
                // The conversations the user is a subject of, in the
                // store's order (by handle).
                let mut subject_convs: Vec<u8> = (0..3u8)
                    .filter(|c| self.conv(*c).subjects.contains(&(user % 4)))
                    .collect();
                subject_convs.sort_by_key(|c| self.conv_handles[c]);
                let conv_hold = subjects
                    && subject_convs
                        .iter()
                        .any(|c| self.convs[c].policy.active_hold(now).is_some());
                let u = self.user(user);
                if (u.has_key && u.policy.active_hold(now).is_some()) || conv_hold {
                    match got {
                        Err(e) => check_err(op, &e, &Expect::LegalHold),
                        Ok(e) => panic!("{op:?}: erased under a legal hold: {e:?}"),
                    }
                    return;
                }
                let got = got.expect("erase");
                self.erase_in_conversations(op, user, subjects, &subject_convs, &got, now);
                let u = self.user(user);
                let had_key = u.has_key;
                let messages_before = if u.has_key { u.live.len() as u64 } else { 0 };
                assert_eq!(
                    (got.handle, got.messages_erased, got.epoch, got.erased_at_ms),
                    (handle, messages_before, u.epoch, now),
                    "{op:?}"
                );
                u.live.clear();
                u.dedup.clear();
                u.consents.clear();
                u.policy = Policy::default();
                u.redaction_pending = false;
                u.has_key = false;
                u.blocked |= block_new;
                // Pending if something was stored since the last purge: a
                // re-erasure of a purged user with nothing new stays purged.
                u.pending |= had_key;
                u.erasures.push(now);
            }
            Op::Purge => {
                let report = self.store().purge().expect("purge");
                let pending = self.users.values().filter(|u| u.pending).count();
                let redactions = self.users.values().filter(|u| u.redaction_pending).count()
                    + self.convs.values().filter(|c| c.redaction_pending).count();
                let deletions = self.convs.values().filter(|c| c.pending).count();
                assert!(report.complete, "purge incomplete: {report:?}");
                assert_eq!(
                    (
                        report.erasures_purged,
                        report.redactions_purged,
                        report.conversations_purged
                    ),
                    (pending, redactions, deletions),
                    "{op:?}"
                );
                // The purge compacted the ranges of users with pending
                // redactions: what was expired then is gone.
                let now = self.now();
                let default = self.default_retention;
                for u in self.users.values_mut() {
                    if u.redaction_pending {
                        u.drop_expired(now, default);
                    }
                    u.pending = false;
                    u.redaction_pending = false;
                }
                // It compacted the ranges of conversations with pending
                // redactions, and put tombstones (naming no author) over
                // every erased author's stored message.
                for c in self.convs.values_mut() {
                    if c.redaction_pending {
                        c.drop_expired(now, default);
                    }
                    c.pending = false;
                    c.redaction_pending = false;
                    for s in &mut c.slots {
                        if let SlotKind::Erased { author } = &mut s.kind {
                            *author = None;
                        }
                    }
                }
                self.purges_since_open += 1;
            }
            Op::Flush => self.store().flush().expect("flush"),
            Op::Compact => {
                self.store().compact().expect("compact");
                let now = self.now();
                let default = self.default_retention;
                for u in self.users.values_mut() {
                    u.drop_expired(now, default);
                }
                for c in self.convs.values_mut() {
                    c.drop_expired(now, default);
                }
            }
            Op::Reopen { clean, key_cache } => {
                let store = self.store.take().expect("store is open");
                if clean {
                    store.close().expect("close");
                } else {
                    drop(store);
                }
                self.open(key_cache);
            }
            Op::ReopenWrongKey => {
                self.store
                    .take()
                    .expect("store is open")
                    .close()
                    .expect("close");
                let mut wrong = ROOT_KEY;
                wrong[0] ^= 1;
                match Store::open(self.options(wrong, 0)) {
                    Err(Error::WrongRootKey) => {}
                    other => panic!("open with a wrong root key: {other:?}"),
                }
                self.open(0);
            }
            Op::Tick { ms, back } => {
                let now = self.now();
                let ms = u64::from(ms);
                let next = if back {
                    now.saturating_sub(ms)
                } else {
                    now + ms
                };
                self.clock.0.store(next, Ordering::Relaxed);
            }
            Op::FailNextRandom => {
                self.rng.fail_next.store(true, Ordering::Relaxed);
                self.rng_fails = true;
            }
            Op::Restrict {
                user,
                appends,
                reads,
            } => {
                let modes = Restriction {
                    block_appends: appends,
                    block_reads: reads,
                };
                let got = self.store().restrict_as(&user_id(user), modes, ACTOR);
                let want = self.model_policy(user, true, |p, _, _| {
                    if !modes.any() {
                        return Err(Expect::Invalid(InvalidArgument::NoRestrictionMode));
                    }
                    p.restriction.block_appends |= appends;
                    p.restriction.block_reads |= reads;
                    Ok(())
                });
                Self::check_rights(op, got, want);
            }
            Op::Unrestrict {
                user,
                appends,
                reads,
            } => {
                let modes = Restriction {
                    block_appends: appends,
                    block_reads: reads,
                };
                let got = self.store().unrestrict_as(&user_id(user), modes, ACTOR);
                let both = !modes.any();
                let want = self.model_policy(user, false, |p, _, _| {
                    p.restriction.block_appends &= !(appends || both);
                    p.restriction.block_reads &= !(reads || both);
                    Ok(())
                });
                Self::check_rights(op, got, want);
            }
            Op::Redact { user, pick, reason } => self.redact(op, user, pick, reason),
            Op::SetRetention { user, kind, ms } => {
                let retention = retention_of(kind, ms);
                let got = self
                    .store()
                    .set_retention_as(&user_id(user), retention, ACTOR);
                let create = retention != Retention::StoreDefault;
                let want = self.model_policy(user, create, retention_change(retention));
                Self::check_rights(op, got, want);
            }
            Op::SetLegalHold {
                user,
                reason,
                until,
                delta,
            } => {
                let reason = text(reason, "case");
                let until_ms = hold_until(self.now(), until, delta);
                let got = self
                    .store()
                    .set_legal_hold_as(&user_id(user), &reason, until_ms, ACTOR);
                let want = self.model_policy(user, true, hold_change(reason, until_ms));
                Self::check_rights(op, got, want);
            }
            Op::LiftLegalHold { user } => {
                let got = self.store().lift_legal_hold_as(&user_id(user), ACTOR);
                let want = self.model_policy(user, false, |p, _, _| {
                    p.hold = None;
                    Ok(())
                });
                Self::check_rights(op, got, want);
            }
            Op::RecordConsent {
                user,
                purpose,
                basis,
                granted,
                given_at,
            } => {
                let consent = Consent {
                    purpose: text(purpose, "purpose"),
                    basis: legal_basis(basis),
                    granted,
                    given_at_ms: START_MS + u64::from(given_at),
                };
                let got = self
                    .store()
                    .record_consent_as(&user_id(user), &consent, ACTOR);
                let now = self.now();
                let want = if consent.purpose.is_empty() {
                    Err(Expect::Invalid(InvalidArgument::EmptyPurpose))
                } else if let Some(e) = text_error("consent purpose", &consent.purpose) {
                    Err(e)
                } else if self.user(user).blocked {
                    // Blocked users never have a key.
                    Err(Expect::Blocked)
                } else if self.take_rng_failure() {
                    // Creating the key or sealing the record fails.
                    Err(Expect::Random)
                } else {
                    let u = self.user(user);
                    if !u.has_key {
                        u.create_key(now);
                    }
                    let entry = ConsentEntry {
                        index: u.consents.len() as u64 + 1,
                        recorded_at_ms: now,
                        consent,
                    };
                    u.consents.push(entry.clone());
                    Ok(entry)
                };
                match (got, want) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{op:?}"),
                    (Err(e), Err(w)) => check_err(op, &e, &w),
                    (got, want) => panic!("{op:?}: got {got:?}, the model expected {want:?}"),
                }
            }
            Op::Export { user, privileged } => self.export(op, user, privileged),
            Op::ConvAppend {
                conv,
                user,
                payload,
            } => {
                let p = payload.bytes();
                let got = self
                    .conversation(conv)
                    .append(&user_id(user), &p)
                    .map(|a| vec![(a.seq, a.timestamp_ms)]);
                let want = match validate_batch(std::slice::from_ref(&p)) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_conv_append(conv, user, std::slice::from_ref(&p)),
                };
                check_outcome(op, &got, &[want]);
            }
            Op::ConvAppendBatch {
                conv,
                user,
                count,
                first,
            } => {
                let payloads: Vec<Vec<u8>> = (0..count % 7).map(|i| first.nth(i).bytes()).collect();
                let got = self
                    .conversation(conv)
                    .append_batch(&user_id(user), &payloads)
                    .map(|v| {
                        v.iter()
                            .map(|a| (a.seq, a.timestamp_ms))
                            .collect::<Vec<_>>()
                    });
                let want = match validate_batch(&payloads) {
                    Some(e) => Err(Expect::Invalid(e)),
                    None => self.model_conv_append(conv, user, &payloads),
                };
                check_outcome(op, &got, &[want]);
            }
            Op::ConvAppendIdempotent {
                conv,
                user,
                id,
                payload,
            } => self.conv_append_idempotent(op, conv, user, id, payload),
            Op::ConvRead { conv, from, limit } => {
                let from = if from == 255 {
                    u64::MAX
                } else {
                    u64::from(from)
                };
                let limit = usize::from(limit % 10);
                let got = self.conversation(conv).read(from, limit);
                if let Some(e) = limit_error(limit) {
                    check_outcome(op, &got, &[Err(e)]);
                    return;
                }
                let got = got.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
                self.check_conv_read(op, conv, from, u64::MAX, limit, false, got);
            }
            Op::ConvReadBack {
                conv,
                before,
                limit,
            } => {
                let before = if before == 255 {
                    u64::MAX
                } else {
                    u64::from(before)
                };
                let limit = usize::from(limit % 10);
                let got = self.conversation(conv).read_back(before, limit);
                if let Some(e) = limit_error(limit) {
                    check_outcome(op, &got, &[Err(e)]);
                    return;
                }
                let got = got.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
                match before.checked_sub(1) {
                    Some(to) => self.check_conv_read(op, conv, 0, to, limit, true, got),
                    None => assert!(got.is_empty(), "{op:?}: {got:?}"),
                }
            }
            Op::ConvRedact { conv, pick, reason } => self.conv_redact(op, conv, pick, reason),
            Op::ConvDelete { conv } => {
                let got = self.conversation(conv).delete_as(ACTOR);
                let now = self.now();
                let c = self.conv(conv);
                if c.has_key && c.policy.active_hold(now).is_some() {
                    match got {
                        Err(e) => check_err(op, &e, &Expect::LegalHold),
                        Ok(d) => panic!("{op:?}: deleted under a legal hold: {d:?}"),
                    }
                    return;
                }
                let got = got.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
                let deleted = c.delete();
                self.check_deleted(op, conv, &got, deleted, now);
            }
            Op::ConvSetSubjects { conv, mask } => {
                let (ids, set): (Vec<UserId>, BTreeSet<u8>) = if mask == 255 {
                    let ids = (0..=MAX_SUBJECTS)
                        .map(|i| UserId::new(format!("subject-{i}")).expect("user id"))
                        .collect();
                    (ids, BTreeSet::new())
                } else {
                    let set: BTreeSet<u8> = (0..4u8).filter(|u| mask & (1 << u) != 0).collect();
                    let mut ids: Vec<UserId> = set.iter().map(|u| user_id(*u)).collect();
                    if mask & 0x10 != 0
                        && let Some(first) = ids.first().cloned()
                    {
                        ids.push(first);
                    }
                    (ids, set)
                };
                let got = self.conversation(conv).set_subjects_as(&ids, ACTOR);
                let want = if mask == 255 {
                    Err(Expect::Invalid(InvalidArgument::TooManySubjects {
                        len: MAX_SUBJECTS + 1,
                        max: MAX_SUBJECTS,
                    }))
                } else if !self.conv(conv).has_key && set.is_empty() {
                    Ok(0)
                } else if !self.conv(conv).has_key && self.take_rng_failure() {
                    Err(Expect::Random)
                } else {
                    let c = self.conv(conv);
                    if !c.has_key {
                        c.create_key();
                    }
                    let n = set.len();
                    c.subjects = set;
                    Ok(n)
                };
                check_outcome(op, &got, &[want]);
            }
            Op::ConvSetRetention { conv, kind, ms } => {
                let retention = retention_of(kind, ms);
                let got = self.conversation(conv).set_retention_as(retention, ACTOR);
                let create = retention != Retention::StoreDefault;
                let want = self.model_conv_policy(conv, create, retention_change(retention));
                Self::check_rights(op, got, want);
            }
            Op::ConvSetLegalHold {
                conv,
                reason,
                until,
                delta,
            } => {
                let reason = text(reason, "case");
                let until_ms = hold_until(self.now(), until, delta);
                let got = self
                    .conversation(conv)
                    .set_legal_hold_as(&reason, until_ms, ACTOR);
                let want = self.model_conv_policy(conv, true, hold_change(reason, until_ms));
                Self::check_rights(op, got, want);
            }
            Op::ConvLiftLegalHold { conv } => {
                let got = self.conversation(conv).lift_legal_hold_as(ACTOR);
                let want = self.model_conv_policy(conv, false, |p, _, _| {
                    p.hold = None;
                    Ok(())
                });
                Self::check_rights(op, got, want);
            }
        }
    }

    /// The conversation side of a successful erase of `user`: the subject
    /// conversations deleted (`subjects`) or left by the user, and the
    /// user's messages everywhere turned into tombstones.
    fn erase_in_conversations(
        &mut self,
        op: &Op,
        user: u8,
        subjects: bool,
        subject_convs: &[u8],
        got: &shredstore::Erased,
        now: u64,
    ) {
        let mut deleted = Vec::new();
        for &c in subject_convs {
            if subjects {
                deleted.push((c, self.conv(c).delete()));
            } else {
                self.conv(c).subjects.remove(&(user % 4));
            }
        }
        assert_eq!(
            got.conversations_deleted.len(),
            deleted.len(),
            "{op:?}: conversations deleted: {:?}",
            got.conversations_deleted
        );
        for (d, (c, want)) in got.conversations_deleted.iter().zip(deleted) {
            self.check_deleted(op, c, d, want, now);
        }
        for c in self.convs.values_mut() {
            for s in &mut c.slots {
                if matches!(&s.kind, SlotKind::Message { author, .. } if *author == user % 4) {
                    s.kind = SlotKind::Erased {
                        author: Some(user % 4),
                    };
                }
            }
        }
    }

    fn conv_append_idempotent(&mut self, op: &Op, conv: u8, user: u8, id: u8, payload: Payload) {
        let p = payload.bytes();
        let id = client_message_id(id);
        let got = self
            .conversation(conv)
            .append_idempotent(&user_id(user), &id, &p)
            .map(|a| (a.appended.seq, a.appended.timestamp_ms, a.duplicate));
        if let Some(e) = id_error(&id).or_else(|| validate_batch(std::slice::from_ref(&p))) {
            check_outcome(op, &got, &[Err(Expect::Invalid(e))]);
            return;
        }
        let earlier = self.conv(conv).dedup.get(&id).copied();
        let Some(seq) = earlier else {
            let want = self
                .model_conv_append(conv, user, std::slice::from_ref(&p))
                .map(|v| (v[0].0, v[0].1, false));
            if let Ok(w) = &want {
                self.conv(conv).dedup.insert(id, w.0);
            }
            check_outcome(op, &got, &[want]);
            return;
        };
        // Duplicates are found before the author's checks and use no
        // randomness.
        let now = self.now();
        let default = self.default_retention;
        let c = self.conv(conv);
        let horizon = c.policy.horizon(now, default);
        let s = c
            .find(seq)
            .expect("dedup entry of the live epoch")
            .clone();
        let dup = Ok((seq, s.timestamp_ms, true));
        // The stored record names its author (a message, also of an
        // erased author until purge): another author's retry conflicts.
        // Then the slot as a read sees it: a message is compared, a
        // tombstone or one retention hides is the same message.
        let stored_author = match &s.kind {
            SlotKind::Message { author, .. } => Some(*author),
            SlotKind::Erased { author } => *author,
            SlotKind::Redacted { .. } => None,
        };
        let if_stored = if stored_author.is_some_and(|a| a != user % 4) {
            Err(Expect::Conflict)
        } else {
            match &s.kind {
                SlotKind::Message { payload, .. }
                    if s.timestamp_ms >= horizon && *payload != p =>
                {
                    Err(Expect::Conflict)
                }
                _ => dup.clone(),
            }
        };
        // A slot retention dropped: still a duplicate, nothing to compare.
        let wants = match s.phys {
            Phys::Present => vec![if_stored],
            Phys::Maybe => vec![if_stored, dup],
            Phys::Dropped => vec![dup],
        };
        if check_outcome(op, &got, &wants) == 1 {
            self.conv(conv).find(seq).expect("slot").phys = Phys::Dropped;
        }
    }

    fn conv_redact(&mut self, op: &Op, conv: u8, pick: u8, reason: u8) {
        let reason = text(reason, "reason");
        let now = self.now();
        let default = self.default_retention;
        let seq = {
            let c = self.conv(conv);
            let n = c.slots.len();
            match usize::from(pick) % (n + 3) {
                i if i < n => c.slots[i].seq,
                i if i == n => c.next_seq,
                i if i == n + 1 => c.first_seq.saturating_sub(1),
                _ => u64::MAX,
            }
        };
        let got = self.conversation(conv).redact_as(seq, &reason, ACTOR);
        if let Some(e) = text_error("redaction reason", &reason) {
            check_outcome(op, &got, &[Err(e)]);
            return;
        }
        let rng_fails = self.rng_fails;
        let c = self.conv(conv);
        if !c.has_key {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        }
        if c.policy.active_hold(now).is_some() {
            check_outcome(op, &got, &[Err(Expect::LegalHold)]);
            return;
        }
        let horizon = c.policy.horizon(now, default);
        let Some(s) = c.find(seq).cloned() else {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        };
        if s.phys == Phys::Dropped || s.timestamp_ms < horizon {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        }
        let found = match &s.kind {
            SlotKind::Redacted { at_ms, .. } => Ok(Redacted {
                seq,
                timestamp_ms: s.timestamp_ms,
                redacted_at_ms: *at_ms,
                already_redacted: true,
            }),
            _ if rng_fails => Err(Expect::Random),
            _ => Ok(Redacted {
                seq,
                timestamp_ms: s.timestamp_ms,
                redacted_at_ms: now,
                already_redacted: false,
            }),
        };
        let mut wants = vec![found];
        if s.phys == Phys::Maybe {
            wants.push(Err(Expect::NoSuchMessage));
        }
        if check_outcome(op, &got, &wants) == 1 {
            // A compaction had dropped it.
            self.conv(conv).find(seq).expect("slot").phys = Phys::Dropped;
            return;
        }
        match got {
            Err(_) => self.rng_fails = false,
            Ok(r) if !r.already_redacted => {
                let c = self.conv(conv);
                c.redaction_pending = true;
                let s = c.find(seq).expect("slot");
                s.kind = SlotKind::Redacted {
                    reason,
                    at_ms: now,
                };
                // The marker is a new record, not yet seen by any compaction.
                s.phys = Phys::Present;
            }
            Ok(_) => {}
        }
    }

    /// Checks a read of `conv` of the seqs in `from..=to` with `limit`
    /// (newest first if `backward`) that returned `got`. `Maybe` slots it
    /// skipped become `Dropped`.
    #[allow(clippy::too_many_arguments)]
    fn check_conv_read(
        &mut self,
        what: &dyn Debug,
        conv: u8,
        from: u64,
        to: u64,
        limit: usize,
        backward: bool,
        got: Vec<ConversationItem>,
    ) {
        let now = self.now();
        let default = self.default_retention;
        let c = self.conv(conv);
        let horizon = c.policy.horizon(now, default);
        let mut candidates: Vec<(ConversationItem, Phys)> = if c.has_key {
            c.slots
                .iter()
                .filter(|s| {
                    (from..=to).contains(&s.seq)
                        && s.timestamp_ms >= horizon
                        && s.phys != Phys::Dropped
                })
                .map(|s| (s.item(), s.phys))
                .collect()
        } else {
            Vec::new()
        };
        if backward {
            candidates.reverse();
        }
        let what = (what, "conversation", conv % 3, "horizon", horizon, "now", now);
        let gone = match_subset(&what, &candidates, &got, limit, ConversationItem::seq);
        for i in gone {
            let seq = candidates[i].0.seq();
            c.find(seq).expect("candidate").phys = Phys::Dropped;
        }
    }

    /// Checks the conversation messages an export of `user` returned: the
    /// readable messages the user wrote in live conversations, by
    /// conversation handle and seq.
    fn check_authored(&mut self, what: &dyn Debug, user: u8, got: Vec<AuthoredMessage>) {
        let now = self.now();
        let default = self.default_retention;
        let mut candidates: Vec<(Handle, u8, AuthoredMessage, Phys)> = Vec::new();
        for (&c, m) in &self.convs {
            if !m.has_key {
                continue;
            }
            let horizon = m.policy.horizon(now, default);
            for s in &m.slots {
                if let SlotKind::Message { author, payload } = &s.kind
                    && *author == user % 4
                    && s.timestamp_ms >= horizon
                    && s.phys != Phys::Dropped
                {
                    let a = AuthoredMessage {
                        conversation: conv_id(c),
                        seq: s.seq,
                        timestamp_ms: s.timestamp_ms,
                        payload: payload.clone(),
                    };
                    candidates.push((self.conv_handles[&c], c, a, s.phys));
                }
            }
        }
        candidates.sort_by_key(|(h, _, a, _)| (*h, a.seq));
        let list: Vec<(AuthoredMessage, Phys)> = candidates
            .iter()
            .map(|(_, _, a, p)| (a.clone(), *p))
            .collect();
        let gone = match_subset(what, &list, &got, usize::MAX, |a| {
            (a.conversation.clone(), a.seq)
        });
        for i in gone {
            let (_, c, a, _) = &candidates[i];
            self.conv(*c).find(a.seq).expect("candidate").phys = Phys::Dropped;
        }
    }

    fn append_idempotent(&mut self, op: &Op, user: u8, id: u8, payload: Payload) {
        let p = payload.bytes();
        let id = client_message_id(id);
        let got = self
            .store()
            .append_idempotent(&user_id(user), &id, &p)
            .map(|a| (a.appended.seq, a.appended.timestamp_ms, a.duplicate));
        let invalid = if id.is_empty() {
            Some(InvalidArgument::EmptyClientMessageId)
        } else if id.len() > MAX_CLIENT_MESSAGE_ID_LEN {
            Some(InvalidArgument::ClientMessageIdTooLong {
                len: id.len(),
                max: MAX_CLIENT_MESSAGE_ID_LEN,
            })
        } else {
            validate_batch(std::slice::from_ref(&p))
        };
        if let Some(e) = invalid {
            check_outcome(op, &got, &[Err(Expect::Invalid(e))]);
            return;
        }
        let earlier = self.user(user).dedup.get(&id).copied();
        let Some(seq) = earlier else {
            let want = self
                .model_append(user, std::slice::from_ref(&p))
                .map(|m| (m[0].seq, m[0].timestamp_ms, false));
            if want.is_ok() {
                self.user(user).dedup.insert(id, seq_of(&want));
            }
            check_outcome(op, &got, &[want]);
            return;
        };
        // Duplicates are found before the restriction and blocked checks
        // and use no randomness. A redacted original is still the same
        // message, whatever the payload.
        let s = self
            .user(user)
            .find(seq)
            .expect("dedup entry of the live epoch")
            .clone();
        let conflict = s.msg.redaction.is_none() && s.msg.payload != p;
        let dup = || Ok((seq, s.msg.timestamp_ms, true));
        let found = if conflict {
            Err(Expect::Conflict)
        } else {
            dup()
        };
        let wants = match s.phys {
            Phys::Present => vec![found],
            // Dropped by retention meanwhile, or not: a vanished original is
            // a duplicate (the index entry holds its seq and time) whose
            // payload can no longer be compared.
            Phys::Maybe => vec![found, dup()],
            Phys::Dropped => vec![dup()],
        };
        check_outcome(op, &got, &wants);
        if conflict && got.is_ok() {
            self.user(user).find(seq).expect("message").phys = Phys::Dropped;
        }
    }

    fn redact(&mut self, op: &Op, user: u8, pick: u8, reason: u8) {
        let reason = text(reason, "reason");
        let now = self.now();
        let default = self.default_retention;
        let seq = {
            let u = self.user(user);
            let n = u.live.len();
            match usize::from(pick) % (n + 3) {
                i if i < n => u.live[i].msg.seq,
                i if i == n => u.next_seq,
                i if i == n + 1 => u.first_seq.saturating_sub(1),
                _ => u64::MAX,
            }
        };
        let got = self.store().redact_as(&user_id(user), seq, &reason, ACTOR);
        if let Some(e) = text_error("redaction reason", &reason) {
            check_outcome(op, &got, &[Err(e)]);
            return;
        }
        let u = self.user(user);
        if !u.has_key {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        }
        if u.policy.active_hold(now).is_some() {
            check_outcome(op, &got, &[Err(Expect::LegalHold)]);
            return;
        }
        let horizon = u.policy.horizon(now, default);
        let Some(s) = u.find(seq).cloned() else {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        };
        if s.phys == Phys::Dropped || s.msg.timestamp_ms < horizon {
            check_outcome(op, &got, &[Err(Expect::NoSuchMessage)]);
            return;
        }
        let found = match &s.msg.redaction {
            Some(r) => Ok(Redacted {
                seq,
                timestamp_ms: s.msg.timestamp_ms,
                redacted_at_ms: r.redacted_at_ms,
                already_redacted: true,
            }),
            None if self.rng_fails => Err(Expect::Random),
            None => Ok(Redacted {
                seq,
                timestamp_ms: s.msg.timestamp_ms,
                redacted_at_ms: now,
                already_redacted: false,
            }),
        };
        let mut wants = vec![found];
        if s.phys == Phys::Maybe {
            wants.push(Err(Expect::NoSuchMessage));
        }
        if check_outcome(op, &got, &wants) == 1 {
            // A compaction had dropped it.
            self.user(user).find(seq).expect("message").phys = Phys::Dropped;
            return;
        }
        match got {
            Err(_) => self.rng_fails = false,
            Ok(r) if !r.already_redacted => {
                let u = self.user(user);
                u.redaction_pending = true;
                let s = u.find(seq).expect("message");
                s.msg.payload.clear();
                s.msg.redaction = Some(Redaction {
                    redacted_at_ms: now,
                    reason,
                });
                // The marker is a new record, not yet seen by any compaction.
                s.phys = Phys::Present;
            }
            Ok(_) => {}
        }
    }

    fn export(&mut self, op: &Op, user: u8, privileged: bool) {
        let access = if privileged {
            Access::Override
        } else {
            Access::Subject
        };
        let mut sunk = Vec::new();
        let mut authored = Vec::new();
        let got = self
            .store()
            .export_with(&user_id(user), ACTOR, access, |item| {
                match item {
                    ExportItem::Message(m) => sunk.push(m),
                    ExportItem::Authored(a) => authored.push(a),
                }
                Ok(())
            });
        let now = self.now();
        let default = self.default_retention;
        let handle = self.handles[&(user % 4)];
        if self.user(user).block_reads() && !privileged {
            match got {
                Err(e) => check_err(op, &e, &Expect::Restricted("block_reads")),
                Ok(m) => panic!("{op:?}: exported a block_reads user: {m:?}"),
            }
            assert!(
                sunk.is_empty() && authored.is_empty(),
                "{op:?}: messages of a refused export"
            );
            return;
        }
        let m = got.unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        assert_eq!(
            m.conversation_message_count,
            authored.len() as u64,
            "{op:?}: conversation messages"
        );
        self.check_authored(op, user, authored);
        let msgs = as_msgs(sunk);
        let seqs = (msgs.first().map(|m| m.seq), msgs.last().map(|m| m.seq));
        let redacted = msgs.iter().filter(|m| m.redaction.is_some()).count() as u64;
        let count = msgs.len() as u64;
        self.check_read(op, user, 0, usize::MAX, msgs);
        let u = self.user(user);
        let mut erasures = u.erasures.clone();
        erasures.sort_unstable();
        assert_eq!(m.handle, handle, "{op:?}");
        assert_eq!(
            (m.message_count, m.redacted_count, m.first_seq, m.last_seq),
            (count, redacted, seqs.0, seqs.1),
            "{op:?}: counts"
        );
        assert_eq!(
            (m.key_epoch, m.key_created_ms),
            (
                u.has_key.then_some(u.epoch),
                u.has_key.then_some(u.key_created_ms)
            ),
            "{op:?}: key"
        );
        assert_eq!(
            (&m.erasures_ms, m.appends_blocked),
            (&erasures, u.blocked),
            "{op:?}: erasures"
        );
        assert_eq!(m.rights, u.policy.rights(now, default), "{op:?}: rights");
        assert_eq!(m.consents, u.consents, "{op:?}: consents");
    }

    /// Checks a read of `user` from `from` with `limit` that returned
    /// `got`: the unhidden `Present` messages and any subset of the
    /// unhidden `Maybe` ones, in seq order, cut at `limit`. `Maybe`
    /// messages the read skipped become `Dropped`.
    fn check_read(&mut self, what: &dyn Debug, user: u8, from: u64, limit: usize, got: Vec<Msg>) {
        let now = self.now();
        let default = self.default_retention;
        let u = self.user(user);
        assert!(
            got.len() <= limit,
            "{what:?}: {} messages over the limit",
            got.len()
        );
        let horizon = u.policy.horizon(now, default);
        let candidates: Vec<&Stored> = if u.has_key {
            u.live
                .iter()
                .filter(|s| {
                    s.msg.seq >= from && s.msg.timestamp_ms >= horizon && s.phys != Phys::Dropped
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut j = 0;
        let mut gone = Vec::new();
        for s in &candidates {
            if j < got.len() && got[j].seq == s.msg.seq {
                assert_eq!(got[j], s.msg, "{what:?}: message {}", s.msg.seq);
                j += 1;
                continue;
            }
            if j == got.len() && got.len() == limit {
                break;
            }
            assert!(
                s.phys == Phys::Maybe,
                "{what:?}: message {} of user {} missing (horizon {horizon}, now {now}): \
                 got {got:?}, candidates {candidates:?}",
                s.msg.seq,
                user % 4
            );
            gone.push(s.msg.seq);
        }
        assert_eq!(
            j,
            got.len(),
            "{what:?}: unexpected messages of user {} (horizon {horizon}, now {now}): \
             got {got:?}, candidates {candidates:?}, model {:?}",
            user % 4,
            u.live
        );
        for seq in gone {
            u.find(seq).expect("candidate").phys = Phys::Dropped;
        }
    }

    fn open(&mut self, key_cache: u8) {
        let retention = usize::from(key_cache >> 2) % RETENTIONS.len();
        if retention != 0 {
            self.default_retention = RETENTIONS[retention];
        }
        self.store = Some(Store::open(self.options(ROOT_KEY, key_cache)).expect("reopen"));
        self.purges_since_open = 0;
        // Handles are stable for the life of the store.
        for (user, handle) in &self.handles {
            assert_eq!(self.store().handle(&user_id(*user)), *handle);
        }
        for (conv, handle) in &self.conv_handles {
            assert_eq!(self.conversation(*conv).handle(), *handle);
        }
    }

    /// Everything the store holds agrees with the model.
    fn check_all(&mut self) {
        let now = self.now();
        let default = self.default_retention;
        // A compaction may run at any time from now on, at this clock and
        // with these policies: what is expired now may be dropped.
        for u in self.users.values_mut() {
            let horizon = u.policy.horizon(now, default);
            for s in &mut u.live {
                if s.phys == Phys::Present && s.msg.timestamp_ms < horizon {
                    s.phys = Phys::Maybe;
                }
            }
        }
        for user in 0..4u8 {
            let id = user_id(user);
            let restricted = self.user(user).block_reads();
            let what = format!("contents of user {user}");
            let got = if restricted {
                match self.store().read_iter(&id, 0) {
                    Err(Error::Restricted {
                        mode: "block_reads",
                    }) => {}
                    Err(e) => panic!("{what}: read_iter: {e:?}"),
                    Ok(_) => panic!("{what}: read_iter of a block_reads user succeeded"),
                }
                self.read_all_override(&id)
            } else {
                self.store()
                    .read_iter(&id, 0)
                    .expect("read_iter")
                    .collect::<shredstore::Result<_>>()
                    .expect("read_iter item")
            };
            self.check_read(&what, user, 0, usize::MAX, as_msgs(got));

            let store = self.store.as_ref().expect("store is open");
            let u = self.users.entry(user).or_default();
            let rights = store.rights_state(&id).expect("rights_state");
            assert_eq!(
                rights,
                u.policy.rights(now, default),
                "rights of user {user}"
            );
            let history = store
                .consent_history(&id, Access::Override)
                .expect("consent history");
            assert_eq!(history, u.consents, "consents of user {user}");
            match store.consent_history(&id, Access::Subject) {
                Err(Error::Restricted {
                    mode: "block_reads",
                }) if restricted => {}
                Ok(h) if !restricted => assert_eq!(h, u.consents, "consents of user {user}"),
                other => panic!("consents of user {user} (restricted: {restricted}): {other:?}"),
            }
        }
        for c in self.convs.values_mut() {
            let horizon = c.policy.horizon(now, default);
            for s in &mut c.slots {
                if s.phys == Phys::Present && s.timestamp_ms < horizon {
                    s.phys = Phys::Maybe;
                }
            }
        }
        for conv in 0..3u8 {
            let what = format!("contents of conversation {conv}");
            let cv = self.conversation(conv);
            let mut got: Vec<ConversationItem> = Vec::new();
            loop {
                let from = got.last().map_or(0, |i| i.seq() + 1);
                let page = cv
                    .read(from, MAX_READ_LIMIT)
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                let full = page.len() == MAX_READ_LIMIT;
                got.extend(page);
                if !full {
                    break;
                }
            }
            let rights = cv
                .rights_state()
                .unwrap_or_else(|e| panic!("{what}: rights_state: {e:?}"));
            self.check_conv_read(&what, conv, 0, u64::MAX, usize::MAX, false, got);
            assert_eq!(
                rights,
                self.conv(conv).policy.rights(now, default),
                "rights of conversation {conv}"
            );
        }
        let stats = self.stats();
        let live_users = self.users.values().filter(|u| u.has_key).count() as u64;
        let pending = self.users.values().filter(|u| u.pending).count() as u64;
        assert_eq!(stats.users, live_users, "Stats::users");
        assert_eq!(stats.pending_erasures, pending, "Stats::pending_erasures");
        assert_eq!(
            stats.purges_done, self.purges_since_open,
            "Stats::purges_done"
        );
    }

    fn stats(&self) -> shredstore::Stats {
        self.store().stats().expect("stats")
    }

    /// Every readable message of `user` through `Access::Override`, page by page.
    fn read_all_override(&self, id: &UserId) -> Vec<shredstore::Message> {
        let mut out: Vec<shredstore::Message> = Vec::new();
        loop {
            let from = out.last().map_or(0, |m| m.seq + 1);
            let page = self
                .store()
                .read_with(id, from, MAX_READ_LIMIT, Access::Override)
                .expect("read_with override");
            let full = page.len() == MAX_READ_LIMIT;
            out.extend(page);
            if !full {
                return out;
            }
        }
    }
}

impl UserModel {
    /// A compaction of this user's range ran now: what is expired is gone.
    fn drop_expired(&mut self, now: u64, default: Option<u64>) {
        let horizon = self.policy.horizon(now, default);
        for s in &mut self.live {
            if s.msg.timestamp_ms < horizon {
                s.phys = Phys::Dropped;
            }
        }
    }
}

fn seq_of(want: &Result<(u64, u64, bool), Expect>) -> u64 {
    want.as_ref().map_or(0, |w| w.0)
}

fn as_msgs(got: Vec<shredstore::Message>) -> Vec<Msg> {
    got.into_iter()
        .map(|m| Msg {
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
            payload: m.payload,
            redaction: m.redaction,
        })
        .collect()
}

/// Where the stores go: `SHREDSTORE_FUZZ_TMP`, else the system temp dir.
/// Not tmpfs if avoidable: RocksDB preallocates its WAL with `fallocate`,
/// which tmpfs zero-fills, and that made every input twice as slow.
fn scratch_root() -> PathBuf {
    std::env::var_os("SHREDSTORE_FUZZ_TMP").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn is_slow(op: &Op) -> bool {
    matches!(
        op,
        Op::Purge | Op::Flush | Op::Compact | Op::Reopen { .. } | Op::ReopenWrongKey
    )
}

/// `SHREDSTORE_FUZZ_DISK=1`: stores on disk in a temporary directory (the
/// way the fuzzer ran before the in-memory filesystem, ~4 inputs/s), for
/// comparison; by default RocksDB's in-memory Env holds every file.
static ON_DISK: LazyLock<bool> = LazyLock::new(|| std::env::var_os("SHREDSTORE_FUZZ_DISK").is_some());

/// `SHREDSTORE_FUZZ_DEBUG=1`: print each operation and its duration (to
/// follow a crashing input).
static DEBUG: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SHREDSTORE_FUZZ_DEBUG").is_some());

fn debug(what: &dyn std::fmt::Debug, started: Instant) {
    if *DEBUG {
        eprintln!("{:>8.2?} {what:?}", started.elapsed());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(first) = u8::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    let mut slow = 0;
    while !u.is_empty() && ops.len() < MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if is_slow(&op) {
            if slow == MAX_SLOW_OPS {
                continue;
            }
            slow += 1;
        }
        ops.push(op);
    }

    let dir = tempfile::Builder::new()
        .prefix("shredstore-fuzz-")
        .tempdir_in(scratch_root())
        .expect("temp dir");
    let mut h = Harness {
        dir: dir.path().join("db"),
        env: (!*ON_DISK).then(|| MemoryEnv::new().expect("in-memory env")),
        clock: Arc::new(FakeClock(AtomicU64::new(START_MS))),
        rng: Arc::new(TestRandom {
            state: AtomicU64::new(0),
            fail_next: AtomicBool::new(false),
        }),
        store: None,
        users: BTreeMap::new(),
        rng_fails: false,
        purges_since_open: 0,
        handles: BTreeMap::new(),
        default_retention: None,
        convs: BTreeMap::new(),
        conv_handles: BTreeMap::new(),
    };
    let started = Instant::now();
    // Bits 2-4 pick the store-wide retention (0 and 7: none).
    h.open(first);
    debug(&("open", h.default_retention), started);
    for user in 0..4u8 {
        let handle = h.store().handle(&user_id(user));
        h.handles.insert(user, handle);
    }
    for conv in 0..3u8 {
        let handle = h.conversation(conv).handle();
        h.conv_handles.insert(conv, handle);
    }
    for op in &ops {
        let started = Instant::now();
        h.step(op);
        debug(op, started);
        h.check_all();
    }
    let started = Instant::now();
    if let Some(store) = h.store.take() {
        store.close().expect("close");
    }
    debug(&"close", started);
    let started = Instant::now();
    drop(dir);
    debug(&"remove dir", started);
});

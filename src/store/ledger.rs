//! The erasure ledger (GDPR Art. 12(3): answer within one month). A request
//! restricts the user at once (appends and reads refused except the admin
//! override), can be cancelled within its grace period, and runs by itself
//! at the end of it: the background runner erases the user (by handle; the
//! ledger never holds a user id), writing the request's `Done` record in
//! the erasure's own batch, so a request runs at most once and a crash
//! between "due" and "done" runs it after restart. A legal hold parks it
//! ("waiting for hold", recorded once) until the hold lifts or ends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{Cf, Scope};
use super::erase::EraseOptions;
use super::worker::Worker;
use super::{Inner, Store};
use crate::codec::{
    AuditOp, AuditOutcome, ErasureReceipt, JournalRequest, LEDGER_PREFIX, LedgerReceipt,
    LedgerRecord, LedgerState, PurgeStatus, REQUEST_ID_LEN, ReceiptSubject, Restriction, ledger_id,
    ledger_key,
};
use crate::error::{Error, InvalidArgument, Result};
use crate::types::{Handle, UserId};

/// The actor named in the audit records of erasures the ledger runs.
pub const LEDGER_ACTOR: &str = "ledger";

/// The id of an erasure request: its received time (ms, big-endian) and 8
/// random bytes. Shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; REQUEST_ID_LEN]);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for RequestId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::from(InvalidArgument::RequestId);
        if s.len() != 2 * REQUEST_ID_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut id = [0u8; REQUEST_ID_LEN];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(RequestId(id))
    }
}

/// Where an erasure request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasureRequestState {
    /// Received; within its grace period (cancellable) or about to run.
    Pending,
    /// Past its grace, parked by a legal hold; runs when the hold lifts or
    /// ends.
    WaitingForHold,
    /// The user was erased; the receipt says how.
    Done,
    /// Cancelled within the grace period.
    Cancelled,
}

/// An erasure request, as [`Store::erasure_requests`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasureRequest {
    /// Its id.
    pub id: RequestId,
    /// The user's handle.
    pub handle: Handle,
    /// When it was received, ms since the Unix epoch.
    pub received_ms: u64,
    /// When the answer is due (received + [`Options::erasure_due`](super::Options::erasure_due)).
    pub due_ms: u64,
    /// The end of the grace period: it runs at or after this time.
    pub grace_until_ms: u64,
    /// The user's subject conversations are deleted with it.
    pub delete_subject_conversations: bool,
    /// Where it stands.
    pub state: ErasureRequestState,
    /// Since when it is in that state (received, waiting since, erased at,
    /// cancelled at), ms since the Unix epoch.
    pub state_since_ms: u64,
    /// The erasure's signed receipt, once done.
    pub receipt: Option<ErasureReceipt>,
    /// Past its due date and not done (at the time of the listing).
    pub overdue: bool,
}

/// What [`Store::request_erasure_as`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRequested {
    /// The request (the open one, if the user already had one).
    pub request: ErasureRequest,
    /// The user already had an open request, returned unchanged.
    pub existing: bool,
}

impl Store {
    /// Records an erasure request for `user` (GDPR Art. 17, answered within
    /// the due period of Art. 12(3)): the user is restricted at once (both
    /// modes: appends refused, reads only with the admin override) and
    /// erased by the background runner once `grace_ms` have passed
    /// (0: at once), with its subject conversations if
    /// `delete_subject_conversations`. Within the grace,
    /// [`Store::cancel_erasure_as`] withdraws it. A user with an open
    /// request gets that one back, unchanged. Audited as
    /// `erasure_requested`.
    ///
    /// # Errors
    /// [`InvalidArgument::GraceTooLong`] for a grace ending after the due
    /// date, or a storage error.
    pub fn request_erasure_as(
        &self,
        user: &UserId,
        grace_ms: u64,
        delete_subject_conversations: bool,
        actor: &str,
    ) -> Result<ErasureRequested> {
        let r = self
            .inner
            .request_erasure(user, grace_ms, delete_subject_conversations, actor);
        if r.as_ref().is_ok_and(|r| !r.existing) {
            self.inner.ledger_signal.notify();
        }
        r
    }

    /// Cancels erasure request `id` within its grace period: the
    /// restriction modes it added are lifted (not those in force before).
    /// Audited as `erasure_request_cancelled`.
    ///
    /// # Errors
    /// [`Error::NoSuchRequest`], [`Error::RequestClosed`] past the grace or
    /// for a request done or cancelled, or a storage error.
    pub fn cancel_erasure_as(&self, id: RequestId, actor: &str) -> Result<ErasureRequest> {
        self.inner.cancel_erasure(id, actor)
    }

    /// The erasure requests, oldest first, those in `state` only if given.
    ///
    /// # Errors
    /// A storage error or a damaged ledger record.
    pub fn erasure_requests(
        &self,
        state: Option<ErasureRequestState>,
    ) -> Result<Vec<ErasureRequest>> {
        self.inner.erasure_requests(state)
    }

    /// Runs every open request whose grace has ended now (the background
    /// runner does this every [`Options::ledger_interval`](super::Options::ledger_interval)),
    /// parking those a legal hold blocks; returns how many erasures ran.
    ///
    /// # Errors
    /// The first error, once every due request was tried (those that
    /// failed stay open for the next run).
    pub fn run_erasure_requests(&self) -> Result<usize> {
        self.inner.run_erasure_requests()
    }
}

impl Inner {
    /// Loads the open requests at open.
    pub(super) fn load_ledger(&self) -> Result<()> {
        let mut open = self.ledger.lock();
        self.for_each_request(|id, rec| {
            if rec.state.is_open() {
                open.insert(Handle(rec.handle), (id, rec));
            }
        })
    }

    /// Every request, by id. A record that does not decode is skipped with
    /// a warning (by its key's request id, if it has one): one damaged
    /// request must not keep the store from opening, nor hide the others.
    fn for_each_request(&self, mut f: impl FnMut(RequestId, LedgerRecord)) -> Result<()> {
        let mut it = self.engine.cursor(Cf::Meta, Scope::All)?;
        it.seek(LEDGER_PREFIX);
        while let Some((k, v)) = it.item() {
            if !k.starts_with(LEDGER_PREFIX) {
                break;
            }
            match (ledger_id(k), LedgerRecord::decode(v)) {
                (Some(id), Ok(rec)) => f(RequestId(id), rec),
                (id, _) => {
                    let request = id.map(|i| RequestId(i).to_string()).unwrap_or_default();
                    tracing::warn!(%request, "a damaged erasure request record is skipped");
                }
            }
            it.next();
        }
        it.status()
    }

    /// Every request, for a journal.
    pub(super) fn journal_requests(&self) -> Result<Vec<JournalRequest>> {
        let mut out = Vec::new();
        self.for_each_request(|id, record| out.push(JournalRequest { id: id.0, record }))?;
        Ok(out)
    }

    /// Replays a journal's requests into this copy (a restore): each
    /// request the journal has further along, or that this copy lacks,
    /// takes the journal's record. One received since restricts its user
    /// (as a request does); one cancelled since lifts what it added; one
    /// done since is closed with its receipt (its erasure is replayed from
    /// the journal's erasures). Audited with `actor`. Returns how many
    /// changed.
    pub(super) fn replay_requests(&self, requests: &[JournalRequest], actor: &str) -> Result<u64> {
        let mut changed = 0;
        for r in requests {
            let id = RequestId(r.id);
            let handle = Handle(r.record.handle);
            let _guard = self.users.lock(&handle);
            let here = self
                .engine
                .get(Cf::Meta, &ledger_key(&r.id))?
                .and_then(|b| LedgerRecord::decode(&b).ok());
            let ahead = |h: &LedgerRecord| h.state.progress() > r.record.state.progress();
            if here.is_some_and(|h| h == r.record || ahead(&h)) {
                continue;
            }
            let was_open = here.is_some_and(|h| h.state.is_open());
            let now_open = r.record.state.is_open();
            let now = self.clock.now_ms();
            let mut batch = self.engine.batch();
            put_request(&mut batch, id, &r.record)?;
            let op = match r.record.state {
                LedgerState::Pending => Some(AuditOp::ErasureRequested),
                LedgerState::WaitingForHold { .. } => Some(AuditOp::ErasureRequestWaitingForHold),
                LedgerState::Cancelled { .. } => Some(AuditOp::ErasureRequestCancelled),
                // Its erasure is audited when it is replayed.
                LedgerState::Done(_) => None,
            };
            let restrict = now_open && !was_open;
            let lift = was_open && matches!(r.record.state, LedgerState::Cancelled { .. });
            let user = if restrict || lift {
                match self.live_record(&handle, restrict) {
                    Err(Error::Blocked | Error::Corrupt(_)) => None,
                    other => other?,
                }
            } else {
                None
            };
            match (user, op) {
                (Some(user), Some(op)) => {
                    let mut policy = user.rec.state.policy();
                    let added = r.record.added_restriction;
                    if restrict {
                        policy.restriction = Restriction {
                            block_appends: true,
                            block_reads: true,
                        };
                    } else {
                        policy.restriction.block_appends &= !added.block_appends;
                        policy.restriction.block_reads &= !added.block_reads;
                    }
                    self.commit_policy(&handle, user, policy, batch, (actor, op), None)?;
                }
                (_, op) => {
                    if let Some(op) = op {
                        self.put_audit_at(
                            &mut batch,
                            now,
                            actor,
                            op,
                            Some(handle),
                            AuditOutcome::Ok,
                        )?;
                    }
                    self.engine.write(batch, true)?;
                }
            }
            let mut open = self.ledger.lock();
            if now_open {
                open.insert(handle, (id, r.record));
            } else if open.get(&handle).is_some_and(|(i, _)| *i == id) {
                open.remove(&handle);
            }
            changed += 1;
        }
        Ok(changed)
    }

    fn request_erasure(
        &self,
        user: &UserId,
        grace_ms: u64,
        delete_subject_conversations: bool,
        actor: &str,
    ) -> Result<ErasureRequested> {
        let handle = self.handle(user);
        let r = (|| {
            self.engine.check_writable()?;
            if grace_ms > self.erasure_due_ms {
                return Err(InvalidArgument::GraceTooLong {
                    grace_ms,
                    due_ms: self.erasure_due_ms,
                }
                .into());
            }
            let _guard = self.users.lock(&handle);
            let now = self.clock.now_ms();
            let open = self.ledger.lock().get(&handle).copied();
            if let Some((id, rec)) = open {
                // Asked again: recorded, the request unchanged.
                let mut batch = self.engine.batch();
                let op = AuditOp::ErasureRequested;
                self.put_audit_at(&mut batch, now, actor, op, Some(handle), AuditOutcome::Ok)?;
                self.engine.write(batch, true)?;
                return Ok(ErasureRequested {
                    request: self.request_view(id, &rec, now),
                    existing: true,
                });
            }
            let mut id = [0u8; REQUEST_ID_LEN];
            id[..8].copy_from_slice(&now.to_be_bytes());
            self.rng.fill(&mut id[8..])?;
            let id = RequestId(id);
            // A user erased with block_new has no key record and gets none:
            // the request still runs (and issues a receipt).
            // A damaged user likewise (no restriction can be written; the
            // erasure repairs it).
            let live = match self.live_record(&handle, true) {
                Err(Error::Blocked | Error::Corrupt(_)) => None,
                other => other?,
            };
            let before = live
                .as_ref()
                .map(|u| u.rec.state.policy().restriction)
                .unwrap_or_default();
            let rec = LedgerRecord {
                handle: handle.0,
                received_ms: now,
                due_ms: now.saturating_add(self.erasure_due_ms),
                grace_until_ms: now.saturating_add(grace_ms),
                delete_subject_conversations,
                added_restriction: Restriction {
                    block_appends: live.is_some() && !before.block_appends,
                    block_reads: live.is_some() && !before.block_reads,
                },
                state: LedgerState::Pending,
            };
            let mut batch = self.engine.batch();
            put_request(&mut batch, id, &rec)?;
            let op = (actor, AuditOp::ErasureRequested);
            match live {
                Some(user) => {
                    let mut policy = user.rec.state.policy();
                    policy.restriction = Restriction {
                        block_appends: true,
                        block_reads: true,
                    };
                    self.commit_policy(&handle, user, policy, batch, op, None)?;
                }
                None => {
                    self.put_audit_at(&mut batch, now, op.0, op.1, Some(handle), AuditOutcome::Ok)?;
                    self.engine.write(batch, true)?;
                }
            }
            self.ledger.lock().insert(handle, (id, rec));
            tracing::info!(%handle, request = %id, grace_ms, "erasure requested");
            Ok(ErasureRequested {
                request: self.request_view(id, &rec, now),
                existing: false,
            })
        })();
        self.audit_refusal(actor, AuditOp::ErasureRequested, handle, r)
    }

    fn cancel_erasure(&self, id: RequestId, actor: &str) -> Result<ErasureRequest> {
        let op = AuditOp::ErasureRequestCancelled;
        let open = self
            .ledger
            .lock()
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(h, _)| *h);
        let Some(handle) = open else {
            let r = match self.engine.get(Cf::Meta, &ledger_key(&id.0))? {
                Some(_) => Err(Error::RequestClosed),
                None => Err(Error::NoSuchRequest),
            };
            self.record_audit(actor, op, None, AuditOutcome::Refused)?;
            return r;
        };
        let r = (|| {
            self.engine.check_writable()?;
            let _guard = self.users.lock(&handle);
            let now = self.clock.now_ms();
            let Some((_, mut rec)) = self
                .ledger
                .lock()
                .get(&handle)
                .copied()
                .filter(|(i, _)| *i == id)
            else {
                return Err(Error::RequestClosed);
            };
            if now >= rec.grace_until_ms {
                return Err(Error::RequestClosed);
            }
            rec.state = LedgerState::Cancelled { at_ms: now };
            let mut batch = self.engine.batch();
            put_request(&mut batch, id, &rec)?;
            match self.live_record(&handle, false)? {
                Some(user) => {
                    let mut policy = user.rec.state.policy();
                    let added = rec.added_restriction;
                    policy.restriction.block_appends &= !added.block_appends;
                    policy.restriction.block_reads &= !added.block_reads;
                    self.commit_policy(&handle, user, policy, batch, (actor, op), None)?;
                }
                None => {
                    self.put_audit_at(&mut batch, now, actor, op, Some(handle), AuditOutcome::Ok)?;
                    self.engine.write(batch, true)?;
                }
            }
            self.ledger.lock().remove(&handle);
            tracing::info!(%handle, request = %id, "erasure request cancelled");
            Ok(self.request_view(id, &rec, now))
        })();
        self.audit_refusal(actor, op, handle, r)
    }

    fn erasure_requests(&self, state: Option<ErasureRequestState>) -> Result<Vec<ErasureRequest>> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        self.for_each_request(|id, rec| {
            let view = self.request_view(id, &rec, now);
            if state.is_none_or(|s| s == view.state) {
                out.push(view);
            }
        })?;
        Ok(out)
    }

    fn request_view(&self, id: RequestId, rec: &LedgerRecord, now: u64) -> ErasureRequest {
        let handle = Handle(rec.handle);
        let (state, state_since_ms, receipt) = match rec.state {
            LedgerState::Pending => (ErasureRequestState::Pending, rec.received_ms, None),
            LedgerState::WaitingForHold { since_ms } => {
                (ErasureRequestState::WaitingForHold, since_ms, None)
            }
            LedgerState::Done(r) => (
                ErasureRequestState::Done,
                r.erased_at_ms,
                Some(receipt_of(handle, &r)),
            ),
            LedgerState::Cancelled { at_ms } => (ErasureRequestState::Cancelled, at_ms, None),
        };
        ErasureRequest {
            id,
            handle,
            received_ms: rec.received_ms,
            due_ms: rec.due_ms,
            grace_until_ms: rec.grace_until_ms,
            delete_subject_conversations: rec.delete_subject_conversations,
            state,
            state_since_ms,
            receipt,
            overdue: rec.state.is_open() && now >= rec.due_ms,
        }
    }

    /// Open requests and those of them past their due date.
    pub(super) fn ledger_counts(&self, now: u64) -> (u64, u64) {
        let open = self.ledger.lock();
        let overdue = open.values().filter(|(_, r)| now >= r.due_ms).count();
        (open.len() as u64, overdue as u64)
    }

    /// In an erasure's batch (the user's lock held): marks the user's open
    /// request done with `receipt`. Returns the request's id, to drop from
    /// the open requests once the batch is written.
    /// A request that also deletes the subject conversations stays open
    /// through an erasure that does not (only a replay: any other erasure
    /// does what the open request asked, see `erase_locked`).
    pub(super) fn put_request_done(
        &self,
        batch: &mut super::engine::Batch<'_>,
        handle: &Handle,
        receipt: &ErasureReceipt,
        deletes_subject_conversations: bool,
    ) -> Result<Option<RequestId>> {
        let Some((id, mut rec)) = self.ledger.lock().get(handle).copied() else {
            return Ok(None);
        };
        if rec.delete_subject_conversations && !deletes_subject_conversations {
            return Ok(None);
        }
        rec.state = LedgerState::Done(LedgerReceipt {
            epoch: receipt.epoch,
            erased_at_ms: receipt.erased_at_ms,
            messages_erased: receipt.messages_erased,
            purged: receipt.purge_status == PurgeStatus::Purged,
            mac: receipt.mac,
        });
        put_request(batch, id, &rec)?;
        Ok(Some(id))
    }

    /// In a restriction's batch (the user's lock held): the user's open
    /// request stops counting `modes` as added by it, so a cancellation
    /// leaves them. Returns the changed request, to put in the open
    /// requests once the batch is written.
    pub(super) fn narrow_request(
        &self,
        batch: &mut super::engine::Batch<'_>,
        handle: &Handle,
        modes: Restriction,
    ) -> Result<Option<(RequestId, LedgerRecord)>> {
        if !modes.any() {
            return Ok(None);
        }
        let Some((id, mut rec)) = self.ledger.lock().get(handle).copied() else {
            return Ok(None);
        };
        let before = rec.added_restriction;
        rec.added_restriction.block_appends &= !modes.block_appends;
        rec.added_restriction.block_reads &= !modes.block_reads;
        if rec.added_restriction == before {
            return Ok(None);
        }
        put_request(batch, id, &rec)?;
        Ok(Some((id, rec)))
    }

    /// Whether the user's open request deletes its subject conversations.
    pub(super) fn request_deletes_subjects(&self, handle: &Handle) -> bool {
        self.ledger
            .lock()
            .get(handle)
            .is_some_and(|(_, r)| r.delete_subject_conversations)
    }

    /// After the erasure's batch is written.
    pub(super) fn request_done(&self, handle: &Handle, id: RequestId) {
        let mut open = self.ledger.lock();
        if open.get(handle).is_some_and(|(i, _)| *i == id) {
            open.remove(handle);
        }
        tracing::info!(%handle, request = %id, "erasure request done");
    }

    pub(super) fn run_erasure_requests(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let mut due: Vec<(Handle, RequestId)> = self
            .ledger
            .lock()
            .iter()
            .filter(|(_, (_, r))| r.grace_until_ms <= now)
            .map(|(h, (id, _))| (*h, *id))
            .collect();
        due.sort_by_key(|(_, id)| *id);
        // One request that cannot run (a storage error on its records) does
        // not hold up the others: each is tried, the first error returned.
        let mut ran = 0;
        let mut first_err = None;
        for (handle, id) in due {
            match self.run_request(&handle, id) {
                Ok(true) => ran += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%handle, request = %id, error = %e, "erasure request did not run");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(ran), Err)
    }

    /// Runs one due request; false if it is parked by a hold, or no longer
    /// open.
    fn run_request(&self, handle: &Handle, id: RequestId) -> Result<bool> {
        self.engine.check_writable()?;
        self.with_erase_locks(handle, |convs| {
            let Some((_, rec)) = self.ledger.lock().get(handle).copied().filter(|(i, _)| *i == id)
            else {
                return Ok(false);
            };
            let now = self.clock.now_ms();
            if self.held(handle, &rec, convs, now)? {
                if rec.state == LedgerState::Pending {
                    let mut parked = rec;
                    parked.state = LedgerState::WaitingForHold { since_ms: now };
                    let mut batch = self.engine.batch();
                    put_request(&mut batch, id, &parked)?;
                    self.put_audit_at(
                        &mut batch,
                        now,
                        LEDGER_ACTOR,
                        AuditOp::ErasureRequestWaitingForHold,
                        Some(*handle),
                        AuditOutcome::Ok,
                    )?;
                    self.engine.write(batch, true)?;
                    self.ledger.lock().insert(*handle, (id, parked));
                    tracing::info!(%handle, request = %id, "erasure request waiting for a legal hold");
                }
                return Ok(false);
            }
            let options = EraseOptions {
                delete_subject_conversations: rec.delete_subject_conversations,
                ..EraseOptions::default()
            };
            self.erase_locked(handle, options, LEDGER_ACTOR, convs)?;
            Ok(true)
        })
    }

    /// Whether a legal hold keeps the request from running: on the user,
    /// or on a subject conversation it deletes. A key record that does not
    /// decode holds nothing (erase repairs it).
    fn held(
        &self,
        handle: &Handle,
        rec: &LedgerRecord,
        convs: &[Handle],
        now: u64,
    ) -> Result<bool> {
        if let Ok(Some(k)) = self.key_record(handle)
            && k.state.policy().active_hold(now).is_some()
        {
            return Ok(true);
        }
        if rec.delete_subject_conversations {
            for conv in convs {
                if let super::conversations::ConvState::Live(c) = self.load_conv(conv)?
                    && c.policy.active_hold(now).is_some()
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn put_request(
    batch: &mut super::engine::Batch<'_>,
    id: RequestId,
    rec: &LedgerRecord,
) -> Result<()> {
    let mut encoded = Vec::new();
    rec.encode(&mut encoded);
    batch.put(Cf::Meta, &ledger_key(&id.0), &encoded)
}

fn receipt_of(handle: Handle, r: &LedgerReceipt) -> ErasureReceipt {
    ErasureReceipt {
        subject: ReceiptSubject::User,
        handle,
        epoch: r.epoch,
        erased_at_ms: r.erased_at_ms,
        messages_erased: r.messages_erased,
        purge_status: if r.purged {
            PurgeStatus::Purged
        } else {
            PurgeStatus::Pending
        },
        mac: r.mac,
    }
}

/// Starts the ledger's background runner.
pub(crate) fn spawn(inner: Arc<Inner>, every: Duration) -> Result<Worker> {
    let signal = Arc::clone(&inner.ledger_signal);
    Worker::spawn("shredstore-ledger", signal, move || run(&inner, every))
}

fn run(inner: &Inner, every: Duration) {
    let signal = &inner.ledger_signal;
    loop {
        if !inner.ledger.lock().is_empty() && !inner.engine.is_poisoned() {
            match inner.run_erasure_requests() {
                Ok(n) if n > 0 => tracing::info!(erasures = n, "erasure requests run"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "running erasure requests failed; retrying"),
            }
        }
        if signal.wait(every) {
            return;
        }
    }
}

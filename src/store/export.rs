//! Export (GDPR Art. 15 and 20): a user's readable messages, page by page,
//! then a manifest of what was exported and what else the store knows of
//! the user. An [`ExportCursor`] holds no RocksDB resource, so an export
//! whose client reads slowly (or not at all) pins no file and holds off no
//! purge.

use super::Inner;
use super::audit::outcome_of;
use super::consent::ConsentEntry;
use super::conv_read::AuthorView;
use super::conversation::ConversationItem;
use super::conversations::ConvState;
use super::engine::{Cf, Scope};
use super::read::{ITER_PAGE, Message};
use super::rights::{Access, RightsState};
use super::users::UserState;
use crate::codec::AuditOp;
use crate::codec::parse_author_key;
use crate::error::Result;
use crate::types::ConversationId;
use crate::types::{Handle, UserId};
use std::collections::HashMap;

/// What [`Store::export_as`](crate::Store::export_as) exported, and what
/// else the store knows of the user (but never the data of erased epochs,
/// which no longer exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportManifest {
    /// The user's handle.
    pub handle: Handle,
    /// Messages exported.
    pub message_count: u64,
    /// Seq of the first and last exported message.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// The live key epoch, if the user has a key.
    pub key_epoch: Option<u32>,
    /// When the live key was created, ms since the Unix epoch.
    pub key_created_ms: Option<u64>,
    /// When the user was erased before, oldest first (the dates, not the
    /// data): from the audit trail, plus the latest erasure's marker.
    pub erasures_ms: Vec<u64>,
    /// New appends are refused (erased with `block_new`).
    pub appends_blocked: bool,
    /// Redaction markers among the exported messages.
    pub redacted_count: u64,
    /// Restriction, retention and legal-hold state.
    pub rights: RightsState,
    /// Messages exported that the user wrote in conversations.
    pub conversation_message_count: u64,
    /// The consent history, oldest first.
    pub consents: Vec<ConsentEntry>,
}

/// A message the user wrote in a conversation, as an export carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthoredMessage {
    /// The conversation it is in.
    pub conversation: ConversationId,
    /// Its seq in the conversation.
    pub seq: u64,
    /// Append time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What the user wrote.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for AuthoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthoredMessage")
            .field("conversation", &self.conversation)
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// One record of an export ([`Store::export_as`](crate::Store::export_as)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportItem {
    /// A message of the user's own log (redaction markers included).
    Message(Message),
    /// A message the user wrote in a conversation (under their current key).
    Authored(AuthoredMessage),
}

/// An export in progress ([`Store::export_begin`](crate::Store::export_begin)):
/// where the next page starts and what was handed out so far.
#[derive(Debug, Clone)]
pub struct ExportCursor {
    user: UserId,
    access: Access,
    next_seq: u64,
    done: bool,
    message_count: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    redacted_count: u64,
    /// The author-index key after which the conversation phase resumes.
    authored_from: Option<Vec<u8>>,
    authored_done: bool,
    authored_count: u64,
}

impl ExportCursor {
    pub(super) fn new(user: &UserId, access: Access) -> Self {
        ExportCursor {
            user: user.clone(),
            access,
            next_seq: 0,
            done: false,
            message_count: 0,
            first_seq: None,
            last_seq: None,
            redacted_count: 0,
            authored_from: None,
            authored_done: false,
            authored_count: 0,
        }
    }

    /// Whether every message of the user's own log has been handed out
    /// ([`Store::export_page`](crate::Store::export_page)).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether, after the own log, every message the user wrote in
    /// conversations has been handed out
    /// ([`Store::export_authored_page`](crate::Store::export_authored_page)).
    pub fn is_authored_done(&self) -> bool {
        self.authored_done
    }
}

impl Inner {
    /// The next page of up to `limit` messages (empty once done).
    pub(super) fn export_page(
        &self,
        cursor: &mut ExportCursor,
        limit: usize,
    ) -> Result<Vec<Message>> {
        if cursor.done {
            return Ok(Vec::new());
        }
        let limit = limit.clamp(1, self.limits.max_read_limit.max(ITER_PAGE));
        let page: Vec<Message> = self
            .read_iter(&cursor.user, cursor.next_seq, cursor.access, limit)?
            .take(limit)
            .collect::<Result<_>>()?;
        if page.len() < limit {
            cursor.done = true;
        }
        for m in &page {
            cursor.first_seq.get_or_insert(m.seq);
            cursor.last_seq = Some(m.seq);
            cursor.message_count += 1;
            cursor.redacted_count += u64::from(m.redaction.is_some());
            match m.seq.checked_add(1) {
                Some(n) => cursor.next_seq = n,
                None => cursor.done = true,
            }
        }
        Ok(page)
    }

    /// The next page of the messages the user wrote in conversations (under
    /// their current key; what they wrote under an erased one is shredded),
    /// through the author index, after the own log. Empty once done.
    pub(super) fn export_authored_page(
        &self,
        cursor: &mut ExportCursor,
        limit: usize,
    ) -> Result<Vec<AuthoredMessage>> {
        if !cursor.done || cursor.authored_done {
            return Ok(Vec::new());
        }
        let limit = limit.clamp(1, self.limits.max_read_limit.max(ITER_PAGE));
        let handle = self.handle(&cursor.user);
        let epoch = match self.author_view(&handle)? {
            AuthorView::Live(s) => s.epoch,
            AuthorView::Gone(_) => {
                cursor.authored_done = true;
                return Ok(Vec::new());
            }
        };
        // One page of index entries, with a cursor dropped before reading
        // the slots.
        let mut entries: Vec<(Handle, u64)> = Vec::new();
        let mut scanned = 0usize;
        {
            let mut it = self.engine.cursor(Cf::Authors, Scope::Handle(&handle))?;
            match &cursor.authored_from {
                Some(k) => {
                    it.seek(k);
                    if it.key() == Some(k.as_slice()) {
                        it.next();
                    }
                }
                None => it.seek(handle.as_bytes()),
            }
            while scanned < limit {
                let Some((k, v)) = it.item() else {
                    break;
                };
                let (a, conv, seq) = parse_author_key(k)?;
                if a != handle {
                    break;
                }
                scanned += 1;
                if <[u8; 4]>::try_from(v).is_ok_and(|e| u32::from_be_bytes(e) == epoch) {
                    entries.push((conv, seq));
                }
                cursor.authored_from = Some(k.to_vec());
                it.next();
            }
            it.status()?;
        }
        if scanned < limit {
            cursor.authored_done = true;
        }
        let mut ids: HashMap<Handle, Option<ConversationId>> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for (conv, seq) in entries {
            let guard = self.convs.lock(&conv);
            let state = self.load_conv(&conv)?;
            drop(guard);
            // A deleted conversation: nothing of it is left to export.
            let ConvState::Live(c) = state else {
                continue;
            };
            let id = match ids.get(&conv) {
                Some(id) => id.clone(),
                None => {
                    let id = match self.conv_key_record(&conv)? {
                        Some(rec) => Some(self.open_conversation_id(&conv, &c, &rec)?),
                        None => None,
                    };
                    ids.insert(conv, id.clone());
                    id
                }
            };
            let Some(conversation) = id else {
                continue;
            };
            // As a read sees it: expired or redacted slots are not exported.
            if let Some(ConversationItem::Message(m)) =
                self.conv_page(&conv, &c, seq, 1, false)?.into_iter().next()
                && m.seq == seq
                && m.author == cursor.user
            {
                cursor.authored_count += 1;
                out.push(AuthoredMessage {
                    conversation,
                    seq,
                    timestamp_ms: m.timestamp_ms,
                    payload: m.payload,
                });
            }
        }
        Ok(out)
    }

    /// Ends an export: `result` is how the caller's page loop ended. Builds
    /// the manifest (the user's state read under its lock, at once) and
    /// writes the export's audit record, also for a refused or failed one.
    pub(super) fn export_end(
        &self,
        cursor: ExportCursor,
        actor: &str,
        result: Result<()>,
    ) -> Result<ExportManifest> {
        let handle = self.handle(&cursor.user);
        let manifest = result.and_then(|()| self.manifest(&handle, &cursor));
        self.record_audit(actor, AuditOp::Export, Some(handle), outcome_of(&manifest))?;
        manifest
    }

    fn manifest(&self, handle: &Handle, cursor: &ExportCursor) -> Result<ExportManifest> {
        let (record, marker, consents) = {
            let _guard = self.users.lock(handle);
            let record = self.key_record(handle)?;
            let marker = self.get_marker(handle)?;
            let consents = match self.load(handle)? {
                UserState::Live(state) => self.consents_of(handle, &state, cursor.access)?,
                UserState::Absent { .. } => Vec::new(),
            };
            (record, marker, consents)
        };
        let erasures_ms = match &marker {
            Some(m) => self.erasure_dates(handle, m.erased_at_ms)?,
            None => Vec::new(),
        };
        Ok(ExportManifest {
            handle: *handle,
            message_count: cursor.message_count,
            first_seq: cursor.first_seq,
            last_seq: cursor.last_seq,
            key_epoch: record.as_ref().map(|r| r.epoch),
            key_created_ms: record.as_ref().map(|r| r.created_ms),
            erasures_ms,
            appends_blocked: marker.is_some_and(|m| m.block_new),
            redacted_count: cursor.redacted_count,
            rights: self.rights_state(&record.map(|r| r.state.policy()).unwrap_or_default()),
            consents,
            conversation_message_count: cursor.authored_count,
        })
    }
}

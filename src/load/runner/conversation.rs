//! The requests of conversation mode: appends to a conversation and
//! backward reads of its newest items, in-process with `--embedded`.

use std::time::Instant;

use tonic::Status;

use super::{StreamRequest, Worker};
use crate::load::LoadError;
use crate::load::connect::{Target, code_name, embedded_conversation};
use crate::load::conversations::{BackReadCheck, ConversationPicker};
use crate::load::mix::Op;
use crate::load::payload::build_payload;
use crate::load::report::VERIFY_ERROR;
use crate::server::proto::conversation_item::Body;
use crate::server::proto::{ConversationAppendRequest, ConversationReadRequest};

impl Worker {
    /// Conversations.Append (or one request on its AppendStream with
    /// `--stream`) by author `a` of conversation `c`.
    pub(super) async fn conversation_append(
        &mut self,
        convs: &ConversationPicker,
        c: u64,
        a: u32,
        due: Instant,
    ) -> Result<(), LoadError> {
        let author = convs.author_id(c, a).into_bytes();
        let payload =
            build_payload(&author, self.plan.payload_size, &mut self.rng).ok_or_else(|| {
                LoadError::Config("--payload-size is smaller than the header".to_owned())
            })?;
        let req = ConversationAppendRequest {
            conversation_id: convs.conversation_id(c).into_bytes(),
            author_id: author,
            payload,
            client_message_id: String::new(),
        };
        if self.plan.stream {
            return self
                .stream_append(StreamRequest::Conversation(req), due)
                .await;
        }
        let since = self.since(due);
        let result = match &mut self.client {
            Target::Grpc(g) => g
                .conversations
                .append(req)
                .await
                .map(drop)
                .map_err(|s| code_name(s.code())),
            Target::Embedded(store) => {
                let (author, payload) = (req.author_id, req.payload);
                embedded_conversation(store, req.conversation_id, move |conv| {
                    conv.append(&crate::UserId::new(author)?, &payload)
                })
                .await
                .map(drop)
            }
        };
        match result {
            Ok(()) => self.rec.ok(Op::Append, since),
            Err(code) => self.rec.error(Op::Append, code),
        }
        Ok(())
    }

    /// A backward Conversations.Read of conversation `c` from the newest,
    /// every item checked ([`BackReadCheck`]).
    pub(super) async fn conversation_read(
        &mut self,
        convs: &ConversationPicker,
        c: u64,
        due: Instant,
    ) {
        let limit = self.plan.read_limit;
        let req = ConversationReadRequest {
            conversation_id: convs.conversation_id(c).into_bytes(),
            from_seq: 0,
            limit,
            backward: true,
        };
        let since = self.since(due);
        let mut check = BackReadCheck::new(convs, c, limit);
        let result: Result<(), &'static str> = match &mut self.client {
            Target::Grpc(g) => {
                async {
                    let mut stream = g.conversations.read(req).await?.into_inner();
                    while let Some(item) = stream.message().await? {
                        match &item.body {
                            Some(Body::Message(m)) => {
                                check.message(item.seq, &m.author_id, &m.payload)
                            }
                            Some(Body::Tombstone(_)) => check.tombstone(item.seq),
                            None => check.empty_slot(item.seq),
                        }
                    }
                    Ok(())
                }
                .await
            }
            .map_err(|s: Status| code_name(s.code())),
            Target::Embedded(store) => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                embedded_conversation(store, req.conversation_id, move |conv| {
                    conv.read_back(u64::MAX, limit)
                })
                .await
                .map(|items| {
                    for item in &items {
                        match item {
                            crate::ConversationItem::Message(m) => {
                                check.message(m.seq, m.author.as_bytes(), &m.payload);
                            }
                            crate::ConversationItem::Tombstone(t) => check.tombstone(t.seq),
                        }
                    }
                })
            }
        };
        self.rec.messages(check.good, check.bad);
        self.rec.tombstones(check.tombstones);
        match result {
            Ok(()) if check.passed() => self.rec.ok(Op::Read, since),
            Ok(()) => self.rec.error(Op::Read, VERIFY_ERROR),
            Err(code) => self.rec.error(Op::Read, code),
        }
    }
}

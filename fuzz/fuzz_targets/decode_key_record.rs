//! Arbitrary bytes as each postcard record (key record, erasure marker, audit
//! record, conversation key record, rotation record, root-key history, and
//! the sealed bodies of redaction
//! markers, consent records and conversation messages) and as an audit key:
//! decoding never panics, and whatever decodes re-encodes to exactly the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredstore::internals::WRAPPED_LEN;
use shredstore::internals::{
    AuditRecord, Consent, ConvKeyRecord, EraseMarker, KeyRecord, MAX_ACTOR_LEN, NONCE_LEN,
    RedactionBody, Restriction, RootKeyHistory, RotationRecord, TAG_LEN, audit_key,
    decode_message_body, encode_message_body, parse_audit_key,
};
use shredstore::{MAX_CONVERSATION_ID_LEN, MAX_REASON_LEN, MAX_USER_ID_LEN, Retention};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = KeyRecord::decode(data) {
        assert_eq!(record.wrapped_secret.len(), WRAPPED_LEN);
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(again, data, "key record did not re-encode to its bytes");
    }
    if let Ok(record) = KeyRecord::decode(data) {
        // Generation 1 is record version 1; later ones are version 2.
        assert_eq!(data[0] == 2, record.root_gen >= 2);
    }
    if let Ok(record) = RotationRecord::decode(data) {
        assert!(record.to_gen > record.from_gen);
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(
            again, data,
            "rotation record did not re-encode to its bytes"
        );
    }
    if let Ok(history) = RootKeyHistory::decode(data) {
        let mut again = Vec::new();
        history.encode(&mut again);
        assert_eq!(
            again, data,
            "root-key history did not re-encode to its bytes"
        );
    }
    if let Ok(marker) = EraseMarker::decode(data) {
        let mut again = Vec::new();
        marker.encode(&mut again);
        assert_eq!(again, data, "erasure marker did not re-encode to its bytes");
    }
    if let Ok(record) = AuditRecord::decode(data) {
        assert!(record.actor.len() <= MAX_ACTOR_LEN);
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(again, data, "audit record did not re-encode to its bytes");
    }
    if let Ok(record) = ConvKeyRecord::decode(data) {
        assert_eq!(record.wrapped_secret.len(), WRAPPED_LEN);
        assert_ne!(record.epoch, 0, "conversation key epochs start at 1");
        // Nonce, the id (1..=256 bytes), tag.
        let id_len = record.sealed_id.len().checked_sub(NONCE_LEN + TAG_LEN);
        assert!(
            id_len.is_some_and(|n| (1..=MAX_CONVERSATION_ID_LEN).contains(&n)),
            "sealed id of {} bytes",
            record.sealed_id.len()
        );
        assert!(
            record.subjects.is_sorted_by(|a, b| a < b),
            "subjects unsorted"
        );
        assert_eq!(record.policy.restriction, Restriction::default());
        assert_ne!(record.policy.retention, Retention::After { ms: 0 });
        assert!(
            record
                .policy
                .hold
                .as_ref()
                .is_none_or(|h| h.reason.len() <= MAX_REASON_LEN)
        );
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(
            again, data,
            "conversation key record did not re-encode to its bytes"
        );
    }
    if let Ok(body) = RedactionBody::from_bytes(data) {
        assert_eq!(body.to_bytes(), data, "redaction body did not re-encode");
    }
    if let Ok(consent) = Consent::from_bytes(data) {
        assert!(!consent.purpose.is_empty());
        assert_eq!(consent.to_bytes(), data, "consent did not re-encode");
    }
    // The opened body of a conversation message: author id, payload.
    if let Ok((author, payload)) = decode_message_body(data) {
        assert!((1..=MAX_USER_ID_LEN).contains(&author.len()));
        assert_eq!(data.len(), 2 + author.len() + payload.len());
        let mut again = Vec::new();
        encode_message_body(&mut again, author, payload);
        assert_eq!(again, data, "message body did not re-encode");
    }
    match parse_audit_key(data) {
        Ok((time_ms, counter)) => assert_eq!(audit_key(time_ms, counter), data),
        Err(_) => assert_ne!(data.len(), 16),
    }
});

//! Arbitrary bytes as each postcard record (key record, erasure marker, audit
//! record, and the sealed bodies of redaction markers and consent records)
//! and as an audit key: decoding never panics, and whatever decodes
//! re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredstore::internals::{
    AuditRecord, Consent, EraseMarker, KeyRecord, MAX_ACTOR_LEN, RedactionBody, audit_key,
    parse_audit_key,
};
use shredstore::internals::WRAPPED_LEN;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = KeyRecord::decode(data) {
        assert_eq!(record.wrapped_secret.len(), WRAPPED_LEN);
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(again, data, "key record did not re-encode to its bytes");
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
    if let Ok(body) = RedactionBody::from_bytes(data) {
        assert_eq!(body.to_bytes(), data, "redaction body did not re-encode");
    }
    if let Ok(consent) = Consent::from_bytes(data) {
        assert!(!consent.purpose.is_empty());
        assert_eq!(consent.to_bytes(), data, "consent did not re-encode");
    }
    match parse_audit_key(data) {
        Ok((time_ms, counter)) => assert_eq!(audit_key(time_ms, counter), data),
        Err(_) => assert_ne!(data.len(), 16),
    }
});

//! Arbitrary bytes as a message envelope, as a conversation record (sealed
//! message, redaction marker or stored tombstone), and as a message key and
//! an author-index key: decoding never panics, whatever decodes re-encodes
//! to exactly the same bytes, and no bytes are both an envelope and a
//! conversation record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredstore::internals::{
    AUTHOR_KEY_LEN, CONV_HEADER_LEN, CONV_TOMBSTONE_LEN, ConvHeader, ConvKind, ConvRecord,
    ENVELOPE_HEADER_LEN, ENVELOPE_MIN_LEN, Envelope, EnvelopeHeader, MESSAGE_KEY_LEN, StoredCause,
    TAG_LEN, author_key, handle_upper_bound, message_key, parse_author_key, parse_message_key,
};

fuzz_target!(|data: &[u8]| {
    // The header parser (what the compaction filter runs on raw values).
    let header = EnvelopeHeader::parse(data);
    if let Ok(h) = &header {
        assert!(data.len() >= ENVELOPE_HEADER_LEN);
        assert_eq!(h.epoch.to_be_bytes(), data[1..5]);
        assert_eq!(h.timestamp_ms.to_be_bytes(), data[5..13]);
        assert_eq!(h.nonce, data[13..25]);
    }

    let envelope = Envelope::decode(data);
    if let Ok(env) = &envelope {
        assert!(data.len() >= ENVELOPE_MIN_LEN);
        // A decodable envelope has a parsable header that agrees with it.
        let h = header.expect("decoded envelope with an unparsable header");
        assert_eq!(
            (h.epoch, h.timestamp_ms, h.nonce),
            (env.epoch, env.timestamp_ms, env.nonce)
        );
        assert_eq!(env.sealed.len(), data.len() - ENVELOPE_HEADER_LEN - 4);
        let mut again = Vec::new();
        env.encode(&mut again);
        assert_eq!(again, data, "envelope did not re-encode to its bytes");
    }

    conversation_record(data, envelope.is_ok());

    // The same bytes as a storage key.
    match parse_message_key(data) {
        Ok((handle, seq)) => {
            assert_eq!(data.len(), MESSAGE_KEY_LEN);
            assert_eq!(message_key(&handle, seq), data);
            // The handle's exclusive upper bound sorts after all its keys.
            if let Some(ub) = handle_upper_bound(&handle) {
                assert!(ub.as_slice() > data);
                assert!(ub.as_slice() > handle.as_bytes().as_slice());
            } else {
                assert_eq!(handle.as_bytes(), &[0xff; 16]);
            }
        }
        Err(_) => assert_ne!(data.len(), MESSAGE_KEY_LEN),
    }
    // As an author-index key (author, conversation, seq).
    match parse_author_key(data) {
        Ok((author, conv, seq)) => {
            assert_eq!(data.len(), AUTHOR_KEY_LEN);
            assert_eq!(author_key(&author, &conv, seq), data);
            assert_eq!(author.as_bytes(), &data[..16]);
            assert_eq!(conv.as_bytes(), &data[16..32]);
        }
        Err(_) => assert_ne!(data.len(), AUTHOR_KEY_LEN),
    }
});

/// The bytes as a conversation slot: header parser (what purge and the
/// file checks read without the CRC) and full decoder agree, and what
/// decodes re-encodes to the same bytes.
fn conversation_record(data: &[u8], is_envelope: bool) {
    let header = ConvHeader::parse(data);
    if let Ok(h) = &header {
        assert_eq!(ConvKind::from_byte(data[0]), Some(h.kind));
        assert_eq!(h.conv_epoch.to_be_bytes(), data[1..5]);
        assert_eq!(h.timestamp_ms.to_be_bytes(), data[5..13]);
        match h.kind {
            ConvKind::Message => {
                assert!(data.len() >= CONV_HEADER_LEN);
                let (author, epoch) = h.author.expect("a message header names its author");
                assert_eq!(author.as_bytes(), &data[13..29]);
                assert_eq!(epoch.to_be_bytes(), data[29..33]);
            }
            ConvKind::Redaction => {
                assert!(data.len() >= CONV_HEADER_LEN);
                assert_eq!(h.author, None);
            }
            ConvKind::Tombstone => {
                assert!(data.len() >= CONV_TOMBSTONE_LEN - 4);
                assert_eq!(h.author, None);
            }
        }
    } else if let Some(kind) = data.first().and_then(|b| ConvKind::from_byte(*b)) {
        // Only too short a header of a known kind fails to parse.
        let min = if kind == ConvKind::Tombstone {
            CONV_TOMBSTONE_LEN - 4
        } else {
            CONV_HEADER_LEN
        };
        assert!(data.len() < min, "unparsable {kind:?} header of {} bytes", data.len());
    }

    let Ok(record) = ConvRecord::decode(data) else {
        return;
    };
    // Kinds 4-6 continue the envelope kinds: never both.
    assert!(!is_envelope, "bytes decode as an envelope and a conversation record");
    let h = header.expect("decoded conversation record with an unparsable header");
    assert_eq!(record.timestamp_ms(), h.timestamp_ms);
    match &record {
        ConvRecord::Tombstone {
            conv_epoch,
            timestamp_ms,
            cause,
        } => {
            assert_eq!(data.len(), CONV_TOMBSTONE_LEN);
            assert_eq!(h.kind, ConvKind::Tombstone);
            assert_eq!((*conv_epoch, *timestamp_ms), (h.conv_epoch, h.timestamp_ms));
            assert_eq!(*cause as u8, data[13]);
            assert_eq!(*cause, StoredCause::AuthorErased);
        }
        ConvRecord::Sealed(s) => {
            assert_eq!(s.kind, h.kind);
            assert_ne!(s.kind, ConvKind::Tombstone);
            assert_eq!((s.conv_epoch, s.timestamp_ms), (h.conv_epoch, h.timestamp_ms));
            assert!(data.len() >= CONV_HEADER_LEN + TAG_LEN + 4);
            assert_eq!(s.sealed.len(), data.len() - CONV_HEADER_LEN - 4);
            assert_eq!(s.nonce, data[33..CONV_HEADER_LEN]);
            match s.kind {
                ConvKind::Message => {
                    assert_ne!(s.author_epoch, 0, "a message of author epoch 0");
                    assert_eq!(h.author, Some((s.author, s.author_epoch)));
                }
                // A redaction marker names no author.
                _ => {
                    assert_eq!(s.author.as_bytes(), &[0; 16]);
                    assert_eq!(s.author_epoch, 0);
                }
            }
        }
    }
    let mut again = Vec::new();
    record.encode(&mut again);
    assert_eq!(again, data, "conversation record did not re-encode to its bytes");
}

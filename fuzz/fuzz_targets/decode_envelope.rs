//! Arbitrary bytes as a message envelope (and as a message key): decoding never
//! panics, and whatever decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shredstore::internals::{
    ENVELOPE_HEADER_LEN, ENVELOPE_MIN_LEN, Envelope, EnvelopeHeader, MESSAGE_KEY_LEN,
    handle_upper_bound, message_key, parse_message_key,
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

    if let Ok(env) = Envelope::decode(data) {
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
});

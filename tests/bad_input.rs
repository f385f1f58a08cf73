//! Invalid arguments are rejected with typed errors before anything is
//! written; on both engines.

mod common;

use common::engines::{Fixture, on_both_engines};
use common::user;
use shredstore::{Error, InvalidArgument, MAX_USER_ID_LEN, Store, UserId};

on_both_engines!(
    bad_arguments_write_nothing,
    error_messages_carry_no_user_data,
    bad_options_are_rejected,
);

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> InvalidArgument {
    match r {
        Err(Error::InvalidArgument(e)) => e,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn user_id_validation() {
    assert_eq!(
        invalid(UserId::new(Vec::new())),
        InvalidArgument::EmptyUserId
    );
    assert_eq!(
        invalid(UserId::new(vec![b'x'; MAX_USER_ID_LEN + 1])),
        InvalidArgument::UserIdTooLong {
            len: MAX_USER_ID_LEN + 1,
            max: MAX_USER_ID_LEN
        }
    );
    assert!(UserId::new(vec![b'x'; MAX_USER_ID_LEN]).is_ok());
    assert!(
        UserId::new(vec![0xff, 0xfe]).is_ok(),
        "non-UTF-8 ids are opaque bytes"
    );
    // Debug output never shows the id.
    let dbg = format!("{:?}", UserId::new("secret-person").unwrap());
    assert!(!dbg.contains("secret"), "{dbg}");
}

fn bad_arguments_write_nothing(f: &Fixture) {
    let store = Store::open(
        f.options()
            .max_payload(100)
            .max_batch(4)
            .max_batch_bytes(250)
            .max_read_limit(50),
    )
    .unwrap();
    let a = user("bad-input");
    let seq_before = store.stats().unwrap().rocksdb_sequence;

    assert_eq!(
        invalid(store.append(&a, &[0u8; 101])),
        InvalidArgument::PayloadTooLarge { len: 101, max: 100 }
    );
    let empty: [&[u8]; 0] = [];
    assert_eq!(
        invalid(store.append_batch(&a, &empty)),
        InvalidArgument::EmptyBatch
    );
    assert_eq!(
        invalid(store.append_batch(&a, &[b"x"; 5])),
        InvalidArgument::BatchTooLarge { len: 5, max: 4 }
    );
    assert_eq!(
        invalid(store.append_batch(&a, &[[0u8; 100]; 3])),
        InvalidArgument::BatchBytesTooLarge { len: 300, max: 250 }
    );
    assert_eq!(invalid(store.read(&a, 0, 0)), InvalidArgument::ZeroLimit);
    assert_eq!(
        invalid(store.read(&a, 0, 51)),
        InvalidArgument::LimitTooLarge { limit: 51, max: 50 }
    );

    let stats = store.stats().unwrap();
    assert_eq!(stats.rocksdb_sequence, seq_before, "something was written");
    assert_eq!(stats.users, 0);
    assert!(store.read(&a, 0, 50).unwrap().is_empty());
    // Limits are inclusive.
    store.append(&a, &[0u8; 100]).unwrap();
    store.append_batch(&a, &[[1u8; 62]; 4]).unwrap();
    assert_eq!(store.read(&a, 0, 50).unwrap().len(), 5);
}

fn error_messages_carry_no_user_data(f: &Fixture) {
    let store = f.open();
    let a = user("pii-person@example.com");
    let err = store
        .append(&a, &vec![b'P'; 70_000])
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("pii-person") && !err.contains("PPPP"),
        "{err}"
    );
}

fn bad_options_are_rejected(f: &Fixture) {
    let mk = || f.options();
    for opts in [
        mk().max_payload(0),
        mk().max_batch(0),
        mk().max_read_limit(0),
        mk().key_cache_entries(0),
        mk().purge_interval(Some(std::time::Duration::ZERO)),
    ] {
        assert!(
            matches!(invalid(Store::open(opts)), InvalidArgument::Option(_)),
            "accepted a bad option"
        );
    }
}

//! The bad input catalogue, library side (issue 5): one table of malformed or
//! borderline calls, each with the typed outcome it must have. After every
//! case the store must not have written anything unless the case says it
//! legitimately writes (checked with RocksDB's sequence number, which every
//! write bumps); error messages never echo the bad value; and at the end every
//! user involved reads back exactly what the successful cases stored.

mod common;

use std::path::Path;
use std::time::Duration;

use shredstore::{
    EraseOptions, Error, InvalidArgument, MAX_CLIENT_MESSAGE_ID_LEN, MAX_USER_ID_LEN, Options,
    RootKey, Store, UserId,
};

/// Every bad value (and every user id) carries this marker, so a message that
/// echoes one is caught.
const CANARY: &str = "CANARY-7f3a";

/// Limits of the catalogue's store: small, so boundary cases stay cheap.
const MAX_PAYLOAD: usize = 1000;
const MAX_BATCH: usize = 4;
const MAX_BATCH_BYTES: usize = 2500;
const MAX_READ_LIMIT: usize = 50;

fn uid(name: &str) -> UserId {
    UserId::new(format!("{CANARY}-{name}")).unwrap()
}

/// `len` bytes made of the canary, repeated.
fn canary_bytes(len: usize) -> Vec<u8> {
    CANARY.bytes().cycle().take(len).collect()
}

struct Fixture {
    store: Store,
    dir: tempfile::TempDir,
    /// Has `a1` at seq 1, appended with client message id `cid-1`.
    alice: UserId,
    /// Erased with `block_new` (it had one message).
    blocked: UserId,
    /// Receives the boundary appends that succeed.
    bob: UserId,
    /// Never written.
    nobody: UserId,
}

/// What a case returned: a summary of a success (compared with the table), or
/// the error.
type Outcome = Result<String, Error>;

enum Expect {
    /// Success, with this summary.
    Ok(&'static str),
    /// An error matching the pattern (its text is for failure messages).
    Err(&'static str, fn(&Error) -> bool),
}

macro_rules! err {
    ($pat:pat) => {
        Expect::Err(stringify!($pat), |e| matches!(e, $pat))
    };
}

struct Case {
    name: &'static str,
    run: Box<dyn Fn(&Fixture) -> Outcome>,
    expect: Expect,
    /// The case legitimately writes (a successful append or erase), so the
    /// sequence number may move.
    writes: bool,
}

fn case(
    name: &'static str,
    expect: Expect,
    writes: bool,
    run: impl Fn(&Fixture) -> Outcome + 'static,
) -> Case {
    Case {
        name,
        run: Box::new(run),
        expect,
        writes,
    }
}

fn seqs(r: shredstore::Result<Vec<shredstore::Appended>>) -> Outcome {
    r.map(|v| {
        let s: Vec<String> = v.iter().map(|a| a.seq.to_string()).collect();
        format!("seqs {}", s.join(","))
    })
}

fn seq(r: shredstore::Result<shredstore::Appended>) -> Outcome {
    r.map(|a| format!("seq {}", a.seq))
}

fn idem(r: shredstore::Result<shredstore::IdempotentAppend>) -> Outcome {
    r.map(|a| format!("seq {} duplicate {}", a.appended.seq, a.duplicate))
}

/// A read as "n messages: seq:len, ...".
fn read(r: shredstore::Result<Vec<shredstore::Message>>) -> Outcome {
    r.map(|v| {
        let s: Vec<String> = v
            .iter()
            .map(|m| format!("{}:{}", m.seq, m.payload.len()))
            .collect();
        format!("{} messages [{}]", v.len(), s.join(" "))
    })
}

fn options(dir: &Path) -> Options {
    common::options(dir)
        .max_payload(MAX_PAYLOAD)
        .max_batch(MAX_BATCH)
        .max_batch_bytes(MAX_BATCH_BYTES)
        .max_read_limit(MAX_READ_LIMIT)
}

/// Opens a store with `bad` applied to otherwise valid options in a fresh
/// subdirectory; the directory must not even be created.
fn open_with(f: &Fixture, sub: &str, bad: fn(Options) -> Options) -> Outcome {
    let dir = f.dir.path().join(sub);
    let r = Store::open(bad(options(&dir)));
    assert!(
        !dir.exists(),
        "{sub}: a rejected open created its directory"
    );
    r.map(|_| "opened".into())
}

fn cases() -> Vec<Case> {
    use Error as E;
    use InvalidArgument as IA;
    vec![
        // --- user ids ---
        case(
            "user id empty",
            err!(E::InvalidArgument(IA::EmptyUserId)),
            false,
            |_| UserId::new(Vec::new()).map(|_| "valid".into()),
        ),
        case(
            "user id of 257 bytes",
            err!(E::InvalidArgument(IA::UserIdTooLong { len: 257, max: 256 })),
            false,
            |_| UserId::new(canary_bytes(MAX_USER_ID_LEN + 1)).map(|_| "valid".into()),
        ),
        case(
            "user id of 1 MiB",
            err!(E::InvalidArgument(IA::UserIdTooLong {
                len: 1_048_576,
                max: 256
            })),
            false,
            |_| UserId::new(canary_bytes(1 << 20)).map(|_| "valid".into()),
        ),
        case(
            "user id of exactly 256 bytes",
            Expect::Ok("valid"),
            false,
            |_| UserId::new(canary_bytes(MAX_USER_ID_LEN)).map(|_| "valid".into()),
        ),
        case(
            "non-UTF-8 user id appends (ids are bytes)",
            Expect::Ok("seq 1"),
            true,
            |f| {
                seq(f
                    .store
                    .append(&UserId::new(vec![0xff, 0x00, 0xfe])?, b"bin"))
            },
        ),
        case(
            "non-UTF-8 user id reads back",
            Expect::Ok("1 messages [1:3]"),
            false,
            |f| read(f.store.read(&UserId::new(vec![0xff, 0x00, 0xfe])?, 0, 10)),
        ),
        case(
            "non-UTF-8 ids equal after lossy decoding are distinct users",
            Expect::Ok("0 messages []"),
            false,
            // Both decode lossily to "\u{fffd}\0\u{fffd}".
            |f| read(f.store.read(&UserId::new(vec![0xfe, 0x00, 0xff])?, 0, 10)),
        ),
        // --- payloads ---
        case("empty payload (allowed)", Expect::Ok("seq 1"), true, |f| {
            seq(f.store.append(&f.bob, b""))
        }),
        case("payload of exactly max", Expect::Ok("seq 2"), true, |f| {
            seq(f.store.append(&f.bob, &canary_bytes(MAX_PAYLOAD)))
        }),
        case(
            "payload of max + 1",
            err!(E::InvalidArgument(IA::PayloadTooLarge {
                len: 1001,
                max: 1000
            })),
            false,
            |f| seq(f.store.append(&f.bob, &canary_bytes(MAX_PAYLOAD + 1))),
        ),
        case(
            "payload of 1 MiB",
            err!(E::InvalidArgument(IA::PayloadTooLarge {
                len: 1_048_576,
                max: 1000
            })),
            false,
            |f| seq(f.store.append(&f.bob, &canary_bytes(1 << 20))),
        ),
        case(
            "oversize payload for a new user creates no user",
            err!(E::InvalidArgument(IA::PayloadTooLarge { .. })),
            false,
            |f| {
                seq(f
                    .store
                    .append(&uid("never-created"), &canary_bytes(MAX_PAYLOAD + 1)))
            },
        ),
        // --- batches ---
        case(
            "empty batch",
            err!(E::InvalidArgument(IA::EmptyBatch)),
            false,
            |f| {
                let empty: [&[u8]; 0] = [];
                seqs(f.store.append_batch(&f.bob, &empty))
            },
        ),
        case(
            "batch of max + 1 payloads",
            err!(E::InvalidArgument(IA::BatchTooLarge { len: 5, max: 4 })),
            false,
            |f| seqs(f.store.append_batch(&f.bob, &[b"x"; MAX_BATCH + 1])),
        ),
        case(
            "batch over max bytes",
            err!(E::InvalidArgument(IA::BatchBytesTooLarge {
                len: 3000,
                max: 2500
            })),
            false,
            |f| {
                seqs(f.store.append_batch(
                    &f.bob,
                    &[canary_bytes(1000), canary_bytes(1000), canary_bytes(1000)],
                ))
            },
        ),
        case(
            "batch with one oversize payload among good ones (atomic: none stored)",
            err!(E::InvalidArgument(IA::PayloadTooLarge {
                len: 1001,
                max: 1000
            })),
            false,
            |f| {
                seqs(f.store.append_batch(
                    &f.bob,
                    &[canary_bytes(5), canary_bytes(1001), canary_bytes(5)],
                ))
            },
        ),
        case(
            "batch of exactly max payloads and max bytes",
            Expect::Ok("seqs 3,4,5,6"),
            true,
            |f| {
                seqs(
                    f.store
                        .append_batch(&f.bob, &vec![canary_bytes(625); MAX_BATCH]),
                )
            },
        ),
        // --- reads ---
        case(
            "read limit 0",
            err!(E::InvalidArgument(IA::ZeroLimit)),
            false,
            |f| read(f.store.read(&f.alice, 0, 0)),
        ),
        case(
            "read limit max + 1",
            err!(E::InvalidArgument(IA::LimitTooLarge { limit: 51, max: 50 })),
            false,
            |f| read(f.store.read(&f.alice, 0, MAX_READ_LIMIT + 1)),
        ),
        case(
            "read limit usize::MAX",
            err!(E::InvalidArgument(IA::LimitTooLarge {
                limit: usize::MAX,
                max: 50
            })),
            false,
            |f| read(f.store.read(&f.alice, 0, usize::MAX)),
        ),
        case(
            "read limit exactly max",
            Expect::Ok("1 messages [1:2]"),
            false,
            |f| read(f.store.read(&f.alice, 0, MAX_READ_LIMIT)),
        ),
        case(
            "read from_seq 0 (before the first seq)",
            Expect::Ok("1 messages [1:2]"),
            false,
            |f| read(f.store.read(&f.alice, 0, 10)),
        ),
        case(
            "read from_seq just beyond the end",
            Expect::Ok("0 messages []"),
            false,
            |f| read(f.store.read(&f.alice, 2, 10)),
        ),
        case(
            "read from_seq u64::MAX",
            Expect::Ok("0 messages []"),
            false,
            |f| read(f.store.read(&f.alice, u64::MAX, 10)),
        ),
        case(
            "read_iter from_seq u64::MAX",
            Expect::Ok("0 messages []"),
            false,
            |f| read(f.store.read_iter(&f.alice, u64::MAX)?.collect()),
        ),
        case(
            "read of a user never written",
            Expect::Ok("0 messages []"),
            false,
            |f| read(f.store.read(&f.nobody, 0, 10)),
        ),
        case(
            "read of an erased user",
            Expect::Ok("0 messages []"),
            false,
            |f| read(f.store.read(&f.blocked, 0, 10)),
        ),
        // --- client message ids ---
        case(
            "client_message_id empty",
            err!(E::InvalidArgument(IA::EmptyClientMessageId)),
            false,
            |f| idem(f.store.append_idempotent(&f.alice, b"", b"x")),
        ),
        case(
            "client_message_id of 129 bytes",
            err!(E::InvalidArgument(IA::ClientMessageIdTooLong {
                len: 129,
                max: 128
            })),
            false,
            |f| {
                idem(f.store.append_idempotent(
                    &f.alice,
                    &canary_bytes(MAX_CLIENT_MESSAGE_ID_LEN + 1),
                    b"x",
                ))
            },
        ),
        case(
            "client_message_id of 129 bytes with an oversize payload (id checked first)",
            err!(E::InvalidArgument(IA::ClientMessageIdTooLong { .. })),
            false,
            |f| {
                idem(f.store.append_idempotent(
                    &f.alice,
                    &canary_bytes(MAX_CLIENT_MESSAGE_ID_LEN + 1),
                    &canary_bytes(MAX_PAYLOAD + 1),
                ))
            },
        ),
        case(
            "duplicate client_message_id, different payload",
            err!(E::IdempotencyConflict),
            false,
            |f| {
                idem(
                    f.store
                        .append_idempotent(&f.alice, b"cid-1", CANARY.as_bytes()),
                )
            },
        ),
        case(
            "duplicate client_message_id, same payload (the earlier seq, nothing stored)",
            Expect::Ok("seq 1 duplicate true"),
            false,
            |f| idem(f.store.append_idempotent(&f.alice, b"cid-1", b"a1")),
        ),
        case(
            "duplicate client_message_id with an oversize payload (size checked first)",
            err!(E::InvalidArgument(IA::PayloadTooLarge { .. })),
            false,
            |f| {
                idem(
                    f.store
                        .append_idempotent(&f.alice, b"cid-1", &canary_bytes(MAX_PAYLOAD + 1)),
                )
            },
        ),
        case(
            "client_message_id of exactly 128 bytes",
            Expect::Ok("seq 7 duplicate false"),
            true,
            |f| {
                idem(f.store.append_idempotent(
                    &f.bob,
                    &canary_bytes(MAX_CLIENT_MESSAGE_ID_LEN),
                    b"b7",
                ))
            },
        ),
        case(
            "another user's client_message_id is not a duplicate",
            Expect::Ok("seq 8 duplicate false"),
            true,
            |f| idem(f.store.append_idempotent(&f.bob, b"cid-1", b"b8")),
        ),
        // --- blocked and unknown users ---
        case(
            "append for a user erased with block_new",
            err!(E::Blocked),
            false,
            |f| seq(f.store.append(&f.blocked, b"x")),
        ),
        case(
            "append_batch for a blocked user",
            err!(E::Blocked),
            false,
            |f| seqs(f.store.append_batch(&f.blocked, &[b"x", b"y"])),
        ),
        case(
            "append_idempotent for a blocked user",
            err!(E::Blocked),
            false,
            |f| idem(f.store.append_idempotent(&f.blocked, b"cid-b", b"x")),
        ),
        case(
            "erase without block_new does not lift a block",
            Expect::Ok("erased 0 messages, then Blocked"),
            true, // rewrites the erasure marker
            |f| {
                let e = f.store.erase(&f.blocked)?;
                match f.store.append(&f.blocked, b"x") {
                    Err(Error::Blocked) => Ok(format!(
                        "erased {} messages, then Blocked",
                        e.messages_erased
                    )),
                    other => Ok(format!("erased, then {other:?}")),
                }
            },
        ),
        case(
            "erase of a user never written (Ok, no messages, no user)",
            Expect::Ok("messages_erased 0 epoch 0 users 3"),
            true, // writes an erasure marker (so a later block_new would stick)
            |f| {
                let e = f.store.erase(&f.nobody)?;
                let users = f.store.stats()?.users;
                Ok(format!(
                    "messages_erased {} epoch {} users {users}",
                    e.messages_erased, e.epoch
                ))
            },
        ),
        // --- options and root keys ---
        case(
            "option max_payload 0",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o1", |o| o.max_payload(0)),
        ),
        case(
            "option max_payload over 64 MiB",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o2", |o| o.max_payload(64 * 1024 * 1024 + 1)),
        ),
        case(
            "option max_batch 0",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o3", |o| o.max_batch(0)),
        ),
        case(
            "option max_batch_bytes 0",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o4", |o| o.max_batch_bytes(0)),
        ),
        case(
            "option max_read_limit 0",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o5", |o| o.max_read_limit(0)),
        ),
        case(
            "option key_cache_entries 0",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o6", |o| o.key_cache_entries(0)),
        ),
        case(
            "option write_buffer_bytes under 1 MiB",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o7", |o| o.write_buffer_bytes(1024 * 1024 - 1)),
        ),
        case(
            "option block_cache_bytes under 1 MiB",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o8", |o| o.block_cache_bytes(0)),
        ),
        case(
            "option purge_interval zero",
            err!(E::InvalidArgument(IA::Option(_))),
            false,
            |f| open_with(f, "o9", |o| o.purge_interval(Some(Duration::ZERO))),
        ),
        case(
            "root key of 31 bytes",
            err!(E::InvalidRootKey(_)),
            false,
            |_| RootKey::from_slice(&[7u8; 31]).map(|_| "valid".into()),
        ),
        case(
            "root key hex with a non-hex character",
            err!(E::InvalidRootKey(_)),
            false,
            |_| RootKey::from_hex(&"zz".repeat(32)).map(|_| "valid".into()),
        ),
        case(
            "wrong root key at reopen (and the store is untouched)",
            err!(E::WrongRootKey),
            false,
            |f| {
                let dir = f.dir.path().join("reopen");
                let key = |b| RootKey::from_bytes([b; 32]);
                let u = uid("reopen");
                let s = Store::open(Options::new(&dir, key(1)).purge_interval(None))?;
                s.append(&u, b"kept")?;
                s.close()?;
                let r = Store::open(Options::new(&dir, key(2)).purge_interval(None));
                let s = Store::open(Options::new(&dir, key(1)).purge_interval(None))?;
                let back = s.read(&u, 0, 10)?;
                assert_eq!(back.len(), 1, "wrong-key open changed the store");
                assert_eq!(back[0].payload, b"kept");
                s.close()?;
                r.map(|_| "opened".into())
            },
        ),
    ]
}

#[test]
fn bad_input_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(options(&dir.path().join("main"))).unwrap();
    let f = Fixture {
        alice: uid("alice"),
        blocked: uid("blocked"),
        bob: uid("bob"),
        nobody: uid("nobody"),
        store,
        dir,
    };
    let sequence = |f: &Fixture| f.store.stats().unwrap().rocksdb_sequence;

    // The instrument first: a successful append moves the sequence number, a
    // rejected one does not.
    let s0 = sequence(&f);
    let r = f
        .store
        .append_idempotent(&f.alice, b"cid-1", b"a1")
        .unwrap();
    assert_eq!((r.appended.seq, r.duplicate), (1, false));
    let s1 = sequence(&f);
    assert!(s1 > s0, "a successful append did not move the sequence");
    f.store.append(&f.alice, &[0; MAX_PAYLOAD + 1]).unwrap_err();
    assert_eq!(sequence(&f), s1, "a rejected append moved the sequence");
    f.store.append(&f.blocked, b"b1").unwrap();
    f.store
        .erase_with(&f.blocked, EraseOptions::block_new())
        .unwrap();

    let cases = cases();
    for c in &cases {
        let before = sequence(&f);
        let users_before = f.store.stats().unwrap().users;
        let outcome = (c.run)(&f);
        match (&c.expect, &outcome) {
            (Expect::Ok(want), Ok(got)) => assert_eq!(got, want, "case {:?}", c.name),
            (Expect::Err(_, matches), Err(e)) if matches(e) => {
                let text = format!("{e} / {e:?}");
                assert!(
                    !text.contains(CANARY),
                    "case {:?}: the error echoes the input: {text}",
                    c.name
                );
            }
            (Expect::Ok(want), Err(e)) => {
                panic!("case {:?}: expected Ok({want:?}), got Err({e:?})", c.name)
            }
            (Expect::Err(want, _), other) => {
                panic!("case {:?}: expected Err({want}), got {other:?}", c.name)
            }
        }
        if !c.writes {
            assert_eq!(sequence(&f), before, "case {:?} wrote something", c.name);
            assert_eq!(
                f.store.stats().unwrap().users,
                users_before,
                "case {:?} changed the user count",
                c.name
            );
        }
    }

    // Every user involved holds exactly what the successful cases stored.
    let contents = |u: &UserId| -> Vec<(u64, Vec<u8>)> {
        let v = f.store.read(u, 0, MAX_READ_LIMIT).unwrap();
        v.into_iter().map(|m| (m.seq, m.payload)).collect()
    };
    assert_eq!(contents(&f.alice), vec![(1, b"a1".to_vec())], "alice");
    let mut bob = vec![(1, Vec::new()), (2, canary_bytes(MAX_PAYLOAD))];
    bob.extend((3..=6).map(|s| (s, canary_bytes(625))));
    bob.push((7, b"b7".to_vec()));
    bob.push((8, b"b8".to_vec()));
    assert_eq!(contents(&f.bob), bob, "bob");
    assert!(contents(&f.blocked).is_empty(), "blocked");
    assert!(contents(&f.nobody).is_empty(), "nobody");
    assert!(contents(&uid("never-created")).is_empty(), "never-created");
    let bin = UserId::new(vec![0xff, 0x00, 0xfe]).unwrap();
    assert_eq!(contents(&bin), vec![(1, b"bin".to_vec())], "non-UTF-8 user");
    let stats = f.store.stats().unwrap();
    assert_eq!(stats.users, 3, "alice, bob and the non-UTF-8 user");
    // The idempotency index survived the rejected retries.
    let again = f
        .store
        .append_idempotent(&f.alice, b"cid-1", b"a1")
        .unwrap();
    assert_eq!((again.appended.seq, again.duplicate), (1, true));
    f.store.close().unwrap();
}

#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run once after changing an input layout: `python3 fuzz/seeds/generate.py`.
Deterministic (fixed bytes, no randomness), standard library only. The layouts
mirror src/codec/mod.rs and docs/format.md (envelopes, postcard records),
proto/shredstore/v1/store.proto (requests), and the input formats documented
at the top of each fuzz target.
"""

import os
import shutil
import struct
import zlib

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def crc(b):
    return struct.pack(">I", zlib.crc32(b) & 0xFFFFFFFF)


def pattern(n, seed):
    return bytes((seed + 37 * i) & 0xFF for i in range(n))


# --- envelopes and keys (decode_envelope) -----------------------------------


def envelope(epoch, ts, nonce, sealed):
    body = bytes([1]) + struct.pack(">IQ", epoch, ts) + nonce + sealed
    return body + crc(body)


def message_key(handle, seq):
    return handle + struct.pack(">Q", seq)


# --- conversation records (decode_envelope) -------------------------------------


def conv_sealed(kind, conv_epoch, ts, author, author_epoch, nonce, sealed):
    body = bytes([kind]) + struct.pack(">IQ", conv_epoch, ts) + author
    body += struct.pack(">I", author_epoch) + nonce + sealed
    return body + crc(body)


def conv_message(conv_epoch, ts, author, author_epoch, nonce, sealed):
    return conv_sealed(4, conv_epoch, ts, author, author_epoch, nonce, sealed)


def conv_redaction(conv_epoch, ts, nonce, sealed):
    return conv_sealed(5, conv_epoch, ts, bytes(16), 0, nonce, sealed)


def conv_tombstone(conv_epoch, ts, cause=1):
    body = bytes([6]) + struct.pack(">IQ", conv_epoch, ts) + bytes([cause])
    return body + crc(body)


def author_key(author, conv, seq):
    return author + conv + struct.pack(">Q", seq)


# --- postcard records (decode_key_record) ------------------------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record(body):
    framed = bytes([1]) + body
    return framed + crc(framed)


def key_record(epoch, wrapped, created_ms, first_seq, state=0):
    return record(
        varint(epoch) + varint(len(wrapped)) + wrapped + varint(created_ms)
        + varint(first_seq) + varint(state)
    )


def message_body(author, payload):
    return struct.pack(">H", len(author)) + author + payload


def policy(retention=0, retention_ms=None, expired_before_ms=0, hold=None, purge_pending=False):
    """A UserPolicy: restriction (two bools), retention (variant, `After`'s
    ms), expiry floor, hold (reason, since, until), purge_pending."""
    out = bytes([0, 0]) + varint(retention)
    if retention_ms is not None:
        out += varint(retention_ms)
    out += varint(expired_before_ms)
    if hold is None:
        out += b"\x00"
    else:
        reason, since, until = hold
        out += b"\x01" + varint(len(reason)) + reason + varint(since)
        out += b"\x00" if until is None else b"\x01" + varint(until)
    return out + bytes([int(purge_pending)])


def conv_key_record(epoch, wrapped, sealed_id, created_ms, first_seq, pol, subjects):
    return record(
        varint(epoch) + varint(len(wrapped)) + wrapped + varint(len(sealed_id)) + sealed_id
        + varint(created_ms) + varint(first_seq) + pol
        + varint(len(subjects)) + b"".join(subjects)
    )


def erase_marker(epoch, erased_at_ms, next_seq, block_new, purged):
    return record(
        varint(epoch) + varint(erased_at_ms) + varint(next_seq)
        + bytes([int(block_new), int(purged)])
    )


AUDIT_OPS = ["Erase", "Purge", "Stats", "Audit", "VerifyReceipt", "Export"]
AUDIT_OUTCOMES = ["Ok", "Refused", "Failed"]


def audit_record(time_ms, actor, op, handle, outcome):
    h = b"\x00" if handle is None else b"\x01" + handle
    return record(
        varint(time_ms) + varint(len(actor)) + actor + varint(AUDIT_OPS.index(op))
        + h + varint(AUDIT_OUTCOMES.index(outcome))
    )


# --- protobuf (grpc_requests) -------------------------------------------------


def pb_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_varint(field, n):
    return varint(field << 3) + varint(n)


def grpc(max_payload, max_read_limit, message):
    return struct.pack(">HH", max_payload, max_read_limit) + message


# --- open_record ----------------------------------------------------------------


def tamper(handle, seq, epoch, ts, nonce, flags, other_handle, other_seq, edits, payload):
    out = bytes([0]) + handle + struct.pack(">QIQ", seq, epoch, ts) + nonce
    out += bytes([flags]) + other_handle + struct.pack(">Q", other_seq)
    out += bytes([len(edits)])
    for kind, pos, val in edits:
        out += bytes([kind]) + struct.pack(">H", pos) + bytes([val])
    return out + payload


def raw(handle, seq, env):
    return bytes([1]) + handle + struct.pack(">Q", seq) + env


# --- store_model (arbitrary's encoding: integers little-endian, enum variant
# from a u32 as (x * variants) >> 32, fields in declaration order) -------------

OPS = [
    "Append", "AppendIdempotent", "AppendBatch", "Read", "ReadIter", "Erase",
    "Purge", "Flush", "Compact", "Reopen", "ReopenWrongKey", "Tick",
    "FailNextRandom", "Restrict", "Unrestrict", "Redact", "SetRetention",
    "SetLegalHold", "LiftLegalHold", "RecordConsent", "Export",
    "ConvAppend", "ConvAppendBatch", "ConvAppendIdempotent", "ConvRead",
    "ConvReadBack", "ConvRedact", "ConvDelete", "ConvSetSubjects",
    "ConvSetRetention", "ConvSetLegalHold", "ConvLiftLegalHold",
]


def op(name, *fields):
    k = OPS.index(name)
    x = 0 if k == 0 else (k << 32) // len(OPS) + 1
    assert (x * len(OPS)) >> 32 == k
    return struct.pack("<I", x) + b"".join(fields)


def u8(n):
    return bytes([n])


def u16(n):
    return struct.pack("<H", n)


def payload(length, seed):
    return u8(length) + u8(seed)


ALICE, BOB, CAROL, LONG = 0, 1, 2, 3
GENERAL, DM, LONG_ROOM = 0, 1, 2


def subjects(*users, twice=False):
    return u8(sum(1 << u for u in users) | (0x10 if twice else 0))


def model(key_cache, *ops):
    return u8(key_cache) + b"".join(ops)


def seeds():
    h1 = bytes(range(16))
    h2 = bytes([0xFF] * 16)
    n1 = bytes(range(100, 112))
    wrapped = pattern(60, 9)
    yield "decode_envelope", "empty_payload", envelope(1, 1_700_000_000_000, n1, pattern(16, 1))
    yield "decode_envelope", "hello", envelope(1, 1_700_000_000_123, n1, pattern(5 + 16, 2))
    yield "decode_envelope", "epoch_7_64_bytes", envelope(7, 42, bytes(12), pattern(64 + 16, 3))
    yield "decode_envelope", "message_key", message_key(h1, 1)
    yield "decode_envelope", "message_key_last_handle", message_key(h2, 2**64 - 1)
    yield "decode_envelope", "conv_message", conv_message(1, 1_700_000_000_000, h1, 1, n1, pattern(2 + 5 + 5 + 16, 4))
    yield "decode_envelope", "conv_message_high_epochs", conv_message(2**32 - 1, 7, h2, 3, bytes(12), pattern(16, 5))
    yield "decode_envelope", "conv_redaction", conv_redaction(2, 1_700_000_000_500, n1, pattern(24 + 16, 6))
    yield "decode_envelope", "conv_tombstone", conv_tombstone(1, 1_700_000_000_000)
    yield "decode_envelope", "author_key", author_key(h1, h2, 41)

    yield "decode_key_record", "key_record_new_user", key_record(1, wrapped, 1_700_000_000_000, 1)
    yield "decode_key_record", "key_record_returning", key_record(3, wrapped, 5, 2**40)
    yield "decode_key_record", "marker_pending", erase_marker(1, 1_700_000_000_000, 4, False, False)
    yield "decode_key_record", "marker_blocked_purged", erase_marker(2**32 - 1, 0, 2**64 - 2, True, True)
    yield "decode_key_record", "marker_never_stored", erase_marker(0, 7, 1, False, True)
    yield "decode_key_record", "audit_erase", audit_record(1_700_000_000_000, b"privacy-team", "Erase", h1, "Ok")
    yield "decode_key_record", "audit_purge_by_purger", audit_record(5, b"purger", "Purge", None, "Failed")
    sealed_id = n1 + pattern(7, 10) + pattern(16, 11)
    yield "decode_key_record", "conv_key_record_new", conv_key_record(
        1, wrapped, sealed_id, 1_700_000_000_000, 1, policy(), [])
    yield "decode_key_record", "conv_key_record_held_subjects", conv_key_record(
        3, wrapped, n1 + pattern(256, 12) + pattern(16, 13), 5, 2**40,
        policy(2, 86_400_000, 1_699_000_000_000, (b"case 42", 1_700_000_000_000, 1_800_000_000_000), True),
        [h1, h2])
    yield "decode_key_record", "conv_key_record_forever", conv_key_record(
        2, wrapped, sealed_id, 9, 41, policy(1, hold=(b"", 3, None)), [h1])
    yield "decode_key_record", "conv_message_body", message_body(b"alice@example.com", b"hello")

    payload_hello = b"hello"
    yield "open_record", "tamper_unchanged", tamper(h1, 1, 1, 1_700_000_000_000, n1, 0, h1, 1, [], payload_hello)
    yield "open_record", "tamper_flip_crc_fixed", tamper(h1, 5, 2, 99, n1, 1, h1, 5, [(0, 30, 0x01)], payload_hello)
    yield "open_record", "tamper_epoch_byte_crc_fixed", tamper(h1, 5, 2, 99, n1, 1, h1, 5, [(3, 4, 0x03)], payload_hello)
    yield "open_record", "tamper_moved_seq", tamper(h1, 5, 1, 99, n1, 4, h1, 6, [], payload_hello)
    yield "open_record", "tamper_moved_handle", tamper(h1, 5, 1, 99, n1, 2, h2, 5, [], pattern(32, 4))
    yield "open_record", "tamper_truncate_insert", tamper(h2, 9, 1, 0, n1, 1, h2, 9, [(1, 40, 0), (2, 13, 0xAA)], b"")
    yield "open_record", "raw_envelope", raw(h1, 1, envelope(1, 1_700_000_000_000, n1, pattern(5 + 16, 2)))

    user = b"alice@example.com"
    yield "grpc_requests", "append", grpc(1024, 100, pb_bytes(1, user) + pb_bytes(2, b"hello"))
    yield "grpc_requests", "append_idempotent", grpc(1024, 100, pb_bytes(1, user) + pb_bytes(2, b"hi") + pb_bytes(3, b"msg-1"))
    yield "grpc_requests", "append_payload_too_large", grpc(4, 100, pb_bytes(1, user) + pb_bytes(2, b"hello"))
    yield "grpc_requests", "append_empty_user", grpc(1024, 100, pb_bytes(2, b"hello"))
    yield "grpc_requests", "append_long_user", grpc(1024, 100, pb_bytes(1, b"u" * 257))
    yield "grpc_requests", "read", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 1) + pb_varint(3, 10))
    yield "grpc_requests", "read_limit_zero", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 7))
    yield "grpc_requests", "read_limit_too_large", grpc(1024, 100, pb_bytes(1, user) + pb_varint(3, 2**32 - 1))
    yield "grpc_requests", "erase_block_new", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 1))
    yield "grpc_requests", "empty", grpc(65535, 10000, b"")
    yield "grpc_requests", "export", grpc(1024, 100, pb_bytes(1, user))
    receipt = (pb_bytes(1, h1) + pb_varint(2, 1) + pb_varint(3, 1_700_000_000_000)
               + pb_varint(4, 3) + pb_varint(5, 1) + pb_bytes(6, pattern(32, 5)))
    yield "grpc_requests", "verify_receipt", grpc(1024, 100, receipt)
    yield "grpc_requests", "verify_receipt_short_mac", grpc(1024, 100, pb_bytes(1, h1) + pb_varint(5, 2) + pb_bytes(6, b"mac"))
    yield "grpc_requests", "audit_range", grpc(1024, 100, pb_varint(1, 1_700_000_000_000) + pb_varint(2, 1_700_000_100_000))
    # Rights requests. Field numbers overlap across request types, so each seed
    # is also a (mostly valid) instance of the others.
    yield "grpc_requests", "redact", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 2) + pb_bytes(3, b"typo"))
    yield "grpc_requests", "redact_long_reason", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 1) + pb_bytes(3, b"r" * 257))
    yield "grpc_requests", "record_consent", grpc(1024, 100, pb_bytes(1, user) + pb_bytes(2, b"newsletter")
                                                  + pb_varint(3, 1) + pb_varint(4, 1) + pb_varint(5, 1_700_000_000_000))
    yield "grpc_requests", "record_consent_unknown_basis", grpc(1024, 100, pb_bytes(1, user) + pb_bytes(2, b"p")
                                                                + pb_varint(3, 99) + pb_varint(5, 1))
    yield "grpc_requests", "restrict_both", grpc(1024, 100, pb_bytes(1, user) + pb_varint(2, 1) + pb_varint(3, 1))
    yield "grpc_requests", "set_retention_after", grpc(1024, 100, pb_bytes(1, user) + pb_varint(4, 86_400_000))
    yield "grpc_requests", "set_retention_forever_false", grpc(1024, 100, pb_bytes(1, user) + pb_varint(3, 0))
    yield "grpc_requests", "set_legal_hold", grpc(1024, 100, pb_bytes(1, user) + pb_bytes(2, b"case-42") + pb_varint(3, 1_800_000_000_000))

    yield "store_model", "append_read_erase_append", model(
        0,
        op("Append", u8(ALICE), payload(5, 1)),
        op("Append", u8(ALICE), payload(12, 2)),
        op("Append", u8(BOB), payload(0, 3)),
        op("Read", u8(ALICE), u8(0), u8(8)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("Read", u8(ALICE), u8(0), u8(8)),
        op("Append", u8(ALICE), payload(7, 4)),
        op("ReadIter", u8(ALICE), u8(2), u8(11)),
        op("Read", u8(BOB), u8(1), u8(1)),
    )
    yield "store_model", "batches_and_limits", model(
        1,
        op("AppendBatch", u8(CAROL), u8(3), payload(10, 5)),
        op("AppendBatch", u8(CAROL), u8(0), payload(10, 5)),
        op("AppendBatch", u8(CAROL), u8(5), payload(1, 5)),
        op("AppendBatch", u8(CAROL), u8(4), payload(39, 5)),
        op("Append", u8(CAROL), payload(47, 6)),
        op("Read", u8(CAROL), u8(2), u8(0)),
        op("Read", u8(CAROL), u8(2), u8(9)),
        op("Read", u8(CAROL), u8(255), u8(8)),
    )
    yield "store_model", "idempotent", model(
        2,
        op("AppendIdempotent", u8(LONG), u8(1), payload(8, 7)),
        op("AppendIdempotent", u8(LONG), u8(1), payload(8, 7)),
        op("AppendIdempotent", u8(LONG), u8(1), payload(9, 7)),
        op("AppendIdempotent", u8(LONG), u8(0), payload(8, 7)),
        op("AppendIdempotent", u8(LONG), u8(255), payload(8, 7)),
        op("Erase", u8(LONG), u8(0), u8(0)),
        op("AppendIdempotent", u8(LONG), u8(1), payload(9, 7)),
    )
    yield "store_model", "blocked", model(
        3,
        op("Append", u8(BOB), payload(4, 8)),
        op("Erase", u8(BOB), u8(1), u8(0)),
        op("Append", u8(BOB), payload(4, 8)),
        op("AppendIdempotent", u8(BOB), u8(2), payload(4, 8)),
        op("Erase", u8(BOB), u8(0), u8(0)),
        op("Append", u8(BOB), payload(4, 8)),
        op("Erase", u8(CAROL), u8(1), u8(0)),
    )
    yield "store_model", "purge_reopen_compact", model(
        0,
        op("AppendBatch", u8(ALICE), u8(3), payload(6, 9)),
        op("Append", u8(BOB), payload(3, 10)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("Flush"),
        op("Purge"),
        op("Reopen", u8(0), u8(1)),
        op("Append", u8(ALICE), payload(6, 11)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("Compact"),
        op("Reopen", u8(1), u8(0)),
        op("Append", u8(ALICE), payload(2, 12)),
        op("ReopenWrongKey"),
        op("Read", u8(ALICE), u8(0), u8(8)),
    )
    yield "store_model", "clock_and_rng_failure", model(
        1,
        op("Tick", u16(1000), u8(0)),
        op("FailNextRandom"),
        op("Read", u8(ALICE), u8(0), u8(1)),
        op("Append", u8(ALICE), payload(3, 13)),
        op("Append", u8(ALICE), payload(3, 13)),
        op("Tick", u16(65535), u8(1)),
        op("FailNextRandom"),
        op("AppendBatch", u8(ALICE), u8(2), payload(3, 14)),
        op("AppendBatch", u8(ALICE), u8(2), payload(3, 14)),
        op("ReadIter", u8(ALICE), u8(0), u8(11)),
    )
    # Rights operations. The first byte's bits 2-4 pick the store-wide
    # retention (store_model.rs RETENTIONS: 3 is 700 ms, 7 none; in Reopen's
    # key_cache 0 keeps it).
    yield "store_model", "retention_clock_back_reopen", model(
        1 | 3 << 2,
        op("Append", u8(ALICE), payload(5, 15)),
        op("AppendIdempotent", u8(BOB), u8(1), payload(6, 16)),
        op("SetRetention", u8(CAROL), u8(1), u16(0)),
        op("Append", u8(CAROL), payload(7, 17)),
        op("Tick", u16(1000), u8(0)),
        op("Read", u8(ALICE), u8(0), u8(8)),
        op("Compact"),
        op("AppendIdempotent", u8(BOB), u8(1), payload(6, 16)),
        op("Tick", u16(1000), u8(1)),
        op("Append", u8(ALICE), payload(2, 18)),
        op("Reopen", u8(1), u8(7 << 2)),
        op("Append", u8(BOB), payload(2, 19)),
        op("SetRetention", u8(ALICE), u8(2), u16(0)),
        op("SetRetention", u8(ALICE), u8(2), u16(300)),
        op("Tick", u16(400), u8(0)),
        op("ReadIter", u8(ALICE), u8(0), u8(11)),
    )
    yield "store_model", "restrict_redact_export", model(
        2,
        op("Restrict", u8(ALICE), u8(0), u8(1)),
        op("Append", u8(ALICE), payload(9, 20)),
        op("AppendBatch", u8(ALICE), u8(2), payload(4, 21)),
        op("Read", u8(ALICE), u8(0), u8(8)),
        op("Export", u8(ALICE), u8(0)),
        op("Export", u8(ALICE), u8(1)),
        op("Redact", u8(ALICE), u8(1), u8(5)),
        op("Redact", u8(ALICE), u8(1), u8(6)),
        op("Redact", u8(ALICE), u8(0), u8(255)),
        op("Redact", u8(ALICE), u8(3), u8(254)),
        op("Restrict", u8(ALICE), u8(1), u8(0)),
        op("Append", u8(ALICE), payload(1, 22)),
        op("Restrict", u8(BOB), u8(0), u8(0)),
        op("Unrestrict", u8(ALICE), u8(0), u8(0)),
        op("Purge"),
        op("Export", u8(ALICE), u8(0)),
    )
    yield "store_model", "legal_hold_consent_blocked", model(
        3 | 2 << 2,
        op("RecordConsent", u8(CAROL), u8(1), u8(0), u8(1), u16(5)),
        op("Append", u8(CAROL), payload(3, 23)),
        op("SetLegalHold", u8(CAROL), u8(4), u8(1), u16(500)),
        op("Erase", u8(CAROL), u8(0), u8(0)),
        op("Redact", u8(CAROL), u8(0), u8(1)),
        op("Tick", u16(400), u8(0)),
        op("Read", u8(CAROL), u8(0), u8(8)),
        op("Tick", u16(200), u8(0)),
        op("SetLegalHold", u8(CAROL), u8(4), u8(2), u16(1)),
        op("RecordConsent", u8(CAROL), u8(0), u8(1), u8(0), u16(6)),
        op("RecordConsent", u8(CAROL), u8(255), u8(1), u8(0), u16(6)),
        op("RecordConsent", u8(CAROL), u8(2), u8(3), u8(0), u16(7)),
        op("Export", u8(CAROL), u8(0)),
        op("LiftLegalHold", u8(CAROL)),
        op("Erase", u8(CAROL), u8(1), u8(0)),
        op("Restrict", u8(CAROL), u8(1), u8(0)),
        op("Unrestrict", u8(CAROL), u8(1), u8(1)),
        op("LiftLegalHold", u8(CAROL)),
        op("SetRetention", u8(CAROL), u8(0), u16(0)),
        op("RecordConsent", u8(CAROL), u8(3), u8(1), u8(1), u16(8)),
        op("FailNextRandom"),
        op("SetLegalHold", u8(LONG), u8(9), u8(0), u16(0)),
        op("RecordConsent", u8(LONG), u8(3), u8(1), u8(1), u16(8)),
        op("Export", u8(LONG), u8(0)),
    )
    yield "store_model", "expire_all_then_erase_reopen", model(
        0,
        op("Append", u8(BOB), payload(3, 24)),
        op("SetRetention", u8(ALICE), u8(2), u16(10)),
        op("AppendBatch", u8(ALICE), u8(3), payload(4, 25)),
        op("Tick", u16(100), u8(0)),
        op("Compact"),
        op("Reopen", u8(0), u8(1 << 2)),
        op("Tick", u16(100), u8(0)),
        op("Compact"),
        op("Reopen", u8(1), u8(7 << 2)),
        op("Append", u8(BOB), payload(3, 26)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("Append", u8(ALICE), payload(3, 27)),
        op("Tick", u16(2000), u8(1)),
        op("Read", u8(ALICE), u8(0), u8(8)),
    )
    yield "store_model", "hold_lapses_clock_back", model(
        2 << 2,
        op("Append", u8(ALICE), payload(3, 28)),
        op("AppendIdempotent", u8(ALICE), u8(9), payload(3, 29)),
        op("SetLegalHold", u8(ALICE), u8(7), u8(1), u16(500)),
        op("Tick", u16(600), u8(0)),
        op("Redact", u8(ALICE), u8(0), u8(3)),
        op("Flush"),
        op("Tick", u16(300), u8(1)),
        op("Redact", u8(ALICE), u8(1), u8(3)),
        op("Tick", u16(300), u8(0)),
        op("Compact"),
        op("Tick", u16(300), u8(1)),
        op("ReadIter", u8(ALICE), u8(0), u8(11)),
        op("AppendIdempotent", u8(ALICE), u8(9), payload(3, 29)),
        op("SetRetention", u8(ALICE), u8(1), u16(0)),
        op("Export", u8(ALICE), u8(1)),
    )

    # Conversations (GENERAL, DM, LONG_ROOM are conv_id(0..3)).
    yield "store_model", "conv_append_read_erase", model(
        0,
        op("ConvAppend", u8(GENERAL), u8(ALICE), payload(5, 30)),
        op("ConvAppend", u8(GENERAL), u8(BOB), payload(6, 31)),
        op("ConvAppendBatch", u8(GENERAL), u8(CAROL), u8(3), payload(4, 32)),
        op("ConvAppend", u8(LONG_ROOM), u8(LONG), payload(40, 33)),
        op("ConvRead", u8(GENERAL), u8(2), u8(3)),
        op("ConvReadBack", u8(GENERAL), u8(255), u8(2)),
        op("ConvReadBack", u8(GENERAL), u8(3), u8(8)),
        op("ConvRead", u8(GENERAL), u8(0), u8(0)),
        op("ConvReadBack", u8(GENERAL), u8(0), u8(9)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("ConvRead", u8(GENERAL), u8(0), u8(8)),
        op("ConvAppend", u8(GENERAL), u8(ALICE), payload(3, 34)),
        op("Export", u8(ALICE), u8(0)),
        op("Export", u8(CAROL), u8(1)),
        op("Purge"),
        op("ConvReadBack", u8(GENERAL), u8(255), u8(8)),
    )
    yield "store_model", "conv_subjects_hold_delete", model(
        1,
        op("ConvSetSubjects", u8(DM), subjects(ALICE, BOB, twice=True)),
        op("ConvAppend", u8(DM), u8(ALICE), payload(4, 35)),
        op("ConvAppend", u8(DM), u8(BOB), payload(4, 36)),
        op("ConvSetSubjects", u8(GENERAL), subjects(ALICE)),
        op("ConvAppend", u8(GENERAL), u8(BOB), payload(2, 37)),
        op("ConvSetSubjects", u8(LONG_ROOM), u8(255)),
        op("ConvSetLegalHold", u8(GENERAL), u8(5), u8(0), u16(0)),
        op("Erase", u8(ALICE), u8(0), u8(1)),
        op("ConvDelete", u8(GENERAL)),
        op("ConvRedact", u8(GENERAL), u8(0), u8(6)),
        op("ConvLiftLegalHold", u8(GENERAL)),
        op("Erase", u8(ALICE), u8(0), u8(1)),
        op("ConvRead", u8(DM), u8(0), u8(8)),
        op("Erase", u8(BOB), u8(0), u8(0)),
        op("ConvAppend", u8(DM), u8(CAROL), payload(3, 38)),
        op("ConvDelete", u8(DM)),
        op("ConvDelete", u8(DM)),
        op("Purge"),
        op("ConvAppend", u8(GENERAL), u8(CAROL), payload(3, 39)),
        op("ConvRead", u8(GENERAL), u8(0), u8(8)),
    )
    yield "store_model", "conv_idempotent_redact_purge", model(
        2,
        op("ConvAppendIdempotent", u8(DM), u8(ALICE), u8(1), payload(6, 40)),
        op("ConvAppendIdempotent", u8(DM), u8(ALICE), u8(1), payload(6, 40)),
        op("ConvAppendIdempotent", u8(DM), u8(ALICE), u8(1), payload(7, 40)),
        op("ConvAppendIdempotent", u8(DM), u8(BOB), u8(1), payload(6, 40)),
        op("ConvAppendIdempotent", u8(DM), u8(BOB), u8(2), payload(5, 41)),
        op("ConvAppendIdempotent", u8(DM), u8(BOB), u8(255), payload(5, 41)),
        op("ConvRedact", u8(DM), u8(1), u8(7)),
        op("ConvRedact", u8(DM), u8(1), u8(8)),
        op("ConvRedact", u8(DM), u8(2), u8(9)),
        op("ConvRedact", u8(DM), u8(0), u8(255)),
        op("ConvAppendIdempotent", u8(DM), u8(ALICE), u8(2), payload(9, 42)),
        op("Erase", u8(ALICE), u8(0), u8(0)),
        op("ConvAppendIdempotent", u8(DM), u8(CAROL), u8(1), payload(6, 40)),
        op("ConvAppendIdempotent", u8(DM), u8(ALICE), u8(1), payload(1, 43)),
        op("Purge"),
        op("ConvAppendIdempotent", u8(DM), u8(CAROL), u8(1), payload(6, 40)),
        op("FailNextRandom"),
        op("ConvAppend", u8(DM), u8(CAROL), payload(2, 44)),
        op("Reopen", u8(1), u8(0)),
        op("ConvReadBack", u8(DM), u8(255), u8(8)),
    )
    yield "store_model", "conv_retention_hold_blocked", model(
        3 | 3 << 2,
        op("ConvAppend", u8(GENERAL), u8(ALICE), payload(3, 45)),
        op("ConvSetRetention", u8(DM), u8(1), u16(0)),
        op("ConvAppend", u8(DM), u8(ALICE), payload(3, 46)),
        op("ConvSetLegalHold", u8(LONG_ROOM), u8(3), u8(1), u16(2000)),
        op("ConvAppend", u8(LONG_ROOM), u8(BOB), payload(3, 47)),
        op("Tick", u16(1000), u8(0)),
        op("ConvRead", u8(GENERAL), u8(0), u8(8)),
        op("ConvRedact", u8(GENERAL), u8(0), u8(1)),
        op("ConvRedact", u8(LONG_ROOM), u8(0), u8(1)),
        op("Compact"),
        op("ConvAppend", u8(GENERAL), u8(BOB), payload(3, 48)),
        op("ConvSetRetention", u8(GENERAL), u8(2), u16(0)),
        op("ConvSetRetention", u8(GENERAL), u8(2), u16(300)),
        op("Erase", u8(CAROL), u8(1), u8(0)),
        op("ConvAppend", u8(GENERAL), u8(CAROL), payload(3, 49)),
        op("Restrict", u8(BOB), u8(1), u8(1)),
        op("ConvAppend", u8(DM), u8(BOB), payload(3, 50)),
        op("ConvRead", u8(DM), u8(0), u8(8)),
        op("Tick", u16(1500), u8(0)),
        op("ConvReadBack", u8(LONG_ROOM), u8(255), u8(8)),
        op("Reopen", u8(0), u8(7 << 2)),
        op("ConvRead", u8(GENERAL), u8(0), u8(8)),
        op("ConvDelete", u8(GENERAL)),
        op("ConvAppend", u8(GENERAL), u8(ALICE), payload(3, 51)),
    )


def main():
    targets = {}
    for target, name, data in seeds():
        targets.setdefault(target, []).append((name, data))
    for target, files in targets.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in files:
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    main()

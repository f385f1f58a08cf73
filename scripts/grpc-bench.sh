#!/usr/bin/env bash
# The gRPC figures of BENCHMARKS.md, all in one run on one machine:
#  1. embedded baseline: `shredstore load --embedded` (same workers, users and
#     payloads, no network), append only;
#  2. unary Append and streamed AppendStream against a release server, closed
#     loop (= 100% of max load), append only;
#  3. the same at 50% of the max just measured, open loop (--rate), latency
#     from the intended send time;
#  4. the default mix (append 90 / read 9 / erase 1), unary, closed loop;
#  5. conversation mode: 1,000 conversations (Zipf) of 5 authors, 90% appends
#     and 10% backward reads of the newest 50, unary, closed loop; its "vs
#     embedded" is against an embedded run of the same requests.
# Client and server share the machine's cores. Needs python3 for the table.
#   DURATION=20 scripts/grpc-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONCURRENCY=${CONCURRENCY:-16}
STREAM_WORKERS=${STREAM_WORKERS:-8}
PORT=${PORT:-50778}
OUT=${OUT:-$(mktemp -d /tmp/shredstore-grpc-bench.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/shredstore/target}
BIN=$TARGET/release/shredstore

cargo build --release --bin shredstore
mkdir -p "$OUT"
head -c 32 /dev/urandom >"$OUT/root.key"
COMMON=(--duration "$DURATION" --users 10000 --payload-size 200 --json)

echo "embedded baseline..." >&2
"$BIN" load --embedded "$OUT/embedded" --concurrency "$CONCURRENCY" --mix append=1 \
    "${COMMON[@]}" >"$OUT/embedded.json"
CONV=(--conversations 1000 --authors-per-conversation 5 --mix append=9,read=1)
echo "embedded conversation baseline..." >&2
"$BIN" load --embedded "$OUT/embedded-conv" --concurrency "$CONCURRENCY" "${CONV[@]}" \
    "${COMMON[@]}" >"$OUT/embedded-conv.json"

"$BIN" serve --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" --root-key-file "$OUT/root.key" \
    --insecure-no-auth --durability buffered >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q "listening" "$OUT/server.out" 2>/dev/null && break
    sleep 0.1
done
ADDR="http://127.0.0.1:$PORT"
load() { "$BIN" load --addr "$ADDR" "${COMMON[@]}" "$@"; }
rate_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['throughput'])" "$1"; }

echo "unary, closed loop..." >&2
load --concurrency "$CONCURRENCY" --mix append=1 --plot "$OUT/unary.svg" >"$OUT/unary-max.json"
echo "stream, closed loop..." >&2
load --concurrency "$STREAM_WORKERS" --stream --mix append=1 --plot "$OUT/stream.svg" >"$OUT/stream-max.json"
HALF_U=$(python3 -c "print(round($(rate_of "$OUT/unary-max.json") / 2))")
HALF_S=$(python3 -c "print(round($(rate_of "$OUT/stream-max.json") / 2))")
echo "unary at $HALF_U req/s..." >&2
load --concurrency "$CONCURRENCY" --mix append=1 --rate "$HALF_U" --plot "$OUT/unary-half.svg" >"$OUT/unary-half.json"
echo "stream at $HALF_S req/s..." >&2
load --concurrency "$STREAM_WORKERS" --stream --mix append=1 --rate "$HALF_S" >"$OUT/stream-half.json"
echo "unary, default mix..." >&2
load --concurrency "$CONCURRENCY" --plot "$OUT/mix.svg" >"$OUT/mix-max.json"
echo "unary, conversations..." >&2
load --concurrency "$CONCURRENCY" "${CONV[@]}" --plot "$OUT/conv.svg" >"$OUT/conv-max.json"

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def r(name): return json.load(open(f"{out}/{name}.json"))
# Each run is compared with the embedded baseline of its own mode.
baseline = {"user": r("embedded")["throughput"], "conv": r("embedded-conv")["throughput"]}
print(f"results and plots in {out}\n")
print("| run | load | req/s | vs embedded | op | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |")
print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
for name, label in [("embedded", "embedded append (no server)"),
                    ("unary-max", "unary Append"), ("unary-half", "unary Append"),
                    ("stream-max", "AppendStream"), ("stream-half", "AppendStream"),
                    ("mix-max", "unary mix 90/9/1"),
                    ("embedded-conv", "embedded conversations 1000x5, mix 90/10 (no server)"),
                    ("conv-max", "unary conversations 1000x5, mix 90/10")]:
    j = r(name)
    emb = baseline["conv" if j.get("conversations") else "user"]
    load = "50% (open loop)" if j.get("rate") else "100% (closed loop)"
    for op in j["ops"]:
        l = op["latency_us"]
        if l["count"] == 0:
            continue
        print(f"| {label} | {load} | {j['throughput']:.0f} | {j['throughput'] / emb:.2f} | {op['op']} | "
              f"{l['p50_us']/1000:.2f} | {l['p90_us']/1000:.2f} | {l['p99_us']/1000:.2f} | "
              f"{l['p999_us']/1000:.2f} | {l['max_us']/1000:.2f} | {j['errors']} |")
PY

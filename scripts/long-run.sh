#!/usr/bin/env bash
# The long run of BENCHMARKS.md: at least 10 million messages through the gRPC
# AppendStream into a release server with a known memory budget, sampling the
# server's resident memory every second. Prints peak RSS against the budget the
# server logged, throughput and latency (from `shredstore load --json`), and
# the data directory's size. Usage:
#   scripts/long-run.sh            # 10.2M requests: 99% appends, 1% reads
#   REQUESTS=1000000 scripts/long-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-10200000}
USERS=${USERS:-100000}
CONCURRENCY=${CONCURRENCY:-8}
PORT=${PORT:-50777}
BLOCK_CACHE_MB=${BLOCK_CACHE_MB:-64}
WRITE_BUFFER_MB=${WRITE_BUFFER_MB:-64}
KEY_CACHE=${KEY_CACHE:-65536}
OUT=${OUT:-$(mktemp -d /tmp/shredstore-long-run.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/shredstore/target}
BIN=$TARGET/release/shredstore

cargo build --release --bin shredstore
mkdir -p "$OUT"
head -c 32 /dev/urandom > "$OUT/root.key"

"$BIN" serve --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" \
    --root-key-file "$OUT/root.key" --insecure-no-auth --durability buffered \
    --block-cache-mb "$BLOCK_CACHE_MB" --write-buffer-mb "$WRITE_BUFFER_MB" \
    --key-cache-entries "$KEY_CACHE" >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    grep -q "listening" "$OUT/server.out" 2>/dev/null && break
    sleep 0.1
done
grep -q "listening" "$OUT/server.out" || { cat "$OUT/server.log"; echo "server did not start" >&2; exit 1; }

# Resident memory every second (KiB).
(
    while kill -0 "$SERVER" 2>/dev/null; do
        awk -v t="$(date +%s)" '/^VmRSS/ {print t, $2}' "/proc/$SERVER/status" 2>/dev/null || true
        sleep 1
    done
) >"$OUT/rss.txt" &
SAMPLER=$!

"$BIN" load --addr "http://127.0.0.1:$PORT" --stream --requests "$REQUESTS" \
    --mix append=99,read=1 --users "$USERS" --concurrency "$CONCURRENCY" \
    --json --plot "$OUT/long-run.svg" >"$OUT/load.json"

PEAK_KIB=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER/status")
kill -TERM "$SERVER"
wait "$SERVER" || true
kill "$SAMPLER" 2>/dev/null || true
trap - EXIT

BUDGET=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/server.log" | grep -o 'budget=[0-9.]* MiB' | head -1 | grep -o '[0-9.]*')
DATA_MB=$(du -sm "$OUT/data" | cut -f1)
python3 - "$OUT" "$PEAK_KIB" "$BUDGET" "$DATA_MB" <<'PY'
import json, sys
out, peak_kib, budget, data_mb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.load(open(f"{out}/load.json"))
peak = peak_kib / 1024
print(f"results in {out}")
print(f"peak RSS {peak:.1f} MiB; configured budget {budget:.1f} MiB; ratio {peak / budget:.2f}")
print(f"data directory {data_mb} MB")
print(json.dumps({k: r[k] for k in r if k not in ("timeline",)}, indent=1)[:3000])
PY

#!/usr/bin/env bash
# Regression guard for the encrypted / plain RocksDB ratios of BENCHMARKS.md
# (issue 13): runs the criterion benches and fails if a ratio of this run
# falls below its floor. The floors sit well under the measured figures
# (about 60% of them), so a noisy shared machine does not trip them but a
# real regression (a lost cache, a lock on the read path, a second seal) does.
# Not part of `make test` (it takes minutes and wants a quiet machine).
#
#   scripts/bench-check.sh [BENCH...]       (default: append read conversation)
#
# Each ratio is computed from this run's criterion medians only (estimates
# older than the run are ignored; a case that did not run fails the check).
# Exit status: 0 all floors met, 1 a ratio below its floor or missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/shredstore/target}
home=${CRITERION_HOME:-$CARGO_TARGET_DIR/criterion}
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(append read conversation)

stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
for b in "${benches[@]}"; do
    printf '\n==> cargo bench --bench %s (%s)\n' "$b" "$(date -u +%T)"
    cargo bench --bench "$b"
done

python3 - "$home" "$stamp" "${benches[@]}" <<'PY'
import json, os, sys

home, stamp, benches = sys.argv[1], sys.argv[2], sys.argv[3:]
started = os.path.getmtime(stamp)
# (group, case) -> floor on plain / encrypted throughput. Measured
# (BENCHMARKS.md, 2026-11/12): append 0.70 / 0.55 / 0.44, read 0.28,
# conversation append 0.47, backward read of 50 0.35.
FLOORS = {
    "append": {
        "u10000-b1-buffered": 0.42,
        "u10000-b64-buffered": 0.33,
        "u1-b64-buffered": 0.26,
    },
    "read": {"100-of-2000x100": 0.17},
    "conversation": {"append": 0.28, "read-back-50": 0.21},
}

def median(group, function, case):
    path = os.path.join(home, group, function, case, "new", "estimates.json")
    if not os.path.exists(path) or os.path.getmtime(path) < started:
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]

failed = False
print("\n| group | case | encrypted µs | plain µs | ratio | floor | |")
print("|---|---|---:|---:|---:|---:|---|")
for group in benches:
    for case, floor in FLOORS.get(group, {}).items():
        enc, plain = median(group, "encrypted", case), median(group, "plain", case)
        if enc is None or plain is None:
            print(f"| {group} | {case} | | | | {floor:.2f} | MISSING (did not run) |")
            failed = True
            continue
        ratio = plain / enc
        ok = ratio >= floor
        failed |= not ok
        print(f"| {group} | {case} | {enc / 1000:.2f} | {plain / 1000:.2f} | "
              f"{ratio:.2f}x | {floor:.2f}x | {'ok' if ok else 'BELOW FLOOR'} |")
sys.exit(1 if failed else 0)
PY

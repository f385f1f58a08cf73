#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# RocksDB's C++ is not compiled again: the fuzz build links the librocksdb.a
# of the main release build (ROCKSDB_LIB_DIR + ROCKSDB_STATIC), building that
# first with `cargo build --release --lib` if it is missing. The fuzz build
# has its own target dir (nightly and sanitizer flags would otherwise clobber
# the release build's fingerprints). Each target fuzzes a scratch copy of its
# committed seeds (fuzz/corpus/<target>/), so runs never dirty the repo;
# crashing inputs land in fuzz/artifacts/<target>/ (ignored by git).
# Exits non-zero if any target crashed, leaked or timed out.
#
# Environment: FUZZ_TOOLCHAIN (nightly; stable + RUSTC_BOOTSTRAP=1 if it is
# missing), FUZZ_TARGET_DIR
# (~/.cache/shredstore/fuzz-target; store_model, built without a sanitizer,
# in FUZZ_TARGET_DIR-nosan), CARGO_TARGET_DIR (the main build's,
# ~/.cache/shredstore/target), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-60}
shift || true
all_targets=(decode_envelope decode_key_record open_record grpc_requests store_model)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
case $secs in '' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

main_target_dir=${CARGO_TARGET_DIR:-$HOME/.cache/shredstore/target}
fuzz_target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/shredstore/fuzz-target}

step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%T)"; }

# libFuzzer builds need -Zsanitizer: nightly, or (where no nightly can be
# installed) the stable toolchain with RUSTC_BOOTSTRAP=1, whose rust-std
# ships the same sanitizer runtimes.
toolchain=${FUZZ_TOOLCHAIN:-nightly}
if ! rustc +"$toolchain" --version >/dev/null 2>&1; then
    echo "no $toolchain toolchain; using stable with RUSTC_BOOTSTRAP=1"
    toolchain=stable
    export RUSTC_BOOTSTRAP=1
fi
triple=$(rustc +"$toolchain" -vV | sed -n 's/^host: //p')
if ! cargo +"$toolchain" fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The prebuilt RocksDB must be the librocksdb-sys version the fuzz build uses.
lock_version() { grep -A1 '^name = "librocksdb-sys"$' "$1" | sed -n 's/^version = "\(.*\)"/\1/p'; }
if [ "$(lock_version Cargo.lock)" != "$(lock_version fuzz/Cargo.lock)" ]; then
    echo "librocksdb-sys differs between Cargo.lock and fuzz/Cargo.lock; align fuzz/Cargo.lock" >&2
    exit 1
fi
find_rocksdb() {
    find "$main_target_dir/release/build" -path '*/librocksdb-sys-*/out/librocksdb.a' \
        -printf '%T@ %h\n' 2>/dev/null | sort -rn | head -n1 | cut -d' ' -f2-
}
rocksdb_dir=$(find_rocksdb)
if [ -z "$rocksdb_dir" ]; then
    step "no prebuilt librocksdb.a: building the release library once (RocksDB's C++ takes ~25 min)"
    CARGO_TARGET_DIR=$main_target_dir cargo build --release --lib
    rocksdb_dir=$(find_rocksdb)
    [ -n "$rocksdb_dir" ] || {
        echo "librocksdb.a not found under $main_target_dir/release/build" >&2
        exit 1
    }
fi
export ROCKSDB_LIB_DIR=$rocksdb_dir ROCKSDB_STATIC=1
echo "linking RocksDB from $ROCKSDB_LIB_DIR"

# store_model is built without a sanitizer, in a target dir of its own: its
# checks are the model's assertions; AddressSanitizer made each input five
# times slower while watching almost nothing (the store forbids unsafe code
# and the RocksDB it drives is the prebuilt, uninstrumented library). The
# decoder targets keep AddressSanitizer (they parse untrusted bytes through
# dependencies' unsafe code).
nosan_targets=(store_model)
nosan_target_dir=$fuzz_target_dir-nosan
bin_of() {
    if [[ " ${nosan_targets[*]} " == *" $1 "* ]]; then
        echo "$nosan_target_dir/$triple/release/$1"
    else
        echo "$fuzz_target_dir/$triple/release/$1"
    fi
}

step "building the fuzz targets"
started=$SECONDS
for t in "${targets[@]}"; do
    if [[ " ${nosan_targets[*]} " == *" $t "* ]]; then
        cargo +"$toolchain" fuzz build --sanitizer none --target-dir "$nosan_target_dir" "$t"
    else
        cargo +"$toolchain" fuzz build --target-dir "$fuzz_target_dir" "$t"
    fi
done
echo "built in $((SECONDS - started)) s"

declare -A extra=(
    # Each input opens a fresh RocksDB store (in RocksDB's in-memory Env;
    # still tens of inputs/s, not thousands): inputs stay short (48
    # operations at most), and libFuzzer may use the whole length at once
    # instead of growing it at this pace.
    [store_model]="-max_len=512 -len_control=0 -timeout=120"
)

failed=()
summary=()
for t in "${targets[@]}"; do
    bin=$(bin_of "$t")
    [ -x "$bin" ] || {
        echo "unknown target $t (have: ${all_targets[*]})" >&2
        exit 2
    }
    corpus=$fuzz_target_dir/corpus/$t
    artifacts=$root/fuzz/artifacts/$t
    log=$fuzz_target_dir/logs/$t.log
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    step "fuzzing $t for ${secs} s (log: $log)"
    status=0
    # shellcheck disable=SC2086 # word splitting of the flag lists is intended
    "$bin" "$corpus" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" ${extra[$t]:-} ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    summary+=("$(printf '%-18s %12s execs %6s s  cov %6s  exit %s' "$t" "${execs:-?}" "${took:-?}" "${cov:-?}" "$status")")
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -n 20 || true
        tail -n 5 "$log"
    fi
    echo "${summary[-1]}"
done

step "summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi

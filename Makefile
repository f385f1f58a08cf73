# The two commands of the README's quick start: `make run` and `make test`.
#
# Everything builds in ONE cargo profile (release): RocksDB's C++ takes ~50
# CPU-minutes per profile, so tests, benches, clippy and `make run` share it.
# The target dir lives outside the clone so warm runs rebuild only what changed.

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shredstore/target
DATA_DIR ?= ./data
LISTEN ?= 127.0.0.1:50051

.PHONY: run test bench fuzz prereqs test-tools build check fmt lint clippy clean-data

prereqs:
	@scripts/prereqs.sh

# grpcurl, promtool, buf and a Python venv with grpcio for the tests (README
# sessions, alert rules, the API guard), in ~/.cache/shredstore/tools; see
# scripts/test-tools.sh.
test-tools:
	@scripts/test-tools.sh >/dev/null

build: prereqs
	$(CARGO) build --release --all-targets

# Development server: generated root key beside the data dir, no auth.
run: prereqs
	$(CARGO) build --release --bin shredstore
	$(CARGO_TARGET_DIR)/release/shredstore serve --data-dir $(DATA_DIR) --listen $(LISTEN) --insecure-no-auth

# Benches are compiled (not run) so they never rot; they share the release
# build (the bench profile inherits it).
test: prereqs test-tools
	$(CARGO) test --release
	$(CARGO) bench --no-run --features internals

# Every criterion bench, then the on-disk footprint (see BENCHMARKS.md).
bench: prereqs
	$(CARGO) bench --features internals

# `--no-default-features` changes host-dependency features (syn, regex...), which
# rebuilds bindgen and would re-run RocksDB's 25-minute C++ build. A check never
# links, so it runs in its own target dir with ROCKSDB_LIB_DIR pointing at an
# empty directory: librocksdb-sys's build script then skips the C++ compile,
# while every line of Rust is still type-checked.
CHECK_TARGET_DIR ?= $(CARGO_TARGET_DIR)/check-no-default-features
check: prereqs
	mkdir -p $(CHECK_TARGET_DIR)/empty-rocksdb-lib
	ROCKSDB_LIB_DIR=$(CHECK_TARGET_DIR)/empty-rocksdb-lib CARGO_TARGET_DIR=$(CHECK_TARGET_DIR) \
		$(CARGO) check --no-default-features --all-targets

fmt:
	$(CARGO) fmt --check

# The API guard: buf format, buf lint (STANDARD, exceptions listed in
# proto/buf.yaml) and buf breaking against the last release in CHANGELOG.md.
# buf comes from scripts/test-tools.sh; see scripts/api-check.py.
lint:
	python3 scripts/api-check.py "$$(scripts/test-tools.sh buf)/buf"

clippy: prereqs
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --features internals --bench crypto --bench purge_scale -- -D warnings

# Every cargo-fuzz target for FUZZ_SECS seconds each (nightly; links the
# release build's librocksdb.a instead of compiling RocksDB again; see
# scripts/fuzz.sh). `make fuzz FUZZ_SECS=600 FUZZ_TARGETS=store_model`.
FUZZ_SECS ?= 60
FUZZ_TARGETS ?=
fuzz: prereqs
	scripts/fuzz.sh $(FUZZ_SECS) $(FUZZ_TARGETS)

clean-data:
	rm -rf $(DATA_DIR) $(DATA_DIR).dev-root.key

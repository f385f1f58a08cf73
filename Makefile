# The two commands of the README's quick start: `make run` and `make test`.
#
# Everything builds in ONE cargo profile (release): RocksDB's C++ takes ~50
# CPU-minutes per profile, so tests, benches, clippy and `make run` share it.
# The target dir lives outside the clone so warm runs rebuild only what changed.

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shredstore/target
DATA_DIR ?= ./data
# Beside, never inside, the data directory.
DEV_ROOT_KEY ?= ./dev-root.key

.PHONY: run test prereqs build check fmt clippy clean-data

prereqs:
	@scripts/prereqs.sh

build: prereqs
	$(CARGO) build --release --all-targets

run: prereqs
	$(CARGO) build --release --example embedded
	$(CARGO_TARGET_DIR)/release/examples/embedded $(DATA_DIR) $(DEV_ROOT_KEY)

test: prereqs
	$(CARGO) test --release

check: prereqs
	$(CARGO) check --release --no-default-features --all-targets

fmt:
	$(CARGO) fmt --check

clippy: prereqs
	$(CARGO) clippy --release --all-targets -- -D warnings

clean-data:
	rm -rf $(DATA_DIR) $(DEV_ROOT_KEY)

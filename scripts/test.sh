#!/usr/bin/env bash
# The test command (README, second command): starts every server the
# integration tests need through the repository's own scripts, then checks
# formatting, lints, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
started=$(date +%s)

echo "== starting services (scripts/services/all.sh)" >&2
bash scripts/services/all.sh start postgres mariadb redis nats kafka prometheus s3 chromium >&2

echo "== architecture rules (scripts/check_architecture.py)" >&2
python3 scripts/check_architecture.py

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
# The build without the web console (`bench/console.sh` measures against it).
cargo clippy -p deltaforge-control -p deltaforge --no-default-features -- -D warnings

echo "== cargo test" >&2
# The storage-fault tests mount a small file system (root); on CI they must
# run, not skip.
export DELTAFORGE_REQUIRE_STORAGE_FAULTS=1
# Integration tests share real servers; each test uses its own objects.
cargo test --workspace -- --test-threads="${DELTAFORGE_TEST_THREADS:-4}"

echo "== done in $(( $(date +%s) - started )) s" >&2

#!/usr/bin/env bash
# The main job on a fresh machine (README, first command): builds deltaforge,
# and runs the example pipeline into ./out/ with the embedded SQLite storage
# in ./data/deltaforge.db. Run it again and it resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
cargo build --release -p deltaforge
BIN=target/release/deltaforge
CONFIG=${1:-examples/datagen-to-file.yaml}
"$BIN" validate --config "$CONFIG"
"$BIN" run --config "$CONFIG" --storage-path ./data/deltaforge.db
echo "events written to ./out/; checkpoints:" >&2
"$BIN" checkpoints list --storage-path ./data/deltaforge.db

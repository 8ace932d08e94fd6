#!/usr/bin/env bash
# The main job on a fresh machine (README, first command): starts a local
# PostgreSQL (scripts/services/postgres.sh installs it if missing), creates a
# demo table, builds deltaforge and streams the table's changes into
# ./out/demo-orders.jsonl with checkpoints in ./data/deltaforge.db, while a
# small writer inserts and updates rows. Stop it with Ctrl-C (the checkpoint
# of what was delivered is written); run it again and it resumes.
#
#   DEMO_SECONDS=N   stop by itself after N seconds (default: run until Ctrl-C)
#   DELTAFORGE_BIN=P use an already built binary instead of building one
#   bash scripts/demo.sh examples/datagen-to-file.yaml   # no database at all
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
CONFIG=${1:-examples/postgres-to-file.yaml}
if [ -z "${DELTAFORGE_BIN:-}" ]; then
  cargo build --release -p deltaforge
fi
BIN=${DELTAFORGE_BIN:-target/release/deltaforge}
writer_pid=
if grep -q "type: postgres" "$CONFIG"; then
  PG_DSN=$(bash scripts/services/postgres.sh)
  export PG_DSN
  psql "$PG_DSN" -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS public.demo_orders (
  id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2) NOT NULL,
  status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
SQL
  # A small writer: an insert and an update every 100 ms, in the background.
  (while sleep 0.1; do
     psql "$PG_DSN" -q -c "INSERT INTO public.demo_orders (customer, amount) VALUES ('c' || (random()*100)::int, round((random()*500)::numeric, 2)); UPDATE public.demo_orders SET status = 'paid' WHERE id = (SELECT max(id) FROM public.demo_orders) - 5;" >/dev/null 2>&1 || true
   done) &
  writer_pid=$!
  trap '[ -n "$writer_pid" ] && kill "$writer_pid" 2>/dev/null || true' EXIT
fi
"$BIN" validate --config "$CONFIG"
if [ -n "${DEMO_SECONDS:-}" ]; then
  timeout --preserve-status -s INT "$DEMO_SECONDS" "$BIN" run --config "$CONFIG" --storage-path ./data/deltaforge.db
else
  "$BIN" run --config "$CONFIG" --storage-path ./data/deltaforge.db
fi
echo "events written to ./out/; checkpoints:" >&2
"$BIN" checkpoints list --storage-path ./data/deltaforge.db

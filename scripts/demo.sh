#!/usr/bin/env bash
# A local demo of the main job: starts two test servers (source and destination), fills the source
# with sample data, and copies it with mongoferry, progress bars and all. Everything it starts is
# stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

# Only the test server: neither the API fuzzer nor the browser tests' chromium and npm packages.
MONGOFERRY_SKIP_FUZZER=1 MONGOFERRY_SKIP_PROMTOOL=1 MONGOFERRY_SKIP_BROWSER=1 bash scripts/setup-test-env.sh
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/release/mongoferry
if [ ! -x "$bin" ]; then
  echo "building mongoferry (release): the first build compiles every dependency and takes" \
    "about 5 minutes on two cores; cargo shows its progress below" >&2
else
  echo "building mongoferry (release), if anything changed…" >&2
fi
# Not --quiet: cargo's progress is what shows that the build is not hung.
cargo build --release --bin mongoferry

workdir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_server() { # name port
  .venv/bin/secantusd-py --host 127.0.0.1 --port "$2" --storage-path "$workdir/$1" \
    --log-level WARNING >"$workdir/$1.log" 2>&1 &
  pids+=($!)
}

wait_port() { # port
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "test server on port $1 did not start" >&2
  return 1
}

src_port=$(free_port)
start_server source "$src_port"
dst_port=$(free_port)
start_server destination "$dst_port"
wait_port "$src_port"
wait_port "$dst_port"
src="mongodb://127.0.0.1:$src_port/?directConnection=true"
dst="mongodb://127.0.0.1:$dst_port/?directConnection=true"
echo "source:      $src" >&2
echo "destination: $dst" >&2

echo "seeding sample data…" >&2
"$bin" sample --to "$src" --ns shop.orders --count "${DEMO_DOCS:-100000}" --doc-size 1024 --quiet
"$bin" sample --to "$src" --ns shop.customers --count 20000 --doc-size 512 --quiet

echo "copying shop.orders and shop.customers (as archive.customers)…" >&2
# The demo's servers are gone afterwards, so its checkpoint lives and goes with them.
"$bin" copy --from "$src" --to "$dst" --state "$workdir/copy-state.db" \
  --ns shop.orders --ns shop.customers:archive.customers --workers 4

#!/usr/bin/env bash
# Fuzzes the HTTP API of a real `mongoferry serve` with schemathesis (pinned, in the .venv that
# scripts/setup-test-env.sh makes), from the OpenAPI document the service serves: every check
# schemathesis has, bounded in examples per operation and in time; it fails on any 5xx and on any
# answer that does not match the document. The service runs with an API token (sent by the fuzzer;
# `ignored_auth` checks that requests without it are refused) and with --allow-cluster limited to
# the one test server started here, on loopback, so no generated URI can make it connect
# anywhere else. Two jobs (one completed, one failed) give the job routes real views to return.
# Prints the number of requests sent and their statuses (read from schemathesis' HAR report).
#
# Usage: bash scripts/fuzz-api.sh  (MONGOFERRY_BIN: the binary, default target/debug/mongoferry;
# FUZZ_MAX_EXAMPLES, FUZZ_MAX_TIME: the bounds; FUZZ_REPORT_DIR: where the HAR report and
# schemathesis' log go, default target/fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${MONGOFERRY_BIN:-target/debug/mongoferry}
max_examples=${FUZZ_MAX_EXAMPLES:-30}
max_time=${FUZZ_MAX_TIME:-75}
py=.venv/bin/python
[ -x "$bin" ] || { echo "$bin is missing: cargo build --bin mongoferry" >&2; exit 1; }
[ -x .venv/bin/schemathesis ] || { echo "schemathesis is missing: bash scripts/setup-test-env.sh" >&2; exit 1; }

workdir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # what, command...: polls for up to 60 s
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
  echo "fuzz: timed out waiting for $what" >&2
  return 1
}

# One test server, in memory: both sides of the seeded jobs.
port=$(free_port)
.venv/bin/secantusd-py --host 127.0.0.1 --port "$port" --storage-path :memory: --log-level WARNING \
  >"$workdir/secantusd.log" 2>&1 &
pids+=($!)
wait_for "the test server" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
uri="mongodb://127.0.0.1:$port/?directConnection=true"

token=$("$py" -c 'import secrets; print(secrets.token_urlsafe(32))')
(umask 077 && printf '%s\n' "$token" >"$workdir/token")
"$bin" serve --listen 127.0.0.1:0 --no-state --auth-token-file "$workdir/token" \
  --allow-cluster "127.0.0.1:$port" --shutdown-timeout 5 2>"$workdir/serve.log" &
pids+=($!)
serve_pid=$!
wait_for "mongoferry serve" grep -q "serving on" "$workdir/serve.log"
base=$(sed -n 's/.*serving on \(http[^ ]*\).*/\1/p' "$workdir/serve.log" | head -1)

api() { # method path [json]
  curl -sS --max-time 10 -X "$1" "$base$2" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' ${3:+-d "$3"}
}
"$bin" sample --to "$uri" --ns shop.orders --count 300 --doc-size 200 --quiet
api POST /api/jobs "{\"from\": \"$uri\", \"to\": \"$uri\", \"namespaces\": [\"shop.orders:copy.orders\"]}" >/dev/null
api POST /api/jobs "{\"from\": \"$uri\", \"to\": \"$uri\", \"namespaces\": [\"shop.nothere:copy.nothere\"]}" >/dev/null
seeded() { [ "$(api GET /api/jobs | "$py" -c 'import json,sys; print(sum(j["state"] in ("completed","failed") for j in json.load(sys.stdin)["jobs"]))')" = 2 ]; }
wait_for "the seeded jobs to end" seeded

reports=${FUZZ_REPORT_DIR:-target/fuzz}
mkdir -p "$reports"
reports=$(cd "$reports" && pwd)
config=$PWD/scripts/schemathesis.toml
st=$PWD/.venv/bin/schemathesis
echo "fuzz: schemathesis $(.venv/bin/schemathesis --version | awk '{print $NF}') against $base (allow-cluster 127.0.0.1:$port), at most $max_examples examples per operation, $max_time s" >&2
status=0
# From the report directory: schemathesis keeps its cache (.schemathesis/) where it runs.
(cd "$reports" && timeout $((max_time + 90)) "$st" --config-file "$config" run \
  "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --request-timeout 10 \
  --report har --report-har-path "$reports/fuzz.har" \
  --no-color >"$reports/schemathesis.log" 2>&1) || status=$?
tail -n 40 "$reports/schemathesis.log"

# What was sent and answered, from the report; any 5xx fails the run whatever schemathesis said.
"$py" - "$reports/fuzz.har" <<'EOF' || status=1
import collections, json, sys
entries = json.load(open(sys.argv[1]))["log"]["entries"]
statuses = collections.Counter(e["response"]["status"] for e in entries)
print(f"fuzz: {len(entries)} requests; statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
server_errors = sum(n for s, n in statuses.items() if s >= 500)
print(f"fuzz: {server_errors} answers 5xx")
sys.exit(1 if server_errors or not entries else 0)
EOF

if ! kill -0 "$serve_pid" 2>/dev/null; then
  echo "fuzz: mongoferry serve died during the run:" >&2
  cat "$workdir/serve.log" >&2
  status=1
fi
if grep -q "panicked" "$workdir/serve.log"; then
  echo "fuzz: mongoferry serve panicked:" >&2
  grep -A5 "panicked" "$workdir/serve.log" >&2
  status=1
fi
if grep -qF "$token" "$workdir/serve.log"; then
  echo "fuzz: the token is in the service's log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (schemathesis log above; exit $status)" >&2
else
  echo "fuzz: passed" >&2
fi
exit "$status"

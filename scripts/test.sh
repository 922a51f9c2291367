#!/usr/bin/env bash
# The whole test suite: installs the test server, chromium and the browser tests' npm packages
# (idempotent), checks formatting and lints, runs every unit and integration test, fuzzes the HTTP
# API of a real `mongoferry serve` with schemathesis (scripts/fuzz-api.sh), then the
# dashboard's tests in node's test runner (web/tests/: its helpers, and headless chromium against a
# real `mongoferry serve`; screenshots in target/screenshots/). Set MONGOFERRY_TEST_URI=mongodb://...
# to run the integration and browser tests against a real mongod instead of the SecantusDB servers
# the harnesses start.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --profile ci
else
  cargo test --locked
fi

# The fuzzer and the browser tests start the binary the integration tests used. `cargo build`
# here would compile it again (the tests' dev-dependencies enable other features of shared
# crates), so it is built only if missing.
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
[ -x "$target_dir/debug/mongoferry" ] || cargo build --locked --bin mongoferry
MONGOFERRY_BIN="$target_dir/debug/mongoferry" bash scripts/fuzz-api.sh
(cd web/tests && MONGOFERRY_BIN="$target_dir/debug/mongoferry" node --test)

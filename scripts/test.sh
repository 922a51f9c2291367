#!/usr/bin/env bash
# The whole test suite: installs the test server (idempotent), checks formatting and lints, runs
# every unit and integration test. Set MONGOFERRY_TEST_URI=mongodb://... to run the integration
# tests against a real mongod instead of the SecantusDB servers the harness starts.
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

#!/usr/bin/env bash
# Installs what the tests, the benchmark and the demo need (idempotent): SecantusDB, the
# MongoDB-compatible test server, and pymongo (an independent Extended JSON parser for the journal
# export tests), pinned, in an ignored venv at .venv/; then, unless MONGOFERRY_SKIP_FUZZER=1,
# schemathesis (the API fuzzer of scripts/fuzz-api.sh) in the same venv; then, unless
# MONGOFERRY_SKIP_PROMTOOL=1, promtool (taken out of Debian's prometheus package into .tools/bin/,
# nothing installed system-wide) to check deploy/prometheus/alerts.yml; then, unless
# MONGOFERRY_SKIP_BROWSER=1, what the dashboard's browser tests need
# (scripts/setup-browser-env.sh: Debian's chromium, node and npm, the npm packages of web/tests/).
# The demo sets both: it needs only the test server.
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUSDB_VERSION=0.7.0b3
SCHEMATHESIS_VERSION=4.32.5
PYTHON=${PYTHON:-python3}

if ! { [ -x .venv/bin/secantusd-py ] && .venv/bin/python -c \
    "import importlib.metadata as m, sys, bson.json_util; sys.exit(m.version('secantusdb') != '$SECANTUSDB_VERSION')" 2>/dev/null; }; then
  echo "setting up the test server (SecantusDB $SECANTUSDB_VERSION) in .venv/" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "secantusdb==$SECANTUSDB_VERSION" pymongo
  .venv/bin/secantusd-py --help >/dev/null
  .venv/bin/python -c "import bson.json_util"
fi

if [ "${MONGOFERRY_SKIP_FUZZER:-}" != 1 ] && ! .venv/bin/python -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  echo "setting up the API fuzzer (schemathesis $SCHEMATHESIS_VERSION) in .venv/" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  .venv/bin/schemathesis --version >/dev/null
fi

if [ "${MONGOFERRY_SKIP_PROMTOOL:-}" != 1 ] && [ ! -x .tools/bin/promtool ] \
    && ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "fetching promtool (Debian's prometheus package, unpacked into .tools/)" >&2
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  unpack=$(mktemp -d)
  trap 'rm -rf "$unpack"' EXIT
  if ! (cd "$unpack" && apt-get download -q prometheus >/dev/null 2>&1); then
    as_root apt-get update -q >/dev/null
    (cd "$unpack" && apt-get download -q prometheus >/dev/null 2>&1)
  fi
  dpkg-deb -x "$unpack"/prometheus_*.deb "$unpack/x"
  mkdir -p .tools/bin
  cp "$unpack/x/usr/bin/promtool" .tools/bin/promtool
  rm -rf "$unpack"
  trap - EXIT
  .tools/bin/promtool --version >/dev/null
fi

if [ "${MONGOFERRY_SKIP_BROWSER:-}" != 1 ]; then
  bash scripts/setup-browser-env.sh
fi

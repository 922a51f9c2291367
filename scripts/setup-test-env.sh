#!/usr/bin/env bash
# Installs what the tests, the benchmark and the demo need into the repo (idempotent):
# SecantusDB, the MongoDB-compatible test server, in an ignored venv at .venv/, and pymongo (an
# independent Extended JSON parser for the journal export tests; SecantusDB depends on it too).
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUSDB_VERSION=0.7.0b3
PYTHON=${PYTHON:-python3}

if [ -x .venv/bin/secantusd-py ] && .venv/bin/python -c \
    "import importlib.metadata as m, sys, bson.json_util; sys.exit(m.version('secantusdb') != '$SECANTUSDB_VERSION')" 2>/dev/null; then
  exit 0
fi
echo "setting up the test server (SecantusDB $SECANTUSDB_VERSION) in .venv/" >&2
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "secantusdb==$SECANTUSDB_VERSION" pymongo
.venv/bin/secantusd-py --help >/dev/null
.venv/bin/python -c "import bson.json_util"

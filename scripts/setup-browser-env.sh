#!/usr/bin/env bash
# Installs what the dashboard's browser tests (web/tests/) need, idempotently: Debian's chromium
# (apt, only when `chromium` is not on the PATH) and the npm packages pinned in
# web/tests/package-lock.json (`npm ci`, only when node_modules is missing or was installed from
# another lock file). Never `npx playwright install`: the tests drive the chromium apt installed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -q
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian's package) for the browser tests" >&2
  apt_install chromium
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "installing node and npm (Debian's packages) for the browser tests" >&2
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "the browser tests need node 20 or later (playwright-core); found $(node --version)" >&2
  exit 1
fi

lock=web/tests/package-lock.json
stamp=web/tests/node_modules/.installed-from-lock
if ! cmp -s "$lock" "$stamp"; then
  echo "installing the browser tests' npm packages (npm ci in web/tests)" >&2
  (cd web/tests && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$stamp"
fi

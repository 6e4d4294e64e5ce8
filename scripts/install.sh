#!/usr/bin/env bash
# Sets up .venv with everything MagicID needs, offline-capable models included.
# --dev adds the test tools and Debian's chromium, which the browser tests drive through Playwright.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[ "${1:-}" = "--dev" ] && dev=true

[ -x .venv/bin/python ] || python3 -m venv .venv
log=.venv/install.log
: > "$log"
pip_install() {
  # pip's per-package chatter goes to the log; it is printed only when an install fails
  .venv/bin/python -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 || { cat "$log"; exit 1; }
}
pip_install -r requirements.txt
pip_install --no-deps -r requirements-nodeps.txt

if $dev; then
  pip_install -r requirements-dev.txt
  if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
echo "MagicID environment ready in .venv"

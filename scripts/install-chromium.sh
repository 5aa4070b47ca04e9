#!/usr/bin/env bash
# Install what the portal's browser tests (services/portal/tests/browser) need: Debian's Chromium, driven by
# the Playwright Python package (Playwright's own browser download is not used: it cannot run offline).
# Idempotent: does nothing when /usr/bin/chromium is there. Never fails the caller: without root (or
# without apt-get) it says what is missing and exits 0, and the browser tests skip saying why.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo "chromium (version unknown)")"
  exit 0
fi
echo "install-chromium: /usr/bin/chromium is missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium: not root, so not installing; as root run: apt-get install chromium" \
       "(the browser tests skip meanwhile)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get on this machine; install Chromium at /usr/bin/chromium by hand" \
       "(the browser tests skip meanwhile)"
  exit 0
fi
apt_log=$(mktemp)
trap 'rm -f "$apt_log"' EXIT
echo "install-chromium: apt-get update"
if ! apt-get update -qq >"$apt_log" 2>&1; then
  echo "install-chromium: apt-get update failed (the browser tests will skip):"; tail -n 20 "$apt_log"
  exit 0
fi
echo "install-chromium: apt-get install --no-install-recommends chromium fonts-dejavu-core"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core \
     >"$apt_log" 2>&1; then
  echo "install-chromium: apt-get install failed (the browser tests will skip):"; tail -n 20 "$apt_log"
  exit 0
fi
echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null)"

#!/usr/bin/env bash
# Makes Debian's Chromium available for the browser tests (Playwright drives it; Playwright's own
# browser download cannot work here). Appends AIIMPL_CHROMIUM to the env file given as $1.
set -uo pipefail
ENV_FILE=${1:-/dev/null}
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-chromium: /usr/bin/chromium missing and not root; browser tests will skip"
    exit 1
  fi
  echo "setup-chromium: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
    echo "setup-chromium: apt-get install chromium failed; browser tests will skip"
    exit 1
  }
fi
echo "setup-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
echo "export AIIMPL_CHROMIUM=/usr/bin/chromium" >> "$ENV_FILE"

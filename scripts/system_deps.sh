#!/usr/bin/env bash
# Install the Debian packages the tests need (Chromium + driver for browser tests, PostgreSQL for the
# postgres tests) when any is missing; fonts-liberation (a Recommends of chromium, which we skip) makes
# pages render with real fonts. Idempotent and quiet: does nothing when all are present.
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-liberation postgresql)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system: ${PACKAGES[*]} already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    echo "system: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
fi

echo "system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${SUDO[@]}" apt-get update -qq >"$log" 2>&1 \
   || ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "system: apt-get failed" >&2
  exit 1
fi
echo "system: installed ${missing[*]}"

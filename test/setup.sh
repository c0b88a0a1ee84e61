#!/usr/bin/env bash
# Installs what the integration tests need beyond npm packages. Called by `npm test` (pretest).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
need=()
for cmd in curl; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "test/setup.sh: please install: ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

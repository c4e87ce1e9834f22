#!/usr/bin/env bash
# Installs what dfflow needs on Debian 12 (as root) and builds it into ./.venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages; the sandbox needs network namespaces)" >&2
  exit 1
fi

DEBIAN_PACKAGES=(redis-server redis-sentinel openvswitch-switch iproute2 iputils-ping ethtool procps
                 python3 python3-venv python3-dev gcc git)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The packaged services are not used: every chassis and test starts its own daemons.

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,bench]"
.venv/bin/python -c "import dfflow._core" || { echo "setup.sh: the compiled core did not build" >&2; exit 1; }
bash scripts/setup-neutron.sh  # MariaDB and dfflow[neutron], for the neutron-server tests
bash scripts/setup-ovn.sh      # OVN (ovn-central, ovn-host): the peer of `dfflow-bench migration --peer ovn`
echo "setup.sh: ready (.venv/bin/dfflow, .venv/bin/dfflow-controller, .venv/bin/dfflow-bench)"

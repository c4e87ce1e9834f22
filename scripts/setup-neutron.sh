#!/usr/bin/env bash
# Installs what the neutron-server tests need (as root, after scripts/setup.sh made .venv):
# MariaDB from Debian (Neutron's database; its packaged service is not used, the tests start their own)
# and the `neutron` extra of pyproject.toml (neutron, neutron-lib, PyMySQL, gunicorn) into .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg-query -W -f='${Status}' mariadb-server 2>/dev/null | grep -q "install ok installed"; then
  echo "setup-neutron.sh: installing mariadb-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
fi

# The extra's requirements, read from pyproject.toml (installing `.[neutron]` would rebuild dfflow itself).
mapfile -t requirements < <(.venv/bin/python -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["neutron"]))')
.venv/bin/python -m pip install -q "${requirements[@]}"
.venv/bin/python -c "import neutron, pymysql, gunicorn" || { echo "setup-neutron.sh: neutron did not install" >&2; exit 1; }
echo "setup-neutron.sh: ready (neutron $(.venv/bin/python -c 'from importlib.metadata import version; print(version("neutron"))'))"

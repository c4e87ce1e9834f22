"""Neutron's API as a WSGI application for a WSGI server (gunicorn: `dfflow.neutron.wsgi:application`).

oslo.config parses `sys.argv`, which under a WSGI server holds the server's own options: they are cleared
before Neutron is imported. Neutron reads its configuration from `OS_NEUTRON_CONFIG_DIR` and
`OS_NEUTRON_CONFIG_FILES` (`;`-separated).
"""
import sys

del sys.argv[1:]

from neutron.wsgi.api import application  # noqa: E402

__all__ = ["application"]

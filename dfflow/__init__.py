"""dfflow: a distributed SDN controller built around VM live migration."""
from importlib.metadata import PackageNotFoundError, version as _version

from dfflow import core as _core_check  # noqa: F401  fail early if the compiled core is missing

try:
    __version__ = _version("dfflow")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

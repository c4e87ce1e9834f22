"""The compiled core's typed interface.

dfflow never falls back to a slow pure-Python path: without the extension the
package does not import, and says how to build it.
"""
try:
    from dfflow import _core
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "dfflow's compiled core (dfflow._core) is not built. Install the package with "
        "`pip install .` or build it in place with `python setup.py build_ext --inplace` "
        f"(needs cython and a C compiler): {exc}"
    ) from exc

mac_to_int = _core.mac_to_int
int_to_mac = _core.int_to_mac
ipv4_to_int = _core.ipv4_to_int
int_to_ipv4 = _core.int_to_ipv4

__all__ = ["mac_to_int", "int_to_mac", "ipv4_to_int", "int_to_ipv4"]

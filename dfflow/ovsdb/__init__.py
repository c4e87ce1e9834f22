"""A chassis' OVSDB: `jsonrpc` (RFC 7047 on one asyncio stream), `monitor` (Interface rows followed on the
loop), `chassis` (br-int and its tunnels configured through ovsdbapp, with the monitor)."""
import warnings

# python-ovs (under ovsdbapp) imports eventlet when it is installed (os-ken depends on it) and eventlet
# warns on import; dfflow does not use eventlet at all.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

"""dfflow's control plane: the per-chassis controller, its apps, the migration protocol, the sandbox."""
import warnings

# python-ovs (under ovsdbapp) imports eventlet when it is installed (os-ken depends on it) and eventlet
# warns on import; dfflow does not use eventlet at all.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

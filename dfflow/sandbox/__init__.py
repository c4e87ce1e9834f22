"""Multi-chassis sandbox: real Open vSwitch chassis in network namespaces on one machine.

- `topology.Sandbox`: up/down/status, VM and VIF plugging (see its module docstring for the layout
  and for how controllers reach OVS and the NB database across namespaces);
- `redisproc.RedisServer`: a private throw-away redis-server (also a test fixture);
- `cli.sandbox`: the ``dfflow sandbox`` click group.
"""
from .netns import SandboxError
from .redisproc import RedisServer
from .topology import DEFAULT_DIR, Chassis, Sandbox, Vif, Vm

__all__ = ["DEFAULT_DIR", "Chassis", "RedisServer", "Sandbox", "SandboxError", "Vif", "Vm"]

"""dfflow inside neutron-server: the ML2 mechanism driver `dfflow` and the router service plugin `dfflow-router`.

neutron-server keeps its own database, API, policies and Nova notifier; these write what Neutron decided to
the dfflow NB db (one small module per resource: networks, subnets, ports, routers, floating IPs) and bind
ports to the hosts that run a dfflow chassis. Install with `pip install dfflow[neutron]`.
"""

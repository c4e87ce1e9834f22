"""dfflow's northbound API: Neutron's v2.0 networking API over the NB database.

    dfflow api --nb redis://127.0.0.1:6379/0 --listen 127.0.0.1:9696 [--auth token --token T]

- `dfflow.api.app.create_app(nb_url, token=...)`: the ASGI (FastAPI) app.
- `dfflow.api.service.NeutronService(nb)`: the same operations without HTTP.
- `dfflow.nb.neutron.update_port_binding(nb, port_id, host)`: live migration's step 3
  (`binding:host_id` -> `LogicalPort.binding_chassis`), importable without the web stack.
- `dfflow.nb.bindings.create_binding / activate_binding / delete_binding(nb, port_id, host)`: the
  binding-extended extension (`/v2.0/ports/{id}/bindings`) without HTTP.
"""
from dfflow.nb.neutron import update_port_binding

__all__ = ["update_port_binding", "create_app", "NeutronService"]


def __getattr__(name: str):  # the web stack is imported only when asked for
    if name == "create_app":
        from dfflow.api.app import create_app
        return create_app
    if name == "NeutronService":
        from dfflow.api.service import NeutronService
        return NeutronService
    raise AttributeError(name)

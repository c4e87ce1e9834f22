"""python-neutronclient built as Nova builds it (nova/network/neutron.py, `get_client`).

Nova hands neutronclient a keystoneauth session and `connect_retries=[neutron] http_retries` (3 by
default). keystoneauth then sends a request again after a connection failure or a connect timeout,
waiting 0.5, 1, 2 s (doubling), for every method, POST included. It does not retry on a status code:
Nova sets no `status_code_retries`, so a 503 from Neutron reaches Nova as an error; the API rides out
a short NB outage itself for that reason. The sandbox has no Keystone: the session's auth is
keystoneauth's NoAuth with the API's endpoint, as Nova with `[neutron] auth_type = none` and an
endpoint override. Nova's service user holds the `admin` and `service` roles, which Neutron's policy
asks of the port-binding calls; with no Keystone token they are sent as `X-Roles`, the header
keystonemiddleware hands a token's roles on in (neutron-server with `auth_strategy = noauth` takes
them from it; `dfflow api` has no such policy).
"""
from __future__ import annotations

from neutronclient.v2_0 import client as neutron_client

HTTP_RETRIES = 3  # Nova's [neutron] http_retries default
NOVA_ROLES = "admin,service"


def nova_neutron_client(url: str, timeout: float = 10.0, http_retries: int = HTTP_RETRIES) -> neutron_client.Client:
    from keystoneauth1 import session
    from keystoneauth1.noauth import NoAuth

    nova_session = session.Session(auth=NoAuth(endpoint=url), timeout=timeout,
                                   additional_headers={"X-Roles": NOVA_ROLES})
    return neutron_client.Client(session=nova_session, service_type="network", endpoint_override=url,
                                 connect_retries=http_retries)

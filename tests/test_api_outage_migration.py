"""A live migration whose step 3 (Nova's update_port with binding:host_id) meets a short NB outage.

With Nova's legacy calls step 3 is show_port then that update_port. Nova does not retry a 503 from
Neutron (its client retries only connection failures), so the API rides out a short outage itself, as Neutron does for its database: the step-3 call returns once
Redis is back and the migration ends bound to the destination with no record left."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from controller_fixtures import migrate, network_with_vms, pings, running_cloud, wait_until

pytestmark = pytest.mark.ovs
IPS = {"A1": "10.0.0.11", "B1": "10.0.0.21"}
OUTAGE = 2.0


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        network_with_vms(c, {"A1": ("chassis-1", IPS["A1"]), "B1": ("chassis-2", IPS["B1"])})
        yield c


def test_a_step_3_that_meets_a_short_redis_outage_still_ends_bound_to_the_destination(cloud):
    sb = cloud.sb
    port_id = sb.vm("B1").vifs[0].port_id
    outage: dict[str, float] = {}

    def outage_after_step_2() -> None:  # Redis goes away once the VM runs on the destination
        with redis.Redis.from_url(cloud.url) as r:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                raw = r.get(f"dfflow:obj:lport:{port_id}")
                if raw and b'"state":"switched"' in raw:
                    break
                time.sleep(0.005)
        outage["start"] = time.time()
        sb.stop_nb()
        time.sleep(OUTAGE)
        outage["restart"] = time.time()  # Redis answers some time after this, before start_nb returns
        sb.start_nb()
        outage["end"] = time.time()

    fault = threading.Thread(target=outage_after_step_2)
    fault.start()
    result = migrate(cloud, "B1", "chassis-3", update_port_delay=0.5, nova_path="legacy")
    fault.join()
    step3 = result["origin"] + result["steps"]["unplug"] + 0.5  # Nova's post-migration calls begin
    assert outage["start"] < step3 < outage["restart"], (outage, step3)  # ... while Redis is away
    # and end once it is back: after its restart began (start_nb returns only after Redis already answers,
    # and the retried update_port may be done by then)
    assert result["origin"] + result["steps"]["update_port"] >= outage["restart"], (outage, result["steps"])
    port = cloud.nb("get", "lport", port_id)
    assert port.binding_chassis == "chassis-3" and port.migration is None
    wait_until(lambda: pings(sb, "A1", IPS["B1"]), 15, what="A1 -> B1 after its migration")

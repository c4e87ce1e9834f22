"""Small NB topologies for tests, written through the real NB API."""
from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch, RouterPort, Subnet, ExternalGateway

TOPIC = "tenant-a"


async def network(nb, name, cidr, vni, topic=TOPIC, external=False, gateway=True):
    ls = await nb.create(LogicalSwitch(id=name, topic=topic, name=name, segmentation_id=vni,
                                       router_external=external))
    gw = cidr.rsplit(".", 1)[0] + ".1" if gateway else None
    sn = await nb.create(Subnet(id=f"{name}-subnet", topic=topic, lswitch=name, cidr=cidr, gateway_ip=gw))
    return ls, sn


async def port(nb, port_id, lswitch, mac, ips, topic=TOPIC, chassis=None):
    return await nb.create(LogicalPort(id=port_id, topic=topic, lswitch=lswitch, mac=mac, ips=ips,
                                       binding_chassis=chassis))


async def router(nb, router_id, subnets, topic=TOPIC, external=None):
    ports = []
    for i, sn in enumerate(subnets):
        ports.append(RouterPort(subnet=sn.id, mac=f"fa:16:3e:ff:00:{i + 1:02x}", ip=sn.gateway_ip))
    gw = ExternalGateway(**external) if external else None
    return await nb.create(LogicalRouter(id=router_id, topic=topic, ports=ports, external_gateway=gw))

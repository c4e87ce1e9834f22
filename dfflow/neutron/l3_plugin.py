"""The router service plugin `dfflow-router`: distributed routers and floating IPs, no L3 agent.

Neutron's own L3 database code does the work (its checks, its router and floating-IP ports); after each
operation the NB router or floating IP is written from what Neutron then holds. A create or an added
interface the NB db refuses is undone in Neutron and the request fails with the NB's reason."""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import Any, Callable, Iterator

from neutron.db import l3_db
from neutron.db.models import l3 as l3_models
from neutron.quota import resource_registry
from neutron_lib import constants as n_const
from neutron_lib.plugins import constants as plugin_constants
from neutron_lib.plugins import directory
from neutron_lib.services import base as service_base

from dfflow.models import FloatingIP, LogicalRouter
from dfflow.neutron import config, floatingips, maintenance, routers
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)


def _nb_follows(table: str, nb_write: Callable[[Any, Any, str, Any], None]) -> Callable[[Callable], Callable]:
    """Decorates a plugin method `(self, context, obj_id, ...)` that changes Neutron with the NB write that
    follows it, `nb_write(self, context, obj_id, result)`. Neutron committed already: a failed NB write
    marks the object for the sync (as the method's name says) and fails the call."""

    def decorate(method: Callable) -> Callable:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def followed(self: "DfflowRouterPlugin", context: Any, *args: Any, **kwargs: Any) -> Any:
            obj_id = list(signature.bind(self, context, *args, **kwargs).arguments.values())[2]
            result = method(self, context, *args, **kwargs)
            with maintenance.marked_on_failure(self.dirty, table, obj_id, method.__name__):
                nb_write(self, context, obj_id, result)
            return result

        return followed

    return decorate


class DfflowRouterPlugin(service_base.ServicePluginBase, l3_db.L3_NAT_dbonly_mixin):
    supported_extension_aliases = ["router"]
    __native_pagination_support = True
    __native_sorting_support = True
    __filter_validation_support = True

    @resource_registry.tracked_resources(router=l3_models.Router, floatingip=l3_models.FloatingIP)
    def __init__(self) -> None:
        super().__init__()
        self.nb = NbClient(**config.nb_client_args())
        self.dirty = maintenance.process_marks(self.nb)

    def get_plugin_type(self) -> str:
        return plugin_constants.L3

    def get_plugin_description(self) -> str:
        return "dfflow: distributed routers and floating IPs in the dfflow NB db"

    # -- routers -------------------------------------------------------------------------------------
    def create_router(self, context: Any, router: dict) -> dict:
        created = super().create_router(context, router)
        with _undone_on_error(lambda: super(DfflowRouterPlugin, self).delete_router(context, created["id"])):
            self._write_router(context, created["id"])
        return created

    @_nb_follows(LogicalRouter.table, lambda self, context, router_id, _: self._write_router(context, router_id))
    def update_router(self, context: Any, id: str, router: dict) -> dict:
        return super().update_router(context, id, router)

    @_nb_follows(LogicalRouter.table, lambda self, context, router_id, _: routers.delete(self.nb, router_id))
    def delete_router(self, context: Any, id: str) -> None:
        super().delete_router(context, id)

    def add_router_interface(self, context: Any, router_id: str, interface_info: dict | None = None) -> dict:
        info = super().add_router_interface(context, router_id, interface_info)
        undo = lambda: super(DfflowRouterPlugin, self).remove_router_interface(  # noqa: E731
            context, router_id, {"port_id": info["port_id"]})
        with _undone_on_error(undo):
            self._write_router(context, router_id)
        return info

    @_nb_follows(LogicalRouter.table, lambda self, context, router_id, _: self._write_router(context, router_id))
    def remove_router_interface(self, context: Any, router_id: str, interface_info: dict) -> dict:
        return super().remove_router_interface(context, router_id, interface_info)

    def _write_router(self, context: Any, router_id: str) -> None:
        admin = context.elevated()
        router = self.get_router(admin, router_id)
        core = directory.get_plugin()
        interfaces = core.get_ports(admin, filters={"device_id": [router_id],
                                                    "device_owner": [n_const.DEVICE_OWNER_ROUTER_INTF]})
        gw_port = core.get_port(admin, router["gw_port_id"]) if router.get("gw_port_id") else None
        routers.write(self.nb, router, interfaces, gw_port)

    # -- floating IPs --------------------------------------------------------------------------------
    def create_floatingip(self, context: Any, floatingip: dict,
                          initial_status: str = n_const.FLOATINGIP_STATUS_ACTIVE) -> dict:
        created = super().create_floatingip(context, floatingip, initial_status)
        with _undone_on_error(lambda: super(DfflowRouterPlugin, self).delete_floatingip(context, created["id"])):
            self._write_floatingip(context, created)
        return created

    @_nb_follows(FloatingIP.table, lambda self, context, _, updated: self._write_floatingip(context, updated))
    def update_floatingip(self, context: Any, id: str, floatingip: dict) -> dict:
        return super().update_floatingip(context, id, floatingip)

    @_nb_follows(FloatingIP.table, lambda self, context, fip_id, _: floatingips.delete(self.nb, fip_id))
    def delete_floatingip(self, context: Any, id: str) -> None:
        super().delete_floatingip(context, id)

    def _write_floatingip(self, context: Any, fip: dict) -> None:
        own = directory.get_plugin().get_ports(context.elevated(), filters={
            "device_id": [fip["id"]], "device_owner": [n_const.DEVICE_OWNER_FLOATINGIP]})
        floatingips.write(self.nb, fip, own[0]["mac_address"])


@contextlib.contextmanager
def _undone_on_error(undo: Callable[[], Any]) -> Iterator[None]:
    """On an exception inside, undo the Neutron change (a failed undo is logged) and re-raise it."""
    try:
        yield
    except Exception:
        try:
            undo()
        except Exception:
            LOG.exception("could not undo in Neutron a change the NB db refused")
        raise

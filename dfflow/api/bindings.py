"""Neutron's `binding-extended` extension: a port's bindings under `/v2.0/ports/{port_id}/bindings`.

    GET    /v2.0/ports/{port_id}/bindings                   list (filters host, vif_type, vnic_type, status; fields)
    POST   /v2.0/ports/{port_id}/bindings                   {"binding": {"host", "vnic_type"?, "profile"?}} -> INACTIVE
    GET    /v2.0/ports/{port_id}/bindings/{host}            one binding
    PUT    /v2.0/ports/{port_id}/bindings/{host}/activate   no body: the binding becomes the ACTIVE one
    DELETE /v2.0/ports/{port_id}/bindings/{host}            204

The NB logic is `dfflow.nb.bindings` (one compare-and-set write per change); this module reads the
request, shapes the replies as Neutron does and gives its errors: 404 PortNotFound/PortBindingNotFound,
409 PortBindingAlreadyExists/PortBindingAlreadyActive/PortBindingError, 400 naming the field.
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dfflow.api.attributes import BINDING, parse_body
from dfflow.api.errors import ApiError, bad_request, conflict, translate
from dfflow.api.query import parse_query, run
from dfflow.api.views import Snapshot, binding_view
from dfflow.errors import DfflowError, ValidationError, refused_as
from dfflow.models import LogicalPort
from dfflow.nb import bindings

_CONFLICTS = {bindings.BindingExists: "PortBindingAlreadyExists",
              bindings.BindingAlreadyActive: "PortBindingAlreadyActive",
              bindings.BindingFailed: "PortBindingError"}


def neutron_error(exc: DfflowError) -> ApiError:
    """The Neutron error for a refusal of `dfflow.nb.bindings`."""
    if isinstance(exc, bindings.BindingNotFound):
        return ApiError(404, "PortBindingNotFound", str(exc))
    for kind, type_ in _CONFLICTS.items():
        if isinstance(exc, kind):
            return conflict(type_, str(exc))
    if isinstance(exc, bindings.NotAComputePort):
        return ApiError(400, "BadRequest", f"Bad port request: {exc.message}.")
    if isinstance(exc, ValidationError) and exc.table is None:
        return bad_request(exc.field, exc.message)
    return translate(exc, LogicalPort.table)


def _neutron_errors() -> contextlib.AbstractContextManager[None]:
    return refused_as(neutron_error)


class BindingService:
    """The extension's operations over the NB, taking and returning Neutron-shaped dicts. No HTTP."""

    def __init__(self, nb: Any):
        self.nb = nb

    async def _port(self, port_id: str) -> LogicalPort:
        port = await self.nb.get_or_raise(LogicalPort.table, port_id)
        bindings.check_compute(port)
        return port

    async def _view(self, port: LogicalPort, host: str) -> dict[str, Any]:
        return binding_view(port, bindings.binding_of(port, host), await Snapshot.for_port(self.nb, port))

    async def list(self, port_id: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        query = parse_query(BINDING, params)
        with _neutron_errors():
            port = await self._port(port_id)
        snap = await Snapshot.for_port(self.nb, port)
        # The query runner orders and pages by `id`; a binding's key is its host.
        items = [dict(binding_view(port, b, snap), id=b.host) for b in bindings.bindings_of(port)]
        shown = run(query, items).items
        return [{k: v for k, v in item.items() if k != "id" or "id" in query.fields} for item in shown]

    async def show(self, port_id: str, host: str, fields: list[str]) -> dict[str, Any]:
        with _neutron_errors():
            view = await self._view(await self._port(port_id), host)
        return {k: view[k] for k in fields if k in view} if fields else view

    async def create(self, port_id: str, body: Any) -> dict[str, Any]:
        data = parse_body(BINDING, body, "POST")
        with _neutron_errors():
            port = await bindings.create_binding(self.nb, port_id, data["host"],
                                                 data.get("vnic_type", "normal"), data.get("profile"))
            return await self._view(port, data["host"])

    async def activate(self, port_id: str, host: str) -> dict[str, Any]:
        with _neutron_errors():
            return await self._view(await bindings.activate_binding(self.nb, port_id, host), host)

    async def delete(self, port_id: str, host: str) -> None:
        with _neutron_errors():
            await bindings.delete_binding(self.nb, port_id, host)


async def _no_body(request: Request) -> None:
    """Nova activates with no body (Neutron fails on one); an empty object is tolerated, anything else refused."""
    raw = (await request.body()).strip()
    if not raw:
        return
    try:
        if json.loads(raw) == {}:
            return
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    raise ApiError(400, "HTTPBadRequest", "Invalid input for activate. Reason: it takes no request body.")


def add_routes(app: FastAPI, service: Callable[[], BindingService],
               json_body: Callable[[Request], Awaitable[Any]]) -> None:
    base = "/v2.0/ports/{port_id}/bindings"

    async def list_bindings(request: Request, port_id: str) -> JSONResponse:
        params = list(request.query_params.multi_items())
        return JSONResponse({"bindings": await service().list(port_id, params)})

    async def create(request: Request, port_id: str) -> JSONResponse:
        body = await json_body(request)
        return JSONResponse({"binding": await service().create(port_id, body)}, status_code=201)

    async def show(request: Request, port_id: str, host: str) -> JSONResponse:
        fields = [f for v in request.query_params.getlist("fields") for f in v.split(",") if f]
        return JSONResponse({"binding": await service().show(port_id, host, fields)})

    async def activate(request: Request, port_id: str, host: str) -> JSONResponse:
        await _no_body(request)
        return JSONResponse({"binding": await service().activate(port_id, host)})

    async def delete(port_id: str, host: str) -> Response:
        await service().delete(port_id, host)
        return Response(status_code=204)

    for path, method, handler, name in (
            (base, "GET", list_bindings, "list_port_bindings"),
            (base, "POST", create, "create_port_binding"),
            (base + "/{host}", "GET", show, "show_port_binding"),
            (base + "/{host}/activate", "PUT", activate, "activate_port_binding"),
            (base + "/{host}", "DELETE", delete, "delete_port_binding")):
        app.add_api_route(path, handler, methods=[method], name=name, include_in_schema=False)

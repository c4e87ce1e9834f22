"""The HTTP shell: FastAPI routes around `NeutronService`, Neutron's version documents, auth and limits.

Every request passes `_Gate` first (pure ASGI, before any parsing): it drops a trailing slash, checks
`X-Auth-Token` when token auth is on, and refuses a body over the size limit with 413 without reading
it all. Errors of any kind leave as `{"NeutronError": {...}}`; bad input is always a 4xx.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dfflow.api import bindings, metrics, openapi, secgroups
from dfflow.api.attributes import RESOURCES
from dfflow.api.errors import ApiError, translate
from dfflow.api.service import NeutronService
from dfflow.errors import DfflowError

LOG = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # 1 MiB
NB_WAIT = 10.0  # s a request rides out an unreachable NB db (as Neutron retries its database) before a 503
RETRY_AFTER = 2  # s: what a 503 tells the client to wait before trying again
NB_CONNECTIONS = 64  # per API process; concurrent requests beyond wait for a connection
PUBLIC_PATHS = ("/", "/v2.0")  # version discovery needs no token, as in Neutron
_DRAIN_FACTOR = 16  # an oversized body up to this many times the limit is read and dropped, not cut off
_IF_MATCH = re.compile(r'^\s*"?revision_number=(\d{1,18})"?\s*$')

EXTENSIONS = (
    ("binding", "Port Binding", "binding:host_id, binding:profile, binding:vif_type on ports"),
    ("binding-extended", "Port Bindings Extended", "A port's bindings to several hosts (one active): "
                                                   "/v2.0/ports/{port_id}/bindings"),
    ("external-net", "Neutron external network", "router:external on networks"),
    ("router", "Neutron L3 Router", "Routers, router interfaces, external gateways, floating IPs"),
    ("provider", "Provider Network", "provider:network_type and provider:segmentation_id (geneve VNI)"),
    ("net-mtu", "Network MTU", "mtu on networks"),
    ("port-security", "Port Security", "port_security_enabled on ports"),
    ("security-group", "security-group", "Security groups and their rules; security_groups on ports"),
    ("allowed-address-pairs", "Allowed Address Pairs", "allowed_address_pairs on ports: more addresses "
                                                       "(or CIDRs) a port may send from"),
    ("project-id", "project_id field enabled", "project_id beside tenant_id"),
    ("standard-attr-revisions", "Resource revision numbers", "revision_number: the NB version"),
    ("revision-if-match", "If-Match constraints based on revision_number", "compare-and-set updates"),
    ("pagination", "Pagination support", "limit, marker, page_reverse"),
    ("sorting", "Sorting support", "sort_key, sort_dir"),
)


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class _Gate:
    """Trailing slashes, token auth and the body size limit, ahead of the framework."""

    def __init__(self, app: Any, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/") or "/")
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].rstrip(b"/") or b"/"
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        if self.token is not None and scope["path"] not in PUBLIC_PATHS:
            given = headers.get(b"x-auth-token", b"")
            if not hmac.compare_digest(given, self.token.encode()):
                await self._refuse(scope, receive, send, ApiError(
                    401, "HTTPUnauthorized", "Authentication required: send a valid X-Auth-Token header."), 0)
                return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(scope, receive, send, ApiError(400, "HTTPBadRequest",
                                                                  "Malformed Content-Length header."), 0)
                return
            if length > self.max_body:
                await self._refuse(scope, receive, send, self._too_large(),
                                   length if length <= self.max_body * _DRAIN_FACTOR else 0)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body", False):
                    await self._drain(receive, self.max_body * _DRAIN_FACTOR - size)
                await self._respond(send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, "HTTPRequestEntityTooLarge",
                        f"Request body is larger than the limit of {self.max_body} bytes.")

    async def _drain(self, receive: Callable, budget: int) -> None:
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope: dict, receive: Callable, send: Callable, exc: ApiError, drain: int) -> None:
        if drain:
            await self._drain(receive, drain)
        await self._respond(send, exc)

    @staticmethod
    async def _respond(send: Callable, exc: ApiError) -> None:
        body = json.dumps(exc.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type")
    if ctype:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(415, "HTTPUnsupportedMediaType",
                           f"Unsupported Content-Type '{media}': send application/json.")
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "HTTPBadRequest", "Resource body required")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "HTTPBadRequest", "Malformed request body: not valid JSON") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _if_revision(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    found = _IF_MATCH.match(header.split(",", 1)[0])
    if found is None:
        raise ApiError(400, "HTTPBadRequest", "Invalid input for If-Match. Reason: expected "
                                              "'revision_number=<integer>'.")
    return int(found.group(1))


def _project(request: Request, default: str) -> str:
    return request.headers.get("x-project-id") or request.headers.get("x-tenant-id") or default


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def create_app(nb_url: str, *, token: str | None = None, default_project: str = "admin",
               max_body: int = MAX_BODY, nb_prefix: str = "dfflow", nova: Any = None,
               nb_wait: float = NB_WAIT) -> Any:
    """The ASGI app serving Neutron's v2.0 API over the NB db at `nb_url`.

    `nb_wait`: for how long a request waits for an unreachable NB db to come back (its writes are
    one Redis transaction each, redone whole and exactly once) before it answers 503 with Retry-After.

    `token`: when set, every request but version discovery must carry `X-Auth-Token: <token>`.
    `nova`: a `dfflow.nova.notifier.NovaConfig`: the app also runs the Nova notifier (VIF events).
    """
    from dfflow.nb.store import NbApi

    state: dict[str, Any] = {}

    def service() -> NeutronService:
        if "svc" not in state:  # made on first use, on the serving event loop
            state["svc"] = NeutronService(NbApi(nb_url, prefix=nb_prefix, outage_wait=nb_wait,
                                                     pool_size=NB_CONNECTIONS), default_project)
        return state["svc"]

    def secgroup_service() -> secgroups.SecurityGroupService:
        return secgroups.SecurityGroupService(service().nb, default_project)

    def binding_service() -> bindings.BindingService:
        return bindings.BindingService(service().nb)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        notifier = None
        if nova is not None:
            from dfflow.nova.notifier import NovaNotifier
            notifier = state["notifier"] = NovaNotifier(nb_url, nova, prefix=nb_prefix)
            notifier.launch()
        yield
        if notifier is not None:
            await notifier.stop()
        if "svc" in state:
            await state.pop("svc").nb.close()

    try:
        from importlib.metadata import version
        app_version = version("dfflow")
    except Exception:  # pragma: no cover - not installed
        app_version = "0"
    app = FastAPI(title="dfflow networking API (Neutron v2.0)", version=app_version, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json", redirect_slashes=False, lifespan=lifespan)
    document = openapi.build(token is not None, app.title, app_version)
    app.openapi = lambda: document  # type: ignore[method-assign]
    metrics.add_route(app, lambda: service().nb)

    # -- errors ------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(DfflowError)
    async def on_nb_error(_: Request, exc: DfflowError) -> JSONResponse:
        return _error_response(translate(exc, ""))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: ("HTTPNotFound", "The resource could not be found."),
                 405: ("HTTPMethodNotAllowed", "The method is not allowed for this resource.")}
        type_, message = names.get(exc.status_code, (f"HTTP{exc.status_code}", str(exc.detail)))
        return _error_response(ApiError(exc.status_code, type_, message, dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(ApiError(400, "HTTPBadRequest", f"Invalid request: {exc.errors()[:1]}"))

    @app.exception_handler(RedisError)
    async def on_nb_down(request: Request, exc: RedisError) -> JSONResponse:
        LOG.error("NB database error on %s %s: %s", request.method, request.url.path, exc)
        return _error_response(ApiError(503, "ServiceUnavailable", f"The NB database is unavailable; "
                                                                   f"retry in {RETRY_AFTER} s.",
                                        {"Retry-After": str(RETRY_AFTER)}))

    # -- version discovery ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def versions(request: Request) -> JSONResponse:
        return JSONResponse({"versions": [_version(request)]})

    @app.get("/v2.0", include_in_schema=False)
    async def resources(request: Request) -> JSONResponse:
        # Neutron's `resources`, plus the `version` keystoneauth's discovery reads at a versioned URL.
        return JSONResponse({"version": _version(request), "resources": [
            {"name": r.singular, "collection": r.plural,
             "links": [{"href": f"{_base(request)}/v2.0/{r.url}", "rel": "self"}]} for r in RESOURCES.values()]})

    @app.get("/dfflow/status", include_in_schema=False)
    async def status() -> JSONResponse:
        notifier = state.get("notifier")
        return JSONResponse({"nova_notifier": notifier.status() if notifier is not None else None})

    @app.get("/v2.0/extensions", include_in_schema=False)
    async def extensions() -> JSONResponse:
        return JSONResponse({"extensions": [_extension(*e) for e in EXTENSIONS]})

    @app.get("/v2.0/extensions/{alias}", include_in_schema=False)
    async def extension(alias: str) -> JSONResponse:
        for ext in EXTENSIONS:
            if ext[0] == alias:
                return JSONResponse({"extension": _extension(*ext)})
        raise ApiError(404, "ExtensionNotFound", f"Extension with alias {alias} does not exist")

    # -- resources -------------------------------------------------------------------------------------
    def add(path: str, method: str, handler: Callable[..., Awaitable[Response]], name: str) -> None:
        app.add_api_route(path, handler, methods=[method], name=name, include_in_schema=False)

    for plural, resource in RESOURCES.items():
        serving: Any = secgroup_service if plural in secgroups.PLURALS else service
        url = resource.url
        add(f"/v2.0/{url}", "GET", _lister(plural, serving), f"list_{plural}")
        add(f"/v2.0/{url}", "POST", _creator(plural, serving), f"create_{resource.singular}")
        add(f"/v2.0/{url}/{{obj_id}}", "GET", _shower(plural, serving), f"show_{resource.singular}")
        add(f"/v2.0/{url}/{{obj_id}}", "PUT", _updater(plural, serving), f"update_{resource.singular}")
        add(f"/v2.0/{url}/{{obj_id}}", "DELETE", _deleter(plural, serving), f"delete_{resource.singular}")

    async def add_interface(request: Request, obj_id: str) -> JSONResponse:
        return JSONResponse(await service().add_router_interface(obj_id, await _json_body(request)))

    async def remove_interface(request: Request, obj_id: str) -> JSONResponse:
        return JSONResponse(await service().remove_router_interface(obj_id, await _json_body(request)))

    add("/v2.0/routers/{obj_id}/add_router_interface", "PUT", add_interface, "add_router_interface")
    add("/v2.0/routers/{obj_id}/remove_router_interface", "PUT", remove_interface, "remove_router_interface")
    bindings.add_routes(app, binding_service, _json_body)

    app.add_middleware(_Gate, token=token, max_body=max_body)
    return app


def _version(request: Request) -> dict[str, Any]:
    return {"id": "v2.0", "status": "CURRENT", "links": [{"href": f"{_base(request)}/v2.0/", "rel": "self"}]}


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "links": [],
            "updated": "2025-01-01T00:00:00-00:00"}


def _lister(plural: str, service: Callable[[], NeutronService]) -> Callable[..., Awaitable[Response]]:
    async def handler(request: Request) -> JSONResponse:
        params = list(request.query_params.multi_items())
        svc = service()
        if isinstance(svc, secgroups.SecurityGroupService):  # a first list makes the project's default group
            page = await svc.list(plural, params, _project(request, svc.default_project))
        else:
            page = await svc.list(plural, params)
        body: dict[str, Any] = {plural: page.items}
        if page.links:
            keep = [(k, v) for k, v in params if k not in ("limit", "marker", "page_reverse")]
            limit = request.query_params.get("limit")
            links = []
            for rel, marker, reverse in page.links:
                query = keep + [("limit", limit), ("marker", marker)] + ([("page_reverse", "True")] if reverse else [])
                links.append({"rel": rel, "href": f"{_base(request)}/v2.0/{RESOURCES[plural].url}?"
                                                  f"{urlencode(query)}"})
            body[f"{plural}_links"] = links
        return JSONResponse(body)
    return handler


def _creator(plural: str, service: Callable[[], NeutronService]) -> Callable[..., Awaitable[Response]]:
    singular = RESOURCES[plural].singular

    async def handler(request: Request) -> JSONResponse:
        svc = service()
        body = await _json_body(request)
        created = await svc.create(plural, body, _project(request, svc.default_project), wrapped=True)
        return JSONResponse({singular: created}, status_code=201)
    return handler


def _shower(plural: str, service: Callable[[], NeutronService]) -> Callable[..., Awaitable[Response]]:
    singular = RESOURCES[plural].singular

    async def handler(request: Request, obj_id: str) -> JSONResponse:
        fields = [f for v in request.query_params.getlist("fields") for f in v.split(",") if f]
        return JSONResponse({singular: await service().show(plural, obj_id, fields)})
    return handler


def _updater(plural: str, service: Callable[[], NeutronService]) -> Callable[..., Awaitable[Response]]:
    singular = RESOURCES[plural].singular

    async def handler(request: Request, obj_id: str) -> JSONResponse:
        revision = _if_revision(request)
        body = await _json_body(request)
        updated = await service().update(plural, obj_id, body, wrapped=True, if_revision=revision)
        return JSONResponse({singular: updated})
    return handler


def _deleter(plural: str, service: Callable[[], NeutronService]) -> Callable[..., Awaitable[Response]]:
    async def handler(obj_id: str) -> Response:
        await service().delete(plural, obj_id)
        return Response(status_code=204)
    return handler


__all__ = ["create_app", "MAX_BODY"]

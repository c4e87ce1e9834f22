"""The sandbox's Nova API, the part Neutron calls: `POST /v2.1/os-server-external-events`.

One process per sandbox (`python -m dfflow.sandbox.nova_events --dir D`), started by `sandbox up`
before `dfflow api`, whose Nova notifier posts here (`--nova-url`); a neutron-server's `[nova]`
notifier can post here too. Its URL (the compute endpoint, ending in `/v2.1`) is `nova.url` in the
sandbox's state, `nova_url` in `sandbox status`.

The servers it knows are the sandbox's VMs, read from the sandbox's state at each request as Nova
reads its instances from its database: a VM's uuid is the server, the chassis of its VIF its host.
It answers as Nova's API does (nova/api/openstack/compute/server_external_events.py):

- a body that is not `{"events": [event, ...]}` with known names, a uuid `server_uuid`, a known
  `status` and a string `tag`, or has other fields -> 400 `badRequest`, nothing taken;
- each event is echoed with `code` (and `status`): 200 (`completed`) if its server is known and has
  a host, 404 for an unknown server, 422 for one with no host (both `failed`);
- 200 if all were taken, 207 if some were not, 404 `itemNotFound` if none was.

Nova's compute manager waits for the events it expects (`wait_for_instance_event`, prepared before
the plug that causes them). The sandbox's Nova runs in other processes (`sandbox vm create`,
`vm migrate`, tests); they wait here with a long poll (`NovaEvents`):

    GET /sandbox/events?after=SEQ&name=N&server=S&tag=T&timeout=SECONDS
        -> {"events": [events taken after sequence number SEQ that match, oldest first], "last": SEQ'}

answered as soon as one matches, or with none after `timeout`; without `after`, only `last` (the
cursor a waiter notes before the plug). Each taken event carries its `seq`
and `at` (time.time() when it arrived) beside Nova's fields. `network-vif-unplugged` is taken and
kept like the others.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any, Mapping

import httpx

from dfflow.sandbox import procs, state
from dfflow.sandbox.netns import SandboxError

LOG = logging.getLogger(__name__)
API_ROOT = "/v2.1"
EVENTS_PATH = API_ROOT + "/os-server-external-events"
WAIT_PATH = "/sandbox/events"
PLUGGED = "network-vif-plugged"
UNPLUGGED = "network-vif-unplugged"
# the names Nova's schema takes (up to microversion 2.93)
EVENT_NAMES = frozenset({"network-changed", PLUGGED, UNPLUGGED, "network-vif-deleted", "volume-extended",
                         "power-update", "accelerator-request-bound", "volume-reimaged"})
EVENT_STATUSES = frozenset({"completed", "failed", "in-progress"})
EVENT_FIELDS = frozenset({"name", "server_uuid", "status", "tag"})
MAX_TAG = 255
MAX_BODY = 1 << 20
MAX_WAIT = 60.0  # s one long poll may hold; the client polls again for longer waits
KEPT_EVENTS = 100_000  # beyond it the oldest are forgotten (their seq stays taken)
START_TIMEOUT = 20.0


class BadRequest(ValueError):
    """A body Nova's schema refuses; the message names the field."""


def _check_event(index: int, event: Any) -> dict[str, str]:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise BadRequest(f"{where}: expected an object")
    unknown = sorted(set(event) - EVENT_FIELDS)
    if unknown:
        raise BadRequest(f"{where}: unexpected field(s) {', '.join(unknown)}")
    for field in ("name", "server_uuid"):
        if field not in event:
            raise BadRequest(f"{where}.{field}: required")
    if event["name"] not in EVENT_NAMES:
        raise BadRequest(f"{where}.name: {event['name']!r} is not one of {', '.join(sorted(EVENT_NAMES))}")
    server = event["server_uuid"]
    try:
        uuid.UUID(server)
    except (TypeError, ValueError, AttributeError):
        raise BadRequest(f"{where}.server_uuid: {server!r} is not a uuid") from None
    status = event.get("status", "completed")
    if status not in EVENT_STATUSES:
        raise BadRequest(f"{where}.status: {status!r} is not one of {', '.join(sorted(EVENT_STATUSES))}")
    tag = event.get("tag")
    if tag is not None and (not isinstance(tag, str) or len(tag) > MAX_TAG):
        raise BadRequest(f"{where}.tag: expected a string of at most {MAX_TAG} characters")
    return dict(event)


def parse_events(body: Any) -> list[dict[str, str]]:
    """The events of a request body, checked as Nova's schema checks them (BadRequest otherwise)."""
    if not isinstance(body, dict):
        raise BadRequest("body: expected an object with 'events'")
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise BadRequest(f"body: unexpected field(s) {', '.join(unknown)}")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise BadRequest("events: expected a non-empty list")
    return [_check_event(i, e) for i, e in enumerate(events)]


def answer(events: list[dict[str, str]], hosts: Mapping[str, str | None]
           ) -> tuple[int, dict[str, Any], list[dict[str, str]]]:
    """Nova's answer to checked `events`, given each known server's host (None: no host yet):
    (HTTP status, response body, the events taken)."""
    echoed, taken, status = [], [], 200
    for event in events:
        reply = dict(event)
        server = event["server_uuid"]
        if server not in hosts:
            reply.update(status="failed", code=404)
        elif hosts[server] is None:
            reply.update(status="failed", code=422)
        else:
            reply.update(status="completed", code=200)
            taken.append(dict(event, status=event.get("status", "completed"), host=hosts[server]))
        if reply["code"] != 200:
            status = 207
        echoed.append(reply)
    if not taken:
        return 404, {"itemNotFound": {"code": 404, "message": "No instances found for any event"}}, []
    return status, {"events": echoed}, taken


def sandbox_servers(sandbox_dir: str) -> dict[str, str | None]:
    """The sandbox's VMs as Nova's instances: uuid -> host (the chassis of its VIF that is up, else of
    its first VIF; None without VIFs)."""
    vms = (state.load(sandbox_dir) or {}).get("vms", {})
    hosts: dict[str, str | None] = {}
    for vm in vms.values():
        vifs = vm.get("vifs") or []
        up = [v for v in vifs if v.get("up")] or vifs
        hosts[vm["uuid"]] = up[0]["chassis"] if up else None
    return hosts


class EventLog:
    """The events taken, in arrival order, each with its `seq` and `at`; waiters woken at each arrival."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.last = 0
        self.stats: Counter[str] = Counter()
        self._arrived = asyncio.Condition()

    async def add(self, events: list[dict[str, Any]]) -> None:
        async with self._arrived:
            for event in events:
                self.last += 1
                self.events.append(dict(event, seq=self.last, at=time.time()))
                self.stats[event["name"]] += 1
            del self.events[:-KEPT_EVENTS]
            self._arrived.notify_all()

    def matching(self, after: int, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] > after
                and all(e.get(field) == value for field, value in filters.items())]

    async def wait(self, after: int, filters: Mapping[str, str], timeout: float) -> list[dict[str, Any]]:
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: self.matching(after, filters)), timeout)
            except asyncio.TimeoutError:
                pass
            return self.matching(after, filters)


def make_app(sandbox_dir: str, log: EventLog) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def external_events(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            if len(raw) > MAX_BODY:
                raise BadRequest(f"body: larger than {MAX_BODY} bytes")
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise BadRequest(f"body: not JSON ({exc})") from None
            events = parse_events(body)
        except BadRequest as exc:
            log.stats["bad_requests"] += 1
            LOG.warning("refused a request: %s", exc)
            return JSONResponse({"badRequest": {"code": 400, "message": str(exc)}}, status_code=400)
        code, reply, taken = answer(events, await asyncio.to_thread(sandbox_servers, sandbox_dir))
        log.stats["refused_events"] += len(events) - len(taken)
        await log.add(taken)
        for event in taken:
            LOG.info("event %s (%s) for port %s of server %s on %s", event["name"], event["status"],
                     event.get("tag"), event["server_uuid"], event["host"])
        return JSONResponse(reply, status_code=code)

    async def waited_events(request: Request) -> JSONResponse:
        query = request.query_params
        if "after" not in query:
            return JSONResponse({"events": [], "last": log.last, "stats": dict(log.stats)})
        try:
            after = int(query["after"])
            timeout = min(max(float(query.get("timeout", "0")), 0.0), MAX_WAIT)
        except ValueError as exc:
            return JSONResponse({"error": f"after/timeout: {exc}"}, status_code=400)
        filters = {field: query[param] for param, field in (("name", "name"), ("server", "server_uuid"),
                                                            ("tag", "tag")) if param in query}
        found = await log.wait(after, filters, timeout) if timeout else log.matching(after, filters)
        return JSONResponse({"events": found, "last": log.last, "stats": dict(log.stats)})

    async def root(request: Request) -> JSONResponse:
        return JSONResponse({"version": {"id": "v2.1", "status": "CURRENT"}})

    return Starlette(routes=[Route(EVENTS_PATH, external_events, methods=["POST"]),
                             Route(WAIT_PATH, waited_events, methods=["GET"]),
                             Route(API_ROOT, root, methods=["GET"])])


# -- the process, as `sandbox up` starts it ------------------------------------------------------------
def start(sandbox_dir: str, port: int) -> subprocess.Popen:
    """Start the sandbox's Nova on 127.0.0.1:`port` (its log: <dir>/nova.log); `wait_ready` then."""
    argv = [sys.executable, "-m", "dfflow.sandbox.nova_events", "--dir", sandbox_dir,
            "--listen", f"127.0.0.1:{port}"]
    with open(os.path.join(sandbox_dir, "nova.log"), "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=sandbox_dir, start_new_session=True)


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}{API_ROOT}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = START_TIMEOUT) -> None:
    if not procs.wait_http_ok(proc, url, timeout):
        raise SandboxError(f"the sandbox's Nova did not start at {url} (see its nova.log)")


def is_ours(pid: int, sandbox_dir: str) -> bool:
    """Is `pid` the Nova of the sandbox in `sandbox_dir` (for `down` without a state)?"""
    argv = procs.cmdline(pid)
    return argv[1:3] == ["-m", "dfflow.sandbox.nova_events"] and procs.cwd(pid) == sandbox_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the sandbox's directory (its VMs are Nova's servers)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (loopback)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import uvicorn
    host, _, port = args.listen.rpartition(":")
    app = make_app(os.path.realpath(args.dir), EventLog())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level="warning", access_log=False)


# -- Nova's side of the wait, from the emulation's processes ------------------------------------------
class VifPluggingFailed(SandboxError):
    """network-vif-plugged never came (or came `failed`): fatal, as with Nova's vif_plugging_is_fatal."""


class NovaEvents:
    """The sandbox's Nova, for a process of its emulation: note `cursor()` before the plug (Nova
    prepares its wait before plugging), then `wait_vif_plugged(..., after=cursor)`."""

    def __init__(self, url: str):
        self.base = url[:-len(API_ROOT)] if url.endswith(API_ROOT) else url.rstrip("/")

    async def _get(self, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=timeout + 10) as client:
            try:
                reply = await client.get(self.base + WAIT_PATH, params=params)
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                raise SandboxError(f"the sandbox's Nova at {self.base}: {type(exc).__name__}: {exc}") from None
            return reply.json()

    async def cursor(self) -> int:
        """The sequence number of the last event taken so far."""
        return int((await self._get({}, 0))["last"])

    async def events(self, after: int = 0, **filters: str) -> list[dict[str, Any]]:
        """Events taken after `after`; filters: name, server, tag."""
        return (await self._get({"after": after, **filters}, 0))["events"]

    async def wait_for(self, name: str, server: str, tag: str, after: int, timeout: float) -> dict[str, Any] | None:
        """The first event `name` for (`server`, `tag`) taken after `after`; None after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            found = (await self._get({"after": after, "name": name, "server": server, "tag": tag,
                                      "timeout": f"{max(0.0, min(left, MAX_WAIT)):.3f}"}, max(left, 0.0)))["events"]
            if found:
                return found[0]
            if left <= 0:
                return None

    async def wait_vif_plugged(self, server: str, port_id: str, host: str, after: int, timeout: float,
                               what: str) -> dict[str, Any] | None:
        """Nova's wait for `network-vif-plugged` of `port_id` on `server`; VifPluggingFailed if it does
        not come within `timeout` s or comes `failed`. `what` names the operation for the error.
        A timeout of 0 is Nova's `vif_plugging_timeout = 0`: no wait at all (None)."""
        if timeout <= 0:
            return None
        event = await self.wait_for(PLUGGED, server, port_id, after, timeout)
        if event is None:
            raise VifPluggingFailed(f"{what}: no {PLUGGED} event for port {port_id} on host {host} within "
                                    f"{timeout:g}s (vif_plugging_is_fatal): its chassis never reported the "
                                    "VIF up, or Neutron never told Nova")
        if event.get("status") == "failed":
            raise VifPluggingFailed(f"{what}: Neutron reported {PLUGGED} failed for port {port_id} on host {host}")
        return event


if __name__ == "__main__":  # pragma: no cover
    main()

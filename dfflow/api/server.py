"""Running the API under uvicorn: `dfflow api` calls `serve`; tests use `ApiServer` in a thread."""
from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

import uvicorn

from dfflow.api.app import MAX_BODY, NB_WAIT, create_app


class ServeError(ValueError):
    """The server was asked to run in a way it refuses (bad address, no auth off loopback, ...)."""


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or ':PORT' (loopback) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServeError(f"--listen {text!r}: expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise ServeError(f"refusing to serve on {host} without authentication: use --auth token "
                         f"--token T, or listen on a loopback address")


def make_config(nb_url: str, listen: str, auth: str = "none", token: str | None = None,
                default_project: str = "admin", max_body: int = MAX_BODY, log_level: str = "info",
                nova_url: str | None = None, nova_token: str | None = None,
                nova_credentials: Any = None, nb_wait: float = NB_WAIT) -> uvicorn.Config:
    host, port = parse_listen(listen)
    if auth not in ("none", "token"):
        raise ServeError(f"--auth {auth!r}: expected none or token")
    if auth == "token" and not token:
        raise ServeError("--auth token needs --token (or DFFLOW_API_TOKEN)")
    secret = token if auth == "token" else None
    check_exposure(host, secret)
    nova = None
    if nova_url:
        from dfflow.nova.notifier import NovaConfig
        if not nova_url.startswith(("http://", "https://")):
            raise ServeError(f"--nova-url {nova_url!r}: expected an http:// or https:// URL")
        nova = NovaConfig(url=nova_url.rstrip("/"), token=nova_token or None, credentials=nova_credentials)
    if nb_wait < 0:
        raise ServeError(f"--nb-wait {nb_wait}: expected a number of seconds >= 0")
    app = create_app(nb_url, token=secret, default_project=default_project, max_body=max_body, nova=nova,
                     nb_wait=nb_wait)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False,
                          server_header=False, lifespan="on")


def serve(nb_url: str, listen: str = "127.0.0.1:9696", auth: str = "none", token: str | None = None,
          default_project: str = "admin", nova_url: str | None = None, nova_token: str | None = None,
          nova_credentials: Any = None, nb_wait: float = NB_WAIT) -> None:
    """Serve until interrupted (and run the Nova notifier when `nova_url` is given)."""
    uvicorn.Server(make_config(nb_url, listen, auth, token, default_project, nova_url=nova_url,
                               nova_token=nova_token, nova_credentials=nova_credentials,
                               nb_wait=nb_wait)).run()


class ApiServer:
    """A uvicorn serving the API on a thread of its own (tests, the sandbox)."""

    def __init__(self, nb_url: str, port: int, **options: Any):
        options.setdefault("log_level", "warning")
        self.server = uvicorn.Server(make_config(nb_url, f"127.0.0.1:{port}", **options))
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, name=f"dfflow-api-{port}", daemon=True)

    def start(self, timeout: float = 10.0) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

"""A stand-in for Nova's API in tests: records `POST .../os-server-external-events` on loopback.

    with NovaRecorder(fail_first=2) as nova:      # the first two requests get a 500
        ... NovaConfig(url=nova.url, token="T") ...
        nova.wait_for(lambda events: len(events) >= 1)
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class NovaRecorder:
    def __init__(self, fail_first: int = 0, status: int = 200, password: str | None = None):
        self.fail_first = fail_first
        self.status = status  # the answer once the failures are used up
        self.requests: list[dict[str, Any]] = []  # every request to Nova: path, headers, body, answered status
        # With a password, a Keystone too (POST /identity/v3/auth/tokens), and Nova takes only its tokens.
        self.password = password
        self.tokens: set[str] = set()
        self.logins = 0
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                reply = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)

            def _login(self, raw: bytes) -> None:
                user = json.loads(raw)["auth"]["identity"]["password"]["user"]
                if user["password"] != recorder.password:
                    self._reply(401, {"error": {"code": 401}})
                    return
                with recorder._lock:
                    recorder.logins += 1
                    token = f"token-{recorder.logins}"
                    recorder.tokens.add(token)
                self._reply(201, {"token": {"expires_at": "2999-01-01T00:00:00.000000Z"}},
                            {"X-Subject-Token": token})

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path.endswith("/v3/auth/tokens"):
                    self._login(raw)
                    return
                with recorder._lock:
                    failing = recorder.fail_first > 0
                    recorder.fail_first -= failing
                    status = 500 if failing else recorder.status
                    if recorder.password is not None and self.headers.get("X-Auth-Token") not in recorder.tokens:
                        status = 401
                    recorder.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": json.loads(raw or b"null"), "status": status,
                                              "at": time.monotonic()})
                events = (json.loads(raw or b"{}") or {}).get("events", [])
                self._reply(status, {"events": [dict(e, code=200) for e in events]} if status == 200
                            else {"error": "recorder says no"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2.1"
        self.keystone_url = f"http://127.0.0.1:{self.server.server_address[1]}/identity"
        self.thread = threading.Thread(target=self.server.serve_forever, name="nova-recorder", daemon=True)

    def __enter__(self) -> "NovaRecorder":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events Nova accepted (answered 200), in arrival order."""
        with self._lock:
            return [e for r in self.requests if r["status"] == 200 for e in r["body"]["events"]]

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"Nova recorder: condition not met in {timeout}s; got {self.events}")
            time.sleep(0.01)
        return self.events

    async def until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict]:
        """`wait_for` for async tests (the notifier runs on the test's event loop)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while not done(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"Nova recorder: condition not met in {timeout}s; got {self.events}")
            await asyncio.sleep(0.01)
        return self.events

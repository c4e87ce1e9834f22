"""The controller's status socket, from the reading side: a running `dfflow-controller` answers a
connection on its UNIX socket with one JSON document about itself, then closes it. The sandbox, the
tests and the benchmarks read it; `controller.daemon` serves it."""
from __future__ import annotations

import json
import socket
from typing import Any


def read_status(path: str, timeout: float = 2.0) -> dict[str, Any]:
    """What a running controller says about itself (its status socket)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)

"""Established connections through security groups survive a live migration, on a real 3-chassis sandbox.

M (net1, chassis-1, its project's default group, a floating IP) opens a TCP connection to the external host
E (public, chassis-3, no port security), and E streams to M, which only acknowledges: nothing in M's groups
lets E in, so after the move only the destination's admission of M's established connections lets E's
packets reach M (M says nothing until they do). Bytes are counted and checked on both ends."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from controller_fixtures import migrate, pings, running_cloud, wait_arrival_windows_closed, wait_until
from test_secgroups_sandbox import routed_net1_and_public, tcp_opens

pytestmark = pytest.mark.ovs

M_IP, E_IP = "10.1.0.10", "172.24.4.100"

# Both ends of one connection send a counted pattern for a while, then shut down their side and read the
# other's to its end: any reset, gap or corruption is reported.
STREAM = """
import json, socket, sys, threading, time
role, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if role == "server":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    print("listening", flush=True)
    conn = listener.accept()[0]
else:
    conn = socket.create_connection((host, port), timeout=5)
conn.settimeout(60)
out = {"sent": 0, "received": 0, "error": None}
PATTERN = bytes(i % 251 for i in range(251 * 8))
def send():
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = out["sent"] % 251
            conn.sendall(PATTERN[start:start + 1024])
            out["sent"] += 1024
            time.sleep(0.004)
        conn.shutdown(socket.SHUT_WR)
    except OSError as exc:
        out["error"] = f"send: {exc!r}"
sender = threading.Thread(target=send)
sender.start()
try:
    while True:
        data = conn.recv(65536)
        if not data:
            break
        start = out["received"] % 251
        if data != (PATTERN * (len(data) // len(PATTERN) + 2))[start:start + len(data)]:
            out["error"] = f"corrupt at byte {out['received']}"
            break
        out["received"] += len(data)
except OSError as exc:
    out["error"] = f"recv: {exc!r}"
sender.join()
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        routed_net1_and_public(c)
        c.call("create_vm", "M", "chassis-1", "net1", M_IP)
        c.call("create_vm", "E", "chassis-3", "public", E_IP, port_attrs={"port_security_enabled": False})
        c.fip = c.call("create_floating_ip", "M").floating_ip
        wait_until(lambda: pings(c.sb, "M", E_IP), 20, what="M -> E")
        yield c


def where(cloud) -> str:
    return next(v for v in cloud.sb.vm("M").vifs if v.up).chassis


def refused_throughout(cloud, stop: threading.Event, found: list) -> None:
    """E keeps trying to open a connection to M's floating IP on a port no rule allows."""
    while not stop.is_set():
        found.append(tcp_opens(cloud.sb, "E", "M", cloud.fip, 5301, timeout=0.5))


@pytest.mark.parametrize("strategy", ["unplug", "announce"])
def test_a_tcp_stream_opened_from_inside_keeps_going_across_a_live_migration(cloud, strategy):
    sb, seconds = cloud.sb, 6.0
    dest = next(c.name for c in sb.chassis_list() if c.name not in (where(cloud), "chassis-3"))
    server = sb.vm_popen("E", [sys.executable, "-c", STREAM, "server", E_IP, "5201", str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening", server.stderr.read()
    client = sb.vm_popen("M", [sys.executable, "-c", STREAM, "client", E_IP, "5201", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, attempts = threading.Event(), []
    prober = threading.Thread(target=refused_throughout, args=(cloud, stop, attempts))
    try:
        time.sleep(1.0)
        prober.start()
        result = migrate(cloud, "M", dest, strategy=strategy, unplug_delay=0.2, update_port_delay=0.3)
        assert result["strategy"] == strategy and where(cloud) == dest
        time.sleep(0.5)
    finally:
        stop.set()
        if prober.is_alive():
            prober.join()
        client_out, client_err = client.communicate(timeout=90)
        server_out, server_err = server.communicate(timeout=90)
    at_m, at_e = json.loads(client_out), json.loads(server_out)
    assert at_m["error"] is None and at_e["error"] is None, (at_m, at_e, client_err, server_err)
    assert at_m["received"] == at_e["sent"] and at_e["received"] == at_m["sent"] == 0, (at_m, at_e)
    assert at_e["sent"] > 500_000, at_e  # it ran the whole time
    assert attempts and not any(attempts), attempts  # no rule for it: refused during the migration ...
    assert not tcp_opens(sb, "E", "M", cloud.fip, 5302)  # ... and after it
    wait_arrival_windows_closed(sb)  # the admission of M's connections ends by itself

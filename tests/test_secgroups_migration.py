"""Established connections through security groups survive a live migration, on a real 3-chassis sandbox.

M (net1, chassis-1, its project's default group, a floating IP) opens a TCP connection to the external host
E (public, chassis-3, no port security), and E streams to M, which only acknowledges: nothing in M's groups
lets E in, so after the move only the destination's admission of M's established connections lets E's
packets reach M (M says nothing until they do). Bytes are counted and checked on both ends.

Each of the sandbox's strategies (dfflow.sandbox.scenario.STRATEGIES) moves M: `announce` (the flows
pre-programmed at step 1, activated by M's announcement), `unplug` (with Nova's binding-extended calls, the
binding's activation moves them; with the legacy ones, step 2, the source's unplug) and `fallback` (step 2's
publish lost, so step 3, Neutron's update_port, moves them)."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import pytest

from benchmarks import faulty_controller
from controller_fixtures import fault, migrate, pings, running_cloud, wait_arrival_windows_closed, wait_until
from dfflow.sandbox.faults import DROP_PUBLISH
from test_secgroups_sandbox import TCP_LISTEN, routed_net1_and_public, tcp_opens

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
    with running_cloud(3, controller_cmd=faulty_controller.controller_cmd()) as c:
        routed_net1_and_public(c)
        c.call("create_vm", "M", "chassis-1", "net1", M_IP)
        c.call("create_vm", "E", "chassis-3", "public", E_IP, port_attrs={"port_security_enabled": False})
        c.fip = c.call("create_floating_ip", "M").floating_ip
        wait_until(lambda: pings(c.sb, "M", E_IP), 20, what="M -> E")
        yield c


def where(cloud) -> str:
    return next(v for v in cloud.sb.vm("M").vifs if v.up).chassis


# E tries to open a connection again and again for a while: (start, end, opened) of each try.
CONNECTS = """
import json, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
found, end = [], time.time() + seconds
while time.time() < end:
    start, s = time.time(), socket.socket()
    s.settimeout(0.2)
    try:
        s.connect((host, port))
        opened = True
    except OSError:
        opened = False
    s.close()
    found.append((start, time.time(), opened))
    time.sleep(0.05)
print(json.dumps(found), flush=True)
"""


# strategy -> (the port's activation strategy, Nova's path, the step that moves the flows, a fault)
# (with Nova's binding-extended path the destination's binding is activated before the source unplugs: the
# legacy path is where the unplug alone, step 2, moves the flows)
MOVES = {"announce": ("announce", "extended", "activated", None),
         "unplug": ("unplug", "extended", "bound", None),
         "unplug-legacy": ("unplug", "legacy", "switched", None),
         "fallback": ("unplug", "legacy", "bound", DROP_PUBLISH)}


@pytest.mark.parametrize("strategy", list(MOVES))
def test_a_tcp_stream_opened_from_inside_keeps_going_across_a_live_migration(cloud, strategy):
    sb, seconds = cloud.sb, 6.0
    dest = next(c.name for c in sb.chassis_list() if c.name not in (where(cloud), "chassis-3"))
    server = sb.vm_popen("E", [sys.executable, "-c", STREAM, "server", E_IP, "5201", str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening", server.stderr.read()
    client = sb.vm_popen("M", [sys.executable, "-c", STREAM, "client", E_IP, "5201", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # a listener in M on a port no rule allows, and E trying to connect to it from before the move to after it
    listener = sb.vm_popen("M", [sys.executable, "-c", TCP_LISTEN, "5301", str(seconds + 10)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "listening", listener.stderr.read()
    prober = sb.vm_popen("E", [sys.executable, "-c", CONNECTS, cloud.fip, "5301", str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        activation, nova_path, moved_by, injected = MOVES[strategy]
        migrating = time.time()
        with fault(cloud, injected) if injected else contextlib.nullcontext():
            result = migrate(cloud, "M", dest, strategy=activation, nova_path=nova_path, unplug_delay=0.2,
                             update_port_delay=0.3)
        migrated = time.time()
        assert result["strategy"] == activation and where(cloud) == dest
        assert moved_by in result["applied"], result["applied"]
        if injected:
            assert "switched" not in result["states"], result["states"]  # no step 2: step 3 moved M
        time.sleep(0.5)
    finally:
        attempts_out, prober_err = prober.communicate(timeout=90)
        listener.kill()
        listener.wait()
        client_out, client_err = client.communicate(timeout=90)
        server_out, server_err = server.communicate(timeout=90)
    at_m, at_e = json.loads(client_out), json.loads(server_out)
    assert at_m["error"] is None and at_e["error"] is None, (at_m, at_e, client_err, server_err)
    assert at_m["received"] == at_e["sent"] and at_e["received"] == at_m["sent"] == 0, (at_m, at_e)
    assert at_e["sent"] > 500_000, at_e  # it ran the whole time
    attempts = json.loads(attempts_out)
    assert not any(opened for _, _, opened in attempts), attempts  # no rule for it: refused ...
    during = [a for a in attempts if migrating <= a[0] and a[1] <= migrated]
    assert len(during) >= 2, (migrating, migrated, attempts, prober_err)  # ... during the migration ...
    assert not tcp_opens(sb, "E", "M", cloud.fip, 5302)  # ... and after it
    wait_arrival_windows_closed(sb)  # the admission of M's connections ends by itself

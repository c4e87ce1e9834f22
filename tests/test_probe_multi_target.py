"""One prober process for many VMs: each target's replies are kept apart, and an outage of one target
shows in its figures only (loopback only: answering sockets on 127.0.0.1 and 127.0.0.2, same port)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from dfflow.sandbox.probe import analyse, per_target

PAUSE = 0.15


def _answerer(sock: socket.socket, paused: threading.Event, stop: threading.Event) -> None:
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(64)
        except socket.timeout:
            continue
        if not paused.is_set():
            sock.sendto(data, peer)
    sock.close()


def test_one_sender_probes_several_targets_and_keeps_their_outages_apart():
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second.bind(("127.0.0.2", port))
    stop, never, paused = threading.Event(), threading.Event(), threading.Event()
    for sock, pause in ((first, never), (second, paused)):
        threading.Thread(target=_answerer, args=(sock, pause, stop), daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-m", "dfflow.sandbox.probe", "send", "--target", "127.0.0.1",
                             "--target", "127.0.0.2", "--port", str(port), "--interval", "0.002"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        paused.set()  # the second target stops answering for PAUSE, as a VM mid-switchover
        time.sleep(PAUSE)
        paused.clear()
        time.sleep(0.3)
    finally:
        out, _ = proc.communicate("stop\n", timeout=20)
        stop.set()
    runs = per_target(json.loads(out.strip().splitlines()[-1]))
    assert set(runs) == {"127.0.0.1", "127.0.0.2"}
    steady, interrupted = analyse(runs["127.0.0.1"]), analyse(runs["127.0.0.2"])
    assert steady["recovered"] and interrupted["recovered"]
    assert steady["duplicates"] == interrupted["duplicates"] == 0
    assert interrupted["downtime_ms"] >= PAUSE * 1e3 * 0.9
    assert interrupted["lost"] > steady["lost"] + 40

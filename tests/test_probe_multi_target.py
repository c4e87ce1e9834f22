"""One prober process for many VMs: each target's replies are kept apart, and an outage of one target
shows in its figures only; replies still in flight when the prober stops are waited for (loopback only:
answering sockets on 127.0.0.1 and 127.0.0.2, same port)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from dfflow.sandbox.probe import analyse, per_target

PAUSE = 0.15
LATE = 0.2  # s a late answerer holds each reply back: more than the 50 probes analyse tolerates at the end


def _answerer(sock: socket.socket, paused: threading.Event, stop: threading.Event, delay: float = 0.0) -> None:
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(64)
        except socket.timeout:
            continue
        if paused.is_set():
            continue
        if delay:
            threading.Timer(delay, sock.sendto, (data, peer)).start()
        else:
            sock.sendto(data, peer)
    time.sleep(delay)  # the replies still held back go before the socket does
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


def test_replies_in_flight_when_the_prober_stops_are_counted_not_lost():
    """On a loaded machine a working path answers late: replies cut off by the stop must not read as a
    path that never came back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    threading.Thread(target=_answerer, args=(sock, threading.Event(), stop, LATE), daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-m", "dfflow.sandbox.probe", "send", "--target", "127.0.0.1",
                             "--port", str(sock.getsockname()[1]), "--interval", "0.002"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.6)
    finally:
        out, _ = proc.communicate("stop\n", timeout=20)
        stop.set()
    figures = analyse(json.loads(out.strip().splitlines()[-1]))
    assert figures["recovered"], figures
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures

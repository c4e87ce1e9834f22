"""Downtime probes: sequence-numbered UDP every millisecond, answered by the migrating VM.

`echo` runs in the migrating VM and answers every probe. `send` runs in a peer
and sends one probe per interval on absolute deadlines (no busy spinning, no
back-off while replies are missing, unlike ping), records each reply's kernel
receive time, and on `stop` (stdin) stops sending, waits up to DRAIN for the
replies still in flight (until each target answered the last probe) and prints one JSON line: the
interval, the number sent, and (seq, send time, receive time) of every reply.

`analyse()` turns that into the figures: the headline downtime, the longest gap
between reply arrivals (a reply held in a queue is an outage too, though not a
loss); beside it the longest run of lost replies times the interval; and the
duplicate replies.

    python -m dfflow.sandbox.probe echo --port 7100
    python -m dfflow.sandbox.probe send --target 10.0.0.5 [--target 10.0.0.6 ...] --port 7100 [--interval 0.001]

With several targets one process probes them all (one probe to each per interval, replies told
apart by their source address); its JSON has `targets` (address -> replies), see `per_target`.
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

PROBE = struct.Struct("!Qd")  # sequence number, send time
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PORT = 7100  # UDP
# After `stop`, how long the replies still on their way are waited for: a loaded machine delays them by
# tens, at times hundreds, of milliseconds, and a reply cut off by the stop is not a lost reply.
DRAIN = 1.0


def echo(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, addr = sock.recvfrom(64)
        try:
            sock.sendto(data, addr)
        except OSError:  # no route for a moment mid-switchover: that reply is lost, like a packet
            pass


def send(targets: list[str], port: int, interval: float) -> None:
    """Probe every target once per interval from one socket and one thread of sends (plus one
    receiving): many VMs cost one process, not one spinning ping each."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if len(targets) == 1:
        sock.connect((targets[0], port))
    replies: dict[str, list[tuple[int, float, float]]] = {t: [] for t in targets}
    stop = threading.Event()  # told to stop sending
    drained = threading.Event()  # the replies in flight at the stop arrived, or DRAIN passed

    def receive() -> None:
        while not drained.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                continue
            try:
                data, ancillary, _, source = sock.recvmsg(64, socket.CMSG_SPACE(16))
            except ConnectionRefusedError:  # ICMP port unreachable while the VM is away
                continue
            received = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    received = seconds + nanos / 1e9
            if len(data) >= PROBE.size and source[0] in replies:
                seq, sent = PROBE.unpack(data[:PROBE.size])
                replies[source[0]].append((seq, sent, received))

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    stopper = threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True)
    stopper.start()
    print("ready", flush=True)
    start = time.monotonic()
    seq = 0
    while not stop.is_set():
        deadline = start + seq * interval
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for target in targets:
            try:
                if len(targets) == 1:
                    sock.send(PROBE.pack(seq, time.time()))
                else:
                    sock.sendto(PROBE.pack(seq, time.time()), (target, port))
            except OSError:  # no route for a moment: the probe counts as lost
                pass
        seq += 1
    drain_until = time.monotonic() + DRAIN
    while time.monotonic() < drain_until and not all(r and r[-1][0] >= seq - 1 for r in replies.values()):
        time.sleep(0.005)
    drained.set()
    receiver.join(1.0)
    out: dict[str, Any] = {"interval": interval, "sent": seq,
                           "targets": {t: sorted(r) for t, r in replies.items()}}
    if len(targets) == 1:
        out["replies"] = out["targets"][targets[0]]
    print(json.dumps(out), flush=True)


def per_target(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A multi-target run as one single-target run per target (what `analyse` takes)."""
    return {t: {"interval": result["interval"], "sent": result["sent"], "replies": r}
            for t, r in result["targets"].items()}


def analyse(result: dict[str, Any], after: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Downtime figures of one probe run (optionally only of the probes sent from `after`, and
    before `until`: a window around the migration).

    downtime_ms: the headline, the longest gap between reply arrivals (kernel receive times of each
      sequence number's first reply): replies held in a queue are an outage to the user even though
      none is lost. With nothing wrong it is about one interval.
    gap_start, gap_end: the receive times that bound it.
    lost_window_ms: the longest run of consecutive lost replies times the interval (what a
      lost-probe count sees), outage_start / outage_end the send times around it.
    duplicates: replies received for a sequence number already answered (there should be none).
    recovered: a reply arrived after the longest outage (the path works again)."""
    interval, sent = result["interval"], result["sent"]
    replies = result["replies"]
    if until is not None:
        replies = [r for r in replies if r[1] < until]
        if replies:  # the probes sent before `until`: up to the last one answered among them
            sent = min(sent, max(r[0] for r in replies) + 1)
    if after is not None:
        replies = [r for r in replies if r[1] >= after]
        if replies:  # count only the probes sent from the first one after `after`
            first = min(r[0] for r in replies)
            sent -= first
            replies = [(seq - first, s, r) for seq, s, r in replies]
    first_reply: dict[int, tuple[float, float]] = {}
    for seq, sent_at, received in sorted(replies, key=lambda r: r[2]):
        first_reply.setdefault(seq, (sent_at, received))
    duplicates = len(replies) - len(first_reply)
    answered = sorted(first_reply)
    figures: dict[str, Any] = {"sent": sent, "answered": len(answered), "lost": sent - len(answered),
                               "duplicates": duplicates}
    if not answered:
        return figures | {"downtime_ms": None, "gap_start": None, "gap_end": None, "lost_window_ms": None,
                          "recovered": False, "outage_start": None, "outage_end": None}
    longest, before, after_seq = 0, None, None
    for prev, nxt in zip(answered, answered[1:]):
        if nxt - prev - 1 > longest:
            longest, before, after_seq = nxt - prev - 1, prev, nxt
    tail_loss = (sent - 1) - answered[-1]
    if tail_loss > longest + 50:  # never came back before the probe stopped
        return figures | {"downtime_ms": None, "gap_start": first_reply[answered[-1]][1], "gap_end": None,
                          "lost_window_ms": tail_loss * interval * 1e3, "recovered": False,
                          "outage_start": first_reply[answered[-1]][0], "outage_end": None}
    arrivals = sorted(received for _, received in first_reply.values())
    gap, gap_start, gap_end = 0.0, arrivals[0], arrivals[0]
    for prev_at, next_at in zip(arrivals, arrivals[1:]):
        if next_at - prev_at > gap:
            gap, gap_start, gap_end = next_at - prev_at, prev_at, next_at
    return figures | {"downtime_ms": gap * 1e3, "gap_start": gap_start, "gap_end": gap_end,
                      "lost_window_ms": longest * interval * 1e3, "recovered": True,
                      "outage_start": first_reply[before][0] if before is not None else None,
                      "outage_end": first_reply[after_seq][0] if after_seq is not None else None}


class Echo:
    """The answering side, in the migrating VM's namespace (it follows the VM across interfaces)."""

    def __init__(self, sandbox: Any, vm: str, port: int = PORT):
        import subprocess
        self.proc = sandbox.vm_popen(vm, [sys.executable, "-m", "dfflow.sandbox.probe", "echo",
                                          "--port", str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"probe echo failed in {vm}: {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Sender:
    """One probing peer: started before the migration, stopped after; `.result` then holds the run."""

    def __init__(self, sandbox: Any, vm: str, target: str | list[str], port: int = PORT,
                 interval: float = 0.001):
        import subprocess
        self.sandbox, self.vm, self.target = sandbox, vm, target
        targets = [target] if isinstance(target, str) else list(target)
        if not targets:
            raise ValueError("target: at least one address to probe")
        self.proc = sandbox.vm_popen(vm, [sys.executable, "-m", "dfflow.sandbox.probe", "send",
                                          *[a for t in targets for a in ("--target", t)], "--port", str(port),
                                          "--interval", str(interval)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"probe sender failed in {vm}: {self.proc.stderr.read()}")
        self.result: dict[str, Any] | None = None

    def stop(self) -> dict[str, Any]:
        out, err = self.proc.communicate("stop\n", timeout=20)
        if self.proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"probe sender in {self.vm} failed: {err}")
        self.result = json.loads(out.strip().splitlines()[-1])
        return self.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, default=PORT)
    s = sub.add_parser("send")
    s.add_argument("--target", required=True, action="append",
                   help="address to probe; repeat it to probe several VMs from this one process")
    s.add_argument("--port", type=int, default=PORT)
    s.add_argument("--interval", type=float, default=0.001)
    args = parser.parse_args()
    if args.mode == "echo":
        echo(args.port)
    else:
        send(args.target, args.port, args.interval)


if __name__ == "__main__":
    main()

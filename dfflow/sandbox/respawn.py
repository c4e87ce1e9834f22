"""``python -m dfflow.sandbox.respawn RECORD -- ARGV...``: the sandbox's supervisor of one controller.

It runs ARGV and runs it again whenever it exits, one second later (what systemd's
``Restart=always`` + ``RestartSec=1`` do for ``dfflow-controller`` in a deployment), until it
is told to stop: SIGTERM or SIGINT, which it passes on to ARGV before it exits itself. RECORD
(JSON, replaced atomically) says which process runs now, how often it was restarted and how its
last run ended; `sandbox status` shows it. ARGV's output goes where ours goes (the controller log),
and each restart is logged there too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

RESTART_SEC = 1.0


def exit_text(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def read_record(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_record(path: str, record: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def supervise(record_path: str, argv: list[str], restart_sec: float = RESTART_SEC) -> int:
    from . import procs

    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    record: dict[str, Any] = {"supervisor_pid": os.getpid(), "restarts": 0, "last_exit": None,
                              "last_exit_at": None, "pid": None, "starttime": None}
    while not stopping:
        # the controller exports it (dfflow_controller_supervisor_restarts): its own counters start at 0
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "DFFLOW_RESTARTS": str(record["restarts"])})
        record.update(pid=child.pid, starttime=procs.starttime(child.pid), started_at=time.time())
        _write_record(record_path, record)
        returncode = child.wait()
        record.update(pid=None, starttime=None, last_exit=exit_text(returncode), last_exit_at=time.time())
        if not stopping:
            record["restarts"] += 1
            print(f"respawn: {argv[0]} ended ({exit_text(returncode)}); starting it again in {restart_sec:g} s "
                  f"(restart {record['restarts']})", flush=True)
        _write_record(record_path, record)
        deadline = time.monotonic() + restart_sec
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m dfflow.sandbox.respawn RECORD -- ARGV...", file=sys.stderr)
        return 2
    return supervise(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())

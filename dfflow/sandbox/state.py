"""The sandbox's record of what it started: one JSON file, written atomically.

Every step of `up` is recorded *before* it is taken (a namespace name before
`ip netns add`, a chassis' rundir before its daemons start), so that a crash
at any point leaves a state file naming at least everything that exists; `down`
tolerates entries whose object never came to be or is already gone. A lock file
serialises processes working on the same sandbox (e.g. a test plugging VIFs
while a CLI reads status).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any, Iterator

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
UP_LOCK_FILE = ".up.lock"


def path(dir: str) -> str:
    return os.path.join(dir, STATE_FILE)


def load(dir: str) -> dict[str, Any] | None:
    """The recorded state, or None if there is none (or it is unreadable: `down` falls back to names)."""
    try:
        with open(path(dir)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def save(dir: str, data: dict[str, Any]) -> None:
    os.makedirs(dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dir, prefix=".state.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path(dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(dir))


@contextlib.contextmanager
def locked(dir: str, name: str = LOCK_FILE) -> Iterator[None]:
    """Exclusive lock on the sandbox dir (flock: released by the kernel if we die).

    Not re-entrant: a second `locked()` on the same file blocks even in the same
    process. `up` holds UP_LOCK_FILE for its whole run (two `up`s on one dir
    must not interleave) and takes LOCK_FILE only around each state update.
    """
    os.makedirs(dir, exist_ok=True)
    fd = os.open(os.path.join(dir, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

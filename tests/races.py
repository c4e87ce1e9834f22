"""Races for the compiled core's memory safety: a caller's arrays changed by another thread while the
core (which runs without the GIL) reads them must give a result or a clean exception, never an overrun."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


def while_meddling(meddle: Any, *calls: Any, seconds: float = 1.5) -> dict[str, int]:
    """Make each of ``calls`` in turn, over and over for ``seconds``, while another thread calls
    ``meddle`` over and over (changing what they read); how often they returned and raised each
    exception a change may cause (any other fails the test)."""
    stop = threading.Event()

    def meddling() -> None:
        while not stop.is_set():
            meddle()

    outcomes = {"ok": 0, "ValueError": 0, "RuntimeError": 0}
    thread = threading.Thread(target=meddling)
    thread.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for call in calls:
                try:
                    call()
                    outcomes["ok"] += 1
                except (ValueError, RuntimeError) as exc:
                    outcomes[type(exc).__name__] += 1
    finally:
        stop.set()
        thread.join()
    return outcomes


def flipping(column: np.ndarray, bits: int) -> Any:
    """Flip ``bits`` of every element of ``column`` and back, as fast as numpy can (without the GIL,
    so truly while the other thread runs); the column is as it was after each call."""
    def flip() -> None:
        np.bitwise_xor(column, bits, out=column)
        np.bitwise_xor(column, bits, out=column)
    return flip

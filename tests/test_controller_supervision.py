"""The controller's own supervision of its tasks, and how it ends when it cannot go on."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

from controller.supervise import TaskSupervisor


async def test_a_dying_task_is_restarted_and_one_that_keeps_dying_is_fatal():
    stats: Counter[str] = Counter()
    deaths, fatal, runs = [], [], Counter()

    async def flaky() -> None:
        runs["flaky"] += 1
        if runs["flaky"] < 3:
            raise RuntimeError(f"bug {runs['flaky']}")
        await asyncio.sleep(3600)

    async def broken() -> None:
        raise ValueError("always")

    tasks = TaskSupervisor(stats, lambda name, exc: deaths.append((name, str(exc))), fatal.append,
                           max_deaths=3, window=60)
    tasks.spawn(flaky, "flaky")
    tasks.spawn(broken, "broken")
    for _ in range(200):
        if fatal and runs["flaky"] == 3:
            break
        await asyncio.sleep(0.05)
    assert runs["flaky"] == 3 and stats["task_restarts.flaky"] == 2
    assert ("flaky", "bug 1") in deaths and ("flaky", "bug 2") in deaths
    assert len(fatal) == 1 and fatal[0].startswith("task broken died 3 times in ")
    assert fatal[0].endswith("last: ValueError: always")
    assert not tasks.tasks["flaky"].done()  # the healthy one runs on
    await tasks.stop()


async def test_a_task_given_as_a_coroutine_cannot_be_restarted_so_its_death_is_fatal():
    fatal: list[str] = []
    tasks = TaskSupervisor(Counter(), lambda name, exc: None, fatal.append)

    async def broken() -> None:
        raise ValueError("once")

    tasks.spawn(broken(), "legacy")
    for _ in range(100):
        if fatal:
            break
        await asyncio.sleep(0.05)
    assert fatal == ["task legacy died and cannot be started again (spawned as a coroutine)"]
    await tasks.stop()


def test_a_fault_the_controller_cannot_handle_ends_it_non_zero_with_a_last_line_saying_why(nb_url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "controller.daemon", "--chassis", "c1", "--tunnel-ip", "192.0.2.1", "--nb", nb_url,
         "--ovsdb", f"unix:{tmp_path}/no-such-db.sock", "--of-listen", f"unix:{tmp_path}/of.sock"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "CRITICAL" in last and "dfflow-controller on c1 exits with status 1: ConnectionError: OVSDB at unix:" in last

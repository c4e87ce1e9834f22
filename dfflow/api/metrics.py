"""`GET /metrics` of `dfflow api`: Prometheus metrics of the whole deployment's live migrations.

They come from the migration timelines in the NB (dfflow.nb.timeline), which every chassis stamps:
a migration is counted once it has ended (done or aborted), with its strategy and outcome, the
latency of each of its steps and each chassis' apply latency (from the NB recording a state to
that chassis' switch committing the flows for it). Ended migrations are remembered by id, so a
scrape reads only the timelines it has not counted yet. The counts are this API process' since its
start (`process_start_time_seconds` says when): a Prometheus counter reset, as after any restart.
"""
from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dfflow.nb.store import NbApi
from dfflow.nb.timeline import Timelines

STATES = ("requested", "activated", "switched")
ENDS = ("done", "aborted")
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MigrationMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.migrations = Counter("dfflow_migrations", "Live migrations that ended, by strategy and outcome",
                                  ["strategy", "outcome"], registry=self.registry)
        self.steps = Histogram("dfflow_migration_step_seconds", "Latency of each migration step "
                               "(requested->activated, activated->switched, switched->done, ...)",
                               ["strategy", "step"], buckets=STEP_BUCKETS, registry=self.registry)
        self.applies = Histogram("dfflow_migration_apply_seconds", "From the NB recording a migration state to a "
                                 "chassis' switch committing its flows for it", ["chassis", "state"],
                                 buckets=APPLY_BUCKETS, registry=self.registry)
        self.nb_writes = Gauge("dfflow_api_nb_writes", "This API's NB writes by replication (replicated_writes, "
                               "unreplicated_writes, replica_wait_timeouts)", ["counter"], registry=self.registry)
        self.counted: set[str] = set()

    async def refresh(self, nb: NbApi) -> None:
        timelines = Timelines(nb.redis, nb.keys)
        for migration_id in await timelines.ids():
            if migration_id in self.counted:
                continue
            entry = await timelines.get(migration_id)
            if entry is None or not any(end in entry for end in ENDS):
                continue  # still going: counted when it ends
            self.counted.add(migration_id)
            self.observe(entry)
        for key, value in nb.stats.items():
            self.nb_writes.labels(key).set(value)

    def observe(self, entry: dict[str, Any]) -> None:
        strategy = entry.get("strategy") or "unknown"
        outcome = next(end for end in ENDS if end in entry)
        self.migrations.labels(strategy, outcome).inc()
        passed = [(state, entry[state]) for state in STATES + (outcome,) if state in entry]
        for (before, at), (after, then) in zip(passed, passed[1:]):
            self.steps.labels(strategy, f"{before}->{after}").observe(max(then - at, 0.0))
        for state, per_chassis in entry.get("applied", {}).items():
            recorded = entry.get(state)  # "bound" (Neutron's binding update) has no recorded time
            for chassis, applied in per_chassis.items() if recorded is not None else ():
                self.applies.labels(chassis, state).observe(max(applied - recorded, 0.0))

    async def render(self, nb: NbApi) -> tuple[bytes, str]:
        await self.refresh(nb)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def add_route(app: Any, nb: Callable[[], NbApi]) -> None:
    """GET /metrics on the FastAPI `app`; `nb()` is the API's NB client."""
    from fastapi.responses import Response
    metrics = MigrationMetrics()

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        body, kind = await metrics.render(nb())
        return Response(body, media_type=kind)

"""The fault campaign behind `dllmflow bench faults` and tests/workflows/test_faults.py.

For each fault, a fresh batch of episodes runs on the campaign's own workers (a task queue of
their own, two by default) and replicas (a Ray namespace of their own, preferring a second Ray
node on this host); the fault is injected while they are mid-way (or, for Temporal, while they
are being submitted), the component stays down for the fault's whole duration with the
supervisor paused, then `dllmflow up` brings it back. Afterwards every episode is judged from
Postgres and Temporal:

- completed: the row is `completed` and Temporal says Completed;
- dead_lettered / failed / cancelled: the row's final status (a dead letter is an honest end,
  counted, not a target);
- stuck: a row still `queued`/`running` at the deadline, or whose Temporal run is not running
  (no live workflow behind it), or a closed row whose workflow still runs;
- duplicated: work that ran again after its checkpoint committed (the Postgres execution
  counter moved past the count the checkpoint recorded), or a key checkpointed twice;
- lost: a question handed in that has no episode row, or a checkpoint that had committed
  before the fault and is gone afterwards;
- off_queue: an episode whose workflow ran on another task queue than the campaign's (other
  workers, with another corpus and replicas: its turns say nothing about the fault).

Work retried before its checkpoint committed (an activity whose attempt died with the server)
is reported as `reruns_before_commit`: that is the retry working, not a duplicate.

Only the embedded stack on 127.0.0.1 is used (`loopback_only`), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dllmflow.config import Settings
from dllmflow.stack import manager
from dllmflow.stack.components import RayNode, StackError
from dllmflow.stack.health import ray_dashboard_get
from dllmflow.stack.process import ProcessRecord, wait_until

Progress = Callable[[str], None]

# What can be broken, and when: "run" faults land while episodes are mid-way, "submit" ones
# while the batch is still being submitted.
FAULT_KINDS = {
    "none": "run",  # a batch with no fault: the reference (e.g. the model's own dead letters)
    "redis": "run",
    "postgres": "run",
    "temporal": "submit",
    "worker": "run",
    "ray-node": "run",
}
# The outage lengths; worker and node loss are permanent for the rest of the batch.
DEFAULT_FAULTS = "redis:120,postgres:60,temporal:60,worker,ray-node"
FAULTS_QUEUE = "dllmflow-faults"
FAULTS_CORPUS = "faultbench"
FAULTS_REPLICA_GROUP = "faults"


@dataclass(frozen=True)
class Fault:
    component: str
    down_s: float = 0.0

    @property
    def during(self) -> str:
        return FAULT_KINDS[self.component]

    @property
    def label(self) -> str:
        if self.component == "none":
            return "no fault"
        if self.component in ("worker", "ray-node"):
            return f"{self.component} killed"
        return f"{self.component} down {self.down_s:g}s" + (
            " during submit" if self.during == "submit" else ""
        )


def parse_faults(text: str) -> list[Fault]:
    """'redis:120,postgres:60,temporal:60,worker,ray-node' -> faults; errors name the entry."""
    faults = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, seconds = entry.partition(":")
        if name not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {name!r} in {entry!r}; faults: {', '.join(FAULT_KINDS)}"
            )
        try:
            down = float(seconds) if seconds else 0.0
        except ValueError:
            raise ValueError(f"fault {entry!r}: the seconds after ':' must be a number") from None
        if down < 0 or (name in ("redis", "postgres", "temporal") and down <= 0):
            raise ValueError(f"fault {entry!r}: {name} needs a positive outage, e.g. {name}:60")
        faults.append(Fault(name, down))
    if not faults:
        raise ValueError("no faults given")
    return faults


def loopback_only(settings: Settings) -> None:
    """The campaign kills servers: only the embedded ones, never a configured external one."""
    external = [name for name in manager.SERVICES if not settings.embedded(name)]
    if external:
        raise StackError(
            "bench faults kills servers, so it runs on the embedded stack only; unset "
            + ", ".join(manager.EXTERNAL_SETTING[name] for name in external)
        )
    if settings.api_host not in ("127.0.0.1", "localhost", "::1"):
        raise StackError(
            f"bench faults needs DLLMFLOW_API_HOST on loopback (got {settings.api_host})"
        )


@dataclass
class EpisodeRun:
    """One question's way through the campaign, as the submitting client saw it."""

    question_index: int
    episode_id: str
    submitted: bool = False
    submit_attempts: int = 0
    submit_error: str | None = None
    client_status: str | None = None
    client_error: str | None = None


@dataclass
class FaultReport:
    fault: str
    component: str
    down_s: float
    submitted: int = 0
    completed: int = 0
    dead_lettered: int = 0
    failed: int = 0
    cancelled: int = 0
    stuck: int = 0
    duplicated: int = 0
    lost: int = 0
    off_queue: int = 0
    not_submitted: int = 0
    reruns_before_commit: int = 0
    submit_retries: int = 0
    starts_during_outage: int = 0
    in_flight_when_hit: int = 0
    workers_when_hit: int = 0  # live workers on the campaign's queue (own heartbeats)
    checkpoints: int = 0
    replicas_on_killed_node: int | None = None  # ray-node: campaign replicas there when killed
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # the rows' errors
    episode_ids: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.stuck or self.duplicated or self.lost or self.not_submitted or self.off_queue
        )


class Campaign:
    """Runs faults one after another against the embedded stack of `stack`."""

    def __init__(
        self,
        stack: Settings,
        questions: list[dict[str, Any]],
        *,
        episodes: int,
        concurrency: int,
        policy: str = "routed",
        workers: int = 2,
        ray_nodes: int = 1,
        worker_env: dict[str, str] | None = None,
        deadline_s: float = 1800.0,
        submit_interval_s: float = 0.05,
        hit_when_in_flight: int | None = None,
        progress: Progress = lambda _: None,
    ) -> None:
        if not questions:
            raise ValueError("the campaign needs questions")
        self.stack = stack
        self.run_settings = stack.model_copy(update={"task_queue": FAULTS_QUEUE})
        self.questions, self.episodes, self.concurrency = questions, episodes, concurrency
        self.policy, self.n_workers, self.n_ray_nodes = policy, workers, ray_nodes
        self.worker_env = {"DLLMFLOW_REPLICA_GROUP": FAULTS_REPLICA_GROUP, **(worker_env or {})}
        self.deadline_s, self.progress = deadline_s, progress
        # Question i is handed in no earlier than i x this (a client streaming a file), so
        # submits are still going on when a fault lands.
        self.submit_interval_s = submit_interval_s
        # A "run" fault lands once this many episodes are part-way (default: half of the
        # batch's concurrency); a "submit" fault once a quarter of that has been started.
        self.hit_when_in_flight = hit_when_in_flight or max(1, min(concurrency, episodes) // 2)
        self.workers: list[subprocess.Popen] = []
        self.spawned = 0  # workers started so far (names their logs)
        self.nodes: list[tuple[RayNode, ProcessRecord]] = []

    # -- the campaign's own workers and Ray nodes ------------------------------------------

    def _start_nodes(self) -> None:
        for index in range(1 + len(self.nodes), 1 + self.n_ray_nodes):
            node = RayNode(self.stack, index, num_cpus=1)
            self.progress(f"ray: starting node {index} (joins {self.stack.effective_ray_address})")
            self.nodes.append((node, node.start()))

    def _start_workers(self) -> None:
        from dllmflow.workers.episode_worker import spawn_worker

        env = dict(self.worker_env)
        if self.nodes:  # replicas prefer the last extra node, so losing it costs them
            node_id = self.nodes[-1][0].node_id()
            if node_id:
                env["DLLMFLOW_REPLICA_NODE_ID"] = node_id
        self.workers = [w for w in self.workers if w.poll() is None]
        while len(self.workers) < self.n_workers:
            self.progress(f"worker: starting {len(self.workers) + 1}/{self.n_workers}")
            self.spawned += 1
            log = self.stack.state_dir / "logs" / f"faults-worker-{self.spawned}.log"
            self.workers.append(spawn_worker(self.run_settings, env, log_path=log))

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.workers = []
        for node, record in self.nodes:
            node.stop(record)
        self.nodes = []
        # The campaign's replicas are not detached: they stop with the workers that own them.

    # -- one fault ----------------------------------------------------------------------------

    def run(
        self,
        faults: list[Fault],
        on_report: Callable[[list[FaultReport]], None] | None = None,
    ) -> list[FaultReport]:
        """Each fault in turn; `on_report` gets the reports so far after each (a long run's
        finished faults are kept even if a later one is interrupted)."""
        reports: list[FaultReport] = []
        try:
            for fault in faults:
                reports.append(self.run_fault(fault))
                if on_report is not None:
                    on_report(reports)
        finally:
            self.close()
            manager.up(self.stack)  # whatever a fault left down comes back
        return reports

    def run_fault(self, fault: Fault) -> FaultReport:
        from dllmflow.store.episodes import new_episode_id

        if fault.component == "ray-node" and not self.n_ray_nodes:
            raise ValueError("the ray-node fault needs --ray-nodes 1 or more")
        if fault.component == "worker" and self.n_workers < 2:
            raise ValueError("the worker fault needs two workers (survivors finish the batch)")
        self._start_nodes()
        self._start_workers()
        # Ids fixed up front, so a client's retried submit cannot make a second episode.
        runs = [EpisodeRun(i, new_episode_id()) for i in range(self.episodes)]
        report = FaultReport(fault.label, fault.component, fault.down_s)
        report.episode_ids = [run.episode_id for run in runs]
        self.progress(f"{fault.label}: {self.episodes} episodes, {self.concurrency} at a time")
        started = time.monotonic()
        outages: list[str] = []
        driver = threading.Thread(
            target=lambda: asyncio.run(self._drive(runs, outages)), name="fault-driver"
        )
        driver.start()
        committed = self._inject(fault, runs, report, driver)
        remaining = self.deadline_s - (time.monotonic() - started)
        driver.join(max(remaining, 0))
        if driver.is_alive():
            report.problems.append(
                f"the batch was not done after the {self.deadline_s:g}s deadline"
            )
        report.wall_s = round(time.monotonic() - started, 1)
        report.starts_during_outage = len(set(outages))
        self._judge(runs, committed, report)
        self.progress(
            f"{fault.label}: completed {report.completed}/{report.submitted}, dead-lettered "
            f"{report.dead_lettered}, stuck {report.stuck}, duplicated {report.duplicated}, "
            f"lost {report.lost} ({report.wall_s:.0f}s)"
        )
        if driver.is_alive():  # keep the next fault's numbers apart: wait for this batch
            driver.join(self.deadline_s)
        return report

    async def _drive(self, runs: list[EpisodeRun], outages: list[str]) -> None:
        """The client: submit each question (retrying a refused submit under the same episode
        id, as any client of an idempotent API would), then wait for its result."""
        from dllmflow.workflows.service import EpisodeService, rpc_reason

        svc = await EpisodeService.connect(self.run_settings)
        svc.on_outage = lambda episode_id, _down, _why: outages.append(episode_id)
        gate = asyncio.Semaphore(self.concurrency)
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        done = 0

        async def one(run: EpisodeRun) -> None:
            nonlocal done
            await asyncio.sleep(run.question_index * self.submit_interval_s)
            async with gate:
                record = self.questions[run.question_index % len(self.questions)]
                await self._submit(svc, run, record, deadline)
                if run.submitted:
                    left = deadline - asyncio.get_running_loop().time()
                    try:
                        run.client_status = (await svc.wait(run.episode_id, timeout=left)).status
                    except Exception as exc:
                        run.client_error = rpc_reason(exc)
            done += 1
            if done % max(1, self.episodes // 10) == 0 or done == self.episodes:
                self.progress(f"  {done}/{self.episodes} episodes finished")

        await asyncio.gather(*(one(run) for run in runs))

    async def _submit(self, svc, run: EpisodeRun, record: dict[str, Any], deadline: float) -> None:
        from dllmflow.store.episodes import EpisodeNotFound
        from dllmflow.store.models import EpisodeStatus
        from dllmflow.workflows.service import NOT_STARTED, WorkflowNotStarted, rpc_reason

        loop, delay = asyncio.get_running_loop(), 0.5
        while loop.time() < deadline:
            run.submit_attempts += 1
            try:
                try:
                    row = svc.episodes.get(run.episode_id)
                except EpisodeNotFound:
                    row = None
                if row is None:
                    await svc.submit(
                        record["question"],
                        policy=self.policy,
                        question_record=record,
                        episode_id=run.episode_id,
                    )
                elif row.status == EpisodeStatus.FAILED and (row.error or "").startswith(
                    NOT_STARTED
                ):
                    await svc.retry(run.episode_id)
                elif row.status == EpisodeStatus.QUEUED:
                    await svc.ensure_started(row)
                run.submitted, run.submit_error = True, None
                return
            except (WorkflowNotStarted, ValueError) as exc:
                run.submit_error = str(exc)
            except Exception as exc:
                run.submit_error = rpc_reason(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _snapshot(self, runs: list[EpisodeRun]) -> dict[int, tuple[str, int]]:
        from dllmflow.store.checkpoints import CheckpointStore

        store = CheckpointStore(self.stack)
        return {
            cp.id: (cp.idempotency_key, cp.payload.get("execution", 0))
            for run in runs
            if run.submitted
            for cp in store.for_episode(run.episode_id)
        }

    def _in_flight(self, runs: list[EpisodeRun]) -> int:
        """Episodes `running` with at least one checkpoint (part-way through); one query."""
        from sqlalchemy import func, select

        from dllmflow.store.db import transaction
        from dllmflow.store.models import Checkpoint, Episode, EpisodeStatus

        ids = [r.episode_id for r in runs if r.submitted]
        if not ids:
            return 0
        query = (
            select(func.count(func.distinct(Episode.id)))
            .join(Checkpoint, Checkpoint.episode_id == Episode.id)
            .where(Episode.id.in_(ids), Episode.status == EpisodeStatus.RUNNING)
        )
        with transaction(self.stack) as session:
            return int(session.execute(query).scalar_one())

    def _statuses(self, episode_ids: list[str]) -> dict[str, str]:
        from sqlalchemy import select

        from dllmflow.store.db import transaction
        from dllmflow.store.models import Episode

        if not episode_ids:
            return {}
        with transaction(self.stack) as session:
            rows = session.execute(
                select(Episode.id, Episode.status).where(Episode.id.in_(episode_ids))
            ).all()
        return {episode_id: status for episode_id, status in rows}

    def _errors(self, episode_ids: list[str]) -> dict[str, str | None]:
        from sqlalchemy import select

        from dllmflow.store.db import transaction
        from dllmflow.store.models import Episode

        with transaction(self.stack) as session:
            rows = session.execute(
                select(Episode.id, Episode.error).where(Episode.id.in_(episode_ids))
            ).all()
        return dict(rows)

    def _inject(
        self, fault: Fault, runs: list[EpisodeRun], report: FaultReport, driver: threading.Thread
    ) -> dict[int, tuple[str, int]]:
        """Wait for the moment, break the component, keep it down; returns the checkpoints
        committed just before (they must all be there afterwards)."""
        if fault.during == "submit":
            # Part of the batch has started, the rest is still being submitted.
            target = max(1, self.hit_when_in_flight // 2)
            ready = lambda: sum(r.submitted for r in runs) >= target  # noqa: E731
        else:
            target = self.hit_when_in_flight
            ready = lambda: self._in_flight(runs) >= target  # noqa: E731
        if not wait_until(lambda: ready() or not driver.is_alive(), 600, 0.2):
            report.problems.append(f"fewer than {target} episodes under way after 600s")
        committed = self._snapshot(runs)
        report.in_flight_when_hit = (
            sum(r.submitted for r in runs) if fault.during == "submit" else self._in_flight(runs)
        )
        from dllmflow.stack.liveness import live_workers

        report.workers_when_hit = len(live_workers(self.run_settings))
        if not driver.is_alive():
            report.problems.append("the batch finished before the fault landed")
        self.progress(f"{fault.label}: injecting ({report.in_flight_when_hit} under way)")
        if fault.component == "none":
            pass
        elif fault.component == "worker":
            victim = self.workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.workers.remove(victim)  # not restarted: the survivors finish the batch
        elif fault.component == "ray-node":
            node, record = self.nodes.pop()
            report.replicas_on_killed_node = self._replicas_on(node.node_id())
            node.kill(record)  # not restarted: replicas move to the remaining nodes
            self.n_ray_nodes -= 1
        else:
            with manager.supervision_paused(self.stack):
                record = manager.StackState(self.stack.state_dir).load()[fault.component]
                os.kill(record.pid, signal.SIGKILL)
                if not wait_until(lambda: not record.alive(), 15, 0.1):
                    raise StackError(f"{fault.component} (pid {record.pid}) did not die")
                time.sleep(fault.down_s)
                self.progress(f"{fault.label}: bringing {fault.component} back (dllmflow up)")
                manager.up(self.stack)
        return committed

    def _replicas_on(self, node_id: str | None) -> int:
        """Live replica actors of the campaign's namespace on node `node_id` (state API)."""
        from dllmflow.workers.serving.settings import replica_namespace

        payload = ray_dashboard_get(self.stack, "/api/v0/actors?limit=10000", timeout=10)
        actors = payload["data"]["result"]["result"]
        namespace = replica_namespace(FAULTS_REPLICA_GROUP)
        return sum(
            a.get("state") == "ALIVE"
            and a.get("node_id") == node_id
            and a.get("ray_namespace") == namespace
            for a in actors
        )

    # -- judging ------------------------------------------------------------------------------

    def _judge(
        self, runs: list[EpisodeRun], committed: dict[int, tuple[str, int]], report: FaultReport
    ) -> None:
        from dllmflow.store.executions import executions_for
        from dllmflow.store.models import EpisodeStatus

        submitted = [r for r in runs if r.submitted]
        report.submitted = len(submitted)
        report.not_submitted = len(runs) - len(submitted)
        report.submit_retries = sum(max(0, r.submit_attempts - 1) for r in runs)
        statuses = self._statuses([r.episode_id for r in runs])
        errors = self._errors([r.episode_id for r in runs])
        described = asyncio.run(self._temporal_statuses(list(statuses)))
        temporal = {episode_id: status for episode_id, (status, _) in described.items()}
        for episode_id, (_, queue) in described.items():
            if queue is not None and queue != self.run_settings.task_queue:
                report.off_queue += 1
                report.problems.append(f"{episode_id}: ran on task queue {queue!r}")
        for run in runs:
            status = statuses.get(run.episode_id)
            if status is None:
                if run.submitted:  # the client was told it started, and there is no row
                    report.lost += 1
                    report.problems.append(f"{run.episode_id}: submitted, no row")
                elif run.submit_error:
                    report.problems.append(f"{run.episode_id}: not submitted: {run.submit_error}")
                continue
            running = temporal.get(run.episode_id) == "RUNNING"
            if status in (EpisodeStatus.QUEUED, EpisodeStatus.RUNNING) or running:
                report.stuck += 1
                report.problems.append(
                    f"{run.episode_id}: row {status}, Temporal {temporal.get(run.episode_id)}"
                )
                continue
            if status == EpisodeStatus.COMPLETED and temporal.get(run.episode_id) != "COMPLETED":
                report.stuck += 1
                report.problems.append(
                    f"{run.episode_id}: row completed, Temporal {temporal.get(run.episode_id)}"
                )
                continue
            key = {
                EpisodeStatus.COMPLETED: "completed",
                EpisodeStatus.DEAD_LETTERED: "dead_lettered",
                EpisodeStatus.FAILED: "failed",
                EpisodeStatus.CANCELLED: "cancelled",
            }[status]
            setattr(report, key, getattr(report, key) + 1)
            if status == EpisodeStatus.FAILED:
                report.problems.append(f"{run.episode_id}: failed")
            if status == EpisodeStatus.DEAD_LETTERED:
                reason = (errors.get(run.episode_id) or "?").split(":", 1)[0][:80]
                report.dead_letter_reasons[reason] = report.dead_letter_reasons.get(reason, 0) + 1
        final = self._snapshot(runs)
        report.checkpoints = len(final)
        missing = set(committed) - set(final)
        report.lost += len(missing)
        if missing:
            report.problems.append(f"{len(missing)} committed checkpoint(s) gone")
        counts = executions_for(self.stack, [r.episode_id for r in submitted])
        keys = [key for key, _ in final.values()]
        twice = len(keys) - len(set(keys))
        after_commit = [key for key, seen in final.values() if counts.get(key, 0) != seen]
        report.duplicated = twice + len(after_commit)
        if after_commit:
            report.problems.append(f"ran again after commit: {after_commit[:5]}")
        report.reruns_before_commit = sum(1 for n in counts.values() if n > 1)

    async def _temporal_statuses(
        self, episode_ids: list[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """Per episode: its latest workflow run's (status, task queue); (None, None) if none."""
        from temporalio.service import RPCError, RPCStatusCode

        from dllmflow.workflows.service import EpisodeService

        svc = await EpisodeService.connect(self.run_settings)
        out: dict[str, tuple[str | None, str | None]] = {}
        for episode_id in episode_ids:
            try:
                info = await svc.handle(svc.episodes.get(episode_id)).describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                out[episode_id] = (None, None)
                continue
            out[episode_id] = (info.status.name if info.status else None, info.task_queue)
        return out


def summary(reports: list[FaultReport]) -> dict[str, Any]:
    return {
        "faults": [asdict(r) for r in reports],
        "totals": {
            key: sum(getattr(r, key) for r in reports)
            for key in (
                "submitted",
                "completed",
                "dead_lettered",
                "failed",
                "cancelled",
                "stuck",
                "duplicated",
                "lost",
                "off_queue",
                "not_submitted",
            )
        },
        "clean": all(r.clean for r in reports),
    }

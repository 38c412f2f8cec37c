"""Scale-out on real engines: two workers poll one task queue and the Ray cluster has a second
node on this host (its ports from settings), where the replicas run. Killing one worker
(SIGKILL, never restarted) and then the second Ray node (its whole process tree) while model
episodes are mid-way, every episode still completes on the survivors, with nothing run twice
after its checkpoint committed, nothing lost and nothing left without a live workflow."""

from __future__ import annotations

import asyncio

import psutil
import pytest
from temporalio.client import WorkflowExecutionStatus

from dllmflow.config import Settings
from dllmflow.stack.components import ray_node_ports
from dllmflow.stack.faults import Campaign, parse_faults
from dllmflow.store.episodes import EpisodeRepository
from dllmflow.store.models import EpisodeStatus
from dllmflow.workflows.service import EpisodeService

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

EPISODES = 3


def listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


@pytest.mark.timeout(1500)
def test_episodes_finish_on_the_surviving_worker_and_ray_node(
    stack: Settings, world_questions
) -> None:
    # The head binds the ports its settings name, none of Ray's fixed defaults.
    head = ray_node_ports(stack)
    assert set(head.values()) <= listening_ports(), head

    records = world_questions[:EPISODES]
    campaign = Campaign(
        stack,
        records,
        episodes=EPISODES,
        concurrency=EPISODES,
        policy="routed",  # planning turns on the diffusion replica, the answer on the AR one
        workers=2,
        ray_nodes=1,
        deadline_s=900,
        submit_interval_s=0.5,
        hit_when_in_flight=2,
        progress=print,
    )
    reports = campaign.run(parse_faults("worker,ray-node"))
    for r in reports:
        print(r)
    worker, node = reports
    assert worker.workers_when_hit == 2, worker  # both polled the queue when one was killed
    assert node.replicas_on_killed_node and node.replicas_on_killed_node >= 1, (
        "the replicas were not on the Ray node that was killed",
        node,
    )
    # A turn whose replica went down with the node is given up within seconds and retried,
    # not left waiting for the 600 s call timeout.
    assert node.wall_s < 400, node
    repo = EpisodeRepository(stack)
    svc = asyncio.run(EpisodeService.connect(stack))
    for r in reports:
        assert r.in_flight_when_hit >= 2, f"{r.fault} landed on too few episodes: {r}"
        assert (r.submitted, r.completed) == (EPISODES, EPISODES), r
        assert (r.stuck, r.duplicated, r.lost, r.dead_lettered, r.failed) == (0, 0, 0, 0, 0), r
        for episode_id in r.episode_ids:
            episode = repo.get(episode_id)
            assert episode.status == EpisodeStatus.COMPLETED, (r.fault, episode.error)
            status = asyncio.run(svc.workflow_status(episode))
            assert status == WorkflowExecutionStatus.COMPLETED, (r.fault, status)
    assert not campaign.nodes and not campaign.workers  # the campaign cleaned up after itself

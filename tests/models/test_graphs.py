"""CUDA graphs of the samplers' decoding passes (dllmflow/models/sampling/graphs.py): decoding
through graphs gives the tokens the eager passes give, alone and batched, for AR, block
diffusion and block diffusion with token shift (whose boundary logits outlive a pass).

On CPU the graphs are emulated: the same static buffers, each replay overwriting the output the
last pass returned; on a GPU the test at the bottom captures real graphs."""

from __future__ import annotations

import pytest
import torch

from dllmflow.models.loader import load_backend
from dllmflow.models.sampling import GenerationRequest
from dllmflow.models.sampling.ar import ARSampler
from dllmflow.models.sampling.diffusion import DiffusionSampler
from dllmflow.models.sampling.graphs import MIN_SPAN_BUCKET, ArenaGraphs, span_bucket

from .standins import save_block_family
from .test_sampling import PROMPTS


def _requests(block: int = 8) -> list[GenerationRequest]:
    taus = [0.9, 0.5, 1.0, 0.2, 0.9, 0.7]
    return [
        GenerationRequest(
            prompt=p + "x" * i,
            max_new_tokens=2 * block + 5 * i,
            tau=tau,
            stop_at_action_close=False,
        )
        for i, (p, tau) in enumerate(zip(PROMPTS * 2, taus, strict=True))
    ]


@pytest.fixture(scope="module")
def shifted(tmp_path_factory, tokenizer):
    """A random Fast-dLLM-v2-shaped checkpoint (token shift, grouped K/V, block 8)."""
    path = tmp_path_factory.mktemp("fast-dllm-v2-graphs")
    save_block_family(path, "fast-dllm-v2", tokenizer)
    backend = load_backend(path, slot="diffusion")
    with torch.no_grad():
        backend.model.lm_head.weight.mul_(10)  # several commits a pass, not one
    assert backend.sampler.shift
    return backend.model


def _sampler(kind, tiny_ar, tiny_diffusion, shifted, tokenizer):
    if kind == "ar":
        return ARSampler(tiny_ar, tokenizer)
    return DiffusionSampler(tiny_diffusion if kind == "diffusion" else shifted, tokenizer)


def _decode_all(sampler, graphs: bool) -> tuple[list, list]:
    sampler.cuda_graphs = graphs
    alone = [sampler.generate(r) for r in _requests()]
    batched = sampler.generate_batch(_requests(), max_batch=4)  # rows join and leave
    return alone, batched


@pytest.mark.parametrize("kind", ["ar", "diffusion", "shifted-diffusion"])
def test_emulated_graphs_decode_what_the_eager_passes_decode(
    kind, tiny_ar, tiny_diffusion, shifted, tokenizer
):
    sampler = _sampler(kind, tiny_ar, tiny_diffusion, shifted, tokenizer)
    eager_alone, eager_batched = _decode_all(sampler, graphs=False)
    assert sampler.kv_arena().graphs is None  # off means no graph was made
    sampler.graph_capture = "emulate"
    graph_alone, graph_batched = _decode_all(sampler, graphs=True)
    for want, got in zip(eager_alone + eager_batched, graph_alone + graph_batched, strict=True):
        assert got.token_ids == want.token_ids
        assert got.forward_passes == want.forward_passes
        assert got.stop_reason == want.stop_reason
    assert len({tuple(r.token_ids) for r in eager_alone}) > 1  # not one degenerate output
    stats = sampler.kv_arena().graphs.stats()
    # Shapes repeat: most passes were replays of a graph captured once.
    assert stats["replays"] > 2 * stats["captures"] > 0
    assert stats["disabled"] is None


def test_a_reallocated_arena_drops_its_graphs(tiny_ar, tokenizer):
    sampler = ARSampler(tiny_ar, tokenizer)
    sampler.cuda_graphs, sampler.graph_capture = True, "emulate"
    sampler.generate(GenerationRequest(prompt=PROMPTS[0], max_new_tokens=4))
    arena = sampler.kv_arena()
    graphs, generation = arena.graphs, arena.generation
    assert graphs.graphs and graphs.generation == generation
    # A longer request grows the arena's capacity: new K/V tensors, the old graphs are stale.
    long = GenerationRequest(prompt=PROMPTS[0] * 6, max_new_tokens=8)
    result = sampler.generate(long)
    assert arena.generation > generation and graphs.generation == arena.generation
    sampler.cuda_graphs = False
    assert sampler.generate(long).token_ids == result.token_ids


def test_the_least_recently_used_graphs_go_first(tiny_ar, tokenizer):
    sampler = ARSampler(tiny_ar, tokenizer)
    sampler.cuda_graphs, sampler.graph_capture = True, "emulate"
    sampler.kv_arena().graphs = ArenaGraphs("emulate", max_graphs=2)
    sampler.generate_batch(_requests()[:3], max_batch=3)  # batches of 3, 2 and 1 rows
    graphs = sampler.kv_arena().graphs
    assert graphs.captures >= 3 and len(graphs.graphs) == 2


def test_span_buckets():
    assert span_bucket(1, 4096) == MIN_SPAN_BUCKET
    assert span_bucket(MIN_SPAN_BUCKET + 1, 4096) == 2 * MIN_SPAN_BUCKET
    assert span_bucket(1000, 1024) == 1024
    assert span_bucket(3000, 2560) == 2560  # never past the arena's capacity


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (the emulated "
                    "twin above runs the same bookkeeping on CPU)")  # fmt: skip
@pytest.mark.parametrize("kind", ["ar", "shifted-diffusion"])
def test_cuda_graphs_decode_what_the_eager_passes_decode(
    kind, tiny_ar, tiny_diffusion, shifted, tokenizer
):
    sampler = _sampler(kind, tiny_ar, tiny_diffusion, shifted, tokenizer)
    sampler.model.to("cuda", torch.float32)
    eager_alone, eager_batched = _decode_all(sampler, graphs=False)
    graph_alone, graph_batched = _decode_all(sampler, graphs=True)
    for want, got in zip(eager_alone + eager_batched, graph_alone + graph_batched, strict=True):
        assert got.token_ids == want.token_ids
    stats = sampler.kv_arena().graphs.stats()
    assert stats["disabled"] is None and stats["replays"] > stats["captures"] > 0


def test_the_cuda_graphs_setting_reaches_the_replicas_sampler(monkeypatch):
    from dllmflow.workers.serving.replicas import ModelReplica
    from dllmflow.workers.serving.settings import ServingSettings

    assert ServingSettings().cuda_graphs is False  # until measured on a GPU
    monkeypatch.setenv("DLLMFLOW_CUDA_GRAPHS", "true")
    settings = ServingSettings()
    assert settings.cuda_graphs is True
    replica = ModelReplica(
        {"backend": "ar", "index": 0, "checkpoint": "ar", "cuda_graphs": settings.cuda_graphs}
    )
    try:
        assert replica.backend.sampler.cuda_graphs is True
    finally:
        replica.scheduler.stop()

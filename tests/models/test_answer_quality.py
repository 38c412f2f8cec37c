"""Answer quality of the shipped model pair on held-out questions (the oracle tests elsewhere
answer with the gold hop values, so they only prove the plumbing)."""

from __future__ import annotations

import pytest

from dllmflow.agent.policy import ModelPolicy
from dllmflow.models.evaluation import evaluate
from dllmflow.models.loader import load_backend
from dllmflow.world.generator import eval_seeds, generate_world, train_seeds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def heldout():
    seed = eval_seeds(1)[0]
    assert seed not in set(train_seeds(200))  # never seen in training
    world = generate_world(seed, n_questions=12)
    return world.questions[:6], world.documents


@pytest.mark.parametrize(("backend", "floor"), [("diffusion", 0.5), ("ar", 0.5)])
def test_shipped_model_answers_heldout_questions(heldout, backend: str, floor: float) -> None:
    # bench/results/eval/models: 81% for each model on 100 held-out questions.
    questions, documents = heldout
    _model, _tok, sampler = load_backend(backend)
    summary, episodes = evaluate(ModelPolicy(sampler), questions, documents)
    assert summary["accuracy"] >= floor, [
        (e.answer, q["answer"]) for e, q in zip(episodes, questions, strict=True)
    ]
    assert summary["valid_action_rate"] >= 0.9

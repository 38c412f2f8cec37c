"""Offline evaluation of agent policies on held-out questions, with the in-memory search tool.

    python -m dllmflow.models.evaluation --policy ar --questions 100
    python -m dllmflow.models.evaluation --policy diffusion --p-react
    python -m dllmflow.models.evaluation --policy /path/to/checkpoint --corpus c.jsonl --qa q.jsonl

Policies: "oracle", a shipped checkpoint name ("ar", "diffusion") or a checkpoint directory.
Default questions: a generated held-out world (``world.eval_seeds``; never used in training).
Metrics: episode accuracy, valid-action rate over all turns (after the one bounded repair the
durable workflow also gives an unusable turn, agent.repair; ``--no-repair`` leaves it out), the
first decodes' invalid rate, turns and tool calls per episode, tokens per forward pass, per-turn
decode latency, stop reasons.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dllmflow.agent.episode import Episode, run_episode
from dllmflow.world.generator import eval_seeds, generate_world, read_corpus, read_questions
from dllmflow.world.local_search import InMemorySearch


def make_policy(
    name: str,
    *,
    p_react: bool = False,
    tau: float = 0.9,
    device: str = "cpu",
    concurrency: int = 1,
    commit_order: str = "confidence",
    hold_repeats: bool = True,
    planner_commit_order: str | None = None,
):
    """``oracle`` or a checkpoint (shipped name or directory) behind a ModelPolicy; with
    ``concurrency`` > 1 the turns of concurrent episodes share one continuous batch."""
    from dllmflow.agent.policy import ModelPolicy, OraclePolicy

    if name == "oracle":
        return OraclePolicy(action_first=p_react)
    from .loader import load_backend

    backend = load_backend(name, device=device)
    kw = dict(
        tau=tau,
        commit_order=commit_order,
        planner_commit_order=planner_commit_order,
        hold_repeats=hold_repeats,
        action_first=p_react,
    )
    if concurrency <= 1:
        return ModelPolicy(backend.sampler, **kw)
    return BatchedPolicy(backend.sampler, max_batch=concurrency, **kw)


class BatchedPolicy:
    """A ModelPolicy whose turns go through a step-level continuous-batching scheduler (the
    one the serving replicas run), so episodes on several threads decode together."""

    continues_turns = True

    def __init__(self, sampler, *, max_batch: int, **policy_kw: Any) -> None:
        from dllmflow.agent.policy import ModelPolicy
        from dllmflow.workers.serving.scheduler import BatchScheduler

        self.policy = ModelPolicy(sampler, **policy_kw)
        self.scheduler = BatchScheduler(sampler, max_batch=max_batch, name="offline-eval")

    def __call__(
        self, role: str, question: Mapping[str, Any], history: Sequence[Any], prefix: str = ""
    ):
        from dllmflow.agent.episode import PolicyTurn

        request = self.policy.request(role, question, history, prefix)
        result = self.scheduler.submit(request).result()
        return PolicyTurn(prefix + result.result.text, result.result.to_dict())

    def close(self) -> None:
        self.scheduler.stop()


def summarize(episodes: Sequence[Episode]) -> dict[str, Any]:
    turns = [t for ep in episodes for t in ep.turns]
    stats = [t.stats for t in turns if t.stats]
    tokens = sum(s["tokens_generated"] for s in stats)
    passes = sum(s["forward_passes"] for s in stats)
    decode = [s["decode_seconds"] for s in stats]
    ready = [s["action_ready_seconds"] for s in stats if s.get("action_ready_seconds") is not None]
    n = max(1, len(episodes))
    return {
        "episodes": len(episodes),
        "accuracy": sum(ep.correct for ep in episodes) / n,
        "answered": sum(ep.final_answer is not None for ep in episodes) / n,
        "turns": len(turns),
        "valid_action_rate": sum(t.valid for t in turns) / max(1, len(turns)),
        "invalid_action_rate": sum(not t.valid for t in turns) / max(1, len(turns)),
        # The first decode's: an invalid action or a writer that did not answer (agent.repair)
        "invalid_before_repair_rate": sum(t.first_error is not None for t in turns)
        / max(1, len(turns)),
        "repaired_turns": sum(t.repaired for t in turns),
        "turns_per_episode": len(turns) / n,
        "tool_calls_per_episode": sum(ep.tool_calls for ep in episodes) / n,
        "tokens_per_forward": tokens / passes if passes else None,
        "tokens_per_turn": tokens / len(stats) if stats else None,
        "forward_passes_per_turn": passes / len(stats) if stats else None,
        "turn_decode_s_mean": statistics.mean(decode) if decode else None,
        "turn_decode_s_p95": sorted(decode)[int(0.95 * (len(decode) - 1))] if decode else None,
        "time_to_action_s_mean": statistics.mean(ready) if ready else None,
        "episode_s_mean": statistics.mean(ep.seconds for ep in episodes) if episodes else None,
        "episode_s_p50": statistics.median(ep.seconds for ep in episodes) if episodes else None,
        "stop_reasons": dict(Counter(s["stop_reason"] for s in stats)),
        "accuracy_by_hops": _by_hops(episodes),
    }


def _by_hops(episodes: Sequence[Episode]) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for ep in episodes:
        groups.setdefault(str(ep.hops or "?"), []).append(ep.correct)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def evaluate(
    policy: Callable,
    questions: Sequence[Mapping[str, Any]],
    corpus: Sequence[Mapping[str, Any]],
    *,
    max_turns: int = 16,
    on_episode: Callable[[int, Episode], None] | None = None,
    concurrency: int = 1,
    repair: bool = True,
) -> tuple[dict[str, Any], list[Episode]]:
    """Run one episode per question (``concurrency`` at a time, each on its own thread);
    returns (summary metrics, episodes in question order)."""
    from concurrent.futures import ThreadPoolExecutor

    tools = InMemorySearch(corpus)

    def one(i: int) -> Episode:
        ep = run_episode(policy, questions[i], tools, max_turns=max_turns, repair=repair)
        if on_episode is not None:
            on_episode(i, ep)
        return ep

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        episodes = list(pool.map(one, range(len(questions))))
    return summarize(episodes), episodes


def evaluate_policy(
    policy: str,
    *,
    n_questions: int = 100,
    eval_index: int = 0,
    corpus_path: str | Path | None = None,
    questions_path: str | Path | None = None,
    p_react: bool = False,
    tau: float = 0.9,
    device: str = "cpu",
    progress: bool = True,
    concurrency: int = 1,
    episodes_out: str | Path | None = None,
    commit_order: str = "confidence",
    repair: bool = True,
    hold_repeats: bool = True,
    planner_commit_order: str | None = None,
) -> dict[str, Any]:
    """The `dllmflow eval` entry point: metrics of one policy on held-out (or given) questions."""
    if (corpus_path is None) != (questions_path is None):
        raise ValueError("give both a corpus and a questions file, or neither")
    if corpus_path is not None:
        corpus = read_corpus(corpus_path)
        questions = read_questions(questions_path)[:n_questions]
        source = {"corpus": str(corpus_path), "questions": str(questions_path)}
    else:
        seed = eval_seeds(1, offset=eval_index)[0]
        world = generate_world(seed, n_questions=n_questions)
        corpus, questions = world.documents, world.questions
        source = {"eval_world_seed": seed}
    pol = make_policy(
        policy,
        p_react=p_react,
        tau=tau,
        device=device,
        concurrency=concurrency,
        commit_order=commit_order,
        hold_repeats=hold_repeats,
        planner_commit_order=planner_commit_order,
    )
    t0 = time.time()

    def report(i: int, ep: Episode) -> None:
        if progress:
            mark = "ok " if ep.correct else "-- "
            print(f"{mark}{i + 1}/{len(questions)} turns={len(ep.turns)}", file=sys.stderr)

    try:
        summary, episodes = evaluate(
            pol, questions, corpus, on_episode=report, concurrency=concurrency, repair=repair
        )
    finally:
        if hasattr(pol, "close"):
            pol.close()
    if episodes_out is not None:
        write_episodes(episodes, episodes_out)
    return {
        "policy": policy,
        "p_react": p_react,
        "tau": tau,
        "commit_order": commit_order,
        "planner_commit_order": planner_commit_order or commit_order,
        "hold_repeats": hold_repeats,
        "repair": repair,
        **source,
        "questions": len(questions),
        "concurrency": concurrency,
        "device": device,
        "seconds": round(time.time() - t0, 1),
        **summary,
    }


def write_episodes(episodes: Sequence[Episode], path: str | Path) -> None:
    """One JSON line per episode: answer, correctness, seconds and every turn's text."""
    with open(path, "w") as f:
        for ep in episodes:
            row = {
                "question_id": ep.question_id,
                "answer": ep.final_answer,
                "correct": ep.correct,
                "seconds": round(ep.seconds, 3),
                "tool_calls": ep.tool_calls,
                "turns": [
                    {
                        "role": t.role,
                        "text": t.text,
                        "valid": t.valid,
                        "error": t.error,
                        "repaired": t.repaired,
                        "first_error": t.first_error,
                    }
                    for t in ep.turns
                ],
            }
            f.write(json.dumps(row) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dllmflow.models.evaluation")
    ap.add_argument("--policy", default="diffusion", help="oracle | ar | diffusion | <ckpt dir>")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--eval-index", type=int, default=0)
    ap.add_argument("--corpus")
    ap.add_argument("--qa", help="questions JSONL (with --corpus)")
    ap.add_argument("--p-react", action="store_true", help="action-first decoding")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument(
        "--commit-order",
        choices=["confidence", "left_to_right"],
        default="confidence",
        help="diffusion: commit any confident mask, or only the confident run from the left",
    )
    ap.add_argument(
        "--planner-commit-order",
        choices=["confidence", "left_to_right"],
        help="diffusion: the planner's turns in this order (default: --commit-order)",
    )
    ap.add_argument(
        "--no-hold-repeats",
        dest="hold_repeats",
        action="store_false",
        help="diffusion: let one pass commit the same token at two neighbouring positions",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--concurrency", type=int, default=1, help="episodes decoded together")
    ap.add_argument("--episodes-out", help="write each episode's turns to this JSONL file")
    ap.add_argument(
        "--no-repair",
        dest="repair",
        action="store_false",
        help="count each turn's first decode: no repair of an unusable turn",
    )
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    result = evaluate_policy(
        a.policy,
        n_questions=a.questions,
        eval_index=a.eval_index,
        corpus_path=a.corpus,
        questions_path=a.qa,
        p_react=a.p_react,
        tau=a.tau,
        device=a.device,
        concurrency=a.concurrency,
        episodes_out=a.episodes_out,
        commit_order=a.commit_order,
        planner_commit_order=a.planner_commit_order,
        repair=a.repair,
        hold_repeats=a.hold_repeats,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dllmflow demo`: bring the stack up, load the demo corpus, research one question end to end."""

from __future__ import annotations

import typer

from dllmflow.commands.common import console, err_console, run_async, service, settings
from dllmflow.commands.episodes import episode_summary, follow_episode, print_answer


def default_policy() -> str:
    """The routed DLLM/AR policy once model checkpoints ship; the scripted oracle before that."""
    from dllmflow.models.loader import resolve_checkpoint

    try:
        resolve_checkpoint("ar"), resolve_checkpoint("diffusion")
    except (FileNotFoundError, ValueError):
        return "oracle"
    return "routed"


def demo_command(
    policy: str | None = typer.Option(
        None,
        help="routed | ar | diffusion | ab | shadow | oracle (default: routed when the "
        "model checkpoints are installed, else oracle)",
    ),
    question_index: int = typer.Option(0, min=0, help="Which demo question to research."),
) -> None:
    """Start the embedded stack, load the demo corpus and run one research episode."""
    from dllmflow.stack import manager
    from dllmflow.store.corpus import load_demo_corpus
    from dllmflow.workers.tools.settings import load_tool_settings
    from dllmflow.world.generator import answer_matches, demo_paths, read_questions

    s = settings()
    # The corpus the worker's tools search (DLLMFLOW_CORPUS, "default" unless set).
    corpus = load_tool_settings().corpus
    err_console.print("[bold]1/3[/] starting the embedded stack (first start takes ~20 s)")
    manager.up(s, progress=lambda m: err_console.print(f"[dim]    {m}[/]", highlight=False))
    err_console.print("[bold]2/3[/] loading the demo corpus")
    report = load_demo_corpus(s, corpus=corpus)
    err_console.print(f"[dim]    {report.loaded} documents in corpus {corpus!r}[/]")

    questions = [q for q in read_questions(demo_paths()[1]) if len(q.get("hops") or []) >= 2]
    if question_index >= len(questions):
        raise typer.BadParameter(f"there are {len(questions)} demo questions", "--question-index")
    record = questions[question_index]
    chosen = policy or default_policy()
    err_console.print(f"[bold]3/3[/] researching with policy {chosen!r}:")
    console.print(f"[bold]question:[/] {record['question']}", highlight=False)

    async def go() -> str:
        svc = await service(s)
        episode = await svc.submit(record["question"], policy=chosen, question_record=record)
        await follow_episode(s, episode.id)
        return episode.id

    episode_id = run_async(go())
    summary = episode_summary(s, episode_id)
    print_answer(summary)
    if summary["answer"]:
        verdict = "correct" if answer_matches(summary["answer"], record) else "incorrect"
        console.print(f"expected: {record['answer']} ({verdict})", highlight=False)
    console.print(f"history:  dllmflow episodes history {episode_id}", highlight=False)
    console.print(
        f"web ui:   {s.temporal_ui_url}/namespaces/{s.temporal_namespace}/workflows/"
        f"episode-{episode_id}",
        highlight=False,
    )
    console.print("stop:     dllmflow down", highlight=False)
    if summary["status"] != "completed":
        raise typer.Exit(1)

"""Tool-call validation against the registry's schemas, and the result schemas themselves."""

from __future__ import annotations

import jsonschema
import pytest

from dllmflow.agent import actions
from dllmflow.agent.actions import Action
from dllmflow.workers.tools import TOOLS, ToolCallError, ToolExecutor, validate_call
from dllmflow.workers.tools.registry import FETCH_RESULT_SCHEMA, SEARCH_RESULT_SCHEMA, describe
from dllmflow.world.local_search import InMemorySearch

S, F, A = "invalid search call: ", "invalid fetch call: ", "invalid answer call: "
MALFORMED = [
    (
        {"tool": "serch", "args": {"query": "x"}},
        "unknown tool 'serch'; tools: search, fetch, answer",
    ),
    ({"tool": "search"}, S + "args: 'args' is a required property"),
    ({"tool": "search", "args": {}}, S + "args: 'query' is a required property"),
    ({"tool": "search", "args": {"query": ""}}, S + "query: '' should be non-empty"),
    ({"tool": "search", "args": {"query": "x", "k": 0}}, S + "k: 0 is less than the minimum of 1"),
    ({"tool": "search", "args": {"query": "x", "k": "5"}}, S + "k: '5' is not of type 'integer'"),
    ({"tool": "search", "args": {"q": "x"}}, S + "args: 'query' is a required property"),
    (
        {"tool": "search", "args": {"query": "x", "lang": "en"}},
        S + "args: Additional properties are not allowed ('lang' was unexpected)",
    ),
    ({"tool": "fetch", "args": {"id": 7}}, F + "id: 7 is not of type 'string'"),
    (
        {"tool": "fetch", "args": {"id": "p1", "page": -1}},
        F + "page: -1 is less than the minimum of 0",
    ),
    ({"tool": "answer", "args": {"answer": "x"}}, A + "args: 'sources' is a required property"),
    (
        {"tool": "answer", "args": {"answer": "x", "sources": [1]}},
        A + "sources.0: 1 is not of type 'string'",
    ),
    (["search"], "action must be a JSON object with 'tool' and 'args'"),
]


@pytest.mark.parametrize(("call", "message"), MALFORMED)
def test_malformed_calls_get_specific_errors(call, message):
    with pytest.raises(ToolCallError) as err:
        validate_call(call)
    assert str(err.value) == message


def test_valid_calls_pass_and_action_objects_are_checked_too():
    assert validate_call({"tool": "fetch", "args": {"id": "p1", "page": 2}}) == Action(
        "fetch", {"id": "p1", "page": 2}
    )
    with pytest.raises(ToolCallError, match="k: 99 is greater than the maximum of 20"):
        validate_call(Action("search", {"query": "x", "k": 99}))


def test_executor_returns_errors_for_the_agent_without_touching_the_database():
    from dllmflow.config import load_settings

    # Port 1: any database access would fail loudly, so these never reach Postgres.
    executor = ToolExecutor(load_settings(postgres_port=1), corpus="none", latency=None)
    outcome = executor.run({"tool": "serch", "args": {"query": "x"}})
    assert not outcome.ok and outcome.tool == "serch" and outcome.corpus_version is None
    assert outcome.observation == {"error": "unknown tool 'serch'; tools: search, fetch, answer"}
    done = executor.run(Action("answer", {"answer": "1911", "sources": ["p001"]}))
    assert done.terminal and done.ok and done.result is None


def test_registry_uses_the_action_format_as_single_source():
    assert list(TOOLS) == list(actions.TOOL_NAMES)
    for name, spec in TOOLS.items():
        assert spec.args_schema is actions.TOOL_ARG_SCHEMAS[name]
    assert TOOLS["answer"].terminal and TOOLS["answer"].result_schema is None
    assert [t["name"] for t in describe()] == list(actions.TOOL_NAMES)


def test_training_data_results_fit_the_result_schemas():
    docs = [{"id": "d1", "title": "T", "url": "u", "text": "alpha beta. " * 200}]
    memory = InMemorySearch(docs)
    jsonschema.validate(memory.search("alpha"), SEARCH_RESULT_SCHEMA)
    jsonschema.validate(memory.fetch("d1", 1), FETCH_RESULT_SCHEMA)

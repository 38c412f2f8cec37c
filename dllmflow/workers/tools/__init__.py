"""Research tools: corpus search and fetch over Postgres, their registry and the executor.

from dllmflow.workers.tools import ToolExecutor
outcome = ToolExecutor(settings, corpus="demo").run(action, key=idempotency_key)
outcome.observation  # the result, or {"error": "..."} for the agent

The tool functions themselves: dllmflow.workers.tools.search.search and .fetch.fetch.
"""

from dllmflow.workers.tools.adapter import CorpusTools
from dllmflow.workers.tools.base import ToolError, ToolResult
from dllmflow.workers.tools.executor import ToolExecutor, ToolOutcome
from dllmflow.workers.tools.latency import LatencyProfile, LatencySpecError
from dllmflow.workers.tools.registry import TOOLS, ToolCallError, ToolSpec, validate_call
from dllmflow.workers.tools.settings import ToolSettings, load_tool_settings

__all__ = [
    "TOOLS",
    "CorpusTools",
    "LatencyProfile",
    "LatencySpecError",
    "ToolCallError",
    "ToolError",
    "ToolExecutor",
    "ToolOutcome",
    "ToolResult",
    "ToolSettings",
    "ToolSpec",
    "load_tool_settings",
    "validate_call",
]

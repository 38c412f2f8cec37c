"""The step-level sampler interface shared by every backend (AR, block diffusion, HF models).

A serving scheduler does continuous batching with three calls:

    state = sampler.start(request)             # no compute; tokenizes the prompt
    events = sampler.step([state, other, ...])  # one forward pass per running sequence
    result = sampler.result(state)              # once state.done

Requests join or leave between steps; each carries its own budget and threshold. Greedy
decoding is deterministic per request: a sequence's tokens do not depend on what it was batched
with. ``generate`` (start + step until done) and ``generate_batch`` are conveniences on top.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from dllmflow.agent.actions import ACTION_CLOSE, ACTION_OPEN, THINK_CLOSE

from ..tokenizer import decode
from .arena import KVArena
from .graphs import ArenaGraphs, ArenaPass, Capture

StopReason = Literal["eos", "action_closed", "turn_closed", "budget_exhausted", "not_converged"]
STOP_REASONS: tuple[str, ...] = (
    "eos",  # the model ended the turn with its end-of-sequence token
    "action_closed",  # think-first turn: stopped right after ACTION_CLOSE (the usual end)
    "turn_closed",  # action-first (P-ReAct) turn: stopped after the thinking closed
    "budget_exhausted",  # max_new_tokens reached before the turn ended
    "not_converged",  # diffusion: denoising-step budget spent with masks left (dead-letter it)
)
COMMIT_ORDERS = ("confidence", "left_to_right")
MASK_GLYPH = "\u2591"  # how a still-masked position shows in a partial diffusion text


@dataclass
class GenerationRequest:
    prompt: str  # the rendered context (prompting.render_context); the turn continues it
    # The turn's text so far (a repair's action skeleton, a P-ReAct resume's action span): it
    # follows the opening of the model's turn (after the chat template's assistant header, not
    # inside the user message) and the result's text is what comes after it.
    turn_prefix: str = ""
    max_new_tokens: int = 160  # turn budget in tokens
    tau: float = 0.9  # diffusion: commit masked positions whose max prob >= tau
    # diffusion: "confidence" commits every confident masked position of the block;
    # "left_to_right" only the run of confident ones that starts at the leftmost mask (always
    # committed), so no token is fixed while a mask to its left is still open.
    commit_order: str = "confidence"
    # diffusion: a commit repeating the token committed just left of it in the same pass waits
    # one pass (kernels.confidence.hold_adjacent_repeats)
    hold_repeats: bool = True
    max_steps_per_block: int | None = None  # diffusion: denoising passes per block (None: block)
    max_denoise_steps: int | None = None  # diffusion: denoising passes per turn (None: unbounded)
    action_first: bool = False  # P-ReAct order: the action span is decoded before the thinking
    stop_at_action_close: bool = True  # think-first: stop as soon as ACTION_CLOSE is decoded
    # P-ReAct resume: the prompt already ends with the committed action span, so only the
    # thinking is decoded and the turn ends at its THINK_CLOSE.
    action_in_prompt: bool = False
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.commit_order not in COMMIT_ORDERS:
            raise ValueError(
                f"commit_order must be one of {', '.join(COMMIT_ORDERS)}, got {self.commit_order!r}"
            )


@dataclass
class ProgressEvent:
    request_id: str
    kind: Literal["tokens", "refinement"]  # AR: new tokens; diffusion: one denoising pass
    text: str  # AR: the text delta; diffusion: the partial turn, MASK_GLYPH where masked
    tokens_generated: int  # tokens final so far
    committed_fraction: float  # diffusion: committed share of the decoded region; AR: 1.0
    forward_passes: int
    refinement_passes: int
    action_text: str | None = None  # set on the step at which the action span became complete
    done: bool = False
    stop_reason: str | None = None


@dataclass
class GenerationResult:
    request_id: str
    text: str  # the turn text (tags kept; eos and anything after the stop dropped)
    token_ids: list[int]
    tokens_generated: int
    prompt_tokens: int
    forward_passes: int  # every model forward, prefill included
    refinement_passes: int  # diffusion denoising passes (AR: 0)
    decode_seconds: float  # wall time of the steps this request took part in
    stop_reason: str
    action_ready_pass: int | None = None  # forward pass after which the action was complete
    action_ready_seconds: float | None = None  # decode time at that moment (P-ReAct's gain)
    action_text: str | None = None

    @property
    def tokens_per_forward(self) -> float:
        return self.tokens_generated / max(1, self.forward_passes)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["tokens_per_forward"] = self.tokens_per_forward
        return d


@dataclass
class SequenceState:
    """One running request; samplers subclass it with their own decoding state."""

    request: GenerationRequest
    prompt_ids: list[int]
    generated: list[int] = field(default_factory=list)
    done: bool = False
    stop_reason: str | None = None
    forward_passes: int = 0
    refinement_passes: int = 0
    decode_seconds: float = 0.0
    action_ready_pass: int | None = None
    action_ready_seconds: float | None = None
    action_text: str | None = None
    final_text: str | None = None
    row: int | None = None  # this sequence's row in its sampler's KV arena (arena.py)

    @property
    def request_id(self) -> str:
        return self.request.request_id


def find_turn_end(
    text: str, action_first: bool, stop_at_action_close: bool, action_in_prompt: bool = False
) -> int | None:
    """Index just past the tag that ends the turn in ``text``, or None if it has not ended.

    Think-first: the turn ends at ACTION_CLOSE. Action-first: at the THINK_CLOSE that follows
    the closed action span. ``action_in_prompt`` (the action span was committed earlier and is
    part of the prompt): at the first THINK_CLOSE.
    """
    if action_in_prompt:
        think_close = text.find(THINK_CLOSE)
        return None if think_close < 0 else think_close + len(THINK_CLOSE)
    close = text.find(ACTION_CLOSE)
    if close < 0:
        return None
    after_action = close + len(ACTION_CLOSE)
    if not action_first:
        return after_action if stop_at_action_close else None
    think_close = text.find(THINK_CLOSE, after_action)
    return None if think_close < 0 else think_close + len(THINK_CLOSE)


def action_span(text: str) -> str | None:
    """The complete ``<action>...</action>`` span of ``text``, if it has closed."""
    start, end = text.find(ACTION_OPEN), text.find(ACTION_CLOSE)
    if start < 0 or end < start:
        return None
    return text[start : end + len(ACTION_CLOSE)]


AGENT_SYSTEM_PROMPT = (
    "You are a research agent. Every turn, write <think>your reasoning</think> and then exactly "
    'one <action>{"tool": ..., "args": {...}}</action> in JSON. Tools: search {"query": text} '
    'lists matching documents; fetch {"id": an id from the results, "page": number} reads one; '
    'answer {"answer": short text, "sources": [ids]} gives the answer and the ids it came from. '
    "Copy names from the question and ids from the results exactly."
)


class ChatPrompt:
    """A rendered context as the user message of the model's chat template, after the agent's
    system prompt, with the assistant turn opened. Training and serving both encode through
    this, so the model sees the same tokens; an over-long context loses its oldest text, never
    the template."""

    PLACEHOLDER = "\x00CONTEXT\x00"

    def __init__(self, tokenizer: Any, system: str = AGENT_SYSTEM_PROMPT) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        text = tokenizer.apply_chat_template(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": self.PLACEHOLDER},
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        prefix, suffix = text.split(self.PLACEHOLDER)
        self.prefix_ids = self._ids(prefix)
        self.suffix_ids = self._ids(suffix)

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any) -> ChatPrompt | None:
        """The model's chat framing when its config asks for one (the real pair), else None."""
        return cls(tokenizer) if getattr(model.config, "chat_format", False) else None

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, context: str, room: int) -> list[int]:
        body_room = room - len(self.prefix_ids) - len(self.suffix_ids)
        if body_room <= 0:
            raise ValueError(f"{room} positions cannot hold the chat template and a context")
        return self.prefix_ids + self._ids(context)[-body_room:] + self.suffix_ids


class Sampler(ABC):
    """Decodes turns for one model; see the module docstring for the protocol."""

    kind: str = "base"  # "ar" | "diffusion" | "hf-ar"
    model: Any
    tokenizer: Any
    max_position: int  # positions the model can attend (prompt + turn must fit)
    prompt_slack: int = 0  # positions reserved besides prompt and turn (diffusion padding)
    chat: ChatPrompt | None = None  # the model's chat framing of a context, if it has one
    # Decoding passes replayed from CUDA graphs when the model is on a GPU (graphs.py;
    # DLLMFLOW_CUDA_GRAPHS; off until measured on a GPU); "emulate" runs the same bookkeeping
    # on CPU, for tests.
    cuda_graphs: bool = False
    graph_capture: Capture = "cuda"

    def encode_prompt(self, prompt: str, max_new_tokens: int, turn_prefix: str = "") -> list[int]:
        """Prompt ids (the context, then the turn's prefix), left-truncated so prompt + turn
        budget fit the model's positions; the context loses its oldest text first."""
        room = self.max_position - max_new_tokens - self.prompt_slack
        if room <= 0:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                f"(model positions: {self.max_position})"
            )
        if self.chat is None:  # plain text: the prefix simply continues the context
            ids = self.tokenizer(prompt + turn_prefix, add_special_tokens=False)["input_ids"]
            return ids[-room:]
        prefix_ids = self.tokenizer(turn_prefix, add_special_tokens=False)["input_ids"]
        if turn_prefix and len(prefix_ids) >= room:
            raise ValueError(
                f"a turn prefix of {len(prefix_ids)} tokens leaves no room for a context"
            )
        return self.chat.encode(prompt, room - len(prefix_ids)) + prefix_ids

    def encode_request(self, request: GenerationRequest) -> list[int]:
        return self.encode_prompt(request.prompt, request.max_new_tokens, request.turn_prefix)

    @property
    def max_context_tokens(self) -> int:
        """Tokens a rendered context may use with the default 160-token turn budget."""
        return self.max_position - 160 - self.prompt_slack

    @abstractmethod
    def start(self, request: GenerationRequest) -> SequenceState: ...

    @abstractmethod
    def step(self, states: Sequence[SequenceState]) -> list[ProgressEvent]:
        """Advance every unfinished state by one forward pass; one event per advanced state."""

    def release(self, state: SequenceState) -> None:
        """Free what a sequence holds (its cache) when it leaves before finishing."""
        return None  # samplers without a cache hold nothing

    def kv_arena(self) -> KVArena:
        """This thread's batched KV cache (a scheduler thread and a caller's thread each have
        one, so their steps never move each other's rows)."""
        arenas = self.__dict__.setdefault("_arenas", threading.local())
        arena = getattr(arenas, "arena", None)
        if arena is None:
            arena = arenas.arena = KVArena(self.model)
        return arena

    def arena_pass(self, p: ArenaPass) -> torch.Tensor:
        """One cached forward over this thread's arena, from a CUDA graph where one can serve:
        its logits are overwritten by the next pass."""
        arena = self.kv_arena()
        if not (self.cuda_graphs and (p.ids.is_cuda or self.graph_capture == "emulate")):
            return p.run(self.model, arena)
        if arena.graphs is None:
            arena.graphs = ArenaGraphs(self.graph_capture)
        return arena.graphs.forward(self.model, arena, p)

    @property
    def prefill_waste(self) -> float:
        """Padding allowed in a batched prefill, as a share of its real tokens: on CPU padding
        costs as much as real tokens; on a GPU one launch for all beats several."""
        return float("inf") if self.model.embed.weight.is_cuda else 0.25

    def result(self, state: SequenceState) -> GenerationResult:
        if not state.done:
            raise ValueError(f"request {state.request_id} is still running")
        return GenerationResult(
            request_id=state.request_id,
            text=state.final_text or "",
            token_ids=list(state.generated),
            tokens_generated=len(state.generated),
            prompt_tokens=len(state.prompt_ids),
            forward_passes=state.forward_passes,
            refinement_passes=state.refinement_passes,
            decode_seconds=state.decode_seconds,
            stop_reason=state.stop_reason or "budget_exhausted",
            action_ready_pass=state.action_ready_pass,
            action_ready_seconds=state.action_ready_seconds,
            action_text=state.action_text,
        )

    def generate(
        self,
        request: GenerationRequest,
        on_event: Callable[[ProgressEvent], None] | None = None,
    ) -> GenerationResult:
        state = self.start(request)
        while not state.done:
            for event in self.step([state]):
                if on_event is not None:
                    on_event(event)
        return self.result(state)

    def generate_batch(
        self, requests: Sequence[GenerationRequest], max_batch: int = 8
    ) -> list[GenerationResult]:
        """Continuous batching in miniature: finished sequences leave, waiting ones join."""
        waiting = list(requests)
        running: list[SequenceState] = []
        results: dict[str, GenerationResult] = {}
        while waiting or running:
            while waiting and len(running) < max_batch:
                running.append(self.start(waiting.pop(0)))
            self.step(running)
            for s in [s for s in running if s.done]:
                results[s.request_id] = self.result(s)
                running.remove(s)
        return [results[r.request_id] for r in requests]


class TextDecoder:
    """``models.tokenizer.decode`` (pad/mask/eos dropped, tags kept) called straight on the Rust
    tokenizer: the transformers wrapper costs ~5x more per call, and samplers decode every
    sequence on every step."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.drop = frozenset(
            {tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.eos_token_id} - {None}
        )
        backend = getattr(tokenizer, "backend_tokenizer", None)
        cleans = getattr(tokenizer, "clean_up_tokenization_spaces", False)
        self._fast = None if backend is None or cleans else backend.decode

    def __call__(self, ids: Sequence[int]) -> str:
        if self._fast is None:  # a wrapper that post-processes: keep its exact output
            return decode(self.tokenizer, ids)
        return self._fast([i for i in ids if i not in self.drop], skip_special_tokens=False)


def _note_action(state: SequenceState, text: str) -> str | None:
    """Record the moment the action span completed; returns it on that step only."""
    if state.action_ready_pass is not None:
        return None
    span = action_span(text)
    if span is None:
        return None
    state.action_ready_pass = state.forward_passes
    state.action_ready_seconds = state.decode_seconds
    state.action_text = span
    return span


class Timer:
    """Adds a step's wall time to every state that took part in it."""

    def __init__(self, states: Sequence[SequenceState]) -> None:
        self.states = states

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self.t0
        for s in self.states:
            s.decode_seconds += dt


@dataclass
class TokenState(SequenceState):
    """A sequence decoded one greedy token per step (AR-style samplers)."""

    next_token: int | None = None  # chosen but not yet fed back
    text: str = ""


class TokenSampler(Sampler):
    """Shared end-of-turn logic for samplers that emit one token per sequence per step."""

    @abstractmethod
    def is_eos(self, token: int) -> bool: ...

    @abstractmethod
    def decode_ids(self, ids: list[int]) -> str: ...

    def _advance(self, s: TokenState, token: int) -> ProgressEvent:
        """Take the greedy token; decide whether the turn ended."""
        req, before = s.request, s.text
        s.next_token = None
        if self.is_eos(token):
            self._finish(s, "eos")
        else:
            s.generated.append(token)
            s.text = self.decode_ids(s.generated)
            end = find_turn_end(
                s.text, req.action_first, req.stop_at_action_close, req.action_in_prompt
            )
            if end is not None:
                s.text = s.text[:end]
                self._finish(s, "turn_closed" if req.action_first else "action_closed")
            elif len(s.generated) >= req.max_new_tokens:
                self._finish(s, "budget_exhausted")
            else:
                s.next_token = token
        action = _note_action(s, s.text)
        return ProgressEvent(
            request_id=s.request_id,
            kind="tokens",
            text=s.text[len(before) :] if s.text.startswith(before) else s.text,
            tokens_generated=len(s.generated),
            committed_fraction=1.0,
            forward_passes=s.forward_passes,
            refinement_passes=0,
            action_text=action,
            done=s.done,
            stop_reason=s.stop_reason,
        )

    def _finish(self, s: TokenState, reason: str) -> None:
        s.done, s.stop_reason, s.final_text = True, reason, s.text
        self.release(s)

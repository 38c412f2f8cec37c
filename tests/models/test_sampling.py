"""Samplers: greedy references, batching invariance, stop reasons, P-ReAct timing."""

from __future__ import annotations

import pytest
import torch

from dllmflow.agent.actions import parse_turn
from dllmflow.models.sampling import GenerationRequest
from dllmflow.models.sampling.ar import ARSampler
from dllmflow.models.sampling.diffusion import DiffusionSampler
from dllmflow.models.tokenizer import encode

PROMPTS = [
    "Role: seeker\nQuestion: Who founded Kixford Press?\nTurn 2 seeker:\n",
    "Role: planner\nQuestion: In what year was Ros Langre born?\nTurn 1 planner:\n",
    "Role: writer\nTurn 8 writer:\n",
]


def commit_confident(logits, tokens, masked, tau, hold_repeats=False):
    """The documented commit rule written out position by position, independent of
    dllmflow.kernels: masked positions whose max softmax probability (fp32) is >= tau commit
    their argmax; if none passes, the most confident one does (lowest position on ties). With
    ``hold_repeats`` a chosen position whose argmax equals that of the chosen position just
    left of it stays masked."""
    probs = torch.softmax(logits[0].detach().float(), dim=-1)
    still = [i for i in range(masked.shape[1]) if masked[0, i]]
    conf = {i: float(probs[i].max()) for i in still}
    chosen = [i for i in still if conf[i] >= tau] or [max(still, key=lambda i: (conf[i], -i))]
    if hold_repeats:
        top = {i: int(probs[i].argmax()) for i in chosen}
        chosen = [i for i in chosen if top.get(i - 1, -1) != top[i]]
    for i in chosen:
        tokens[0, i] = int(probs[i].argmax())
        masked[0, i] = False


def dense_block_greedy(model, prompt_ids, n_blocks, tau, pad_id, hold_repeats=False):
    """Reference: recompute the whole sequence with the dense block-causal forward each pass and
    commit with the written-out rule (not the kernel the sampler uses)."""
    b = model.block_size
    mask_id = model.config.mask_token_id
    seq = [pad_id] * ((-len(prompt_ids)) % b) + list(prompt_ids)
    out, passes = [], 0
    for _ in range(n_blocks):
        tokens = torch.full((1, b), mask_id)
        masked = torch.ones(1, b, dtype=torch.bool)
        while masked.any():
            x = torch.tensor([seq + out]).long()
            logits = model(torch.cat([x, tokens], 1)).logits[:, -b:]
            commit_confident(logits, tokens, masked, tau, hold_repeats)
            passes += 1
        out += tokens[0].tolist()
    return out, passes


def until_eos(ids, eos, limit):
    ids = ids[:limit]
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize(
    ("tau", "head_scale"),
    [(1.0, 1.0), (0.5, 3.0)],
    ids=["tau1-one-commit-a-pass", "tau0.5-peaked-head"],
)
@pytest.mark.parametrize("hold", [True, False], ids=["hold-repeats", "no-hold"])
def test_diffusion_equals_dense_greedy(tiny_diffusion, tokenizer, prompt, tau, head_scale, hold):
    # head_scale sharpens the output distribution (the tied head reads ln_f) so that the tau gate
    # decides: at 3x every position of a block clears 0.5 on the first pass.
    with torch.no_grad():
        tiny_diffusion.ln_f.weight.mul_(head_scale)
    sampler = DiffusionSampler(tiny_diffusion, tokenizer)
    req = GenerationRequest(
        prompt=prompt, max_new_tokens=24, tau=tau, stop_at_action_close=False, hold_repeats=hold
    )
    result = sampler.generate(req)
    ref, passes = dense_block_greedy(
        tiny_diffusion, encode(tokenizer, prompt), 3, tau, tokenizer.pad_token_id, hold
    )
    assert result.stop_reason == "budget_exhausted"
    assert result.token_ids == until_eos(ref, tokenizer.eos_token_id, 24)
    assert result.refinement_passes == passes
    if tau == 1.0:  # a random model never reaches p = 1: one commit per pass
        assert passes == 24
    elif not hold:
        assert passes == 3  # one pass a block
    else:  # the random model repeats itself: held commits cost extra passes
        assert passes > 3


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ar_sampler_equals_full_recompute_greedy(tiny_ar, tokenizer, prompt):
    sampler = ARSampler(tiny_ar, tokenizer)
    result = sampler.generate(GenerationRequest(prompt=prompt, max_new_tokens=20))
    ids = encode(tokenizer, prompt)
    ref = []
    for _ in range(20):
        nxt = int(tiny_ar(torch.tensor([ids + ref])).logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        ref.append(nxt)
    assert result.token_ids == ref
    assert result.forward_passes == len(ref) + (result.stop_reason == "eos")


def _requests():
    return [
        GenerationRequest(prompt=p + "x" * i, max_new_tokens=12 + 5 * i, tau=tau)
        for i, (p, tau) in enumerate(zip(PROMPTS * 2, [0.9, 0.5, 1.0, 0.2, 0.9, 0.7], strict=True))
    ]


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_batched_equals_single(kind, tiny_ar, tiny_diffusion, tokenizer):
    sampler = (
        ARSampler(tiny_ar, tokenizer)
        if kind == "ar"
        else DiffusionSampler(tiny_diffusion, tokenizer)
    )
    singles = [sampler.generate(r) for r in _requests()]
    batched = sampler.generate_batch(_requests(), max_batch=4)
    for one, many in zip(singles, batched, strict=True):
        assert one.token_ids == many.token_ids
        assert one.forward_passes == many.forward_passes
        assert one.stop_reason == many.stop_reason


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_requests_join_and_leave_between_steps(kind, tiny_ar, tiny_diffusion, tokenizer):
    sampler = (
        ARSampler(tiny_ar, tokenizer)
        if kind == "ar"
        else DiffusionSampler(tiny_diffusion, tokenizer)
    )
    reqs = _requests()  # prompt lengths and budgets differ: rows finish at different steps
    alone = [sampler.generate(r) for r in reqs]
    arena = sampler.kv_arena()
    a = sampler.start(reqs[0])
    sampler.step([a])
    sampler.step([a])
    b = sampler.start(reqs[1])  # joins mid-way
    events = sampler.step([a, b])
    assert {e.request_id for e in events} == {a.request_id, b.request_id}
    states, waiting = [a, b], [sampler.start(r) for r in reqs[2:]]
    everyone = [*states, *waiting]
    peak = 0
    while states or waiting:
        if waiting and len(states) < 4:  # one joins per step while others run
            states.append(waiting.pop(0))
        sampler.step(states)
        states = [s for s in states if not s.done]
        # Finished sequences gave their rows back; the live ones sit in rows 0..n-1.
        assert sorted(s.row for s in states) == list(range(len(states))) == list(range(arena.rows))
        peak = max(peak, arena.rows)
    assert peak == 4 and arena.allocated[0] == 4  # rows were reused, never grown past 4
    assert [sampler.result(s).token_ids for s in everyone] == [r.token_ids for r in alone]


@pytest.mark.parametrize("kind", ["ar", "diffusion"])
def test_a_step_over_a_subset_moves_rows_not_tokens(kind, tiny_ar, tiny_diffusion, tokenizer):
    """Stepping sequences in alternating subsets (rows move each time) changes no output, and
    a sequence dropped without finishing gives its row back once it is collected."""
    sampler = (
        ARSampler(tiny_ar, tokenizer)
        if kind == "ar"
        else DiffusionSampler(tiny_diffusion, tokenizer)
    )
    reqs = _requests()[:3]
    alone = [sampler.generate(r) for r in reqs]
    states = [sampler.start(r) for r in reqs]
    dropped = sampler.start(_requests()[4])
    sampler.step([*states, dropped])
    del dropped
    turn = 0
    while not all(s.done for s in states):
        sampler.step(states[::2] if turn % 2 else states[1:])  # order differs from row order
        turn += 1
    assert sampler.kv_arena().rows == 0
    assert [sampler.result(s).token_ids for s in states] == [a.token_ids for a in alone]


def test_arena_free_and_arrange_keep_row_contents(tiny_ar):
    from dllmflow.models.sampling.arena import KVArena
    from dllmflow.models.sampling.base import SequenceState

    arena = KVArena(tiny_ar)
    states = [SequenceState(request=GenerationRequest(prompt=""), prompt_ids=[]) for _ in range(5)]
    for i, s in enumerate(states):
        arena.add(s, need=10 + i)
        for t in arena.ks + arena.vs:
            t[s.row, :, : 10 + i] = float(i + 1)  # row content = which sequence owns it

    def owner_of(row: int) -> int:
        return int(arena.ks[0][row, 0, 0, 0]) - 1

    arena.free(states[1])
    assert states[1].row is None and states[4].row == 1 and owner_of(1) == 4
    ordered = arena.arrange([states[3], states[0]])
    assert ordered == [states[0], states[3]] and [states[0].row, states[3].row] == [0, 1]
    assert all(owner_of(s.row) == i for i, s in enumerate(states) if s.row is not None)
    assert arena.vs[-1][states[3].row, 0, 12, 0] == 4.0  # every layer, the whole need, moved
    late = SequenceState(request=GenerationRequest(prompt=""), prompt_ids=[])
    arena.add(late, 700)
    assert arena.allocated[1] >= 700 and owner_of(states[2].row) == 2  # grown, content kept


def test_padded_prefill_equals_one_at_a_time(tiny_ar, tiny_diffusion):
    torch.manual_seed(0)
    for model, lengths in ((tiny_ar, (5, 13, 9)), (tiny_diffusion, (8, 24, 16))):
        seqs = [torch.randint(3, 200, (n,)).tolist() for n in lengths]
        ks, vs = model.new_cache(3, 32)
        width = max(lengths)
        ids = torch.tensor([q + [0] * (width - len(q)) for q in seqs])
        last = torch.tensor([[n - 1] for n in lengths])
        batched = model.prefill(ids, ks, vs, logits_at=last)[:, 0]
        for row, q in enumerate(seqs):
            ks1, vs1 = model.new_cache(1, 32)
            alone = model.prefill(torch.tensor([q]), ks1, vs1)[0, -1]
            torch.testing.assert_close(batched[row], alone)
            torch.testing.assert_close(ks[-1][row, :, : len(q)], ks1[-1][0, :, : len(q)])


def test_text_decoder_equals_tokenizer_decode(tokenizer):
    from dllmflow.models.sampling.base import TextDecoder
    from dllmflow.models.tokenizer import decode

    text_of = TextDecoder(tokenizer)
    assert text_of._fast is not None  # the fast path is the one under test
    ids = [*encode(tokenizer, TURN), tokenizer.eos_token_id, tokenizer.mask_token_id, 7]
    for cut in range(len(ids) + 1):
        assert text_of(ids[:cut]) == decode(tokenizer, ids[:cut])


# -- a scripted denoiser: predicts a fixed turn, with per-position confidence ---------------------


class ScriptedDenoiser(torch.nn.Module):
    """Stands in for BlockDiffusionLM: at turn position i it predicts script[i] with logit
    ``conf[i]`` (everything else 0), so tests choose what commits when."""

    def __init__(self, tokenizer, script, conf, block_size=8):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(
            block_size=block_size, max_position=512, mask_token_id=tokenizer.mask_token_id
        )
        self.embed = torch.nn.Embedding(1, 1)
        self.vocab = len(tokenizer)
        self.script, self.conf = script, conf
        self.turn_start = 0
        self.passes = 0

    def new_cache(self, batch, capacity):
        return [torch.zeros(batch, 1, capacity, 1)], [torch.zeros(batch, 1, capacity, 1)]

    def _logits(self, positions):  # [B, L] -> [B, L, V]
        out = torch.zeros(*positions.shape, self.vocab)
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in positions.shape]).tolist():
            i = int(positions[tuple(idx)]) - self.turn_start
            if 0 <= i < len(self.script):
                out[tuple(idx)][self.script[i]] = self.conf[i]
        return out

    def prefill(self, ids, ks, vs, logits_at=None):  # one sequence at a time in these tests
        self.passes += 1
        self.turn_start = ids.shape[1] - self.config.block_size
        positions = torch.arange(ids.shape[1])[None] if logits_at is None else logits_at
        return self._logits(positions)

    def forward_arena(self, ids, ks, vs, starts, span, extra_rows=None, n_logits=None):
        self.passes += 1
        return self._logits(starts[:n_logits, None] + torch.arange(ids.shape[1]))

    def eval(self):
        return self


TURN = (
    '<think>Step 1: search the name.</think>\n<action>{"tool": "search", "args": '
    '{"query": "Kixford Press"}}</action>'
)
FIRST = (
    '<action>{"tool": "search", "args": {"query": "Kixford Press"}}</action>\n'
    "<think>Step 1: search the name.</think>"
)


def _scripted(tokenizer, text, conf_of):
    script = encode(tokenizer, text) + [tokenizer.eos_token_id] * 16
    return ScriptedDenoiser(tokenizer, script, [conf_of(i, t) for i, t in enumerate(script)])


def test_confident_turn_commits_many_tokens_per_pass(tokenizer):
    model = _scripted(tokenizer, TURN, lambda i, t: 30.0)
    result = DiffusionSampler(model, tokenizer).generate(GenerationRequest(prompt="Q:\n"))
    assert result.text == TURN and parse_turn(result.text).valid
    assert result.stop_reason == "action_closed"
    assert result.forward_passes == model.passes
    # Every block commits in one pass; finished blocks ride along with the next one.
    assert result.forward_passes == -(-result.tokens_generated // 8)
    assert result.tokens_per_forward > 4


def test_unconfident_positions_commit_one_per_pass(tokenizer):
    model = _scripted(tokenizer, TURN, lambda i, t: 1.0)
    req = GenerationRequest(prompt="Q:\n", tau=0.9)
    result = DiffusionSampler(model, tokenizer).generate(req)
    assert result.text == TURN
    assert result.refinement_passes >= result.tokens_generated


def test_denoising_budget_gives_not_converged(tokenizer):
    model = _scripted(tokenizer, TURN, lambda i, t: 1.0)
    for req in (
        GenerationRequest(prompt="Q:\n", max_steps_per_block=3),
        GenerationRequest(prompt="Q:\n", max_denoise_steps=5),
    ):
        result = DiffusionSampler(model, tokenizer).generate(req)
        assert result.stop_reason == "not_converged"
        assert result.refinement_passes <= 5


def test_token_budget_gives_budget_exhausted(tokenizer, tiny_ar):
    model = _scripted(tokenizer, TURN, lambda i, t: 30.0)
    result = DiffusionSampler(model, tokenizer).generate(
        GenerationRequest(prompt="Q:\n", max_new_tokens=10)
    )
    assert result.stop_reason == "budget_exhausted" and result.tokens_generated == 10


def test_p_react_reports_the_action_before_the_thinking_is_done(tokenizer):
    # Action span confident, thinking span hesitant: the action is ready early.
    n_action = len(encode(tokenizer, FIRST.split("\n")[0]))
    model = _scripted(tokenizer, FIRST, lambda i, t: 30.0 if i < n_action else 1.0)
    events = []
    req = GenerationRequest(prompt="Q:\n", action_first=True)
    result = DiffusionSampler(model, tokenizer).generate(req, on_event=events.append)
    assert result.text == FIRST and result.stop_reason == "turn_closed"
    assert result.action_text == FIRST.split("\n")[0]
    assert result.action_ready_pass is not None
    assert result.action_ready_pass < result.forward_passes / 2
    assert 0 <= result.action_ready_seconds <= result.decode_seconds
    ready = [e for e in events if e.action_text]
    assert len(ready) == 1 and not ready[0].done
    fractions = [e.committed_fraction for e in events]
    assert all(0 < f <= 1 for f in fractions) and events[-1].done


class ScriptedCausal(torch.nn.Module):
    """Stands in for ARForCausalLM: after the prompt it predicts ``script`` token by token."""

    def __init__(self, tokenizer, script):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(max_position=512)
        self.embed = torch.nn.Embedding(1, 1)
        self.vocab, self.script, self.prompt_len = len(tokenizer), script, 0

    def new_cache(self, batch, capacity):
        return [torch.zeros(batch, 1, capacity, 1)], [torch.zeros(batch, 1, capacity, 1)]

    def _logits(self, positions):  # position p predicts script[p + 1 - prompt_len]
        out = torch.zeros(*positions.shape, self.vocab)
        for b, row in enumerate(positions.tolist()):
            for j, p in enumerate(row):
                i = p + 1 - self.prompt_len
                if 0 <= i < len(self.script):
                    out[b, j, self.script[i]] = 10.0
        return out

    def prefill(self, ids, ks, vs, logits_at=None):  # one sequence at a time in these tests
        self.prompt_len = ids.shape[1]
        positions = torch.arange(ids.shape[1])[None] if logits_at is None else logits_at
        return self._logits(positions)

    def forward_arena(self, ids, ks, vs, starts, span, extra_rows=None, n_logits=None):
        return self._logits(starts[:n_logits, None] + torch.arange(ids.shape[1]))

    def eval(self):
        return self


@pytest.mark.parametrize(
    ("text", "action_first", "reason"),
    [(TURN, False, "action_closed"), (FIRST, True, "turn_closed")],
)
def test_ar_sampler_stops_at_the_end_of_the_turn(tokenizer, text, action_first, reason):
    script = [*encode(tokenizer, text), *encode(tokenizer, " trailing words"), 2]
    sampler = ARSampler(ScriptedCausal(tokenizer, script), tokenizer)
    events = []
    req = GenerationRequest(prompt="Q:\n", action_first=action_first)
    result = sampler.generate(req, on_event=events.append)
    assert result.text == text and result.stop_reason == reason
    assert result.forward_passes == result.tokens_generated == len(encode(tokenizer, text))
    assert "".join(e.text for e in events) == text
    assert result.action_text == text[text.index("<action>") : text.index("</action>") + 9]
    # Think-first: the action is complete only at the very end; action-first: early.
    if action_first:
        assert result.action_ready_pass < result.forward_passes
    else:
        assert result.action_ready_pass == result.forward_passes


def test_ar_sampler_eos_and_budget(tokenizer):
    eos = tokenizer.eos_token_id
    sampler = ARSampler(
        ScriptedCausal(tokenizer, [*encode(tokenizer, "<think>hi"), eos]), tokenizer
    )
    result = sampler.generate(GenerationRequest(prompt="Q:\n"))
    assert (result.text, result.stop_reason) == ("<think>hi", "eos")
    sampler = ARSampler(ScriptedCausal(tokenizer, encode(tokenizer, TURN)), tokenizer)
    result = sampler.generate(GenerationRequest(prompt="Q:\n", max_new_tokens=5))
    assert result.stop_reason == "budget_exhausted" and result.tokens_generated == 5


def test_arena_growing_capacity_keeps_its_row_count(tiny_ar):
    """One sequence at a time with ever longer prompts (an agent episode's turns): the arena
    grows its capacity, not its rows (doubling both once took 2^k rows of the largest size)."""
    from dllmflow.models.sampling.arena import KVArena
    from dllmflow.models.sampling.base import SequenceState

    arena = KVArena(tiny_ar)
    for need in (100, 200, 400, 800, 1600):
        s = SequenceState(request=GenerationRequest(prompt=""), prompt_ids=[])
        arena.add(s, need)
        arena.free(s)
    rows, capacity = arena.allocated
    assert rows == 4 and capacity >= 1600
    more = [SequenceState(request=GenerationRequest(prompt=""), prompt_ids=[]) for _ in range(5)]
    for s in more:
        arena.add(s, 100)
    assert arena.allocated == (8, capacity)  # rows double when more are needed


def test_a_resumed_p_react_turn_ends_at_its_thinking_close():
    from dllmflow.models.sampling.base import find_turn_end

    thinking = "\n<think>it is in the list</think> and more"
    # The committed action span is in the prompt: the decoded text is the thinking only.
    assert find_turn_end(thinking, True, True, action_in_prompt=True) == thinking.index(" and")
    assert find_turn_end(thinking, True, True) is None  # without it the turn never ends
    assert find_turn_end("\n<think>still going", True, True, action_in_prompt=True) is None

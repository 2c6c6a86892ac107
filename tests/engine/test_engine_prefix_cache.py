"""Prefix caching is exact: with it on, every sampled token and the logits of every sampled position equal
the same workload with it off, on checkpoints whose gates, norms and carry matter (a lost carry or a wrong
ring entry after a hit moves the logits far beyond the tolerance). Each test also checks that the cache
was really used the way it names (hits, skipped tokens, evictions, preemptions, forks)."""
import pytest
import torch

from engine_support import LogitRecordingEngine, make_engine, prompts, run_plan
from loopcoder.model_server.engine import SamplingParams
from loopcoder.model_server.engine.memory import recompute_tail

TOL = 1e-4  # relative to the largest |logit|
GREEDY = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)


def engines(path, num_loops=None, **overrides):
    """The same engine twice, prefix caching on and off."""
    on, _ = make_engine(path, num_loops, LogitRecordingEngine, enable_prefix_caching=True, **overrides)
    off, _ = make_engine(path, num_loops, LogitRecordingEngine, enable_prefix_caching=False, **overrides)
    return on, off


def drive(engine, submissions):
    """submissions: (step, prompt, params, request_id, fork_ids); returns {request_id: tokens}."""
    return {rid: tokens for rid, (tokens, _, _) in run_plan(engine, submissions).items()}


def agent_turns(engine, first, extras, params=GREEDY):
    """Turn k's prompt is turn k-1's prompt, its answer and new tokens (an agent re-sending the whole
    conversation); turns run one after another. Returns each turn's answer."""
    answers, context = [], list(first)
    for k, extra in enumerate([[]] + extras):
        context = context + (answers[-1] if answers else []) + extra
        answers.append(drive(engine, [(0, context, params, f"turn{k}", [])])[f"turn{k}"])
    return answers


def assert_same_logits(on, off):
    assert on.logits.keys() == off.logits.keys()
    for key, ref in off.logits.items():
        err = ((on.logits[key] - ref).abs().max() / ref.abs().max()).item()
        assert err < TOL, f"{key}: relative logit error {err:.2e} with prefix caching on"
    return len(off.logits)


@pytest.mark.parametrize("ckpt,num_loops,decode_mode", [
    ("plt_mixing", 1, "fused"), ("plt_mixing", 2, "fused"), ("plt_mixing", 2, "sequential"),
    ("plt_mixing", 3, "fused"), ("v1_mixing", None, "fused")], ids=["R1", "R2", "R2-sequential", "R3", "v1"])
def test_agent_turns_equal_no_cache(request, ckpt, num_loops, decode_mode):
    """Four turns of a growing conversation, 16-token chunks (the recompute crosses chunk boundaries).
    Turn 1 re-sends turn 0 and its answer as they are, so its first sampled position is the first one
    after the hit (where the oldest ring entries still count); turn 2 adds 3 tokens and its shared
    prefix ends inside a block, so the hit ends at the block boundary below it."""
    on, off = engines(request.getfixturevalue(ckpt), num_loops, max_num_batched_tokens=16, max_model_len=128,
                      decode_mode=decode_mode, loop_state_snapshots=0)  # the tail (snapshots: below)
    first, *extras = prompts([41, 0, 3, 0], seed=51)
    params = GREEDY.model_copy(update={"max_tokens": 4})
    answers = agent_turns(on, first, extras, params)
    assert answers == agent_turns(off, first, extras, params)
    assert assert_same_logits(on, off) == 4 * 4
    tail = on.recompute_tail
    assert tail == recompute_tail(on.spec.num_loops, 2, on.spec.window, on.spec.clp)
    assert on.scheduler.cache_hit_tokens > 0 and off.scheduler.cache_hit_tokens == 0
    # every later turn hit more than the recompute tail, so tokens were skipped outright
    assert on.scheduler.cache_skipped_tokens > 0
    assert on.scheduler.cache_recomputed_tokens == (0 if on.spec.num_loops == 1 else 3 * tail)
    assert on.counters["prompt_tokens"] < off.counters["prompt_tokens"]


def test_hit_shorter_than_the_recompute_tail(plt_mixing):
    """Three loops (tail 30): a 20-token hit is recomputed from token 0, reading its cached loop-0 K/V."""
    on, off = engines(plt_mixing, 3, max_num_batched_tokens=16, loop_state_snapshots=0)
    first, extra = prompts([22, 10], seed=52)
    assert agent_turns(on, first, [extra]) == agent_turns(off, first, [extra])
    assert_same_logits(on, off)
    assert on.recompute_tail == 30
    assert 0 < on.scheduler.cache_hit_tokens < on.recompute_tail
    assert on.scheduler.cache_skipped_tokens == 0
    assert on.scheduler.cache_recomputed_tokens == on.scheduler.cache_hit_tokens


def test_eviction_under_memory_pressure(plt_mixing):
    """28 blocks: two other prompts evict most of the first one's cached blocks (tail blocks first), then
    the first conversation continues on what is left of its prefix."""
    on, off = engines(plt_mixing, max_num_seqs=2, num_kv_blocks=28, max_model_len=96)
    a, b, c, extra = prompts([44, 40, 40, 12], seed=53)
    script = [(0, a, GREEDY, "a", [])]
    for engine in (on, off):
        outs = drive(engine, script)
        outs |= drive(engine, [(0, p, GREEDY, rid, []) for p, rid in ((b, "b"), (c, "c"))])
        outs |= drive(engine, [(0, a + outs["a"] + extra, GREEDY, "a2", [])])
        engine.outs = outs
    assert on.outs == off.outs
    assert_same_logits(on, off)
    assert on.blocks.evictions > 0
    assert on.scheduler.cache_hit_tokens > 0  # the head of a's prefix survived the tail's eviction


def test_concurrent_requests_sharing_a_prefix(plt_mixing):
    """Three requests with a 56-token common prefix: the later two arrive while the first is still being
    prefilled (16-token chunks) and hit its blocks registered so far; the two arrive together."""
    on, off = engines(plt_mixing, max_num_seqs=3, max_num_batched_tokens=16)
    prefix, s1, s2, s3 = prompts([56, 10, 7, 13], seed=54)
    script = [(0, prefix + s1, GREEDY, "x", []), (3, prefix + s2, GREEDY, "y", []), (3, prefix + s3, GREEDY, "z", [])]
    assert drive(on, script) == drive(off, script)
    assert_same_logits(on, off)
    assert on.scheduler.cache_skipped_tokens > 0
    assert on.scheduler.cache_hit_tokens >= 2 * 32


@pytest.mark.parametrize("num_loops", [2, 3])
def test_preemption_resumes_on_its_own_cached_blocks(plt_mixing, num_loops):
    on, off = engines(plt_mixing, num_loops, num_kv_blocks=14, max_num_seqs=3)
    batch = prompts([5, 40, 13, 1, 27], seed=31)
    params = GREEDY.model_copy(update={"max_tokens": 10})
    script = [(0, p, params, f"r{i}", []) for i, p in enumerate(batch)]
    assert drive(on, script) == drive(off, script)
    assert assert_same_logits(on, off) == 50
    assert on.scheduler.num_preemptions > 0 and on.scheduler.cache_hit_tokens > 0


def test_forks_on_a_cached_prefix(plt_mixing):
    """n = 3 with seeded sampling on a prompt that extends an earlier conversation (a hit), then one more
    turn continuing the second fork's answer."""
    on, off = engines(plt_mixing, max_num_batched_tokens=16, max_model_len=128)
    first, extra, extra2 = prompts([37, 11, 9], seed=55)
    sampled = SamplingParams(max_tokens=6, temperature=1.0, seed=11, ignore_eos=True)
    for engine in (on, off):
        outs = drive(engine, [(0, first, GREEDY, "base", [])])
        second = first + outs["base"] + extra
        outs |= drive(engine, [(0, second, sampled, "f", ["f1", "f2"])])
        outs |= drive(engine, [(0, second + outs["f1"] + extra2, GREEDY, "next", [])])
        engine.outs = outs
    assert on.outs == off.outs
    assert len({tuple(on.outs[r]) for r in ("f", "f1", "f2")}) == 3
    assert assert_same_logits(on, off) == 6 * 5
    assert on.scheduler.cache_skipped_tokens > 0


def test_cached_tokens_reported_per_request(plt_mixing):
    engine, _ = make_engine(plt_mixing, max_model_len=128, max_num_batched_tokens=64, loop_state_snapshots=0)
    first, extra = prompts([41, 13], seed=56)
    events = []
    engine.submit(first, GREEDY, "a")
    while engine.has_work():
        events += engine.step()
    out = [t for e in events for t in e.token_ids]
    engine.submit(first + out + extra, GREEDY, "b")
    while engine.has_work():
        events += engine.step()
    last = {e.request_id: e for e in events if e.finished}
    assert last["a"].cached_tokens == 0
    # 46 computed tokens -> 11 full blocks = 44 cached; 44 - tail (15) skipped
    assert last["b"].cached_tokens == 44 - engine.recompute_tail == engine.stats().prefix_cache_skipped_tokens_total
    assert engine.stats().prefix_cache_hit_tokens_total == 44


@pytest.mark.parametrize("ckpt,loops,tol", [("plt_mixing", 2, 2e-6), ("v1_mixing", None, 1e-4)], ids=["R2", "v1"])
def test_recompute_tail_is_tight(request, ckpt, loops, tol):
    """One position less than recompute_tail changes the logits at the first position after a hit (for
    PLT only through the window's edge in every layer, so by little); the exact tail does not."""
    path = request.getfixturevalue(ckpt)
    first, *extras = prompts([41, 0], seed=51)
    params = GREEDY.model_copy(update={"max_tokens": 4})  # 45 tokens, 44 computed: turn 1 samples at 44
    errors = []
    for shorten in (0, 1):
        on, off = engines(path, loops, max_num_batched_tokens=16, loop_state_snapshots=0)
        on.scheduler.recompute_tail -= shorten
        agent_turns(on, first, extras, params)
        agent_turns(off, first, extras, params)
        errors.append(max(((on.logits[k] - v).abs().max() / v.abs().max()).item() for k, v in off.logits.items()))
    assert errors[0] < 1e-6 and errors[1] > tol, errors


# -- loop-state snapshots at prompt ends (loop_state.py) ----------------------------------------------------

def resumed_tokens(first, extras, answers, block_size):
    """Hit tokens a turn recomputes when it resumes at the previous prompt's end P: H - P, where H is the
    hit's end (the previous turn computed its prompt and all but the last answer token)."""
    total, context = 0, list(first)
    for extra, answer in zip(extras, answers):
        computed = len(context) + len(answer) - 1
        following = len(context) + len(answer) + len(extra)
        hit = min(computed, following - 1) // block_size * block_size
        assert hit >= len(context)
        total += hit - len(context)
        context = context + answer + extra
    return total


@pytest.mark.parametrize("ckpt,num_loops,decode_mode", [
    ("plt_mixing", 2, "fused"), ("plt_mixing", 2, "sequential"), ("plt_mixing", 3, "fused"),
    ("v1_mixing", None, "fused")], ids=["R2", "R2-sequential", "R3", "v1"])
def test_snapshots_resume_at_the_previous_prompt_end(request, ckpt, num_loops, decode_mode):
    """Four turns (re-sent verbatim, +3 tokens, +20 tokens): each later turn restores the rings and carry
    of the previous prompt's end and recomputes only the answer's hit tokens (3, 3 and 0: the last hit
    ends exactly at the previous prompt's end), not the tail; tokens and logits equal caching off."""
    on, off = engines(request.getfixturevalue(ckpt), num_loops, max_num_batched_tokens=16, max_model_len=128,
                      decode_mode=decode_mode)
    first, *extras = prompts([41, 0, 3, 20], seed=58)
    params = GREEDY.model_copy(update={"max_tokens": 4})
    answers = agent_turns(on, first, extras, params)
    assert answers == agent_turns(off, first, extras, params)
    assert assert_same_logits(on, off) == 4 * 4
    assert on.scheduler.snapshot_hits == on.stats().prefix_cache_snapshot_hits_total == 3
    assert on.scheduler.cache_recomputed_tokens == resumed_tokens(first, extras, answers, 4) == 6
    assert on.scheduler.cache_recomputed_tokens < 3 * on.recompute_tail
    assert on.stats().loop_state_snapshots == len(on.snapshots) == 4  # one per prompt


def chat_turns(engine, first, extras, suffix, hint, params):
    """Like agent_turns, but as a chat server sees an agent: each prompt ends in ``suffix`` (the generation
    prompt, e.g. an empty think block) that the next prompt does not re-send; turn k is turn k-1's history,
    its answer, new tokens, then the suffix. ``hint``: snapshot_at names where the suffix starts, as the
    API server does. Returns each turn's answer."""
    answers, history = [], list(first)
    for k, extra in enumerate([[]] + extras):
        history = history + (answers[-1] if answers else []) + extra
        turn = params.model_copy(update={"snapshot_at": len(history)}) if hint else params
        answers.append(drive(engine, [(0, history + suffix, turn, f"turn{k}", [])])[f"turn{k}"])
    return answers


@pytest.mark.parametrize("decode_mode", ["fused", "sequential"])
def test_a_snapshot_at_the_history_end_serves_the_next_chat_turn(plt_mixing, decode_mode):
    """Each chat turn leaves the previous prompt where its generation prompt began, below the previous
    prompt's end, so the end's snapshot is out of reach and, without the hint, every turn recomputes the
    tail. With snapshot_at the engine cuts the prefill at the history's last block boundary and keeps the
    state there: every later turn resumes exactly at its hit's end (nothing recomputed). Tokens and logits
    equal caching off either way."""
    hinted, off = engines(plt_mixing, 2, max_num_batched_tokens=16, max_model_len=160, decode_mode=decode_mode)
    plain, _ = engines(plt_mixing, 2, max_num_batched_tokens=16, max_model_len=160, decode_mode=decode_mode)
    first, *extras = prompts([41, 5, 3, 20], seed=60)
    suffix = [7, 8, 9, 10, 11]
    params = GREEDY.model_copy(update={"max_tokens": 4})
    answers = chat_turns(off, first, extras, suffix, False, params)
    assert chat_turns(hinted, first, extras, suffix, True, params) == answers
    assert chat_turns(plain, first, extras, suffix, False, params) == answers
    assert assert_same_logits(hinted, off) == assert_same_logits(plain, off) == 4 * 4
    assert hinted.scheduler.snapshot_hits == 3 and plain.scheduler.snapshot_hits == 0
    assert hinted.scheduler.cache_recomputed_tokens == 0
    # without the hint each later turn runs the loops again over its hit (the previous history's full
    # blocks), at most the tail
    histories = [len(first)]
    for answer, extra in zip(answers, extras):
        histories.append(histories[-1] + len(answer) + len(extra))
    tail = plain.recompute_tail
    assert plain.scheduler.cache_recomputed_tokens == sum(min(h // 16 * 16, tail) for h in histories[:-1]) > 0
    assert plain.scheduler.cache_hit_tokens == hinted.scheduler.cache_hit_tokens
    assert len(hinted.snapshots) == 8  # two per prompt: its history's last block boundary and its end


@pytest.mark.parametrize("broken", ["carry", "rings"])
def test_the_restored_state_matters(plt_mixing, monkeypatch, broken):
    """Restoring all but the carry (or all but the rings) moves the logits after the resume by more than
    10x the tolerance (the carry: 5e-3 relative): the test above would catch a skipped or partial restore."""
    on, off = engines(plt_mixing, 2, max_num_batched_tokens=16, max_model_len=128)
    restore = on.runner.restore_slot

    def partial(slot, state):
        restore(slot, state)
        for pool in ([on.runner.carry] if broken == "carry" else [on.runner.ring_k, on.runner.ring_v]):
            pool[:, slot] = 0

    monkeypatch.setattr(on.runner, "restore_slot", partial)
    first, *extras = prompts([41, 0, 3, 20], seed=58)
    params = GREEDY.model_copy(update={"max_tokens": 4})
    agent_turns(on, first, extras, params)
    agent_turns(off, first, extras, params)
    assert on.scheduler.snapshot_hits == 3
    err = max(((on.logits[k] - v).abs().max() / v.abs().max()).item() for k, v in off.logits.items())
    assert err > 10 * TOL, err


def test_snapshot_of_another_prompt_or_evicted_is_not_used(plt_mixing):
    """Prompts a and b differ in one token (position 5); b runs, then a, then each continues. With room
    for one snapshot, b's continuation finds only a's (same length, in range, other tokens: its digest
    does not match) and a's continuation finds a's evicted by b's: both fall back to the tail. With room
    for 32 both resume. Tokens and logits equal caching off either way."""
    one, off = engines(plt_mixing, 2, loop_state_snapshots=1)
    many, _ = engines(plt_mixing, 2)
    a, extra = prompts([41, 9], seed=59)
    b = a[:5] + [3 if a[5] != 3 else 4] + a[6:]
    for engine in (one, many, off):
        outs = drive(engine, [(0, b, GREEDY, "b1", [])])
        outs |= drive(engine, [(0, a, GREEDY, "a1", [])])
        outs |= drive(engine, [(0, b + outs["b1"] + extra, GREEDY, "b2", [])])
        outs |= drive(engine, [(0, a + outs["a1"] + extra, GREEDY, "a2", [])])
        engine.outs = outs
    assert one.outs == many.outs == off.outs
    assert_same_logits(one, off)
    assert_same_logits(many, off)
    assert one.scheduler.snapshot_hits == 0 and many.scheduler.snapshot_hits == 2
    assert len(one.snapshots) == 1 and one.snapshots.evictions == 3
    # a1 recomputes its 4-token hit (shorter than the tail) in both; b2 and a2: the tail against 44 - 41
    tail = one.recompute_tail
    assert one.scheduler.cache_recomputed_tokens == 4 + 2 * tail
    assert many.scheduler.cache_recomputed_tokens == 4 + 2 * 3


@pytest.mark.parametrize("num_loops,overrides", [(1, {}), (2, {"loop_state_snapshots": 0}),
                                                 (2, {"enable_prefix_caching": False})],
                         ids=["R1", "capacity-0", "no-prefix-cache"])
def test_no_snapshots_without_loop_state_or_capacity(plt_mixing, num_loops, overrides):
    engine, _ = make_engine(plt_mixing, num_loops, max_num_batched_tokens=16, max_model_len=128, **overrides)
    assert engine.snapshots is None and engine.scheduler.snapshots is None
    first, *extras = prompts([41, 0, 3], seed=58)
    agent_turns(engine, first, extras)
    stats = engine.stats()
    assert stats.loop_state_snapshots == stats.prefix_cache_snapshot_hits_total == 0
    if overrides.get("loop_state_snapshots") == 0:
        assert stats.prefix_cache_recomputed_tokens_total == 2 * engine.recompute_tail

"""Async scheduling (decode step n+1 launched before the host reads step n's tokens) against the synchronous
engine: the same tokens, finish reasons and usage, request by request, over mixed workloads. On CPU nothing
overlaps, but the same code runs: tokens read one step late, inputs fed from the device, speculative tokens
of finished requests discarded."""
import functools

import pytest
import torch

from loopcoder.model_server.engine import SamplingParams

from engine_support import (LogitRecordingEngine, make_engine, mixing_checkpoint, prompts, reference_logits,
                            run_plan)


@pytest.fixture(scope="module")
def mixing(tmp_path_factory):
    return mixing_checkpoint(tmp_path_factory.mktemp("mix"), "tiny", seed=5)


@functools.lru_cache(maxsize=None)
def probe(path, num_loops, lengths, n=30):
    """Greedy continuations, to pick stop ids that really occur mid-answer (once per checkpoint and R)."""
    engine, _ = make_engine(path, num_loops, async_scheduling=False, max_model_len=160)
    return engine.generate(prompts(list(lengths), seed=11),
                           SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))


def workload(path, num_loops):
    """Eight requests: mixed prompt lengths and max_tokens, arrivals while others decode, stop ids and an
    EOS id that occur mid-answer, seeded sampling, a request aborted after 5 tokens (as at a stop string),
    and n = 3 seeded forks."""
    lengths = [5, 40, 13, 1, 27, 9, 60, 3]
    ps = prompts(lengths, seed=11)
    seen = probe(path, num_loops, tuple(lengths))
    greedy = dict(temperature=0, ignore_eos=True)
    plan = [
        (0, ps[0], SamplingParams(max_tokens=3, **greedy), "short", []),
        (0, ps[1], SamplingParams(max_tokens=30, stop_token_ids=[seen[1][6]], **greedy), "stop-id", []),
        (2, ps[2], SamplingParams(max_tokens=17, **greedy), "mid", []),
        (3, ps[3], SamplingParams(max_tokens=25, temperature=0), "eos", []),  # the engine's EOS id below
        (5, ps[4], SamplingParams(max_tokens=20, temperature=0.9, top_k=50, seed=7), "seeded", []),
        (7, ps[5], SamplingParams(max_tokens=30, **greedy), "abort-at", []),
        (9, ps[6], SamplingParams(max_tokens=12, temperature=0.8, seed=3), "fork", ["fork-1", "fork-2"]),
        (16, ps[7], SamplingParams(max_tokens=9, **greedy), "late", []),
    ]
    return plan, {"abort-at": 5}, seen[3][8]


def run_both(path, num_loops=None, static=False, **overrides):
    plan, abort_after, eos = workload(path, num_loops)
    results, engines = [], []
    for mode in (False, True):
        engine, _ = make_engine(path, num_loops, async_scheduling=mode, max_model_len=160, **overrides)
        engine.eos_ids = frozenset({eos})
        if static:
            engine.runner.use_static_inputs([1, 2, 4])
        results.append(run_plan(engine, plan, abort_after))
        engines.append(engine)
    return results, engines


@pytest.mark.parametrize("num_loops, overrides, static", [
    (None, dict(), True),                                        # R=2, graph-style device-resident inputs
    (None, dict(), False),                                       # R=2, eager inputs
    (1, dict(), True),                                           # R=1
    (None, dict(num_kv_blocks=30, max_num_seqs=3), True),        # preemption, queueing, blocks one ahead
    (None, dict(decode_mode="sequential", max_num_seqs=2), False),
])
def test_async_equals_sync_token_for_token(plt_checkpoint, num_loops, overrides, static):
    (sync, fast), (sync_engine, async_engine) = run_both(plt_checkpoint, num_loops, static, **overrides)
    assert fast == sync
    finishes = {rid: r[1] for rid, r in sync.items()}
    assert finishes["short"] == "length" and finishes["stop-id"] == "stop" and finishes["eos"] == "stop"
    assert finishes["abort-at"] == "abort" and len(sync["abort-at"][0]) == 5 and len({tuple(sync[r][0]) for r in ("fork", "fork-1", "fork-2")}) == 3
    a, s = async_engine.stats(), sync_engine.stats()
    assert a.generation_tokens_total == s.generation_tokens_total == sum(r[2][1] for r in sync.values())
    assert a.requests_finished_total == s.requests_finished_total and a.kv_blocks_used == 0
    assert len(async_engine.blocks.free_slots) == async_engine.cfg.max_num_seqs
    # the async engine really ran ahead: most decode steps were launched before the previous one was
    # read, and requests that stopped had their speculative token discarded
    assert async_engine.counters["overlapped_steps"] > async_engine.counters["decode_steps"] // 2
    assert async_engine.counters["discarded_tokens"] >= 3 and sync_engine.counters["overlapped_steps"] == 0
    if "num_kv_blocks" in overrides:
        assert a.preemptions_total > 0 and s.preemptions_total > 0
    else:
        assert a.prompt_tokens_total == s.prompt_tokens_total


def test_async_equals_sync_iquest_v1(v1_checkpoint):
    (sync, fast), (_, async_engine) = run_both(v1_checkpoint, static=True)
    assert fast == sync and async_engine.counters["overlapped_steps"] > 0


def test_steps_that_need_the_host_run_synchronously(plt_checkpoint):
    """Logprobs, penalties and a grammar read host state between steps: those batches never overlap, and
    their results equal the synchronous engine's."""
    ps = prompts([6, 11], seed=2)
    cases = [SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, logprobs=2),
             SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, frequency_penalty=1.5)]
    for params in cases:
        outs = []
        for mode in (False, True):
            engine, _ = make_engine(plt_checkpoint, async_scheduling=mode)
            for i, p in enumerate(ps):
                engine.submit(p, params, f"r{i}")
            events = []
            while engine.has_work():
                events += engine.step()
            assert engine.counters["overlapped_steps"] == 0 and engine._inflight is None
            outs.append([(e.request_id, e.token_ids, e.logprobs) for e in events])
        assert outs[0] == outs[1]


def test_discarded_step_writes_are_harmless(mixing):
    """A request that stops at step n already has step n+1 launched: that step writes K/V, a ring entry and
    the carry at the position after the request's end, into a block and a slot it then gives back (not rolled
    back). The next request takes the same slot and that block, and its logits still equal the model's full
    forward: its carry is zeroed at admission, and its K/V and ring entries are written position by position
    before anything reads them (one device stream orders the stale writes before the new owner's)."""
    first, second = prompts([9, 9], seed=4)
    probe_engine, _ = make_engine(mixing, async_scheduling=False, max_num_seqs=1, num_kv_blocks=5)
    [seen] = probe_engine.generate([first], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    stop = seen[5]
    engine, model = make_engine(mixing, engine_cls=LogitRecordingEngine, async_scheduling=True, max_num_seqs=1,
                                num_kv_blocks=5)
    engine.runner.use_static_inputs([1])
    engine.submit(first, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, stop_token_ids=[stop]), "a")
    table, slot, done = [], None, None
    while done is None:
        seq = engine._requests.get("a")
        if seq is not None and seq.block_table:
            table, slot = list(seq.block_table), seq.slot
        for ev in engine.step():
            if ev.finished:
                done = ev
    assert done.finish_reason == "stop" and done.token_ids[-1] == stop
    spec = len(first) + done.completion_tokens - 1  # input position of the discarded step (the stop token)
    assert engine._inflight is not None  # launched before the stop was read
    while engine.has_work():
        assert engine.step() == []  # reading it emits nothing
    assert engine.counters["discarded_tokens"] == 1
    assert engine.stats().generation_tokens_total == done.completion_tokens
    bs = engine.cfg.block_size
    stale_block = table[spec // bs]
    assert engine.runner.k_pool[:, stale_block, spec % bs].abs().sum() > 0  # the discarded step did write
    engine.submit(second, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True), "b")
    tokens = []
    while engine.has_work():
        for ev in engine.step():
            tokens += ev.token_ids
        seq = engine._requests.get("b")
        if seq is not None and seq.block_table:
            b_table, b_slot = list(seq.block_table), seq.slot
    assert b_slot == slot and stale_block in b_table  # b reused the slot and the block with the stale writes
    full = reference_logits(model, second + tokens[:-1])
    for i in range(len(tokens)):
        got, want = engine.logits[("b", len(second) - 1 + i)], full[len(second) - 1 + i]
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())

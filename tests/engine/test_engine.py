"""The native engine against model.generate(): same greedy tokens under batching, chunking, preemption."""
import asyncio
import warnings

import pytest
import torch

from loopcoder.model_server.engine import (AsyncLLMEngine, EngineConfig, EngineOverloaded, LLMEngine,
                                           RequestTooLong, SamplingParams)
from loopcoder.model_server.plt.checkpoint import load_checkpoint

GREEDY = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)


def make_engine(path, num_loops=None, **overrides):
    fields = dict(model=str(path), max_num_seqs=4, max_model_len=96, max_num_batched_tokens=32, block_size=4)
    fields.update(overrides)
    cfg = EngineConfig(num_loops=num_loops, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_checkpoint(path, num_loops=num_loops)
    return LLMEngine(model, tok, cfg), model


def reference(model, prompt, n=10):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    return out[0, len(prompt):].tolist()


def prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 4096, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("overrides", [
    dict(),                                          # prompts chunked over several prefill steps
    dict(max_num_batched_tokens=1024, block_size=16),  # each prompt in one chunk
    dict(max_num_seqs=2),                            # more requests than batch slots: they queue
])
def test_greedy_equals_generate_with_staggered_arrivals(plt_checkpoint, overrides):
    engine, model = make_engine(plt_checkpoint, **overrides)
    batch = prompts([5, 40, 13, 1, 27])
    outs = engine.generate(batch, GREEDY, arrivals=[0, 0, 3, 4, 9])
    assert outs == [reference(model, p) for p in batch]
    assert engine.blocks.used_blocks == 0 and len(engine.blocks.free_slots) == engine.cfg.max_num_seqs


def test_preemption_recomputes_exactly(plt_checkpoint):
    engine, model = make_engine(plt_checkpoint, num_kv_blocks=14, max_num_seqs=3)
    batch = prompts([17, 19, 15], seed=1)
    outs = engine.generate(batch, SamplingParams(max_tokens=14, temperature=0, ignore_eos=True))
    assert engine.scheduler.num_preemptions > 0
    assert outs == [reference(model, p, 14) for p in batch]


def test_sequential_decode_mode_equals_fused(plt_checkpoint):
    batch = prompts([9, 30, 4], seed=2)
    fused, _ = make_engine(plt_checkpoint)
    sequential, _ = make_engine(plt_checkpoint, decode_mode="sequential")
    assert fused.generate(batch, GREEDY) == sequential.generate(batch, GREEDY)


def test_three_loops_equal_generate(plt_checkpoint):
    engine, model = make_engine(plt_checkpoint, num_loops=3)
    assert engine.spec.num_loops == 3
    batch = prompts([12, 7], seed=5)
    assert engine.generate(batch, GREEDY, arrivals=[0, 2]) == [reference(model, p) for p in batch]


def test_iquest_v1_equals_generate(v1_checkpoint):
    engine, model = make_engine(v1_checkpoint)
    batch = prompts([6, 21], seed=6)
    assert engine.generate(batch, GREEDY, arrivals=[0, 1]) == [reference(model, p) for p in batch]


def test_kv_bytes_per_token_do_not_grow_with_loops(plt_checkpoint):
    one, _ = make_engine(plt_checkpoint, num_loops=1)
    two, _ = make_engine(plt_checkpoint)
    assert one.runner.kv_bytes_per_token() == two.runner.kv_bytes_per_token()
    assert one.runner.per_request_bytes() == 0 < two.runner.per_request_bytes()
    # the numbers come from the allocated pools: loop 0 is the same, R=1 allocates no ring at all
    assert one.runner.k_pool.shape == two.runner.k_pool.shape
    assert one.runner.ring_k.numel() == 0 and two.runner.ring_k.numel() > 0
    cfg = two.model.config
    assert isinstance(two.runner.kv_bytes_per_token(), int) and isinstance(two.runner.per_request_bytes(), int)
    assert two.runner.kv_bytes_per_token() == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4
    # per request: K and V rings of loops >= 1 (window positions each) and the carry, float32
    rings, window = two.runner.spec.num_loops - 1, two.runner.spec.window
    kv_ring = 2 * cfg.num_hidden_layers * rings * window * cfg.num_key_value_heads * cfg.head_dim
    assert two.runner.per_request_bytes() == (kv_ring + rings * cfg.hidden_size) * 4
    # the pools hold the blocks and slots handed out plus one dummy block and slot (padding rows), no more
    assert two.runner.k_pool.shape[1] == two.blocks.num_blocks + 1 == two.runner.dummy_block + 1
    slots = two.cfg.max_num_seqs + 1
    assert two.runner.ring_k.shape[1] == two.runner.carry.shape[1] == slots == two.runner.dummy_slot + 1


def test_sampling_seed_top_k_and_stop_ids(plt_checkpoint):
    engine, _ = make_engine(plt_checkpoint)
    p = prompts([8], seed=7)[0]
    sampled = SamplingParams(max_tokens=12, temperature=1.3, top_p=0.9, seed=11, ignore_eos=True)
    first, second = engine.generate([p, p], sampled)
    assert first == second and len(first) == 12
    top1 = SamplingParams(max_tokens=12, temperature=2.0, top_k=1, ignore_eos=True)
    assert engine.generate([p], top1) == engine.generate([p], GREEDY.model_copy(update={"max_tokens": 12}))
    greedy = engine.generate([p], GREEDY)[0]
    stop_at = greedy[3]
    stopped = engine.generate([p], GREEDY.model_copy(update={"stop_token_ids": [stop_at]}))[0]
    assert stopped == greedy[: greedy.index(stop_at) + 1]


def test_finish_reasons_and_events(plt_checkpoint):
    engine, _ = make_engine(plt_checkpoint, max_model_len=20)
    engine.submit(prompts([5])[0], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True), "a")
    engine.submit(prompts([15])[0], SamplingParams(max_tokens=50, temperature=0, ignore_eos=True), "b")
    finals = {}
    while engine.has_work():
        for ev in engine.step():
            if ev.finished:
                finals[ev.request_id] = ev
    assert finals["a"].finish_reason == "length" and finals["a"].completion_tokens == 3
    assert finals["b"].finish_reason == "length" and finals["b"].prompt_tokens + finals["b"].completion_tokens == 20
    stats = engine.stats()  # the /metrics counters
    assert (stats.prompt_tokens_total, stats.generation_tokens_total) == (5 + 15, 3 + 5)
    assert (stats.requests_finished_total, stats.requests_aborted_total) == (2, 0)


def test_bad_requests_raise_at_submit(plt_checkpoint):
    engine, _ = make_engine(plt_checkpoint, max_waiting=2)
    with pytest.raises(RequestTooLong, match="max_model_len is 96"):
        engine.submit(list(range(3, 99)), GREEDY)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.submit([5, 99999], GREEDY)
    with pytest.raises(ValueError, match="empty"):
        engine.submit([], GREEDY)
    engine.submit([0, engine.vocab_size - 1], GREEDY)  # the first and last token ids are in the vocabulary
    engine.submit([6], GREEDY)
    with pytest.raises(EngineOverloaded):
        engine.submit([7], GREEDY)


def test_abort_frees_blocks_and_slot(plt_checkpoint):
    engine, _ = make_engine(plt_checkpoint)
    engine.submit(prompts([30])[0], SamplingParams(max_tokens=50, temperature=0, ignore_eos=True), "x")
    engine.step()
    engine.step()
    assert engine.blocks.used_blocks > 0
    engine.abort("x")
    events = engine.step()
    assert [(e.request_id, e.finished, e.finish_reason) for e in events] == [("x", True, "abort")]
    assert engine.blocks.used_blocks == 0 and not engine.has_work()
    assert (engine.stats().requests_aborted_total, engine.stats().requests_finished_total) == (1, 0)


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_async_engine_streams_concurrent_requests_and_aborts_on_early_exit(plt_checkpoint, async_scheduling):
    engine, model = make_engine(plt_checkpoint, async_scheduling=async_scheduling)
    batch = prompts([6, 18, 9, 25, 3, 11], seed=8)

    async def main():
        front = AsyncLLMEngine(engine)
        await front.start()

        async def one(i, p):
            tokens = []
            async for ev in front.generate(p, GREEDY, f"r{i}"):
                tokens += ev.token_ids
            return tokens

        async def leave_early():
            async for ev in front.generate(prompts([10])[0], SamplingParams(max_tokens=80, ignore_eos=True), "gone"):
                break

        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(batch)), leave_early())
        for _ in range(100):
            if front.stats().num_running == 0:
                break
            await asyncio.sleep(0.05)
        stats = front.stats()
        await front.shutdown()
        return results[:-1], stats

    outs, stats = asyncio.run(main())
    assert outs == [reference(model, p) for p in batch]
    assert stats.requests_aborted_total == 1 and stats.kv_blocks_used == 0 and stats.num_running == 0


@pytest.mark.parametrize("num_loops, overrides", [
    (None, dict()),                                  # staggered arrivals: the batch changes, then stays
    (None, dict(num_kv_blocks=14, max_num_seqs=3)),  # preemption; new blocks every 4 tokens
    (3, dict()),
])
def test_device_resident_decode_inputs_equal_generate(plt_checkpoint, num_loops, overrides):
    """The static-input bookkeeping of the CUDA graphs (ids fed from the sampler, positions advanced on
    the device, only new block-table entries written), run eagerly on CPU."""
    engine, model = make_engine(plt_checkpoint, num_loops=num_loops, **overrides)
    engine.runner.use_static_inputs([1, 2, 4])
    batch = prompts([5, 40, 13, 1, 27], seed=7)
    params = SamplingParams(max_tokens=14, temperature=0, ignore_eos=True)
    outs = engine.generate(batch, params, arrivals=[0, 0, 3, 4, 9])
    assert outs == [reference(model, p, 14) for p in batch]
    assert engine.runner.resident_steps > 10  # most decode steps advanced the inputs in place


def test_decode_block_tables_are_sent_by_what_changed(plt_checkpoint):
    """Decode block tables are max_blocks_per_seq wide on the device (1,024 here) but only what a batch
    needs goes up: a request new to the batch sends its own table, a request that stays keeps its row
    (moved on the device when requests before it finish) and sends only appended entries."""
    engine, model = make_engine(plt_checkpoint, max_model_len=4096, num_kv_blocks=200)
    engine.runner.use_static_inputs([1, 2, 4])
    assert engine.runner.max_blocks_per_seq == 1024
    batch = prompts([5, 40, 13, 1, 27], seed=7)
    lengths = [14, 5, 9, 14, 3]  # requests finish at different steps: the rows behind them move up
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in lengths]
    outs = engine.generate(batch, params, arrivals=[0, 0, 3, 4, 9])
    assert outs == [reference(model, p, n) for p, n in zip(batch, lengths)]
    blocks = sum(-(-(len(p) + n) // engine.cfg.block_size) for p, n in zip(batch, lengths))
    assert 0 < engine.runner.table_entries_uploaded <= 2 * blocks  # full-width rows would be >= 1,024 each

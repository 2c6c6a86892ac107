"""Cache sizing and admission: the KV pool from GPU memory (arithmetic, on CPU), the context default,
admission by the blocks a request needs, the prefix cache's block bookkeeping (LRU, references, keys)."""
import pytest

from engine_support import make_engine, prompts
from loopcoder.model_server.engine import SamplingParams
from loopcoder.model_server.engine.block_manager import BlockManager
from loopcoder.model_server.engine.memory import (GiB, CacheSizingError, default_max_model_len, kv_block_bytes,
                                                  plan_kv_blocks, prefill_gather_bytes, recompute_tail, slot_bytes)
from loopcoder.model_server.engine.scheduler import Scheduler
from loopcoder.model_server.engine.sequence import Sequence
from loopcoder.model_server.engine.types import RequestTooLong
from loopcoder.model_server.plt.checkpoint import init_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("memory"), "tiny", seed=4)


def test_loopcoder_v2_sizes():
    # 14 layers, 8 KV heads of 128, bf16: 57,344 B of loop-0 K/V per token (plt_spec.md 5.2)
    assert kv_block_bytes(14, 16, 8, 128, 2) == 16 * 57_344
    # one ring of 65 per layer for loop 1 (3.73 MB) plus a 5120-wide carry
    assert slot_bytes(14, 2, 65, 8, 128, 5120, 2) == 65 * 57_344 + 5120 * 2
    assert slot_bytes(14, 1, 65, 8, 128, 5120, 2) == 0  # R = 1: no rings, no carry
    assert prefill_gather_bytes(131072, 8, 128, 2) == 512 * 1024 ** 2
    assert recompute_tail(2, 14, 65, clp=True) == 14 * 64 + 1 == 897
    assert recompute_tail(1, 14, 65) == 0


def test_kv_pool_from_gpu_memory_utilization():
    """An H200-like card: 139 GiB, 0.9 of it; 15.2 GiB weights plus activations at the profile peak."""
    block = kv_block_bytes(14, 16, 8, 128, 2)
    plan = plan_kv_blocks(total_bytes=139 * GiB, utilization=0.9, non_torch_bytes=GiB // 2, peak_bytes=17 * GiB,
                          extra_activation_bytes=GiB // 2, block_bytes=block, min_blocks=8192)
    budget = int(139 * GiB * 0.9) - GiB // 2 - 17 * GiB - GiB // 2
    assert plan.num_blocks == budget // block and plan.kv_bytes <= budget < plan.kv_bytes + block
    assert plan.num_blocks * 16 > 1_900_000  # ~15 full 131K-token contexts of loop-0 K/V
    assert "KV pool" in plan.summary()
    lower = plan_kv_blocks(139 * GiB, 0.5, GiB // 2, 17 * GiB, GiB // 2, block, 8192)
    assert lower.num_blocks < plan.num_blocks
    # 32 loop-state snapshots (one slot's rings and carry each) come out of the same budget
    snapshots = 32 * slot_bytes(14, 2, 65, 8, 128, 5120, 2)
    fewer = plan_kv_blocks(139 * GiB, 0.9, GiB // 2, 17 * GiB, GiB // 2, block, 8192, snapshot_bytes=snapshots)
    assert fewer.num_blocks == (budget - snapshots) // block and "loop-state snapshots" in fewer.summary()


def test_too_little_memory_is_one_clear_error():
    with pytest.raises(CacheSizingError, match="raise --gpu-memory-utilization"):
        plan_kv_blocks(16 * GiB, 0.9, GiB, 15 * GiB, 0, kv_block_bytes(14, 16, 8, 128, 2), min_blocks=8192)


def test_context_defaults_to_the_checkpoint_on_gpu_only(checkpoint):
    assert default_max_model_len("cuda", 131072) == 131072
    assert default_max_model_len("cpu", 131072) == 4096
    assert default_max_model_len("cpu", 2048) == 2048
    engine, model = make_engine(checkpoint, max_model_len=None)
    assert engine.max_model_len == min(4096, model.config.max_position_embeddings) == 4096


def test_admission_by_the_blocks_requests_need(checkpoint):
    """8 requests of 10 + 6 tokens run together in 40 blocks (160 tokens), though 8 full contexts of 96
    would need 192 blocks; a prompt longer than the whole pool is refused at once."""
    engine, _ = make_engine(checkpoint, max_num_seqs=8, num_kv_blocks=40, max_model_len=96)
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    for i, p in enumerate(prompts([10] * 8, seed=60)):
        engine.submit(p, params, f"r{i}")
    peak = 0
    while engine.has_work():
        engine.step()
        peak = max(peak, len(engine.scheduler.running))
    assert peak == 8 and engine.scheduler.num_preemptions == 0
    small, _ = make_engine(checkpoint, num_kv_blocks=10, max_model_len=96)
    with pytest.raises(RequestTooLong, match="KV cache holds 40 tokens"):
        small.submit(prompts([40])[0], params)
    small.submit(prompts([39])[0], params)  # 39 + 1 tokens: exactly the pool


def seq(rid, tokens):
    return Sequence(rid, list(tokens), SamplingParams(max_tokens=4), frozenset(), 0.0)


def test_block_manager_prefix_cache_keys_refs_and_lru():
    blocks = BlockManager(num_blocks=6, block_size=2, num_slots=3, prefix_caching=True)
    a = seq("a", [1, 2, 3, 4, 5, 6, 7])
    blocks.grow(a, 7)
    a.num_computed = 7
    blocks.register(a)  # 3 full blocks cached, the partial 4th not
    assert blocks.num_cached_blocks == 3 and blocks.used_blocks == 4
    b = seq("b", [1, 2, 3, 4, 9, 9, 9])
    assert blocks.match(b) == a.block_table[:2]  # stops at the first different block
    c = seq("c", [1, 2, 3, 4, 5, 6])
    assert blocks.match(c) == a.block_table[:2]  # at most prefill target - 1 = 5 tokens: two blocks
    d = seq("d", [2, 1, 3, 4, 5, 6, 7])
    assert blocks.match(d) == []  # same later blocks, other first block: keys chain the prefix
    blocks.release(a)
    assert blocks.used_blocks == 0 and blocks.num_free == 6 and len(blocks.cached_free) == 3
    blocks.take_cached(b, blocks.match(b))
    assert blocks.refs[b.block_table[0]] == 1 and len(blocks.cached_free) == 1
    # 6 blocks, 2 held by b: growing e to 4 blocks takes the 3 uncached free ones, then evicts the one
    # cached block nobody holds (a's third)
    e = seq("e", [8] * 8)
    blocks.grow(e, 8)
    assert blocks.evictions == 1 and blocks.num_cached_blocks == 2 and blocks.num_free == 0
    assert blocks.match(seq("a2", [1, 2, 3, 4, 5, 6, 7])) == b.block_table  # a's head still cached


def test_eviction_takes_the_tail_of_a_prefix_first():
    blocks = BlockManager(num_blocks=4, block_size=1, num_slots=2, prefix_caching=True)
    a = seq("a", [1, 2, 3, 4])
    blocks.grow(a, 4)
    a.num_computed = 4
    blocks.register(a)
    head = a.block_table[:2]
    blocks.release(a)
    blocks.grow(seq("x", [9, 9]), 2)  # evicts two: a's last blocks, not its first
    assert blocks.match(seq("a", [1, 2, 3, 4, 5])) == head


def test_prefill_step_bounds_the_context_it_gathers():
    scheduler = Scheduler(BlockManager(64, 4, 4), 4, max_num_batched_tokens=64, max_prefill_context=40)
    for rid, n in (("a", 30), ("b", 20), ("c", 5)):
        scheduler.add(seq(rid, range(3, 3 + n)))
    first = scheduler.schedule().prefill
    assert [c.seq.request_id for c in first] == ["a"]  # a (30) + b (20) would gather 50 > 40 tokens


def test_cpu_engine_keeps_freed_memory_for_the_next_big_tensor():
    """The CPU path allocates big score tensors layer after layer: after keep_freed_cpu_memory() a freed
    100 MB block is reused from the heap instead of being unmapped and faulted in again (glibc). Run in a
    fresh interpreter: the setting is process-wide."""
    import subprocess
    import sys

    code = """
import resource, torch
from loopcoder.model_server.engine.memory import keep_freed_cpu_memory
def faults_of_two_rounds():
    torch.ones(25_000_000).sum()  # 100 MB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(25_000_000).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
plain = faults_of_two_rounds()
assert keep_freed_cpu_memory()
faults_of_two_rounds()
kept = faults_of_two_rounds()
print(plain, kept)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plain, kept = map(int, out.stdout.split())
    assert plain > 20_000 and kept < plain // 10, (plain, kept)  # 24,414 pages of 4 KiB faulted in without it

"""Engine parts whose mistakes change no token, only memory use or speed: the last free block, and that
fused decode really is one pass through the layers per step (sequential decode gives the same logits)."""
from pathlib import Path

import pydantic
import pytest
import yaml

from engine_support import make_engine, prompts
from loopcoder.model_server.engine import EngineConfig, SamplingParams
from loopcoder.model_server.engine.block_manager import BlockManager
from loopcoder.model_server.engine.scheduler import Scheduler
from loopcoder.model_server.engine.sequence import Sequence
from loopcoder.model_server.plt.checkpoint import init_checkpoint


def test_block_manager_hands_out_the_last_free_block_and_takes_all_back():
    blocks = BlockManager(num_blocks=3, block_size=4, num_slots=1)
    seq = Sequence("a", [1] * 9, SamplingParams(), frozenset(), 0.0)
    assert blocks.blocks_needed(seq, 12) == 3 and blocks.can_grow(seq, 12)  # exactly every free block
    assert not blocks.can_grow(seq, 13)
    blocks.grow(seq, 12)
    assert seq.block_table == [0, 1, 2] and blocks.used_blocks == 3 and blocks.blocks_needed(seq, 12) == 0
    assert blocks.take_slot(seq) == 0 and not blocks.has_slot()
    blocks.release(seq)
    assert blocks.used_blocks == 0 and seq.block_table == [] and seq.slot is None and blocks.has_slot()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("units"), "tiny", seed=3)


@pytest.mark.parametrize("mode,passes", [("fused", 1), ("sequential", 2)])
def test_decode_step_runs_the_layers_once_when_fused(checkpoint, mode, passes):
    engine, model = make_engine(checkpoint, decode_mode=mode)
    for i, p in enumerate(prompts([5, 9], seed=40)):
        engine.submit(p, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True), f"r{i}")
    while any(s.in_prefill for s in engine.scheduler.running) or engine.scheduler.waiting or engine._inbox:
        engine.step()  # prefill both prompts
    rows = []
    hook = model.model.layers[0].input_layernorm.register_forward_hook(
        lambda module, args, out: rows.append(args[0].shape[0]))
    try:
        engine.step()  # one decode step for both requests
    finally:
        hook.remove()
    assert rows == ([2 * 2] if mode == "fused" else [2] * passes)  # R=2 rows of B=2, or R passes of B rows


def new_seq(rid, n):
    return Sequence(rid, list(range(3, 3 + n)), SamplingParams(max_tokens=4), frozenset(), 0.0)


def chunks_of(schedule):
    """The chunks as (request, start, length), marked computed as LLMEngine.step does after the prefill."""
    for chunk in schedule.prefill:
        chunk.seq.num_computed += chunk.length
    return [(c.seq.request_id, c.start, c.length) for c in schedule.prefill]


def test_prefill_budget_is_used_to_its_last_token():
    scheduler = Scheduler(BlockManager(64, 4, 4), max_num_seqs=4, max_num_batched_tokens=16)
    for seq in (new_seq("a", 15), new_seq("b", 1), new_seq("c", 20)):
        scheduler.add(seq)
    assert chunks_of(scheduler.schedule()) == [("a", 0, 15), ("b", 0, 1)]
    assert chunks_of(scheduler.schedule()) == [("c", 0, 16)]
    assert chunks_of(scheduler.schedule()) == [("c", 16, 4)]
    assert scheduler.num_preemptions == 0


def test_waiting_requests_are_admitted_in_arrival_order():
    """A request whose blocks do not fit yet holds back the smaller ones queued behind it (no starvation)."""
    blocks = BlockManager(6, 4, 4)
    scheduler = Scheduler(blocks, max_num_seqs=4, max_num_batched_tokens=64)
    scheduler.add(new_seq("first", 12))  # 3 of the 6 blocks
    assert chunks_of(scheduler.schedule()) == [("first", 0, 12)]
    scheduler.add(new_seq("big", 16))  # 4 blocks: does not fit next to "first"
    scheduler.add(new_seq("small", 3))  # 1 block would fit, but it arrived later
    assert chunks_of(scheduler.schedule()) == []
    assert [s.request_id for s in scheduler.waiting] == ["big", "small"] and blocks.used_blocks == 3


def test_queued_abort_gives_back_no_slot_and_events_say_unfinished(checkpoint):
    engine, _ = make_engine(checkpoint, max_num_seqs=1)
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    engine.submit(prompts([4])[0], params, "running")
    engine.submit(prompts([4], seed=1)[0], params, "queued")
    events = engine.step()  # "running" is admitted and prefilled; "queued" waits for the only slot
    assert [(e.request_id, e.finished, e.finish_reason) for e in events] == [("running", False, None)]
    engine.abort("queued")
    events = []
    while engine.has_work():
        events += engine.step()
    assert [(e.request_id, e.finished, e.finish_reason) for e in events] == [
        ("queued", True, "abort"), ("running", False, None), ("running", True, "length")]
    assert list(engine.blocks.free_slots) == [0]  # the queued request never held a slot: none came back twice
    engine.submit(prompts([4], seed=2)[0], params, "next")
    while engine.has_work():
        engine.step()
    assert list(engine.blocks.free_slots) == [0]


def test_defaults_penalise_nothing_and_equal_the_documented_config():
    params = SamplingParams()
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.0, 0.0, 1.0)
    assert params.penalized is False
    for changed in ({"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"repetition_penalty": 1.5}):
        assert SamplingParams(**changed).penalized is True, changed
    with pytest.raises(pydantic.ValidationError):
        EngineConfig()  # the checkpoint directory is required
    with pytest.raises(pydantic.ValidationError):
        EngineConfig(model="m", num_loops=0)  # at least one loop
    # configs/serve.yaml writes out the defaults it documents; every one of them is EngineConfig's default
    serve = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "serve.yaml").read_text())["engine"]
    cfg = EngineConfig(model="m", **{k: v for k, v in serve.items() if k == "dtype"})
    shared = [k for k in serve if k != "model" and k in EngineConfig.model_fields]
    assert len(shared) >= 5 and {k: getattr(cfg, k) for k in shared} == {k: serve[k] for k in shared}

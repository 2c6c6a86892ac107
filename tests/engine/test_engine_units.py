"""Engine parts whose mistakes change no token, only memory use or speed: the last free block, and that
fused decode really is one pass through the layers per step (sequential decode gives the same logits)."""
import pytest

from engine_support import make_engine, prompts
from loopcoder.model_server.engine import SamplingParams
from loopcoder.model_server.engine.block_manager import BlockManager
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

"""Three gaps a mutmut run left open (docs/testing.md, "## mutmut"): the exact preemption count, a fork
that needs no new block, and a checkpoint's extra EOS ids reaching the grammar's stop tokens."""
import json
import warnings

import pytest

from loopcoder.model_server.engine import EngineConfig, GrammarSpec, LLMEngine, SamplingParams
from loopcoder.model_server.plt.checkpoint import init_checkpoint, load_checkpoint

from engine_support import make_engine, prompts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("plt-gaps"), "tiny", seed=3)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preemptions_are_counted_exactly(checkpoint, prefix_caching):
    """A schedule that preempts exactly four times (block_size 4, three KV blocks, two 4-token prompts,
    five tokens each). Step 0 prefills A and B (one block each, one free) and samples their first tokens.
    Each decode step then needs a second block for both; A (first in the batch) takes the free one and
    B is preempted; the next step re-prefills B's 4 prompt tokens into one block (its cached block, or
    the one A did not take), and the decode after that preempts it again. A decodes its 2nd..5th tokens
    in steps 1, 3, 5, 7, and B is preempted in each: 4 times. A then finishes and frees its two blocks;
    B runs alone."""
    engine, model = make_engine(checkpoint, num_kv_blocks=3, max_num_seqs=2, max_num_batched_tokens=64,
                                enable_prefix_caching=prefix_caching)
    outs = engine.generate(prompts([4, 4], seed=1), SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    assert [len(o) for o in outs] == [5, 5]
    assert engine.stats().preemptions_total == engine.scheduler.num_preemptions == 4


def test_a_fork_on_full_blocks_needs_no_free_block(checkpoint):
    """A prompt of a whole number of blocks: its fork shares every block and needs none of its own, so it
    is admitted at once with no block free (instead of waiting to recompute the prompt)."""
    engine, _ = make_engine(checkpoint, num_kv_blocks=4, max_num_seqs=4, max_num_batched_tokens=64,
                            enable_prefix_caching=False)
    greedy = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    parent, other = prompts([8, 8], seed=2)
    engine.submit(parent, greedy, "p", fork_ids=["p1"])
    engine.submit(other, greedy, "q")
    events = engine.step()  # one prefill step: p and q take two blocks each, none is left
    assert engine.blocks.num_free == 0
    # every fork samples its first token from the parent's prefill logits, admitted or not
    assert sorted(e.request_id for e in events) == ["p", "p1", "q"]
    assert [s.request_id for s in engine.scheduler.running] == ["p", "q", "p1"] and not engine.scheduler.waiting
    fork = next(s for s in engine.scheduler.running if s.request_id == "p1")
    p = next(s for s in engine.scheduler.running if s.request_id == "p")
    assert fork.block_table == p.block_table and all(engine.blocks.refs[b] == 2 for b in p.block_table)


def test_extra_eos_ids_of_the_generation_config_end_a_grammar(tmp_path):
    """A checkpoint whose generation_config adds an EOS id (like Qwen's <|im_end|> plus <|endoftext|>):
    at the end of a complete JSON value the grammar allows every EOS id, not only the tokenizer's own."""
    path = init_checkpoint(tmp_path / "ckpt", "tiny", seed=3)
    gen = json.loads((path / "generation_config.json").read_text())
    extra = 0  # <|endoftext|>: a special token, not the tokenizer's eos (2, <|im_end|>)
    gen["eos_token_id"] = [2, extra]
    (path / "generation_config.json").write_text(json.dumps(gen))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_checkpoint(path)
    assert tok.eos_token_id == 2
    engine = LLMEngine(model, tok, EngineConfig(model=str(path), max_num_seqs=2, max_model_len=64,
                                                max_num_batched_tokens=32, block_size=4))
    assert engine.eos_ids == {2, extra}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    matcher = engine.grammars.matcher(GrammarSpec(kind="json_schema", value=json.dumps(schema)))

    def allowed(token):
        word = int(engine.grammars.fill_bitmask([matcher])[0, token // 32])
        return bool((word >> (token % 32)) & 1)

    assert not allowed(extra) and not allowed(2)  # nothing complete yet: no EOS
    assert matcher.accept_string('{"n": 7}')
    assert allowed(extra) and allowed(2)
    assert matcher.accept_token(extra) and matcher.is_terminated()

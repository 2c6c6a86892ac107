"""Sampling as distributions (temperature, partial top-k and top-p, their order), and EOS stopping in the
real engine. The sampler is driven with fixed logits and a seeded generator, so the frequencies are
deterministic; 4,000 draws put each within about 0.01 of its probability, and the checks allow 0.03."""
import warnings

import pytest
import torch

from engine_support import make_engine, prompts
from loopcoder.model_server.engine import LLMEngine, SamplingParams
from loopcoder.model_server.engine.sampler import sample
from loopcoder.model_server.engine.sequence import Sequence
from loopcoder.model_server.plt.checkpoint import init_checkpoint

N = 4000
PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log()


def frequencies(logits: torch.Tensor, seed: int = 0, **params) -> torch.Tensor:
    seqs = [Sequence(f"r{i}", [1], SamplingParams(**params), frozenset(), 0.0) for i in range(N)]
    tokens = sample(logits.expand(N, -1).clone(), seqs, torch.Generator().manual_seed(seed)).tokens
    return torch.bincount(torch.tensor(tokens), minlength=logits.shape[0]).float() / N


def expected(probs: torch.Tensor, keep: int | None = None) -> torch.Tensor:
    p = probs.clone()
    if keep is not None:
        p[keep:] = 0
    return p / p.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_scales_the_logits(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    got = frequencies(logits, temperature=temperature)
    want = torch.softmax(logits / temperature, -1)
    assert (got - want).abs().max() < 0.03, (got, want)


@pytest.mark.parametrize("top_k,keep", [(1, 1), (2, 2), (3, 3), (4, 4), (0, 4), (50, 4)])
def test_top_k_keeps_exactly_k_tokens_renormalised(top_k, keep):
    got = frequencies(LOGITS, top_k=top_k)
    assert (got[keep:] == 0).all() and (got[:keep] > 0).all()
    assert (got - expected(PROBS, keep)).abs().max() < 0.03


@pytest.mark.parametrize("top_p,keep", [(0.4, 1), (0.5, 1), (0.7, 2), (0.85, 3), (0.96, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_prefix_reaching_p(top_p, keep):
    """Cumulative mass of the sorted tokens: 0.5, 0.8, 0.95, 1.0."""
    got = frequencies(LOGITS, top_p=top_p)
    assert (got[keep:] == 0).all() and (got[:keep] > 0).all()
    assert (got - expected(PROBS, keep)).abs().max() < 0.03


def test_top_p_applies_to_the_tempered_distribution_and_with_top_k():
    # at temperature 0.5 the probabilities become 0.685, 0.247, 0.062, 0.007: top_p 0.9 keeps two tokens
    tempered = torch.softmax(LOGITS / 0.5, -1)
    got = frequencies(LOGITS, temperature=0.5, top_p=0.9)
    assert (got - expected(tempered, 2)).abs().max() < 0.03
    # the tighter of top_k and top_p wins
    assert (frequencies(LOGITS, top_k=3, top_p=0.7) - expected(PROBS, 2)).abs().max() < 0.03
    assert (frequencies(LOGITS, top_k=2, top_p=0.96) - expected(PROBS, 2)).abs().max() < 0.03


def test_mixed_batch_greedy_rows_stay_greedy_and_seeded_rows_repeat():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 3)
    seeded = SamplingParams(temperature=1.0, seed=5)
    seqs = [Sequence("greedy", [1], SamplingParams(temperature=0), frozenset(), 0.0),
            Sequence("a", [1], seeded, frozenset(), 0.0), Sequence("b", [1], seeded, frozenset(), 0.0)]
    runs = []
    for _ in range(20):
        for s in seqs[1:]:  # a fresh seeded generator per request, as the engine makes one at submit
            s.generator = torch.Generator().manual_seed(5)
        runs.append(sample(logits, seqs, torch.Generator().manual_seed(len(runs))).tokens)
    assert all(r[0] == 1 for r in runs)  # greedy row: argmax whatever the others do
    assert all(r[1] == r[2] for r in runs)  # same seed, same draw
    assert len({r[1] for r in runs}) == 1  # and the same draw each time: the default generator is not used


# ------------------------------------------------------------------ EOS in the engine


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("eos"), "tiny", seed=3)


def first_new_token(tokens: list[int], start: int, avoid: set[int]) -> int:
    """Index of the first token at or after ``start`` that did not occur before it and is not in avoid."""
    return next(i for i in range(start, len(tokens)) if tokens[i] not in tokens[:i] and tokens[i] not in avoid)


def run(engine, prompt, params):
    engine.submit(prompt, params, "q")
    tokens, last = [], None
    while engine.has_work():
        for event in engine.step():
            tokens += event.token_ids
            last = event
    return tokens, last


def test_checkpoint_eos_stops_the_request_unless_ignored(checkpoint):
    engine, model = make_engine(checkpoint)
    prompt = prompts([8], seed=7)[0]
    free = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))[0]
    tokenizer_eos = engine.tokenizer.eos_token_id
    assert tokenizer_eos not in free, "pick another prompt: greedy output already holds the tokenizer's EOS"
    k = first_new_token(free, 3, {tokenizer_eos})
    eos = free[k]
    model.generation_config.eos_token_id = [eos]  # as a checkpoint's generation_config.json would say
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopping = LLMEngine(model, engine.tokenizer, engine.cfg)
    assert stopping.eos_ids == {eos, tokenizer_eos}

    tokens, last = run(stopping, prompt, SamplingParams(max_tokens=12, temperature=0))
    assert tokens == free[: k + 1] and (last.finished, last.finish_reason) == (True, "stop")
    assert last.completion_tokens == k + 1
    # EOS as the last allowed token is still a stop, not a length cut
    tokens, last = run(stopping, prompt, SamplingParams(max_tokens=k + 1, temperature=0))
    assert tokens == free[: k + 1] and last.finish_reason == "stop"
    tokens, last = run(stopping, prompt, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    assert tokens == free and last.finish_reason == "length"
    # a stop id of the request stops too when EOS is ignored; EOS and stop ids are both checked per token
    j = first_new_token(free, 1, {tokenizer_eos, eos})
    tokens, last = run(stopping, prompt, SamplingParams(max_tokens=12, temperature=0, stop_token_ids=[free[j]]))
    assert tokens == free[: min(j, k) + 1] and last.finish_reason == "stop"
    assert stopping.blocks.used_blocks == 0 and not stopping.has_work()

"""The engine on a CUDA GPU: Triton kernels, paged cache and CUDA graphs (run on the device machine,
see docs/gpu.md). Marked gpu, so `make test` leaves it out."""
import pytest
import torch

from loopcoder.model_server.engine import EngineConfig, LLMEngine, SamplingParams
from loopcoder.model_server.plt import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = IQuestPLTCoderConfig(vocab_size=2048, hidden_size=512, intermediate_size=1024, num_hidden_layers=3,
                                  num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                                  plt_window_size=[64, 0], plt_emb_scale=0.707, plt_hidden_scale=0.053,
                                  plt_gate_use_hidden_states=True, eos_token_id=[2])
    return IQuestPLTCoderForCausalLM(config).to("cuda", torch.bfloat16).eval()


def engine(model, **kw):
    # A fixed pool (8 full-length requests): sized from free memory, the first engine of a test that keeps
    # several alive would take 90% of the GPU and leave the next none.
    cfg = EngineConfig(model="gpu-test", device="cuda", max_num_seqs=8, max_model_len=512, block_size=16,
                       max_num_batched_tokens=128, num_kv_blocks=8 * 512 // 16, **kw)
    return LLMEngine(model, None, cfg)


def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 2048, (n,), generator=g).tolist() for n in (7, 150, 90, 1, 300)]


def test_cuda_graphs_change_nothing(model):
    graphs = engine(model, graph_batch_sizes=[1, 2, 4, 8])
    assert graphs.runner.graphs
    eager = engine(model, cuda_graphs=False)
    batch = prompts()
    assert graphs.generate(batch, GREEDY, arrivals=[0, 0, 2, 5, 9]) == eager.generate(batch, GREEDY,
                                                                                      arrivals=[0, 0, 2, 5, 9])


def test_engine_tokens_are_the_models_greedy_choices(model):
    batch = prompts()
    outs = engine(model).generate(batch, GREEDY, arrivals=[0, 1, 1, 4, 6])
    agree = total = 0
    for prompt, out in zip(batch, outs):
        with torch.no_grad():
            model.model.attention_impl = "torch"
            logits = model(torch.tensor([prompt + out], device="cuda")).logits[0, len(prompt) - 1: -1]
        agree += (logits.argmax(-1).cpu() == torch.tensor(out)).sum().item()
        total += len(out)
    print(f"greedy agreement with the torch path: {agree}/{total}")
    assert agree / total > 0.95  # bf16: near-ties may flip


def test_sequential_mode_matches_fused_mode(model):
    batch = prompts()[:3]
    fused = engine(model).generate(batch, GREEDY)
    sequential = engine(model, decode_mode="sequential").generate(batch, GREEDY)
    same = sum(a == b for x, y in zip(fused, sequential) for a, b in zip(x, y))
    assert same / sum(map(len, fused)) > 0.95


def test_async_scheduling_equals_sync_with_cuda_graphs(model):
    """Async scheduling on the CUDA-graph path (step n+1 replayed before step n's tokens are read, ids fed
    on the device): the same tokens, finish reasons and usage as the synchronous engine for greedy requests
    (one with a stop id that occurs mid-answer, when its answer has one), seeded sampled ones and one aborted
    after 7 tokens (as at a stop string), arriving at different steps. One graph size, so every step runs
    the same GEMM shapes whichever requests are in it (the async engine's batch still holds a request that
    stopped, until its token is read)."""
    from engine_support import run_plan

    batch = prompts()
    seen = engine(model, graph_batch_sizes=[8], async_scheduling=False).generate(batch, GREEDY)
    stop = next((t for i, t in enumerate(seen[0]) if i >= 5 and t not in seen[0][:i]), None)
    greedy = dict(temperature=0, ignore_eos=True)
    params = [SamplingParams(max_tokens=24, stop_token_ids=[stop] if stop is not None else [], **greedy),
              SamplingParams(max_tokens=20, temperature=0.8, seed=5),
              SamplingParams(max_tokens=9, **greedy),
              SamplingParams(max_tokens=24, **greedy),
              SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=9, ignore_eos=True)]
    plan = [(step, p, sp, f"r{i}", []) for i, (step, p, sp) in enumerate(zip([0, 0, 2, 5, 9], batch, params))]
    outs, engines = [], []
    for mode in (False, True):
        e = engine(model, graph_batch_sizes=[8], async_scheduling=mode)
        outs.append(run_plan(e, plan, abort_after={"r3": 7}))
        engines.append(e)
    assert outs[0] == outs[1]
    assert outs[0]["r3"][1] == "abort" and len(outs[0]["r3"][0]) == 7 and len(outs[0]["r2"][0]) == 9
    assert stop is None or (outs[0]["r0"][1] == "stop" and outs[0]["r0"][0][-1] == stop)
    sync, fast = engines
    assert fast.counters["overlapped_steps"] > fast.counters["decode_steps"] // 2 and fast.counters["discarded_tokens"] >= 1
    assert fast.runner.resident_steps > 0 and sync.counters["overlapped_steps"] == 0
    assert fast.stats().generation_tokens_total == sync.stats().generation_tokens_total == sum(
        len(r[0]) for r in outs[0].values())

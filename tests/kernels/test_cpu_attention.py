"""gswa_prefill_cpu (SDPA, blocked local band) against gswa_prefill_reference, the spec, at tiny shapes."""

import pytest
import torch

from loopcoder.model_server import kernels as K
from loopcoder.model_server.kernels.cpu import gswa_prefill_cpu

D = 16
TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 1e-2}  # max abs error / max |reference|


def cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def inputs(lq, lk, ll, h, g, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    return dict(q=rnd(sum(lq), h, D), k0=rnd(sum(lk), g, D), v0=rnd(sum(lk), g, D), cu_seqlens_q=cu(lq),
                cu_seqlens_k=cu(lk), max_seqlen_q=max(lq), max_seqlen_k=max(lk)), \
        dict(k_loc=rnd(sum(ll), g, D), v_loc=rnd(sum(ll), g, D), cu_seqlens_kl=cu(ll),
             gate=torch.rand(sum(lq), h, generator=gen).to(dtype))


def run(fn, x, loc=None, **kw):
    return fn(*x.values(), **(loc or {}), **kw)


# (len_q, len_k, len_kl) per sequence of one packed batch
BATCHES = {
    # prompts: queries = keys = local keys
    "prompts": ([23, 1, 40], [23, 1, 40], [23, 1, 40]),
    # engine extend chunks: local keys = the chunk + the window - 1 before it (fewer near the start), a
    # "fresh" chunk whose local keys are only its own tokens, a one-token chunk, and an empty sequence
    "extend": ([13, 20, 9, 1, 0], [40, 20, 33, 50, 6], [13 + 6, 20, 9, 1 + 6, 0]),
    # local key sets shorter than the queries: the first queries have no local key (zero O_loc)
    "short_local": ([17, 30, 5], [17, 45, 5], [4, 11, 0]),
}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("hg", [(4, 4), (6, 2)])  # GQA ratio 1 and 3
@pytest.mark.parametrize("window,block", [(7, 5), (7, 64), (3, 1), (65, 8), (1, 4), (200, 3)])
def test_matches_the_reference_float32(batch, hg, window, block):
    lq, lk, ll = BATCHES[batch]
    x, loc = inputs(lq, lk, ll, *hg, seed=window + block)
    ref = run(K.gswa_prefill_reference, x)
    assert rel_err(run(gswa_prefill_cpu, x, block=block), ref) < TOL[torch.float32]  # loop 0
    ref = run(K.gswa_prefill_reference, x, loc, window=window)
    out = run(gswa_prefill_cpu, x, loc, window=window, block=block)
    assert out.dtype == torch.float32
    assert rel_err(out, ref) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_matches_the_reference_float64_and_bfloat16(dtype):
    lq, lk, ll = BATCHES["extend"]
    x, loc = inputs(lq, lk, ll, 6, 2, dtype=dtype, seed=3)
    for extra in ({}, dict(loc, window=7)):
        out = run(gswa_prefill_cpu, x, block=5, **extra)
        assert out.dtype == dtype
        # both compute in float32 (float64) and round once to the output dtype
        assert rel_err(out, run(K.gswa_prefill_reference, x, **extra)) < TOL[dtype]


def test_the_band_edges_are_seen_by_the_comparison():
    """An off-by-one band (window +- 1) or a missing diagonal moves the result far beyond the tolerance, so
    the comparisons above catch it (also tried: shifting the band in cpu.py by one fails them)."""
    lq, lk, ll = BATCHES["extend"]
    x, loc = inputs(lq, lk, ll, 6, 2, seed=5)
    ref = run(K.gswa_prefill_reference, x, loc, window=7)
    for w in (6, 8):
        assert rel_err(run(gswa_prefill_cpu, x, loc, window=w, block=5), ref) > 1e-2


def test_queries_without_a_local_key_get_zero_local_output():
    lq, lk, ll = BATCHES["short_local"]
    x, loc = inputs(lq, lk, ll, 6, 2, seed=7)
    loc["gate"] = torch.zeros_like(loc["gate"])  # o = O_loc
    out = run(gswa_prefill_cpu, x, loc, window=5, block=3)
    ref = run(K.gswa_prefill_reference, x, loc, window=5)
    assert rel_err(out, ref) < TOL[torch.float32]
    for i, (q, l) in enumerate(zip(lq, ll)):
        rows = out[cu(lq)[i]: cu(lq)[i + 1]]
        empty = max(0, q - l)  # the first q - l queries come before the first local key
        assert torch.equal(rows[:empty], torch.zeros_like(rows[:empty]))
        assert (rows[empty:].abs().amax(dim=(1, 2)) > 0).all()
    # window 0: no query sees a local key
    assert torch.equal(run(gswa_prefill_cpu, x, loc, window=0), torch.zeros_like(out))


def test_public_prefill_on_cpu_is_the_cpu_path_and_errors_match_the_reference():
    lq, lk, ll = BATCHES["extend"]
    x, loc = inputs(lq, lk, ll, 6, 2, seed=9)
    assert torch.equal(run(K.gswa_prefill, x, loc, window=7), run(gswa_prefill_cpu, x, loc, window=7))
    bad, _ = inputs([4], [3], [3], 6, 2)
    with pytest.raises(ValueError, match="4 queries but only 3 keys"):
        run(gswa_prefill_cpu, bad)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        run(gswa_prefill_cpu, inputs([3], [3], [3], 5, 2)[0])
    with pytest.raises(ValueError, match="needs gate"):
        run(gswa_prefill_cpu, x, dict(loc, gate=None))


# ---------------------------------------------------------------- decode


def decode_inputs(r, seq_lens, h, g, dtype=torch.float32, paged=True, page=4, window=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    b, per = len(seq_lens), -(-max(seq_lens) // page)
    if paged:  # blocks in shuffled order, more blocks than used
        kc, vc = rnd(b * per + 3, page, g, D), rnd(b * per + 3, page, g, D)
        table = torch.randperm(b * per + 3, generator=gen)[: b * per].view(b, per).int()
    else:  # an HF static cache [B, G, S, D] goes in as its transposed view
        kc, vc = rnd(b, g, per * page + 2, D).transpose(1, 2), rnd(b, g, per * page + 2, D).transpose(1, 2)
        table = None
    ring = (rnd(b + 2, r - 1, window, g, D), rnd(b + 2, r - 1, window, g, D)) if r > 1 else (None, None)
    return dict(q=rnd(b, r, h, D), k_cache=kc, v_cache=vc, block_table=table,
                seq_lens=torch.tensor(seq_lens, dtype=torch.int32), ring_k=ring[0], ring_v=ring[1],
                ring_slots=torch.randperm(b + 2, generator=gen)[:b].int() if r > 1 else None,
                gate=torch.rand(b, r - 1, h, generator=gen).to(dtype) if r > 1 else None)


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("hg", [(4, 4), (6, 2)])
@pytest.mark.parametrize("paged", [True, False])
def test_decode_matches_the_reference(r, hg, paged):
    # contexts shorter than the ring (t < W), exactly W, longer, one key, one page + 1
    x = decode_inputs(r, [1, 3, 5, 6, 13, 5], *hg, paged=paged, seed=r)
    out = K.gswa_decode_cpu(**x)
    assert out.dtype == torch.float32
    assert rel_err(out, K.gswa_decode_reference(**x)) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_decode_matches_the_reference_float64_and_bfloat16(dtype):
    x = decode_inputs(2, [2, 9, 17], 6, 2, dtype=dtype, seed=11)
    out = K.gswa_decode_cpu(**x)
    assert out.dtype == dtype
    assert rel_err(out, K.gswa_decode_reference(**x)) < TOL[dtype]


def test_decode_equals_prefill_on_the_same_token():
    """The last token through both CPU paths: the ring holds position p at index p % W."""
    w, n, h, g = 5, 13, 6, 2
    x, loc = inputs([n], [n], [n], h, g, dtype=torch.float64, seed=13)
    pre = run(gswa_prefill_cpu, x, loc, window=w)[-1]
    ring_k = torch.zeros(1, 1, w, g, D, dtype=torch.float64)
    ring_v = torch.zeros_like(ring_k)
    for p in range(n):
        ring_k[0, 0, p % w], ring_v[0, 0, p % w] = loc["k_loc"][p], loc["v_loc"][p]
    q = x["q"][-1].expand(2, h, D)[None]  # rows 0 and 1 of the same token
    dec = K.gswa_decode_cpu(q, x["k0"][None], x["v0"][None], None, torch.tensor([n], dtype=torch.int32),
                            ring_k, ring_v, torch.tensor([0], dtype=torch.int32), loc["gate"][-1][None, None])
    assert rel_err(dec[0, 1], pre) < 1e-12
    assert rel_err(dec[0, 0], run(gswa_prefill_cpu, x)[-1]) < 1e-12


def test_public_decode_on_cpu_is_the_cpu_path():
    x = decode_inputs(2, [3, 8], 6, 2, seed=17)
    assert torch.equal(K.gswa_decode(**x), K.gswa_decode_cpu(**x))
    with pytest.raises(ValueError, match="multiple of KV heads"):
        K.gswa_decode_cpu(**dict(x, q=torch.randn(2, 2, 5, D)))

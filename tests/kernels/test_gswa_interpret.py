"""G-SWA kernels against their PyTorch references at tiny shapes, on CPU under TRITON_INTERPRET=1.

Also checks the references themselves: against float64, against a position-by-position brute force of the
spec's equations, and prefill against decode (the same token's output through both paths must agree).
"""

import os
import subprocess
import sys

import pytest
import torch

from loopcoder.model_server import kernels as K

triton = pytest.importorskip("triton")
INTERPRET = bool(triton.knobs.runtime.interpret)
ON_CUDA = torch.cuda.is_available()

# Set in the re-run below, so that a subprocess where the interpreter did not take effect reports its skips
# instead of starting another subprocess (and that one another).
RERUN_MARK = "LOOPCODER_KERNEL_TESTS_RERUN"

if not INTERPRET and not ON_CUDA and not os.environ.get(RERUN_MARK):
    # triton was imported before the conftest could set TRITON_INTERPRET: run this file in a fresh process.
    def test_rerun_under_interpreter_in_subprocess(tmp_path):
        """Every test of this file must pass there: a skip (e.g. the interpreter not taking effect) fails."""
        import xml.etree.ElementTree as ET

        report = tmp_path / "junit.xml"
        env = dict(os.environ, TRITON_INTERPRET="1", **{RERUN_MARK: "1"})
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                               f"--junitxml={report}", __file__], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        cases = ET.parse(report).getroot().iter("testcase")
        outcome = {c.get("name"): [child.tag for child in c if child.tag in ("skipped", "failure", "error")]
                   for c in cases}
        not_passed = {name: tags for name, tags in outcome.items() if tags}
        assert not not_passed, f"not passed in the subprocess: {not_passed}\n{proc.stdout[-2000:]}"
        # every test function of this file ran there (parametrised ones at least once), the 19 kernel tests too
        ran = {name.split("[")[0] for name in outcome}
        defined = {name for name, obj in globals().items() if name.startswith("test_") and callable(obj)}
        assert ran == defined - {"test_rerun_under_interpreter_in_subprocess"}, (ran, defined)
        interpreter_tests = {name for name, obj in globals().items() if name.startswith("test_")
                             and any(m.name == "skipif" and "interpreter" in m.kwargs.get("reason", "")
                                     for m in getattr(obj, "pytestmark", []))}
        interp = [name for name in outcome if name.split("[")[0] in interpreter_tests]
        assert len(interp) >= 19, interp

needs_interp = pytest.mark.skipif(not INTERPRET, reason="interpreter tests (CPU tensors, TRITON_INTERPRET=1)")

H, G, D = 4, 2, 16
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.2e-2}  # relative to the output's max |value|


def cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def prefill_inputs(dtype, lq, lk, ll, seed=0, d=D, h=H):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    return dict(q=rnd(sum(lq), h, d), k0=rnd(sum(lk), G, d), v0=rnd(sum(lk), G, d), k_loc=rnd(sum(ll), G, d),
                v_loc=rnd(sum(ll), G, d), gate=torch.rand(sum(lq), h, generator=g).to(dtype),
                cu_q=cu(lq), cu_k=cu(lk), cu_kl=cu(ll), mq=max(lq), mk=max(lk))


def run_prefill(fn, x, local, window=5, **kw):
    extra = dict(k_loc=x["k_loc"], v_loc=x["v_loc"], cu_seqlens_kl=x["cu_kl"], gate=x["gate"]) if local else {}
    return fn(x["q"], x["k0"], x["v0"], x["cu_q"], x["cu_k"], x["mq"], x["mk"], window=window, **extra, **kw)


# sequence 0: prompt; 1: extend (queries are the last 21 of 40 keys, local keys start mid-way); 2: one token
LQ, LK, LL = [9, 21, 1], [9, 40, 17], [9, 30, 6]


# ---------------------------------------------------------------- references


def brute_force_gswa(q, k0, v0, kl, vl, gate, p, pos_l0, window, scale):
    """One query at absolute position p, head by head, exactly as plt_spec.md 3.2 writes it."""
    out = torch.empty(q.shape, dtype=torch.float64)
    qpg = q.shape[0] // k0.shape[1]
    for h in range(q.shape[0]):
        kh = h // qpg
        sg = torch.stack([q[h] @ k0[j, kh] for j in range(p + 1)]) * scale
        og = torch.softmax(sg, 0) @ v0[: p + 1, kh]
        if kl is None:
            out[h] = og
            continue
        js = [j for j in range(kl.shape[0]) if p - window < pos_l0 + j <= p]
        sl = torch.stack([q[h] @ kl[j, kh] for j in js]) * scale
        ol = torch.softmax(sl, 0) @ vl[js, kh]
        out[h] = gate[h] * og + (1 - gate[h]) * ol
    return out


def test_prefill_reference_matches_brute_force_of_the_spec():
    x = prefill_inputs(torch.float64, LQ, LK, LL, seed=1)
    window = 5
    ref = run_prefill(K.gswa_prefill_reference, x, local=True, window=window)
    s = 1 / D ** 0.5
    for i, (lq, lk, ll) in enumerate(zip(LQ, LK, LL)):
        qs, ks, ls = x["cu_q"][i].item(), x["cu_k"][i].item(), x["cu_kl"][i].item()
        for iq in range(lq):
            p = lk - lq + iq
            bf = brute_force_gswa(x["q"][qs + iq], x["k0"][ks:ks + lk], x["v0"][ks:ks + lk], x["k_loc"][ls:ls + ll],
                                  x["v_loc"][ls:ls + ll], x["gate"][qs + iq], p, lk - ll, window, s)
            torch.testing.assert_close(ref[qs + iq], bf, rtol=1e-10, atol=1e-10)


def test_reference_float32_is_within_1e5_of_float64():
    x64 = prefill_inputs(torch.float64, LQ, LK, LL, seed=2)
    x32 = {k: (v.float() if v.is_floating_point() else v) if torch.is_tensor(v) else v for k, v in x64.items()}
    for local in (False, True):
        assert rel_err(run_prefill(K.gswa_prefill_reference, x32, local),
                       run_prefill(K.gswa_prefill_reference, x64, local)) < 1e-5


def test_gate_one_gives_loop0_attention_and_gate_zero_gives_pure_local():
    x = prefill_inputs(torch.float64, LQ, LK, LL, seed=3)
    glob = run_prefill(K.gswa_prefill_reference, x, local=False)
    x["gate"] = torch.ones_like(x["gate"])
    torch.testing.assert_close(run_prefill(K.gswa_prefill_reference, x, local=True), glob)
    x["gate"] = torch.zeros_like(x["gate"])
    loc = run_prefill(K.gswa_prefill_reference, x, local=True)
    # pure local with window 1 is just the value of the query's own local key (self is in the window)
    x1 = run_prefill(K.gswa_prefill_reference, x, local=True, window=1)
    for i, (lq, lk, ll) in enumerate(zip(LQ, LK, LL)):
        qe, le = x["cu_q"][i + 1].item(), x["cu_kl"][i + 1].item()
        own = x["v_loc"][le - lq:le].repeat_interleave(H // G, dim=1)
        torch.testing.assert_close(x1[qe - lq:qe], own)
    assert not torch.allclose(loc, glob)


def make_decode_inputs(dtype, r, seq_lens, paged=True, page=8, window=5, seed=0, d=D, h=H, g=G):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    b = len(seq_lens)
    nb_req = -(-max(seq_lens) // page)
    if paged:
        nblocks = b * nb_req + 3
        kc, vc = rnd(nblocks, page, g, d), rnd(nblocks, page, g, d)
        bt = torch.randperm(nblocks, generator=gen)[: b * nb_req].reshape(b, nb_req).int()
    else:
        kc, vc = rnd(b, nb_req * page, g, d), rnd(b, nb_req * page, g, d)
        bt = None
    slots = torch.randperm(b + 2, generator=gen)[:b].int()
    ring = (rnd(b + 2, r - 1, window, g, d), rnd(b + 2, r - 1, window, g, d)) if r > 1 else (None, None)
    return dict(q=rnd(b, r, h, d), k_cache=kc, v_cache=vc, block_table=bt,
                seq_lens=torch.tensor(seq_lens, dtype=torch.int32), ring_k=ring[0], ring_v=ring[1],
                ring_slots=slots if r > 1 else None,
                gate=torch.rand(b, r - 1, h, generator=gen).to(dtype) if r > 1 else None)


def test_decode_reference_equals_prefill_reference_for_the_same_token():
    """The ring holds position p at p % W; the decode row of the last token must equal its prefill row."""
    torch.manual_seed(4)
    w, lk = 5, 13
    x = prefill_inputs(torch.float64, [lk], [lk], [lk], seed=4)
    pre = run_prefill(K.gswa_prefill_reference, x, local=True, window=w)[-1]
    pre0 = run_prefill(K.gswa_prefill_reference, x, local=False)[-1]
    ring_k = torch.zeros(1, 1, w, G, D, dtype=torch.float64)
    ring_v = torch.zeros_like(ring_k)
    for p in range(lk):  # write the ring as decode would, position by position
        ring_k[0, 0, p % w], ring_v[0, 0, p % w] = x["k_loc"][p], x["v_loc"][p]
    q = torch.stack([x["q"][-1], x["q"][-1]])[None]  # both rows: the same query
    out = K.gswa_decode_reference(q, x["k0"][None], x["v0"][None], None, torch.tensor([lk], dtype=torch.int32),
                                  ring_k, ring_v, torch.tensor([0], dtype=torch.int32), x["gate"][-1][None, None])
    torch.testing.assert_close(out[0, 1], pre)
    torch.testing.assert_close(out[0, 0], pre0)


# ---------------------------------------------------------------- Triton kernels vs references


@needs_interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("local", [False, True], ids=["loop0", "gswa"])
def test_prefill_kernel_matches_reference(dtype, local):
    x = prefill_inputs(dtype, LQ, LK, LL, seed=5)
    out = run_prefill(K.gswa_prefill_triton, x, local)
    ref = run_prefill(K.gswa_prefill_reference, x, local)
    assert out.dtype == dtype and out.shape == x["q"].shape
    assert rel_err(out, ref) < TOL[dtype]


@needs_interp
def test_prefill_kernel_block_shapes_do_not_change_the_result():
    x = prefill_inputs(torch.float32, LQ, LK, LL, seed=6)
    a = run_prefill(K.gswa_prefill_triton, x, True, block_m=32, block_n=16)
    b = run_prefill(K.gswa_prefill_triton, x, True, block_m=16, block_n=32)
    assert rel_err(a, b) < 1e-5


@needs_interp
def test_prefill_kernel_head_dim_64_bf16_gqa_5():
    # 10 query heads over 2 KV heads: a group of 5, as LoopCoder-V2's 40/8
    x = prefill_inputs(torch.bfloat16, [7, 3], [7, 12], [7, 12], seed=7, d=64, h=10)
    out = run_prefill(K.gswa_prefill_triton, x, True, window=4)
    ref = run_prefill(K.gswa_prefill_reference, x, True, window=4)
    assert rel_err(out, ref) < TOL[torch.bfloat16]


@needs_interp
@pytest.mark.parametrize("dtype,r,splits,paged", [
    (torch.float32, 1, 1, True), (torch.float32, 2, 1, True), (torch.float32, 2, 3, True),
    (torch.float32, 3, 3, False), (torch.bfloat16, 1, 3, True), (torch.bfloat16, 2, 3, True),
    (torch.float16, 2, 1, False), (torch.float16, 3, 2, True),
])
def test_decode_kernel_matches_reference(dtype, r, splits, paged):
    # lengths: a first token (t=0), a ring not yet full (t < W), a long one spanning many pages
    x = make_decode_inputs(dtype, r, [1, 4, 37], paged=paged, seed=r * 10 + splits)
    out = K.gswa_decode_triton(**x, num_splits=splits, min_keys_per_split=1)
    ref = K.gswa_decode_reference(**x)
    assert out.dtype == dtype and out.shape == x["q"].shape
    assert rel_err(out, ref) < TOL[dtype]


@needs_interp
def test_decode_kernel_r1_accepts_no_ring_and_repeats_exactly():
    """R=1 needs no ring; a split launch resets its counters, so a second launch gives the same bits."""
    x = make_decode_inputs(torch.float32, 1, [23, 9], seed=11)
    a = K.gswa_decode_triton(**x, num_splits=3, min_keys_per_split=1)
    b = K.gswa_decode_triton(**x, num_splits=3, min_keys_per_split=1)
    assert torch.equal(a, b)
    from loopcoder.model_server.kernels import triton_decode

    assert int(triton_decode._counters[a.device].abs().sum()) == 0
    assert rel_err(a, K.gswa_decode_reference(**x)) < 1e-5


@pytest.fixture
def poisoned_empty(monkeypatch):
    """torch.empty fills floating tensors with NaN: an output element or merged partial nothing wrote shows."""
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", empty)


@needs_interp
@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("splits,min_keys", [(2, 1), (5, 1), (16, 1), (5, 40), (64, 1)])
def test_decode_split_kv_with_empty_splits_and_short_contexts(r, splits, min_keys, poisoned_empty):
    """Split-KV against the reference: contexts shorter than one key tile (1, 3 keys; the interpreter's tile is
    16), exactly one tile, one tile + 1, many tiles; pages of 4 tokens in shuffled order; split counts that
    leave most splits empty (16 and 64 splits of <= 4 tiles), and a minimum of 40 keys (3 tiles) per split."""
    x = make_decode_inputs(torch.float32, r, [1, 3, 16, 17, 50], page=4, seed=20 + r * 7 + splits)
    assert not torch.equal(x["block_table"].flatten().sort().values, x["block_table"].flatten())  # out of order
    out = K.gswa_decode_triton(**x, num_splits=splits, min_keys_per_split=min_keys)
    assert not out.isnan().any()
    assert rel_err(out, K.gswa_decode_reference(**x)) < TOL[torch.float32]


def test_split_heuristic_splits_only_batches_that_leave_sms_idle():
    """choose_num_splits: a function of (request x KV head pairs, capacity, SM count) only, so one captured
    CUDA graph keeps one grid; no split once the pairs alone fill the SMs; no split shorter than the minimum."""
    from loopcoder.model_server.kernels import triton_decode as td

    cpu = torch.device("cpu")
    sms = td._num_sms(cpu)  # 8 off the GPU
    assert td.choose_num_splits(sms, 1 << 20, cpu) == 1
    assert td.choose_num_splits(4 * sms, 1 << 20, cpu) == 1
    assert td.choose_num_splits(1, 1 << 20, cpu) == td.PROGRAMS_PER_SM * sms
    assert td.choose_num_splits(2, 1 << 20, cpu) == td.PROGRAMS_PER_SM * sms // 2
    assert td.choose_num_splits(1, 3 * td.MIN_KEYS_PER_SPLIT, cpu) == 3
    assert td.choose_num_splits(1, 10, cpu) == 1


@needs_interp
def test_decode_contiguous_accepts_hf_layout_view():
    """An HF static cache is [B, G, S, D]; its transpose(1, 2) view goes in without a copy."""
    x = make_decode_inputs(torch.float32, 2, [5, 19], paged=False, seed=12)
    hf_k = x["k_cache"].transpose(1, 2).contiguous()
    hf_v = x["v_cache"].transpose(1, 2).contiguous()
    args = (x["q"], hf_k.transpose(1, 2), hf_v.transpose(1, 2), x["seq_lens"], x["ring_k"], x["ring_v"],
            x["ring_slots"], x["gate"])
    out = K.gswa_decode_contiguous_triton(*args, num_splits=2, min_keys_per_split=1)
    assert rel_err(out, K.gswa_decode_contiguous_reference(*args)) < 1e-5


@needs_interp
def test_decode_kernel_equals_prefill_kernel_on_the_last_token():
    """Same token through both kernels (bf16, group of 5, R=2): the two launches agree."""
    h, w, lk = 10, 5, 21
    gen = torch.Generator().manual_seed(13)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(torch.bfloat16)  # noqa: E731
    q, k0, v0, kl, vl = rnd(lk, h, D), rnd(lk, G, D), rnd(lk, G, D), rnd(lk, G, D), rnd(lk, G, D)
    gate = torch.rand(lk, h, generator=gen).to(torch.bfloat16)
    c = cu([lk])
    pre = K.gswa_prefill_triton(q, k0, v0, c, c, lk, lk, k_loc=kl, v_loc=vl, cu_seqlens_kl=c, gate=gate, window=w)
    ring_k = torch.empty(1, 1, w, G, D, dtype=torch.bfloat16)
    ring_v = torch.empty_like(ring_k)
    for p in range(lk):
        ring_k[0, 0, p % w], ring_v[0, 0, p % w] = kl[p], vl[p]
    qd = torch.stack([q[-1], q[-1]])[None]
    dec = K.gswa_decode_contiguous_triton(qd, k0[None], v0[None], torch.tensor([lk], dtype=torch.int32), ring_k,
                                          ring_v, torch.tensor([0], dtype=torch.int32), gate[-1][None, None],
                                          num_splits=2, min_keys_per_split=1)
    assert rel_err(dec[0, 1], pre[-1]) < TOL[torch.bfloat16]


def test_public_api_on_cpu_uses_the_cpu_paths():
    x = make_decode_inputs(torch.float32, 2, [6], seed=14)
    assert torch.equal(K.gswa_decode(**x), K.gswa_decode_cpu(**x))
    p = prefill_inputs(torch.float32, LQ, LK, LL, seed=15)
    assert torch.equal(run_prefill(K.gswa_prefill, p, True), run_prefill(K.gswa_prefill_cpu, p, True))


def test_unsupported_shapes_are_refused_with_a_message():
    x = prefill_inputs(torch.float32, [3], [3], [3], d=24)
    with pytest.raises(ValueError, match="head_dim 24"):
        run_prefill(K.gswa_prefill_triton, x, False)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        K.gswa_prefill_reference(torch.randn(3, 3, 16), torch.randn(3, 2, 16), torch.randn(3, 2, 16), cu([3]),
                                 cu([3]), 3, 3)


@needs_interp
@pytest.mark.parametrize("r", [1, 2])
def test_decode_kernel_reads_sglangs_pool_as_pages_of_one_token(r):
    """The SGLang plugin's layout (docs/sglang.md): the token pool viewed as [tokens, 1, G, D] and each
    request's req_to_token row (scattered token ids, wider than the sequence) as its block table."""
    x = make_decode_inputs(torch.float32, r, [1, 4, 37], paged=True, page=1, seed=7 + r)
    assert x["k_cache"].shape[1] == 1
    x["block_table"] = torch.cat([x["block_table"], torch.zeros(3, 20, dtype=torch.int32)], dim=1)  # max_ctx wide
    out = K.gswa_decode_triton(**x, num_splits=2, min_keys_per_split=1)
    ref = K.gswa_decode_reference(**x)
    assert rel_err(out, ref) < TOL[torch.float32]


@needs_interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rings", [False, True])
def test_rope_qkv_write_matches_reference(dtype, rings):
    """RoPE + K/V writes of decode rows: the kernel equals the PyTorch reference bit for bit (same
    roundings), writes exactly the rows whose index is >= 0, and leaves every other cache entry alone."""
    from loopcoder.model_server.kernels.triton_rope import rope_qkv_write_triton

    g = torch.Generator().manual_seed(11)
    batch, loops, slots, window, blocks = 3, 2, 4, 5, 6
    n = batch * loops
    qkv = torch.randn(n, (H + 2 * G) * D, generator=g).to(dtype)
    pos = torch.tensor([3, 17, 9])
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    emb = torch.cat([pos[:, None] * inv, pos[:, None] * inv], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    pool_index = torch.tensor([5, 30, 12, -1, -1, -1])
    ring_index = torch.tensor([-1, -1, -1, 2, 11, 19]) if rings else None
    outs = []
    for fn in (K.rope_qkv_write_reference, rope_qkv_write_triton):
        kp = torch.randn(blocks, 8, G, D, generator=torch.Generator().manual_seed(1)).to(dtype)
        vp = kp.clone() + 1
        kr = torch.randn(slots, 1, window, G, D, generator=torch.Generator().manual_seed(2)).to(dtype)
        vr = kr.clone() - 1
        before = [t.clone() for t in (kp, vp, kr, vr)]
        q = fn(qkv, cos, sin, H, G, D, kp, vp, pool_index, kr if rings else None, vr if rings else None, ring_index)
        outs.append((q, kp, vp, kr, vr, before))
    (q0, *caches0, before), (q1, *caches1, _) = outs
    # float32: bit for bit. bf16: the interpreter's float32 -> bf16 conversion does not round to nearest
    # (it differs from torch by one bf16 step); test_gswa_gpu checks the kernel on CUDA.
    same = torch.equal if dtype == torch.float32 else (lambda a, b: rel_err(a, b) < 1e-2)
    assert same(q0, q1)
    for a, b, old in zip(caches0, caches1, before):
        assert same(a, b)
    # the rows written changed, nothing else did
    kp, before_kp = caches1[0].view(-1, G, D), before[0].view(-1, G, D)
    changed = (kp != before_kp).flatten(1).any(1).nonzero().flatten().tolist()
    assert changed == [5, 12, 30]
    if not rings:
        assert torch.equal(caches1[2], before[2])
    # q of row b equals modeling.apply_rope on its token's cos/sin
    from loopcoder.model_server.plt.modeling import apply_rope
    qh = qkv[:, : H * D].view(n, H, 1, D)
    rows = torch.arange(n) % batch
    assert same(q1, apply_rope(qh, cos[rows][:, None], sin[rows][:, None])[:, :, 0])


@needs_interp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_and_silu_mul_match_reference(dtype, with_residual):
    """The decode layer's fused residual add + RMSNorm and SiLU * up against their PyTorch references (the
    model's PLTRMSNorm and MLP maths), at a width that is not a power of two (masked tail)."""
    from loopcoder.model_server.kernels.triton_norm import add_rms_norm_triton, silu_mul_triton
    from loopcoder.model_server.plt.modeling import PLTRMSNorm

    g = torch.Generator().manual_seed(5)
    n, d = 3, 80
    x = torch.randn(n, 1, d, generator=g).to(dtype)
    res = torch.randn(n, 1, d, generator=g).to(dtype) if with_residual else None
    norm = PLTRMSNorm(d, 1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(d, generator=g) + 0.5)
        out, h = add_rms_norm_triton(x, res, norm.weight, norm.eps)
        ref_h = x if res is None else x + res
        ref = norm(ref_h)
    same = torch.equal if dtype == torch.float32 else (lambda a, b: rel_err(a, b) < 1e-2)
    assert same(h, ref_h)
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 1e-2)
    assert torch.equal(K.add_rms_norm_reference(x, res, norm.weight, norm.eps)[0], ref)
    gu = torch.randn(n, 1, 2 * d, generator=g).to(dtype)
    ref_act = torch.nn.functional.silu(gu[..., :d]) * gu[..., d:]
    assert rel_err(silu_mul_triton(gu), ref_act) < (1e-6 if dtype == torch.float32 else 1e-2)
    assert same(K.silu_mul_reference(gu), ref_act)

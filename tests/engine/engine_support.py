"""Helpers of the engine tests: checkpoints whose loops really mix, and an engine that keeps its logits."""
from __future__ import annotations

import warnings

import torch

from loopcoder.model_server.engine import EngineConfig, LLMEngine
from loopcoder.model_server.plt.checkpoint import init_checkpoint, load_checkpoint


def mixing_checkpoint(path, shape: str, seed: int, **overrides):
    """A tiny checkpoint whose gates, norms and carry matter (what a random init hides).

    A fresh init has zero gate biases and gate weights of std 0.02, so every gate sits near 0.5 and
    swapping the global and local branches barely moves the output; the tiny shape's carry scale (0.053)
    and unit norm weights hide the carry and the norms the same way. Here the carry scale is 1, each
    layer's gate biases spread from -3 to 3 (gates from 0.05 to 0.95), gate weights N(0, 0.5), norm
    weights 1 + N(0, 0.3).
    """
    if shape.startswith("tiny"):
        overrides.setdefault("plt_hidden_scale", 1.0)
    init_checkpoint(path, shape, seed=seed, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_checkpoint(path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            rnd = torch.randn(p.shape, generator=gen)
            if "gate" in name and name.endswith(".bias") and "gate_proj" not in name:
                # every layer gets a gate near 0 and one near 1 (a draw could leave them all on one side)
                p.copy_(torch.linspace(-3.0, 3.0, p.shape[0])[torch.randperm(p.shape[0], generator=gen)])
            elif ("plt_gate.weight" in name or "gate_projections" in name) and p.ndim == 2:
                p.copy_(0.5 * rnd)
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * rnd)
    model.save_pretrained(path)
    return path


class LogitRecordingEngine(LLMEngine):
    """The real engine; every row of logits it samples from is also kept, keyed by request and position."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logits: dict[tuple[str, int], torch.Tensor] = {}

    def _sample(self, logits, seqs, decode=False):
        for row, seq in zip(logits, seqs):
            # the row predicts the token after the sequence's newest one (read or still on the device)
            self.logits[(seq.request_id, seq.next_position)] = row.detach().clone()
        return super()._sample(logits, seqs, decode)


def make_engine(path, num_loops=None, engine_cls=LLMEngine, **overrides):
    fields = dict(model=str(path), max_num_seqs=4, max_model_len=96, max_num_batched_tokens=32, block_size=4)
    fields.update(overrides)
    cfg = EngineConfig(num_loops=num_loops, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_checkpoint(path, num_loops=num_loops)
    return engine_cls(model, tok, cfg), model


def prompts(lengths, seed=0, vocab=4096):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def reference_logits(model, tokens: list[int], num_loops=None) -> torch.Tensor:
    """The model's own full forward (loops one after another over the whole sequence): [T, V] float32."""
    kwargs = {"num_loops": num_loops} if num_loops else {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model(torch.tensor([tokens]), use_cache=False, **kwargs).logits[0].float()


def run_plan(engine, plan, abort_after=None):
    """plan: [(arrival step, prompt, params, request id, fork ids)]; abort_after: {request id: n}: abort the
    request once its events brought n tokens (what the server does at a stop string, which it finds in the
    events). Returns {request id: (tokens, finish reason, (prompt_tokens, completion_tokens, cached_tokens)
    of the last event)}."""
    abort_after = abort_after or {}
    out = {}
    pending = sorted(plan, key=lambda p: p[0])
    step = 0
    while pending or engine.has_work():
        while pending and pending[0][0] <= step:
            _, prompt, params, rid, forks = pending.pop(0)
            engine.submit(prompt, params, rid, fork_ids=forks)
            for r in [rid, *forks]:
                out[r] = [[], None, None]
        for ev in engine.step():
            rec = out[ev.request_id]
            rec[0] += ev.token_ids
            if ev.finished:
                rec[1], rec[2] = ev.finish_reason, (ev.prompt_tokens, ev.completion_tokens, ev.cached_tokens)
            elif len(rec[0]) >= abort_after.get(ev.request_id, float("inf")):
                engine.abort(ev.request_id)
        step += 1
        assert step < 10_000, "the engine did not finish"
    return {rid: (tokens, finish, usage) for rid, (tokens, finish, usage) in out.items()}

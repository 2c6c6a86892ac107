"""Turn last-loop logits into next tokens: logit bias, penalties, grammar masks, greedy, temperature,
top-k, top-p, per-request seeds, and log-probabilities.

Every step is a batched tensor operation over the rows (per-row settings become [B] tensors, sparse
per-row entries such as biases and token counts one scatter), so the sampler survives moving onto the
GPU with the rest of the step. The host reads the result once (the chosen tokens, plus the logprobs
when a row asked for them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .grammar import apply_token_bitmask
from .sequence import Sequence
from .types import TokenLogprob


@dataclass
class Sampled:
    tokens: list[int]
    logprobs: list[TokenLogprob | None]
    chosen: torch.Tensor | None = None  # the same tokens on the logits' device, [B] int64


def sample(logits: torch.Tensor, seqs: list[Sequence], default_generator: torch.Generator,
           bitmask: torch.Tensor | None = None) -> Sampled:
    """logits [B, V] (float32, not modified) -> one token per sequence (and its logprobs if asked).

    ``bitmask`` [B, ceil(V/32)] int32: allowed tokens per row (grammar.py), or None.
    """
    chosen, logprobs = sample_on_device(logits, seqs, default_generator, bitmask)
    return Sampled(chosen.tolist(), logprobs, chosen)


def sample_on_device(logits: torch.Tensor, seqs: list[Sequence], default_generator: torch.Generator,
                     bitmask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[TokenLogprob | None]]:
    """``sample`` without reading the tokens: ([B] chosen ids on the logits' device, logprobs). Nothing here
    waits for the device (host values go up through pinned memory without blocking), so a CUDA caller can
    queue this behind a running forward; only logprobs, when a row asks for them, are read back at once."""
    raw = logits
    logits = _apply_logit_bias(logits, seqs)
    logits = _apply_penalties(logits, seqs)
    if bitmask is not None:
        logits = apply_token_bitmask(logits, bitmask)
    chosen = _choose(logits, seqs, default_generator)
    return chosen, _logprobs(raw, chosen, seqs)


def _upload(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small host list on ``device`` without waiting for the work queued there (a plain torch.tensor(...,
    device=cuda) copies from pageable memory and synchronises the stream)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _apply_logit_bias(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    rows, cols, vals = [], [], []
    for i, seq in enumerate(seqs):
        for token, bias in seq.params.logit_bias.items():
            rows.append(i)
            cols.append(token)
            vals.append(bias)
    if not rows:
        return logits
    dev = logits.device
    index = _upload([rows, cols], dev)
    return logits.index_put((index[0], index[1]), _upload(vals, dev, logits.dtype), accumulate=True)


def _apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """OpenAI's presence and frequency penalties over the tokens generated so far, and vLLM's
    repetition penalty over prompt and output (positive logits divided by it, negative multiplied)."""
    rows = [i for i, s in enumerate(seqs) if s.params.penalized]
    if not rows:
        return logits
    dev, vocab = logits.device, logits.shape[-1]
    out_rows = [r for n, i in enumerate(rows) for r in [n] * len(seqs[i].output_ids)]
    out_ids = [t for i in rows for t in seqs[i].output_ids]
    counts = torch.zeros(len(rows), vocab, device=dev)
    if out_ids:
        counts.index_put_((torch.tensor(out_rows, device=dev), torch.tensor(out_ids, device=dev)),
                          torch.ones(len(out_ids), device=dev), accumulate=True)
    params = [seqs[i].params for i in rows]
    freq = torch.tensor([p.frequency_penalty for p in params], device=dev)[:, None]
    pres = torch.tensor([p.presence_penalty for p in params], device=dev)[:, None]
    rep = torch.tensor([p.repetition_penalty for p in params], device=dev)[:, None]
    index = torch.tensor(rows, device=dev)
    sub = logits[index]
    if any(p.repetition_penalty != 1.0 for p in params):
        seen = counts > 0
        prompt_rows = [r for n, i in enumerate(rows) for r in [n] * len(seqs[i].prompt_ids)]
        prompt_ids = [t for i in rows for t in seqs[i].prompt_ids]
        seen[torch.tensor(prompt_rows, device=dev), torch.tensor(prompt_ids, device=dev)] = True
        sub = torch.where(seen, torch.where(sub > 0, sub / rep, sub * rep), sub)
    sub = sub - freq * counts - pres * (counts > 0)
    return logits.index_copy(0, index, sub)


def _choose(logits: torch.Tensor, seqs: list[Sequence], default_generator: torch.Generator) -> torch.Tensor:
    """[B] chosen token ids on the device: argmax for temperature 0, else a draw from the
    temperature-scaled distribution cut to top-k and top-p."""
    greedy = logits.argmax(-1)
    temps = [s.params.temperature for s in seqs]
    if all(t == 0 for t in temps):
        return greedy
    dev = logits.device
    t = _upload([max(x, 1e-5) for x in temps], dev)[:, None]
    scaled = logits / t
    vocab = logits.shape[-1]
    ks = _upload([s.params.top_k if 0 < s.params.top_k < vocab else vocab for s in seqs], dev)
    ps = _upload([s.params.top_p for s in seqs], dev)[:, None]
    sorted_logits, order = scaled.sort(-1, descending=True)
    rank = torch.arange(vocab, device=dev)[None]
    drop = rank >= ks[:, None]
    probs = sorted_logits.softmax(-1)
    drop |= (probs.cumsum(-1) - probs) >= ps  # keep the smallest prefix whose mass reaches top_p
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
    chosen = greedy.clone()
    # Rows without a seed share the engine's generator: one draw for all of them. A seeded row draws
    # from its own generator, so its tokens do not depend on what else is in the batch.
    shared = [i for i, s in enumerate(seqs) if s.params.temperature > 0 and s.generator is None]
    if shared:
        index = _upload(shared, dev)
        picks = torch.multinomial(probs[index], 1, generator=default_generator)
        chosen[index] = order[index].gather(1, picks)[:, 0]
    for i, seq in enumerate(seqs):
        if seq.params.temperature > 0 and seq.generator is not None:
            pick = torch.multinomial(probs[i], 1, generator=seq.generator)
            chosen[i] = order[i].gather(0, pick)[0]  # not order[i, pick[0]]: a tensor index is read on the host
    return chosen


def _logprobs(raw: torch.Tensor, chosen: torch.Tensor, seqs: list[Sequence]) -> list[TokenLogprob | None]:
    rows = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
    out: list[TokenLogprob | None] = [None] * len(seqs)
    if not rows:
        return out
    index = torch.tensor(rows, device=raw.device)
    logp = raw[index].float().log_softmax(-1)
    picked = logp.gather(1, chosen[index][:, None])[:, 0].tolist()
    k = max(seqs[i].params.logprobs for i in rows)
    top_values, top_ids = logp.topk(k, dim=-1) if k else (logp[:, :0], logp[:, :0].long())
    top_values, top_ids = top_values.tolist(), top_ids.tolist()
    tokens = chosen[index].tolist()
    for n, i in enumerate(rows):
        want = seqs[i].params.logprobs
        out[i] = TokenLogprob(tokens[n], picked[n], list(zip(top_ids[n][:want], top_values[n][:want])))
    return out

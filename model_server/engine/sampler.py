"""Turn last-loop logits into next tokens: greedy, temperature, top-k, top-p, per-request seeds."""
from __future__ import annotations

import torch

from .sequence import Sequence


def sample(logits: torch.Tensor, seqs: list[Sequence], default_generator: torch.Generator) -> list[int]:
    """logits [B, V] (float32) -> one token id per sequence."""
    temps = [s.params.temperature for s in seqs]
    if all(t == 0 for t in temps):
        return logits.argmax(-1).tolist()
    greedy = logits.argmax(-1)
    dev = logits.device
    t = torch.tensor([max(x, 1e-5) for x in temps], device=dev)[:, None]
    scaled = logits / t
    vocab = logits.shape[-1]
    ks = torch.tensor([s.params.top_k if 0 < s.params.top_k < vocab else vocab for s in seqs], device=dev)
    ps = torch.tensor([s.params.top_p for s in seqs], device=dev)[:, None]
    sorted_logits, order = scaled.sort(-1, descending=True)
    rank = torch.arange(vocab, device=dev)[None]
    drop = rank >= ks[:, None]
    probs = sorted_logits.softmax(-1)
    drop |= (probs.cumsum(-1) - probs) >= ps  # keep the smallest prefix whose mass reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    probs = sorted_logits.softmax(-1)
    out = []
    for i, seq in enumerate(seqs):
        if seq.params.temperature == 0:
            out.append(int(greedy[i]))
            continue
        gen = seq.generator or default_generator
        pick = torch.multinomial(probs[i], 1, generator=gen)
        out.append(int(order[i, pick]))
    return out

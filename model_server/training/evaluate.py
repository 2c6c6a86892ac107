"""Perplexity of a model on a text: how the upcycling init and training are judged (docs/nano.md)."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def perplexity(model, token_ids: list[int], window: int = 1024, num_loops: int | None = None) -> float:
    """exp(mean next-token loss) over ``token_ids`` cut into windows of ``window`` tokens (each window
    a fresh sequence; its first token is not predicted)."""
    total, count = 0.0, 0
    kwargs = {"num_loops": num_loops} if num_loops else {}
    device = next(model.parameters()).device
    for start in range(0, len(token_ids) - 1, window):
        chunk = torch.tensor([token_ids[start:start + window]], device=device)
        if chunk.shape[1] < 2:
            break
        logits = model(chunk, use_cache=False, **kwargs).logits[0].float()
        loss = torch.nn.functional.cross_entropy(logits[:-1], chunk[0, 1:], reduction="sum")
        total += loss.item()
        count += chunk.shape[1] - 1
    return math.exp(total / count)

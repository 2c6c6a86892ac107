"""Personalised PageRank by power iteration over a weighted edge list (numpy; graphs of a few thousand files)."""
from __future__ import annotations

import numpy as np


def pagerank(n: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray,
             personalization: np.ndarray | None = None, alpha: float = 0.85,
             tol: float = 1e-8, max_iter: int = 200) -> np.ndarray:
    """Stationary distribution of the random surfer on ``n`` nodes; sums to 1.

    Edges ``src[i] -> dst[i]`` carry ``weight[i]`` (parallel edges add). The surfer teleports, and leaves
    dangling nodes, according to ``personalization`` (uniform when None or all zero).
    """
    if n == 0:
        return np.zeros(0)
    p = np.ones(n) if personalization is None else np.asarray(personalization, dtype=float).copy()
    if p.sum() <= 0:
        p = np.ones(n)
    p /= p.sum()
    out_w = np.bincount(src, weights=weight, minlength=n)
    dangling = out_w == 0
    share = weight / np.where(out_w[src] > 0, out_w[src], 1.0)
    rank = p.copy()
    for _ in range(max_iter):
        flow = np.bincount(dst, weights=rank[src] * share, minlength=n)
        new = alpha * (flow + rank[dangling].sum() * p) + (1 - alpha) * p
        done = np.abs(new - rank).sum() < n * tol
        rank = new
        if done:
            break
    return rank / rank.sum()

"""Loop diagnostics: what each loop of a looped model does to the representation, measured per loop.

The LoopCoder-v2 paper names these diagnostics but its formulas were not retrievable; the definitions
here are the operational ones of plt_spec.md section 9.2 (labelled as ours in docs/model.md). All are
computed from one full forward with R = max(requested loops); loop k (1-based) is loop index k-1.
Loop outputs are the residual stream after the last layer of that loop, before any norm.

- step_size:        mean over tokens of ||h_k - h_{k-1}|| / ||h_{k-1}|| (h_0 = the token embedding)
- update_alignment: mean cos(h_k - h_{k-1}, h_{k-1} - h_{k-2}); negative means the loops oscillate
- output_kl:        mean KL(p_k || p_{k-1}), p_k = softmax(lm_head(norm(h_k))), the logits loop k would emit
- effective_rank:   exp(entropy of the normalised singular values) of the tokens x d matrix h_k
- attention_entropy: mean entropy (nats) of the attention rows over the shared loop-0 keys
                    (loop 1: its causal self-attention; later loops: the global branch)
- attention_change: mean Jensen-Shannon divergence (nats) between a head's rows in loop k and loop k-1
- clp_offset_cost:  mean 1 - cos(H_{k-1}(t-1), H_{k-1}(t)) for PLT: how far the carried state
                    (previous slot) is from the state of the slot it is merged into (the CLP shift)
- gate_per_layer:   mean gate g (share of the global branch) per layer, loops >= 2
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .configuration import LoopSpec


@dataclass
class LoopStats:
    loop: int
    step_size: float
    update_alignment: float | None
    output_kl: float | None
    effective_rank: float
    attention_entropy: float
    attention_change: float | None
    clp_offset_cost: float | None
    gate_per_layer: list[float] = field(default_factory=list)


class _Probe:
    """Collects what the forward reports, reducing attention rows to scalars as they arrive."""

    def __init__(self):
        self.outputs: dict[int, torch.Tensor] = {}
        self.entropy: dict[int, list[float]] = {}
        self.change: dict[int, list[float]] = {}
        self.gates: dict[int, dict[int, float]] = {}
        self._prev_probs: dict[int, torch.Tensor] = {}

    def on_attention(self, loop, layer, probs):
        probs = probs.float()
        self.entropy.setdefault(loop, []).append(_entropy(probs).mean().item())
        if loop > 0:
            self.change.setdefault(loop, []).append(_js(self._prev_probs[layer], probs).mean().item())
        self._prev_probs[layer] = probs

    def on_gate(self, loop, layer, gate):
        self.gates.setdefault(loop, {})[layer] = gate.float().mean().item()

    def on_loop_output(self, loop, hidden):
        self.outputs[loop] = hidden.float()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    return 0.5 * ((p * (torch.log(p.clamp_min(1e-30)) - torch.log(m.clamp_min(1e-30)))).sum(-1)
                  + (q * (torch.log(q.clamp_min(1e-30)) - torch.log(m.clamp_min(1e-30)))).sum(-1))


def _effective_rank(h: torch.Tensor) -> float:
    s = torch.linalg.svdvals(h.double())
    p = s / s.sum()
    return float(torch.exp(_entropy(p)))


@torch.no_grad()
def diagnose(model, input_ids: torch.Tensor, loops: list[int]) -> list[LoopStats]:
    """Per-loop statistics for the requested (1-based) loops of one sequence ``input_ids`` [1, T]."""
    num_loops = max(loops)
    probe = _Probe()
    model(input_ids, num_loops=num_loops, probe=probe, use_cache=False)
    inner = model.model
    spec = LoopSpec.from_config(model.config, num_loops, warn=False)
    embeds = inner.embed_tokens(input_ids).float()[0]
    outputs = [probe.outputs[r][0] for r in range(num_loops)]
    logprobs = [F.log_softmax(model.lm_head(inner.norm(h.to(model.dtype))).float(), -1) for h in outputs]
    stats = []
    for r in range(num_loops):
        prev = outputs[r - 1] if r else embeds
        delta = outputs[r] - prev
        step = (delta.norm(dim=-1) / prev.norm(dim=-1).clamp_min(1e-12)).mean().item()
        align = None
        if r >= 1:
            prev_delta = outputs[r - 1] - (outputs[r - 2] if r >= 2 else embeds)
            align = F.cosine_similarity(delta, prev_delta, dim=-1).mean().item()
        kl = None
        if r >= 1:
            kl = (logprobs[r].exp() * (logprobs[r] - logprobs[r - 1])).sum(-1).mean().item()
        offset = None
        if r >= 1 and spec.clp and outputs[r - 1].shape[0] > 1:
            carried = inner.norm(outputs[r - 1].to(model.dtype)).float() if spec.normalize_per_loop else outputs[r - 1]
            offset = (1 - F.cosine_similarity(carried[:-1], carried[1:], dim=-1)).mean().item()
        gates = probe.gates.get(r, {})
        stats.append(LoopStats(
            loop=r + 1, step_size=step, update_alignment=align, output_kl=kl,
            effective_rank=_effective_rank(outputs[r]),
            attention_entropy=sum(probe.entropy[r]) / len(probe.entropy[r]),
            attention_change=(sum(probe.change[r]) / len(probe.change[r])) if r in probe.change else None,
            clp_offset_cost=offset,
            gate_per_layer=[gates[i] for i in sorted(gates)],
        ))
    return [s for s in stats if s.loop in loops]


def write_json(stats: list[LoopStats], path: str | Path, meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, "loops": [asdict(s) for s in stats]}, indent=2) + "\n")


def plot(stats: list[LoopStats], path: str | Path, title: str) -> None:
    """A 2x4 grid: one panel per scalar statistic against the loop, and the gate per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["step_size", "update_alignment", "output_kl", "effective_rank", "attention_entropy",
             "attention_change", "clp_offset_cost"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, name in zip(axes.flat, names):
        xs = [s.loop for s in stats if getattr(s, name) is not None]
        ys = [getattr(s, name) for s in stats if getattr(s, name) is not None]
        ax.plot(xs, ys, marker="o")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("loop")
        ax.set_xticks([s.loop for s in stats])
    gate_ax = axes.flat[-1]
    for s in stats:
        if s.gate_per_layer:
            gate_ax.plot(range(len(s.gate_per_layer)), s.gate_per_layer, marker=".", label=f"loop {s.loop}")
    layers = max((len(s.gate_per_layer) for s in stats), default=0)
    gate_ax.set_xticks(range(layers))
    gate_ax.set_title("mean gate (global share) per layer")
    gate_ax.set_xlabel("layer")
    if any(s.gate_per_layer for s in stats):
        gate_ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

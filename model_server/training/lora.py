"""Low-rank adapters (LoRA, Hu et al. 2021) on the attention and MLP projections, written out in full.

``LoRALinear`` wraps a frozen ``nn.Linear``: y = W x + (alpha / r) * B (A x). A starts small and random,
B at zero, so a fresh adapter changes nothing. ``merge_into_state`` folds (alpha / r) B A into W in a
plain state dict: the merged model has the original parameter names and no adapter code.
"""
from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as the LoRA paper's code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + (self.scale * delta).to(x.dtype)


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = TARGETS) -> list[str]:
    """Wrap every Linear named in ``targets`` (by its last name part) in a LoRALinear; returns their names."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"no Linear named {', '.join(targets)} to adapt")
    return wrapped


def merge_into_state(state: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor], scale: float) -> None:
    """W += scale * B A for each adapter pair, in a plain state dict (``<module>.weight`` keys)."""
    for key in sorted(k for k in adapters if k.endswith(".lora_A")):
        module = key[:-len(".lora_A")]
        weight = f"{module}.weight"
        if weight not in state or f"{module}.lora_B" not in adapters:
            raise KeyError(module)
        a, b = adapters[key].float(), adapters[f"{module}.lora_B"].float()
        w = state[weight]
        state[weight] = (w.float() + scale * (b @ a)).to(w.dtype)

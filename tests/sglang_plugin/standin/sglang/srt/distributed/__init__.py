"""Stand-in of sglang.srt.distributed: tensor-parallel rank and collectives for ranks simulated as
threads of one process (each thread sets its rank with ``set_rank``; collectives meet at a barrier)."""
from __future__ import annotations

import threading

import torch

_local = threading.local()


class Group:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list = [None] * size

    def exchange(self, rank: int, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = tensor
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return out


def set_rank(rank: int, group: Group | None) -> None:
    _local.rank, _local.group = rank, group


def get_tensor_model_parallel_rank() -> int:
    return getattr(_local, "rank", 0)


def get_tensor_model_parallel_world_size() -> int:
    group = getattr(_local, "group", None)
    return 1 if group is None else group.size


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    group = getattr(_local, "group", None)
    if group is None:
        return x
    return torch.stack(group.exchange(_local.rank, x)).sum(0)


def tensor_model_parallel_all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    group = getattr(_local, "group", None)
    if group is None:
        return x
    return torch.cat(group.exchange(_local.rank, x), dim=dim)

"""Stand-in of sglang.srt.model_loader.weight_utils.default_weight_loader (same contract: shapes must match)."""
import torch


def default_weight_loader(param: torch.Tensor, loaded_weight: torch.Tensor) -> None:
    assert param.size() == loaded_weight.size(), f"{loaded_weight.size()} into {param.size()}"
    param.data.copy_(loaded_weight)

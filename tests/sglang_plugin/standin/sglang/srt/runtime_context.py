"""Stand-in of sglang.srt.runtime_context.get_parallel: tp_rank / tp_size of the calling (thread) rank."""
from sglang.srt.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size


class _Parallel:
    @property
    def tp_rank(self) -> int:
        return get_tensor_model_parallel_rank()

    @property
    def tp_size(self) -> int:
        return get_tensor_model_parallel_world_size()


def get_parallel() -> _Parallel:
    return _Parallel()

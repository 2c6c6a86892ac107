"""Stand-in of sglang.srt.model_executor.forward_context: the pools of the forward in progress.

SGLang 0.5.23's ModelRunner publishes a ForwardContext (its attention backend, which holds the pools)
around each forward; models read the pools with get_token_to_kv_pool() / get_req_to_token_pool(). Here
the test scheduler publishes them with ``use_pools``; thread-local because the tests simulate
tensor-parallel ranks as threads of one process (SGLang runs one rank per process).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def use_pools(req_to_token_pool, token_to_kv_pool):
    prev = getattr(_local, "pools", None)
    _local.pools = (req_to_token_pool, token_to_kv_pool)
    try:
        yield
    finally:
        _local.pools = prev


def get_token_to_kv_pool():
    assert getattr(_local, "pools", None) is not None, "no forward context active"
    return _local.pools[1]


def get_req_to_token_pool():
    assert getattr(_local, "pools", None) is not None, "no forward context active"
    return _local.pools[0]

"""Kernel tests: on a machine without CUDA, run the Triton kernels under the interpreter.

TRITON_INTERPRET must be set before triton is first imported; the kernels package imports triton lazily, so
setting it here, at collection of this folder, is early enough unless another module imported triton first
(test_gswa_interpret.py then re-runs itself in a subprocess).
"""

import os
import sys


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if "triton" not in sys.modules and not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

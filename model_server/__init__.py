"""Serving LoopCoder models: the PLT model (HF-compatible), kernels, native engine, API server.

Importing this package registers both model types with transformers, so that
``AutoConfig.from_pretrained(dir)`` and ``AutoModelForCausalLM.from_pretrained(dir)`` load them
without ``trust_remote_code``.
"""
from . import plt  # noqa: F401  (registration side effect)

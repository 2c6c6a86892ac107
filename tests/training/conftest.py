"""Fixtures of the training tests: a tiny Llama GGUF and its tokenizer (nano_support.write_tiny_gguf)."""
from __future__ import annotations

import pytest

from loopcoder.model_server.training.base_model import read_gguf, write_tokenizer

from nano_support import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tokenizer(tiny_gguf, tmp_path_factory):
    from loopcoder.model_server.plt.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("tok")
    write_tokenizer(read_gguf(tiny_gguf), out)
    return load_tokenizer(out)

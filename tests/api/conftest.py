"""Real servers on loopback for the API tests: the native engine, uvicorn on a free port, tiny checkpoints.

`tiny_server` serves a random-weight tiny checkpoint. `trained_server` serves a tiny checkpoint whose
output layer was fitted (a few seconds) to answer six fixed conversations exactly: a tool call, the
answer after the tool's result, a forced (named) tool call, a thinking-mode answer, two calls in one
answer, and call syntax written with no tools offered (which must stay text). That is how
the tool-call and thinking tests get deterministic model output without mocking anything: the engine
really generates those tokens, and the server really parses them.
"""
from __future__ import annotations

import pytest

from api_support import TRAINED_CONVERSATIONS, fit_conversations, start_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from loopcoder.model_server.plt.checkpoint import init_checkpoint

    return init_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="session")
def tiny_server(tiny_checkpoint):
    server = start_server(tiny_checkpoint, max_model_len=1024)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    from loopcoder.model_server.plt.checkpoint import init_checkpoint

    path = init_checkpoint(tmp_path_factory.mktemp("trained"), "tiny")
    fit_conversations(path, TRAINED_CONVERSATIONS)
    return path


@pytest.fixture(scope="session")
def trained_server(trained_checkpoint):
    server = start_server(trained_checkpoint, max_model_len=1024)
    yield server
    server.stop()


@pytest.fixture
def client(tiny_server):
    import openai

    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def trained_client(trained_server):
    import openai

    return openai.OpenAI(base_url=trained_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)

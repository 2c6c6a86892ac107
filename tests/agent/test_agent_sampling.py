"""Sampling settings of the agent's model config reach the server: frequency_penalty (the repetition guard
of configs/nano_agent.yaml) is sent when set and left out at 0; the native server accepts it."""
import pytest

from agent_support import config, episode
from scripted_server import ScriptedServer


@pytest.fixture
def proxy(tiny_native_server):
    with ScriptedServer(upstream=tiny_native_server.url + "/v1") as server:
        yield server


@pytest.mark.parametrize("penalty", [0.0, 0.4])
def test_frequency_penalty_is_sent_when_set(proxy, repo, tmp_path, penalty):
    cfg = config(proxy.url, planner__thinking=False, model__max_tokens=24, budgets__steps=2,
                 model__frequency_penalty=penalty)
    result, _ = episode(cfg, repo, tmp_path / "run")
    assert result.reason in ("steps", "format_errors")  # the native server answered every request
    assert len(proxy.requests) == 2
    if penalty:
        assert all(r["frequency_penalty"] == penalty for r in proxy.requests)
    else:
        assert all("frequency_penalty" not in r for r in proxy.requests)

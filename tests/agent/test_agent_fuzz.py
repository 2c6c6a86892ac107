"""Fuzz: episodes on the native server with a random tiny checkpoint, sampled, in both modes, thinking on and
off. Whatever the model writes, each episode ends with a recorded stop reason, never a traceback."""
import pytest

from loopcoder.agent.trajectory import read_trajectory

from agent_support import config, episode, of_type

EXPECTED = {"steps", "format_errors", "no_plan", "output_tokens", "context_exceeded", "submitted"}


def fuzz_episode(url, repo, out, seed, sandbox=None, steps=3):
    # modes, thinking and limits vary with the seed so that different stops are reached
    cfg = config(url, mode="single" if seed % 2 else "plan", model__temperature=1.0, model__seed=seed,
                 model__max_tokens=48, budgets__steps=steps, planner__thinking=seed % 3 == 0,
                 executor__thinking=seed % 4 == 0, max_format_errors=2 if seed % 3 == 0 else 10,
                 budgets__output_tokens=60 if seed % 5 == 0 else None)
    result, events = episode(cfg, repo, out, sandbox=sandbox)
    assert result.reason in EXPECTED, (result.reason, result.detail)
    assert events[0].type == "header" and events[-1].type == "stop" and events[-1].reason == result.reason
    assert read_trajectory(result.trajectory) == events
    assert of_type(events, "model_response")  # the model really answered
    return result


@pytest.mark.parametrize("seed", [0, 1])  # a plan and a single episode; twenty in the slow test below
def test_random_model_episodes_end_with_a_stop_reason(tiny_native_server, repo, tmp_path, seed):
    fuzz_episode(tiny_native_server.url + "/v1", repo, tmp_path / "run", seed, steps=2)


@pytest.mark.slow
@pytest.mark.docker
def test_twenty_random_model_episodes_in_docker_end_with_a_stop_reason(tiny_native_server, repo, tmp_path,
                                                                     open_sandbox):
    reasons = [fuzz_episode(tiny_native_server.url + "/v1", repo, tmp_path / f"run{seed}", 100 + seed,
                            sandbox=open_sandbox).reason for seed in range(20)]
    print("stop reasons:", {r: reasons.count(r) for r in set(reasons)})

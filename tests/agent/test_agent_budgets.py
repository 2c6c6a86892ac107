"""Each budget stops the episode before the next model call, and the patch made so far is kept."""
import pytest

from loopcoder.agent.config import Price
from loopcoder.configs import ConfigError

from agent_support import FIX_NEW, FIX_OLD, config, episode, of_type
from scripted_server import call

VIEW = call("view", {"path": "stats.py"}, usage=(1000, 400))


@pytest.mark.parametrize("budget, value, reason, calls", [
    ("steps", 2, "steps", 2),
    ("input_tokens", 2500, "input_tokens", 3),    # 1000 prompt tokens per answer
    ("output_tokens", 1000, "output_tokens", 3),  # 400 completion tokens per answer
    ("cost_usd", 0.25, "cost", 2),                # $0.1 + $0.04 per answer at the prices below
])
def test_budget_stops_before_the_next_call(scripted, repo, tmp_path, budget, value, reason, calls):
    server = scripted([VIEW] * 6)
    cfg = config(server.url, mode="single", budgets__steps=None, budgets__wall_time_s=None)
    cfg.prices = {"scripted": Price(input_per_mtok=100.0, output_per_mtok=100.0)}
    setattr(cfg.budgets, budget, value)
    result, events = episode(cfg, repo, tmp_path / "run")
    assert (result.reason, len(server.requests)) == (reason, calls)
    stop = of_type(events, "stop")[-1]
    assert stop.reason == reason and stop.step == calls
    assert stop.stats["budget"]["input_tokens"] == 1000 * calls
    assert stop.stats["budget"]["cost_usd"] == pytest.approx(0.14 * calls)


def test_output_budget_also_caps_max_tokens_of_the_last_call(scripted, repo, tmp_path):
    server = scripted([VIEW] * 3)
    result, _ = episode(config(server.url, mode="single", budgets__output_tokens=1000), repo, tmp_path / "run")
    assert [r["max_tokens"] for r in server.requests] == [1000, 600, 200]
    assert result.reason == "output_tokens"


def test_wall_time_budget(scripted, repo, tmp_path):
    server = scripted([dict(VIEW, delay=0.6)] * 4)
    result, _ = episode(config(server.url, mode="single", budgets__wall_time_s=1.0), repo, tmp_path / "run")
    assert result.reason == "wall_time" and len(server.requests) == 2
    assert result.budget["wall_time_s"] >= 1.0


def test_a_budget_stop_keeps_the_patch_made_so_far(scripted, repo, tmp_path):
    server = scripted([call("str_replace", {"path": "stats.py", "old_str": FIX_OLD, "new_str": FIX_NEW}), VIEW])
    result, events = episode(config(server.url, mode="single", budgets__steps=2), repo, tmp_path / "run")
    assert result.reason == "steps"
    patch = (tmp_path / "run" / "patch.diff").read_text()
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2" in patch
    assert of_type(events, "stop")[0].patch.files == ["stats.py"] and result.patch.verified


def test_a_planner_that_never_writes_a_plan_stops_with_no_plan(scripted, repo, tmp_path):
    server = scripted([VIEW] * 5)
    result, _ = episode(config(server.url, planner__max_steps=3), repo, tmp_path / "run")
    assert result.reason == "no_plan" and len(server.requests) == 3


def test_a_cost_budget_without_a_price_for_the_model_is_a_config_error(scripted, repo, tmp_path):
    server = scripted([VIEW])
    with pytest.raises(ConfigError, match="prices has no entry for model 'scripted'"):
        episode(config(server.url, budgets__cost_usd=1.0), repo, tmp_path / "run")

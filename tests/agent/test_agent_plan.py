"""The plan: write_plan validates as a Plan, the executor reports steps with update_plan, and goes back to the
planner when a step fails twice or when it asks to (within max_replans)."""
from agent_support import PLAN, config, episode, of_type
from scripted_server import call

NEW_PLAN = {"steps": [{"goal": "rewrite median", "files": ["stats.py"], "verify": "python3 -m unittest"},
                      {"goal": "run the tests", "files": [], "verify": "all pass"}]}


def failed(note):
    return call("update_plan", {"step": 1, "status": "failed", "note": note})


def test_a_plan_that_does_not_validate_is_refused_with_the_reason(scripted, repo, tmp_path):
    server = scripted([call("write_plan", {"steps": [{"goal": "fix"}]}), call("write_plan", {"steps": []}),
                       call("write_plan", PLAN), call("submit", {})])
    result, events = episode(config(server.url), repo, tmp_path / "run")
    assert result.reason == "submitted"
    assert "missing required argument 'steps.0.verify'" in server.requests[1]["messages"][-1]["content"]
    assert "steps: List should have at least 1 item" in server.requests[2]["messages"][-1]["content"]
    assert [e.action for e in of_type(events, "plan")] == ["written"]
    executor_first = server.requests[3]["messages"]
    assert executor_first[1]["content"].endswith("Plan:\n1. [ ] average the two middle values [stats.py] "
                                                 "(verify: python3 -m unittest)")


def test_a_step_failing_twice_sends_the_task_back_to_the_planner(scripted, repo, tmp_path):
    server = scripted([call("write_plan", PLAN), failed("off by one"), failed("still wrong"),
                       call("view", {"path": "stats.py"}), call("write_plan", NEW_PLAN),
                       call("update_plan", {"step": 1, "status": "done"}), call("submit", {})])
    result, events = episode(config(server.url), repo, tmp_path / "run")
    assert result.reason == "submitted" and result.stats["replans"] == 1
    assert [(e.phase, e.reason) for e in of_type(events, "phase")] == [
        ("planner", "start"), ("executor", "start"), ("planner", "replan"), ("executor", "resume")]
    assert [e.action for e in of_type(events, "plan")] == ["written", "updated", "replan", "written", "updated"]
    replan_request = server.requests[3]["messages"]
    assert [m["role"] for m in replan_request] == ["system", "user"]  # a fresh planner conversation
    assert "This plan did not work:\n1. [!] average the two middle values" in replan_request[1]["content"]
    assert "Why: step 1 failed 2 times: still wrong" in replan_request[1]["content"]
    back = server.requests[5]["messages"]  # the executor continues its own conversation with the new plan
    assert back[-1]["content"].startswith("The plan was revised:\n1. [ ] rewrite median")
    assert len(back) > len(server.requests[2]["messages"])


def test_the_executor_can_ask_for_a_new_plan_and_re_plans_are_bounded(scripted, repo, tmp_path):
    ask = call("update_plan", {"step": 1, "status": "in_progress", "note": "the plan misses a file", "replan": True})
    server = scripted([call("write_plan", PLAN), ask, call("write_plan", PLAN), ask, call("submit", {})])
    result, events = episode(config(server.url, max_replans=1), repo, tmp_path / "run")
    assert result.reason == "submitted" and result.stats["replans"] == 1
    assert "Why: the executor asked for a new plan: the plan misses a file" in server.requests[2]["messages"][1]["content"]
    assert server.requests[4]["messages"][-1]["content"].endswith("no re-plans left: carry on with this plan")

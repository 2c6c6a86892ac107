"""Terminal tasks end to end: real images, real task containers, real tests; the model-driven agent talks to a
scripted model over HTTP on 127.0.0.1. Nothing here replaces the runtime, the agent or the tests.

Default suite: the CLI's oracle on one task of each format, tests that time out, a Dockerfile that does not
build, an agent that plants fake tests and rewards and kills the shell. Slow: oracle and no-op on every
bundled task, an agent that kills every process and leaves one deleting the tests, concurrent trials, an
agent timeout, an unpullable FROM, a build past its timeout.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from loopcoder.scenarios.cli import main
from loopcoder.scenarios.terminal.agents import LoopCoderAgent, make_agent
from loopcoder.scenarios.terminal.run import bundled_tasks, run_tasks
from loopcoder.scenarios.terminal.tasks import load_task

from terminal_support import BUNDLED

pytestmark = pytest.mark.docker


def run(paths, tmp_path: Path, docker_client, agent="oracle", agent_factory=None, **kw):
    tasks = [load_task(p) for p in paths]
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    records, table = run_tasks(tasks, agent_factory or (lambda: make_agent(agent)), out, client=docker_client, **kw)
    return {r.task.name: r for r in records}, records, table, out


def result_file(rec) -> dict:
    name = "results.json" if rec.task.generation == "1.x" else "result.json"
    return json.loads((rec.trial_dir / name).read_text())


def no_containers_left(docker_client, task_name: str) -> bool:
    return not docker_client.api.containers(all=True, filters={"label": f"loopcoder.task={task_name}"})


def test_cli_oracle_resolves_a_task_of_each_format(base_image, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["terminal", "run", str(BUNDLED / "hello-file"), str(BUNDLED / "setup-permissions"), "--agent", "oracle",
              "--n-concurrent", "2", "--output", str(out)])
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "| hello-file | 1.x | oracle | yes | 2/2 tests | none |" in printed
    assert "| setup-permissions | 2.0 | oracle | yes | reward 1 | none |" in printed
    assert "resolved 2 of 2 trials (100%)" in printed
    (v1,) = (out / "hello-file").glob("hello-file.1-of-1.*/results.json")
    d1 = json.loads(v1.read_text())
    assert d1["is_resolved"] is True and d1["failure_mode"] == "none"
    assert d1["parser_results"] == {"check_file_exists": "passed", "check_exact_content": "passed"}
    (v2,) = (out / "setup-permissions").glob("setup-permissions__*/result.json")
    d2 = json.loads(v2.read_text())
    assert d2["verifier_result"] == {"rewards": {"reward": 1.0}} and d2["exception_info"] is None
    assert d2["loopcoder"]["workdir"] == "/srv/site"  # [environment] workdir, not the base image's
    assert (v2.parent / "verifier" / "reward.txt").read_text().strip() == "1"
    agg = json.loads((out / "results.json").read_text())  # the 1.x trials, terminal-bench's aggregate
    assert agg["n_resolved"] == 1 and agg["accuracy"] == 1.0 and agg["resolved_ids"] == ["hello-file"]
    assert json.loads((out / "summary.json").read_text())["n_resolved"] == 2


def test_tests_that_time_out(docker_client, base_image, tmp_path, task_copy):
    v1 = task_copy("hello-file", f"slow-tests-{uuid.uuid4().hex[:6]}")
    (v1 / "task.yaml").write_text((v1 / "task.yaml").read_text().replace("max_test_timeout_sec: 30.0",
                                                                         "max_test_timeout_sec: 2.0"))
    (v1 / "run-tests.sh").write_text("#!/bin/bash\nsleep 120\nbash \"$TEST_DIR/test_outputs.sh\"\n")
    v2 = task_copy("status-report", f"slow-verifier-{uuid.uuid4().hex[:6]}")
    (v2 / "task.toml").write_text((v2 / "task.toml").read_text().replace("timeout_sec = 60.0", "timeout_sec = 2.0"))
    (v2 / "tests" / "test.sh").write_text("#!/bin/bash\nsleep 120\necho 1 > /logs/verifier/reward.txt\n")
    by, _, table, _ = run([v1, v2], tmp_path, docker_client, n_concurrent=2)
    r1, r2 = by[v1.name], by[v2.name]
    assert r1.test_timed_out and r1.failure_mode == "test_timeout" and not r1.resolved
    assert result_file(r1)["is_resolved"] is None and result_file(r1)["failure_mode"] == "test_timeout"
    assert r1.seconds["tests"] < 15 and r1.agent_run.failure == "none"  # the oracle had solved it
    d2 = result_file(r2)
    assert d2["verifier_result"] is None and d2["exception_info"]["exception_type"] == "VerifierTimeoutError"
    assert r2.seconds["tests"] < 15
    assert no_containers_left(docker_client, v1.name) and no_containers_left(docker_client, v2.name)


def test_dockerfile_that_fails_to_build(docker_client, base_image, tmp_path, task_copy):
    broken = task_copy("hello-file", f"broken-build-{uuid.uuid4().hex[:6]}")
    (broken / "Dockerfile").write_text("FROM loopcoder/base:bookworm\nWORKDIR /app\nRUN echo building && exit 3\n")
    by, _, table, out = run([broken, BUNDLED / "hello-file"], tmp_path, docker_client)
    bad = by[broken.name]
    assert not bad.resolved and bad.failure_mode == "unknown" and bad.agent_run is None
    assert "did not build" in bad.error and "3" in bad.error
    d = result_file(bad)
    assert d["is_resolved"] is None and d["loopcoder"]["error"] == bad.error
    assert by["hello-file"].resolved  # the run goes on after a broken task
    assert re.search(rf"\| {broken.name} \| 1.x \| oracle \| no \| - \| unknown \|", table)


@pytest.mark.slow
def test_build_past_its_timeout(docker_client, base_image, tmp_path, task_copy):
    task = task_copy("status-report", f"slow-build-{uuid.uuid4().hex[:6]}")
    (task / "task.toml").write_text((task / "task.toml").read_text().replace("build_timeout_sec = 600.0",
                                                                             "build_timeout_sec = 2.0"))
    (task / "environment" / "Dockerfile").write_text("FROM loopcoder/base:bookworm\nRUN sleep 20\n")
    by, _, _, _ = run([task], tmp_path, docker_client)
    rec = by[task.name]
    assert rec.error_type == "EnvironmentBuildTimeoutError" and "build timeout (2 s)" in rec.error
    assert rec.seconds["total"] < 10 and result_file(rec)["exception_info"]["exception_type"] == rec.error_type


def agent_config(url: str):
    from loopcoder.agent import AgentConfig

    cfg = AgentConfig()
    cfg.model.url, cfg.model.backoff_initial_s, cfg.fsync, cfg.mode = url, 0.05, False, "single"
    return cfg


def shell(command: str) -> dict:
    from scripted_server import call

    return call("shell", {"command": command})


@pytest.mark.slow
def test_agent_that_kills_the_shell_and_leaves_a_process_deleting_the_tests(docker_client, base_image, tmp_path,
                                                                            scripted):
    from scripted_server import call

    server = scripted([
        shell("ls /tests; printf 'Hello, world!\\n' > hello.txt"),
        # a leftover that would delete the tests as soon as they arrive, and would plant a reward
        shell("nohup setsid bash -c 'while true; do rm -rf /tests /logs/verifier; sleep 0.05; done' "
              ">/dev/null 2>&1 & disown; echo started"),
        shell("kill -9 -1"),
        shell("kill -9 $$"),
        shell("echo still here; cat /app/hello.txt"),
        # the tests run in a fresh environment: these exports would break them if they leaked
        shell("export TEST_DIR=/nowhere PATH=/nowhere; echo exported"),
        call("submit", {"summary": "done"}),
    ])
    by, _, _, _ = run([BUNDLED / "hello-file"], tmp_path, docker_client,
                      agent_factory=lambda: LoopCoderAgent(agent_config(server.url)))
    rec = by["hello-file"]
    assert rec.agent_run.failure == "none" and rec.agent_run.detail.startswith("submitted")
    assert rec.parser_results == {"check_file_exists": "passed", "check_exact_content": "passed"} and rec.resolved
    events = [json.loads(line) for line in (rec.trial_dir / "agent" / "trajectory.jsonl").read_text().splitlines()]
    outputs = [e["output"] for e in events if e["type"] == "tool_result"]
    assert "No such file or directory" in outputs[0]  # no tests in the container while the agent works
    assert "killed the sandbox process" in outputs[2] and "still here" in outputs[4]
    assert "Hello, world!" in outputs[4] and "exported" in outputs[5]
    assert not server.script  # every scripted step ran


def test_agent_that_plants_fake_tests_and_rewards(docker_client, base_image, tmp_path, scripted):
    from scripted_server import call

    fake_v1 = ("mkdir -p /tests && printf '#!/bin/bash\\necho \"=== short test summary info ===\"\\n"
               "echo PASSED t::check_file_exists\\necho PASSED t::check_exact_content\\n' > /tests/run-tests.sh "
               "&& cp /tests/run-tests.sh /tests/test_outputs.sh && chmod 000 /tests")
    fake_v2 = ("mkdir -p /tests /logs/verifier && echo 1 > /logs/verifier/reward.txt && "
               "echo '{\"reward\": 1}' > /logs/verifier/reward.json && printf '#!/bin/bash\\n' > /tests/test.sh")
    scripts = {"hello-file": [shell(fake_v1), shell("kill -9 -1"), call("submit", {})],
               "status-report": [shell(fake_v2), shell("exit 0"), call("submit", {})]}
    servers = {name: scripted(script) for name, script in scripts.items()}
    by, _, _, _ = run([BUNDLED / "hello-file", BUNDLED / "status-report"], tmp_path, docker_client, n_concurrent=1,
                      agent_factory=iter([LoopCoderAgent(agent_config(servers["hello-file"].url)),
                                          LoopCoderAgent(agent_config(servers["status-report"].url))]).__next__)
    assert by["hello-file"].parser_results == {"check_file_exists": "failed", "check_exact_content": "failed"}
    assert not by["hello-file"].resolved and result_file(by["hello-file"])["is_resolved"] is False
    assert by["status-report"].rewards == {"reward": 0, "lines_correct": 0.0} and not by["status-report"].resolved
    assert all(not s.script for s in servers.values())  # every scripted step ran


@pytest.mark.slow
def test_oracle_resolves_every_bundled_task_and_noop_none(docker_client, base_image, tmp_path):
    paths = bundled_tasks()
    assert len(paths) >= 5
    by, records, table, _ = run(paths, tmp_path, docker_client, n_concurrent=2)
    assert all(r.resolved and r.failure_mode == "none" for r in records), table
    by, records, table, _ = run(paths, tmp_path, docker_client, agent="noop", n_concurrent=2)
    assert not any(r.resolved for r in records), table
    assert all(r.error is None and r.failure_mode == "none" for r in records), table  # graded, not broken


@pytest.mark.slow
def test_concurrent_trials_do_not_see_each_others_files(docker_client, base_image, tmp_path, task_copy):
    task = task_copy("status-report", f"isolation-{uuid.uuid4().hex[:6]}")
    (task / "solution" / "solve.sh").write_text(
        "#!/bin/bash\nid=$(cat /proc/sys/kernel/random/uuid)\ntouch /app/mark-$id /tmp/mark-$id\nsleep 3\n"
        "ls /app/mark-* /tmp/mark-* | wc -l > /app/seen\n")
    (task / "tests" / "test.sh").write_text(
        "#!/bin/bash\nn=$(ls /app/mark-* | wc -l)\n"
        "if [ \"$n\" = 1 ] && [ \"$(cat /app/seen)\" = 2 ]; then echo 1; else echo 0; fi > /logs/verifier/reward.txt\n")
    _, records, table, _ = run([task], tmp_path, docker_client, n_attempts=3, n_concurrent=3)
    assert len(records) == 3 and all(r.resolved for r in records), table
    starts = [datetime.fromisoformat(r.agent_started_at) for r in records]
    ends = [datetime.fromisoformat(r.agent_ended_at) for r in records]
    assert max(starts) < min(ends)  # the three agents ran at the same time
    assert len({r.trial_name for r in records}) == 3


@pytest.mark.slow
def test_agent_timeout_is_kept_apart_from_the_tests(docker_client, base_image, tmp_path, task_copy):
    task = task_copy("hello-file", f"slow-agent-{uuid.uuid4().hex[:6]}")
    (task / "task.yaml").write_text((task / "task.yaml").read_text().replace("max_agent_timeout_sec: 120.0",
                                                                             "max_agent_timeout_sec: 3.0"))
    (task / "solution.sh").write_text("#!/bin/bash\nprintf 'Hello, world!\\n' > /app/hello.txt\nsleep 120\n")
    by, _, _, _ = run([task], tmp_path, docker_client)
    rec = by[task.name]
    assert rec.failure_mode == "agent_timeout" and rec.seconds["agent"] < 10
    assert rec.parser_results == {"check_file_exists": "passed", "check_exact_content": "passed"}  # tests still ran
    assert result_file(rec)["failure_mode"] == "agent_timeout"


@pytest.mark.slow
def test_unpullable_from_is_built_on_the_offline_base_with_a_warning(docker_client, base_image, tmp_path, task_copy):
    task = task_copy("hello-file", f"unpullable-{uuid.uuid4().hex[:6]}")
    (task / "Dockerfile").write_text("FROM registry.invalid/laude-institute/t-bench/ubuntu-24-04:20250624\n"
                                     "WORKDIR /app\n")
    messages = []
    by, _, _, _ = run([task], tmp_path, docker_client, progress=messages.append)
    rec = by[task.name]
    assert rec.resolved and rec.workdir == "/app"
    assert any("registry.invalid/laude-institute/t-bench/ubuntu-24-04:20250624" in w and "offline base" in w
               for w in result_file(rec)["loopcoder"]["warnings"])
    assert any("warning:" in m and "offline base" in m for m in messages)


@pytest.mark.slow
def test_unreachable_model_is_the_trials_agent_error(docker_client, base_image, tmp_path):
    cfg = agent_config("http://127.0.0.1:9/v1")  # discard port: nothing listens
    cfg.model.max_attempts = 1
    by, _, table, _ = run([BUNDLED / "hello-file"], tmp_path, docker_client, agent_factory=lambda: LoopCoderAgent(cfg))
    rec = by["hello-file"]
    assert rec.failure_mode == "unknown_agent_error" and "Connection" in rec.agent_run.detail
    assert rec.parser_results == {"check_file_exists": "failed", "check_exact_content": "failed"}  # tests ran


@pytest.mark.slow
def test_cli_runs_the_loopcoder_agent_on_a_model_server(base_image, tmp_path, scripted, capsys):
    from scripted_server import call

    server = scripted([shell("printf 'Hello, world!\\n' > /app/hello.txt"), call("submit", {"summary": "wrote it"})])
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["terminal", "run", str(BUNDLED / "hello-file"), "--model-url", server.url, "--mode", "single",
              "--budget-steps", "5", "--set", "fsync=false", "--output", str(out)])
        raise SystemExit(0)
    assert exit_info.value.code in (0, None)
    assert "| hello-file | 1.x | loopcoder | yes | 2/2 tests | none |" in capsys.readouterr().out
    (trial,) = (out / "hello-file").iterdir()
    events = [json.loads(line) for line in (trial / "agent" / "trajectory.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "header" and events[-1]["type"] == "stop" and events[-1]["reason"] == "submitted"
    first = server.requests[0]
    assert {t["function"]["name"] for t in first["tools"]} == {"shell", "read_file", "write_file", "submit"}
    assert "Create the file /app/hello.txt" in first["messages"][1]["content"]
    assert "/testbed" not in first["messages"][0]["content"]  # the terminal prompts, not the repository ones

"""Task loading (both formats, and the errors of broken folders), the pytest parser, rewards, result formats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.scenarios.terminal.agents import AgentRun
from loopcoder.scenarios.terminal.parsers import ParseError, parse_pytest
from loopcoder.scenarios.terminal.results import summary_table, v1_result, v2_result
from loopcoder.scenarios.terminal.run import bundled_tasks
from loopcoder.scenarios.terminal.tasks import TaskError, load_task
from loopcoder.scenarios.terminal.trial import TrialRecord, read_rewards

from terminal_support import BUNDLED


def test_bundled_tasks_load_in_both_formats():
    tasks = [load_task(p) for p in bundled_tasks()]
    assert len(tasks) >= 5
    assert {t.generation for t in tasks} == {"1.x", "2.0"}
    for t in tasks:
        assert t.instruction.strip() and t.dockerfile.is_file() and t.test_script.is_file()
        assert t.network == "none"  # none of them asks for a network
        assert t.solution_sh is not None or t.solution_yaml
    by = {t.name: t for t in tasks}
    assert by["hello-file"].env == {"TEST_DIR": "/tests"}  # from docker-compose.yaml's ${T_BENCH_TEST_DIR}
    assert (by["hello-file"].agent_timeout_s, by["hello-file"].test_timeout_s) == (120.0, 30.0)
    assert by["csv-column-sum"].solution_yaml[0].max_timeout_sec == 30 and by["csv-column-sum"].solution_sh is None
    assert by["setup-permissions"].workdir == "/srv/site" and not by["setup-permissions"].dockerfile_sets_workdir
    assert by["hello-file"].dockerfile_sets_workdir
    assert by["status-report"].memory_mb == 1024  # the older memory = "1G"
    assert by["git-recover-commit"].cpus == 1 and by["git-recover-commit"].memory_mb == 1024


def _v2(tmp_path: Path, toml: str) -> Path:
    root = tmp_path / "t2"
    (root / "environment").mkdir(parents=True, exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "environment" / "Dockerfile").write_text("FROM loopcoder/base:bookworm\n")
    (root / "tests" / "test.sh").write_text("echo 1 > /logs/verifier/reward.txt\n")
    (root / "instruction.md").write_text("do it\n")
    (root / "task.toml").write_text(toml)
    return root


def test_v2_network_and_defaults(tmp_path):
    t = load_task(_v2(tmp_path, "[environment]\nallow_internet = true\n"))
    assert t.network == "bridge" and t.agent_timeout_s == 600.0 and t.test_timeout_s == 600.0
    t = load_task(_v2(tmp_path, '[environment]\nnetwork_mode = "no-network"\n[agent]\ntimeout_sec = 5\n'
                                '[verifier]\ntimeout_sec = 7\nenv = {K = "v"}\n'))
    assert t.network == "none" and t.agent_timeout_s == 5 and t.test_timeout_s == 7 and t.verifier_env == {"K": "v"}
    assert load_task(_v2(tmp_path, "")).network == "none"  # Harbor's default is public; ours is none


@pytest.mark.parametrize("toml, message", [
    ("[agent]\ntimeout_sec = -1\n", "agent.timeout_sec must be a positive number"),
    ('[environment]\nnetwork_mode = "allowlist"\n', "network_mode 'allowlist' is not supported"),
    ("[[steps]]\nname = 'a'\n", "multi-step tasks"),
    ("[agent\n", "not valid TOML"),
    ('[environment]\nmemory = "lots"\n', "is not like '2G'"),
])
def test_v2_errors(tmp_path, toml, message):
    with pytest.raises(TaskError, match=message):
        load_task(_v2(tmp_path, toml))


def _v1(tmp_path: Path, name: str = "hello-file") -> Path:
    import shutil

    root = tmp_path / name
    shutil.copytree(BUNDLED / "hello-file", root)
    return root


@pytest.mark.parametrize("change, message", [
    (lambda r: (r / "task.yaml").write_text("difficulty: easy\n"), "needs an instruction"),
    (lambda r: (r / "task.yaml").write_text("instruction: x\nparser_name: swebench\n"), "parser_name 'swebench'"),
    (lambda r: (r / "task.yaml").write_text("instruction: x\nmax_test_timeout_sec: nan\n"), "max_test_timeout_sec"),
    (lambda r: (r / "run-tests.sh").unlink(), "no run-tests.sh"),
    (lambda r: (r / "docker-compose.yaml").write_text("services:\n  client: {}\n  db: {image: postgres}\n"),
     "services besides 'client' \\(db\\)"),
    (lambda r: (r / "docker-compose.yaml").write_text("services:\n  client:\n    build: ../..\n"), "outside the task"),
    (lambda r: (r / "Dockerfile").unlink(), "no Dockerfile"),
])
def test_v1_errors(tmp_path, change, message):
    root = _v1(tmp_path)
    change(root)
    with pytest.raises(TaskError, match=message):
        load_task(root)


def test_not_a_task(tmp_path):
    with pytest.raises(TaskError, match="neither task.yaml"):
        load_task(tmp_path)


def test_pytest_parser():
    out = ("collected 4 items\nFAILED in the log before the summary does not count\n"
           "=========================== short test summary info ============================\n"
           "PASSED tests/test_outputs.py::test_a\nFAILED tests/test_outputs.py::test_b - assert x::y == 2\n"
           "FAILED tests/test_outputs.py::test_f - \n"
           "SKIPPED tests/test_outputs.py::test_c\nERROR tests/test_outputs.py::test_d\nXPASS t.py::test_e\n"
           "========================= 1 passed, 1 failed in 0.1s =========================\n")
    assert parse_pytest(out) == {"test_a": "passed", "test_b": "failed", "test_c": "passed", "test_d": "failed",
                                 "test_e": "failed", "test_f": "failed"}
    with pytest.raises(ParseError):
        parse_pytest("PASSED tests/x.py::test_a\n")


def test_read_rewards(tmp_path):
    assert read_rewards(tmp_path) == (None, "no reward file: neither /logs/verifier/reward.txt nor reward.json was written")
    (tmp_path / "reward.txt").write_text("0.5\n")
    assert read_rewards(tmp_path) == ({"reward": 0.5}, None)
    (tmp_path / "reward.json").write_text('{"reward": 1, "style": 0.25}')
    assert read_rewards(tmp_path) == ({"reward": 1, "style": 0.25}, None)  # json wins, as in Harbor
    (tmp_path / "reward.json").write_text('{"reward": "yes"}')
    assert read_rewards(tmp_path)[0] is None
    (tmp_path / "reward.json").unlink()
    (tmp_path / "reward.txt").write_text("nan")
    assert "non-finite" in read_rewards(tmp_path)[1]


def test_result_formats(tmp_path):
    t1 = load_task(BUNDLED / "hello-file")
    rec = TrialRecord(task=t1, trial_name="hello-file.1-of-1.r", agent="oracle", trial_dir=tmp_path / "a")
    rec.agent_run, rec.parser_results, rec.ended_at = AgentRun(), {"a": "passed", "b": "passed"}, rec.started_at
    d = v1_result(rec)
    assert d["is_resolved"] is True and d["failure_mode"] == "none" and d["parser_results"] == {"a": "passed", "b": "passed"}
    rec.test_timed_out, rec.parser_results = True, None
    d = v1_result(rec)
    assert d["is_resolved"] is None and d["failure_mode"] == "test_timeout"
    empty = TrialRecord(task=t1, trial_name="x", agent="noop", trial_dir=tmp_path / "c", parser_results={})
    assert not empty.resolved  # no test ran: not resolved (terminal-bench's all() of nothing would say yes)

    t2 = load_task(BUNDLED / "status-report")
    rec2 = TrialRecord(task=t2, trial_name="status-report__abc", agent="noop", trial_dir=tmp_path / "b")
    rec2.agent_run, rec2.rewards, rec2.ended_at = AgentRun(), {"reward": 0, "lines_correct": 0.4}, rec2.started_at
    d2 = v2_result(rec2)
    assert d2["verifier_result"] == {"rewards": {"reward": 0, "lines_correct": 0.4}} and d2["exception_info"] is None
    assert d2["task_name"] == "status-report" and len(d2["task_checksum"]) == 64
    json.dumps(d2)
    rec2.agent_run = AgentRun("agent_timeout")
    assert v2_result(rec2)["exception_info"]["exception_type"] == "AgentTimeoutError"
    table = summary_table([rec, rec2])
    assert "| hello-file | 1.x | oracle | no |" in table and "reward 0, lines_correct=0.4" in table
    assert "resolved 0 of 2 trials" in table


def test_task_container_refuses_caps_that_unseal_the_supervisor():
    from loopcoder.runtime.docker_sandbox import TaskContainer
    from loopcoder.runtime.errors import SandboxError

    for cap in ("DAC_OVERRIDE", "DAC_READ_SEARCH", "SYS_PTRACE", "SYS_ADMIN"):
        with pytest.raises(SandboxError, match="cannot be added"):
            TaskContainer(cap_add=(cap,))
    with pytest.raises(SandboxError, match="not an absolute path"):
        TaskContainer(workdir="app")
    with pytest.raises(SandboxError, match="not none or bridge"):
        TaskContainer(network="host")
    assert TaskContainer(cap_add=("CHOWN",)).cap_add == ("CHOWN",)

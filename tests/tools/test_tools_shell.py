"""shell, run_tests and submit against the real LocalSandbox (no fakes)."""
import sys

import pytest

from loopcoder.tools.config import ToolsConfig

from loopcoder.runtime import local_sandbox

PROJECT = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                    "def test_add_negative():\n    assert add(-1, -1) == -2\n",
}


@pytest.fixture
def sandboxed(make_toolbox, tmp_path):
    sandboxes = []

    def make(files=PROJECT, **kwargs):
        root = tmp_path / "ws"  # where make_toolbox writes the files
        root.mkdir(exist_ok=True)
        sb = local_sandbox.LocalSandbox(root, allow=True)
        sandboxes.append(sb)
        return make_toolbox(files, sandbox=sb, **kwargs)

    yield make
    for sb in sandboxes:
        sb.close()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shell_runs_in_the_workspace_and_keeps_state(sandboxed):
    tb = sandboxed()
    res = tb.registry.call("shell", {"command": "ls && echo hi >&2 && exit 3"})
    assert res.ok and res.data.exit_code == 3  # a failing command is a result, not a tool error
    assert "calc.py" in res.output and "hi" in res.output and res.output.startswith("exit code 3")
    tb.registry.call("shell", {"command": "export GREETING=hello; mkdir -p sub && cd sub"})
    res = tb.registry.call("shell", {"command": "echo $GREETING; pwd"})
    assert "hello" in res.output and res.output.rstrip().endswith("/sub")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shell_timeout_is_reported(sandboxed):
    tb = sandboxed()
    res = tb.registry.call("shell", {"command": "sleep 30", "timeout_s": 1})
    assert res.ok and res.data.timed_out and "timed out" in res.output


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_run_tests_reports_pass_and_fail_with_the_summary(sandboxed):
    config = ToolsConfig()
    config.shell.test_command = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    tb = sandboxed(config=config)
    res = tb.registry.call("run_tests", {})
    assert res.ok and res.data.passed and res.data.summary.startswith("2 passed"), res.output
    tb.registry.call("str_replace", {"path": "calc.py", "old_str": "a + b", "new_str": "a - b"})
    res = tb.registry.call("run_tests", {"paths": ["test_calc.py::test_add"]})
    assert res.ok and not res.data.passed and res.data.summary.startswith("1 failed"), res.output
    assert res.output.startswith("tests FAILED")
    assert "outside the workspace" in tb.registry.call("run_tests", {"paths": ["../x.py"]}).output
    assert "no such file" in tb.registry.call("run_tests", {"paths": ["nope.py::t"]}).output


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_closed_sandbox_is_an_error_result(sandboxed):
    tb = sandboxed()
    tb.shell.sandbox.close()
    res = tb.registry.call("shell", {"command": "true"})
    assert not res.ok and "sandbox error" in res.output


def test_without_a_sandbox_shell_is_an_error_and_submit_still_ends_the_episode(make_toolbox):
    tb = make_toolbox(PROJECT)
    assert "no sandbox" in tb.registry.call("shell", {"command": "ls"}).output
    assert "no sandbox" in tb.registry.call("run_tests", {}).output
    assert not tb.submitted
    res = tb.registry.call("submit", {"summary": "fixed add"})
    assert res.ok and tb.submitted and tb.shell.summary == "fixed add"

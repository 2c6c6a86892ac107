"""The tools against a real DockerSandbox: host-side edits are seen by commands in the container."""
import pytest

from loopcoder.tools.config import ToolsConfig

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_sandbox(tmp_path, docker_client, base_image):
    from loopcoder.runtime.config import SandboxConfig
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    root = tmp_path / "ws"
    root.mkdir()
    config = SandboxConfig(cpus=1.0, memory="256m", pids_limit=128, output_limit_bytes=20_000, default_timeout_s=60)
    with DockerSandbox(root, config=config, image=base_image, client=docker_client, labels={"loopcoder.purpose": "test"}) as sb:
        yield sb


def test_edit_on_the_host_then_test_in_the_container(docker_sandbox, make_toolbox):
    config = ToolsConfig()
    config.shell.test_command = "python3 -m unittest -q"
    tb = make_toolbox({
        "calc.py": "def add(a, b):\n    return a - b\n",
        "test_calc.py": "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
                        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n",
    }, sandbox=docker_sandbox, config=config)
    res = tb.registry.call("run_tests", {})
    assert res.ok and not res.data.passed and res.data.summary == "Ran 1 tests: FAILED (failures=1)", res.output
    assert tb.registry.call("str_replace", {"path": "/testbed/calc.py", "old_str": "a - b", "new_str": "a + b"}).ok
    res = tb.registry.call("shell", {"command": "pwd && python3 -c 'import calc; print(calc.add(2, 3))'"})
    assert res.ok and res.data.exit_code == 0 and res.output.endswith("/testbed\n5\n"), res.output
    res = tb.registry.call("run_tests", {"paths": ["test_calc.py"]})
    assert res.data.passed and res.data.summary == "Ran 1 tests: OK", res.output
    res = tb.registry.call("shell", {"command": "sleep 20", "timeout_s": 1})
    assert res.data.timed_out and tb.registry.call("shell", {"command": "echo alive"}).output.endswith("alive\n")


def test_files_the_tools_make_after_start_stay_writable_for_the_sandbox_user(docker_sandbox, make_toolbox):
    tb = make_toolbox({"keep.py": "x = 1\n"}, sandbox=docker_sandbox)
    call = tb.registry.call
    assert call("create", {"path": "newdir/sub/made.txt", "content": "one\n"}).ok
    res = call("shell", {"command": "id -u; echo two >> newdir/sub/made.txt && cat newdir/sub/made.txt && "
                                    "rm newdir/sub/made.txt && rmdir newdir/sub newdir && echo removed"})
    assert res.data.exit_code == 0 and res.output.endswith("one\ntwo\nremoved\n"), res.output
    # undo brings back a file the sandbox deleted: the sandbox can change it again
    assert call("str_replace", {"path": "keep.py", "old_str": "x = 1", "new_str": "x = 2"}).ok
    assert call("shell", {"command": "rm keep.py"}).data.exit_code == 0
    assert call("undo", {"path": "keep.py"}).ok
    res = call("shell", {"command": "echo y = 3 >> keep.py && cat keep.py && rm keep.py && echo removed"})
    assert res.data.exit_code == 0 and res.output.endswith("x = 1\ny = 3\nremoved\n"), res.output

"""The environment image in a real run (slow: builds a venv with pytest from the package index when the
content-hashed tag does not exist yet): detected, built or reused, the agent's tests run with pytest in it."""
import json

import pytest

from resolve_support import run_cli, solve_script

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_resolve_builds_the_environment_image_and_tests_with_pytest(github, scripted, token, tmp_path, docker_ready):
    model = scripted(solve_script())
    out = tmp_path / "run"
    proc = run_cli(["resolve", github.issue_url("octo", "stats", 1), "--model-url", model.url, "--output", str(out),
                    "--no-thinking"], {"GITHUB_ENTERPRISE_TOKEN": token}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "resolve.json").read_text())
    env = record["environment"]
    assert env["kind"] == "environment" and env["image"].startswith("loopcoder/env:") and env["failures"] == []
    assert env["detected"] == ["Python: no dependency files; python 3.11"]
    assert env["test_command"] == "python -m pytest -q -x"
    summary = (out / "summary.md").read_text()
    assert "| agent, step 3 | `python -m pytest -q -x` | FAILED: 1 failed, 1 passed |" in summary
    assert "| final check | `python -m pytest -q -x` | passed: 4 passed |" in summary
    assert f"- sandbox: environment image {env['image']}" in summary


def test_a_dependency_that_does_not_install_falls_back_to_the_image_without_dependencies(tmp_path, docker_ready):
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.scenarios.resolve.environment import PYTEST, detect_environment, prepare_image
    from loopcoder.scenarios.resolve.run import _sandbox_note

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("loopcoder-no-such-package-qq==1.0\n")
    (repo / "mod.py").write_text("x = 1\n")
    plan = detect_environment(repo)
    env = prepare_image(docker_ready, plan, load_runtime_config().images)
    assert env.kind == "minimal" and env.test_command == PYTEST and env.image.startswith("loopcoder/env:")
    [failure] = env.failures
    assert failure.startswith("environment image: ") and "loopcoder-no-such-package-qq" in failure
    assert "installing packages will fail" in _sandbox_note(env, "none")
    assert "you may install missing packages" in _sandbox_note(env, "bridge")

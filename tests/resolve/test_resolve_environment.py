"""What `resolve` detects about installing and testing a repository, the test command that follows, and the
image it falls back to. Detection reads files only: symlinks out of the repository are not followed."""
import json
import os

import pytest

from loopcoder.runtime.config import ImagesConfig
from loopcoder.scenarios.resolve.environment import PYTEST, UNITTEST, detect_environment, prepare_image


def write(root, files: dict):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_python_project_with_tox_makefile_and_package_json(tmp_path):
    repo = write(tmp_path, {
        "pyproject.toml": '[project]\nname = "pkg"\ndependencies = ["attrs>=22"]\n'
                          '[project.optional-dependencies]\ntest = ["hypothesis"]\n',
        "tox.ini": "[tox]\nenvlist = py311, lint\n[testenv]\ndeps = coverage\ncommands = pytest {posargs}\n",
        "Makefile": ".PHONY: test\nVAR := 1\ntest:\n\tpytest\nlint: test\n\truff .\n",
        "package.json": json.dumps({"scripts": {"test": "jest"}, "devDependencies": {"jest": "29"}}),
        "go.mod": "module x\n",
    })
    plan = detect_environment(repo)
    lines = plan.lines()
    assert lines[0].startswith("Python: pyproject (setuptools), extras [test]")
    assert "tox.ini: envs py311, lint; commands: pytest {posargs}" in lines
    assert "Makefile: targets lint, test" in lines
    assert "package.json: 1 dependencies; test script: jest" in lines
    assert "go.mod: Go, not set up (the image has no Go toolchain)" in lines
    assert (plan.test_command, plan.apt_packages) == (PYTEST, ["make", "nodejs", "npm"])
    assert "attrs>=22" in plan.python.requirements and "coverage" in plan.python.requirements
    assert any("node dependencies are not installed" in n for n in plan.notes)


def test_test_commands_of_other_kinds_of_repository(tmp_path):
    tox_unittest = write(tmp_path / "a", {"setup.py": "from setuptools import setup\nsetup(name='a')\n",
                                          "tox.ini": "[testenv]\ncommands = python -m unittest discover\n"})
    assert detect_environment(tox_unittest).test_command == "python -m unittest"
    make_only = write(tmp_path / "b", {"Makefile": "check:\n\t./run-checks\n", "main.c": "int main(){}\n"})
    plan = detect_environment(make_only)
    assert (plan.python, plan.test_command, plan.apt_packages) == (None, "make check", ["make"])
    node = write(tmp_path / "c", {"package.json": json.dumps(
        {"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})})
    plan = detect_environment(node)
    assert plan.test_command is None and plan.lines() == ["package.json: 0 dependencies; no test script"]
    plain = write(tmp_path / "d", {"stats.py": "x = 1\n"})
    assert detect_environment(plain).lines() == ["Python: no dependency files; python 3.11"]
    empty = tmp_path / "e"
    empty.mkdir()
    assert detect_environment(empty).lines() == ["no dependency or build files found"]


def test_symlinks_and_oversized_files_are_not_read(tmp_path):
    secret = tmp_path / "host-secret.json"
    secret.write_text(json.dumps({"scripts": {"test": "HOST-SECRET"}}))
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(secret, repo / "package.json")
    os.symlink("/etc/passwd", repo / "Makefile")
    (repo / "tox.ini").write_text("[testenv]\ncommands = " + "x" * (2 << 20) + "\n")
    plan = detect_environment(repo)
    assert plan.lines() == ["no dependency or build files found"] and plan.test_command is None


def test_images_without_a_build(tmp_path):
    cfg = ImagesConfig()
    python = detect_environment(write(tmp_path / "p", {"stats.py": "x = 1\n"}))
    res = prepare_image(None, python, cfg, build=False)
    assert (res.image, res.kind, res.test_command) == (cfg.base_image, "base", UNITTEST)
    assert res.notes == ["environment image: not built (resolve.environment.build_image is false)"]
    make = detect_environment(write(tmp_path / "m", {"Makefile": "test:\n\ttrue\n"}))
    res = prepare_image(None, make, cfg, build=False)
    assert res.test_command is None and "make test: not available in the base image" in res.notes
    nothing = detect_environment(write(tmp_path / "n", {"README": "hi\n"}))
    assert prepare_image(None, nothing, cfg, build=True).kind == "base"  # nothing to install: no build at all

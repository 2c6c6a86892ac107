"""Repository environments: detection from a repository's files, and real images with a venv and pytest.

The image test talks to the package index (PyPI, through the host's network) at build time only.
"""
from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from loopcoder.runtime.config import SandboxConfig, load_runtime_config
from loopcoder.runtime.errors import ImageBuildError
from loopcoder.runtime.repo_env import build_repo_env_image, detect_repo_env, repo_env_image_or_base


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


# -- detection (no engine) -------------------------------------------------------------------------


def test_pyproject_dependencies_test_extras_groups_and_build_system(tmp_path):
    write(tmp_path, {
        "pyproject.toml": """
            [build-system]
            requires = ["hatchling>=1.20"]
            build-backend = "hatchling.build"
            [project]
            name = "My_Pkg"
            version = "1"
            requires-python = ">=3.9"
            dependencies = ["six>=1.16", "attrs; python_version >= '3.8'"]
            [project.optional-dependencies]
            test = ["pytest>=7", "my-pkg[speed]"]
            speed = ["ujson"]
            docs = ["sphinx"]
            [dependency-groups]
            dev = ["ruff", {include-group = "lint"}]
            lint = ["mypy"]
        """,
        "requirements-dev.txt": "-r requirements.txt\n-e .[docs]\ncoverage  # measure\n",
        "requirements.txt": "requests==2.32.3 \\\n    --hash=sha256:0123\n",
    })
    spec = detect_repo_env(tmp_path)
    assert spec.summary() == ("detected: pyproject (hatchling), extras [test, docs, speed], requirements.txt, "
                              "requirements-dev.txt; python 3.11")
    assert spec.project_name == "My_Pkg" and spec.build_requires == ["hatchling>=1.20"]
    assert spec.requirements == ["six>=1.16", "attrs; python_version >= '3.8'", "ruff", "mypy", "requests==2.32.3",
                                 "coverage", "sphinx", "pytest>=7", "ujson"]
    assert spec.import_path == "/testbed" and spec.requires_python == ">=3.9"
    assert any("--hash options dropped" in n for n in spec.notes)


def test_setup_cfg_setup_py_src_layout_and_notes(tmp_path):
    write(tmp_path, {
        "setup.cfg": """
            [metadata]
            name = legacy
            [options]
            package_dir =
                =src
            python_requires = >=3.12
            install_requires =
                click>=8
                # a comment
                colorama; platform_system == "Windows"
            [options.extras_require]
            testing = pytest-mock
        """,
        "setup.py": """
            from setuptools import setup
            REQS = ["tomli>=2"]
            setup(install_requires=REQS, tests_require=[x for x in ["nose"]], extras_require={"tests": ["hypothesis"]})
        """,
        "src/legacy/__init__.py": "",
    })
    spec = detect_repo_env(tmp_path)
    assert [s.kind for s in spec.sources] == ["setup.cfg", "setup.py"]
    assert spec.requirements == ["click>=8", 'colorama; platform_system == "Windows"', "tomli>=2", "pytest-mock",
                                 "hypothesis", "pytest"]
    assert spec.extras == ["tests", "testing"] and spec.import_path == "/testbed/src"
    assert spec.build_backend == "setuptools" and "wheel" in spec.build_requires
    notes = " | ".join(spec.notes)
    assert "tests_require is computed" in notes and "pytest added" in notes
    assert "requires-python '>=3.12' excludes Python 3.11" in notes


def test_tox_pipfile_and_poetry(tmp_path):
    write(tmp_path, {
        "tox.ini": """
            [base]
            deps = freezegun
            [testenv]
            deps =
                -r{toxinidir}/requirements/test.txt
                py38: mock
                {[base]deps}
                pytest-xdist
            extras = cli
        """,
        "requirements/test.txt": "pytest==8.3.5\n",
        "Pipfile": """
            [packages]
            requests = "*"
            idna = "==3.7"
            local = {path = "./local"}
            [dev-packages]
            black = {version = ">=24", extras = ["jupyter"]}
            [requires]
            python_version = "3.11"
        """,
        "pyproject.toml": """
            [tool.poetry]
            name = "poet"
            [tool.poetry.dependencies]
            python = "^3.10"
            pendulum = "^2.1.2"
            tomlkit = "~0.12"
            gitdep = {git = "https://example.invalid/x.git"}
            [tool.poetry.extras]
            cli = ["click"]
            [tool.poetry.group.dev.dependencies]
            pytest-cov = "^0.0.5"
            [build-system]
            requires = ["poetry-core"]
            build-backend = "poetry.core.masonry.api"
        """,
    })
    spec = detect_repo_env(tmp_path)
    assert spec.summary() == ("detected: pyproject (poetry), requirements/test.txt, tox.ini (testenv deps; "
                              "extras cli), Pipfile (packages, dev-packages); python 3.11")
    assert spec.requirements == ["pendulum>=2.1.2,<3", "tomlkit>=0.12,<0.13", "pytest-cov>=0.0.5,<0.0.6",
                                 "pytest==8.3.5", "freezegun", "pytest-xdist", "requests", "idna==3.7",
                                 "black[jupyter]>=24"]
    assert spec.requires_python == ">=3.10,<4"
    notes = " | ".join(spec.notes)
    assert "gitdep" in notes and "'py38: mock' not used" in notes and "Pipfile: local" in notes


def test_files_outside_the_repository_are_never_read(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("stolen-secret==1\n")
    repo = write(tmp_path / "repo", {"requirements.txt": "-r ../outside.txt\n-r /etc/hostname\nok==1\n"})
    os.symlink(outside, repo / "requirements-dev.txt")
    (repo / "sub").mkdir()
    os.symlink(outside, repo / "sub" / "link.txt")
    write(repo, {"requirements-test.txt": "-r sub/link.txt\n"})
    spec = detect_repo_env(repo)
    assert spec.requirements == ["ok==1", "pytest"]
    assert "stolen" not in repr(spec.model_dump())
    assert sum("outside the repository" in n for n in spec.notes) >= 3


def test_a_folder_that_is_not_there_is_a_one_line_error(tmp_path):
    with pytest.raises(ImageBuildError, match="repository folder .* not found"):
        detect_repo_env(tmp_path / "missing")


# -- a real image ----------------------------------------------------------------------------------


TINY = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tinypkg"
        version = "0.1.0"
        dependencies = ["six==1.17.0"]
        [project.optional-dependencies]
        test = ["pytest"]
    """,
    "tinypkg/__init__.py": """
        import six

        def shout(text):
            return six.ensure_str(text).upper()
    """,
    "tests/test_tiny.py": """
        import six
        from tinypkg import shout

        def test_shout():
            assert shout(b"hi") == "HI" and six.__version__ == "1.17.0"
    """,
}


@pytest.fixture
def scratch_tags(docker_client):
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.api.remove_image(tag, force=True)
        except Exception:
            pass


@pytest.mark.docker
def test_repository_image_runs_its_tests_offline_and_is_reused(docker_client, base_image, scratch_tags, tmp_path):
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    cfg = load_runtime_config().images.model_copy(update={"env_repository": "loopcoder/env-test"})
    repo = write(tmp_path / "repo", TINY)
    started = time.monotonic()
    env = build_repo_env_image(docker_client, repo, cfg)
    scratch_tags.append(env.tag)
    built_s = time.monotonic() - started
    assert not env.reused and env.spec.summary() == "detected: pyproject (setuptools), extras [test]; python 3.11"

    tools_test_command = "python -m pytest -q -x"  # tools/config.py's default run_tests command
    with DockerSandbox(repo, config=SandboxConfig(memory="512m"), image=env.tag, client=docker_client) as sb:
        res = sb.exec(f"{tools_test_command}; echo rc=$?; ls /sys/class/net; cd /tmp && python -c "
                      "'import tinypkg, sys; print(tinypkg.__file__, sys.prefix)'")
        assert "1 passed" in res.output and "rc=0" in res.output, res.output
        assert res.output.endswith("lo\n/testbed/tinypkg/__init__.py /opt/venv\n")
        # The documented hook: an editable install of the mounted repository, offline.
        hook = sb.exec("loopcoder-install-repo >/dev/null && python -c "
                       "'import importlib.metadata as m; print(m.version(\"tinypkg\"))'")
        assert hook.output.strip().endswith("0.1.0"), hook.output

    started = time.monotonic()
    again = build_repo_env_image(docker_client, repo, cfg)
    assert again.reused and again.tag == env.tag and time.monotonic() - started < 3
    (repo / "tinypkg" / "extra.py").write_text("X = 1\n")  # code changes do not touch the environment
    assert build_repo_env_image(docker_client, repo, cfg).tag == env.tag

    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text().replace("six==1.17.0", "six==1.16.0"))
    changed = build_repo_env_image(docker_client, repo, cfg)
    scratch_tags.append(changed.tag)
    assert not changed.reused and changed.tag != env.tag
    with DockerSandbox(repo, config=SandboxConfig(memory="512m"), image=changed.tag, client=docker_client) as sb:
        assert sb.exec("python -c 'import six; print(six.__version__)'").output == "1.16.0\n"

    # A dependency that does not exist: one line quoting pip, and the caller falls back to the base image.
    (repo / "requirements.txt").write_text("loopcoder-no-such-package-qq==1.0\n")
    with pytest.raises(ImageBuildError, match="first error line: ERROR: .*loopcoder-no-such-package-qq") as e:
        build_repo_env_image(docker_client, repo, cfg)
    assert "\n" not in str(e.value)
    image, got, why = repo_env_image_or_base(docker_client, repo, cfg)
    assert image == cfg.base_image and got is None and "loopcoder-no-such-package-qq" in why
    print(f"repo env: first build {built_s:.1f} s, dependency change {changed.seconds:.1f} s")

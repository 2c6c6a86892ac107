"""SWE-bench settings (``configs/swebench.yaml``): image mode, environment spec table, grading limits."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopcoder.configs import load_config

# The offline base image is Debian bookworm: its only Python is 3.11 (no other interpreter can be
# fetched here), so an environment spec may ask for nothing else in `build` mode.
BASE_PYTHON = "3.11"


class EnvSpec(BaseModel):
    """How to run one repository's tests on top of the base image.

    Build-time fields (``python``, ``apt_packages``, ``pip_packages``, ``setup``, ``env``) go into the
    environment image and its content hash; ``pre_test`` runs in every eval container (offline) before
    the tests; ``test_cmd`` is followed by the test files of the instance's test patch.
    Unset fields (None) fall back to the less specific entry: repo@version, then repo, then ``default``.
    """

    model_config = ConfigDict(extra="forbid")

    python: str | None = None
    apt_packages: list[str] | None = None
    pip_packages: list[str] | None = None
    setup: list[str] | None = None
    env: dict[str, str] | None = None
    pre_test: list[str] | None = None
    test_cmd: str | None = None
    # How test files become arguments: file paths, or Django's dotted test modules (tests/ prefix dropped).
    directives: Literal["paths", "django"] | None = None
    log_parser: str | None = None
    eval_type: Literal["pass_and_fail", "fail_only"] | None = None

    @field_validator("log_parser")
    @classmethod
    def _known_parser(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from swebench.harness.log_parsers import PARSER_REGISTRY

        if v not in PARSER_REGISTRY:
            raise ValueError(f"unknown log parser (swebench PARSER_REGISTRY has e.g. parse_log_pytest)")
        return v


class GradingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(1800.0, gt=0)  # one eval script, wall clock
    output_limit_bytes: int = Field(20_000_000, ge=10_000)  # test log kept per instance (head + tail)
    junit_limit_bytes: int = Field(50_000_000, ge=10_000)
    # No JUnit XML (a runner that is not pytest): true grades the instance grading_conflict, never resolved.
    require_junit: bool = True
    # A model patch is graded `suspicious` (never resolved) when it touches test infrastructure:
    # - a path whose name matches one of these (fnmatch on the file name, or on the whole path);
    always_flagged_paths: list[str] = [
        "conftest.py", "pytest.ini", "sitecustomize.py", "usercustomize.py", "*.pth", ".pytest_cache/*",
        "*/.pytest_cache/*",
    ]
    # - an existing file (not a new one) that is test code the test patch does not reset: a test folder
    #   component, or a test-helper file name;
    test_dirs: list[str] = ["tests", "test", "testing"]
    test_file_names: list[str] = ["test_*.py", "*_test.py", "*test_tools*.py", "testing.py", "testutils.py"]
    # - pytest settings or plugin entry points changed in pyproject.toml ([tool.pytest*], pytest11
    #   entry points), setup.cfg ([tool:pytest], pytest11) or tox.ini ([pytest]) (checked section-wise, so
    #   a dependency bump is not flagged);
    # - runner-source paths and added lines matching these patterns (code reaching into the test runner,
    #   its reports, its output or the harness), except in `runner_repos`, whose own source is the runner.
    runner_paths: list[str] = ["_pytest/*", "*/_pytest/*", "pytest_*.py", "*/pytest_*.py"]
    runner_patterns: list[str] = [
        r"\b_pytest\b", r"\bpytest_(runtest|report|collect|sessionfinish|sessionstart|terminal|configure|"
        r"unconfigure|load_initial_conftests|cmdline|make|addoption|plugin)\w*", r"\bpytest_plugins\b",
        r"\bTestReport\b", r"(?i)junit", r"PYTEST_ADDOPTS", r">>>>>", r"\batexit\b", r"\bos\._exit\b",
        r"/proc/", r"\bsys\.(argv|stdout|stderr|__stdout__|__stderr__|excepthook)\s*=", r"\bsys\.settrace\b",
        r"\bbuiltins\.print\s*=", r"\bpluggy\b", r"(?i)loopcoder", r"\beval\.sh\b",
    ]
    runner_repos: list[str] = ["pytest-dev/pytest", "pytest-dev/pluggy"]


class RunConfig(BaseModel):
    """`swebench run`: where repositories come from when --repos-dir lacks them, and how wide a batch runs."""

    model_config = ConfigDict(extra="forbid")

    # Repositories missing from the repos dir are cloned from here ({repo}: owner/name, {key}: owner__name)
    # into `repo_cache` once, then checked out in isolation like any other source; null: never clone.
    clone_url: str | None = "https://github.com/{repo}.git"
    clone_timeout_s: float = Field(900.0, gt=0)
    repo_cache: Path = Path(".cache/swebench-repos")
    workers: int = Field(1, ge=1, le=256)  # instances at once (threads locally, concurrent tasks on Ray)
    # Ray: CPUs one instance task asks for (its agent sandbox and tests run in Docker, not in the task).
    ray_num_cpus: float = Field(1.0, gt=0)


class SwebenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: Literal["build", "official"] = "build"
    official_namespace: str = "swebench"
    official_pull_timeout_s: float = Field(900.0, gt=0)
    repos_dir: Path | None = None  # None: the bundled repositories
    default: EnvSpec = EnvSpec(
        python=BASE_PYTHON,
        apt_packages=[],
        pip_packages=["pytest==8.4.2"],
        setup=["ln -sf /usr/bin/python3 /usr/local/bin/python"],
        env={"PYTHONPATH": "/testbed/src:/testbed", "PYTHONDONTWRITEBYTECODE": "1"},
        pre_test=[],
        test_cmd="python3 -m pytest --no-header -rA --tb=no -p no:cacheprovider",
        directives="paths",
        log_parser="parse_log_pytest",
        eval_type="pass_and_fail",
    )
    repos: dict[str, EnvSpec] = {}  # "owner/name" or "owner/name@version"
    grading: GradingConfig = GradingConfig()
    run: RunConfig = RunConfig()
    sandbox_memory: str = "4g"
    sandbox_cpus: float = Field(2.0, gt=0)
    sandbox_pids_limit: int = Field(1024, ge=64)

    @field_validator("default")
    @classmethod
    def _complete_default(cls, v: EnvSpec) -> EnvSpec:
        missing = [k for k, val in v.model_dump().items() if val is None]
        if missing:
            raise ValueError(f"the default spec must set every field; missing: {', '.join(missing)}")
        return v

    def spec_for(self, repo: str, version: str | None) -> EnvSpec:
        """The merged spec for ``repo`` at ``version``: repo@version over repo over default."""
        merged = self.default.model_dump()
        for key in (repo, f"{repo}@{version}" if version else None):
            entry = self.repos.get(key) if key else None
            if entry:
                merged.update({k: v for k, v in entry.model_dump().items() if v is not None})
        return EnvSpec.model_validate(merged)


def load_swebench_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SwebenchConfig:
    """Load ``path`` or the shipped ``configs/swebench.yaml``, with ``key=value`` overrides."""
    return load_config(SwebenchConfig, path, overrides, default="swebench")

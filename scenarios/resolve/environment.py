"""What a repository needs to be installed and tested, and the sandbox image that provides it.

Python (pyproject.toml, setup.cfg, setup.py, requirements*.txt, tox.ini deps, Pipfile) is detected by
``runtime.repo_env`` and becomes a content-hashed environment image (a venv with the dependencies and
pytest). Beyond it, read here (files only, never run; symlinks and files over 1 MiB are not read):

- ``tox.ini`` / ``[tool.tox]``: the envs and the ``[testenv] commands`` (unittest or pytest);
- ``Makefile``: ``test``/``tests``/``check`` targets (the image then gets ``make``);
- ``package.json``: the ``test`` script and the dependency count (the image gets ``nodejs`` and ``npm``;
  the node dependencies themselves are NOT installed: run-time sandboxes have no network);
- go.mod, Cargo.toml, pom.xml, build.gradle, Gemfile, composer.json: named, not set up (no toolchain).

Images, first that builds: the full environment image; without the dependencies (venv + pytest only; the
agent can still pip install when the sandbox is given network with ``--sandbox-network bridge``); the base
image. Each fallback is reported with the reason.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from loopcoder.runtime.errors import ImageBuildError
from loopcoder.runtime.repo_env import RepoEnvSpec, build_repo_env_image, detect_repo_env

MAX_BYTES = 1 << 20
PYTEST = "python -m pytest -q -x"
UNITTEST = "python3 -m unittest"
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", re.M)
_NPM_DEFAULT_TEST = 'echo "Error: no test specified" && exit 1'
_OTHER = {"go.mod": "Go", "Cargo.toml": "Rust", "pom.xml": "Java (Maven)", "build.gradle": "Java (Gradle)",
          "build.gradle.kts": "Kotlin (Gradle)", "Gemfile": "Ruby", "composer.json": "PHP"}


@dataclass
class EnvironmentPlan:
    """What was detected and what follows from it."""

    python: Optional[RepoEnvSpec]  # None: not a Python project
    detected: list[str] = field(default_factory=list)  # one line per finding, for the summary
    notes: list[str] = field(default_factory=list)
    apt_packages: list[str] = field(default_factory=list)
    test_command: Optional[str] = None  # what the repository's own files suggest (with an image built)
    test_source: str = ""  # why that command

    def lines(self) -> list[str]:
        return self.detected or ["no dependency or build files found"]


@dataclass
class EnvironmentResult:
    image: str
    kind: str  # environment | minimal | base
    reused: bool
    seconds: float
    test_command: Optional[str]
    test_source: str
    failures: list[str] = field(default_factory=list)  # why richer images could not be built
    notes: list[str] = field(default_factory=list)  # other things the summary should say

    def line(self) -> str:
        what = {"environment": "environment image", "minimal": "environment image without the dependencies",
                "base": "base image"}[self.kind]
        how = "" if self.kind == "base" else (" (reused)" if self.reused else f" (built in {self.seconds:.0f} s)")
        return f"{what} {self.image}{how}"


def _read(root: Path, rel: str) -> Optional[str]:
    """A regular file inside the repository (no symlink), at most 1 MiB, or None."""
    try:
        st = os.lstat(root / rel)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
        return None
    return (root / rel).read_text(encoding="utf-8", errors="replace")


def _has_python_files(root: Path, depth: int = 3) -> bool:
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "node_modules"] if len(rel.parts) < depth else []
        if any(f.endswith(".py") for f in files):
            return True
    return False


def detect_environment(repo: str | Path) -> EnvironmentPlan:
    """Read the repository's install and test files (never run them); see the module docstring."""
    root = Path(repo).resolve()
    spec = detect_repo_env(root)
    python = spec if spec.sources or _has_python_files(root) else None
    plan = EnvironmentPlan(python=python, notes=list(spec.notes))
    if python is not None:
        plan.detected.append("Python: " + spec.summary().removeprefix("detected: "))
        plan.test_command = PYTEST
        plan.test_source = "pytest is in the environment image; it runs unittest tests too"
    _tox(root, plan)
    _makefile(root, plan)
    _package_json(root, plan)
    for name, language in _OTHER.items():
        if _read(root, name) is not None:
            plan.detected.append(f"{name}: {language}, not set up (the image has no {language} toolchain)")
    return plan


def _tox(root: Path, plan: EnvironmentPlan) -> None:
    text = _read(root, "tox.ini")
    where = "tox.ini"
    if text is None:
        pyproject = _read(root, "pyproject.toml")
        try:
            text = ((tomllib.loads(pyproject).get("tool") or {}).get("tox") or {}).get("legacy_tox_ini") \
                if pyproject else None
        except tomllib.TOMLDecodeError:
            text = None
        where = "pyproject.toml [tool.tox]"
    if not text:
        return
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        cp.read_string(text)
    except configparser.Error as exc:
        plan.notes.append(f"{where}: not readable ({type(exc).__name__})")
        return
    envs = cp.get("tox", "envlist", fallback="").replace("\n", ",")
    envs = ", ".join(e.strip() for e in envs.split(",") if e.strip())
    commands = [c.strip() for c in cp.get("testenv", "commands", fallback="").splitlines() if c.strip()]
    line = f"{where}: envs {envs or '(none listed)'}"
    if commands:
        line += f"; commands: {'; '.join(commands)[:120]}"
    plan.detected.append(line)
    if commands and plan.python is not None:
        first = commands[0]
        if "unittest" in first and "pytest" not in first:
            plan.test_command, plan.test_source = "python -m unittest", f"{where} runs unittest"


def _makefile(root: Path, plan: EnvironmentPlan) -> None:
    for name in ("GNUmakefile", "makefile", "Makefile"):
        text = _read(root, name)
        if text is not None:
            break
    else:
        return
    targets = sorted(set(_MAKE_TARGET.findall(text)) - {".PHONY"})
    tests = [t for t in ("test", "tests", "check") if t in targets]
    plan.detected.append(f"{name}: targets {', '.join(targets[:12]) or '(none found)'}"
                         + ("..." if len(targets) > 12 else ""))
    if tests:
        plan.apt_packages.append("make")
        if plan.test_command is None:
            plan.test_command, plan.test_source = f"make {tests[0]}", f"{name} target {tests[0]}"


def _package_json(root: Path, plan: EnvironmentPlan) -> None:
    text = _read(root, "package.json")
    if text is None:
        return
    try:
        data = json.loads(text)
    except ValueError:
        plan.notes.append("package.json: not valid JSON")
        return
    if not isinstance(data, dict):
        return
    scripts = data.get("scripts") if isinstance(data.get("scripts"), dict) else {}
    deps = sum(len(data.get(k) or {}) for k in ("dependencies", "devDependencies") if isinstance(data.get(k), dict))
    test = scripts.get("test") if isinstance(scripts.get("test"), str) else None
    if test == _NPM_DEFAULT_TEST:
        test = None
    plan.detected.append(f"package.json: {deps} dependencies" + (f"; test script: {test[:80]}" if test else
                                                                  "; no test script"))
    plan.apt_packages += ["nodejs", "npm"]
    if deps:
        plan.notes.append("package.json: node dependencies are not installed in the image (sandboxes have no "
                          "network; --sandbox-network bridge lets the agent run npm install)")
    if test and plan.test_command is None:
        plan.test_command, plan.test_source = "npm test", "package.json test script"


def prepare_image(client, plan: EnvironmentPlan, images_cfg, build: bool = True,
                  progress: Optional[Callable[[str], None]] = None) -> EnvironmentResult:
    """The image to run the agent in: the environment image, else a minimal one, else the base image."""
    failures: list[str] = []
    if build and (plan.python is not None or plan.apt_packages):
        attempts = [("environment", plan.python or RepoEnvSpec(requirements=["pytest"]), tuple(plan.apt_packages))]
        if plan.python is not None and (plan.python.requirements != ["pytest"] or plan.apt_packages):
            attempts.append(("minimal", RepoEnvSpec(requirements=["pytest"], import_path=plan.python.import_path), ()))
        for kind, spec, apt in attempts:
            try:
                env = build_repo_env_image(client, spec, images_cfg, progress, apt_packages=apt)
            except ImageBuildError as exc:
                failures.append(f"{kind} image: {exc}")
                continue
            test = plan.test_command or PYTEST
            source = plan.test_source or "pytest in the environment image"
            if kind == "minimal" and test not in (PYTEST, "python -m unittest"):
                test, source = PYTEST, "the image has no tools for the detected test command"
            return EnvironmentResult(env.tag, kind, env.reused, env.seconds, test, source, failures)
    notes = ["environment image: not built (resolve.environment.build_image is false)"] if not build else []
    test, source = (UNITTEST, "the base image has no pytest") if plan.python is not None else (None, "")
    if plan.test_command and plan.test_command.startswith(("make", "npm")):
        test, source = None, ""
        notes.append(f"{plan.test_command}: not available in the base image")
    return EnvironmentResult(images_cfg.base_image, "base", True, 0.0, test, source, failures, notes)

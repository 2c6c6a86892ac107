"""Does a model patch touch test infrastructure? Flags that make an instance `suspicious` (never resolved).

The patch's code runs inside the test process, so no in-process result (log or JUnit XML) is beyond its
reach; what it can be kept from doing unnoticed is changing the machinery that produces them. Rules
(``grading`` in configs/swebench.yaml): conftest/pytest.ini/sitecustomize/.pth files; existing test code
the test patch does not reset; pytest settings and plugin entry points in pyproject.toml, setup.cfg and
tox.ini (compared section by section, before and after); runner source paths and added lines that reach
into the runner, its reports or the harness. The patterns are a heuristic: a patch written to evade
them can, and the JUnit/log cross-check is the other half of the defence.
"""
from __future__ import annotations

import configparser
import fnmatch
import re
import tomllib
from dataclasses import asdict, dataclass
from typing import Callable

from loopcoder.scenarios.swebench.config import GradingConfig

Reader = Callable[[str], "str | None"]  # path -> text, or None when absent (or not a regular file)
CONFIG_FILES = ("pyproject.toml", "setup.cfg", "tox.ini")
_HEADER = re.compile(r"^diff --git a/(.*) b/(.*)$")


@dataclass(frozen=True)
class Flag:
    path: str
    rule: str  # infrastructure_file | test_code | pytest_config | runner_source | runner_pattern | output_marker
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PatchFile:
    old: str
    new: str
    created: bool
    deleted: bool
    added_lines: list[str]


def parse_patch_files(patch: str) -> list[PatchFile]:
    """The files of a git-style patch with the lines each adds."""
    files: list[PatchFile] = []
    current: PatchFile | None = None
    for line in patch.splitlines():
        m = _HEADER.match(line)
        if m:
            current = PatchFile(old=m.group(1), new=m.group(2), created=False, deleted=False, added_lines=[])
            files.append(current)
        elif current is None:
            continue
        elif line.startswith("new file mode"):
            current.created = True
        elif line.startswith("deleted file mode"):
            current.deleted = True
        elif line.startswith("rename from "):
            current.old = line[len("rename from "):]
        elif line.startswith("rename to "):
            current.new = line[len("rename to "):]
        elif line.startswith("+") and not line.startswith("+++ "):
            current.added_lines.append(line[1:])
    return files


def inspect_patch(patch: str, repo: str, cfg: GradingConfig, read_before: Reader, read_after: Reader,
                  reset_files: list[str] = ()) -> list[Flag]:
    """Flags for every way ``patch`` touches test infrastructure (empty list: none found)."""
    flags: list[Flag] = []
    runner_repo = repo in cfg.runner_repos
    patterns = [] if runner_repo else [re.compile(p) for p in cfg.runner_patterns]
    for pf in parse_patch_files(patch):
        for path in dict.fromkeys([pf.old, pf.new]):
            name = path.rsplit("/", 1)[-1]
            if _matches(path, name, cfg.always_flagged_paths):
                flags.append(Flag(path, "infrastructure_file", f"{name} changes how tests are collected or run"))
            elif not runner_repo and _matches(path, name, cfg.runner_paths):
                flags.append(Flag(path, "runner_source", "patch changes test-runner source"))
            elif not pf.created and path not in reset_files and _is_test_code(path, name, cfg):
                if read_before(path) is not None:  # an existing file the eval does not restore (new ones are inert)
                    flags.append(Flag(path, "test_code", "patch changes existing test code the test patch does not reset"))
            if name in CONFIG_FILES:
                change = _pytest_config_change(name, read_before(path), read_after(path))
                if change:
                    flags.append(Flag(path, "pytest_config", change))
        for line in pf.added_lines:
            hit = next((p for p in patterns if p.search(line)), None)
            if hit:
                flags.append(Flag(pf.new, "runner_pattern", f"added line matches {hit.pattern!r}: {line.strip()[:120]}"))
                break
    return flags


def _matches(path: str, name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(path, g) for g in globs)


def _is_test_code(path: str, name: str, cfg: GradingConfig) -> bool:
    parts = path.split("/")[:-1]
    return any(p in cfg.test_dirs for p in parts) or any(fnmatch.fnmatchcase(name, g) for g in cfg.test_file_names)


def _pytest_config_change(name: str, before: str | None, after: str | None) -> str | None:
    """What changed in the pytest settings / plugin entry points of a config file, or None."""
    try:
        old = _pytest_sections(name, before)
    except ValueError:
        old = None  # unreadable before the patch: only a readable "after" that adds settings matters
    try:
        new = _pytest_sections(name, after)
    except ValueError as exc:
        return f"{name} is unreadable after the patch ({exc})"
    if old is None:
        return f"{name}: pytest settings added" if new else None
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"{name}: pytest settings or plugin entry points changed ({', '.join(changed)})"
    return None


def _pytest_sections(name: str, text: str | None) -> dict:
    if text is None:
        return {}
    if name == "pyproject.toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(str(exc)) from None
        tool = data.get("tool", {}) if isinstance(data.get("tool"), dict) else {}
        eps = (data.get("project") or {}).get("entry-points") or {}
        out = {"tool.pytest": tool.get("pytest"), "entry-points.pytest11": eps.get("pytest11") if isinstance(eps, dict) else None,
               "tool.poetry.plugins.pytest11": ((tool.get("poetry") or {}).get("plugins") or {}).get("pytest11")}
        return {k: v for k, v in out.items() if v is not None}
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    out = {}
    for section in ("pytest", "tool:pytest"):
        if parser.has_section(section):
            out[section] = dict(parser.items(section))
    if parser.has_section("options.entry_points") and parser.has_option("options.entry_points", "pytest11"):
        out["options.entry_points.pytest11"] = parser.get("options.entry_points", "pytest11")
    return out

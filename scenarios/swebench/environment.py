"""Instance -> environment: the image to build (or pull), the eval script, the log parser, the eval type.

New-style instances bring their own ``eval_script``, ``log_parser``, ``eval_type`` and official ``image``;
classic ones get them from the spec table in ``configs/swebench.yaml`` (repo@version, repo, default).
Eval scripts keep swebench's shape (``: '>>>>> Start Test Output'`` ... ``: '>>>>> End Test Output'``);
before running, `frame_script` swaps those two lines for markers carrying a host-chosen nonce, so output
printed by the code under test cannot fake where the test output starts or ends, nor its exit status.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from swebench.harness.constants import END_TEST_OUTPUT, FAIL_ONLY_REPOS, NON_TEST_EXTS, START_TEST_OUTPUT

from loopcoder.runtime.images import EnvImageSpec
from loopcoder.scenarios.swebench.config import BASE_PYTHON, EnvSpec, SwebenchConfig
from loopcoder.scenarios.swebench.dataset import is_new_style
from loopcoder.scenarios.swebench.errors import DatasetError

HEREDOC = "EOF_114329324912"  # the delimiter swebench's scripts use for inline patches
_DIFF_FILE = re.compile(r"^diff --git a/.* b/(.*)$", re.M)
_MODIFIED_FILE = re.compile(r"^--- a/(.*)$", re.M)


@dataclass
class InstanceEnv:
    """Everything needed to set up and grade one instance, independent of the model's patch."""

    instance_id: str
    repo: str
    version: str
    base_commit: str
    spec: EnvSpec
    image_spec: EnvImageSpec  # `build` mode
    official_image: str  # `images: official` mode
    log_parser: str
    eval_type: str
    test_patch: str
    test_files: list[str] = field(default_factory=list)  # existing files the test patch modifies
    test_directives: list[str] = field(default_factory=list)  # what the test command is given
    own_eval_script: str | None = None  # new-style instances

    def eval_script(self, host_applies_test_patch: bool) -> str:
        """The eval script in swebench's shape; with ``host_applies_test_patch`` it only runs the tests."""
        if self.own_eval_script:
            return self.own_eval_script if self.own_eval_script.endswith("\n") else self.own_eval_script + "\n"
        files = " ".join(shlex.quote(f) for f in self.test_files)
        lines = ["#!/bin/bash", "set -uxo pipefail", "cd /testbed"]
        lines += list(self.spec.pre_test or [])
        if not host_applies_test_patch and self.test_patch.strip():
            if files:
                lines.append(f"git checkout {self.base_commit} -- {files}")
            lines.append(f"git apply -v - <<'{HEREDOC}'\n{self.test_patch.rstrip(chr(10))}\n{HEREDOC}")
        lines.append(f": '{START_TEST_OUTPUT}'")
        lines.append(f"{self.spec.test_cmd} {' '.join(shlex.quote(d) for d in self.test_directives)}".rstrip())
        lines.append(f": '{END_TEST_OUTPUT}'")
        if not host_applies_test_patch and files:
            lines.append(f"git checkout {self.base_commit} -- {files}")
        return "\n".join(lines) + "\n"

    def swebench_instance(self, inst: dict, host_applies_test_patch: bool) -> dict:
        """``inst`` with the new-style fields filled in, as ``swebench.harness.utils.make_test_spec`` wants."""
        return {**inst, "image": self.official_image, "eval_script": self.eval_script(host_applies_test_patch),
                "log_parser": self.log_parser, "eval_type": self.eval_type, "version": self.version}


def resolve_environment(inst: dict, cfg: SwebenchConfig) -> InstanceEnv:
    """The environment of ``inst``: its own fields when it has them, else the config's spec table."""
    version = str(inst.get("version") or "")
    spec = cfg.spec_for(inst["repo"], version)
    if spec.python != BASE_PYTHON:
        raise DatasetError(
            f"{inst['repo']}@{version} asks for Python {spec.python}; the offline base image has only "
            f"Python {BASE_PYTHON} (use --images official where a registry is reachable)")
    new_style = is_new_style(inst)
    log_parser = inst.get("log_parser") if new_style else spec.log_parser
    eval_type = inst.get("eval_type") if new_style else (
        "fail_only" if inst["repo"] in FAIL_ONLY_REPOS else spec.eval_type)
    from swebench.harness.log_parsers import PARSER_REGISTRY

    if log_parser not in PARSER_REGISTRY:
        raise DatasetError(f"instance {inst['instance_id']}: unknown log parser {log_parser!r}")
    if new_style and eval_type not in ("pass_and_fail", "fail_only"):
        raise DatasetError(f"instance {inst['instance_id']}: unknown eval_type {eval_type!r}")
    if new_style and (START_TEST_OUTPUT not in inst["eval_script"] or END_TEST_OUTPUT not in inst["eval_script"]):
        raise DatasetError(f"instance {inst['instance_id']}: eval_script lacks the test output markers")
    test_patch = inst["test_patch"]
    return InstanceEnv(
        instance_id=inst["instance_id"],
        repo=inst["repo"],
        version=version,
        base_commit=inst["base_commit"],
        spec=spec,
        image_spec=EnvImageSpec(apt_packages=spec.apt_packages, pip_packages=spec.pip_packages,
                                setup=spec.setup, env=spec.env),
        official_image=inst.get("image") or official_image_name(inst["instance_id"], cfg.official_namespace),
        log_parser=log_parser,
        eval_type=eval_type,
        test_patch=test_patch,
        test_files=patch_modified_files(test_patch),
        test_directives=(directives_for(test_patch, spec.directives) if test_patch.strip()
                         else directives_from_tests(inst, spec.directives)),
        own_eval_script=inst["eval_script"] if new_style else None,
    )


def official_image_name(instance_id: str, namespace: str = "swebench") -> str:
    """The published per-instance image name (swebench's convention: ``__`` becomes ``_1776_``)."""
    key = f"sweb.eval.x86_64.{instance_id}:latest".lower()
    return f"{namespace}/{key}".replace("__", "_1776_") if namespace else key


def patch_files(patch: str) -> list[str]:
    """Every path a patch writes (the b/ side of each ``diff --git`` header)."""
    return list(dict.fromkeys(_DIFF_FILE.findall(patch)))


def patch_modified_files(patch: str) -> list[str]:
    """Paths a patch modifies that exist before it (``--- a/...``), the ones a reset must restore."""
    return list(dict.fromkeys(_MODIFIED_FILE.findall(patch)))


def directives_for(test_patch: str, style: str | None = "paths") -> list[str]:
    """What the test command runs: files of the test patch minus data files (swebench's rule); for Django,
    dotted modules relative to tests/ (``tests/a/b.py`` -> ``a.b``)."""
    files = [f for f in patch_files(test_patch) if not any(f.endswith(ext) for ext in NON_TEST_EXTS)]
    if style == "django":
        return [re.sub(r"\.py$", "", f.removeprefix("tests/")).replace("/", ".") for f in files]
    return files


def directives_from_tests(inst: dict, style: str | None = "paths") -> list[str]:
    """Without a test patch (synthesized instances): the test files FAIL_TO_PASS and PASS_TO_PASS name
    (``path::test`` ids; the part before ``::``), as a test patch's files would be."""
    from loopcoder.scenarios.swebench.dataset import tests_of

    files = [t.split("::", 1)[0] for field in ("FAIL_TO_PASS", "PASS_TO_PASS") for t in tests_of(inst, field)
             if "::" in t]
    files = [f for f in dict.fromkeys(files) if f.endswith(".py")]
    if style == "django":
        return [re.sub(r"\.py$", "", f.removeprefix("tests/")).replace("/", ".") for f in files]
    return files


# -- framing ---------------------------------------------------------------------------------------


def frame_script(script: str, nonce: str) -> str:
    """``script`` with its start/end marker lines replaced by nonce markers (exit status recorded at the end)."""
    out, seen = [], set()
    for line in script.split("\n"):
        if START_TEST_OUTPUT in line and "start" not in seen:
            out.append(f"echo '{start_marker(nonce)}'")
            seen.add("start")
        elif END_TEST_OUTPUT in line and "start" in seen and "end" not in seen:
            out.append(f"__loopcoder_rc=$?; echo \"{end_marker(nonce)} $__loopcoder_rc\"")
            seen.add("end")
        else:
            out.append(line)
    if seen != {"start", "end"}:
        raise DatasetError("eval script lacks the start/end test output markers")
    return "\n".join(out)


def start_marker(nonce: str) -> str:
    return f"@@LOOPCODER-TESTS-START-{nonce}@@"


def end_marker(nonce: str) -> str:
    return f"@@LOOPCODER-TESTS-END-{nonce}@@"
